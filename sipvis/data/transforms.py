"""Training-time transforms with the original's arithmetic (mmdetection v1 `ImageTransform`,
`BboxTransform`, `MaskTransform`): keep-ratio resize (one scale, a range of scales, or a choice among
scales), horizontal flip applied identically to a frame and its reference frame, normalisation.

Boxes use the original's inclusive pixel convention: an annotation `[x, y, w, h]` becomes
`[x, y, x + w - 1, y + h - 1]`, a flip maps x to `width - x - 1`, boxes are clipped to
`[0, width - 1] x [0, height - 1]` of the resized image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from sipvis.errors import SipvisError
from sipvis.model.config import SipMaskConfig
from sipvis.model.preprocess import keep_ratio_scale


@dataclass
class TrainTransform:
    """Resize + flip + normalise for training pairs.

    Attributes:
        scales: (long, short) size limits. One entry: fixed. Two entries with scale_mode "range": long
            and short side drawn uniformly (integers) between the two, as the original's multi-scale
            training. Otherwise ("value"): one entry drawn per sample.
        scale_mode: "range" or "value".
        flip_prob: probability of a horizontal flip (the same for both frames of a pair).
        mean, std, to_rgb: normalisation, in the network's convention (BGR input unless to_rgb).

    The defaults are those of a run (`sipvis.training.config.DataConfig` takes its augmentation
    defaults from here) and of the model's normalisation (`SipMaskConfig`).
    """

    scales: tuple[tuple[int, int], ...] = ((640, 360),)
    scale_mode: str = "range"
    flip_prob: float = 0.5
    mean: tuple[float, float, float] = SipMaskConfig.pixel_mean
    std: tuple[float, float, float] = SipMaskConfig.pixel_std
    to_rgb: bool = SipMaskConfig.to_rgb

    def __post_init__(self) -> None:
        self.scales = tuple((int(a), int(b)) for a, b in self.scales)
        if not self.scales:
            raise SipvisError("at least one training scale is needed")
        if self.scale_mode not in ("range", "value"):
            raise SipvisError(f"scale_mode must be 'range' or 'value', got {self.scale_mode!r}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise SipvisError(f"flip_prob must be between 0 and 1, got {self.flip_prob}")

    def sample(self, rng: np.random.Generator) -> tuple[tuple[int, int], bool]:
        """Draw (scale, flip) for one sample."""
        if len(self.scales) == 1:
            scale = self.scales[0]
        elif len(self.scales) == 2 and self.scale_mode == "range":
            longs = [max(s) for s in self.scales]
            shorts = [min(s) for s in self.scales]
            scale = (int(rng.integers(min(longs), max(longs) + 1)), int(rng.integers(min(shorts), max(shorts) + 1)))
        else:
            scale = self.scales[int(rng.integers(len(self.scales)))]
        return scale, bool(rng.random() < self.flip_prob)

    def image(self, img: np.ndarray, scale: tuple[int, int], flip: bool) -> tuple[torch.Tensor, float]:
        """(H, W, 3) uint8 BGR -> (3, h, w) float32 normalised tensor and the resize factor."""
        factor, new_h, new_w = keep_ratio_scale(img.shape[0], img.shape[1], scale)
        if (new_h, new_w) != img.shape[:2]:
            img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if flip:
            img = img[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()  # (h, w, 3) -> (3, h, w)
        if self.to_rgb:
            x = x.flip(0)
        x = (x - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)
        return x, factor

    @staticmethod
    def boxes(boxes: np.ndarray, factor: float, flip: bool, size: tuple[int, int]) -> np.ndarray:
        """(N, 4) inclusive x1y1x2y2 in source pixels -> resized (and flipped) pixels, clipped."""
        h, w = size
        out = boxes.astype(np.float32) * np.float32(factor)
        if flip:
            out = np.stack((w - out[:, 2] - 1, out[:, 1], w - out[:, 0] - 1, out[:, 3]), 1)
        out[:, 0::2] = np.clip(out[:, 0::2], 0, w - 1)
        out[:, 1::2] = np.clip(out[:, 1::2], 0, h - 1)
        return out.reshape(-1, 4)

    @staticmethod
    def masks(masks: np.ndarray, size: tuple[int, int], flip: bool) -> np.ndarray:
        """(N, H, W) uint8 -> (N, h, w) uint8, nearest-neighbour resize (as mmcv.imrescale) and flip."""
        h, w = size
        n = masks.shape[0]
        if n == 0:
            return np.zeros((0, h, w), np.uint8)
        if masks.shape[1:] != (h, w):
            # cv2 resizes up to 512 channels at once: (N, H, W) -> (H, W, N) chunks
            chunks = []
            for s in range(0, n, 512):
                part = np.ascontiguousarray(masks[s:s + 512].transpose(1, 2, 0))
                r = cv2.resize(part, (w, h), interpolation=cv2.INTER_NEAREST)
                chunks.append(r.reshape(h, w, -1).transpose(2, 0, 1))
            masks = np.concatenate(chunks)
        if flip:
            masks = masks[:, :, ::-1]
        return np.ascontiguousarray(masks)


def xywh_to_inclusive_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) `[x, y, w, h]` -> `[x, y, x + w - 1, y + h - 1]` (the original's box convention)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.stack((boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2] - 1, boxes[:, 1] + boxes[:, 3] - 1), 1)
