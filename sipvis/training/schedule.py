"""The optimiser and learning-rate schedule of the original recipe: SGD with bias multipliers, linear or
constant warm-up, step decay."""

from __future__ import annotations

from torch import nn

from sipvis.training.config import TrainConfig


class WarmupStep:
    """Learning-rate factor at iteration i: warm-up times gamma ** (number of step points <= i). The
    warm-up (mmcv's) is "linear": 1 - (1 - i/W)(1 - ratio), or "constant": ratio, for i < W."""

    def __init__(self, warmup_iters: int, warmup_ratio: float, step_points: list[int], gamma: float,
                 warmup: str = "linear") -> None:
        self.warmup_iters, self.warmup_ratio, self.warmup = warmup_iters, warmup_ratio, warmup
        self.step_points, self.gamma = sorted(int(s) for s in step_points), gamma

    def __call__(self, i: int) -> float:
        factor = self.gamma ** sum(1 for s in self.step_points if i >= s)
        if i < self.warmup_iters:
            factor *= self.warmup_ratio if self.warmup == "constant" else \
                1 - (1 - i / self.warmup_iters) * (1 - self.warmup_ratio)
        return factor


def param_groups(model: nn.Module, tc: TrainConfig) -> list[dict]:
    """Two groups: weights (lr, weight decay) and biases (lr x bias_lr_mult, decay x bias_decay_mult)."""
    weights, biases = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (biases if name.endswith(".bias") else weights).append(p)
    return [{"params": weights, "lr": tc.lr, "weight_decay": tc.weight_decay},
            {"params": biases, "lr": tc.lr * tc.bias_lr_mult, "weight_decay": tc.weight_decay * tc.bias_decay_mult}]
