"""Seeded train/holdout split of a YouTube-VIS annotation file, for scoring locally.

The official valid/test ground truth is not public, so local numbers need a split of the train
annotations: whole videos go to one side, chosen reproducibly from (seed, ratio, video ids).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sipvis.errors import SipvisError
from sipvis.io.files import load_json


@dataclass(frozen=True)
class SplitResult:
    """Paths written by `make_split` and the video ids on each side (ascending)."""

    train_path: Path
    holdout_path: Path
    train_videos: list[int]
    holdout_videos: list[int]
    n_train_annotations: int
    n_holdout_annotations: int


def split_video_ids(video_ids: list[int], ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Pick round(ratio * N) holdout videos (at least 1, at most N - 1) with a seeded permutation.

    The result depends only on the *set* of ids, the ratio and the seed, not on file order.
    """
    if not 0.0 < ratio < 1.0:
        raise SipvisError(f"--ratio must be between 0 and 1 (exclusive), got {ratio}")
    ids = sorted(set(video_ids))
    if len(ids) < 2:
        raise SipvisError(f"cannot split {len(ids)} video(s): need at least 2")
    n_hold = min(max(int(round(ratio * len(ids))), 1), len(ids) - 1)
    perm = np.random.default_rng(seed).permutation(len(ids))
    hold = sorted(ids[i] for i in perm[:n_hold].tolist())
    hold_set = set(hold)
    return [v for v in ids if v not in hold_set], hold


def make_split(
    gt: dict | str | Path,
    out_dir: str | Path,
    ratio: float = 0.1,
    seed: int = 0,
) -> SplitResult:
    """Write ``out_dir/train.json`` and ``out_dir/holdout.json``: the GT file with its videos split.

    Both files keep every other top-level key (info, licenses, categories — all categories on both
    sides, so AP stays comparable); annotations follow their video. File order is preserved.
    """
    data = load_json(gt, "ground-truth")
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) \
            or not isinstance(data.get("annotations"), list):
        raise SipvisError("ground truth must be a JSON object with 'videos' and 'annotations' lists")
    try:
        ids = [v["id"] for v in data["videos"]]
        ann_vids = [a["video_id"] for a in data["annotations"]]
    except (TypeError, KeyError):
        raise SipvisError("ground truth: every video needs an 'id' and every annotation a 'video_id'") from None
    if len(set(ids)) != len(ids):
        raise SipvisError("ground truth: duplicate video ids, cannot split")
    train_ids, hold_ids = split_video_ids(ids, ratio, seed)
    hold_set = set(hold_ids)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SipvisError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    paths = {}
    counts = {}
    for name, keep in (("train", lambda v: v not in hold_set), ("holdout", lambda v: v in hold_set)):
        part = {k: v for k, v in data.items() if k not in ("videos", "annotations")}
        part["videos"] = [v for v in data["videos"] if keep(v["id"])]
        part["annotations"] = [a for a, vid in zip(data["annotations"], ann_vids) if keep(vid)]
        path = out / f"{name}.json"
        _write_json(part, path)
        paths[name], counts[name] = path, len(part["annotations"])
    return SplitResult(paths["train"], paths["holdout"], train_ids, hold_ids, counts["train"], counts["holdout"])


def _write_json(obj: object, path: Path) -> None:
    """Write compact JSON atomically (a partial file never replaces a good one)."""
    from sipvis.io.files import atomic_write  # here: sipvis.io loads OpenCV and PyAV

    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, separators=(",", ":"))
