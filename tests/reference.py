"""Helpers for tests against ../shared/reference/sipmask_vis: the deterministic weights and expected outputs."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from conftest import REFERENCE, require

CLIPS = ("clip_a", "clip_b")


@functools.lru_cache(maxsize=1)
def reference_state_dict() -> dict:
    """The original's parameter names -> deterministic tensors, built by the reference recipe."""
    recipe = require(REFERENCE / "make_weights.py")
    spec = importlib.util.spec_from_file_location("make_weights", recipe)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = json.loads((REFERENCE / "manifest.json").read_text())
    return module.make_state_dict(manifest["state_dict"])


def frames(clip: str) -> list[np.ndarray]:
    paths = sorted(require(REFERENCE / clip / "frames").glob("*.png"))
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]


def expected_frames(clip: str) -> list[dict]:
    return json.loads(require(REFERENCE / clip / "expected_frames.json").read_text())["frames"]


def expected_video(clip: str) -> list[dict]:
    return json.loads(require(REFERENCE / clip / "expected_video.json").read_text())


def raw_outputs(clip: str) -> dict[str, np.ndarray]:
    return dict(np.load(require(REFERENCE / clip / "raw_frame0.npz")))


def decode(rle: dict | None, shape: tuple[int, int]) -> np.ndarray:
    if rle is None:
        return np.zeros(shape, bool)
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def box_iou(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(rb - lt, 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


def assert_video_results_match(ours: list[dict], expected: list[dict], shape: tuple[int, int]) -> None:
    """Same entries, matched by category and per-frame masks (README tolerance), scores within 1e-4."""
    assert len(ours) == len(expected), f"{len(ours)} tracks, expected {len(expected)}"
    unmatched = list(range(len(ours)))
    for exp in expected:
        best, best_iou = None, -1.0
        for j in unmatched:
            cand = ours[j]
            if cand["category_id"] != exp["category_id"] or cand["video_id"] != exp["video_id"]:
                continue
            if [s is None for s in cand["segmentations"]] != [s is None for s in exp["segmentations"]]:
                continue
            ious = [mask_iou(decode(a, shape), decode(b, shape))
                    for a, b in zip(cand["segmentations"], exp["segmentations"]) if b is not None]
            if min(ious) > best_iou:
                best, best_iou = j, min(ious)
        assert best is not None and best_iou >= 0.99, f"no match for expected track {exp['category_id']}"
        assert abs(ours[best]["score"] - exp["score"]) <= 1e-4
        unmatched.remove(best)
