"""FCOS training targets, as the original SipMask assigns them.

Every location of every pyramid level is a candidate. A location is positive for a ground-truth box
when (1) it lies inside the box's *centre region* — a square of radius `radius * stride` around the
box centre, clipped to the box — and (2) its largest distance to the box sides falls inside the
level's regress range. When several boxes qualify, the one of smallest area wins, with areas
counted the original's way, `(x2 - x1 + 1) * (y2 - y1 + 1)`, and ties going to the first box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sipvis.model.box_ops import box_area, box_to_distance, level_points

INF = 1e8


@dataclass
class FCOSTargets:
    """Assignment of all P locations (levels concatenated, row-major per level) for B images.

    Attributes:
        points: (P, 2) xy location centres in input pixels.
        strides: (P,) stride of each location's level.
        labels: (B, P) int64 0-based class of the assigned box, -1 for background.
        gt_index: (B, P) int64 index of the assigned box in that image's GT list, -1 for background.
        box_targets: (B, P, 4) distances (left, top, right, bottom) from the location to the assigned
            box (meaningless where background).
        level_sizes: number of locations per level.
    """

    points: torch.Tensor
    strides: torch.Tensor
    labels: torch.Tensor
    gt_index: torch.Tensor
    box_targets: torch.Tensor
    level_sizes: list[int]

    @property
    def positive(self) -> torch.Tensor:
        """(B, P) bool."""
        return self.labels >= 0


def all_level_points(sizes: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Location centres of all levels: (P, 2) points, (P,) strides, per-level counts."""
    pts = [level_points(h, w, s, device) for (h, w), s in zip(sizes, strides)]
    stride = torch.cat([torch.full((p.shape[0],), float(s), device=device) for p, s in zip(pts, strides)])
    return torch.cat(pts), stride, [p.shape[0] for p in pts]


def assign_single(points: torch.Tensor, strides: torch.Tensor, ranges: torch.Tensor, boxes: torch.Tensor,
                  labels: torch.Tensor, radius: float = 1.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FCOS assignment for one image.

    Args:
        points: (P, 2) location centres; strides: (P,); ranges: (P, 2) regress range (lo, hi) per location.
        boxes: (N, 4) x1y1x2y2 GT boxes in input pixels; labels: (N,) 0-based classes.
        radius: centre-sampling radius in strides (<= 0 disables centre sampling: inside the box).
    Returns:
        labels (P,) with -1 for background, gt_index (P,) with -1 for background, box_targets (P, 4).
    """
    num_points, num_gts = points.shape[0], boxes.shape[0]
    if num_gts == 0:
        return (labels.new_full((num_points,), -1), labels.new_full((num_points,), -1),
                points.new_zeros(num_points, 4))
    box_targets = box_to_distance(points[:, None], boxes[None])  # (P, N, 4)
    if radius > 0:
        x1, y1, x2, y2 = boxes[None, :, 0], boxes[None, :, 1], boxes[None, :, 2], boxes[None, :, 3]  # (1, N)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        r = strides[:, None] * radius  # (P, 1)
        # the centre square, clipped to the box
        centre = torch.stack((torch.maximum(cx - r, x1), torch.maximum(cy - r, y1),
                              torch.minimum(cx + r, x2), torch.minimum(cy + r, y2)), -1)  # (P, N, 4)
        inside = box_to_distance(points[:, None], centre).min(-1).values > 0
    else:
        inside = box_targets.min(-1).values > 0
    reach = box_targets.max(-1).values  # (P, N)
    in_range = (reach >= ranges[:, 0, None]) & (reach <= ranges[:, 1, None])
    areas = box_area(boxes, pixel_offset=1.0)[None].expand(num_points, -1)
    areas = torch.where(inside & in_range, areas, torch.full_like(areas, INF))
    min_area, gt_index = areas.min(dim=1)  # first minimum on ties, as the original
    background = min_area == INF
    out_labels = torch.where(background, labels.new_full((), -1), labels[gt_index])
    out_index = torch.where(background, gt_index.new_full((), -1), gt_index)
    return out_labels, out_index, box_targets[torch.arange(num_points, device=points.device), gt_index]


def fcos_targets(feat_sizes: list[tuple[int, int]], strides: tuple[int, ...],
                 regress_ranges: tuple[tuple[float, float], ...], boxes: list[torch.Tensor],
                 labels: list[torch.Tensor], radius: float = 1.5) -> FCOSTargets:
    """Targets for a batch.

    Args:
        feat_sizes: (H_l, W_l) of each level's output map.
        strides, regress_ranges: per level (the model config's).
        boxes: per image (N_i, 4) x1y1x2y2 in input pixels; labels: per image (N_i,) 0-based classes.
        radius: centre-sampling radius in strides (1.5 as the original).
    """
    device = boxes[0].device if boxes else torch.device("cpu")
    points, point_strides, sizes = all_level_points(feat_sizes, strides, device)
    ranges = torch.cat([points.new_tensor(r)[None].expand(n, 2) for r, n in zip(regress_ranges, sizes)])
    per_image = [assign_single(points, point_strides, ranges, b.float(), l.long(), radius)
                 for b, l in zip(boxes, labels)]
    return FCOSTargets(
        points=points,
        strides=point_strides,
        labels=torch.stack([p[0] for p in per_image]),
        gt_index=torch.stack([p[1] for p in per_image]),
        box_targets=torch.stack([p[2] for p in per_image]),
        level_sizes=sizes,
    )


def centerness_targets(box_targets: torch.Tensor) -> torch.Tensor:
    """(N, 4) positive (l, t, r, b) -> (N,) sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))."""
    lr = box_targets[:, [0, 2]]
    tb = box_targets[:, [1, 3]]
    ratio = (lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values)
    return ratio.sqrt()
