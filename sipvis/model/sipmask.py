"""SipMask (VIS and the COCO image models): ResNet + FPN + SipMask head, read top to bottom."""

from __future__ import annotations

import torch
from torch import nn

from sipvis.model.backbone import ResNet
from sipvis.model.config import SipMaskConfig
from sipvis.model.fpn import FPN
from sipvis.model.head import HeadOutputs, SipMaskHead


class SipMaskVIS(nn.Module):
    """The network. Takes normalised, padded images (B, 3, Hp, Wp) with Hp, Wp multiples of 32 and
    returns the raw `HeadOutputs` (per-level logits, box distances, centerness, mask coefficients, basis
    masks, tracking map). Decoding, masks and tracking live in `postprocess.py` and `sipvis.track`;
    losses in `sipvis.model.losses`.
    """

    def __init__(self, cfg: SipMaskConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SipMaskConfig()
        self.backbone = ResNet(cfg.depth, cfg.style, cfg.frozen_stages, cfg.backbone_width, cfg.dcn_stages,
                               cfg.dcn_interval)
        self.neck = FPN(self.backbone.out_channels, cfg.fpn_channels, num_outs=len(cfg.strides))
        self.head = SipMaskHead(
            num_classes=cfg.num_classes, in_channels=cfg.fpn_channels, channels=cfg.head_channels,
            cls_convs=cfg.cls_convs, reg_convs=cfg.reg_convs, track_convs=cfg.track_convs,
            num_bases=cfg.num_bases, basis_channels=cfg.basis_channels, track_channels=cfg.track_channels,
            strides=cfg.strides, norm=cfg.head_norm, tracking=cfg.has_tracking_branch,
            mask_rescoring=cfg.mask_rescoring,
        )

    def forward(self, images: torch.Tensor, with_track: bool = True) -> HeadOutputs:
        return self.head(self.features(images), with_track=with_track)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone + FPN alone: (B, 3, Hp, Wp) -> per level (B, fpn_channels, Hp/s, Wp/s), s = cfg.strides.

        Training runs it once on current and reference frames together, then the head on the current
        frames and `head.track_map` on the reference frames.
        """
        return self.neck(self.backbone(images))

    def init_weights(self, prior_prob: float = 0.01) -> None:
        """Initialise the neck and head as the original does (backbone weights come from a checkpoint)."""
        for m in list(self.neck.modules()) + list(self.head.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.neck.modules():
            if isinstance(m, nn.Conv2d):  # the original FPN uses xavier
                nn.init.xavier_uniform_(m.weight)
        nn.init.constant_(self.head.cls_logits.bias, -float(torch.log(torch.tensor((1 - prior_prob) / prior_prob))))
        nn.init.zeros_(self.head.feature_align.offset.weight)
