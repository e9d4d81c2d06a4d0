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


@pytest.mark.slow
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


# ------------------------------------------------------------------------------ --dataset coco


@pytest.fixture
def coco_root(tmp_path):
    """The official layout with the two reference images (ids 9 and 5) and the SipMask++ detections of the
    original as ground truth (so its own results score AP 1)."""
    import shutil

    from coco_reference import COCO_CATEGORY_IDS, expected, image_path

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    images, anns = [], []
    for image_id, name in ((9, "pedestrians"), (5, "coffee")):
        shutil.copy(image_path(name), root / "val2017" / f"{name}.png")
        exp = expected("sipmask++_r101_caffe_fpn_ssd_gn_10x", name)
        h, w = exp["ori_shape"][:2]
        images.append({"id": image_id, "file_name": f"{name}.png", "height": h, "width": w})
        for e in exp["coco_results_segm"]:
            area = float(mask_utils.area(dict(e["segmentation"], counts=e["segmentation"]["counts"].encode())))
            if area > 0:
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": e["category_id"],
                             "bbox": e["bbox"], "area": area, "iscrowd": 0, "segmentation": e["segmentation"]})
    cats = [{"id": c, "name": f"c{c}"} for c in COCO_CATEGORY_IDS]
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def test_dataset_run_shards_resumes_gathers_and_scores(coco_root, tmp_path, monkeypatch):
    from coco_reference import FakeImageSegmenter
    from sipvis.engine import dataset_run as dr
    from sipvis.engine.distributed import DistInfo

    monkeypatch.setattr(dr, "COCO_CHUNK", 1)
    monkeypatch.setattr(dr, "barrier", lambda: None)  # the two "ranks" run one after the other here
    split = dr.CocoSplit.find(coco_root, "val2017")
    assert [im["id"] for im in split.images] == [5, 9]
    out = tmp_path / "run"
    fake = FakeImageSegmenter("sipmask++_r101_caffe_fpn_ssd_gn_10x")
    assert dr.run_coco_dataset(split, fake, out, DistInfo(1, 2, 1)) is None
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00001.json"]  # rank 1: the second chunk
    assert fake.seen == 1
    results = dr.run_coco_dataset(split, fake, out, DistInfo(0, 2, 0))
    assert fake.seen == 2 and results == out / "results.json"
    entries = json.loads(results.read_text())
    assert [e["image_id"] for e in entries[:1]] == [5] and {e["image_id"] for e in entries} == {5, 9}
    again = dr.run_coco_dataset(split, fake, out, DistInfo())  # everything done: nothing is run again
    assert fake.seen == 2 and json.loads(again.read_text()) == entries
    scored = evaluate_coco(split.ground_truth(), results)
    assert scored["segm"].stats[1] == pytest.approx(1.0)  # the GT is these detections (AP50: exact masks)
    subset = dr.CocoSplit.find(coco_root, "val2017", subset=1)
    assert [im["id"] for im in subset.ground_truth()["images"]] == [5]
    assert {a["image_id"] for a in subset.ground_truth()["annotations"]} == {5}


@pytest.mark.slow
def test_dataset_coco_errors_are_one_line(coco_root, tmp_path):
    result = sipvis("eval", "--dataset", "coco", "val2017", "--data-root", str(coco_root), "--weights", "demo",
                    "--device", "cpu", "--out", str(tmp_path / "o"), "--quiet")
    assert result.returncode == 1 and "video (SipMask-VIS) model" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    result = sipvis("eval", "--dataset", "coco", "train2017", "--data-root", str(coco_root), "--quiet")
    assert result.returncode == 1 and "no COCO split 'train2017'" in result.stderr
    result = sipvis("eval", "--format", "coco", "--gt", "x.json", "--results", "y.json", "--metrics", "hota")
    assert result.returncode == 2 and "do not apply to COCO" in result.stderr


def test_results_of_unknown_categories_are_a_warning():
    gt = make_gt(2)
    res = perturbed(gt, 3)
    with_unknown = res + [{**res[0], "category_id": 99}, {**res[1], "category_id": 99}]
    scored = evaluate_coco(gt, with_unknown)
    assert scored["segm"].warnings == ["2 results have category ids the ground truth does not have (99): "
                                       "they are not scored"]
    assert scored["segm"].stats == evaluate_coco(gt, res)["segm"].stats and evaluate_coco(gt, res)["bbox"].warnings == []
