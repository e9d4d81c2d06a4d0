"""Frozen BatchNorm folded into the convolutions for inference (`sipvis.model.fold`): the same outputs up to
float32 rounding, on a small model with non-trivial statistics and on the reference R50 weights; the
caller's model (e.g. one being trained) is never rewritten."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from reference import raw_outputs, reference_state_dict
from sipvis.checkpoint import convert_mmdet
from sipvis.engine.inference import Segmenter
from sipvis.model.backbone import FrozenBatchNorm2d
from sipvis.model.config import SipMaskConfig
from sipvis.model.fold import fold_frozen_batchnorm, folded_for_inference
from sipvis.model.sipmask import SipMaskVIS


def _outputs(out) -> list[torch.Tensor]:
    return [*out.cls_logits, *out.bbox_reg, *out.centerness, *out.coeffs, out.basis, out.track_feats]


def _max_relative_deviation(a, b) -> float:
    return max(float((x - y).abs().max() / (1 + y.abs().max())) for x, y in zip(_outputs(a), _outputs(b)))


def _small_model(depth: int) -> SipMaskVIS:
    """A narrow model whose frozen BatchNorms have random statistics and affine parameters (the defaults,
    mean 0 and variance 1, would make the fold nearly an identity)."""
    torch.manual_seed(depth)
    cfg = SipMaskConfig(depth=depth, style="pytorch", max_size=(128, 96), backbone_width=16, fpn_channels=32,
                        head_channels=32, basis_channels=32, track_channels=32)
    model = SipMaskVIS(cfg).eval()
    for bn in model.modules():
        if isinstance(bn, FrozenBatchNorm2d):
            n = bn.weight.numel()
            bn.weight.copy_(torch.rand(n) + 0.5)
            bn.bias.copy_(torch.randn(n))
            bn.running_mean.copy_(torch.randn(n) * 0.5)
            bn.running_var.copy_(torch.rand(n) * 2 + 0.1)
    return model


# stem + the blocks' BatchNorms + the downsample branches'
@pytest.mark.parametrize(("depth", "expected"), [(18, 1 + 8 * 2 + 3), pytest.param(50, 1 + 16 * 3 + 4,
                                                                                    marks=pytest.mark.slow)])
def test_fold_rewrites_every_frozen_batchnorm_and_keeps_the_outputs(depth, expected):
    model = _small_model(depth)
    folded = _small_model(depth)
    assert fold_frozen_batchnorm(folded) == expected
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        deviation = _max_relative_deviation(folded(x), model(x))
    assert 0 < deviation <= 1e-5, deviation  # rounding only (not bit-identical: a different product)


def test_folded_copy_leaves_the_callers_model_alone():
    model = _small_model(18)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    segmenter = Segmenter(model, "cpu", torch.float32)
    assert segmenter.model is not model
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in segmenter.model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()  # still the checkpoint's keys (running_mean...), trainable as before
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert folded_for_inference(segmenter.model) is segmenter.model  # nothing left to fold: no second copy
    # on CPU the weights are channels_last like the input (no per-call weight copy); the caller's are not
    theirs = dict(model.named_parameters())
    convs = [(theirs[name], p) for name, p in segmenter.model.named_parameters() if p.dim() == 4]
    assert convs and all(b.is_contiguous(memory_format=torch.channels_last) and a.is_contiguous() for a, b in convs)


@pytest.mark.slow
def test_folded_reference_model_matches_the_original_raw_outputs():
    """The parity test's tolerance (1e-3 (1 + max|b|)) holds with a wide margin for the folded R50."""
    cfg, state, _ = convert_mmdet(reference_state_dict())
    model = SipMaskVIS(cfg)
    model.load_state_dict(state)
    folded = folded_for_inference(model.eval())
    assert sum(isinstance(m, nn.Identity) for m in folded.backbone.modules()) == 53  # every BN of an R50
    raw = raw_outputs("clip_a")
    with torch.inference_mode():
        ours, unfolded = (m(torch.from_numpy(raw["input"])[None]) for m in (folded, model))
    assert _max_relative_deviation(ours, unfolded) <= 1e-5
    for level in range(5):
        for name, tensor in ((f"cls_scores_{level}", ours.cls_logits[level]),
                             (f"cof_preds_{level}", ours.coeffs[level]), (f"bbox_preds_{level}", ours.bbox_reg[level])):
            expected = raw[name]
            assert np.abs(tensor[0].numpy() - expected).max() <= 1e-3 * (1 + np.abs(expected).max()), name
