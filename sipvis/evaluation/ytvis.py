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
from sipvis.evaluation.schema import (
    GroundTruth,
    Issue,
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
        warnings: problems that did not stop evaluation (one line each).
        iou_type: "segm" or "bbox".
    """

    stats: list[float]
    per_class: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    category_ids: list[int]
    ious: dict[tuple[int, int], np.ndarray]
    warnings: list[str] = field(default_factory=list)
    iou_type: str = "segm"

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
        progress: called as progress(done, total) after each video.

    Raises:
        SipvisError: unreadable files, schema errors, unknown or 0-based video ids, ...
    """
    if iou_type not in ("segm", "bbox"):
        raise SipvisError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
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
    warnings = [w.message for w in gtp.warnings] + [w.message for w in res.warnings]
    return _evaluate_parsed(gtp, res.tracks, res.masks, iou_type, warnings, progress)


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
    warnings: list[str],
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

    cats_by_video: dict[int, set[int]] = defaultdict(set)
    for v, c in list(gts_by) + list(dts_by):
        cats_by_video[v].add(c)

    ious: dict[tuple[int, int], np.ndarray] = {}
    evals: dict[tuple[int, int], _EvalVid] = {}
    empty_union: list[tuple[int, int]] = []
    n_videos = len(gt.video_ids)
    for n, vid in enumerate(gt.video_ids):
        cats = sorted(cats_by_video.get(vid, ()))
        if cats:
            blocks = _video_ious(
                [(c, dts_by.get((vid, c), []), gts_by.get((vid, c), [])) for c in cats],
                gt.masks, dt_masks, iou_type,
            )
            for c, (iou, union_zero) in zip(cats, blocks):
                ious[vid, c] = iou
                if union_zero:
                    empty_union.append((vid, c))
                evals[vid, c] = _match(iou, dts_by.get((vid, c), []), gts_by.get((vid, c), []))
        if progress is not None:
            progress(n + 1, n_videos)
    for vid, c in empty_union:
        warnings.append(f"Mask sizes in video {vid} and category {c} may not match! "
                        "(a result/GT pair has an empty union: its IoU is 0)")

    precision, recall, scores = _accumulate(evals, gt.video_ids, gt.cat_ids)
    stats = _summarize(precision, recall)
    per_class = {}
    names = _unique_names(gt)
    for k, cat in enumerate(gt.cat_ids):
        per_class[names[cat]] = _mean_valid(precision[:, :, k, 0, 2])
    return EvalResult(
        stats=stats, per_class=per_class, precision=precision, recall=recall, scores=scores,
        category_ids=list(gt.cat_ids), ious=ious, warnings=warnings, iou_type=iou_type,
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


def _video_ious(
    groups: list[tuple[int, list[Track], list[Track]]],
    gt_masks: MaskStore,
    dt_masks: MaskStore,
    iou_type: str,
) -> list[tuple[np.ndarray, bool]]:
    """Track IoUs of one video for each (category, results, GTs) group.

    Returns per group the (D, G) IoU matrix and whether some pair had an empty union.
    """
    dts = [d for _, ds, gs in groups for d in ds]
    gts = [g for _, ds, gs in groups for g in gs]
    if dts and gts:
        # only categories with both sides need intersections; the others are all-zero blocks
        if iou_type == "segm":
            inter, union = _segm_inter_union(groups, gt_masks, dt_masks)
        else:
            inter, union = _bbox_inter_union(dts, gts)
    else:
        inter = union = np.zeros((len(dts), len(gts)))
    out = []
    d0 = g0 = 0
    for _, ds, gs in groups:
        I = inter[d0:d0 + len(ds), g0:g0 + len(gs)]
        U = union[d0:d0 + len(ds), g0:g0 + len(gs)]
        iou = np.zeros((len(ds), len(gs)))
        np.divide(I, U, out=iou, where=U > 0)
        out.append((iou, bool(len(ds) and len(gs) and (U <= 0).any())))
        d0, g0 = d0 + len(ds), g0 + len(gs)
    return out


def _segm_inter_union(
    groups: list[tuple[int, list[Track], list[Track]]],
    gt_masks: MaskStore,
    dt_masks: MaskStore,
) -> tuple[np.ndarray, np.ndarray]:
    """(D, G) summed intersections and unions (float64 holding exact integers) of one video.

    Pairs of different categories are left at arbitrary values (the caller only reads the
    per-category diagonal blocks).
    """
    dts = [d for _, ds, gs in groups for d in ds]
    gts = [g for _, ds, gs in groups for g in gs]
    D, G = len(dts), len(gts)
    T = max(max(t.length for t in dts), max(t.length for t in gts))
    # group id per track: cross-group pairs are never read, and only groups with both sides matter
    gd = np.repeat(np.arange(len(groups)), [len(ds) for _, ds, _ in groups])
    gg = np.repeat(np.arange(len(groups)), [len(gs) for _, _, gs in groups])
    both = np.array([bool(ds) and bool(gs) for _, ds, gs in groups])
    idx_d, idx_g = _frame_index(dts, T), _frame_index(gts, T)
    pd, pg = idx_d >= 0, idx_g >= 0
    ad = np.where(pd, dt_masks.area[idx_d], 0.0)  # (D, T) per-frame mask areas, 0 where absent
    ag = np.where(pg, gt_masks.area[idx_g], 0.0)  # (G, T)
    len_d = np.array([t.length for t in dts])
    len_g = np.array([t.length for t in gts])

    # intersections: one pycocotools call per frame for all (result, GT) pairs present in it
    inter = np.zeros((D, G))
    use_d, use_g = pd & both[gd][:, None], pg & both[gg][:, None]
    frames = np.flatnonzero(use_d.any(0) & use_g.any(0))
    dt_rles, gt_rles = dt_masks.rles, gt_masks.rles
    for t in frames.tolist():
        di = np.flatnonzero(use_d[:, t])
        gi = np.flatnonzero(use_g[:, t])
        # crowd mode: iou = |d∩g| / |d| (or -1 when the sizes differ, handled below)
        o = mask_utils.iou([dt_rles[k] for k in idx_d[di, t].tolist()],
                           [gt_rles[k] for k in idx_g[gi, t].tolist()],
                           [1] * len(gi))
        inter[np.ix_(di, gi)] += np.rint(np.maximum(o, 0.0) * ad[di, t][:, None])

    # unions: sum over the zipped frames of |d| + |g| - |d∩g|, with absent frames counting 0 area
    n = np.minimum(len_d[:, None], len_g[None, :])  # (D, G) frames that zip() walks
    cum_d = np.concatenate([np.zeros((D, 1)), np.cumsum(ad, axis=1)], axis=1)  # (D, T+1)
    cum_g = np.concatenate([np.zeros((G, 1)), np.cumsum(ag, axis=1)], axis=1)
    sum_d = cum_d[np.arange(D)[:, None], n]  # (D, G): area of d over the frames zipped with g
    sum_g = cum_g[np.arange(G)[None, :], n]
    union = sum_d + sum_g - inter

    # frames whose two RLE sizes differ add nothing to I or U (C merge returns an empty RLE)
    hd = np.where(pd, dt_masks.height[idx_d] * 100003 + dt_masks.width[idx_d], -1)
    hg = np.where(pg, gt_masks.height[idx_g] * 100003 + gt_masks.width[idx_g], -1)
    sizes = np.unique(np.concatenate([hd[pd], hg[pg]]))
    if len(sizes) > 1:
        walk = np.arange(T)[None, None, :] < n[:, :, None]  # (D, G, T)
        diff = pd[:, None, :] & pg[None, :, :] & (hd[:, None, :] != hg[None, :, :]) & walk
        # their intersections are already 0: pycocotools iou gives -1 (or 0) for such pairs
        union -= (diff * (ad[:, None, :] + ag[None, :, :])).sum(axis=2)
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
