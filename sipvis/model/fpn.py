"""Feature pyramid P3-P7 as the original: laterals on C3-C5, top-down nearest upsampling,
P6 from the P5 output by a stride-2 conv, P7 from ReLU(P6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    """Args:
        in_channels: channels of C3, C4, C5.
        out_channels: channels of every pyramid level.
        num_outs: number of levels returned (5: P3..P7).
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256, num_outs: int = 5) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        n_extra = num_outs - len(in_channels)
        self.fpn_convs = nn.ModuleList(
            [nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels]
            + [nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(n_extra)]
        )
        self.num_ins = len(in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], scale_factor=2, mode="nearest")
        outs = [self.fpn_convs[i](laterals[i]) for i in range(self.num_ins)]
        for i, conv in enumerate(self.fpn_convs[self.num_ins:]):
            # the first extra level reads P5 as is; later ones go through a ReLU first (relu_before_extra_convs)
            outs.append(conv(outs[-1] if i == 0 else F.relu(outs[-1])))
        return outs
