"""Test-time decoding, batched on the device: per-level top-k, box decoding, per-class fast NMS,
crop-split mask assembly, upsampling to the original frame, and the tracking embedding of each box.

Everything stays a padded (B, K, ...) tensor with a `valid` mask, so a batch of frames is decoded with
no per-detection host synchronisation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sipvis.model.box_ops import box_iou, crop_split_regions, distance_to_box, level_points, quadrant_index
from sipvis.model.config import SipMaskConfig
from sipvis.model.head import HeadOutputs


@dataclass
class FrameGeometry:
    """Sizes shared by every frame of a batch (one video, or images of one size).

    Attributes:
        resized: (h, w) of the resized image fed to the network (before padding).
        original: (H, W) of the source frame.
        scale: resize factor, resized = original * scale: one number (keep-ratio resize) or (w_scale,
            h_scale) (the fixed-size 544x544 image models).
    """

    resized: tuple[int, int]
    original: tuple[int, int]
    scale: float | tuple[float, float]

    def box_scale(self, device: torch.device) -> float | torch.Tensor:
        """The original's `scale_factor` as boxes are divided / multiplied by it: the number itself, or a
        float32 (4,) tensor (w, h, w, h)."""
        if isinstance(self.scale, tuple):
            sx, sy = self.scale
            return torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=device)
        return self.scale

    def mask_factor(self) -> tuple[float, float]:
        """(fy, fx) of the mask upsampling, 2 / scale: in double for one number, in float32 per axis (the
        original divides its float32 scale_factor array)."""
        if isinstance(self.scale, tuple):
            sx, sy = np.float32(self.scale[0]), np.float32(self.scale[1])
            return float(np.float32(2) / sy), float(np.float32(2) / sx)
        return 2 / self.scale, 2 / self.scale


@dataclass
class Detections:
    """Up to K detections per frame for a batch of B frames, padded.

    Attributes:
        boxes: (B, K, 4) x1y1x2y2 in original-frame pixels.
        scores: (B, K) score x centerness.
        labels: (B, K) int64 0-based class index.
        valid: (B, K) bool; padded slots are False. Valid slots come first, by decreasing score (image models
            with per-class NMS: in the original's class-by-class order).
        masks: (B, K, H, W) bool at the original frame size (all False in invalid slots).
        embeddings: (B, K, E) tracking embeddings (empty last dim when the model has no tracking map);
            None for the image models (`postprocess_coco`).
        mask_scores: (B, K) float32 SipMask++ re-scored mask scores (predicted mask IoU x score), None for
            models without re-scoring.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    masks: torch.Tensor
    embeddings: torch.Tensor | None
    mask_scores: torch.Tensor | None = None


def decode_candidates(out: HeadOutputs, geom: FrameGeometry, cfg: SipMaskConfig):
    """Per level: the `nms_pre` candidates with the largest max-class probability x centerness (in that
    order), boxes decoded and clamped to the resized image; levels concatenated, boxes divided by the scale.

    Returns:
        boxes (B, N, 4) original pixels, probabilities (B, N, C), centerness (B, N), coefficients (B, N, 4K).
    """
    h_img, w_img = geom.resized
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    for cls, reg, ctr, cof, stride in zip(out.cls_logits, out.bbox_reg, out.centerness, out.coeffs, cfg.strides):
        b, c, h, w = cls.shape
        prob = cls.float().sigmoid().permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, C, H, W) -> (B, HW, C)
        centerness = ctr.float().sigmoid().reshape(b, h * w, 1)
        dist = reg.float().permute(0, 2, 3, 1).reshape(b, h * w, 4)
        coeffs = cof.float().permute(0, 2, 3, 1).reshape(b, h * w, -1)
        level = [prob, centerness, dist, coeffs, level_points(h, w, stride, cls.device).expand(b, -1, -1)]
        if cfg.nms_pre > 0 and h * w > cfg.nms_pre:
            top = (prob * centerness).max(-1).values.topk(cfg.nms_pre, dim=1).indices  # (B, k), descending
            level = [t.gather(1, top[..., None].expand(-1, -1, t.shape[-1])) for t in level]
        prob, centerness, dist, coeffs, points = level
        for part, t in zip(parts, (distance_to_box(points, dist, clip_to=(h_img, w_img)), prob,
                                   centerness[..., 0], coeffs)):
            part.append(t)
    boxes, probs, centerness, coeffs = (torch.cat(p, 1) for p in parts)
    return boxes / geom.box_scale(boxes.device), probs, centerness, coeffs


def fast_nms(boxes: torch.Tensor, scores: torch.Tensor, cfg: SipMaskConfig):
    """Per-class fast NMS (YOLACT style, as the original) and the best `max_per_img` over classes.

    Args:
        boxes: (B, N, 4); scores: (B, N, C).
    Returns:
        index (B, K) into N, labels (B, K), scores (B, K), valid (B, K) with K = max_per_img.

    Only the leading ranks of each class are examined (`_nms_top`), as few as decide the result
    exactly: the outputs are those of the full (C, top_k, top_k) computation, bit for bit.
    """
    b, n, c = scores.shape
    top_k = min(cfg.nms_top_k, n)
    cls_scores, order = scores.transpose(1, 2).sort(dim=2, descending=True)  # (B, C, N)
    cls_scores, order = cls_scores[..., :top_k], order[..., :top_k]
    k = min(cfg.max_per_img, c * top_k)
    best, pos = _nms_top(boxes, cls_scores, order, cfg, k)
    labels = pos // top_k
    index = order.reshape(b, -1).gather(1, pos)
    return index, labels, best.clamp(min=0), best > 0


def _nms_top(boxes: torch.Tensor, cls_scores: torch.Tensor, order: torch.Tensor, cfg: SipMaskConfig, k: int):
    """The top-k (values (B, k), positions (B, k) into C * top_k) of the kept scores (-1 where not kept),
    equal to those of every rank's keep flag.

    A box at or under the score threshold is never kept, and a box's flag depends only on the boxes ranked
    above it in its class; so only ranks up to the last one over the threshold (`last`) need flags. The
    ranks are examined `cfg.max_per_img`, then twice as many... at a time: once the k best kept scores
    are distinct, beat the (k+1)-th and every unexamined score over the threshold, the top-k is the full
    computation's whatever the unexamined flags are. One host sync per step.
    """
    above = cls_scores > cfg.score_thr
    ranks = torch.arange(1, above.shape[-1] + 1, device=above.device)
    last = int((above * ranks).max()) if above.numel() else 0  # ranks past it are never kept
    fill = torch.full_like(cls_scores, -1.0)
    examined = min(last, max(cfg.max_per_img, 1))
    while True:
        keep = torch.zeros_like(above)
        if examined:
            keep[..., :examined] = _nms_flags(boxes, order[..., :examined], cfg.nms_iou) & above[..., :examined]
        flat = torch.where(keep, cls_scores, fill).flatten(1)
        if examined == last or k >= flat.shape[1]:
            return flat.topk(k, dim=1)  # sorted, highest first
        values, positions = flat.topk(k + 1, dim=1)
        rest = torch.where(above[..., examined:], cls_scores[..., examined:], fill[..., examined:])
        decided = (values[:, :-1] > values[:, 1:]).all(1) & (values[:, k - 1] > rest.flatten(1).max(1).values)
        if bool(decided.all()):
            return values[:, :k], positions[:, :k]
        examined = min(2 * examined, last)


def _nms_flags(boxes: torch.Tensor, order: torch.Tensor, iou_thr: float) -> torch.Tensor:
    """(B, C, m) per-class ranking (indices into N of (B, N, 4) boxes) -> (B, C, m) bool: no higher-ranked
    box of its class (kept or not) overlaps the box by more than `iou_thr` (NaN IoU counts as overlap)."""
    b, c, m = order.shape
    cls_boxes = boxes.gather(1, order.reshape(b, -1, 1).expand(-1, -1, 4)).view(b, c, m, 4)
    iou = box_iou(cls_boxes, cls_boxes, pixel_offset=0.0).triu_(diagonal=1)  # (B, C, m, m)
    return iou.max(dim=2).values <= iou_thr


def crop_split_masks(basis: torch.Tensor, coeffs: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Assemble soft masks from 2x2 sub-region coefficients, cropped to their boxes.

    Args:
        basis: (B, K, h, w) basis masks.
        coeffs: (B, N, 4K) coefficients ordered top-left, top-right, bottom-left, bottom-right.
        boxes: (B, N, 4) boxes in basis-mask pixels.
    Returns:
        (B, N, h, w) probabilities, 0 outside the box; the quadrant rule is `box_ops.crop_split`.

    Only the pixels inside some box are computed (`_covered_pixels`); each one's logits come from one
    product for the four quadrants of all N boxes, as always: the product's rows (N x 4) set its rounding,
    a product per quadrant or per box rounds differently, and the outputs must stay bit-identical (a
    subset of its columns does not change them). The quadrant is picked before the sigmoid, which is
    element-wise: a quarter of the sigmoids, same bits.
    """
    b, k, h, w = basis.shape
    n = coeffs.shape[1]
    right, bottom, inside = crop_split_regions(boxes, (h, w))
    source, target = _covered_pixels(inside)
    soft = basis.new_zeros((b, n, h * w + 1), dtype=torch.float32)  # the last column takes the padding
    if source.numel():
        # gather, not index_select: along the last dim it is several times faster, same values and layout
        cols = basis.flatten(2).gather(2, source.expand(b, k, -1))  # (B, K, P)
        logits = torch.einsum("bkp,bnqk->bnqp", cols, coeffs.view(b, n, 4, k).to(basis.dtype)).float()
        column, row = ((source % w).expand(b, n, -1), (source // w).expand(b, n, -1))
        quadrant = quadrant_index(right[..., 0, :].gather(2, column)[..., None, :],
                                  bottom[..., 0].gather(2, row)[..., None, :])  # (B, N, 1, P)
        picked = logits.gather(2, quadrant).squeeze(2).sigmoid_()  # (B, N, P)
        soft.index_copy_(2, target, picked.mul_(inside.flatten(2).gather(2, source.expand(b, n, -1))))
    return soft[..., : h * w].unflatten(-1, (h, w))


def _covered_pixels(inside: torch.Tensor, multiple: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, h, w) in-box flags -> flat indices of the pixels inside some box of some frame, padded to a
    multiple of `multiple` (one host sync): `source` (P,) pads with pixel 0, `target` (P,) with h * w, a
    column past the map where the padding is dropped.

    The padding keeps every element-wise op on (B, N, P) in its vectorised loop: PyTorch's scalar loop
    (the tail of a vector loop, also at each thread's chunk end) computes the sigmoid differently in the
    last bit, and the old full-map sigmoid never took it.
    """
    hw = inside.shape[-2] * inside.shape[-1]
    pixels = inside.flatten(2).any(1).any(0).nonzero().squeeze(1)
    pad = -pixels.numel() % multiple
    source = torch.cat((pixels, pixels.new_zeros(pad)))
    target = torch.cat((pixels, pixels.new_full((pad,), hw)))
    return source, target


def postprocess(out: HeadOutputs, geom: FrameGeometry, cfg: SipMaskConfig) -> Detections:
    """Raw head outputs of B frames -> padded `Detections` at the original frame size."""
    boxes, probs, centerness, coeffs = decode_candidates(out, geom, cfg)
    index, labels, det_scores, valid = fast_nms(boxes, probs * centerness[..., None], cfg)
    det_boxes = boxes.gather(1, index[..., None].expand(-1, -1, 4))
    # every slot's coefficients: the mask product's rows set its rounding (`crop_split_masks`)
    det_coeffs = coeffs.gather(1, index[..., None].expand(-1, -1, coeffs.shape[-1]))
    soft = crop_split_masks(out.basis, det_coeffs, det_boxes * geom.scale / 2)
    used = leading_slots(valid)
    masks = paste_masks(soft[:, :used], valid, used, geom, cfg.mask_thr)
    embeddings = box_embeddings(out.track_feats, det_boxes * geom.scale)
    return Detections(det_boxes, det_scores, labels, valid, masks, embeddings)


def leading_slots(valid: torch.Tensor) -> int:
    """The number of leading (B, K) slots that hold a valid detection in some frame (valid slots come
    first): masks are made for these only. One host sync."""
    return int(valid.sum(1).max()) if valid.numel() else 0


def paste_masks(soft: torch.Tensor, valid: torch.Tensor, used: int, geom: FrameGeometry, threshold: float,
                budget: int | None = None) -> torch.Tensor:
    """(B, U, h, w) soft masks at the basis size of the U = `used` leading slots of (B, K) `valid`
    (`leading_slots`) -> (B, K, H, W) bool at the original size: the decisions of bilinear upsampling by
    `geom.mask_factor()` given to `F.interpolate` (align_corners False, as the original; output
    floor(size x factor)), > threshold, pasted at the top-left into zeros and cropped to fit; all False
    in invalid slots.

    Each mask is upsampled in the window of pixels around its box (`_threshold_windows`): the same
    decisions as the whole maps', at a fraction of the work. Slots go as many at a time (up to 16) as keep
    windows the size of the frame under `budget` pixels, about 13 bytes each at the peak (default: 2^23
    on the CPU: 16 slots at 640x360, 7 at 1333x800; 2^26 on a GPU, where each chunk costs host syncs: a
    batch of 8 1280x720 frames in two chunks).
    """
    b, k = valid.shape
    H, W = geom.original
    masks = torch.zeros((b, k, H, W), dtype=torch.bool, device=soft.device)
    if budget is None:
        budget = 1 << (26 if soft.device.type == "cuda" else 23)
    chunk = max(1, min(16, budget // max(1, b * H * W)))
    for start in range(0, used, chunk):
        stop = min(start + chunk, used)
        # invalid slots of a frame among the leading ones are zeroed first, so they threshold to False
        src = soft[:, start:stop].float() * valid[:, start:stop, None, None]  # the margin assumes float32
        _threshold_windows(src, geom.mask_factor(), threshold, masks[:, start:stop])
    return masks


# Bound on |value - exact bilinear value| of one upsampled pixel, for F.interpolate's float32 arithmetic
# and for `_threshold_windows`' (values and weights in [0, 1], at most eight rounded operations each:
# under 5e-7 together). Pixels this close to the threshold are decided by F.interpolate itself.
_DECISION_MARGIN = 1e-6


def _threshold_windows(soft: torch.Tensor, factor: tuple[float, float], threshold: float,
                       out: torch.Tensor) -> None:
    """Write `F.interpolate(soft, scale_factor=factor, bilinear) > threshold`, cropped to fit, into the
    all-False (B, N, H, W) `out`, computing only each map's window of output pixels that can be non-zero.

    A window is interpolated with the whole map's own taps (input rows / columns and weights, read from
    F.interpolate: `_axis_taps`), rows then columns, so each value is the whole map's bilinear value up
    to float rounding. A decision is taken from it when the value is more than `_DECISION_MARGIN` from
    the threshold, the rounding of either side being smaller; a map with a pixel within the margin is
    upsampled whole by F.interpolate, as the original, so every decision is F.interpolate's. Pixels
    outside a window read only zeros: 0, never over a threshold >= 0.
    """
    b, n, h, w = soft.shape
    if soft.numel() == 0:
        return
    if threshold < 0:  # every pixel would be over it: no window to find
        _threshold_whole(soft, factor, threshold, out, torch.ones(b, n, dtype=torch.bool))
        return
    nonzero = soft != 0
    taps = [_axis_taps(size, f, axis, soft.device, soft.dtype) for axis, (size, f) in enumerate(zip((h, w), factor))]
    limits = (min(out.shape[-2], taps[0][0].numel()), min(out.shape[-1], taps[1][0].numel()))
    bounds = [_window_bounds(nonzero.any(-1 - axis), taps[axis], limits[axis]) for axis in (0, 1)]
    lengths = torch.stack([(hi - lo).clamp(min=0).amax() for lo, hi in bounds]).tolist()  # one host sync
    if min(lengths) == 0:  # every map is zero (or cropped away)
        return
    (row_at, top, bottom, w_top, w_bottom), (col_at, left, right, w_left, w_right) = (
        _window_lines(bounds[axis][0], lengths[axis], taps[axis], limits[axis]) for axis in (0, 1))
    upper, lower = (soft.gather(2, t[..., None].expand(-1, -1, -1, w)) for t in (top, bottom))
    vertical = upper.mul_(w_top[..., None]).add_(lower.mul_(w_bottom[..., None]))  # (B, N, rows, w)
    left, right = (vertical.gather(3, t[..., None, :].expand(-1, -1, lengths[0], -1)) for t in (left, right))
    values = left.mul_(w_left[..., None, :]).add_(right.mul_(w_right[..., None, :]))  # (B, N, rows, cols)
    del left, right, vertical  # the peak: `values` and the paste's index
    pixels = row_at[..., None] * out.shape[-1] + col_at[..., None, :]
    out.flatten(2).scatter_(2, pixels.flatten(2), (values > threshold).flatten(2))
    unsure = values.sub_(threshold).abs_().le_(_DECISION_MARGIN).flatten(2).any(2)  # (B, N)
    if bool(unsure.any()):  # the second host sync; rare: a value within 1e-6 of the threshold
        _threshold_whole(soft, factor, threshold, out, unsure)


def _window_bounds(nonzero: torch.Tensor, taps: tuple[torch.Tensor, ...], limit: int):
    """Along one axis: (B, N, size) flags of the input lines holding a non-zero value and the axis' taps
    -> per map, the output lines [lo, hi) whose taps reach a non-zero line, within the first `limit`."""
    first_tap, second_tap = taps[0], taps[1]
    index = torch.arange(nonzero.shape[-1], device=nonzero.device)
    first = torch.where(nonzero, index, nonzero.shape[-1]).min(-1).values
    last = torch.where(nonzero, index, -1).max(-1).values
    # the taps' lines never decrease along the output
    lo = torch.searchsorted(second_tap, first).clamp(max=limit)
    hi = torch.searchsorted(first_tap, last, right=True).clamp(max=limit)
    return lo, hi


def _window_lines(lo: torch.Tensor, length: int, taps: tuple[torch.Tensor, ...], limit: int):
    """Each map's window of `length` output lines (the longest needed, the same for all maps), starting at
    its `lo` and kept within `limit`: the lines (B, N, length) and their taps, gathered likewise."""
    start = torch.minimum(lo, torch.full_like(lo, limit - length))
    at = start[..., None] + torch.arange(length, device=lo.device)
    return (at, *(t[at] for t in taps))


def _threshold_whole(soft: torch.Tensor, factor: tuple[float, float], threshold: float, out: torch.Tensor,
                     slots: torch.Tensor) -> None:
    """`out[i, j] = F.interpolate(soft[i, j]) > threshold`, cropped to fit, for the (B, N) `slots` flagged:
    one map at a time (the same bits as in a batch of maps)."""
    H, W = out.shape[-2:]
    for i, j in slots.nonzero().tolist():
        up = F.interpolate(soft[i : i + 1, j : j + 1], scale_factor=factor, mode="bilinear", align_corners=False)
        hh, ww = min(up.shape[-2], H), min(up.shape[-1], W)
        out[i, j, :hh, :ww] = up[0, 0, :hh, :ww] > threshold


@functools.lru_cache(maxsize=64)
def _axis_taps(size: int, factor: float, axis: int, device: torch.device, dtype: torch.dtype):
    """F.interpolate's own bilinear taps (align_corners False) along `axis` (0 rows, 1 columns) of a map
    `size` lines long upsampled by `factor`, on `device` in `dtype`: for each output line, its first and
    second input lines (long) and their weights, read by upsampling an identity matrix (exact: each
    output is one weight x 1)."""
    shape, scale = ((1, size, size, 1), (factor, 1.0)) if axis == 0 else ((1, size, 1, size), (1.0, factor))
    probe = torch.eye(size, device=device, dtype=dtype).reshape(shape)
    weights = F.interpolate(probe, scale_factor=scale, mode="bilinear", align_corners=False)[0].flatten(1)
    taken = weights != 0  # (input line, output line)
    first = taken.int().argmax(0)  # the first input line with a weight
    second = (first + 1).clamp(max=size - 1)
    lines = torch.arange(weights.shape[1], device=device)
    w_first = weights[first, lines]
    w_second = torch.where(second != first, weights[second, lines], 0.0)
    if not torch.equal(taken.sum(0), (w_first != 0).int() + (w_second != 0).int()):
        raise RuntimeError("F.interpolate's bilinear upsampling is not two adjacent taps per line")
    return first, second, w_first, w_second


def box_embeddings(track_feats: torch.Tensor, boxes: torch.Tensor, stride: int = 8) -> torch.Tensor:
    """Embedding at each box centre: (B, E, h, w) map, (B, N, 4) boxes in resized-input pixels -> (B, N, E)."""
    b, n = boxes.shape[:2]
    if track_feats.numel() == 0:
        return boxes.new_zeros(b, n, 0)
    _, e, h, w = track_feats.shape
    cx = torch.floor((boxes[..., 0] + boxes[..., 2]) / 2.0 / stride).long().clamp(0, w - 1)
    cy = torch.floor((boxes[..., 1] + boxes[..., 3]) / 2.0 / stride).long().clamp(0, h - 1)
    flat = track_feats.flatten(2)  # (B, E, h*w)
    return flat.gather(2, (cy * w + cx)[:, None, :].expand(-1, e, -1)).transpose(1, 2).float()
