"""SipMask-VIS training losses (paper Sec. 3.4), with the original implementation's normalisations.

`compute_losses(out, ref_track_feats, targets, cfg)` returns a dict of named terms, like torchvision's
`compute_loss`:

    loss_cls         sigmoid focal loss (alpha 0.25, gamma 2) over all locations and classes,
                     summed and divided by (#positives + #images)
    loss_bbox        -log IoU of decoded positive boxes (mmdet-v1 IoU, +1 pixel convention),
                     weighted by the centerness targets and divided by their sum
    loss_centerness  BCE of the centerness logits against the centerness targets, mean over positives
    loss_mask        mask alignment weighting loss: per positive, BCE of its crop-split mask inside its
                     *detected* box (decoded prediction, detached, halved to basis-mask pixels) against
                     the GT mask (half resolution, > 0.5) cropped to the same box, summed over pixels /
                     (box w * h) / #positives, weighted by sigmoid(score of its GT class) x IoU(GT box,
                     detected box) renormalised to mean 1; summed per image, divided by #images
    loss_match       tracking cross-entropy: embedding at each detected box centre (current frame)
                     against the embeddings at the reference-frame GT box centres (boxes jittered by
                     +-5%), with a constant 0 logit in front for "new object"; mean per image, divided
                     by #images
    match_acc        percentage of positives whose argmax is their true reference instance (a metric,
                     detached; not part of the total)

The COCO image models (no tracking branch: `ref_track_feats=None`) have no `loss_match` / `match_acc`;
SipMask++ (`rescoring` given) adds

    loss_mask_iou    the original's mask re-scoring loss (`loss_iou`): the branch's predicted IoU of its
                     GT class, on the detached cropped soft mask of each positive, against the IoU of that
                     mask > 0.4 with the GT mask (half resolution); squared error summed over positives
                     whose target IoU is in (0.1, 1] and whose GT mask has >= 100 pixels, x 10 /
                     (their count + 0.1)

Positives whose detected box (in basis-mask pixels) has area <= 1 take no part in the mask and
tracking terms, as in the original. (The original also skips an image's mask and tracking terms when
exactly one positive survives that filter, and fails on an image without positives; here both cases
are handled like any other.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sipvis.model.box_ops import aligned_box_iou, box_area, crop_split, distance_to_box
from sipvis.model.config import SipMaskConfig
from sipvis.model.head import HeadOutputs
from sipvis.model.postprocess import box_embeddings
from sipvis.model.targets import FCOSTargets, centerness_targets, fcos_targets

LOSS_NAMES = ("loss_cls", "loss_bbox", "loss_centerness", "loss_mask", "loss_match", "loss_mask_iou")
RESCORING_MASK_THR = 0.4  # the original's binarisation of the predicted mask for the re-scoring target


@dataclass
class FrameTargets:
    """Ground truth of one training sample (a frame and its reference frame), in network-input pixels.

    Attributes:
        boxes: (N, 4) x1y1x2y2 GT boxes of the current frame.
        labels: (N,) int64 0-based classes.
        masks: (N, Hm, Wm) uint8/bool GT masks, top-left aligned with the input (normally at the padded
            input size; any size works, it is cropped or zero-padded to the basis masks at half size).
        ref_boxes: (M, 4) GT boxes of the reference frame.
        pids: (N,) int64: k >= 1 when instance i is `ref_boxes[k - 1]`, 0 when absent from the reference.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    ref_boxes: torch.Tensor
    pids: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "FrameTargets":
        return FrameTargets(*(t.to(device, non_blocking=non_blocking) for t in
                              (self.boxes, self.labels, self.masks, self.ref_boxes, self.pids)))


@dataclass
class LossConfig:
    """Loss settings (defaults = the original).

    Attributes:
        focal_alpha, focal_gamma: sigmoid focal loss parameters.
        center_radius: FCOS centre-sampling radius in strides.
        ref_jitter: reference boxes are jittered by uniform(-a, a) x size in centre and size (0: off).
        weights: multiplier per loss term name (missing = 1).
    """

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    center_radius: float = 1.5
    ref_jitter: float = 0.05
    weights: dict | None = None


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
                       ) -> torch.Tensor:
    """Element-wise focal loss of logits against {0, 1} targets of the same shape."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * ce * (1 - p_t).pow(gamma)


def jitter_boxes(boxes: torch.Tensor, amplitude: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift centres by u*size and scale sizes by (1 + u), u ~ U(-a, a) per box and coordinate (the
    original's reference-box augmentation). (M, 4) -> (M, 4); amplitude 0 returns the boxes unchanged."""
    if amplitude == 0 or boxes.numel() == 0:
        return boxes
    u = torch.rand(boxes.shape[0], 4, generator=generator, device=boxes.device if generator is None
                   else generator.device).to(boxes.device) * (2 * amplitude) - amplitude
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = (boxes[:, 2:] - boxes[:, :2]).abs()
    centre = centre + size * u[:, :2]
    size = size * (1 + u[:, 2:])
    return torch.cat((centre - size / 2, centre + size / 2), 1)


def half_res_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, Hm, Wm) binary masks -> (N, h, w) bool at half resolution: bilinear x0.5 (the mean of each
    2x2 block), placed top-left in an (h, w) canvas, then > 0.5."""
    n = masks.shape[0]
    h, w = size
    if n == 0:
        return masks.new_zeros(0, h, w, dtype=torch.bool)
    half = F.interpolate(masks[None].float(), scale_factor=0.5, mode="bilinear", align_corners=False)[0]
    out = half.new_zeros(n, h, w)
    hh, ww = min(h, half.shape[1]), min(w, half.shape[2])
    out[:, :hh, :ww] = half[:, :hh, :ww]
    return out > 0.5


def crop_split_logits(basis: torch.Tensor, coeffs: torch.Tensor, boxes: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training form of `postprocess.crop_split_masks` for one image: mask logits and the in-box region.

    Args:
        basis: (K, h, w) basis masks; coeffs: (N, 4K) quadrant coefficients (TL, TR, BL, BR);
        boxes: (N, 4) boxes in basis-mask pixels.
    Returns:
        logits (N, h, w) of each pixel's quadrant, inside (N, h, w) bool (x1 <= px < x2, y1 <= py < y2);
        the quadrant rule is `box_ops.crop_split`. The quadrants' logits are made one at a time, so
        memory is O(N h w), not O(4 N h w).
    """
    k, h, w = basis.shape
    n = coeffs.shape[0]
    cq = coeffs.view(n, 4, k).to(basis.dtype)
    flat = basis.reshape(k, h * w)
    # one quadrant's product at a time: (N, K) @ (K, hw) -> (N, h, w)
    return crop_split(((cq[:, q] @ flat).view(n, h, w) for q in range(4)), boxes, (h, w))


def compute_losses(out: HeadOutputs, ref_track_feats: torch.Tensor | None, targets: list[FrameTargets],
                   cfg: SipMaskConfig, loss_cfg: LossConfig | None = None,
                   generator: torch.Generator | None = None,
                   rescoring: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """All training terms for a batch of B frame pairs (or B images of an image model).

    Args:
        out: head outputs of the B current frames (with the tracking map, unless an image model).
        ref_track_feats: (B, E, Hp/8, Wp/8) tracking map of the B reference frames; None: an image
            model (no tracking term).
        targets: B `FrameTargets`.
        cfg: the model config (strides, regress ranges).
        loss_cfg: loss settings.
        generator: random source of the reference-box jitter.
        rescoring: the SipMask++ re-scoring branch (`head.mask_scoring`), trained by `loss_mask_iou`.
    Returns:
        {"loss_cls", "loss_bbox", "loss_centerness", "loss_mask", "loss_match", "match_acc"}: scalars,
        float32 ("loss_match" and "match_acc" only with `ref_track_feats`, "loss_mask_iou" only with
        `rescoring`). The total is the sum of the `loss_*` terms (see `total_loss`).
    """
    lc = loss_cfg or LossConfig()
    b = out.cls_logits[0].shape[0]
    num_classes = out.cls_logits[0].shape[1]
    feat_sizes = [tuple(t.shape[-2:]) for t in out.cls_logits]
    with torch.no_grad():
        tg = fcos_targets(feat_sizes, cfg.strides, cfg.regress_ranges, [t.boxes for t in targets],
                          [t.labels for t in targets], lc.center_radius)
    # (B, C, H, W) per level -> (B, P, C) and likewise for the other maps
    cls = torch.cat([t.float().permute(0, 2, 3, 1).reshape(b, -1, num_classes) for t in out.cls_logits], 1)
    reg = torch.cat([t.float().permute(0, 2, 3, 1).reshape(b, -1, 4) for t in out.bbox_reg], 1)
    ctr = torch.cat([t.float().permute(0, 2, 3, 1).reshape(b, -1) for t in out.centerness], 1)
    cof = torch.cat([t.permute(0, 2, 3, 1).reshape(b, -1, t.shape[1]) for t in out.coeffs], 1)

    positive = tg.positive  # (B, P)
    num_pos = int(positive.sum())
    onehot = F.one_hot(tg.labels.clamp(min=0), num_classes).float() * positive[..., None]
    loss_cls = sigmoid_focal_loss(cls, onehot, lc.focal_alpha, lc.focal_gamma).sum() / (num_pos + b)

    if num_pos > 0:
        pos_reg = reg[positive]  # (Npos, 4)
        pos_tgt = tg.box_targets[positive]
        pos_points = tg.points[None].expand(b, -1, -1)[positive]
        ctr_tgt = centerness_targets(pos_tgt)
        iou = aligned_box_iou(distance_to_box(pos_points, pos_reg), distance_to_box(pos_points, pos_tgt),
                              pixel_offset=1.0)
        loss_bbox = (-iou.clamp(min=1e-6).log() * ctr_tgt).sum() / ctr_tgt.sum()
        loss_ctr = F.binary_cross_entropy_with_logits(ctr[positive], ctr_tgt)
    else:
        loss_bbox = reg.sum() * 0
        loss_ctr = ctr.sum() * 0

    sums = _mask_and_track_losses(out, ref_track_feats, targets, tg, cls, reg, cof, lc, generator, rescoring)
    # keep every output in the graph (DDP wants a gradient for every parameter on every step); the sums
    # accumulate in float32: under fp16 autocast a large map's sum overflows to inf, and 0 * inf is NaN
    f32 = torch.float32
    loss_mask = sums.mask / b + 0 * (out.basis.sum(dtype=f32) + cof.sum(dtype=f32))
    losses = {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_ctr, "loss_mask": loss_mask}
    if ref_track_feats is not None:
        losses["loss_match"] = sums.match / b + 0 * (out.track_feats.sum(dtype=f32) + ref_track_feats.sum(dtype=f32))
    if rescoring is not None:
        unused = sum(p.sum(dtype=f32) for p in rescoring.parameters())
        losses["loss_mask_iou"] = sums.iou * 10 / (sums.iou_count + 0.1) + 0 * unused
    weights = lc.weights or {}
    losses = {k: v.float() * float(weights.get(k, 1.0)) for k, v in losses.items()}
    if ref_track_feats is not None:
        losses["match_acc"] = (sums.acc / sums.n if sums.n > 0 else torch.zeros((), device=cls.device)).detach()
    return losses


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the `loss_*` terms (metrics such as `match_acc` are left out)."""
    return sum(v for k, v in losses.items() if k.startswith("loss_"))


@dataclass
class _Sums:
    """Per-image terms summed over a batch: mask loss, tracking loss, matches right (x100) and positives
    taking part; re-scoring squared errors and their weight."""

    mask: torch.Tensor
    match: torch.Tensor
    acc: torch.Tensor
    n: int = 0
    iou: torch.Tensor | float = 0.0
    iou_count: torch.Tensor | float = 0.0


def _mask_and_track_losses(out: HeadOutputs, ref_track_feats: torch.Tensor | None, targets: list[FrameTargets],
                           tg: FCOSTargets, cls: torch.Tensor, reg: torch.Tensor, cof: torch.Tensor,
                           lc: LossConfig, generator: torch.Generator | None,
                           rescoring: torch.nn.Module | None = None) -> _Sums:
    """Per-image mask alignment weighting loss, tracking loss (with `ref_track_feats`) and re-scoring
    loss (with `rescoring`): sums over images, not yet / B."""
    zero = torch.zeros((), device=cls.device)
    sums = _Sums(zero, zero, zero)
    basis_h, basis_w = out.basis.shape[-2:]
    for i, t in enumerate(targets):
        pos = tg.positive[i].nonzero().squeeze(1)
        # detected boxes: the decoded (detached) predictions, in basis-mask pixels
        det = distance_to_box(tg.points[pos], reg[i, pos].detach()) / 2
        keep = box_area(det) > 1.0
        pos, det = pos[keep], det[keep]
        n = pos.numel()
        if n == 0:
            continue
        gt_idx = tg.gt_index[i, pos]
        labels = tg.labels[i, pos]

        # mask alignment weighting: sigmoid score of the GT class x IoU with the GT box, mean 1
        with torch.no_grad():
            score = cls[i, pos, labels].sigmoid()
            iou = aligned_box_iou(t.boxes[gt_idx].float() / 2, det, pixel_offset=1.0)
            weight = score * iou
            weight = weight / (weight.sum() + 1e-4) * n
        gt_masks = half_res_masks(t.masks, (basis_h, basis_w))[gt_idx]  # (n, h, w)
        logits, inside = crop_split_logits(out.basis[i].float(), cof[i, pos].float(), det)
        # BCE inside the box only: outside pixels have prediction 0 and target 0 in the original
        bce = F.binary_cross_entropy_with_logits(logits, gt_masks.float(), reduction="none") * inside
        w = det[:, 2] - det[:, 0]
        h = det[:, 3] - det[:, 1]
        per_instance = bce.sum((1, 2)) / w / h / n
        sums.mask = sums.mask + (per_instance * weight).sum()
        if rescoring is not None:
            err, count = _rescoring_terms(rescoring, logits.detach().sigmoid() * inside, gt_masks, labels)
            sums.iou, sums.iou_count = sums.iou + err, sums.iou_count + count
        if ref_track_feats is not None:
            _add_track_terms(sums, out.track_feats[i:i + 1], ref_track_feats[i:i + 1], det, t,
                             t.pids[gt_idx].long(), lc, generator)
    return sums


def _add_track_terms(sums: _Sums, track_feats: torch.Tensor, ref_track_feats: torch.Tensor, det: torch.Tensor,
                     t: FrameTargets, cur_ids: torch.Tensor, lc: LossConfig,
                     generator: torch.Generator | None) -> None:
    """Tracking of one image: current detected-box centres (`det`, basis-mask pixels) vs the (jittered)
    reference GT box centres; (1, E, h, w) maps. Adds its cross-entropy and matches to `sums`."""
    n = det.shape[0]
    emb = box_embeddings(track_feats.float(), det[None] * 2)[0]  # (n, E)
    ref_boxes = jitter_boxes(t.ref_boxes.float(), lc.ref_jitter, generator)
    ref_emb = box_embeddings(ref_track_feats.float(), ref_boxes[None])[0]  # (M, E)
    match_logits = torch.cat((emb.new_zeros(n, 1), emb @ ref_emb.T), 1)  # (n, 1 + M)
    sums.match = sums.match + F.cross_entropy(match_logits, cur_ids)
    sums.acc = sums.acc + (match_logits.detach().argmax(1) == cur_ids).float().sum() * 100.0
    sums.n += n


def _rescoring_terms(rescoring: torch.nn.Module, soft: torch.Tensor, gt_masks: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask re-scoring of one image's n positives, as the original trains it.

    Args:
        soft: (n, h, w) detached sigmoid crop-split masks, zero outside their boxes.
        gt_masks: (n, h, w) bool GT masks at the same (half) resolution, not cropped.
        labels: (n,) GT classes.
    Returns:
        the weighted squared errors' sum and the weights' sum (positives that take part).
    """
    pred = rescoring(soft[:, None])[torch.arange(len(labels), device=labels.device), labels]  # (n,)
    with torch.no_grad():
        binary = (soft > RESCORING_MASK_THR).float()
        gt = gt_masks.float()
        overlap = (binary * gt).sum((1, 2))
        gt_area = gt.sum((1, 2))
        target = overlap / (binary.sum((1, 2)) + gt_area - overlap + 0.1)
        weight = ((target > 0.1) & (target <= 1.0) & (gt_area >= 100)).float()
    return (weight * (pred - target) ** 2).sum(), weight.sum()
