"""Box maths shared by post-processing, the losses, the FCOS targets and the tracker.

Boxes are x1y1x2y2. Two pixel conventions exist in the original code, and each caller states its own:

    pixel_offset=0.0   continuous: width = x2 - x1 (the test-time fast NMS)
    pixel_offset=1.0   inclusive pixels, mmdet v1: width = x2 - x1 + 1 (the IoU loss, the mask loss
                       weights and the original tracker)

Each function keeps the arithmetic of the code it replaced operation for operation, so results are
bit-identical to it (the parity and baseline outputs depend on that).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

# (bottom, right) of the four crop-split sub-regions, in the coefficient order TL, TR, BL, BR
QUADRANTS: tuple[tuple[bool, bool], ...] = ((False, False), (False, True), (True, False), (True, True))


def box_area(boxes: torch.Tensor, pixel_offset: float = 0.0) -> torch.Tensor:
    """(..., 4) boxes -> (...,) areas (x2 - x1 + offset) * (y2 - y1 + offset)."""
    return (boxes[..., 2] - boxes[..., 0] + pixel_offset) * (boxes[..., 3] - boxes[..., 1] + pixel_offset)


def aligned_box_iou(a: torch.Tensor, b: torch.Tensor, pixel_offset: float = 0.0) -> torch.Tensor:
    """Element-wise IoU of (..., 4) boxes a and b (broadcast against each other) -> (...,).

    Args:
        a, b: boxes of broadcastable shapes.
        pixel_offset: 0.0 continuous, 1.0 inclusive pixels (see the module docstring).
    """
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt + pixel_offset).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (box_area(a, pixel_offset) + box_area(b, pixel_offset) - inter)


def box_iou(a: torch.Tensor, b: torch.Tensor, pixel_offset: float = 0.0) -> torch.Tensor:
    """Pairwise IoU of (..., N, 4) with (..., M, 4) boxes -> (..., N, M) (leading dims broadcast).

    The arithmetic of `aligned_box_iou` on broadcast pairs, operation for operation (same bits), one
    coordinate at a time: no (..., N, M, 2) intermediates, and each box's area is computed once.

    Args:
        pixel_offset: 0.0 continuous, 1.0 inclusive pixels (see the module docstring).
    """
    ax1, ay1, ax2, ay2 = (a[..., :, None, i] for i in range(4))  # (..., N, 1)
    bx1, by1, bx2, by2 = (b[..., None, :, i] for i in range(4))  # (..., 1, M)
    w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1) + pixel_offset).clamp_(min=0)
    h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1) + pixel_offset).clamp_(min=0)
    inter = w.mul_(h)
    union = box_area(a, pixel_offset)[..., :, None] + box_area(b, pixel_offset)[..., None, :]
    return inter.div_(union.sub_(inter))


def level_points(h: int, w: int, stride: int, device: torch.device) -> torch.Tensor:
    """(h*w, 2) xy centres of one pyramid level's locations, row-major:
    (x*stride + stride//2, y*stride + stride//2), as the original FCOS head places them."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32) * stride,
                            torch.arange(w, device=device, dtype=torch.float32) * stride, indexing="ij")
    return torch.stack((xs.reshape(-1), ys.reshape(-1)), -1) + stride // 2


def distance_to_box(points: torch.Tensor, distances: torch.Tensor,
                    clip_to: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode (..., 2) points and (..., 4) (left, top, right, bottom) distances -> (..., 4) x1y1x2y2.

    Args:
        clip_to: (h, w) of the image: x is clamped to [0, w - 1] and y to [0, h - 1] (the original's
            test-time decoding); None leaves the boxes unclamped (training).
    """
    boxes = torch.cat((points - distances[..., :2], points + distances[..., 2:]), -1)
    if clip_to is None:
        return boxes
    h, w = clip_to
    boxes = boxes.clamp(min=0)
    boxes[..., 0::2] = boxes[..., 0::2].clamp(max=w - 1)  # scalar bounds: no host-to-device copy
    boxes[..., 1::2] = boxes[..., 1::2].clamp(max=h - 1)
    return boxes


def box_to_distance(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Encode: (..., 2) points and (..., 4) boxes (broadcast) -> (..., 4) distances (left, top, right,
    bottom) from each point to the box sides; the inverse of `distance_to_box` without clipping."""
    return torch.cat((points - boxes[..., :2], boxes[..., 2:] - points), -1)


def crop_split_regions(boxes: torch.Tensor, size: tuple[int, int]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each pixel of a map falls relative to each box (the geometry of `crop_split`).

    Args:
        boxes: (..., N, 4) boxes in map pixels; size: (h, w) of the maps.
    Returns:
        right (..., N, 1, w) and bottom (..., N, h, 1) bool: the pixel column (row) is in the box's right
        (bottom) half, trunc((px - x1) / ((x2 - x1 + 0.1) / 2)) >= 1, the original CUDA kernel's
        arithmetic; inside (..., N, h, w) bool, x1 <= px < x2 and y1 <= py < y2.
    """
    h, w = size
    px = torch.arange(w, device=boxes.device, dtype=boxes.dtype)  # (w,)
    py = torch.arange(h, device=boxes.device, dtype=boxes.dtype)[:, None]  # (h, 1)
    x1, y1, x2, y2 = (boxes[..., i, None, None] for i in range(4))  # (..., N, 1, 1)
    inside = ((px >= x1) & (px < x2)) & ((py >= y1) & (py < y2))  # rows and columns first: one (h, w) op
    right = ((px - x1) / ((x2 - x1 + 0.1) / 2)).trunc() >= 1  # (..., N, 1, w)
    bottom = ((py - y1) / ((y2 - y1 + 0.1) / 2)).trunc() >= 1  # (..., N, h, 1)
    return right, bottom, inside


def crop_split(quadrant_maps: Iterable[torch.Tensor], boxes: torch.Tensor, size: tuple[int, int]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop-split rule: each pixel of a box takes its value from the map of the box quadrant it
    falls in.

    Args:
        quadrant_maps: four (..., N, h, w) maps (logits or probabilities) for the TL, TR, BL, BR
            sub-regions, in that order. Consumed one at a time, so a generator keeps memory at one map
            plus the result.
        boxes: (..., N, 4) boxes in map pixels.
        size: (h, w) of the maps.
    Returns:
        values (..., N, h, w): each pixel's value from its quadrant's map (outside the box: a value
        from one of the maps, meaningless); inside (..., N, h, w) bool, x1 <= px < x2 and
        y1 <= py < y2. The quadrant of a pixel is `crop_split_regions`'.
    """
    right, bottom, inside = crop_split_regions(boxes, size)
    values = None
    for (in_bottom, in_right), part in zip(QUADRANTS, quadrant_maps, strict=True):
        values = part if values is None else torch.where((right == in_right) & (bottom == in_bottom), part, values)
    return values, inside


def quadrant_index(right: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """(..., N, 1, w) right and (..., N, h, 1) bottom halves (`crop_split_regions`) -> (..., N, h, w) int64
    index of each pixel's quadrant in the `QUADRANTS` order TL, TR, BL, BR: 2 * bottom + right."""
    return (bottom.long() * 2).add(right.long())
