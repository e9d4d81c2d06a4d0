"""Identity metrics equal to the official TrackEval: HOTA, CLEAR MOT (MOTA/MOTSA), Identity (IDF1) and Count.

The input of every metric is one sequence of one class after preprocessing (`SequenceClass`):
per frame the GT and tracker ids present (relabelled 0..G-1 / 0..K-1) and their (G_t, K_t) mask
IoU matrix. Rows and columns keep the input order (file order, line order) because the two
tie-sensitive oracle cases depend on how `scipy.optimize.linear_sum_assignment` breaks ties on
exactly that layout. The rules (one HOTA matching for all 19 alphas, the CLEAR continuity bonus
and frame skipping, the empty-sequence early returns, how sequences and classes combine) are those
of ``../shared/reference/trackeval/README.md``, checked field by field by tests/test_tracking_metrics.py.

    res = evaluate_tracking({"seq": {"car": SequenceClass.from_frames(...)}}, ["car"])
    res["combined"]["car"]["HOTA"]["mean_over_alphas"]["HOTA"]

File readers live in `sipvis.evaluation.mots` (KITTI-MOTS, MOTSChallenge) and
`sipvis.evaluation.tracking_ytvis` (YouTube-VIS JSON); `evaluate_tracking_files` dispatches to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from sipvis.errors import SipvisError

METRICS = ("hota", "clear", "identity")
FORMATS = ("youtube-vis", "kitti-mots", "mots-challenge")
ALPHAS = np.arange(0.05, 0.99, 0.05)  # TrackEval's 19 thresholds, nine of them a hair above k/20
EPS = np.finfo(float).eps
THRESHOLD = 0.5  # CLEAR and Identity match at IoU >= 0.5

HOTA_INT = ("HOTA_TP", "HOTA_FN", "HOTA_FP")
HOTA_FLOAT = ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA", "OWTA")
HOTA_SCALARS = ("HOTA(0)", "LocA(0)", "HOTALocA(0)")
CLEAR_INT = ("CLR_TP", "CLR_FN", "CLR_FP", "IDSW", "MT", "PT", "ML", "Frag", "CLR_Frames")
CLEAR_FLOAT = ("MOTA", "MOTP", "MODA", "CLR_Re", "CLR_Pr", "MTR", "PTR", "MLR", "sMOTA", "CLR_F1",
               "FP_per_frame", "MOTAL", "MOTP_sum")
ID_INT = ("IDTP", "IDFN", "IDFP")
ID_FLOAT = ("IDF1", "IDR", "IDP")
COUNT_INT = ("Dets", "GT_Dets", "IDs", "GT_IDs")


@dataclass
class SequenceClass:
    """One sequence of one class, ready for the metrics.

    Attributes:
        num_frames: sequence length (empty frames included).
        gt_ids, tk_ids: per frame, (G_t,) / (K_t,) int64 ids relabelled to 0..G-1 / 0..K-1.
        sims: per frame, (G_t, K_t) float64 mask IoU; rows and columns in input order.
        num_gt_ids, num_tk_ids: G and K.
        num_gt_dets, num_tk_dets: masks on each side (derived); both: frames with masks on both sides.
    """

    num_frames: int
    gt_ids: list[np.ndarray]
    tk_ids: list[np.ndarray]
    sims: list[np.ndarray]
    num_gt_ids: int
    num_tk_ids: int
    num_gt_dets: int = field(init=False)
    num_tk_dets: int = field(init=False)
    both: list[int] = field(init=False)

    @classmethod
    def from_frames(cls, gt_ids: Sequence[np.ndarray], tk_ids: Sequence[np.ndarray],
                    sims: Sequence[np.ndarray], num_frames: int | None = None) -> "SequenceClass":
        """Relabel raw per-frame ids (any ints) to 0..G-1 / 0..K-1 in ascending order of the raw id.
        `num_frames` defaults to the number of frames given."""
        g, num_g = _relabel(gt_ids)
        k, num_k = _relabel(tk_ids)
        return cls(len(sims) if num_frames is None else num_frames, g, k,
                   [np.asarray(s, np.float64) for s in sims], num_g, num_k)

    @classmethod
    def empty(cls, num_frames: int) -> "SequenceClass":
        """A sequence without any mask of the class (its frames need no lists: every metric returns early)."""
        return cls(num_frames, [], [], [], 0, 0)

    def __post_init__(self) -> None:
        self.num_gt_dets = sum(len(g) for g in self.gt_ids)
        self.num_tk_dets = sum(len(k) for k in self.tk_ids)
        # frames with masks on both sides: the only ones that need a matching
        self.both = [t for t, s in enumerate(self.sims) if s.size]
        self._pairs: _Pairs | None = None

    @property
    def pairs(self) -> "_Pairs":
        """The flattened pairs of the frames in `both` (built once)."""
        if self._pairs is None:
            self._pairs = _Pairs.of(self)
        return self._pairs


@dataclass
class _Pairs:
    """Every (GT mask, tracker mask) pair of the frames with masks on both sides, flattened row-major
    frame after frame (frame p of `SequenceClass.both`), so the metrics can work on all frames at once.

    Attributes:
        s, g, k: (P,) IoU, GT id and tracker id of each pair.
        frame: (P,) position p of the pair's frame; offset: (F+1,) where each frame's pairs start.
        row, col: (P,) row / column of the pair counted over all frames (indices into rowsum / colsum).
        row_start: (R,) first pair of each row; shape: (F, 2) G_t, K_t per frame.
    """

    s: np.ndarray
    g: np.ndarray
    k: np.ndarray
    frame: np.ndarray
    offset: np.ndarray
    row: np.ndarray
    col: np.ndarray
    row_start: np.ndarray
    shape: np.ndarray

    @classmethod
    def of(cls, d: "SequenceClass") -> "_Pairs":
        shape = np.array([d.sims[t].shape for t in d.both], np.int64).reshape(-1, 2)
        sizes = shape[:, 0] * shape[:, 1]
        offset = _starts(sizes)
        frame = np.repeat(np.arange(len(d.both)), sizes)
        local = np.arange(offset[-1]) - offset[frame]
        n_cols = shape[frame, 1]
        g_off = _starts(shape[:, 0])
        k_off = _starts(shape[:, 1])
        row = g_off[frame] + local // np.maximum(1, n_cols)
        col = k_off[frame] + local % np.maximum(1, n_cols)
        rows_frame = np.repeat(np.arange(len(d.both)), shape[:, 0])
        row_start = offset[rows_frame] + (np.arange(g_off[-1]) - g_off[rows_frame]) * shape[rows_frame, 1]
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
        g = cat([d.gt_ids[t] for t in d.both])[row]
        k = cat([d.tk_ids[t] for t in d.both])[col]
        sims = np.concatenate([d.sims[t].ravel() for t in d.both]) if d.both else np.zeros(0)
        return cls(sims, g, k, frame, offset, row, col, row_start, shape)

    def simple(self, positive: np.ndarray) -> np.ndarray:
        """(F,) bool: frames whose `positive` pairs share no row and no column. There, every optimal
        assignment takes exactly those pairs (and zero pairs), whatever the solver's tie-breaking."""
        rows = np.bincount(self.row[positive], minlength=len(self.row_start))
        cols = np.bincount(self.col[positive], minlength=int(self.col.max(initial=-1)) + 1)
        clash = positive & ((rows[self.row] > 1) | (cols[self.col] > 1))
        return np.bincount(self.frame[clash], minlength=len(self.shape)) == 0

    def block(self, p: int, values: np.ndarray) -> np.ndarray:
        """(G_t, K_t) view of `values` (one per pair) for frame p."""
        return values[self.offset[p]:self.offset[p + 1]].reshape(self.shape[p])


def _starts(sizes: np.ndarray) -> np.ndarray:
    """(n + 1,) running offsets 0, sizes[0], sizes[0] + sizes[1], ..."""
    out = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=out[1:])
    return out


def _relabel(ids: Sequence[np.ndarray]) -> tuple[list[np.ndarray], int]:
    arrays = [np.asarray(i, np.int64) for i in ids]
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    uniq = np.unique(flat)
    inverse = np.searchsorted(uniq, flat).astype(np.int64)
    return split_at(inverse, np.cumsum([0] + [len(a) for a in arrays]).tolist()), len(uniq)


def split_at(values: np.ndarray, bounds: list[int]) -> list[np.ndarray]:
    """[values[bounds[i]:bounds[i + 1]]...] (np.split, without its per-piece overhead)."""
    return [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


# ---------------------------------------------------------------------------------------- HOTA


def hota_sequence(d: SequenceClass) -> dict:
    """HOTA of one sequence and class: integer arrays (19,) and float arrays (19,), TrackEval fields."""
    n = len(ALPHAS)
    res = {f: np.zeros(n, np.int64) for f in HOTA_INT}
    res.update({f: np.zeros(n) for f in ("AssA", "AssRe", "AssPr")})
    n_gt, n_tk = d.num_gt_dets, d.num_tk_dets
    if n_tk == 0 or n_gt == 0:  # early return: LocA is 1, everything else 0
        res["HOTA_FN" if n_tk == 0 else "HOTA_FP"][:] = n_gt if n_tk == 0 else n_tk
        res["LocA"] = np.ones(n)
        out = _hota_final(res)
        out.update({f: np.zeros(n) for f in ("DetRe", "DetPr", "DetA", "HOTA", "OWTA")})
        out.update({"HOTA(0)": 0.0, "LocA(0)": 1.0, "HOTALocA(0)": 0.0})
        return out
    G, K = d.num_gt_ids, d.num_tk_ids
    gt_count = np.bincount(np.concatenate(d.gt_ids), minlength=G).astype(np.float64)[:, None]
    tk_count = np.bincount(np.concatenate(d.tk_ids), minlength=K).astype(np.float64)[None, :]
    pr = d.pairs
    # per-frame normalised similarity S / (column sum + row sum - S), summed per id pair: TrackEval's
    # operation order (rows summed like ndarray.sum(1), columns and frames accumulated in order)
    rowsum = np.add.reduceat(pr.s, pr.row_start) if len(pr.row_start) else np.zeros(0)
    colsum = np.bincount(pr.col, weights=pr.s, minlength=int(pr.col.max(initial=-1)) + 1)
    denom = colsum[pr.col] + rowsum[pr.row] - pr.s
    norm = np.divide(pr.s, denom, out=np.zeros_like(pr.s), where=denom > EPS)
    potential = np.bincount(pr.g * K + pr.k, weights=norm, minlength=G * K).reshape(G, K)
    alignment = potential / (gt_count + tk_count - potential)

    # one matching per frame for all alphas (solved only where positive scores compete), thresholded per alpha
    score = alignment[pr.g, pr.k] * pr.s
    positive = score > 0
    simple = pr.simple(positive)
    chosen = [np.nonzero(positive & simple[pr.frame])[0]]
    for p in np.nonzero(~simple)[0]:
        rows, cols = linear_sum_assignment(-pr.block(p, score))
        chosen.append(pr.offset[p] + rows * pr.shape[p, 1] + cols)
    pick = np.concatenate(chosen)
    pg, pk, ps = pr.g[pick], pr.k[pick], pr.s[pick]
    hit = ps[None, :] >= ALPHAS[:, None] - EPS  # (19, P)
    tp = hit.sum(1)
    res["HOTA_TP"] = tp.astype(np.int64)
    res["HOTA_FN"] = (n_gt - tp).astype(np.int64)
    res["HOTA_FP"] = (n_tk - tp).astype(np.int64)
    loc = (hit * ps[None, :]).sum(1)
    a_idx, p_idx = np.nonzero(hit)
    matches = np.bincount(a_idx * G * K + pg[p_idx] * K + pk[p_idx], minlength=n * G * K)
    matches = matches.reshape(n, G, K).astype(np.float64)
    weight = np.maximum(1, tp)
    res["AssA"] = (matches * matches / np.maximum(1, gt_count + tk_count - matches)).sum((1, 2)) / weight
    res["AssRe"] = (matches * matches / np.maximum(1, gt_count)).sum((1, 2)) / weight
    res["AssPr"] = (matches * matches / np.maximum(1, tk_count)).sum((1, 2)) / weight
    res["LocA"] = np.maximum(1e-10, loc) / np.maximum(1e-10, tp)
    return _hota_final(res)


def _hota_final(res: dict) -> dict:
    tp, fn, fp = res["HOTA_TP"], res["HOTA_FN"], res["HOTA_FP"]
    res["DetRe"] = tp / np.maximum(1, tp + fn)
    res["DetPr"] = tp / np.maximum(1, tp + fp)
    res["DetA"] = tp / np.maximum(1, tp + fn + fp)
    res["HOTA"] = np.sqrt(res["DetA"] * res["AssA"])
    res["OWTA"] = np.sqrt(res["DetRe"] * res["AssA"])
    res["HOTA(0)"] = float(res["HOTA"][0])
    res["LocA(0)"] = float(res["LocA"][0])
    res["HOTALocA(0)"] = res["HOTA(0)"] * res["LocA(0)"]
    return res


def _hota_combine(parts: list[dict]) -> dict:
    """Sums and TP-weighted means (over sequences, or over classes detection-averaged)."""
    n = len(ALPHAS)

    def stack(f: str) -> np.ndarray:  # (len(parts), 19)
        return np.array([p[f] for p in parts]).reshape(-1, n)

    res = {f: stack(f).astype(np.int64).sum(0) for f in HOTA_INT}
    tp = stack("HOTA_TP")
    weight = np.maximum(1, res["HOTA_TP"])
    for f in ("AssRe", "AssPr", "AssA"):
        res[f] = (stack(f) * tp).sum(0) / weight
    loc = (stack("LocA") * tp).sum(0)
    res["LocA"] = np.maximum(1e-10, loc) / np.maximum(1e-10, res["HOTA_TP"])
    return _hota_final(res)


# --------------------------------------------------------------------------------------- CLEAR


def clear_sequence(d: SequenceClass) -> dict:
    """CLEAR MOT of one sequence and class (on masks: MOTSA, MOTSP, sMOTSA), TrackEval fields."""
    res: dict = {f: 0 for f in CLEAR_INT}
    res.update({f: 0.0 for f in CLEAR_FLOAT})
    n_gt, n_tk = d.num_gt_dets, d.num_tk_dets
    if n_tk == 0:  # early returns: every other field stays 0, CLR_Frames included
        res.update(CLR_FN=n_gt, ML=d.num_gt_ids, MLR=1.0)
        return res
    if n_gt == 0:
        res.update(CLR_FP=n_tk, MLR=1.0)
        return res
    G = d.num_gt_ids
    # frames without GT or without tracker masks only add FP / FN: they leave the memory untouched
    seen = np.bincount(np.concatenate(d.gt_ids), minlength=G)
    hits, frags, last = [0] * G, [0] * G, [-1] * G  # last: tracker last matched, any number of frames back
    prev: dict[int, int] = {}  # GT id -> tracker matched in the last processed frame
    pr = d.pairs
    candidate = pr.s >= THRESHOLD - EPS
    simple = pr.simple(candidate)
    idx = np.nonzero(candidate)[0]
    bounds = np.searchsorted(pr.frame[idx], np.arange(len(pr.shape) + 1))
    cg, ck, cs = pr.g[idx].tolist(), pr.k[idx].tolist(), pr.s[idx].tolist()
    allowed = np.where(candidate, pr.s, 0.0)  # IoU below 0.5 can never match
    tp = idsw = 0
    motp = 0.0
    for p in range(len(pr.shape)):
        if simple[p]:  # the candidates are the matches, continuity bonus or not
            mg, mk, ms = cg[bounds[p]:bounds[p + 1]], ck[bounds[p]:bounds[p + 1]], cs[bounds[p]:bounds[p + 1]]
        else:
            mg, mk, ms = _clear_match(d, p, pr.block(p, allowed), prev)
        now: dict[int, int] = {}
        for gi, ki in zip(mg, mk):
            if last[gi] >= 0 and last[gi] != ki:
                idsw += 1
            hits[gi] += 1
            frags[gi] += gi not in prev
            last[gi] = ki
            now[gi] = ki
        prev = now
        tp += len(mg)
        motp += sum(ms)
    hits, frags = np.array(hits, np.int64), np.array(frags, np.int64)
    fn, fp = n_gt - tp, n_tk - tp
    ratio = hits / np.maximum(1, seen)
    mt = int(np.count_nonzero(ratio > 0.8))
    pt = int(np.count_nonzero(ratio >= 0.2)) - mt
    res.update(CLR_TP=tp, CLR_FN=fn, CLR_FP=fp, IDSW=idsw, MT=mt, PT=pt, ML=G - mt - pt,
               Frag=int(np.maximum(0, frags - 1).sum()), CLR_Frames=d.num_frames, MOTP_sum=motp)
    return _clear_final(res)


def _clear_match(d: SequenceClass, p: int, allowed: np.ndarray, prev: dict[int, int]) -> tuple[list, list, list]:
    """CLEAR matches of frame p of `d.both` where candidates compete: the maximal assignment of
    `allowed` (IoU, 0 below 0.5) plus 1000 for last frame's pairs that are still allowed."""
    t = d.both[p]
    g, k, s = d.gt_ids[t], d.tk_ids[t], d.sims[t]
    col = {ki: c for c, ki in enumerate(k.tolist())}
    score = allowed.copy()
    for r, gi in enumerate(g.tolist()):
        c = col.get(prev.get(gi, -1))
        if c is not None and score[r, c] > 0:
            score[r, c] = 1000.0 + s[r, c]  # TrackEval: 1000 * True + S
    rows, cols = linear_sum_assignment(-score)
    ok = score[rows, cols] > EPS
    rows, cols = rows[ok], cols[ok]
    return g[rows].tolist(), k[cols].tolist(), s[rows, cols].tolist()


def _clear_final(res: dict) -> dict:
    tp, fn, fp, idsw = res["CLR_TP"], res["CLR_FN"], res["CLR_FP"], res["IDSW"]
    ids = max(1, res["MT"] + res["PT"] + res["ML"])
    gt = max(1, tp + fn)
    res.update(
        MTR=res["MT"] / ids, PTR=res["PT"] / ids, MLR=res["ML"] / ids,
        CLR_Re=tp / gt, CLR_Pr=tp / max(1, tp + fp), MODA=(tp - fp) / gt, MOTA=(tp - fp - idsw) / gt,
        MOTP=res["MOTP_sum"] / max(1, tp), sMOTA=(res["MOTP_sum"] - fp - idsw) / gt,
        CLR_F1=tp / max(1.0, tp + 0.5 * fn + 0.5 * fp), FP_per_frame=fp / max(1, res["CLR_Frames"]),
        MOTAL=(tp - fp - (float(np.log10(idsw)) if idsw > 0 else 0)) / gt,
    )
    return res


def _clear_combine(parts: list[dict]) -> dict:
    res = {f: sum(p[f] for p in parts) for f in CLEAR_INT}
    res["MOTP_sum"] = sum(p["MOTP_sum"] for p in parts)
    return _clear_final(res)


# ------------------------------------------------------------------------------------ Identity


def identity_sequence(d: SequenceClass) -> dict:
    """IDF1/IDR/IDP of one sequence and class: the id pairing that minimises unmatched masks."""
    res: dict = {f: 0 for f in ID_INT}
    res.update({f: 0.0 for f in ID_FLOAT})
    n_gt, n_tk = d.num_gt_dets, d.num_tk_dets
    if n_tk == 0 or n_gt == 0:
        res["IDFN"], res["IDFP"] = (n_gt, 0) if n_tk == 0 else (0, n_tk)
        return res
    G, K = d.num_gt_ids, d.num_tk_ids
    gt_all = np.concatenate(d.gt_ids)
    tk_all = np.concatenate(d.tk_ids)
    gt_count = np.bincount(gt_all, minlength=G).astype(np.float64)
    tk_count = np.bincount(tk_all, minlength=K).astype(np.float64)
    pr = d.pairs
    hit = pr.s >= THRESHOLD  # no eps here (TrackEval)
    both = np.bincount(pr.g[hit] * K + pr.k[hit], minlength=G * K).reshape(G, K).astype(np.float64)
    # TrackEval's (G+K) x (G+K) layout: dummy columns/rows leave an id unpaired at its full count
    fn_mat = np.zeros((G + K, G + K))
    fp_mat = np.zeros((G + K, G + K))
    fp_mat[G:, :K] = 1e10
    fn_mat[:G, K:] = 1e10
    fn_mat[:G, :K] = gt_count[:, None] - both
    fn_mat[np.arange(G), K + np.arange(G)] = gt_count
    fp_mat[:G, :K] = tk_count[None, :] - both
    fp_mat[G + np.arange(K), np.arange(K)] = tk_count
    rows, cols = linear_sum_assignment(fn_mat + fp_mat)
    res["IDFN"] = int(fn_mat[rows, cols].sum())
    res["IDFP"] = int(fp_mat[rows, cols].sum())
    res["IDTP"] = int(gt_count.sum()) - res["IDFN"]
    return _identity_final(res)


def _identity_final(res: dict) -> dict:
    tp, fn, fp = res["IDTP"], res["IDFN"], res["IDFP"]
    res.update(IDR=tp / max(1, tp + fn), IDP=tp / max(1, tp + fp), IDF1=tp / max(1.0, tp + 0.5 * fp + 0.5 * fn))
    return res


def _identity_combine(parts: list[dict]) -> dict:
    return _identity_final({f: sum(p[f] for p in parts) for f in ID_INT})


def count_sequence(d: SequenceClass) -> dict:
    return {"Dets": d.num_tk_dets, "GT_Dets": d.num_gt_dets, "IDs": d.num_tk_ids, "GT_IDs": d.num_gt_ids}


def _count_combine(parts: list[dict]) -> dict:
    return {f: sum(p[f] for p in parts) for f in COUNT_INT}


# ------------------------------------------------------------------------------------ combining

_SEQUENCE = {"hota": ("HOTA", hota_sequence), "clear": ("CLEAR", clear_sequence),
             "identity": ("Identity", identity_sequence)}
_COMBINE = {"HOTA": _hota_combine, "CLEAR": _clear_combine, "Identity": _identity_combine, "Count": _count_combine}
_CLASS_AVERAGED = {"HOTA": (HOTA_INT, HOTA_FLOAT + HOTA_SCALARS), "CLEAR": (CLEAR_INT, CLEAR_FLOAT),
                   "Identity": (ID_INT, ID_FLOAT), "Count": (COUNT_INT, ())}


def _class_averaged(parts: list[dict], metric: str) -> dict:
    """Integer fields summed, every float field the plain mean over all classes (nothing recomputed)."""
    ints, floats = _CLASS_AVERAGED[metric]
    res = {f: sum(p[f] for p in parts) for f in ints}
    for f in floats:
        res[f] = np.mean([p[f] for p in parts], axis=0) if parts else 0.0
    return res


def check_metrics(metrics: Iterable[str]) -> tuple[str, ...]:
    """The requested tracking metrics in canonical order; SipvisError names an unknown one."""
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise SipvisError(f"unknown tracking metric {unknown[0]!r} (choose from {', '.join(METRICS)})")
    return tuple(m for m in METRICS if m in metrics)


def evaluate_tracking(
    sequences: dict[str, dict[str, SequenceClass]],
    classes: Sequence[str],
    metrics: Iterable[str] = METRICS,
    combine_classes: bool = False,
    keep_sequence: Callable[[SequenceClass], bool] | None = None,
) -> dict:
    """Score every sequence and class, combine over sequences (and over classes if asked).

    Args:
        sequences: sequence name -> class name -> data; sequences are reported in sorted order.
        classes: the evaluated classes, in report order (each must be a key of every sequence).
        metrics: any of "hota", "clear", "identity"; Count is always included.
        combine_classes: add `class_combined` (YouTube-VIS: class- and detection-averaged).
        keep_sequence: (SequenceClass) -> bool, which per-sequence entries to report (default all).

    Returns:
        ``{"metrics", "classes", "sequences", "combined", "per_sequence"[, "class_combined"]}`` with
        the nesting and field names of the oracle cases' expected.json.
    """
    chosen = check_metrics(metrics)
    names = sorted(sequences)
    raw: dict[str, dict[str, dict]] = {s: {} for s in names}
    # a sequence without GT or without tracker masks returns early: its result depends only on the
    # counts, so equal ones share one (never mutated) result
    early: dict[tuple[int, int, int, int], dict] = {}
    for s in names:
        for c in classes:
            d = sequences[s][c]
            key = (d.num_gt_dets, d.num_tk_dets, d.num_gt_ids, d.num_tk_ids)
            if (d.num_gt_dets == 0 or d.num_tk_dets == 0) and key in early:
                raw[s][c] = early[key]
                continue
            raw[s][c] = {label: fn(d) for m, (label, fn) in _SEQUENCE.items() if m in chosen}
            raw[s][c]["Count"] = count_sequence(d)
            if d.num_gt_dets == 0 or d.num_tk_dets == 0:
                early[key] = raw[s][c]
    labels = [label for m, (label, _) in _SEQUENCE.items() if m in chosen] + ["Count"]
    combined = {c: {m: _COMBINE[m]([raw[s][c][m] for s in names]) for m in labels} for c in classes}
    out: dict = {
        "metrics": list(chosen), "classes": list(classes), "sequences": names,
        "combined": {c: _report(combined[c], per_sequence=False) for c in classes},
    }
    if combine_classes:
        parts = {m: [combined[c][m] for c in classes] for m in labels}
        out["class_combined"] = {
            "cls_comb_cls_av": _report({m: _class_averaged(parts[m], m) for m in labels}, False),
            "cls_comb_det_av": _report({m: _COMBINE[m](parts[m]) for m in labels}, False),
        }
    out["per_sequence"] = {
        s: {c: _report(raw[s][c], per_sequence=True) for c in classes
            if keep_sequence is None or keep_sequence(sequences[s][c])}
        for s in names
    }
    return out


def _report(res: dict, per_sequence: bool) -> dict:
    """JSON-ready nesting of expected.json: HOTA mean_over_alphas / scalars / per_alpha, flat others."""
    out: dict = {}
    if "HOTA" in res:
        h = res["HOTA"]
        arrays = HOTA_INT if per_sequence else HOTA_FLOAT + HOTA_INT
        out["HOTA"] = {
            "mean_over_alphas": dict(zip(HOTA_FLOAT, np.mean([h[f] for f in HOTA_FLOAT], axis=1).tolist())),
            "scalars": {f: float(h[f]) for f in HOTA_SCALARS},
            "per_alpha": {f: np.asarray(h[f], np.int64 if f in HOTA_INT else np.float64).tolist() for f in arrays},
        }
    if "CLEAR" in res:
        c = res["CLEAR"]
        out["CLEAR"] = {**{f: float(c[f]) for f in CLEAR_FLOAT if f != "MOTP_sum"},
                        "MOTP_sum": float(c["MOTP_sum"]), **{f: int(c[f]) for f in CLEAR_INT}}
    if "Identity" in res:
        i = res["Identity"]
        out["Identity"] = {**{f: float(i[f]) for f in ID_FLOAT}, **{f: int(i[f]) for f in ID_INT}}
    out["Count"] = {f: int(res["Count"][f]) for f in COUNT_INT}
    return out


# ------------------------------------------------------------------------------------- files, table


def evaluate_tracking_files(
    fmt: str,
    gt: str | Path | dict,
    results: str | Path | list,
    split: str | None = None,
    metrics: Iterable[str] = METRICS,
    parsed: tuple | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """HOTA / CLEAR / Identity of results files against GT, exactly as TrackEval computes them.

    Args:
        fmt: "youtube-vis" (`gt`, `results`: JSON files or parsed objects), "kitti-mots" or
            "mots-challenge" (`gt`: the GT folder, `results`: a folder of tracker ``<seq>.txt``).
        split: MOTS split (default "val" for KITTI-MOTS, "train" for MOTSChallenge); unused for YouTube-VIS.
        metrics: any of "hota", "clear", "identity".
        parsed: YouTube-VIS only, (GroundTruth, Results) already parsed from `gt` (the raw JSON dict,
            still needed for the video file names) and `results`, so a caller scoring AP too parses once.
        progress: called as progress(done, total) after each sequence is read and its IoUs computed
            (the bulk of the time).

    Returns:
        the `evaluate_tracking` dict plus ``"format": fmt``. YouTube-VIS adds `class_combined`, and its
        `per_sequence` leaves out classes with neither GT nor results in a video, as the oracle cases do.

    Raises:
        SipvisError: one line naming the file (and line or entry) for unreadable or invalid input.
    """
    metrics = check_metrics(metrics)
    from sipvis.io.files import no_gc  # millions of small acyclic objects: see no_gc

    with no_gc():
        return _evaluate_files(fmt, gt, results, split, metrics, parsed, progress)


def _evaluate_files(fmt: str, gt, results, split: str | None, metrics: tuple[str, ...], parsed, progress) -> dict:
    if fmt == "youtube-vis":
        from sipvis.evaluation.tracking_ytvis import load_youtube_vis

        sequences, classes = load_youtube_vis(gt, results, parsed, progress)
        out = evaluate_tracking(sequences, classes, metrics, combine_classes=True,
                                keep_sequence=lambda d: bool(d.num_gt_dets or d.num_tk_dets))
        return {"format": fmt, **out}
    if fmt in ("kitti-mots", "mots-challenge"):
        from sipvis.evaluation.mots import load_mots

        sequences, classes = load_mots(fmt, gt, results, split, progress)
        return {"format": fmt, **evaluate_tracking(sequences, classes, metrics)}
    raise SipvisError(f"unknown tracking format {fmt!r} (choose from {', '.join(FORMATS)})")


_TABLE_COMBINED = (("cls_comb_cls_av", "all (class-averaged)"), ("cls_comb_det_av", "all (detection-averaged)"))


def format_tracking_table(result: dict) -> list[tuple[str, ...]]:
    """Rows of the compact terminal table: a header, then one row per class and, for YouTube-VIS,
    the two class combinations. Columns (as asked): HOTA DetA AssA (hota), MOTA or MOTSA on MOTS
    data, and IDSW (clear), IDF1 (identity); fractions with 3 decimals, IDSW an integer."""
    metrics = result.get("metrics", METRICS)
    motsa = result.get("format") in ("kitti-mots", "mots-challenge")
    header = ["class"]
    header += ["HOTA", "DetA", "AssA"] if "hota" in metrics else []
    header += ["MOTSA" if motsa else "MOTA", "IDSW"] if "clear" in metrics else []
    header += ["IDF1"] if "identity" in metrics else []

    def row(label: str, r: dict) -> tuple[str, ...]:
        cells = [label]
        if "hota" in metrics:
            m = r["HOTA"]["mean_over_alphas"]
            cells += [f"{m['HOTA']:.3f}", f"{m['DetA']:.3f}", f"{m['AssA']:.3f}"]
        if "clear" in metrics:
            cells += [f"{r['CLEAR']['MOTA']:.3f}", str(r["CLEAR"]["IDSW"])]
        if "identity" in metrics:
            cells += [f"{r['Identity']['IDF1']:.3f}"]
        return tuple(cells)

    rows = [tuple(header)] + [row(c, result["combined"][c]) for c in result["classes"]]
    for key, label in _TABLE_COMBINED:
        if key in result.get("class_combined", {}):
            rows.append(row(label, result["class_combined"][key]))
    return rows
