"""COCO box/mask AP (`sipvis.evaluation.coco`, `sipvis eval --format coco`) equal to pycocotools' COCOeval
run the usual way (files, `loadRes`, evaluate/accumulate/summarize) on generated cases: perfect,
perturbed, crowd, empty; plus known values and one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sipvis.errors import SipvisError
from sipvis.evaluation.coco import evaluate_coco


def sipvis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}


def ellipse(h: int, w: int, box) -> np.ndarray:
    x, y, bw, bh = box
    yy, xx = np.mgrid[:h, :w]
    return ((xx + 0.5 - x - bw / 2) / (bw / 2)) ** 2 + ((yy + 0.5 - y - bh / 2) / (bh / 2)) ** 2 <= 1


def make_gt(seed: int, crowd: bool = True) -> dict:
    """Images of a few sizes, 3 categories, objects from tiny to large (all three area ranges), as RLE
    masks and polygons, some crowd regions."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for image_id in range(1, 7):
        h, w = int(rng.integers(160, 300)), int(rng.integers(160, 300))
        images.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id:03d}.jpg"})
        for _ in range(int(rng.integers(0, 7))):
            size = float(rng.choice([8, 25, 60, 100]))
            bw, bh = size * rng.uniform(0.6, 1.4, 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            mask = ellipse(h, w, (x, y, bw, bh))
            if not mask.any():
                continue
            is_crowd = crowd and rng.random() < 0.15
            if rng.random() < 0.5 or is_crowd:
                segm = rle(mask)
            else:  # a polygon: the box's diamond
                segm = [[x + bw / 2, y, x + bw, y + bh / 2, x + bw / 2, y + bh, x, y + bh / 2]]
                mask = mask_utils.decode(mask_utils.frPyObjects(segm, h, w)).any(-1)
            bx = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))).tolist()
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.choice([1, 3, 7])),
                         "bbox": bx, "area": float(mask.sum()), "iscrowd": int(is_crowd), "segmentation": segm})
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}]
    return {"images": images, "annotations": anns, "categories": cats}


def perfect(gt: dict) -> list[dict]:
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    out = []
    for a in gt["annotations"]:
        if a["iscrowd"]:
            continue
        h, w = sizes[a["image_id"]]
        segm = a["segmentation"]
        if isinstance(segm, list):
            segm = rle(mask_utils.decode(mask_utils.frPyObjects(segm, h, w)).any(-1))
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
                    "score": 0.9, "segmentation": segm})
    return out


def perturbed(gt: dict, seed: int) -> list[dict]:
    """Shifted/scaled boxes and masks, random scores, some misses, wrong classes and false positives."""
    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    out = []
    for a in gt["annotations"]:
        if rng.random() < 0.2:
            continue
        h, w = sizes[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        box = [x + rng.normal(0, bw * 0.1), y + rng.normal(0, bh * 0.1), bw * rng.uniform(0.8, 1.2),
               bh * rng.uniform(0.8, 1.2)]
        cat = a["category_id"] if rng.random() < 0.85 else 3
        out.append({"image_id": a["image_id"], "category_id": cat, "bbox": box, "score": float(rng.random()),
                    "segmentation": rle(ellipse(h, w, box))})
    for im in gt["images"]:
        for _ in range(int(rng.integers(0, 4))):
            box = [rng.uniform(0, im["width"] - 30), rng.uniform(0, im["height"] - 30), 25.0, 20.0]
            out.append({"image_id": im["id"], "category_id": int(rng.choice([1, 3, 7])), "bbox": box,
                        "score": float(rng.random()), "segmentation": rle(ellipse(im["height"], im["width"], box))})
    return out


def reference(gt_file, res_file, iou_type: str) -> tuple[list[float], np.ndarray]:
    """pycocotools as everyone calls it, on the files."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(str(res_file)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats), ev.eval["precision"]


def write(tmp_path, gt, res):
    gt_file, res_file = tmp_path / "gt.json", tmp_path / "res.json"
    gt_file.write_text(json.dumps(gt))
    res_file.write_text(json.dumps(res))
    return gt_file, res_file


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", ["perfect", "perturbed", "no_crowd"])
def test_equal_to_pycocotools(tmp_path, seed, case):
    gt = make_gt(seed, crowd=case != "no_crowd")
    res = perfect(gt) if case == "perfect" else perturbed(gt, seed + 10)
    gt_file, res_file = write(tmp_path, gt, res)
    ours = evaluate_coco(gt_file, res_file)
    assert list(ours) == ["bbox", "segm"]
    for iou_type, result in ours.items():
        stats, precision = reference(gt_file, res_file, iou_type)
        np.testing.assert_allclose(result.stats, stats, rtol=0, atol=1e-9)
        for k, name in enumerate(["person", "car", "train"]):
            p = precision[:, :, k, 0, -1]
            want = p[p > -1].mean() if (p > -1).any() else -1
            assert abs(result.per_class[name] - want) <= 1e-9
    if case == "perfect":  # crowd regions are ignored: a perfect result scores 1 where there is GT
        assert ours["segm"].stats[0] == pytest.approx(1.0) and ours["bbox"].stats[0] == pytest.approx(1.0)
    else:
        assert 0.01 < ours["segm"].stats[0] < 0.95 and 0.01 < ours["bbox"].stats[0] < 0.95


def test_empty_results_score_zero_and_undefined_is_minus_one(tmp_path):
    gt = make_gt(3)
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] != 7]
    result = evaluate_coco(gt, [], iou_types=("segm",))["segm"]
    assert result.stats[0] == 0.0 and result.per_class["train"] == -1.0 and result.per_class["person"] == 0.0
    assert list(evaluate_coco(gt, [], iou_types=("bbox", "segm"))) == ["bbox", "segm"]


def test_inputs_are_not_modified_and_bbox_only_results(tmp_path):
    gt = make_gt(4)
    res = perturbed(gt, 5)
    before = json.dumps([gt, res])
    evaluate_coco(gt, res)
    assert json.dumps([gt, res]) == before
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in res]
    assert list(evaluate_coco(gt, boxes_only)) == ["bbox"]
    with pytest.raises(SipvisError, match="no segm in every entry"):
        evaluate_coco(gt, boxes_only, iou_types=("segm",))


def test_bad_results_are_one_line(tmp_path):
    gt = make_gt(0)
    good = perfect(gt)[0]
    with pytest.raises(SipvisError, match="1 results are for images not in the ground truth"):
        evaluate_coco(gt, [{**good, "image_id": 999}])
    with pytest.raises(SipvisError, match="mask size"):
        evaluate_coco(gt, [{**good, "segmentation": {**good["segmentation"], "size": [1, 1]}}])
    with pytest.raises(SipvisError, match="expected a list"):
        evaluate_coco(gt, {"annotations": []})
    with pytest.raises(SipvisError, match="not a COCO annotation file"):
        evaluate_coco({"videos": []}, [])


def test_cli_format_coco_json_and_table(tmp_path):
    gt = make_gt(1)
    gt_file, res_file = write(tmp_path, gt, perturbed(gt, 2))
    metrics = tmp_path / "m.json"
    result = sipvis("eval", "--format", "coco", "--gt", str(gt_file), "--results", str(res_file),
                    "--json", str(metrics))
    assert result.returncode == 0, result.stderr
    data = json.loads(metrics.read_text())
    for iou_type in ("bbox", "segm"):
        stats, _ = reference(gt_file, res_file, iou_type)
        np.testing.assert_allclose(data[iou_type]["stats"], stats, rtol=0, atol=1e-9)
        assert set(data[iou_type]["per_class"]) == {"person", "car", "train"}
    assert "AP50" in result.stdout and "segm" in result.stdout and "person" in result.stdout
    bad = sipvis("eval", "--format", "coco", "--gt", str(gt_file), "--results", str(gt_file))
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("Error: ")
