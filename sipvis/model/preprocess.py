"""Pre-processing with the original's arithmetic: keep-ratio resize (cv2 bilinear on uint8, rounded
size), mean/std normalisation, zero padding to a multiple of 32.

The resize runs on the host (in the decode thread) because cv2's fixed-point bilinear on uint8 is what
the original feeds the network; normalisation and padding run on the device on a whole batch.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


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


def resize_exact(image: np.ndarray, size: tuple[int, int] = (544, 544)) -> tuple[np.ndarray, tuple[float, float]]:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 resized to exactly `size` = (w, h), the ratio not kept (the
    544x544 image models; cv2 bilinear on uint8 as mmcv's imresize), and (w_scale, h_scale) = (w/W, h/H)."""
    width, height = size
    scale = (width / image.shape[1], height / image.shape[0])
    if (height, width) == image.shape[:2]:
        return image, scale
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR), scale


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
    """(B, h, w, 3) uint8 BGR on any device -> (B, 3, Hp, Wp) normalised, zero-padded bottom/right.

    The result is channels_last (the network's faster layout on CPU): it is written once, in place, into
    an (B, Hp, Wp, 3) buffer whose padding alone is zeroed; (x - mean) / std in float32 as the original,
    the uint8 -> float conversion fused into the subtraction.
    """
    b, h, w, _ = images.shape
    hp, wp = padded_size(h, w, divisor)
    if to_rgb:
        images = images.flip(-1)
    out = torch.empty((b, hp, wp, 3), dtype=torch.float32, device=images.device)
    out[:, h:] = 0
    out[:, :h, w:] = 0
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device)
    torch.sub(images, mean_t, out=out[:, :h, :w]).div_(std_t)
    return out.permute(0, 3, 1, 2).to(dtype)  # (B, Hp, Wp, 3) -> (B, 3, Hp, Wp), channels_last strides
