"""ResNet backbone (caffe or pytorch style) with frozen BatchNorm, returning C3, C4, C5."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import deform_conv2d


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (the original trains with norm_eval, frozen BN).

    Buffers keep BatchNorm's names (weight, bias, running_mean, running_var) so checkpoints map 1:1.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


class DeformConv3x3(nn.Module):
    """DCNv1 3x3 conv, stride 1, pad 1, no bias, one deformable group (mmdet v1's `DeformConvPack`):
    offsets (9 kernel points x (dy, dx)) from a 3x3 conv with bias on the same input.

    State-dict keys as the original: `weight`, `conv_offset.weight`, `conv_offset.bias`.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.conv_offset = nn.Conv2d(in_ch, 2 * 9, 3, padding=1)
        nn.init.zeros_(self.conv_offset.weight)  # a fresh one starts as a plain conv
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, out_ch, H, W)."""
        offset = self.conv_offset(x)
        return deform_conv2d(x, offset.to(x.dtype), self.weight.to(x.dtype), padding=(1, 1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int = 1, style: str = "pytorch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = FrozenBatchNorm2d(ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, ch: int, stride: int = 1, style: str = "caffe", dcn: bool = False) -> None:
        super().__init__()
        # caffe style strides the first 1x1 conv; pytorch style strides the 3x3 conv.
        s1, s2 = (stride, 1) if style == "caffe" else (1, stride)
        if dcn and s2 != 1:
            raise ValueError("a deformable conv2 needs the caffe style (stride on the 1x1 conv)")
        self.conv1 = nn.Conv2d(in_ch, ch, 1, s1, bias=False)
        self.bn1 = FrozenBatchNorm2d(ch)
        self.conv2 = DeformConv3x3(ch, ch) if dcn else nn.Conv2d(ch, ch, 3, s2, 1, bias=False)
        self.bn2 = FrozenBatchNorm2d(ch)
        self.conv3 = nn.Conv2d(ch, ch * 4, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(ch * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, ch * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), FrozenBatchNorm2d(out_ch))


_BLOCKS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
           50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}


class ResNet(nn.Module):
    """ResNet returning stages 2-4 (C3, C4, C5 at strides 8, 16, 32).

    Args:
        depth: 18, 34, 50 or 101.
        style: "caffe" or "pytorch" (only matters for bottleneck blocks).
        frozen_stages: stem + this many stages get requires_grad=False (-1: nothing frozen).
        width: channels of the stem and of stage 1 (64 = the standard ResNet; smaller for tiny models).
        dcn_stages: stages (1-4) whose bottlenecks get a deformable conv2 (`DeformConv3x3`): block 0 and
            every block whose index is a multiple of `dcn_interval` (SipMask++: stages 2-4, interval 3).
    """

    def __init__(self, depth: int = 50, style: str = "caffe", frozen_stages: int = 1, width: int = 64,
                 dcn_stages: tuple[int, ...] = (), dcn_interval: int = 3) -> None:
        super().__init__()
        if depth not in _BLOCKS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(_BLOCKS)}")
        block, counts = _BLOCKS[depth]
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = FrozenBatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = width
        for i, n in enumerate(counts):
            ch = width * 2**i
            layers = []
            for j in range(n):
                stride = (1 if i == 0 else 2) if j == 0 else 1
                if i + 1 in dcn_stages and j % dcn_interval == 0:
                    if block is not Bottleneck:
                        raise ValueError(f"deformable convs need a bottleneck ResNet (50, 101), not {depth}")
                    layers.append(block(in_ch, ch, stride, style, dcn=True))
                else:
                    layers.append(block(in_ch, ch, stride, style))
                in_ch = ch * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.out_channels = [width * 2**i * block.expansion for i in (1, 2, 3)]
        self.frozen_stages = frozen_stages
        self._freeze()

    def _freeze(self) -> None:
        frozen = [self.conv1] if self.frozen_stages >= 0 else []
        frozen += [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> [C3 (B, c3, H/8, W/8), C4 (H/16), C5 (H/32)]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]
