"""Training samples, the padding collate, and the sampler that makes data order and augmentation
reproducible under DDP and across `--resume`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from sipvis.model.losses import FrameTargets

SampleKey = tuple[int, tuple[int, int, int]]  # (dataset index, per-sample seed)


@dataclass
class TrainSample:
    """One frame and its reference frame, transformed.

    Attributes:
        image: (3, h, w) float32 normalised current frame.
        ref_image: (3, h', w') float32 normalised reference frame (same transform); None for an image
            model's sample (no tracking branch, no reference frame).
        targets: boxes/labels/masks of the current frame in its pixels (masks (N, h, w) uint8),
            reference boxes and pids.
        info: provenance (dataset, video/image id, frame indices, scale factor, flip).
    """

    image: torch.Tensor
    ref_image: torch.Tensor | None
    targets: FrameTargets
    info: dict = field(default_factory=dict)


@dataclass
class TrainBatch:
    """B samples padded (zeros, bottom/right) to one size, a multiple of the size divisor.

    Attributes:
        images: (B, 3, Hp, Wp) current frames; ref_images: (B, 3, Hp, Wp) reference frames, or None
            (image-model samples).
        targets: B `FrameTargets`.
        info: B provenance dicts.
    """

    images: torch.Tensor
    ref_images: torch.Tensor | None
    targets: list[FrameTargets]
    info: list[dict]

    def pin_memory(self) -> "TrainBatch":
        refs = None if self.ref_images is None else self.ref_images.pin_memory()
        return TrainBatch(self.images.pin_memory(), refs,
                          [FrameTargets(*(t.pin_memory() for t in (x.boxes, x.labels, x.masks, x.ref_boxes, x.pids)))
                           for x in self.targets], self.info)

    def to(self, device: torch.device | str) -> "TrainBatch":
        nb = torch.device(device).type == "cuda"
        refs = None if self.ref_images is None else self.ref_images.to(device, non_blocking=nb)
        return TrainBatch(self.images.to(device, non_blocking=nb), refs,
                          [t.to(device, non_blocking=nb) for t in self.targets], self.info)

    def __len__(self) -> int:
        return self.images.shape[0]


class PairCollate:
    """Pad a list of `TrainSample` into a `TrainBatch` (current and reference frames share one size so
    they can run through the backbone as one batch; samples without reference frames give
    `ref_images=None`)."""

    def __init__(self, size_divisor: int = 32) -> None:
        self.size_divisor = size_divisor

    def __call__(self, samples: list[TrainSample]) -> TrainBatch:
        d = self.size_divisor
        paired = all(s.ref_image is not None for s in samples)
        frames = [s.image for s in samples] + ([s.ref_image for s in samples] if paired else [])
        hp = math.ceil(max(f.shape[1] for f in frames) / d) * d
        wp = math.ceil(max(f.shape[2] for f in frames) / d) * d
        images = torch.zeros(len(samples), 3, hp, wp)
        refs = torch.zeros(len(samples), 3, hp, wp) if paired else None
        for i, s in enumerate(samples):
            images[i, :, : s.image.shape[1], : s.image.shape[2]] = s.image
            if refs is not None:
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


class RepeatDataset(Dataset):
    """A dataset repeated `times` times per epoch (mmdetection's RepeatDataset: the original's real-time
    COCO schedules repeat the training set 3x / 5x). Item k is item k mod len(dataset); a `SampleKey`
    keeps its own seed, so every repetition draws its own augmentation.

    Attributes: class_names and categories of the wrapped dataset.
    """

    def __init__(self, dataset, times: int) -> None:
        self.dataset, self.times = dataset, int(times)
        self.class_names = dataset.class_names
        self.categories = getattr(dataset, "categories", None)

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, key: int | SampleKey):
        if isinstance(key, (tuple, list)):
            return self.dataset[(int(key[0]) % len(self.dataset), key[1])]
        return self.dataset[int(key) % len(self.dataset)]


def sample_rng(key: int | SampleKey) -> tuple[int, np.random.Generator]:
    """Dataset index and the random generator of a sample key (a plain index draws fresh entropy)."""
    if isinstance(key, (tuple, list)):
        index, seed = key
        return int(index), np.random.default_rng([int(s) for s in seed])
    return int(key), np.random.default_rng()
