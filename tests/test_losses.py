"""Training targets and losses: the original's six loss values on the clip_a pair, and unit checks."""

from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from conftest import REFERENCE, require
from sipvis.model.box_ops import aligned_box_iou
from sipvis.model.config import SipMaskConfig
from sipvis.model.head import HeadOutputs
from sipvis.model.losses import (
    FrameTargets,
    LossConfig,
    compute_losses,
    crop_split_logits,
    half_res_masks,
    jitter_boxes,
    total_loss,
)
from sipvis.model.postprocess import crop_split_masks
from sipvis.model.preprocess import normalize_and_pad, resize_frame
from sipvis.model.targets import assign_single, centerness_targets, fcos_targets


def _reference_model():
    spec = importlib.util.spec_from_file_location("make_weights", require(REFERENCE / "make_weights.py"))
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    from sipvis.checkpoint import convert_mmdet
    from sipvis.model.sipmask import SipMaskVIS

    manifest = json.loads((REFERENCE / "manifest.json").read_text())["state_dict"]
    cfg, state, _ = convert_mmdet(make_weights.make_state_dict(manifest))
    model = SipMaskVIS(cfg)
    model.load_state_dict(state)
    return model.eval(), cfg


def _input(path, cfg):
    resized, _ = resize_frame(cv2.imread(str(path)), cfg.max_size)
    return normalize_and_pad(torch.from_numpy(resized)[None], cfg.pixel_mean, cfg.pixel_std, cfg.to_rgb,
                             cfg.size_divisor)


def _fixture_targets(d: dict) -> FrameTargets:
    masks = np.stack([mask_utils.decode({"size": m["size"], "counts": m["counts"].encode()})
                      for m in d["gt_masks"]])
    return FrameTargets(
        boxes=torch.tensor(d["gt_bboxes"], dtype=torch.float32),
        labels=torch.tensor(d["gt_labels"]) - 1,  # the fixture's labels are 1-based
        masks=torch.from_numpy(masks),
        ref_boxes=torch.tensor(d["ref_bboxes"], dtype=torch.float32),
        pids=torch.tensor(d["gt_pids"]),
    )


def test_losses_match_original_on_clip_a():
    d = json.loads(require(REFERENCE / "clip_a" / "train_losses.json").read_text())
    assert d["reference_box_jitter"] == 0.0
    model, cfg = _reference_model()
    cur = _input(REFERENCE / "clip_a" / "frames" / "00000.png", cfg)
    ref = _input(REFERENCE / "clip_a" / "frames" / "00001.png", cfg)
    assert list(cur.shape[2:]) == d["pad_shape"][:2]
    out = model(cur, with_track=True)
    ref_track = model(ref, with_track=True).track_feats
    losses = compute_losses(out, ref_track, [_fixture_targets(d)], cfg, LossConfig(ref_jitter=0.0))
    expected = d["expected_losses"]
    assert set(expected) == set(losses)
    for name, value in expected.items():
        got = float(losses[name].detach())
        assert got == pytest.approx(value, rel=1e-3), name
    # the total backpropagates into every trainable parameter
    total_loss(losses).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_assignment_regress_range_centre_sampling_and_ties():
    strides = torch.tensor([8.0, 8.0, 8.0, 16.0])
    ranges = torch.tensor([[-1.0, 64.0]] * 3 + [[64.0, 128.0]])
    points = torch.tensor([[50.0, 50.0], [68.0, 50.0], [50.0, 25.0], [50.0, 50.0]])
    boxes = torch.tensor([[20.0, 20.0, 80.0, 80.0],   # 61 x 61 (+1 convention) = 3721
                          [30.0, 30.0, 70.0, 70.0]])  # 41 x 41 = 1681: smaller, wins ties
    labels = torch.tensor([3, 7])
    lab, idx, tgt = assign_single(points, strides, ranges, boxes, labels, radius=1.5)
    # point 0 is in both centre regions -> smallest area (box 1)
    # point 1 (x=68) is outside both centre squares (centre 50 +- 12)
    # point 2 (y=25) is outside the centre squares too
    # point 3 is on a level whose range (64, 128] no box reaches (max distance 30)
    assert lab.tolist() == [7, -1, -1, -1]
    assert idx.tolist() == [1, -1, -1, -1]
    assert tgt[0].tolist() == [20.0, 20.0, 20.0, 20.0]
    # without centre sampling point 1 lies inside both boxes and the smaller one wins again; point 2 is
    # inside the big box only
    lab, idx, _ = assign_single(points, strides, ranges, boxes, labels, radius=0)
    assert lab.tolist() == [7, 7, 3, -1]
    # equal areas: the first box wins
    lab, idx, _ = assign_single(points[:1], strides[:1], ranges[:1], boxes[[1, 1]], torch.tensor([1, 2]))
    assert idx.tolist() == [0] and lab.tolist() == [1]


def test_fcos_targets_no_gt_and_level_layout():
    tg = fcos_targets([(4, 6), (2, 3)], (8, 16), ((-1, 64), (64, 1e8)),
                      [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 47.0, 31.0]])],
                      [torch.zeros(0, dtype=torch.long), torch.tensor([2])])
    assert tg.points.shape == (30, 2) and tg.level_sizes == [24, 6]
    assert tg.points[:2].tolist() == [[4.0, 4.0], [12.0, 4.0]] and tg.points[24].tolist() == [8.0, 8.0]
    assert not tg.positive[0].any()
    assert tg.positive[1, :24].sum() > 0 and not tg.positive[1, 24:].any()


def test_centerness_targets():
    t = torch.tensor([[10.0, 10.0, 10.0, 10.0], [10.0, 5.0, 30.0, 20.0]])
    assert centerness_targets(t).tolist() == pytest.approx([1.0, (10 / 30 * 5 / 20) ** 0.5])


def test_aligned_iou_plus_one_convention():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0]])
    assert float(aligned_box_iou(a, b, pixel_offset=1.0)) == pytest.approx(50 / 150)


def test_crop_split_logits_matches_inference_crop_split():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(8, 20, 24, generator=g)
    coeffs = torch.randn(5, 32, generator=g)
    boxes = torch.tensor([[2.0, 3.0, 15.5, 17.2], [0.0, 0.0, 24.0, 20.0], [10.3, 4.7, 11.9, 6.1],
                          [-3.0, -2.0, 5.0, 30.0], [7.0, 7.0, 7.0, 9.0]])
    logits, inside = crop_split_logits(basis, coeffs, boxes)
    expected = crop_split_masks(basis[None], coeffs[None], boxes[None])[0]
    assert torch.allclose(logits.sigmoid() * inside, expected, atol=1e-6)
    assert inside[4].sum() == 0


def test_half_res_masks_is_two_by_two_majority():
    g = torch.Generator().manual_seed(1)
    m = (torch.rand(3, 8, 10, generator=g) > 0.5).to(torch.uint8)
    got = half_res_masks(m, (6, 4))  # taller than the input, narrower: zero-padded / cropped
    blocks = m.float().view(3, 4, 2, 5, 2).mean((2, 4)) > 0.5  # strictly more than 2 of 4 pixels
    assert got.shape == (3, 6, 4)
    assert torch.equal(got[:, :4], blocks[:, :, :4]) and not got[:, 4:].any()


def test_jitter_boxes():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 70.0]] * 200)
    assert torch.equal(jitter_boxes(boxes, 0.0), boxes)
    j = jitter_boxes(boxes, 0.05, torch.Generator().manual_seed(0))
    w, h = j[:, 2] - j[:, 0], j[:, 3] - j[:, 1]
    cx = (j[:, 0] + j[:, 2]) / 2
    assert ((w >= 95 - 1e-4) & (w <= 105 + 1e-4)).all() and ((h >= 47.5 - 1e-4) & (h <= 52.5 + 1e-4)).all()
    assert ((cx - 60).abs() <= 5 + 1e-4).all() and w.std() > 1


def _tiny_outputs(b: int, c: int, requires_grad: bool = True) -> HeadOutputs:
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g).requires_grad_(requires_grad)

    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    return HeadOutputs(
        cls_logits=[r(b, c, h, w) for h, w in sizes],
        bbox_reg=[(torch.rand(b, 4, h, w, generator=g) * 20 + 5).requires_grad_(requires_grad) for h, w in sizes],
        centerness=[r(b, 1, h, w) for h, w in sizes],
        coeffs=[r(b, 4 * 4, h, w) for h, w in sizes],
        basis=r(b, 4, 32, 32),
        track_feats=r(b, 6, 8, 8),
    )


def test_losses_without_ground_truth_are_finite_and_connected():
    cfg = SipMaskConfig(class_names=("a", "b", "c"), num_bases=4)
    out = _tiny_outputs(2, 3)
    ref = torch.randn(2, 6, 8, 8, requires_grad=True)
    empty = FrameTargets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 64, 64),
                         torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    one = FrameTargets(torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.tensor([1]),
                       torch.ones(1, 64, 64, dtype=torch.uint8), torch.tensor([[10.0, 10.0, 40.0, 40.0]]),
                       torch.tensor([1]))
    for targets in ([empty, empty], [empty, one]):
        losses = compute_losses(out, ref, targets, cfg)
        assert all(torch.isfinite(v) for v in losses.values())
        total_loss(losses).backward()
        assert out.basis.grad is not None and ref.grad is not None and out.coeffs[0].grad is not None
        if targets[1] is one:
            assert float(losses["loss_mask"].detach()) > 0 and float(losses["loss_bbox"].detach()) > 0
        else:
            assert float(losses["loss_mask"].detach()) == 0 and float(losses["loss_cls"].detach()) > 0
        out = _tiny_outputs(2, 3)


def test_half_precision_outputs_whose_sums_overflow_fp16_give_finite_losses():
    """Under CUDA autocast the head's maps are fp16; the sum over a large basis map exceeds fp16's range
    (65504). Found on an H100: every AMP run stopped at once with a NaN loss."""
    cfg = SipMaskConfig(class_names=("a", "b", "c"), num_bases=4)
    out = _tiny_outputs(2, 3, requires_grad=False)
    big = torch.full((2, 4, 64, 64), 8.0)  # sum 262144 > 65504
    out = HeadOutputs([t.half() for t in out.cls_logits], out.bbox_reg, [t.half() for t in out.centerness],
                      [t.half() for t in out.coeffs], big.half().requires_grad_(),
                      torch.full((2, 6, 64, 64), 4.0).half())
    assert torch.isinf(out.basis.sum())  # the premise: an fp16 sum overflows
    empty = FrameTargets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 64, 64),
                         torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    losses = compute_losses(out, torch.full((2, 6, 64, 64), 4.0).half(), [empty, empty], cfg)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total_loss(losses).backward()
    assert out.basis.grad is not None and torch.isfinite(out.basis.grad).all()
