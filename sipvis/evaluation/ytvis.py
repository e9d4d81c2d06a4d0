"""YouTube-VIS AP/AR with the official semantics (youtubevos/cocoapi ``ytvoseval.py``), vectorised.

The numbers equal the official evaluator's bit for bit on ``../shared/reference/ytvis_eval``.
What is computed (see that folder's README for the full list of quirks):

* Track IoU of result d and GT g: walk both per-frame lists up to the shorter one (Python ``zip``);
  a frame where both are present adds |d∩g| to I and |d∪g| to U, one present adds its area to U,
  a frame whose two RLE sizes differ adds nothing; IoU = I/U, 0 when U = 0. Crowd GT use the same IoU.
* Per (video, category): results sorted by score (stable), cut at 100; greedy matching per IoU
  threshold, non-ignored GT first, ties to the later GT, IoU == threshold matches.
* Track area (area ranges, inclusive at both ends) = mean of the non-null, non-zero frame areas;
  for GT the ``areas`` field, for results the RLE areas.
* Accumulation / summary exactly as COCO's, with area ranges 128² / 256² and maxDets 1/10/100.

How it is fast: every frame mask is parsed once per (video, frame) in a single
`pycocotools.mask.iou` call that returns all result x GT intersections of that frame at once
(crowd mode gives |d∩g|/|d|, so |d∩g| = round(iou * |d|) exactly); unions come from per-frame
areas with cumulative sums, so there is no Python loop per frame pair. Matching loops over
detections only, with numpy over (area range, IoU threshold, GT); accumulation is numpy over
(area range, IoU threshold, detection).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pycocotools import mask as mask_utils

from sipvis.errors import SipvisError
from sipvis.io.files import no_gc
from sipvis.evaluation.schema import (
    GroundTruth,
    Issue,
    IssueKind,
    IouType,
    MaskStore,
    Results,
    Track,
    parse_gt,
    parse_results,
)

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# official parameters (np.linspace, not k/100: e.g. recall threshold 0.35000000000000003)
IOU_THRS = np.linspace(0.5, 0.95, 10, endpoint=True)
REC_THRS = np.linspace(0.0, 1.0, 101, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RNG = np.array([[0.0, 1e5**2], [0.0, 128.0**2], [128.0**2, 256.0**2], [256.0**2, 1e5**2]])
AREA_LBL = ("all", "small", "medium", "large")


@dataclass
class EvalResult:
    """Outcome of `evaluate`.

    Attributes:
        stats: the 12 official figures (order of `STAT_NAMES`), -1 where undefined.
        per_class: category name -> AP (IoU .50:.95, area all, maxDets 100), -1 where undefined.
        precision: (T=10, R=101, K, A=4, M=3) official precision array, K = GT category ids sorted.
        recall: (T, K, A, M); scores: (T, R, K, A, M).
        category_ids: the K category ids in array order.
        ious: (video_id, category_id) -> (D, G) track-IoU matrix (rows: results by score, cut at 100;
            columns: GT annotations in file order), for pairs with a result or a GT.
        issues: problems that did not stop evaluation (`Issue`s of level "warning"; `warnings` has
            their messages, one line each).
        iou_type: "segm" or "bbox".
    """

    stats: list[float]
    per_class: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    category_ids: list[int]
    ious: dict[tuple[int, int], np.ndarray]
    issues: list[Issue] = field(default_factory=list)
    iou_type: str = "segm"

    @property
    def warnings(self) -> list[str]:
        """The issues' messages."""
        return [i.message for i in self.issues]

    def as_dict(self) -> dict:
        """JSON-ready: ``{"stats": [12], "AP": .., ..., "ARl": .., "per_class": {name: AP}}``."""
        out: dict = {"stats": [float(s) for s in self.stats]}
        out.update({name: float(v) for name, v in zip(STAT_NAMES, self.stats)})
        out["per_class"] = {k: float(v) for k, v in self.per_class.items()}
        return out


# ------------------------------------------------------------------------------------ entry point


def evaluate(
    gt: dict | str | Path | GroundTruth,
    results: list | str | Path | Results,
    iou_type: IouType = "segm",
    *,
    unknown_videos: Literal["error", "drop"] = "error",
    strict: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Score YouTube-VIS results against a ground truth with the official semantics.

    Args:
        gt: annotation dict, path to it, or an already parsed `GroundTruth`.
        results: results list (YouTube-VIS / CodaLab format), path to it, or `Results` already
            parsed against this `gt` (then `unknown_videos` has already been applied).
        iou_type: "segm" (official) or "bbox" (spatio-temporal box IoU, a sipvis extension).
        unknown_videos: "error" (default; the official code asserts) or "drop" them with a warning.
        strict: turn every warning about the results (size mismatch, frame count, uncompressed
            RLE, empty list, unknown category) into an error.
        progress: called as progress(done, total) as the work advances (IoUs, then matching).

    Raises:
        SipvisError: unreadable files, schema errors, unknown or 0-based video ids, ...
    """
    if iou_type not in ("segm", "bbox"):
        raise SipvisError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    with no_gc():
        return _evaluate(gt, results, iou_type, unknown_videos, strict, progress)


def _evaluate(gt, results, iou_type, unknown_videos, strict, progress) -> EvalResult:
    if isinstance(gt, GroundTruth):
        if gt.iou_type != iou_type:
            raise SipvisError(f"ground truth was parsed for iou_type {gt.iou_type!r}, not {iou_type!r}")
        gtp = gt
    else:
        gtp = parse_gt(gt, iou_type)
    if isinstance(results, Results):
        res = results
    else:
        res = parse_results(gtp, results, iou_type, unknown_videos=unknown_videos)
    problems = res.errors + (res.warnings if strict else [])
    if problems:
        raise SipvisError(_summarise_problems(problems))
    return _evaluate_parsed(gtp, res.tracks, res.masks, iou_type, gtp.warnings + res.warnings, progress)


def _summarise_problems(problems: list[Issue]) -> str:
    first = problems[0].message
    more = len(problems) - 1
    return first if not more else f"{first} (and {more} more problem{'s' if more > 1 else ''})"


# --------------------------------------------------------------------------------------- pipeline


@dataclass
class _EvalVid:
    """Matching outcome of one (video, category) for all area ranges (A) and thresholds (T).

    scores: (D,) sorted descending; dtm: (A, T, D) matched to a GT with a non-zero id;
    dtig: (A, T, D) ignored; npig: (A,) number of non-ignored GT.
    """

    scores: np.ndarray
    dtm: np.ndarray
    dtig: np.ndarray
    npig: np.ndarray


def _evaluate_parsed(
    gt: GroundTruth,
    dt_tracks: list[Track],
    dt_masks: MaskStore,
    iou_type: str,
    issues: list[Issue],
    progress: Callable[[int, int], None] | None,
) -> EvalResult:
    video_set = set(gt.video_ids)
    gts_by: dict[tuple[int, int], list[Track]] = defaultdict(list)
    for tr in gt.tracks:
        gts_by[tr.video_id, tr.category_id].append(tr)
    dts_by: dict[tuple[int, int], list[Track]] = defaultdict(list)
    for tr in dt_tracks:
        if tr.video_id in video_set:
            dts_by[tr.video_id, tr.category_id].append(tr)
    # results per (video, category): stable sort on -score, keep maxDets[-1]
    for key, lst in dts_by.items():
        order = np.argsort(-np.array([d.score for d in lst]), kind="mergesort")[: MAX_DETS[-1]]
        dts_by[key] = [lst[i] for i in order]

    # every (video, category) with a result or a GT, videos in ascending id order
    keys = sorted(set(gts_by) | set(dts_by))
    groups = [(dts_by.get(k, []), gts_by.get(k, [])) for k in keys]
    n_steps = len(keys) + 1
    if iou_type == "segm":
        blocks = _segm_ious(groups, gt.masks, dt_masks)
    else:
        blocks = [_bbox_ious(ds, gs) for ds, gs in groups]
    if progress is not None:
        progress(1, n_steps)

    ious: dict[tuple[int, int], np.ndarray] = {}
    evals: dict[tuple[int, int], _EvalVid] = {}
    empty_union: list[tuple[int, int]] = []
    for n, (key, (ds, gs), (iou, union_zero)) in enumerate(zip(keys, groups, blocks)):
        ious[key] = iou
        if union_zero:
            empty_union.append(key)
        evals[key] = _match(iou, ds, gs)
        if progress is not None and (n % 64 == 63 or n == len(keys) - 1):
            progress(n + 2, n_steps)
    for vid, c in empty_union:
        issues.append(Issue("warning", IssueKind.EMPTY_UNION,
                            f"Mask sizes in video {vid} and category {c} may not match! "
                            "(a result/GT pair has an empty union: its IoU is 0)"))

    precision, recall, scores = _accumulate(evals, gt.video_ids, gt.cat_ids)
    stats = _summarize(precision, recall)
    per_class = {}
    names = _unique_names(gt)
    for k, cat in enumerate(gt.cat_ids):
        per_class[names[cat]] = _mean_valid(precision[:, :, k, 0, 2])
    return EvalResult(
        stats=stats, per_class=per_class, precision=precision, recall=recall, scores=scores,
        category_ids=list(gt.cat_ids), ious=ious, issues=issues, iou_type=iou_type,
    )


def _unique_names(gt: GroundTruth) -> dict[int, str]:
    """Category id -> display name; duplicate names get their id appended."""
    counts: dict[str, int] = defaultdict(int)
    for c in gt.cat_ids:
        counts[gt.categories[c]] += 1
    return {c: gt.categories[c] if counts[gt.categories[c]] == 1 else f"{gt.categories[c]} ({c})"
            for c in gt.cat_ids}


# ---------------------------------------------------------------------------------------- track IoU


def _frame_index(tracks: list[Track], n_frames: int) -> np.ndarray:
    """(N, n_frames) int64: mask index of each present frame, -1 where absent."""
    idx = np.full((len(tracks), n_frames), -1, dtype=np.int64)
    for i, tr in enumerate(tracks):
        if len(tr.frames):
            idx[i, tr.frames] = tr.mask_idx
    return idx


def _iou_block(inter: np.ndarray, union: np.ndarray) -> tuple[np.ndarray, bool]:
    """IoU = I / U, 0 where U == 0 (official); and whether some union was empty."""
    iou = np.zeros(inter.shape)
    np.divide(inter, union, out=iou, where=union > 0)
    return iou, bool(union.size and (union <= 0).any())


def _bbox_ious(dts: list[Track], gts: list[Track]) -> tuple[np.ndarray, bool]:
    """Track box IoUs of one (video, category): (D, G) and whether a union was empty."""
    if not dts or not gts:
        return np.zeros((len(dts), len(gts))), False
    return _iou_block(*_bbox_inter_union(dts, gts))


# Entries of one pycocotools.mask.iou call (rows x columns) allowed per chunk of frames: bounds memory.
_MAX_IOU_ENTRIES = 4_000_000


def _layouts(area: int) -> list[list[int]]:
    """All [h', w'] with h' * w' == area: RLE counts stay valid under any of them (see below)."""
    if area <= 0:
        return [[0, 0]]
    small = [d for d in range(1, int(area**0.5) + 1) if area % d == 0]
    divs = small + [area // d for d in reversed(small) if d * d != area]
    return [[area // d, d] for d in divs]


def _segm_ious(
    groups: list[tuple[list[Track], list[Track]]],
    gt_masks: MaskStore,
    dt_masks: MaskStore,
) -> list[tuple[np.ndarray, bool]]:
    """Track mask IoUs of every (video, category) group at once: per group (D, G) and empty-union flag.

    Groups whose masks all share one RLE size (the normal case) go through one vectorised pass
    over the whole dataset; the others through `_segm_inter_union`, which also handles frames
    whose two sizes differ.

    Intersections: the frame masks of many (group, frame) keys go into one `pycocotools.mask.iou`
    call, each key with its own RLE "layout" [h', w'], h' * w' == h * w. The counts of a
    column-major RLE do not depend on the layout, so two masks of one key intersect exactly as in
    their real layout, while pycocotools gives up at once on pairs whose layouts (sizes) differ:
    those cross-frame and cross-category entries are never read, so layouts decide speed, never
    values. Crowd mode returns |d∩g| / |d|, so |d∩g| = round(value * |d|) exactly.
    Unions: sum over the frames that zip() walks of |d| + |g|, minus the intersection.
    """
    out: list[tuple[np.ndarray, bool] | None] = [None] * len(groups)
    both = [i for i, (ds, gs) in enumerate(groups) if ds and gs]
    for i, (ds, gs) in enumerate(groups):
        if not ds or not gs:
            out[i] = (np.zeros((len(ds), len(gs))), False)
    if not both:
        return out  # type: ignore[return-value]
    e = _Entries.of(groups, both)
    uniform, lo = _uniform_groups(e, gt_masks, dt_masks)
    for j in np.flatnonzero(~uniform).tolist():
        ds, gs = groups[both[j]]
        out[both[j]] = _iou_block(*_segm_inter_union(ds, gs, gt_masks, dt_masks))
    inter = _uniform_intersections(e, uniform, lo, gt_masks, dt_masks)
    union = _unions(e, inter, gt_masks, dt_masks)
    for j in np.flatnonzero(uniform).tolist():
        sl = slice(int(e.block0[j]), int(e.block0[j] + e.n_pairs[j]))
        shape = (e.n_d[j], e.n_g[j])
        out[both[j]] = _iou_block(inter[sl].reshape(shape), union[sl].reshape(shape))
    return out  # type: ignore[return-value]


@dataclass
class _Entries:
    """Flat per-frame entries of all tracks of the groups with both results and GT, track by track.

    n_d, n_g: (B,) result / GT tracks per group; d_grp, g_grp: group of each track; d_len, g_len:
    track lengths; ed_*, eg_*: per present frame entry its track, frame and mask index;
    n_pairs, block0: (B,) size and start of each group's (D, G) block in a flat pair array.
    """

    n_d: np.ndarray
    n_g: np.ndarray
    d_grp: np.ndarray
    g_grp: np.ndarray
    d_len: np.ndarray
    g_len: np.ndarray
    ed_track: np.ndarray
    eg_track: np.ndarray
    ed_t: np.ndarray
    eg_t: np.ndarray
    ed_m: np.ndarray
    eg_m: np.ndarray
    n_pairs: np.ndarray
    block0: np.ndarray

    @classmethod
    def of(cls, groups: list[tuple[list[Track], list[Track]]], both: list[int]) -> "_Entries":
        d_tracks = [d for i in both for d in groups[i][0]]
        g_tracks = [g for i in both for g in groups[i][1]]
        n_d = np.array([len(groups[i][0]) for i in both])
        n_g = np.array([len(groups[i][1]) for i in both])
        n_pairs = n_d * n_g
        return cls(
            n_d=n_d, n_g=n_g,
            d_grp=np.repeat(np.arange(len(both)), n_d), g_grp=np.repeat(np.arange(len(both)), n_g),
            d_len=np.array([t.length for t in d_tracks]), g_len=np.array([t.length for t in g_tracks]),
            ed_track=np.repeat(np.arange(len(d_tracks)), [len(t.frames) for t in d_tracks]),
            eg_track=np.repeat(np.arange(len(g_tracks)), [len(t.frames) for t in g_tracks]),
            ed_t=np.concatenate([t.frames for t in d_tracks]), eg_t=np.concatenate([t.frames for t in g_tracks]),
            ed_m=np.concatenate([t.mask_idx for t in d_tracks]), eg_m=np.concatenate([t.mask_idx for t in g_tracks]),
            n_pairs=n_pairs, block0=np.concatenate([[0], np.cumsum(n_pairs)[:-1]]),
        )


def _uniform_groups(e: _Entries, gt_masks: MaskStore, dt_masks: MaskStore) -> tuple[np.ndarray, np.ndarray]:
    """(B,) whether all masks of a group share one RLE size, and that (smallest) size as h << 32 | w."""
    hw_d = dt_masks.height[e.ed_m] * (1 << 32) + dt_masks.width[e.ed_m]
    hw_g = gt_masks.height[e.eg_m] * (1 << 32) + gt_masks.width[e.eg_m]
    grp_all = np.concatenate([e.d_grp[e.ed_track], e.g_grp[e.eg_track]])
    hw_all = np.concatenate([hw_d, hw_g])
    lo = np.full(len(e.n_d), np.iinfo(np.int64).max)
    hi = np.full(len(e.n_d), np.iinfo(np.int64).min)
    np.minimum.at(lo, grp_all, hw_all)
    np.maximum.at(hi, grp_all, hw_all)
    uniform = lo == hi  # groups with no mask at all are uniform too (lo > hi is impossible then)
    uniform |= lo == np.iinfo(np.int64).max
    return uniform, lo


def _uniform_intersections(e: _Entries, uniform: np.ndarray, lo: np.ndarray, gt_masks: MaskStore,
                           dt_masks: MaskStore) -> np.ndarray:
    """Summed |d∩g| of every (result, GT) pair of the uniform groups, flat in the groups' blocks."""
    n_d, n_g, ed_track, eg_track, ed_m, eg_m = e.n_d, e.n_g, e.ed_track, e.eg_track, e.ed_m, e.eg_m
    t_max = int(max(e.d_len.max(), e.g_len.max())) + 1
    keep_d = uniform[e.d_grp[ed_track]]
    keep_g = uniform[e.g_grp[eg_track]]
    key_d = e.d_grp[ed_track] * t_max + e.ed_t
    key_g = e.g_grp[eg_track] * t_max + e.eg_t
    keys = np.intersect1d(key_d[keep_d], key_g[keep_g])
    inter = np.zeros(int(e.n_pairs.sum()))
    if not len(keys):
        return inter
    od = np.flatnonzero(np.isin(key_d, keys))  # entries come track by track: sort them by key
    og = np.flatnonzero(np.isin(key_g, keys))
    od, og = od[np.argsort(key_d[od], kind="stable")], og[np.argsort(key_g[og], kind="stable")]
    pos_d, pos_g = np.searchsorted(keys, key_d[od]), np.searchsorted(keys, key_g[og])
    ng_k = np.bincount(pos_g, minlength=len(keys))
    nd_k = np.bincount(pos_d, minlength=len(keys))
    # keys per pycocotools call: a call costs ~30 us fixed, each (result, GT) entry ~0.15 us,
    # and a call of k keys has ~k^2 * per_key entries
    per_key = max(float(np.mean(nd_k * ng_k)), 1.0)
    k = int(max(1, min(64, round((200 / per_key) ** 0.5), (_MAX_IOU_ENTRIES / per_key) ** 0.5)))
    key_chunk = np.arange(len(keys)) // k
    key_layout = _key_layouts(keys // t_max, lo, k)
    dt_rles, gt_rles = dt_masks.rles, gt_masks.rles
    md, mg = ed_m[od], eg_m[og]
    d_objs = [{"size": key_layout[p], "counts": dt_rles[m]["counts"]} for p, m in zip(pos_d.tolist(), md.tolist())]
    g_objs = [{"size": key_layout[p], "counts": gt_rles[m]["counts"]} for p, m in zip(pos_g.tolist(), mg.tolist())]
    n_chunks = int(key_chunk[-1]) + 1
    bd = np.searchsorted(key_chunk[pos_d], np.arange(n_chunks + 1)).tolist()
    bg = np.searchsorted(key_chunk[pos_g], np.arange(n_chunks + 1)).tolist()
    flat, offset = _chunk_ious(d_objs, g_objs, bd, bg, n_chunks)
    # every (result mask, GT mask) pair sharing a key: a per-key cartesian product
    start_g = np.concatenate([[0], np.cumsum(ng_k)[:-1]])
    reps = ng_k[pos_d]
    rows = np.repeat(np.arange(len(od)), reps)
    pair0 = np.concatenate([[0], np.cumsum(reps)[:-1]])
    cols = np.repeat(start_g[pos_d] - pair0, reps) + np.arange(len(rows))
    ch = key_chunk[pos_d[rows]]
    width = np.diff(np.asarray(bg))
    vals = flat[offset[ch] + (rows - np.asarray(bd)[ch]) * width[ch] + (cols - np.asarray(bg)[ch])]
    vals = np.rint(np.maximum(vals, 0.0) * dt_masks.area[md[rows]])
    # scatter into the groups' blocks: d and g local indices within their group
    d_first = np.concatenate([[0], np.cumsum(n_d)[:-1]])
    g_first = np.concatenate([[0], np.cumsum(n_g)[:-1]])
    dtr, gtr = ed_track[od][rows], eg_track[og][cols]
    grp = e.d_grp[dtr]
    slot = e.block0[grp] + (dtr - d_first[grp]) * n_g[grp] + (gtr - g_first[grp])
    return np.bincount(slot, weights=vals, minlength=len(inter))


def _key_layouts(key_grp: np.ndarray, lo: np.ndarray, k: int) -> list[list[int]]:
    """Layout [h', w'] of each key: its rank in its chunk of k keys (keys of one chunk never share one)."""
    key_hw = lo[key_grp]
    layout_cache: dict[int, list[list[int]]] = {}
    key_layout = []
    for r, hw in zip((np.arange(len(key_grp)) % k).tolist(), key_hw.tolist()):
        lay = layout_cache.get(hw)
        if lay is None:
            lay = layout_cache[hw] = _layouts((hw >> 32) * (hw & 0xFFFFFFFF))
        key_layout.append(lay[r % len(lay)])
    return key_layout


def _chunk_ious(d_objs: list[dict], g_objs: list[dict], bd: list[int], bg: list[int],
                n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """One crowd-mode `pycocotools.mask.iou` call per chunk of keys: the flat values and each chunk's offset."""
    flat, offset = [], np.zeros(n_chunks, dtype=np.int64)
    total = 0
    for c in range(n_chunks):
        a, b, e, f = bd[c], bd[c + 1], bg[c], bg[c + 1]
        if a == b or e == f:
            continue
        o = mask_utils.iou(d_objs[a:b], g_objs[e:f], [1] * (f - e))  # crowd: |d∩g| / |d|
        flat.append(np.asarray(o).ravel())
        offset[c] = total
        total += (b - a) * (f - e)
    return np.concatenate(flat), offset


def _unions(e: _Entries, inter: np.ndarray, gt_masks: MaskStore, dt_masks: MaskStore) -> np.ndarray:
    """|d| and |g| summed over the frames zip() walks, minus the intersection, for every pair."""
    pair_grp = np.repeat(np.arange(len(e.n_d)), e.n_pairs)
    local = np.arange(len(inter)) - e.block0[pair_grp]
    d_first = np.concatenate([[0], np.cumsum(e.n_d)[:-1]])
    g_first = np.concatenate([[0], np.cumsum(e.n_g)[:-1]])
    pd_tr = d_first[pair_grp] + local // e.n_g[pair_grp]
    pg_tr = g_first[pair_grp] + local % e.n_g[pair_grp]
    n = np.minimum(e.d_len[pd_tr], e.g_len[pg_tr])
    sum_d = _area_before(e.ed_track, e.ed_t, dt_masks.area[e.ed_m], pd_tr, n)
    sum_g = _area_before(e.eg_track, e.eg_t, gt_masks.area[e.eg_m], pg_tr, n)
    return sum_d + sum_g - inter


def _area_before(e_track: np.ndarray, e_t: np.ndarray, e_area: np.ndarray, track: np.ndarray,
                 n: np.ndarray) -> np.ndarray:
    """Per query: total mask area of `track` over its frames < n.

    e_track, e_t, e_area: (E,) entries sorted by track then frame. track, n: (Q,) queries.
    """
    cum = np.concatenate([[0.0], np.cumsum(e_area)])  # exact: integer areas
    big = int(max(e_t.max(initial=0), n.max(initial=0))) + 1
    code = e_track * big + e_t
    end = np.searchsorted(code, track * big + n)      # first entry of track at frame >= n
    start = np.searchsorted(code, track * big)        # first entry of track
    return cum[end] - cum[start]


def _segm_inter_union(
    dts: list[Track], gts: list[Track], gt_masks: MaskStore, dt_masks: MaskStore
) -> tuple[np.ndarray, np.ndarray]:
    """(D, G) summed intersections and unions of one (video, category) whose masks differ in size.

    The rare general path (the common one is `_segm_ious`): one `pycocotools.mask.iou` call per
    frame. A frame where the two masks' RLE sizes differ adds nothing to I or U (official: the C
    merge returns an empty RLE); iou gives -1 or 0 for such pairs, so their intersection is 0.
    """
    D, G = len(dts), len(gts)
    T = max(max(t.length for t in dts), max(t.length for t in gts))
    idx_d, idx_g = _frame_index(dts, T), _frame_index(gts, T)
    pd, pg = idx_d >= 0, idx_g >= 0
    ad = np.where(pd, dt_masks.area[idx_d], 0.0)  # (D, T) per-frame mask areas, 0 where absent
    ag = np.where(pg, gt_masks.area[idx_g], 0.0)  # (G, T)
    inter = np.zeros((D, G))
    for t in np.flatnonzero(pd.any(0) & pg.any(0)).tolist():
        di, gi = np.flatnonzero(pd[:, t]), np.flatnonzero(pg[:, t])
        o = mask_utils.iou([dt_masks.rles[k] for k in idx_d[di, t].tolist()],
                           [gt_masks.rles[k] for k in idx_g[gi, t].tolist()], [1] * len(gi))
        inter[np.ix_(di, gi)] += np.rint(np.maximum(o, 0.0) * ad[di, t][:, None])
    n = np.minimum(np.array([t.length for t in dts])[:, None], np.array([t.length for t in gts])[None, :])
    walk = np.arange(T)[None, None, :] < n[:, :, None]  # (D, G, T) frames that zip() walks
    hd = np.where(pd, dt_masks.height[idx_d] * (1 << 32) + dt_masks.width[idx_d], -1)
    hg = np.where(pg, gt_masks.height[idx_g] * (1 << 32) + gt_masks.width[idx_g], -1)
    differ = pd[:, None, :] & pg[None, :, :] & (hd[:, None, :] != hg[None, :, :])
    counted = walk & ~differ
    union = (np.where(counted, ad[:, None, :] + ag[None, :, :], 0.0)).sum(axis=2) - inter
    return inter, union


def _bbox_inter_union(dts: list[Track], gts: list[Track]) -> tuple[np.ndarray, np.ndarray]:
    """(D, G) summed box intersections and unions over the zipped frames (sipvis extension)."""
    T = max(max(t.length for t in dts), max(t.length for t in gts))

    def stack(tracks: list[Track]) -> np.ndarray:
        out = np.full((len(tracks), T, 4), np.nan)
        for i, tr in enumerate(tracks):
            out[i, : len(tr.boxes)] = tr.boxes
        return out

    bd, bg = stack(dts), stack(gts)  # (D, T, 4), (G, T, 4) x, y, w, h
    pd, pg = ~np.isnan(bd[..., 0]), ~np.isnan(bg[..., 0])
    n = np.minimum(np.array([t.length for t in dts])[:, None], np.array([t.length for t in gts])[None, :])
    walk = np.arange(T)[None, None, :] < n[:, :, None]  # (D, G, T)
    bd0, bg0 = np.nan_to_num(bd), np.nan_to_num(bg)
    ad = bd0[..., 2] * bd0[..., 3]
    ag = bg0[..., 2] * bg0[..., 3]
    x1 = np.maximum(bd0[:, None, :, 0], bg0[None, :, :, 0])
    y1 = np.maximum(bd0[:, None, :, 1], bg0[None, :, :, 1])
    x2 = np.minimum(bd0[:, None, :, 0] + bd0[:, None, :, 2], bg0[None, :, :, 0] + bg0[None, :, :, 2])
    y2 = np.minimum(bd0[:, None, :, 1] + bd0[:, None, :, 3], bg0[None, :, :, 1] + bg0[None, :, :, 3])
    both = pd[:, None, :] & pg[None, :, :] & walk
    inter_t = np.where(both, np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None), 0.0)
    union_t = (np.where(pd[:, None, :] & walk, ad[:, None, :], 0.0)
               + np.where(pg[None, :, :] & walk, ag[None, :, :], 0.0) - inter_t)
    return inter_t.sum(axis=2), union_t.sum(axis=2)


# ----------------------------------------------------------------------------------------- matching


def _match(ious: np.ndarray, dts: list[Track], gts: list[Track]) -> _EvalVid:
    """Greedy matching of one (video, category) for every area range and IoU threshold at once.

    `ious` is (D, G) with rows in score order (already cut at 100) and GT columns in file order.
    Per (area, threshold) it reproduces the official loop: GT ordered non-ignored first (stable);
    a detection takes the available GT with the highest IoU >= min(t, 1-1e-10), the last one on
    ties, preferring any non-ignored GT over ignored ones; crowd GT stay available.
    """
    A, T, D, G = len(AREA_RNG), len(IOU_THRS), len(dts), len(gts)
    lo, hi = AREA_RNG[:, 0], AREA_RNG[:, 1]
    scores = np.array([d.score for d in dts], dtype=np.float64)
    g_area = np.array([g.avg_area for g in gts], dtype=np.float64)
    crowd = np.array([bool(g.iscrowd) for g in gts], dtype=bool)
    g_ig = crowd[None, :] | (g_area[None, :] < lo[:, None]) | (g_area[None, :] > hi[:, None])  # (A, G)
    d_area = np.array([d.avg_area for d in dts], dtype=np.float64)
    d_out = (d_area[None, :] < lo[:, None]) | (d_area[None, :] > hi[:, None])  # (A, D)
    npig = (~g_ig).sum(axis=1)

    matched_nz = np.zeros((A, T, D), dtype=bool)  # matched to a GT whose id is not 0
    dt_ig = np.zeros((A, T, D), dtype=bool)
    if D and G:
        order = np.argsort(g_ig, axis=1, kind="mergesort")  # (A, G) non-ignored first, stable
        ar = np.arange(A)[:, None]
        ig_o = g_ig[ar, order]                               # (A, G)
        crowd_o = crowd[order]
        gid_nz_o = np.array([g.ann_id != 0 for g in gts])[order]
        ious_o = ious[:, order]                              # (D, A, G) columns in per-area order
        thr = np.minimum(IOU_THRS, 1 - 1e-10)[None, :, None]  # (1, T, 1)
        taken = np.zeros((A, T, G), dtype=bool)
        rev = np.arange(G - 1, -1, -1)
        ai, ti = np.meshgrid(np.arange(A), np.arange(T), indexing="ij")
        for d in range(D):
            iou = ious_o[d][:, None, :]                                    # (A, 1, G)
            ok = (~taken | crowd_o[:, None, :]) & (iou >= thr)             # (A, T, G)
            reg = ok & ~ig_o[:, None, :]
            cand = np.where(reg.any(axis=2, keepdims=True), reg, ok & ig_o[:, None, :])
            has = cand.any(axis=2)                                         # (A, T)
            if not has.any():
                continue
            best = np.where(cand, iou, -np.inf).max(axis=2, keepdims=True)
            hit = cand & (iou == best)
            m = G - 1 - np.argmax(hit[:, :, rev], axis=2)                  # last GT with the best IoU
            a_h, t_h, m_h = ai[has], ti[has], m[has]
            taken[a_h, t_h, m_h] = True
            dt_ig[a_h, t_h, d] = ig_o[a_h, m_h]
            matched_nz[a_h, t_h, d] = gid_nz_o[a_h, m_h]
    # unmatched (or matched to GT id 0, official quirk) detections outside the area range are ignored
    dt_ig |= ~matched_nz & d_out[:, None, :]
    return _EvalVid(scores=scores, dtm=matched_nz, dtig=dt_ig, npig=npig)


# ----------------------------------------------------------------------------------- accumulation


def _accumulate(
    evals: dict[tuple[int, int], _EvalVid], video_ids: list[int], cat_ids: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Official precision (T,R,K,A,M), recall (T,K,A,M) and scores (T,R,K,A,M); -1 where undefined."""
    T, R, K, A, M = len(IOU_THRS), len(REC_THRS), len(cat_ids), len(AREA_RNG), len(MAX_DETS)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    scores = -np.ones((T, R, K, A, M))
    by_cat: dict[int, list[_EvalVid]] = defaultdict(list)
    for vid in video_ids:  # videos in ascending id order: ties across videos keep this order
        for cat in cat_ids:
            e = evals.get((vid, cat))
            if e is not None:
                by_cat[cat].append(e)
    for k, cat in enumerate(cat_ids):
        E = by_cat.get(cat)
        if not E:
            continue
        sc_all = np.concatenate([e.scores for e in E])
        rank = np.concatenate([np.arange(len(e.scores)) for e in E])
        dtm_all = np.concatenate([e.dtm for e in E], axis=2)    # (A, T, N)
        dtig_all = np.concatenate([e.dtig for e in E], axis=2)
        npig = np.sum([e.npig for e in E], axis=0)              # (A,)
        for m, max_det in enumerate(MAX_DETS):
            sel = rank < max_det
            sc = sc_all[sel]
            order = np.argsort(-sc, kind="mergesort")
            sc_sorted = sc[order]
            dtm = dtm_all[:, :, sel][:, :, order]
            dtig = dtig_all[:, :, sel][:, :, order]
            tp_sum = np.cumsum(dtm & ~dtig, axis=2).astype(np.float64)
            fp_sum = np.cumsum(~dtm & ~dtig, axis=2).astype(np.float64)
            nd = len(sc)
            for a in range(A):
                if npig[a] == 0:
                    continue
                rc = tp_sum[a] / npig[a]                             # (T, nd)
                pr = tp_sum[a] / (fp_sum[a] + tp_sum[a] + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1] if nd else 0
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # non-increasing from the right
                for t in range(T):
                    inds = np.searchsorted(rc[t], REC_THRS, side="left")
                    valid = inds < nd
                    q = np.zeros(R)
                    ss = np.zeros(R)
                    q[valid] = pr[t, inds[valid]]
                    ss[valid] = sc_sorted[inds[valid]]
                    precision[t, :, k, a, m] = q
                    scores[t, :, k, a, m] = ss
    return precision, recall, scores


def _mean_valid(s: np.ndarray) -> float:
    v = s[s > -1]
    return -1.0 if v.size == 0 else float(np.mean(v))


def _summarize(precision: np.ndarray, recall: np.ndarray) -> list[float]:
    """The 12 official figures, each the mean of the defined (> -1) entries of its slice."""
    t50 = np.where(IOU_THRS == 0.5)[0]
    t75 = np.where(IOU_THRS == 0.75)[0]

    def ap(t=None, a=0, m=2):
        s = precision if t is None else precision[t]
        return _mean_valid(s[:, :, :, a, m])

    def ar(a=0, m=2):
        return _mean_valid(recall[:, :, a, m])

    return [
        ap(), ap(t50), ap(t75), ap(a=1), ap(a=2), ap(a=3),
        ar(m=0), ar(m=1), ar(m=2), ar(a=1), ar(a=2), ar(a=3),
    ]
