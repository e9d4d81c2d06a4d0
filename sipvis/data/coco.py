"""COCO instances for training.

* SipMask-VIS (pre-training): pairs whose reference frame is the image itself, so every instance
  matches itself (`pids = 1..N`) and the tracking branch learns to tell instances apart.
* the COCO image models (`augment` given): single images, no reference frame, augmented as the
  original's recipes (`sipvis.data.coco_transforms`): "ssd" (`SSDAugment`, the 544 family), or a
  keep-ratio (`MultiScaleResize`, the 800x1333 family) / fixed resize and a flip.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from sipvis.data.batch import SampleKey, TrainSample, sample_rng
from sipvis.data.coco_transforms import Expand, MultiScaleResize, Sample, SSDAugment, flip_sample, resize_sample
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
        transform: resize / flip / normalisation (scales, scale_mode, flip_prob: those of the image
            augmentations too).
        augment: None (VIS pairs) or, for an image model, "none" or "ssd".
        resize: an image model's resize: "keep-ratio" (scales are [long, short]) or "fixed" (scales are
            [width, height]).
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, transform: TrainTransform | None = None,
                 augment: str | None = None, resize: str = "keep-ratio") -> None:
        self.augment, self.resize = augment, resize
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
        if self.augment is not None:
            return self._image_sample(Sample(img, boxes, labels, masks), rng, int(meta["id"]))
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

    def _image_sample(self, s: Sample, rng: np.random.Generator, image_id: int) -> TrainSample:
        """An image model's sample: augmented as configured, normalised; no reference frame."""
        t = self.transform
        if self.augment == "ssd":
            mean = t.mean[::-1] if t.to_rgb else t.mean  # the canvas is filled in the image's BGR order
            scale, _ = t.sample(rng)
            ssd = SSDAugment(size=scale, flip_prob=t.flip_prob, expand=Expand(mean=tuple(mean)))
            s, factor = ssd(replace(s, image=s.image.astype(np.float32)), rng)
        elif self.resize == "fixed":
            (w, h), flip = t.sample(rng)
            s, factor = resize_sample(s, h, w)
            s = flip_sample(s) if flip else s
        else:
            s, factor = MultiScaleResize(t.scales, t.scale_mode, t.flip_prob)(s, rng)
        h, w = s.image.shape[:2]
        # normalisation alone: the identity keep-ratio scale (factor 1) resizes nothing
        image, _ = t.image(s.image, (max(h, w), min(h, w)), False)
        boxes = torch.from_numpy(np.ascontiguousarray(s.boxes, np.float32).reshape(-1, 4))
        targets = FrameTargets(boxes=boxes, labels=torch.from_numpy(s.labels), masks=torch.from_numpy(s.masks),
                               ref_boxes=boxes.new_zeros(0, 4), pids=torch.zeros(len(boxes), dtype=torch.int64))
        return TrainSample(image, None, targets, {"image_id": image_id, "scale_factor": factor})
