"""YouTube-VIS JSON -> per-sequence, per-class `SequenceClass` data for the TrackEval metrics.

The files are parsed by `sipvis.evaluation.schema` (`_parse` is the one place that calls it).
Sequences, classes, ids and row/column order follow TrackEval's ``YouTubeVIS`` dataset class:

- one sequence per GT video, named by the part of ``file_names[0]`` before the first ``/`` and as
  long as ``file_names`` (``length`` when there are no file names); every GT video counts;
- every GT category is a class, under its name, in file order; results of other categories and
  of unknown videos are dropped silently; ``score``, ``iscrowd`` and ``areas`` play no part;
- GT ids are annotation ids, tracker ids the results' file order; a frame's rows are the GT masks
  in annotation-file order, its columns the results in file order; frames past the video are cut.

Where TrackEval refuses input, sipvis accepts it (same numbers as if the input had been given in
the accepted form): GT as compressed RLE or polygons, results as uncompressed RLE, result lists
shorter than the video (the missing frames are absent). Masks whose size differs from the GT's
raise `SipvisError` (TrackEval fails an assertion), as do two videos with the same sequence name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from pycocotools import mask as mask_utils

from sipvis.errors import SipvisError
from sipvis.evaluation.schema import GroundTruth, MaskStore, Results, Track, load_json, parse_gt, parse_results
from sipvis.evaluation.tracking import SequenceClass, split_at


def _parse(gt: str | Path | dict, results: str | Path | list,
           parsed_pair: tuple[GroundTruth, Results] | None) -> tuple[dict, GroundTruth, Results]:
    """Raw GT JSON (for the video file names), parsed GT and parsed results (unknown videos dropped)."""
    raw = load_json(gt, "ground-truth")
    if parsed_pair is not None:
        parsed, res = parsed_pair
        if res.errors:
            raise SipvisError(res.errors[0].message)
        return raw, parsed, res
    parsed = parse_gt(raw)
    res = parse_results(parsed, results, unknown_videos="drop")
    if res.errors:
        more = f" (and {len(res.errors) - 1} more problem(s))" if len(res.errors) > 1 else ""
        raise SipvisError(res.errors[0].message + more)
    return raw, parsed, res


def _sequence_names(raw: dict, gt: GroundTruth) -> dict[int, tuple[str, int]]:
    """video id -> (sequence name, length), as TrackEval names and sizes its sequences."""
    out: dict[int, tuple[str, int]] = {}
    seen: dict[str, int] = {}
    for v in raw["videos"]:
        files = v.get("file_names")
        if isinstance(files, list) and files:
            name, length = str(files[0]).split("/")[0], len(files)
        else:
            name, length = str(v["id"]), gt.videos[v["id"]].length or 0
        if name in seen:
            raise SipvisError(f"ground truth: videos {seen[name]} and {v['id']} have the same sequence name "
                              f"{name!r} (the folder of file_names[0]); tracking metrics need distinct names")
        seen[name] = v["id"]
        out[v["id"]] = (name, length)
    return out


def _frame_rows(tracks: list[Track], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, track position, mask index) of every present mask before `length`, sorted by frame
    with the tracks' order kept inside a frame."""
    if not tracks:
        z = np.zeros(0, np.int64)
        return z, z, z
    frames = np.concatenate([t.frames for t in tracks])
    owner = np.repeat(np.arange(len(tracks)), [len(t.frames) for t in tracks])
    masks = np.concatenate([t.mask_idx for t in tracks])
    keep = frames < length
    frames, owner, masks = frames[keep], owner[keep], masks[keep]
    order = np.argsort(frames, kind="stable")
    return frames[order], owner[order], masks[order]


def _class_sequence(length: int, gts: list[Track], tks: list[Track], gt_masks: MaskStore,
                    tk_masks: MaskStore) -> SequenceClass:
    """One video and one category: a pycocotools IoU call per frame with masks on both sides.

    `gts` / `tks`: the category's annotations / results in file order (the tracker ids are the
    positions in `tks`, so ascending ids follow the file); cross-category IoUs are never needed.
    """
    gf, go, gm = _frame_rows(gts, length)
    tf, to, tm = _frame_rows(tks, length)
    gb = np.searchsorted(gf, np.arange(length + 1)).tolist()
    kb = np.searchsorted(tf, np.arange(length + 1)).tolist()
    gt_ids = split_at(np.array([t.ann_id for t in gts], np.int64)[go], gb)
    tk_ids = split_at(to, kb)
    g_rles, k_rles = gt_masks.rles, tk_masks.rles
    # pycocotools answers -1 for masks of different sizes whose boxes overlap: look only if sizes differ
    hw = np.concatenate([gt_masks.height[gm], tk_masks.height[tm], gt_masks.width[gm], tk_masks.width[tm]])
    n = len(gm) + len(tm)
    check = n > 0 and (np.ptp(hw[:n]) > 0 or np.ptp(hw[n:]) > 0)
    sims = []
    for t in range(length):
        g0, g1, k0, k1 = gb[t], gb[t + 1], kb[t], kb[t + 1]
        if g0 == g1 or k0 == k1:
            sims.append(np.zeros((g1 - g0, k1 - k0)))
            continue
        ious = np.asarray(mask_utils.iou([g_rles[i] for i in gm[g0:g1]], [k_rles[i] for i in tm[k0:k1]],
                                         [0] * (k1 - k0)), np.float64).reshape(g1 - g0, k1 - k0)
        if check and (ious < 0).any():
            r, c = np.argwhere(ious < 0)[0]
            raise SipvisError(f"results[{tks[to[k0 + c]].ann_id - 1}].segmentations[{t}] has RLE size "
                              f"{k_rles[tm[k0 + c]]['size']} but the ground-truth mask of annotation "
                              f"{gts[go[g0 + r]].ann_id} is {g_rles[gm[g0 + r]]['size']}")
        sims.append(ious)
    return SequenceClass.from_frames(gt_ids, tk_ids, sims, num_frames=length)


def _by_category(tracks: list[Track]) -> dict[int, list[Track]]:
    out: dict[int, list[Track]] = {}
    for t in tracks:
        out.setdefault(t.category_id, []).append(t)
    return out


def load_youtube_vis(gt: str | Path | dict, results: str | Path | list,
                     parsed: tuple[GroundTruth, Results] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[dict, list[str]]:
    """Read a YouTube-VIS GT and results file for the tracking metrics (`parsed`: the two already
    parsed by `schema.parse_gt` / `parse_results` with iou_type "segm"; `gt` then still gives the
    video file names). `progress(done, total)` is called after each video.

    Returns:
        (sequences, classes): sequence name -> class name -> SequenceClass, and the GT category
        names in file order. Raises SipvisError for unreadable or invalid input.
    """
    raw, parsed, res = _parse(gt, results, parsed)
    if len(set(parsed.categories.values())) < len(parsed.categories):
        raise SipvisError("ground truth: two categories have the same name; tracking metrics report classes by name")
    names = _sequence_names(raw, parsed)
    cat_ids = list(parsed.categories)  # file order (dict insertion order)
    by_video_gt: dict[int, list[Track]] = {v: [] for v in names}
    by_video_tk: dict[int, list[Track]] = {v: [] for v in names}
    for t in parsed.tracks:
        by_video_gt[t.video_id].append(t)
    for t in res.tracks:
        by_video_tk[t.video_id].append(t)
    sequences: dict[str, dict[str, SequenceClass]] = {}
    for done, (vid, (name, length)) in enumerate(names.items(), 1):
        gts, tks = _by_category(by_video_gt[vid]), _by_category(by_video_tk[vid])
        sequences[name] = {
            parsed.categories[c]: _class_sequence(length, gts.get(c, []), tks.get(c, []), parsed.masks, res.masks)
            if c in gts or c in tks else SequenceClass.empty(length)
            for c in cat_ids
        }
        if progress is not None:
            progress(done, len(names))
    return sequences, [parsed.categories[c] for c in cat_ids]
