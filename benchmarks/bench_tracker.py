"""Speed and identity keeping of the trackers alone (no network), `original` against `robust`.

Generates a seeded scene of moving boxes (default 10 objects of 3 classes in a 640x360 frame, moving
at constant speed and bouncing off the borders, so same-class objects cross each other often), with
noisy per-object embeddings, noisy boxes, occlusions (an object is missed for 1..12 frames) and two
low-score false detections per frame. Every tracker gets the identical inputs, frame by frame, as CPU
tensors sorted by score (as `Segmenter` gives them); only the `update` calls are timed.

Besides frames/s it counts, against the known object of each detection: ID switches (an object's
reported id changes), real detections not reported (id -1), and ids created.

    .venv/bin/python benchmarks/bench_tracker.py                # the figures in BENCHMARKS.md
    .venv/bin/python benchmarks/bench_tracker.py --frames 300   # a quick run
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sipvis.track.robust import RobustTracker, RobustTrackerConfig
from sipvis.track.tracker import OriginalTracker

WIDTH, HEIGHT = 640, 360


@dataclass
class SceneFrame:
    """One frame's detections, sorted by score: boxes (N, 4), scores (N,), labels (N,), embeddings
    (N, E) and `objects` (N,) the true object of each detection (-1 for a false detection)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    embeddings: torch.Tensor
    objects: np.ndarray


def make_scene(frames: int = 2000, objects: int = 10, classes: int = 3, dim: int = 64, seed: int = 0,
               occlusion_rate: float = 0.02, embedding_noise: float = 0.3) -> list[SceneFrame]:
    """A seeded scene (see the module docstring). `embedding_noise` is the per-dimension noise relative
    to the unit-variance object embedding: 0.3 gives two detections of one object a cosine of ~0.92,
    a little below what the demo model gives on `sipvis synth` videos (median 0.99, 5th percentile 0.94
    between consecutive frames; different objects: median -0.13, 95th percentile 0.77)."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(40, 110, (objects, 2))
    pos = rng.uniform(0, 1, (objects, 2)) * ([WIDTH, HEIGHT] - size)
    vel = rng.uniform(-6, 6, (objects, 2))
    labels = np.arange(objects) % classes
    base = rng.normal(0, 1, (objects, dim))
    hidden = np.zeros(objects, np.int64)  # frames of occlusion left
    out = []
    for _ in range(frames):
        pos += vel
        for axis, limit in ((0, WIDTH), (1, HEIGHT)):
            bounce = (pos[:, axis] < 0) | (pos[:, axis] + size[:, axis] > limit)
            vel[bounce, axis] *= -1
            pos[:, axis] = np.clip(pos[:, axis], 0, limit - size[:, axis])
        starts = (hidden == 0) & (rng.uniform(size=objects) < occlusion_rate)
        hidden[starts] = rng.integers(1, 13, starts.sum())
        seen = np.flatnonzero(hidden == 0)
        hidden[hidden > 0] -= 1
        out.append(_detections(rng, pos[seen], size[seen], labels[seen], base[seen], seen, classes,
                               embedding_noise))
    return out


def _detections(rng: np.random.Generator, pos: np.ndarray, size: np.ndarray, labels: np.ndarray,
                base: np.ndarray, seen: np.ndarray, classes: int, noise: float) -> SceneFrame:
    """The visible objects' detections plus two low-score false ones, sorted by score."""
    n = len(seen)
    boxes = np.concatenate([pos, pos + size], 1) + rng.normal(0, 2, (n, 4))
    scores = rng.uniform(0.4, 0.95, n)
    emb = base + rng.normal(0, noise, base.shape)
    fx, fy = rng.uniform(0, WIDTH - 60, 2), rng.uniform(0, HEIGHT - 60, 2)
    false_boxes = np.stack([fx, fy, fx + 50, fy + 50], 1)
    boxes = np.concatenate([boxes, false_boxes])
    scores = np.concatenate([scores, rng.uniform(0.05, 0.25, 2)])
    labels = np.concatenate([labels, rng.integers(0, classes, 2)])
    emb = np.concatenate([emb, rng.normal(0, 1, (2, base.shape[1]))])
    objects = np.concatenate([seen, [-1, -1]])
    order = np.argsort(-scores, kind="stable")
    f32 = torch.float32
    return SceneFrame(torch.tensor(boxes[order], dtype=f32), torch.tensor(scores[order], dtype=f32),
                      torch.tensor(labels[order]), torch.tensor(emb[order], dtype=f32), objects[order])


def box_masks(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes -> (N, HEIGHT, WIDTH) bool masks filling them (the mask cue's cost, not its value)."""
    ys, xs = torch.arange(HEIGHT)[:, None], torch.arange(WIDTH)[None, :]
    b = boxes[:, :, None, None]
    return (xs >= b[:, 0]) & (xs <= b[:, 2]) & (ys >= b[:, 1]) & (ys <= b[:, 3])


def run_tracker(make: Callable[[], object], scene: list[SceneFrame], embeddings: bool = True,
                masks: bool = False) -> dict:
    """Feed the scene to a fresh tracker; returns seconds spent in `update` and the identity counts.
    With `masks`, box-shaped masks are drawn for every frame (outside the timed call) and passed."""
    tracker = make()
    spent = 0.0
    last: dict[int, int] = {}
    switches = dropped = 0
    created: set[int] = set()
    for frame in scene:
        emb = frame.embeddings if embeddings else None
        kw = {"masks": box_masks(frame.boxes)} if masks else {}
        t0 = time.perf_counter()
        ids = tracker.update(frame.boxes, frame.scores, frame.labels, emb, 0, **kw)
        spent += time.perf_counter() - t0
        for obj, track_id in zip(frame.objects.tolist(), ids):
            created.add(track_id)
            if obj < 0:
                continue
            if track_id < 0:
                dropped += 1
                continue
            switches += obj in last and last[obj] != track_id
            last[obj] = track_id
    created.discard(-1)
    return {"seconds": spent, "fps": len(scene) / spent, "id_switches": switches, "dropped": dropped,
            "ids": len(created)}


# name: (tracker factory, pass embeddings, pass masks)
TRACKERS: dict[str, tuple[Callable[[], object], bool, bool]] = {
    "original": (OriginalTracker, True, False),
    "robust": (lambda: RobustTracker(RobustTrackerConfig()), True, False),
    "robust, no embeddings": (lambda: RobustTracker(RobustTrackerConfig()), False, False),
    "robust + 360x640 masks": (lambda: RobustTracker(RobustTrackerConfig()), True, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--objects", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: the trackers "
                    "run tiny ops, which extra threads only slow down)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per tracker; the median is reported")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scene = make_scene(args.frames, args.objects, seed=args.seed)
    n_dets = sum(len(f.objects) for f in scene)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); "
          f"{args.frames} frames, {args.objects} objects, {n_dets / args.frames:.1f} detections/frame; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other processes slow every row)")
    print(f"{'tracker':<25}{'frames/s':>10}{'us/frame':>10}{'ID sw.':>8}{'not rep.':>9}{'ids':>6}")
    for name, (make, emb, masks) in TRACKERS.items():
        runs = sorted((run_tracker(make, scene, emb, masks) for _ in range(args.repeats)), key=lambda r: r["seconds"])
        best = runs[len(runs) // 2]  # the median run
        print(f"{name:<25}{best['fps']:>10.0f}{best['seconds'] / args.frames * 1e6:>10.0f}"
              f"{best['id_switches']:>8}{best['dropped']:>9}{best['ids']:>6}")
    print(f"(objects in the scene: {args.objects}; 'not rep.' counts real detections given id -1)")


if __name__ == "__main__":
    main()
