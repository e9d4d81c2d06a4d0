"""Training augmentations of the COCO image models, with the original's parameters and arithmetic
(mmdetection v1 `PhotoMetricDistortion`, `Expand`, `MinIoURandomCrop`, `Resize`, as SipMask-mmdetection's
configs use them):

* the real-time 544x544 family (`sipmask_*_ssd_*`): SSD-style photometric distortion, expand (zoom out
  onto a mean-coloured canvas, ratio 1..4), min-IoU random crop (IoU >= one of 0.1..0.9 with every kept
  box, crop side >= 0.3), a fixed 576x576 resize without keeping the ratio, flip 0.5 (`SSDAugment`);
* the 800x1333 family with multi-scale training (`*_ms_*`): keep-ratio resize, long side 1333, short
  side drawn in 640..800, flip 0.5 (`MultiScaleResize`, RetinaNet-style).

Every transform takes and returns a `Sample` and draws from a `numpy.random.Generator`, so one seed gives
one result. Boxes use the original's inclusive pixel convention (`transforms.xywh_to_inclusive_xyxy`);
masks are (N, H, W) uint8 and follow every geometric step of their image and boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from sipvis.data.transforms import TrainTransform
from sipvis.model.box_ops import box_iou
from sipvis.model.preprocess import keep_ratio_scale


@dataclass
class Sample:
    """An image and its instances on their way through the augmentations.

    Attributes:
        image: (H, W, 3) float32 BGR (the SSD pipeline loads images as float32, as the original).
        boxes: (N, 4) float32 x1y1x2y2, inclusive pixels.
        labels: (N,) int64.
        masks: (N, H, W) uint8.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


@dataclass
class PhotometricDistortion:
    """SSD colour jitter, each step with probability 0.5: brightness (+-`brightness_delta`), contrast
    (x `contrast_range`, before or after the HSV steps, chosen at random), saturation (x
    `saturation_range`), hue (+-`hue_delta` degrees, wrapped to 0..360), a random channel order.
    Geometry is untouched. Values are not clipped (as the original: float32 throughout)."""

    brightness_delta: float = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: float = 18

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        img = s.image.astype(np.float32, copy=True)
        if rng.integers(2):
            img += np.float32(rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_last = bool(rng.integers(2))
        if not contrast_last and rng.integers(2):
            img *= np.float32(rng.uniform(*self.contrast_range))
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)  # float32: H in degrees 0..360, S in 0..1, V as given
        if rng.integers(2):
            hsv[..., 1] *= np.float32(rng.uniform(*self.saturation_range))
        if rng.integers(2):
            hue = hsv[..., 0]
            hue += np.float32(rng.uniform(-self.hue_delta, self.hue_delta))
            hue[hue > 360] -= 360
            hue[hue < 0] += 360
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if contrast_last and rng.integers(2):
            img *= np.float32(rng.uniform(*self.contrast_range))
        if rng.integers(2):
            img = np.ascontiguousarray(img[..., rng.permutation(3)])
        return replace(s, image=img)


@dataclass
class Expand:
    """With probability 0.5, place the image at a random spot of a canvas `ratio` times its size (ratio
    drawn in `ratio_range`) filled with `mean` (the normalisation mean, in the image's BGR order);
    boxes move with it, masks get the same canvas filled with 0."""

    mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)
    ratio_range: tuple[float, float] = (1.0, 4.0)

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        if rng.integers(2):
            return s
        h, w = s.image.shape[:2]
        ratio = rng.uniform(*self.ratio_range)
        big_h, big_w = int(h * ratio), int(w * ratio)
        left, top = int(rng.uniform(0, w * ratio - w)), int(rng.uniform(0, h * ratio - h))
        image = np.empty((big_h, big_w, 3), s.image.dtype)
        image[...] = np.asarray(self.mean, s.image.dtype)
        image[top:top + h, left:left + w] = s.image
        masks = np.zeros((len(s.masks), big_h, big_w), s.masks.dtype)
        masks[:, top:top + h, left:left + w] = s.masks
        boxes = s.boxes + np.array([left, top, left, top], s.boxes.dtype)
        return Sample(image, boxes, s.labels, masks)


@dataclass
class MinIoURandomCrop:
    """SSD's random crop: pick a mode among "keep the image" and each minimum IoU of `min_ious`; for an
    IoU mode, try 50 crops (each side >= `min_crop_size` of the image's, aspect h/w in [0.5, 2]) for one
    whose IoU (inclusive pixels) with every box is >= the minimum and that holds the centre of at least
    one box; keep those boxes (clipped to the crop) and their masks; no crop found: draw a mode again.
    An image without boxes is returned as it is."""

    min_ious: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    min_crop_size: float = 0.3

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        if len(s.boxes) == 0:
            return s
        h, w = s.image.shape[:2]
        modes = (None, *self.min_ious)  # None: keep the image as it is
        while True:
            min_iou = modes[int(rng.integers(len(modes)))]
            if min_iou is None:
                return s
            for _ in range(50):
                patch = self._patch(h, w, rng)
                if patch is None:
                    continue
                ious = box_iou(torch.from_numpy(patch[None].astype(np.float32)), torch.from_numpy(s.boxes),
                               pixel_offset=1.0).numpy().reshape(-1)
                if ious.min() < min_iou:
                    continue
                centre = (s.boxes[:, :2] + s.boxes[:, 2:]) / 2
                inside = ((centre[:, 0] > patch[0]) & (centre[:, 1] > patch[1]) & (centre[:, 0] < patch[2])
                          & (centre[:, 1] < patch[3]))
                if inside.any():
                    return self._crop(s, patch, inside)

    def _patch(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray | None:
        """A candidate crop (x1, y1, x2, y2) in whole pixels, or None when its aspect is out of range."""
        new_w = rng.uniform(self.min_crop_size * w, w)
        new_h = rng.uniform(self.min_crop_size * h, h)
        if not 0.5 <= new_h / new_w <= 2:
            return None
        left, top = rng.uniform(0, w - new_w), rng.uniform(0, h - new_h)
        return np.array((int(left), int(top), int(left + new_w), int(top + new_h)))

    @staticmethod
    def _crop(s: Sample, patch: np.ndarray, keep: np.ndarray) -> Sample:
        x1, y1, x2, y2 = (int(v) for v in patch)
        boxes = s.boxes[keep].copy()
        boxes[:, 2:] = boxes[:, 2:].clip(max=patch[2:])
        boxes[:, :2] = boxes[:, :2].clip(min=patch[:2])
        boxes -= np.array([x1, y1, x1, y1], boxes.dtype)
        return Sample(s.image[y1:y2, x1:x2], boxes, s.labels[keep], s.masks[keep][:, y1:y2, x1:x2])


def resize_sample(s: Sample, new_h: int, new_w: int) -> tuple[Sample, tuple[float, float]]:
    """Resize to (new_h, new_w): image bilinear, masks nearest, boxes scaled by (w_scale, h_scale) and
    clipped to the new image (as mmdetection v1 `Resize`). Returns the sample and (w_scale, h_scale)."""
    h, w = s.image.shape[:2]
    w_scale, h_scale = new_w / w, new_h / h
    image = cv2.resize(s.image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    boxes = s.boxes * np.array([w_scale, h_scale, w_scale, h_scale], np.float32)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, new_w - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, new_h - 1)
    masks = TrainTransform.masks(s.masks, (new_h, new_w), flip=False)
    return Sample(image, boxes.astype(np.float32), s.labels, masks), (w_scale, h_scale)


def flip_sample(s: Sample) -> Sample:
    """Horizontal flip with the original's inclusive convention: x -> width - x - 1."""
    w = s.image.shape[1]
    boxes = np.stack((w - s.boxes[:, 2] - 1, s.boxes[:, 1], w - s.boxes[:, 0] - 1, s.boxes[:, 3]), 1)
    return Sample(np.ascontiguousarray(s.image[:, ::-1]), boxes.reshape(-1, 4).astype(np.float32), s.labels,
                  np.ascontiguousarray(s.masks[:, :, ::-1]))


@dataclass
class MultiScaleResize:
    """RetinaNet-style multi-scale training of the 800x1333 models: keep-ratio resize to (long, short)
    limits drawn as `TrainTransform.sample` draws them (scale_mode "range": long side in 1333..1333,
    short side in 640..800, integers), then a flip with `flip_prob`."""

    scales: tuple[tuple[int, int], ...] = ((1333, 800), (1333, 640))
    scale_mode: str = "range"
    flip_prob: float = 0.5

    def __call__(self, s: Sample, rng: np.random.Generator) -> tuple[Sample, float]:
        """Returns the sample and its resize factor."""
        scale, flip = TrainTransform(self.scales, self.scale_mode, self.flip_prob).sample(rng)
        factor, new_h, new_w = keep_ratio_scale(s.image.shape[0], s.image.shape[1], scale)
        out, _ = resize_sample(s, new_h, new_w)
        return (flip_sample(out) if flip else out), factor


@dataclass
class SSDAugment:
    """The real-time models' training pipeline: `PhotometricDistortion` -> `Expand` -> `MinIoURandomCrop`
    -> fixed `size` (w, h) resize without keeping the ratio -> flip with `flip_prob` (the original
    normalises between resize and flip; normalisation commutes with the flip)."""

    size: tuple[int, int] = (576, 576)
    flip_prob: float = 0.5
    photometric: PhotometricDistortion = field(default_factory=PhotometricDistortion)
    expand: Expand = field(default_factory=Expand)
    crop: MinIoURandomCrop = field(default_factory=MinIoURandomCrop)

    def __call__(self, s: Sample, rng: np.random.Generator) -> tuple[Sample, tuple[float, float]]:
        """Returns the sample at `size` and the (w_scale, h_scale) of its last resize."""
        s = self.crop(self.expand(self.photometric(s, rng), rng), rng)
        s, scale = resize_sample(s, self.size[1], self.size[0])
        if rng.random() < self.flip_prob:
            s = flip_sample(s)
        return s, scale
