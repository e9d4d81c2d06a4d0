"""COCO instances as training pairs (pre-training): the reference frame is the image itself, so every
instance matches itself (`pids = 1..N`) and the tracking branch learns to tell instances apart.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from sipvis.data.batch import SampleKey, TrainSample, sample_rng
from sipvis.data.transforms import TrainTransform, xywh_to_inclusive_xyxy
from sipvis.data.ytvis import AnnotatedDataset, decode_segmentation
from sipvis.errors import SipvisError
from sipvis.model.config import COCO_CATEGORY_IDS, COCO_CLASSES  # noqa: F401  (the one table, re-exported)
from sipvis.model.losses import FrameTargets


class COCODataset(AnnotatedDataset):
    """Images with at least one valid (non-crowd, w and h >= 1) instance of a COCO instances file.

    Args:
        ann_file: `instances_*.json`.
        image_dir: folder the `file_name`s are relative to.
        transform: resize / flip / normalisation.
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, transform: TrainTransform | None = None) -> None:
        data = self._load(ann_file, image_dir, transform, "COCO instances file", ("images",))
        by_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w < 1 or h < 1 or ann.get("area", w * h) <= 0:
                continue
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        self.images = [im for im in data["images"] if int(im["id"]) in by_image]
        self.anns = [by_image[int(im["id"])] for im in self.images]
        if not self.images:
            raise SipvisError(f"{ann_file} has no annotated image to train on")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | SampleKey) -> TrainSample:
        index, rng = sample_rng(key)
        meta, anns = self.images[index], self.anns[index]
        path = self.image_dir / meta["file_name"]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise SipvisError(f"cannot read image {path}")
        height, width = img.shape[:2]
        boxes = xywh_to_inclusive_xyxy([a["bbox"] for a in anns])
        labels = np.array([self.cat_to_label[int(a["category_id"])] for a in anns], np.int64)
        masks = np.stack([decode_segmentation(a["segmentation"], height, width) for a in anns])
        scale, flip = self.transform.sample(rng)
        image, factor = self.transform.image(img, scale, flip)
        size = tuple(image.shape[1:])
        boxes_t = torch.from_numpy(self.transform.boxes(boxes, factor, flip, size))
        targets = FrameTargets(
            boxes=boxes_t,
            labels=torch.from_numpy(labels),
            masks=torch.from_numpy(self.transform.masks(masks, size, flip)),
            ref_boxes=boxes_t.clone(),
            pids=torch.arange(1, len(anns) + 1, dtype=torch.int64),
        )
        info = {"image_id": int(meta["id"]), "scale_factor": factor, "flip": flip}
        return TrainSample(image, image, targets, info)
