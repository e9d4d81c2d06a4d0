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


class FakeImageSegmenter:
    """Stands in for an image-model `Segmenter` (prepare / batches / detect, `cfg.task == "image"`): its
    `detect` returns the original's detections of the reference image of the frame's size (padded with
    invalid slots in front, to check that only `valid` slots count), nothing for other sizes.
    `fail_after` images, it raises (a failure in the middle of a run)."""

    def __init__(self, config: str, batch_size: int = 1, fail_after: int | None = None,
                 error: type[BaseException] = RuntimeError) -> None:
        from types import SimpleNamespace

        from sipvis.model.config import COCO_CLASSES

        self.cases = {}
        for image in IMAGES:
            exp = expected(config, image)
            self.cases[tuple(exp["ori_shape"][:2])] = detections(exp)
        self.cfg = SimpleNamespace(task="image", category_ids=COCO_CATEGORY_IDS)
        self.class_names = COCO_CLASSES
        self.batch_size = batch_size
        self.fail_after = fail_after
        self.error = error
        self.seen = 0

    def prepare(self, image, index=0, timestamp=None, source=None):
        from sipvis.engine.inference import PreparedFrame

        return PreparedFrame(index, image, 1.0, image.shape[:2], timestamp, source)

    def batches(self, frames):
        from sipvis.engine.inference import Segmenter

        return Segmenter.batches(self, frames)

    def detect(self, frames):
        import torch
        from types import SimpleNamespace

        self.seen += len(frames)
        if self.fail_after is not None and self.seen > self.fail_after:
            raise self.error("model failed")
        h, w = frames[0].original
        per = [self.cases.get((h, w)) for _ in frames]
        k = max((len(d["scores"]) for d in per if d is not None), default=0) + 2
        out = SimpleNamespace(boxes=torch.zeros(len(frames), k, 4), scores=torch.zeros(len(frames), k),
                              labels=torch.zeros(len(frames), k, dtype=torch.int64),
                              valid=torch.zeros(len(frames), k, dtype=torch.bool),
                              masks=torch.zeros(len(frames), k, h, w, dtype=torch.bool), mask_scores=None)
        if any(d is not None and d["mask_scores"] is not None for d in per):
            out.mask_scores = torch.zeros(len(frames), k)
        for b, d in enumerate(per):
            if d is None:
                continue
            n = len(d["scores"])
            out.boxes[b, 2:n + 2] = torch.from_numpy(d["boxes"])
            out.scores[b, 2:n + 2] = torch.from_numpy(d["scores"])
            out.labels[b, 2:n + 2] = torch.from_numpy(d["labels"])
            out.masks[b, 2:n + 2] = torch.from_numpy(d["masks"])
            out.valid[b, 2:n + 2] = True
            if d["mask_scores"] is not None:
                out.mask_scores[b, 2:n + 2] = torch.from_numpy(d["mask_scores"])
        return out
