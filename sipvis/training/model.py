"""The network being trained: building and initialising it (from scratch or any --weights value),
trainable BatchNorm, the module DDP wraps (frames -> losses), and the weights saved at the end."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from sipvis.model.backbone import BasicBlock, Bottleneck, FrozenBatchNorm2d
from sipvis.model.config import SipMaskConfig
from sipvis.model.losses import FrameTargets, LossConfig, compute_losses
from sipvis.model.sipmask import SipMaskVIS
from sipvis.training.config import RunConfig, resolve_model_config


class TrainingModel(nn.Module):
    """What DDP wraps: current and reference frames through one backbone pass, the full head on the
    current frames, the tracking tower on the reference frames, then the losses. An image model (no
    tracking branch) takes single images (`ref_images=None`): the head on them, then the same FCOS and
    mask losses without the tracking term, plus the mask re-scoring loss when it has that branch.

    Args:
        model: the network.
        loss_cfg: loss settings.
    """

    def __init__(self, model: SipMaskVIS, loss_cfg: LossConfig) -> None:
        super().__init__()
        self.model = model
        self.loss_cfg = loss_cfg

    def forward(self, images: torch.Tensor, ref_images: torch.Tensor, targets: list[FrameTargets],
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """images, ref_images: (B, 3, Hp, Wp) (ref_images None: image model) -> dict of loss terms
        (float32 scalars)."""
        b = images.shape[0]
        m = self.model
        if ref_images is None or not m.cfg.has_tracking_branch:
            out = m.head(m.features(images), with_track=False)
            with torch.autocast(images.device.type, enabled=False):
                return compute_losses(out, None, targets, m.cfg, self.loss_cfg, generator, m.head.mask_scoring)
        feats = m.features(torch.cat((images, ref_images)))
        out = m.head([f[:b] for f in feats], with_track=True)
        ref_track = m.head.track_map([f[b:] for f in feats[:3]])
        with torch.autocast(images.device.type, enabled=False):
            return compute_losses(out, ref_track.float(), targets, m.cfg, self.loss_cfg, generator)


def init_from_scratch(model: SipMaskVIS) -> None:
    """Initialisation for training without pretrained weights.

    Backbone: He initialisation, each residual branch's last conv at zero (the network starts as its
    shortcuts, which trains stably). Neck and head: the original's initialisation, except the two
    basis-mask layers, which get He initialisation too: with the original's N(0, 0.01) the basis
    masks and the coefficients both start near zero, their product's gradients vanish and the mask
    loss stays at log 2 for a long time (the original only ever fine-tunes pretrained weights).
    """
    for m in model.backbone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.conv3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.conv2.weight)
    model.init_weights()
    for conv in (model.head.basis_fuse, model.head.basis_out):
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
    init_rescoring(model)


def init_rescoring(model: SipMaskVIS) -> None:
    """The SipMask++ re-scoring branch as the original initialises it: He-initialised convs (mmcv's
    kaiming_init), the class layer N(0, 0.001), zero biases. No-op without the branch."""
    branch = model.head.mask_scoring
    if branch is None:
        return
    for conv in branch.convs:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
    nn.init.normal_(branch.out.weight, std=0.001)
    nn.init.zeros_(branch.out.bias)


def use_trainable_bn(model: SipMaskVIS) -> int:
    """Replace the backbone's FrozenBatchNorm2d layers outside its frozen stages by BatchNorm2d layers
    with the same statistics and affine values (same state-dict names, plus num_batches_tracked).
    Returns how many were replaced."""
    fs = model.cfg.frozen_stages
    frozen = (["bn1", "conv1"] if fs >= 0 else []) + [f"layer{i}." for i in range(1, fs + 1)]
    count = 0
    for name, module in list(model.backbone.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, FrozenBatchNorm2d) or any(full.startswith(p) for p in frozen):
                continue
            bn = nn.BatchNorm2d(child.weight.numel(), eps=child.eps).to(child.weight.device)
            with torch.no_grad():
                bn.weight.copy_(child.weight)
                bn.bias.copy_(child.bias)
                bn.running_mean.copy_(child.running_mean)
                bn.running_var.copy_(child.running_var)
            setattr(module, child_name, bn)
            count += 1
    return count


def inference_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict loadable by `SipMaskVIS` (BatchNorm's num_batches_tracked dropped), on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def load_init_weights(model: SipMaskVIS, spec: str) -> list[str]:
    """Initialise `model` from any --weights value (`build_model` with the model's config as target).
    Returns the keys left freshly initialised: those keep `model`'s own initial values."""
    from sipvis.checkpoint import build_model

    loaded, report = build_model(spec, target=model.cfg)
    fresh = set(report.reinitialised)
    model.load_state_dict({k: v for k, v in loaded.state_dict().items() if k not in fresh}, strict=False)
    return [k for k in model.state_dict() if k in fresh]


def create_model(run: RunConfig, class_names: tuple[str, ...], initialise: bool = True,
                 category_ids: tuple[int, ...] = ()) -> tuple[SipMaskConfig, SipMaskVIS, list[str]]:
    """Seed everything with `train.seed`, build the network and initialise it as `train.init` says
    (`category_ids`: the dataset's, kept by image models for their results).
    Returns (config, model, keys left freshly initialised when loading weights)."""
    tc = run.train
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    random.seed(tc.seed)
    cfg = resolve_model_config(run, class_names, category_ids)
    model = SipMaskVIS(cfg)
    fresh: list[str] = []
    if initialise:
        if tc.init == "scratch":
            init_from_scratch(model)
        else:
            model.init_weights()
            init_rescoring(model)
            fresh = load_init_weights(model, tc.init)
    return cfg, model, fresh


def jitter_generator(seed: int, iteration: int, rank: int, device: torch.device) -> torch.Generator:
    """Random source of the reference-box jitter of one iteration on one process: a pure function of
    (seed, iteration, rank), so resuming and worker counts do not change the run."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + iteration) * 64 + rank)
