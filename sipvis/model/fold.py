"""Inference-time rewrite of the network: every frozen BatchNorm folded into the convolution before it.

A `FrozenBatchNorm2d` after a bias-free convolution is an affine map per output channel,
y = conv(x, W) * s + t with s = weight / sqrt(running_var + eps) and t = bias - running_mean * s, which
is the convolution conv(x, W * s) + t: one kernel instead of a convolution and a separate multiply-add
pass over the activations (memory-bound work, ~7-13% of the R50 network's CPU time). The fold is
computed in float64 and stored in the convolution's dtype, so the rewritten network differs from the
unfolded one by float32 rounding only (max |a - b| ~1e-5 relative on the raw head outputs), far inside the
parity tolerances.

Only inference folds: training keeps the BatchNorm modules (their buffers are what checkpoints hold, and
`backbone_norm = "bn"` trains them). `Segmenter` folds its own copy of the model it is given, so a
model being trained and validated is never rewritten.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sipvis.model.backbone import FrozenBatchNorm2d


def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold every `FrozenBatchNorm2d` into the `nn.Conv2d` it follows, in place; returns how many.

    The pairs are found by the backbone's naming: a child `bnK` after its sibling `convK` (ResNet stem,
    BasicBlock, Bottleneck), and a BatchNorm right after a convolution inside an `nn.Sequential` (the
    downsample branch). Each folded BatchNorm becomes an `nn.Identity`, so the modules' forward code is
    unchanged. A BatchNorm without such a convolution is left as it is.
    """
    folded = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if not isinstance(child, FrozenBatchNorm2d):
                continue
            conv = _preceding_conv(module, name)
            if conv is None or conv.out_channels != child.weight.numel():
                continue
            _fold_into(conv, child)
            setattr(module, name, nn.Identity())
            folded += 1
    return folded


def folded_for_inference(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """A copy of `model` with its frozen BatchNorms folded (`fold_frozen_batchnorm`) and, if asked, its
    4-d weights in channels_last layout; `model` itself when there is nothing to change (no copy). The
    caller's model is never changed.

    channels_last weights matter on CPU, where the input is channels_last (`normalize_and_pad`): PyTorch's
    own convolution (taken for small maps, e.g. the demo model's head on the coarse levels) otherwise
    copies every weight into that layout at every call; oneDNN's reorders them anyway (R50: no change).
    """
    if not isinstance(model, nn.Module):  # an exported network (sipvis.runtime): compiled as it is
        return model
    fold = any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    relayout = channels_last and any(p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last)
                                     for p in model.parameters())
    if not (fold or relayout):
        return model
    model = copy.deepcopy(model)
    fold_frozen_batchnorm(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _preceding_conv(parent: nn.Module, bn_name: str) -> nn.Conv2d | None:
    """The convolution whose output the BatchNorm child `bn_name` of `parent` normalises, if any."""
    if isinstance(parent, nn.Sequential) and bn_name.isdigit() and int(bn_name) > 0:
        conv = parent[int(bn_name) - 1]
    elif bn_name.startswith("bn"):
        conv = getattr(parent, "conv" + bn_name[2:], None)
    else:
        conv = None
    return conv if isinstance(conv, nn.Conv2d) else None


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> None:
    """conv <- bn(conv): weight (O, I, kh, kw) scaled per output channel, bias (O,) = the shift."""
    scale = bn.weight.double() * (bn.running_var.double() + bn.eps).rsqrt()  # (O,)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    dtype = conv.weight.dtype
    conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype))
    conv.bias = nn.Parameter(shift.to(dtype=dtype, device=conv.weight.device), requires_grad=False)
