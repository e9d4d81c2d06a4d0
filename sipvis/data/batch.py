"""Training samples, the padding collate, and the sampler that makes data order and augmentation
reproducible under DDP and across `--resume`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Sampler

from sipvis.model.losses import FrameTargets

SampleKey = tuple[int, tuple[int, int, int]]  # (dataset index, per-sample seed)


@dataclass
class TrainSample:
    """One frame and its reference frame, transformed.

    Attributes:
        image: (3, h, w) float32 normalised current frame.
        ref_image: (3, h', w') float32 normalised reference frame (same transform).
        targets: boxes/labels/masks of the current frame in its pixels (masks (N, h, w) uint8),
            reference boxes and pids.
        info: provenance (dataset, video/image id, frame indices, scale factor, flip).
    """

    image: torch.Tensor
    ref_image: torch.Tensor
    targets: FrameTargets
    info: dict = field(default_factory=dict)


@dataclass
class TrainBatch:
    """B samples padded (zeros, bottom/right) to one size, a multiple of the size divisor.

    Attributes:
        images: (B, 3, Hp, Wp) current frames; ref_images: (B, 3, Hp, Wp) reference frames.
        targets: B `FrameTargets`.
        info: B provenance dicts.
    """

    images: torch.Tensor
    ref_images: torch.Tensor
    targets: list[FrameTargets]
    info: list[dict]

    def pin_memory(self) -> "TrainBatch":
        return TrainBatch(self.images.pin_memory(), self.ref_images.pin_memory(),
                          [FrameTargets(*(t.pin_memory() for t in (x.boxes, x.labels, x.masks, x.ref_boxes, x.pids)))
                           for x in self.targets], self.info)

    def to(self, device: torch.device | str) -> "TrainBatch":
        nb = torch.device(device).type == "cuda"
        return TrainBatch(self.images.to(device, non_blocking=nb), self.ref_images.to(device, non_blocking=nb),
                          [t.to(device, non_blocking=nb) for t in self.targets], self.info)

    def __len__(self) -> int:
        return self.images.shape[0]


class PairCollate:
    """Pad a list of `TrainSample` into a `TrainBatch` (current and reference frames share one size so
    they can run through the backbone as one batch)."""

    def __init__(self, size_divisor: int = 32) -> None:
        self.size_divisor = size_divisor

    def __call__(self, samples: list[TrainSample]) -> TrainBatch:
        d = self.size_divisor
        hp = max(max(s.image.shape[1], s.ref_image.shape[1]) for s in samples)
        wp = max(max(s.image.shape[2], s.ref_image.shape[2]) for s in samples)
        hp, wp = math.ceil(hp / d) * d, math.ceil(wp / d) * d
        images = torch.zeros(len(samples), 3, hp, wp)
        refs = torch.zeros(len(samples), 3, hp, wp)
        for i, s in enumerate(samples):
            images[i, :, : s.image.shape[1], : s.image.shape[2]] = s.image
            refs[i, :, : s.ref_image.shape[1], : s.ref_image.shape[2]] = s.ref_image
        return TrainBatch(images, refs, [s.targets for s in samples], [s.info for s in samples])


class PairSampler(Sampler[SampleKey]):
    """DistributedSampler semantics (a seeded permutation per epoch, padded to a multiple of the world
    size, rank r takes every world-th item) plus two things training needs:

    - each item carries its own seed `(seed, epoch, position)`, so a sample's augmentation (scale,
      flip, reference frame) does not depend on worker count, process count or resumption;
    - `set_start(k)` skips the first k items of the epoch (resuming mid-epoch).

    Yields `(index, (seed, epoch, position))`; datasets in this package accept such keys.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0
        self.per_rank = math.ceil(size / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        self.start = max(0, int(start))

    def __iter__(self) -> Iterator[SampleKey]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.size))[:total]  # pad by repeating the head
        mine = order[self.rank:total:self.world_size]
        for k in range(self.start, len(mine)):
            position = k * self.world_size + self.rank
            yield mine[k], (self.seed, self.epoch, position)

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)


def sample_rng(key: int | SampleKey) -> tuple[int, np.random.Generator]:
    """Dataset index and the random generator of a sample key (a plain index draws fresh entropy)."""
    if isinstance(key, (tuple, list)):
        index, seed = key
        return int(index), np.random.default_rng([int(s) for s in seed])
    return int(key), np.random.default_rng()
