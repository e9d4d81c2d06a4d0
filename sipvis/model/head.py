"""The SipMask head: FCOS-style classification/box/centerness branches with feature alignment,
spatial coefficients for crop-split masks, contextual basis masks, a tracking embedding map (SipMask-VIS)
and the mask re-scoring branch (SipMask++)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d


@dataclass
class HeadOutputs:
    """Raw head outputs for a batch of B padded images of size (Hp, Wp).

    Attributes:
        cls_logits: per level (B, C, H_l, W_l) class logits.
        bbox_reg: per level (B, 4, H_l, W_l) distances (l, t, r, b) in input pixels (already x stride).
        centerness: per level (B, 1, H_l, W_l) logits.
        coeffs: per level (B, 4*K, H_l, W_l) mask coefficients, K bases per 2x2 sub-region.
        basis: (B, K, Hp/2, Wp/2) basis masks.
        track_feats: (B, E, Hp/8, Wp/8) tracking embedding map; an empty tensor without a tracking branch.
    """

    cls_logits: list[torch.Tensor]
    bbox_reg: list[torch.Tensor]
    centerness: list[torch.Tensor]
    coeffs: list[torch.Tensor]
    basis: torch.Tensor
    track_feats: torch.Tensor


class ConvGNReLU(nn.Module):
    """3x3 conv (no bias) + GroupNorm(32) + ReLU: one layer of a head tower; with `norm` False a 3x3 conv
    with a bias + ReLU (the heads without GN)."""

    def __init__(self, in_ch: int, out_ch: int, norm: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not norm)
        self.norm = nn.GroupNorm(32, out_ch) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(x if self.norm is None else self.norm(x))


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level for the box regression)."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class FeatureAlign(nn.Module):
    """Deformable 3x3 conv whose offsets come from the predicted box distances (1x1 conv, 4 -> 72).

    Args:
        channels: input/output channels.
        offset_groups: deformable groups (4 as the original).
        use_norm: apply the GroupNorm (the heads without GN skip it; its parameters exist anyway, as in the
            original's state dict).
    """

    def __init__(self, channels: int, offset_groups: int = 4, use_norm: bool = True) -> None:
        super().__init__()
        self.offset = nn.Conv2d(4, offset_groups * 2 * 9, 1, bias=False)
        self.deform_conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)  # weight holder only
        self.norm = nn.GroupNorm(32, channels)
        self.use_norm = use_norm

    def forward(self, x: torch.Tensor, box_reg: torch.Tensor) -> torch.Tensor:
        # offsets follow the box prediction but must not train it (the original detaches them)
        offset = self.offset(box_reg.detach())
        if self.training:
            # a diverging run's inf/nan offsets crash torchvision's CPU kernel (a segfault, not an error);
            # beyond the map a sample is 0 anyway, so bounding them changes no finite result
            bound = float(x.shape[-1] + x.shape[-2])
            offset = torch.nan_to_num(offset, nan=0.0, posinf=bound, neginf=-bound).clamp(-bound, bound)
        # torchvision's deform_conv2d has no half-precision CPU kernel and wants matching dtypes
        out = deform_conv2d(x, offset.to(x.dtype), self.deform_conv.weight.to(x.dtype), padding=(1, 1))
        return F.relu(self.norm(out) if self.use_norm else out)


class MaskRescoring(nn.Module):
    """SipMask++ mask re-scoring: cropped soft masks -> predicted mask IoU per class.

    Six 3x3 convs (stride 2, no padding, bias, ReLU), 1 -> 16 -> 16 -> 16 -> 32 -> 64 -> 128 channels,
    a 1x1 conv to the classes, ReLU and a global max.

    Args:
        num_classes: object classes.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        widths = (1, 16, 16, 16, 32, 64, 128)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2) for a, b in zip(widths, widths[1:]))
        self.out = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """(n, 1, h, w) soft masks in [0, 1] -> (n, C) predicted IoUs (>= 0)."""
        x = masks
        for conv in self.convs:
            x = F.relu(conv(x))
        return F.relu(self.out(x)).amax(dim=(2, 3))


class SipMaskHead(nn.Module):
    """Args:
        num_classes: object classes (no background).
        in_channels: FPN channels.
        channels: tower width.
        cls_convs, reg_convs, track_convs: tower depths.
        num_bases: basis masks K; coefficients are 4*K per location.
        basis_channels: width of the basis fusion layer (512).
        track_channels: embedding width (512).
        strides: pyramid strides (P3..P7).
        norm: GroupNorm in the towers and after FeatureAlign (False: towers of convs with a bias).
        tracking: build the tracking branch (SipMask-VIS); without it `track_feats` is empty.
        mask_rescoring: build the SipMask++ re-scoring branch (`mask_scoring`, run by the post-processing).
    """

    def __init__(self, num_classes: int, in_channels: int = 256, channels: int = 256, cls_convs: int = 2,
                 reg_convs: int = 3, track_convs: int = 2, num_bases: int = 32, basis_channels: int = 512,
                 track_channels: int = 512, strides: tuple[int, ...] = (8, 16, 32, 64, 128), norm: bool = True,
                 tracking: bool = True, mask_rescoring: bool = False) -> None:
        super().__init__()
        self.strides = strides
        self.num_bases = num_bases
        self.cls_tower = _tower(in_channels, channels, cls_convs, norm)
        self.reg_tower = _tower(in_channels, channels, reg_convs, norm)
        if tracking:
            self.track_tower = _tower(in_channels, channels, track_convs)
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in strides)
        self.feature_align = FeatureAlign(channels, use_norm=norm)
        self.mask_coeffs = nn.Conv2d(channels, 4 * num_bases, 3, padding=1)
        # basis masks and the tracking map fuse the three finest levels (P3, P4, P5)
        self.basis_fuse = nn.Conv2d(3 * channels, basis_channels, 1)
        self.basis_out = nn.Conv2d(basis_channels, num_bases, 3, padding=1)
        if tracking:
            self.track_fuse = nn.Conv2d(3 * channels, track_channels, 1)
        self.tracking = tracking
        self.mask_scoring = MaskRescoring(num_classes) if mask_rescoring else None

    def forward(self, feats: list[torch.Tensor], with_track: bool = True) -> HeadOutputs:
        cls_logits, bbox_reg, centerness, coeffs, reg_feats = [], [], [], [], []
        for x, scale, stride in zip(feats, self.scales, self.strides):
            cls_feat, reg_feat = self.cls_tower(x), self.reg_tower(x)
            box = scale(self.bbox_pred(reg_feat))
            cls_feat = self.feature_align(cls_feat, box)
            cls_logits.append(self.cls_logits(cls_feat))
            centerness.append(self.centerness(reg_feat))
            bbox_reg.append(box.float() * stride)
            coeffs.append(self.mask_coeffs(cls_feat))
            reg_feats.append(reg_feat)
        basis = F.relu(self.basis_out(F.relu(self.basis_fuse(_fuse_finest(reg_feats)))))
        basis = F.interpolate(basis, scale_factor=4, mode="bilinear", align_corners=False)
        track_feats = self.track_map(feats[:3]) if with_track and self.tracking else basis.new_zeros(0)
        return HeadOutputs(cls_logits, bbox_reg, centerness, coeffs, basis, track_feats)

    def track_map(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The tracking branch alone: P3..P5 features -> (B, E, H/8, W/8) tracking map.

        Training runs only this on its reference frames; `forward(with_track=True)` returns the same
        map as `track_feats`.
        """
        return self.track_fuse(_fuse_finest([self.track_tower(x) for x in feats[:3]]))


def _tower(in_channels: int, channels: int, depth: int, norm: bool = True) -> nn.Sequential:
    """`depth` ConvGNReLU layers (state-dict keys `<i>.conv.*`, `<i>.norm.*`, as a ModuleList's)."""
    return nn.Sequential(*(ConvGNReLU(in_channels if i == 0 else channels, channels, norm) for i in range(depth)))


def _fuse_finest(maps: list[torch.Tensor]) -> torch.Tensor:
    """Channel concatenation of the three finest levels, each upsampled to the first's size:
    (B, C, H/8, W/8), (B, C, H/16, W/16), (B, C, H/32, W/32), ... -> (B, 3C, H/8, W/8)."""
    return torch.cat([_upsample(x, 2**level) for level, x in enumerate(maps[:3])], 1)


def _upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
