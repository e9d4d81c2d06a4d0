"""Training the COCO image models from the presets: the presets load and select the released configs,
the [data] / [train] fields of the original recipes are checked by value, COCO images come out of the
dataset as the original's augmentations make them, and (slow) a tiny image model of each family trains a
few steps on a generated COCO-format dataset, saves its weights, and `sipvis segment` runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from sipvis.data.batch import PairCollate, RepeatDataset
from sipvis.data.coco import COCODataset
from sipvis.data.transforms import TrainTransform
from sipvis.errors import SipvisError
from sipvis.model.config import COCO_CATEGORY_IDS, COCO_CLASSES
from sipvis.model.families import official_config
from sipvis.training import WarmupStep, load_config, train
from sipvis.training.config import resolve_model_config

REPO = Path(__file__).resolve().parent.parent
PRESETS = {  # preset -> the released config it trains
    "coco_r50_1x": "sipmask_r50_caffe_fpn_gn_1x",
    "coco_r50_544_6x": "sipmask_r50_caffe_fpn_ssd_6x",
    "coco_pp_r101_544_gn_10x": "sipmask++_r101_caffe_fpn_ssd_gn_10x",
}
CATEGORY_IDS = (3, 7)  # not 1..N: the trained model must keep the dataset's ids


def preset(name: str) -> Path:
    return REPO / "configs" / f"{name}.toml"


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    """A COCO-format dataset: 4 images of 256x256 (one 320x200), 1-3 rectangles and discs each, two
    categories, one crowd annotation (left out of training)."""
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(4):
        h, w = (200, 320) if i == 3 else (256, 256)
        img = np.full((h, w, 3), 40, np.uint8) + rng.integers(0, 30, (h, w, 3), dtype=np.uint8)
        for k in range(1 + i % 3):
            mask = np.zeros((h, w), np.uint8)
            x, y = int(rng.integers(10, w - 120)), int(rng.integers(10, h - 120))
            size = int(rng.integers(40, 100))
            cat = k % 2
            if cat == 0:
                mask[y:y + size, x:x + size] = 1
            else:
                cv2.circle(mask, (x + size // 2, y + size // 2), size // 2, 1, -1)
            img[mask > 0] = (200, 60, 60) if cat == 0 else (60, 200, 60)
            rle = mask_utils.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode()
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": CATEGORY_IDS[cat],
                         "bbox": [float(v) for v in mask_utils.toBbox(rle)], "area": float(mask.sum()),
                         "segmentation": rle, "iscrowd": 0})
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
    anns.append({**anns[0], "id": len(anns) + 1, "iscrowd": 1})
    cats = [{"id": CATEGORY_IDS[0], "name": "box"}, {"id": CATEGORY_IDS[1], "name": "disc"}]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_loads_and_selects_the_released_config(name):
    run = load_config(preset(name))
    assert run.model["task"] == "image" and run.data.format == "coco"
    cfg = resolve_model_config(run, COCO_CLASSES, COCO_CATEGORY_IDS)
    assert cfg.to_dict() == official_config(PRESETS[name]).to_dict()


def test_presets_carry_the_original_recipes():
    hi, rt, pp = (load_config(preset(n)) for n in ("coco_r50_1x", "coco_r50_544_6x", "coco_pp_r101_544_gn_10x"))
    assert (hi.train.warmup, hi.data.augment, hi.data.resize, hi.data.repeat) == ("constant", "none", "keep-ratio", 1)
    assert (hi.train.epochs, hi.train.steps, hi.train.bias_lr_mult) == (12, [8, 11], 2.0)
    assert (rt.train.warmup, rt.data.augment, rt.data.resize, rt.data.repeat) == ("linear", "ssd", "fixed", 3)
    assert rt.data.scales == [[576, 576]] and (rt.train.epochs, rt.train.steps) == (24, [20, 23])
    assert (pp.data.augment, pp.data.repeat) == ("ssd", 5)


def test_recipe_fields_are_checked_by_value():
    rt = preset("coco_r50_544_6x")
    cases = {
        "data.augment=\"mosaic\"": "data.augment must be one of none, ssd, got 'mosaic'",
        "data.resize=\"stretch\"": "data.resize must be one of keep-ratio, fixed, got 'stretch'",
        "train.warmup=\"cosine\"": "train.warmup must be one of linear, constant, got 'cosine'",
        "data.repeat=0": "data.repeat must be an integer >= 1, got 0",
        "data.resize=\"keep-ratio\"": "data.augment = \"ssd\" resizes to a fixed size",
        "data.format=\"ytvis\"": "trains on data.format = \"coco\"",
        "model.resize=\"keep_ratio\"": "model.resize (keep_ratio) and data.resize (fixed) must agree",
        "data.val_split=\"val2017\"": "validation while training an image model is not supported",
    }
    for override, message in cases.items():
        with pytest.raises(SipvisError) as err:
            load_config(rt, [override])
        assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SipvisError, match="apply to image models"):
        load_config(REPO / "configs" / "synth_demo.toml", ["data.augment=\"ssd\"", "data.resize=\"fixed\""])
    with pytest.raises(SipvisError, match=r"\[data\] repeat must be a number"):
        load_config(rt, ["data.repeat=\"x\""])


def test_constant_warmup_is_the_ratio_until_warmup_ends():
    const = WarmupStep(4, 0.25, [10], 0.1, "constant")
    linear = WarmupStep(4, 0.25, [10], 0.1)
    assert [const(i) for i in (0, 3, 4, 9)] == [0.25, 0.25, 1.0, 1.0]
    assert const(10) == pytest.approx(0.1)
    assert [linear(i) for i in (0, 2, 4)] == [0.25, pytest.approx(0.625), 1.0]


# -------------------------------------------------------------------------------------------- data


def _dataset(root: Path, augment: str, resize: str, scales) -> COCODataset:
    return COCODataset(root / "instances.json", root / "images", TrainTransform(scales=scales), augment, resize)


def test_ssd_samples_are_single_fixed_size_images(coco_root):
    ds = _dataset(coco_root, "ssd", "fixed", ((192, 160),))
    assert len(ds) == 4 and ds.categories.ids == CATEGORY_IDS
    for seed in range(6):
        s = ds[(3, (0, 0, seed))]
        assert s.ref_image is None and s.image.shape == (3, 160, 192)
        t = s.targets
        assert t.masks.shape[1:] == (160, 192) and len(t.boxes) == len(t.labels) == len(t.masks) >= 1
        assert (t.boxes[:, 0::2] <= 191).all() and (t.boxes[:, 1::2] <= 159).all() and (t.boxes >= 0).all()
        assert torch.equal(s.image, ds[(3, (0, 0, seed))].image)  # the key's seed decides the augmentation
    batch = PairCollate(32)([ds[(i, (0, 0, i))] for i in range(3)])
    assert batch.ref_images is None and batch.images.shape == (3, 3, 160, 192)


def test_keep_ratio_and_fixed_resize_samples(coco_root):
    kr = _dataset(coco_root, "none", "keep-ratio", ((400, 100),))[(3, (0, 0, 0))]  # 320x200 -> 160x100
    assert kr.image.shape == (3, 100, 160) and kr.targets.masks.shape[1:] == (100, 160)
    fx = _dataset(coco_root, "none", "fixed", ((128, 96),))[(3, (0, 0, 0))]
    assert fx.image.shape == (3, 96, 128) and fx.info["scale_factor"] == (0.4, 0.48)
    pair = COCODataset(coco_root / "instances.json", coco_root / "images")[0]  # VIS pre-training: pairs
    assert pair.ref_image is not None


def test_repeat_dataset_repeats_items_with_their_own_seed(coco_root):
    ds = _dataset(coco_root, "ssd", "fixed", ((128, 128),))
    rep = RepeatDataset(ds, 3)
    assert len(rep) == 12 and rep.class_names == ("box", "disc")
    assert torch.equal(rep[(5, (0, 0, 9))].image, ds[(1, (0, 0, 9))].image)


# ---------------------------------------------------------------------------------------- training

TINY_MODEL = ["model.backbone_width=8", "model.fpn_channels=32", "model.head_channels=32",
              "model.basis_channels=16", "model.num_bases=4", "model.score_thr=0.0"]


def _tiny_run(root: Path, out: Path, name: str, scales: str):
    return load_config(preset(name), TINY_MODEL + [
        f"data.ann_file=\"{root / 'instances.json'}\"", f"data.image_dir=\"{root / 'images'}\"",
        f"data.scales={scales}", "data.workers=0", "train.iters=3", "train.batch_size=2", "train.threads=2",
        "train.warmup_iters=1", "train.log_interval=1", "train.lr=0.005", "train.grad_clip=5.0",
        "train.backbone_norm=\"bn\"", f"train.output=\"{out}\""])


@pytest.mark.slow
@pytest.mark.parametrize("name,scales", [("coco_r50_544_6x", "[[256, 256]]"),
                                         ("coco_pp_r101_544_gn_10x", "[[256, 256]]"),
                                         ("coco_r50_1x", "[[320, 256]]")])
def test_tiny_image_model_trains_and_segment_loads_it(coco_root, tmp_path, name, scales):
    out = tmp_path / "run"
    run = _tiny_run(coco_root, out, name, scales)
    result = train(run)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    start = records[0]
    steps = [r for r in records if r["type"] == "train"]
    assert start["iters_per_epoch"] == 4 * run.data.repeat // 2  # data.repeat: 3x / 5x the 4 images
    assert len(steps) == 3 and all(np.isfinite(r["loss"]) for r in steps)
    assert steps[0]["loss"] != steps[-1]["loss"]
    assert "loss_match" not in steps[0] and "match_acc" not in steps[0]  # no tracking branch
    assert ("loss_mask_iou" in steps[0]) == (name == "coco_pp_r101_544_gn_10x")
    saved = json.loads(result.weights.with_suffix(".json").read_text())["model"]
    assert saved["task"] == "image" and saved["category_ids"] == list(CATEGORY_IDS)
    assert saved["resize"] == official_config(PRESETS[name]).resize and saved["class_names"] == ["box", "disc"]

    results = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", "segment",
                           str(coco_root / "images" / "1.png"), "--weights", str(result.weights), "--device", "cpu",
                           "-o", str(results), "-q"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(results.read_text())
    assert isinstance(entries, list) and entries, "score_thr 0 keeps detections"
    assert {e["category_id"] for e in entries} <= set(CATEGORY_IDS) and {e["image_id"] for e in entries} == {1}


def test_rescoring_loss_targets_are_the_mask_iou_of_the_thresholded_mask():
    from sipvis.model.head import MaskRescoring
    from sipvis.model.losses import _rescoring_terms

    torch.manual_seed(0)
    branch = MaskRescoring(3)
    gt = torch.zeros(3, 128, 128, dtype=torch.bool)
    gt[0, 10:30, 10:30] = True          # 400 px, predicted exactly (soft 0.9 > 0.4): IoU target 400 / 400.1
    gt[1, 50:70, 50:70] = True          # predicted on its left half only: IoU 200 / 400.1
    gt[2, 0:9, 0:9] = True              # 81 px < 10 x 10: left out
    soft = gt.float() * 0.9
    soft[1, :, 60:] = 0.3               # below the 0.4 threshold
    labels = torch.tensor([2, 0, 1])
    err, count = _rescoring_terms(branch, soft, gt, labels)
    pred = branch(soft[:, None])[torch.arange(3), labels].detach()
    target = torch.tensor([400 / 400.1, 200 / 400.1])
    assert count.item() == 2
    assert err.item() == pytest.approx(float(((pred[:2] - target) ** 2).sum()), rel=1e-5)
    err.backward()
    assert branch.out.weight.grad is not None and branch.out.weight.grad.abs().sum() > 0


def test_feature_align_bounds_diverged_offsets_in_training() -> None:
    """inf/nan box predictions of a diverging run reach deform_conv2d bounded (its CPU kernel crashed on them);
    finite offsets give the same output as before."""
    import torch

    from sipvis.model.head import FeatureAlign

    torch.manual_seed(0)
    align = FeatureAlign(32, offset_groups=2, use_norm=False).train()
    x = torch.randn(1, 32, 6, 7)
    box = torch.randn(1, 4, 6, 7)
    with torch.no_grad():
        same = align(x, box)
        align.eval()
        assert torch.equal(same, align(x, box))
        align.train()
        box[0, 0, 1, 1], box[0, 1, 2, 2] = float("inf"), float("nan")
        assert torch.isfinite(align(x, box)).all()
