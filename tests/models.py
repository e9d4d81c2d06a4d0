"""Small randomly initialised checkpoints for fast pipeline tests (outputs are meaningless, shapes are real)."""

from __future__ import annotations

from pathlib import Path

import torch

from sipvis.checkpoint import save_checkpoint
from sipvis.model.config import SipMaskConfig
from sipvis.model.sipmask import SipMaskVIS


def tiny_checkpoint(folder: Path, seed: int = 0, score_thr: float = 0.0) -> Path:
    """A narrow ResNet-18 SipMask at 192x112 with a low score threshold, so every frame has detections."""
    torch.manual_seed(seed)
    cfg = SipMaskConfig(depth=18, style="pytorch", max_size=(192, 112), class_names=("thing", "other"),
                        fpn_channels=64, head_channels=64, basis_channels=64, track_channels=64,
                        score_thr=score_thr)
    return save_checkpoint(folder / "tiny", cfg, detecting_model(cfg).state_dict())


def detecting_model(cfg: SipMaskConfig) -> SipMaskVIS:
    """A randomly initialised model of `cfg` whose head biases make it detect: a neutral class bias makes
    random weights produce detections everywhere, a box bias gives them a size, and positive basis and
    coefficient biases make each mask fill its box (else masks are empty)."""
    model = SipMaskVIS(cfg)
    model.init_weights()
    torch.nn.init.constant_(model.head.cls_logits.bias, 0.0)
    torch.nn.init.constant_(model.head.basis_out.bias, 1.0)
    torch.nn.init.constant_(model.head.mask_coeffs.bias, 0.1)
    torch.nn.init.constant_(model.head.bbox_pred.bias, 2.0)
    return model
