"""Helpers for tests against ../shared/reference/sipmask_coco: the original's detections and results lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from conftest import SHARED, require

SIPMASK_COCO = SHARED / "reference" / "sipmask_coco"
CONFIGS = ("sipmask_r50_caffe_fpn_gn_1x", "sipmask_r50_caffe_fpn_ssd_6x", "sipmask++_r101_caffe_fpn_ssd_gn_10x")
IMAGES = ("pedestrians", "coffee")
CASES = [(c, i) for c in CONFIGS for i in IMAGES]


def expected(config: str, image: str) -> dict:
    return json.loads(require(SIPMASK_COCO / config / image / "expected.json").read_text())


def image_path(image: str) -> Path:
    return require(SIPMASK_COCO / "images" / f"{image}.png")


def decode(rle: dict) -> np.ndarray:
    """(H, W) bool of a compressed RLE with str counts."""
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def detections(exp: dict) -> dict[str, np.ndarray | None]:
    """The original's detections of one case as arrays: boxes (K, 4) float32, scores (K,) float32,
    labels (K,) int64, masks (K, H, W) bool, mask_scores (K,) float32 or None."""
    dets = exp["detections"]
    h, w = exp["ori_shape"][:2]
    masks = np.stack([decode(d["segmentation"]) for d in dets]) if dets else np.zeros((0, h, w), bool)
    mask_scores = None
    if dets and "mask_score" in dets[0]:
        mask_scores = np.array([d["mask_score"] for d in dets], np.float32)
    return {"boxes": np.array([d["bbox"] for d in dets], np.float32).reshape(-1, 4),
            "scores": np.array([d["score"] for d in dets], np.float32),
            "labels": np.array([d["label"] for d in dets], np.int64),
            "masks": masks, "mask_scores": mask_scores}


# the standard COCO category ids of the 80 labels (1..90 with gaps), the order of CocoDataset.cat_ids
COCO_CATEGORY_IDS = tuple([*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
                           *range(72, 83), *range(84, 91)])
