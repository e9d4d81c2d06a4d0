"""Pre-processing with the original's arithmetic: keep-ratio resize (cv2 bilinear on uint8, rounded
size), mean/std normalisation, zero padding to a multiple of 32.

The resize runs on the host (in the decode thread) because cv2's fixed-point bilinear on uint8 is what
the original feeds the network; normalisation and padding run on the device on a whole batch.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def keep_ratio_scale(height: int, width: int, max_size: tuple[int, int] = (640, 360)) -> tuple[float, int, int]:
    """Scale factor and new (height, width) to fit (long, short) = max_size, as mmcv's imrescale."""
    long_side, short_side = max(max_size), min(max_size)
    scale = min(long_side / max(height, width), short_side / min(height, width))
    return scale, int(height * scale + 0.5), int(width * scale + 0.5)


def resize_frame(image: np.ndarray, max_size: tuple[int, int] = (640, 360)) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> resized (h, w, 3) uint8 and the scale factor."""
    scale, new_h, new_w = keep_ratio_scale(image.shape[0], image.shape[1], max_size)
    if (new_h, new_w) == image.shape[:2]:
        return image, scale
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR), scale


def padded_size(height: int, width: int, divisor: int = 32) -> tuple[int, int]:
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def normalize_and_pad(
    images: torch.Tensor,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    to_rgb: bool = False,
    divisor: int = 32,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(B, h, w, 3) uint8 BGR on any device -> (B, 3, Hp, Wp) normalised, zero-padded bottom/right."""
    x = images.permute(0, 3, 1, 2).float()  # (B, h, w, 3) -> (B, 3, h, w)
    if to_rgb:
        x = x.flip(1)
    x = (x - x.new_tensor(mean).view(1, 3, 1, 1)) / x.new_tensor(std).view(1, 3, 1, 1)
    hp, wp = padded_size(x.shape[2], x.shape[3], divisor)
    x = F.pad(x, (0, wp - x.shape[3], 0, hp - x.shape[2]))
    return x.to(dtype)
