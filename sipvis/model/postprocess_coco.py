"""Test-time decoding of the SipMask COCO image models, as the original SipMask-mmdetection
(`SipMaskHead.get_bboxes` + `simple_test`), batched like the video path (`postprocess.py`), whose pieces it
reuses: candidate decoding, fast NMS, crop-split masks and their pasting at the original size.

What differs from SipMask-VIS (the spec: ../shared/reference/sipmask_coco/README.md):

- the scale factor is one number (keep-ratio 1333x800 models) or one per axis (fixed 544x544 models);
- the 1333x800 models use per-class greedy NMS (`per_class_nms`) on candidates whose raw class probability
  is over `score_thr`, with +1-pixel IoU, in class order; the 544 ones the fast NMS, in score order;
- masks are thresholded at `cfg.mask_thr` (0.4) after an upsampling by the float32 factor 2 / scale, which
  can leave the mask one pixel short of the image (pasted at the top-left, the rest 0);
- SipMask++ re-scores each mask (`Detections.mask_scores` = predicted mask IoU x score);
- boxes are neither clamped to the original image nor dropped when inverted; no tracking embeddings.
"""

from __future__ import annotations

import numpy as np
import torch

from sipvis.model.box_ops import box_iou
from sipvis.model.config import SipMaskConfig
from sipvis.model.head import HeadOutputs, MaskRescoring
from sipvis.model.postprocess import (Detections, FrameGeometry, crop_split_masks, decode_candidates, fast_nms,
                                      leading_slots, paste_masks)


def per_class_nms(boxes: torch.Tensor, probs: torch.Tensor, centerness: torch.Tensor, cfg: SipMaskConfig
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 1333x800 models' NMS (mmdet v1 `multiclass_nms` with score factors) for one image.

    For each class in order: candidates whose raw probability > `cfg.score_thr`, scored probability x
    centerness; greedy NMS (the best first, a box is removed when its IoU with a kept one is > `cfg.nms_iou`,
    IoU with the +1-pixel convention); kept candidates in ascending candidate order. Classes concatenated;
    over `cfg.max_per_img`, the best by score.

    Args:
        boxes: (N, 4); probs: (N, C); centerness: (N,).
    Returns:
        index (K,) into N, labels (K,), scores (K,) in the original's order.
    """
    cand, labels = (probs > cfg.score_thr).nonzero(as_tuple=True)  # ordered by candidate, then class
    order = torch.argsort(labels * probs.shape[0] + cand)  # class by class, ascending candidate
    cand, labels = cand[order], labels[order]
    scores = probs[cand, labels] * centerness[cand]
    keep = []
    bounds = torch.searchsorted(labels, torch.arange(probs.shape[1] + 1, device=labels.device)).tolist()
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            keep.append(lo + _greedy_nms(boxes[cand[lo:hi]], scores[lo:hi], cfg.nms_iou))
    kept = torch.from_numpy(np.concatenate(keep)) if keep else torch.zeros(0, dtype=torch.int64)
    kept = kept.to(cand.device)
    if kept.numel() > cfg.max_per_img:
        kept = kept[scores[kept].sort(descending=True, stable=True).indices[:cfg.max_per_img]]
    return cand[kept], labels[kept], scores[kept]


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thr: float) -> np.ndarray:
    """(m, 4) boxes, (m,) scores -> positions of the kept boxes, ascending (int64 numpy)."""
    rank = scores.sort(descending=True, stable=True).indices
    ranked = boxes[rank]
    over = (box_iou(ranked, ranked, pixel_offset=1.0) > iou_thr).cpu().numpy()  # (m, m)
    removed = np.zeros(len(rank), dtype=bool)
    for i in range(len(rank)):
        if not removed[i]:
            removed[i + 1:] |= over[i, i + 1:]  # removed boxes never remove others
    return np.sort(rank.cpu().numpy()[~removed])


def _per_class_batch(boxes, probs, centerness, cfg: SipMaskConfig):
    """`per_class_nms` of each image, padded to (B, max_per_img): index, labels, scores, valid."""
    b, k = boxes.shape[0], cfg.max_per_img
    index = torch.zeros((b, k), dtype=torch.int64, device=boxes.device)
    labels, valid = torch.zeros_like(index), torch.zeros((b, k), dtype=torch.bool, device=boxes.device)
    scores = torch.zeros((b, k), dtype=torch.float32, device=boxes.device)
    for i in range(b):
        idx, lab, sc = per_class_nms(boxes[i], probs[i], centerness[i], cfg)
        n = idx.numel()
        index[i, :n], labels[i, :n], scores[i, :n], valid[i, :n] = idx, lab, sc, True
    return index, labels, scores, valid


def postprocess_image(out: HeadOutputs, geom: FrameGeometry, cfg: SipMaskConfig,
                      rescoring: MaskRescoring | None = None) -> Detections:
    """Raw head outputs of B images of one size -> padded `Detections` at the original size.

    Args:
        out: the network's outputs (`basis` (B, K, Hp/2, Wp/2)).
        geom: the batch's sizes and scale.
        cfg: an image model's config (`cfg.nms` picks the NMS).
        rescoring: the SipMask++ re-scoring branch (`head.mask_scoring`), or None.
    """
    boxes, probs, centerness, coeffs = decode_candidates(out, geom, cfg)
    if cfg.nms == "per_class":
        index, labels, scores, valid = _per_class_batch(boxes, probs, centerness, cfg)
    else:
        index, labels, scores, valid = fast_nms(boxes, probs * centerness[..., None], cfg)
    det_boxes = boxes.gather(1, index[..., None].expand(-1, -1, 4))
    # masks only for the leading slots that hold a detection in some image (valid slots come first)
    used = leading_slots(valid)
    det_coeffs = coeffs.gather(1, index[:, :used, None].expand(-1, -1, coeffs.shape[-1]))
    # the crop box comes from the returned box, back in input pixels, at the basis' half resolution
    soft = crop_split_masks(out.basis, det_coeffs, det_boxes[:, :used] * geom.box_scale(boxes.device) / 2)
    mask_scores = None
    if rescoring is not None:
        mask_scores = torch.zeros_like(scores)
        if used:
            live = valid[:, :used]
            ious = rescoring(soft[live][:, None])  # (n, 1, h, w) -> (n, C)
            predicted = ious.gather(1, labels[:, :used][live][:, None])[:, 0]  # the detection's class
            mask_scores[:, :used][live] = predicted * scores[:, :used][live]
    masks = paste_masks(soft, valid, used, geom, cfg.mask_thr)
    return Detections(det_boxes, scores, labels, valid, masks, None, mask_scores)
