"""COCO results entries (`sipvis.io.coco_results`) against the original's results2json lists, and the
streaming results file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coco_reference import CASES, COCO_CATEGORY_IDS, detections, expected
from sipvis.errors import SipvisError
from sipvis.io.coco_results import CocoResultsFile, category_id_table, coco_results_entries


def test_category_ids_are_the_standard_list():
    assert len(COCO_CATEGORY_IDS) == 80 and COCO_CATEGORY_IDS[11] == 13 and COCO_CATEGORY_IDS[79] == 90
    assert category_id_table((), 3) == [1, 2, 3]
    assert category_id_table(COCO_CATEGORY_IDS, 80)[0] == 1
    with pytest.raises(ValueError):
        category_id_table((1, 2), 3)


@pytest.mark.parametrize("config,image", CASES)
def test_entries_equal_the_original_results2json(config, image):
    exp = expected(config, image)
    for det in exp["detections"]:  # the oracle's own label -> id mapping is the standard one
        assert COCO_CATEGORY_IDS[det["label"]] == det["category_id"]
    d = detections(exp)
    bbox, segm = coco_results_entries(1, d["boxes"], d["scores"], d["labels"], d["masks"], COCO_CATEGORY_IDS,
                                      d["mask_scores"])
    # the detections are the original's, so the entries are exact: same order, keys, floats and RLE strings
    assert bbox == exp["coco_results_bbox"]
    assert segm == exp["coco_results_segm"]
    assert [list(e) for e in segm[:1]] == [["image_id", "bbox", "score", "category_id", "segmentation"]]


def test_inverted_box_keeps_its_negative_size_and_grouping_is_stable():
    boxes = np.array([[10, 10, 20, 30], [5, 5, 3, 4], [0, 0, 1, 1]], np.float32)
    labels = np.array([2, 0, 2])
    bbox, segm = coco_results_entries(7, boxes, np.array([0.5, 0.25, 0.75], np.float32), labels, None, (1, 2, 3))
    assert segm == []
    assert [(e["category_id"], e["score"]) for e in bbox] == [(1, 0.25), (3, 0.5), (3, 0.75)]
    assert bbox[0]["bbox"] == [5.0, 5.0, -1.0, 0.0] and bbox[1]["bbox"] == [10.0, 10.0, 11.0, 21.0]


def test_results_file_is_valid_json_and_atomic(tmp_path):
    path = tmp_path / "out" / "results.json"
    out = CocoResultsFile(path)
    assert not path.exists()  # nothing appears before close
    out.add([{"image_id": 1, "score": 0.5}])
    out.add([])
    out.add([{"image_id": 2, "score": 0.25}])
    out.close()
    assert json.loads(path.read_text()) == [{"image_id": 1, "score": 0.5}, {"image_id": 2, "score": 0.25}]
    empty = CocoResultsFile(tmp_path / "empty.json")
    empty.close()
    assert json.loads((tmp_path / "empty.json").read_text()) == []


def test_discarded_results_file_leaves_the_old_one(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[]")
    out = CocoResultsFile(path)
    out.add([{"image_id": 1}])
    out.discard()
    assert path.read_text() == "[]"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_results_file_into_a_folder_is_one_line_error(tmp_path):
    with pytest.raises(SipvisError, match="is a folder"):
        CocoResultsFile(tmp_path)
