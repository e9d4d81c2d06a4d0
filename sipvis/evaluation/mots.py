"""KITTI-MOTS and MOTSChallenge text files -> per-sequence, per-class `SequenceClass` data.

One line per mask, space-separated (what `sipvis track -o x.txt` writes, see `sipvis.io.formats`):

    frame track_id class_id height width rle

Layouts (as TrackEval reads them; the results folder holds the tracker's ``<seq>.txt`` directly):

==============  ==================================================  ==========================================
                KITTI-MOTS (``kitti-mots``, split ``val``)          MOTSChallenge (``mots-challenge``, ``train``)
==============  ==================================================  ==========================================
GT file         ``GT_DIR/label_02/<seq>.txt`` (or ``instances_txt``) ``GT_DIR/MOTS-<split>/<seq>/gt/gt.txt``
sequences       ``GT_DIR/evaluate_mots.seqmap.<split>``: lines       ``GT_DIR/seqmaps/MOTS-<split>.txt``: a header,
                ``<seq> empty 000000 <last frame>``                  then one name per line; the length is
                                                                     ``seqLength`` of ``.../<seq>/seqinfo.ini``
frames          0-based                                              1-based
classes         car = 1, pedestrian = 2                              pedestrian = 2
==============  ==================================================  ==========================================

GT rows of class 10 form each frame's ignore region: an unmatched tracker mask more than half
inside it (intersection over the tracker mask's own area, > 0.5) is removed before any metric.
Rows of other classes are read and checked but never evaluated.

Bad input raises `SipvisError` with one line naming the file (and line): a missing seqmap, GT or
results file; a malformed line; a frame outside the sequence; a mask size that differs from the
sequence's; a track id twice in one frame; overlapping masks in one frame (GT: all classes and the
ignore region together; results: all classes). Where TrackEval fails on valid-looking input,
sipvis accepts it: a KITTI seqmap with a single line.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from sipvis.errors import SipvisError
from sipvis.evaluation.tracking import EPS, THRESHOLD, SequenceClass

IGNORE_CLASS = 10
KITTI_CLASSES = {"car": 1, "pedestrian": 2}
CHALLENGE_CLASSES = {"pedestrian": 2}
DEFAULT_SPLIT = {"kitti-mots": "val", "mots-challenge": "train"}


@dataclass
class MotsSequence:
    """Where one sequence's files are and how long it is.

    Attributes:
        name: sequence name; gt, results: its text files; length: number of frames;
        first_frame: 0 (KITTI-MOTS) or 1 (MOTSChallenge); size: (height, width) when known beforehand.
    """

    name: str
    gt: Path
    results: Path
    length: int
    first_frame: int
    size: tuple[int, int] | None = None


@dataclass
class MotsFile:
    """The masks of one text file, in line order.

    Attributes:
        frame: (N,) int64 0-based frame index within the sequence.
        track, cls: (N,) int64 track id and class id.
        line: (N,) int64 1-based line numbers (for messages).
        rles: N compressed RLE dicts.
    """

    path: Path
    frame: np.ndarray
    track: np.ndarray
    cls: np.ndarray
    line: np.ndarray
    rles: list[dict]


# ----------------------------------------------------------------------------------- sequence lists


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise SipvisError(f"{what} not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SipvisError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None


def kitti_sequences(gt_dir: Path, results_dir: Path, split: str) -> list[MotsSequence]:
    """Sequences of a KITTI-MOTS GT folder: ``evaluate_mots.seqmap.<split>`` and ``label_02/``."""
    seqmap = gt_dir / f"evaluate_mots.seqmap.{split}"
    text = _read_text(seqmap, "KITTI-MOTS sequence map (GT_DIR/evaluate_mots.seqmap.<split>)")
    labels = gt_dir / "label_02"
    if not labels.is_dir() and (gt_dir / "instances_txt").is_dir():
        labels = gt_dir / "instances_txt"
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) < 4:
                raise ValueError
            name, length = "%04d" % int(fields[0]), int(fields[3]) + 1
        except ValueError:
            raise SipvisError(f"{seqmap}:{n}: expected '<seq> empty 000000 <last frame>', got {line.strip()!r}") \
                from None
        out.append(MotsSequence(name, labels / f"{name}.txt", results_dir / f"{name}.txt", length, 0))
    if not out:
        raise SipvisError(f"{seqmap}: the sequence map lists no sequence")
    return out


def challenge_sequences(gt_dir: Path, results_dir: Path, split: str) -> list[MotsSequence]:
    """Sequences of a MOTSChallenge GT folder: ``seqmaps/MOTS-<split>.txt`` and each ``seqinfo.ini``."""
    seqmap = gt_dir / "seqmaps" / f"MOTS-{split}.txt"
    text = _read_text(seqmap, "MOTSChallenge sequence map (GT_DIR/seqmaps/MOTS-<split>.txt)")
    names = [line.split()[0] for line in text.splitlines()[1:] if line.split()]  # first line: header
    if not names:
        raise SipvisError(f"{seqmap}: the sequence map lists no sequence (after its header line)")
    out = []
    for name in names:
        folder = gt_dir / f"MOTS-{split}" / name
        ini = folder / "seqinfo.ini"
        parser = configparser.ConfigParser()
        try:
            parser.read_string(_read_text(ini, "MOTSChallenge seqinfo.ini"))
            info = parser["Sequence"]
            length = int(info["seqLength"])
            size = (int(info["imHeight"]), int(info["imWidth"])) if "imHeight" in info and "imWidth" in info \
                else None
        except (configparser.Error, KeyError, ValueError) as exc:
            raise SipvisError(f"{ini}: needs a [Sequence] section with an integer seqLength ({exc})") from None
        out.append(MotsSequence(name, folder / "gt" / "gt.txt", results_dir / f"{name}.txt", length, 1, size))
    return out


# ------------------------------------------------------------------------------------------ files


def read_mots_file(path: Path, seq: MotsSequence, size: tuple[int, int] | None, what: str) -> MotsFile:
    """Parse and check one MOTS text file of `seq` (`size`: the sequence's (h, w) if known)."""
    text = _read_text(path, what)
    frames, tracks, classes, lines, rles = [], [], [], [], []
    last = seq.first_frame + seq.length - 1
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 6:
                raise ValueError
            f, tid, cls, h, w = int(float(fields[0])), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[4])
        except ValueError:
            raise SipvisError(f"{path}:{n}: expected 'frame track_id class_id height width rle' "
                              f"(6 fields, the first five integers), got {line.strip()[:80]!r}") from None
        if not seq.first_frame <= f <= last:
            hint = " (MOTSChallenge frames are 1-based)" if seq.first_frame == 1 and f == 0 else ""
            raise SipvisError(f"{path}:{n}: frame {f} is outside sequence {seq.name} "
                              f"(frames {seq.first_frame}..{last}){hint}")
        if size is None:
            size = (h, w)
        if (h, w) != size:
            raise SipvisError(f"{path}:{n}: mask size {h}x{w} (height x width) differs from the "
                              f"sequence's {size[0]}x{size[1]}")
        frames.append(f - seq.first_frame)
        tracks.append(tid)
        classes.append(cls)
        lines.append(n)
        rles.append({"size": [h, w], "counts": fields[5].encode("utf-8")})
    out = MotsFile(path, np.asarray(frames, np.int64), np.asarray(tracks, np.int64),
                   np.asarray(classes, np.int64), np.asarray(lines, np.int64), rles)
    _check_file(out, size)
    return out


def _check_file(mf: MotsFile, size: tuple[int, int] | None) -> None:
    """Valid RLEs, one line per track id and frame, and no two masks of a frame sharing a pixel."""
    if not mf.rles:
        return
    area = np.concatenate([mask_utils.area(mf.rles[i:i + 255]) for i in range(0, len(mf.rles), 255)])
    bad = np.nonzero(area > size[0] * size[1])[0]
    if len(bad):
        raise SipvisError(f"{mf.path}:{mf.line[bad[0]]}: the RLE string does not describe a "
                          f"{size[0]}x{size[1]} mask")
    key = mf.frame * (int(mf.track.max()) - int(mf.track.min()) + 1) + (mf.track - mf.track.min())
    uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = np.nonzero(key == uniq[counts > 1][0])[0]
        raise SipvisError(f"{mf.path}:{mf.line[dup[1]]}: track id {mf.track[dup[1]]} appears twice in one frame "
                          f"(also line {mf.line[dup[0]]})")
    order = np.argsort(mf.frame, kind="stable")
    bounds = np.searchsorted(mf.frame[order], np.arange(int(mf.frame.max()) + 2))
    for t in range(len(bounds) - 1):
        idx = order[bounds[t]:bounds[t + 1]]
        if len(idx) < 2:
            continue
        merged = mask_utils.merge([mf.rles[i] for i in idx], intersect=False)
        if mask_utils.area(merged) != area[idx].sum():
            _raise_overlap(mf, idx)


def _raise_overlap(mf: MotsFile, idx: np.ndarray) -> None:
    rles = [mf.rles[i] for i in idx]
    inter = np.asarray(mask_utils.iou(rles, rles, [1] * len(rles))).reshape(len(idx), len(idx))
    np.fill_diagonal(inter, 0)
    a, b = sorted(np.argwhere(inter > 0)[0])
    raise SipvisError(f"{mf.path}:{mf.line[idx[b]]}: the mask overlaps the mask of line {mf.line[idx[a]]} "
                      "in the same frame (MOTS masks must not share pixels)")


# -------------------------------------------------------------------------------------- sequences


def _frame_slices(mf: MotsFile, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Line-order row indices sorted by frame, and (length + 1,) bounds into them."""
    order = np.argsort(mf.frame, kind="stable")
    return order, np.searchsorted(mf.frame[order], np.arange(length + 1))


def _removed_by_ignore(sim: np.ndarray, tk_rles: list[dict], ignore: dict) -> np.ndarray:
    """(K_t,) bool: unmatched tracker masks more than half inside the ignore region (TrackEval's rule)."""
    unmatched = np.ones(sim.shape[1], bool)
    if sim.shape[0]:
        score = np.where(sim < THRESHOLD - EPS, 0.0, sim)
        rows, cols = linear_sum_assignment(-score)
        unmatched[cols[score[rows, cols] > EPS]] = False
    out = np.zeros(sim.shape[1], bool)
    idx = np.nonzero(unmatched)[0]
    if len(idx):
        ioa = np.asarray(mask_utils.iou([tk_rles[i] for i in idx], [ignore], [1])).reshape(-1)
        out[idx] = ioa > 0.5 + EPS
    return out


def _sequence(seq: MotsSequence, gt: MotsFile, tk: MotsFile, class_ids: dict[str, int]) -> dict[str, SequenceClass]:
    """class name -> SequenceClass of one sequence: one IoU call per frame, ignore regions applied."""
    g_order, g_bounds = _frame_slices(gt, seq.length)
    k_order, k_bounds = _frame_slices(tk, seq.length)
    per_cls = {c: ([], [], []) for c in class_ids}
    for t in range(seq.length):
        g_all = g_order[g_bounds[t]:g_bounds[t + 1]]
        ignore_rows = g_all[gt.cls[g_all] == IGNORE_CLASS]
        g_rows = g_all[np.isin(gt.cls[g_all], list(class_ids.values()))]
        k_rows = k_order[k_bounds[t]:k_bounds[t + 1]]
        k_rows = k_rows[np.isin(tk.cls[k_rows], list(class_ids.values()))]
        k_rles = [tk.rles[i] for i in k_rows]
        if len(g_rows) and len(k_rows):
            ious = np.asarray(mask_utils.iou([gt.rles[i] for i in g_rows], k_rles, [0] * len(k_rows)),
                              np.float64).reshape(len(g_rows), len(k_rows))
        else:
            ious = np.zeros((len(g_rows), len(k_rows)))
        ignore = mask_utils.merge([gt.rles[i] for i in ignore_rows], intersect=False) if len(ignore_rows) else None
        for name, cid in class_ids.items():
            rsel, csel = gt.cls[g_rows] == cid, tk.cls[k_rows] == cid
            sim = ious[np.ix_(rsel, csel)]
            if ignore is not None and csel.any():
                keep = ~_removed_by_ignore(sim, [r for r, c in zip(k_rles, csel) if c], ignore)
                csel[np.nonzero(csel)[0][~keep]] = False
                sim = sim[:, keep]
            g_ids, k_ids, sims = per_cls[name]
            g_ids.append(gt.track[g_rows[rsel]])
            k_ids.append(tk.track[k_rows[csel]])
            sims.append(sim)
    return {name: SequenceClass.from_frames(*per_cls[name], num_frames=seq.length) for name in class_ids}


def load_mots(
    fmt: str,
    gt_dir: str | Path,
    results_dir: str | Path,
    split: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, dict[str, SequenceClass]], list[str]]:
    """Read a KITTI-MOTS (`fmt` "kitti-mots") or MOTSChallenge ("mots-challenge") GT folder and a
    folder of tracker ``<seq>.txt`` files; `progress(done, total)` is called after each sequence.

    Returns:
        (sequences, classes): sequence name -> class name -> SequenceClass, and the evaluated class
        names (KITTI-MOTS: car, pedestrian; MOTSChallenge: pedestrian).
    """
    gt_dir, results_dir = Path(gt_dir), Path(results_dir)
    split = split or DEFAULT_SPLIT[fmt]
    if not gt_dir.is_dir():
        raise SipvisError(f"ground-truth folder not found: {gt_dir}")
    if not results_dir.is_dir():
        raise SipvisError(f"results folder not found: {results_dir} (expected a folder of <seq>.txt files)")
    if fmt == "kitti-mots":
        seqs, class_ids = kitti_sequences(gt_dir, results_dir, split), KITTI_CLASSES
    else:
        seqs, class_ids = challenge_sequences(gt_dir, results_dir, split), CHALLENGE_CLASSES
    out = {}
    for done, seq in enumerate(seqs, 1):
        gt = read_mots_file(seq.gt, seq, seq.size, f"ground-truth file of sequence {seq.name}")
        size = seq.size or (tuple(gt.rles[0]["size"]) if gt.rles else None)
        tk = read_mots_file(seq.results, seq, size, f"results file of sequence {seq.name} "
                            "(one <seq>.txt per sequence; an empty file means no masks)")
        out[seq.name] = _sequence(seq, gt, tk, class_ids)
        if progress is not None:
            progress(done, len(seqs))
    return out, list(class_ids)
