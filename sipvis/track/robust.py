"""The `robust` tracker: one global assignment per frame between detections and a memory of tracks
that ages, with re-identification of lost tracks, a birth threshold, smoothed embeddings and a class
vote per track.

It scores a detection against a track with the cues of the original tracker (embedding similarity,
box IoU, class agreement, detection score), plus mask IoU when masks are given, and solves Hungarian
assignments (scipy) per frame -- the tracks matched on the previous frame first, then the lost ones --
instead of the original's greedy per-detection claims, so no detection loses its track to a later one
and no distinct detection above the birth threshold is dropped (a second detection of an object
already detected in the frame is; see `RobustTrackerConfig.duplicate_iou`).

The tracker state lives on the host in numpy: a frame's inputs cross from the device once (one packed
copy, one sync), and at ~10 objects per frame small numpy arrays are far cheaper than device kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from sipvis.model.box_ops import box_iou

ArrayLike = torch.Tensor | np.ndarray


@dataclass
class RobustTrackerConfig:
    """Every knob of the `robust` tracker. The defaults were chosen on the bundled demo model run over
    `sipvis synth` videos (development seeds 101, 202, 404, 505 and 606; validated once on the unseen
    seeds 707 and 808, see BENCHMARKS.md).

    The affinity of detection i to track j is

        embedding_weight * cos(e_i, m_j) + iou_weight * IoU(box_i, predicted box_j)
        + mask_iou_weight * maskIoU(mask_i, last mask_j) - label_weight * [label_i != class_j]
        + score_weight * log(score_i / birth_score)

    (the terms of the original's combined score, cosine instead of its raw dot product because the
    memory is a running mean; the mask term only when masks are given; the embedding term only when
    the model has a tracking branch). A pair may be assigned only if its affinity exceeds
    `match_threshold` (and passes the gates below); the assignment maximises the total affinity minus
    the threshold, first over the tracks matched on the previous frame, then over the lost ones.

    Why the gates and the order (each from a logged ID switch of the demo model on the development
    splits): the embeddings of two objects of one class are often as alike as two frames of one object,
    so a far detection may only take a track on appearance alone when it is very alike
    (`reid_similarity`), while a detection where the track's motion predicts it needs only
    `min_similarity`; a lost track that competed with the active ones in one assignment could win the
    detection of the object an active track is following (the two then swap back and forth); and a
    second, lower-scoring detection of a visible object (often with another label) either took over a
    track whose object had just become hidden or started a duplicate track.
    And an object that came back after a few hidden frames away from its predicted position, looking
    only moderately alike, got a new id (a switch for TrackEval as much as a swap is), though no other
    track or detection was a close contender: `reid_margin` lets such an unambiguous pair match.

    Attributes:
        embedding_weight: weight of the cosine similarity between a detection's embedding and a
            track's embedding memory (ignored when `embeddings` is None or has width 0).
        iou_weight: weight of the box IoU (inclusive pixels, as the original) with the track's
            predicted box.
        mask_iou_weight: weight of the mask IoU with the track's last mask (only when `masks` is given).
        label_weight: penalty when the detection's label differs from the track's voted class (the
            original's class bonus is 10, which forbids any class change; 3 lets a detection whose
            label flips continue its track when embedding and overlap agree, so the vote decides).
        score_weight: weight of log(score / birth_score): a detection below the birth score needs more
            evidence to continue a track, one above needs less.
        match_threshold: a detection-track pair with affinity at or below this is never assigned.
        min_similarity: with embeddings, no pair whose cosine similarity is below this is assigned,
            whatever the overlap (keeps a false detection from taking over the track of an object
            that just became hidden).
        reid_similarity: with embeddings, a detection whose box IoU with a track's predicted box is
            below `reid_min_iou` (a jump, or a lost track's object coming back elsewhere) may only take
            the track with a cosine similarity of at least this.
        reid_min_iou: the box IoU with a track's predicted box at which `min_similarity` suffices (with
            embeddings); without embeddings, a lost track may only be taken by a detection at least
            this IoU with its predicted box.
        max_age: a track survives this many consecutive unmatched frames in the lost-track buffer; one
            unmatched for longer is forgotten and its object, if it returns, gets a new id.
        birth_score: an unmatched detection with at least this score starts a new track; below it the
            detection is not reported (id -1).
        embedding_momentum: the memory keeps this fraction of itself on every match (EMA of the
            unit-normalised embeddings; 0 = replace by the latest, as the original).
        velocity_momentum: EMA momentum of the per-frame box motion used to predict where a track is
            (0 disables motion: the last box is the prediction, as the original).
        mask_stride: masks are compared on every `mask_stride`-th pixel in each direction (8 = 1/64 of
            the pixels: a 40-pixel object still has ~20 samples; on the demo model's synthetic videos
            stride 8 and stride 4 gave the same tracks, and the cue costs ~4x less).
        duplicate_iou: a detection whose mask overlaps that of a higher-scoring one of the same frame
            by this IoU or more (on the `mask_stride` grid) is taken as a second detection of the same
            object: it matches nothing, starts nothing and is not reported (id -1). Masks cover visible
            pixels only, so objects that occlude each other overlap little; without masks (or with
            `mask_iou_weight` 0) nothing is removed, as boxes of crossing objects overlap as much as
            duplicates do. Above 1 disables it.
        active_first: assign the tracks matched on the previous frame first and the lost tracks only
            to the detections left (False: one assignment over all tracks).
        reid_margin: with embeddings, an unambiguous re-identification may take a lost track below
            `reid_similarity` (an object that comes back away from its predicted position, looking only
            moderately alike): the pair's class must agree, its similarity must be at least
            `reid_min_similarity`, and exceed by this margin both the detection's similarity to every
            other track (active or lost) and the track's similarity to every other detection of the
            frame (a ratio test in both directions). It applies to lost tracks only, and so (with
            `active_first`) only to detections no active track took. Above 1 disables it.
        reid_min_similarity: the least cosine similarity of an unambiguous re-identification.
        reid_reach: the farthest an unambiguous re-identification may be from the track's predicted
            box: the distance between the box centres, in track sizes (the square root of the last
            box's area), per frame the track has been missed (so the reach grows with the gap).
    """

    embedding_weight: float = 4.0
    iou_weight: float = 2.0
    mask_iou_weight: float = 2.0
    label_weight: float = 3.0
    score_weight: float = 2.0
    match_threshold: float = 0.5
    min_similarity: float = 0.3
    reid_similarity: float = 0.8
    reid_min_iou: float = 0.3
    max_age: int = 30
    birth_score: float = 0.3
    embedding_momentum: float = 0.8
    velocity_momentum: float = 0.5
    mask_stride: int = 8
    duplicate_iou: float = 0.5
    active_first: bool = True
    reid_margin: float = 0.1
    reid_min_similarity: float = 0.5
    reid_reach: float = 1.0

    def __post_init__(self) -> None:
        if self.birth_score <= 0 or self.max_age < 0 or self.mask_stride < 1 or self.duplicate_iou <= 0:
            raise ValueError("birth_score must be > 0, max_age >= 0, mask_stride >= 1 and duplicate_iou > 0")
        if not (0 <= self.embedding_momentum < 1 and 0 <= self.velocity_momentum < 1):
            raise ValueError("embedding_momentum and velocity_momentum must be in [0, 1)")


@dataclass
class _Frame:
    """One frame's detections on the host: boxes (N, 4), scores (N,), labels (N,) int,
    embeddings (N, E) unit-normalised or None, masks (N, P) float32 subsampled pixels or None."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    embeddings: np.ndarray | None
    masks: np.ndarray | None

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def take(self, rows: np.ndarray) -> "_Frame":
        """The detections `rows` only."""
        return _Frame(self.boxes[rows], self.scores[rows], self.labels[rows],
                      None if self.embeddings is None else self.embeddings[rows],
                      None if self.masks is None else self.masks[rows])


@dataclass
class _Tracks:
    """The memory: one row per live track (active or lost), in creation order."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (M,) 0-based track ids
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (M, 4) last box
    velocity: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (M, 4) per frame
    age: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (M,) frames since last match
    votes: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.float64))  # (M, C) score sums
    embeddings: np.ndarray | None = None  # (M, E) unit-normalised EMA
    masks: np.ndarray | None = None  # (M, P) last mask, subsampled

    def __len__(self) -> int:
        return self.ids.shape[0]

    def classes(self) -> np.ndarray:
        """(M,) voted class: the label with the largest score sum (ties: the smallest label)."""
        return self.votes.argmax(1)

    def predicted_boxes(self) -> np.ndarray:
        """(M, 4) where each track should be now: last box moved by its velocity for each frame since."""
        return self.boxes + self.velocity * (self.age + 1)[:, None]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]


def _to_host(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike, embeddings: ArrayLike | None,
             masks: ArrayLike | None, stride: int) -> _Frame:
    """A frame's inputs as host float32 arrays: the tensors of one accelerator cross in one packed copy
    (one sync per frame); CPU tensors and numpy arrays are only viewed or converted."""
    n = boxes.shape[0]
    use_emb = embeddings is not None and embeddings.shape[-1] > 0
    parts = [boxes, scores, labels, embeddings if use_emb else None,
             None if masks is None else masks[:, ::stride, ::stride]]
    host: list[np.ndarray | None] = [None if p is None else _cpu_array(p, n) for p in parts]
    for device in {p.device for p in parts if isinstance(p, torch.Tensor) and p.device.type != "cpu"}:
        idx = [i for i, p in enumerate(parts) if isinstance(p, torch.Tensor) and p.device == device]
        for i, array in zip(idx, pack_to_host([parts[i] for i in idx])):
            host[i] = array
    b, s, lab, emb, m = host
    return _Frame(b, s[:, 0], lab[:, 0].astype(np.int64), None if emb is None else _unit(emb), m)


def pack_to_host(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """(N, ...) tensors of one device -> (N, D_k) float32 host arrays, through one packed copy."""
    n = tensors[0].shape[0]
    flat = [t.reshape(n, math.prod(t.shape[1:])).to(torch.float32) for t in tensors]
    packed = torch.cat(flat, 1).cpu().numpy()
    return np.split(packed, np.cumsum([f.shape[1] for f in flat])[:-1], axis=1)


def _cpu_array(x: ArrayLike, n: int) -> np.ndarray | None:
    """(N, ...) host array or CPU tensor -> (N, D) float32 numpy (no copy when it can); None for a
    tensor on another device (those are packed and copied together)."""
    if isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            return None
        x = x.numpy()
    return np.asarray(x, np.float32).reshape(n, math.prod(x.shape[1:]))


def _same_width(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether a frame's cue (N, D) and the memory's (M, D) both exist and can be compared."""
    return a is not None and b is not None and a.shape[1] == b.shape[1]


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, P) x (M, P) 0/1 float masks -> (N, M) IoU (0 where both are empty)."""
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1.0)


@dataclass
class RobustTracker:
    """Per-video tracker state. Call `update` once per frame, in order; `reset` between videos.

    Ids are 0-based in creation order and never reused. A track matched on a frame is active; unmatched
    it is lost and kept for `max_age` frames, during which a detection can take it back (by embedding
    similarity, or by overlap when the model has no tracking branch). `track_class(id)` / `classes()`
    give a track's score-weighted class vote; `voted_labels(ids)` gives it per detection, which is what
    the frame results (and so the video JSON's category) report.
    """

    cfg: RobustTrackerConfig = field(default_factory=RobustTrackerConfig)
    tracks: _Tracks = field(default_factory=_Tracks)
    next_id: int = 0
    _votes: dict[int, np.ndarray] = field(default_factory=dict)  # every track's final votes, by id

    def reset(self) -> None:
        self.tracks = _Tracks()
        self.next_id = 0
        self._votes = {}

    def update(self, boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike,
               embeddings: ArrayLike | None = None, frame_index: int = 0,
               masks: ArrayLike | None = None) -> list[int]:
        """Assign one frame's detections to tracks.

        Args:
            boxes: (N, 4) x1y1x2y2 original-frame pixels; scores: (N,); labels: (N,) int 0-based.
            embeddings: (N, E) tracking embeddings, or None / width 0 for a model without tracking branch.
            frame_index: the frame's index (unused: frames are taken in call order).
            masks: optional (N, H, W) bool masks for the mask IoU cue (ignored when `mask_iou_weight` is 0).
            Torch tensors (any device) or numpy arrays.
        Returns:
            N track ids (0-based; -1 = not reported: unmatched and below `birth_score`, or a duplicate
            of a higher-scoring detection). Ids are unique within a frame.
        """
        use_masks = masks is not None and self.cfg.mask_iou_weight != 0
        frame = _to_host(boxes, scores, labels, embeddings, masks if use_masks else None, self.cfg.mask_stride)
        n = len(frame)
        ids = np.full(n, -1, np.int64)
        # a second detection of an object already detected (often with another label) would take
        # over a nearby track or start a duplicate one: it is left out before any matching
        distinct = self._distinct(frame)
        if distinct.size < n:
            frame = frame.take(distinct)
        rows, cols = self._assign(frame)
        ids[distinct[rows]] = self.tracks.ids[cols]
        matched = np.zeros(len(self.tracks), bool)
        matched[cols] = True
        self._refresh(frame, rows, cols)
        self.tracks.age[~matched] += 1
        self._forget(self.tracks.age > self.cfg.max_age)
        unmatched = np.ones(len(frame), bool)
        unmatched[rows] = False
        born = np.flatnonzero(unmatched & (frame.scores >= self.cfg.birth_score))
        ids[distinct[born]] = self._birth(frame, born)
        return ids.tolist()

    def classes(self) -> dict[int, int]:
        """{track id: voted class (0-based label)} of every track seen since `reset`."""
        self._store_votes(np.arange(len(self.tracks)))
        return {i: int(v.argmax()) for i, v in sorted(self._votes.items())}

    def voted_labels(self, ids: list[int]) -> list[int]:
        """The current voted class of each id that `update` just returned (-1 stays -1): what a
        streaming output (overlay, MOTS lines) should show for the track at this frame."""
        ids_arr = np.asarray(ids, np.int64)
        live = ids_arr >= 0
        out = np.full(ids_arr.shape, -1, np.int64)
        if live.any():
            out[live] = self.tracks.classes()[np.searchsorted(self.tracks.ids, ids_arr[live])]
        return out.tolist()

    def track_class(self, track_id: int) -> int:
        """The voted class (0-based label) of one track: the label with the largest sum of detection
        scores over the track's frames (ties: the smallest label)."""
        return self.classes()[track_id]

    # -- steps of `update` ------------------------------------------------------------------------

    def _affinity(self, frame: _Frame) -> tuple[np.ndarray, np.ndarray]:
        """(N, M) affinity of each detection to each track, and the (N, M) bool mask of allowed pairs."""
        cfg, tr = self.cfg, self.tracks
        iou = box_iou(torch.from_numpy(frame.boxes), torch.from_numpy(tr.predicted_boxes()),
                      pixel_offset=1.0).numpy()
        same = frame.labels[:, None] == tr.classes()[None, :]
        aff = cfg.iou_weight * iou - cfg.label_weight * ~same
        aff += cfg.score_weight * np.log(np.maximum(frame.scores, 1e-6) / cfg.birth_score)[:, None]
        lost = tr.age > 0
        if _same_width(frame.masks, tr.masks):
            aff += cfg.mask_iou_weight * mask_iou(frame.masks, tr.masks)
        if _same_width(frame.embeddings, tr.embeddings):
            sim = frame.embeddings @ tr.embeddings.T
            aff += cfg.embedding_weight * sim
            # appearance alone may re-identify anywhere; a weaker likeness needs the motion to agree
            allowed = (sim >= cfg.reid_similarity) | ((sim >= cfg.min_similarity) & (iou >= cfg.reid_min_iou))
            # only pairs the rules above refuse can gain; most frames have none, and skip the work
            maybe = same & lost[None, :] & (sim >= cfg.reid_min_similarity) & ~allowed
            if cfg.reid_margin <= 1 and maybe.any():
                allowed |= maybe & self._unambiguous(frame, sim)
        else:
            allowed = (iou >= cfg.reid_min_iou) | ~lost[None, :]
        allowed &= aff > cfg.match_threshold
        return aff, allowed

    def _unambiguous(self, frame: _Frame, sim: np.ndarray) -> np.ndarray:
        """(N, M) bool: the pairs whose cosine similarity `sim` (N, M) beats that of every other track
        for the detection and of every other detection for the track by `reid_margin`, within
        `reid_reach` track sizes per missed frame of the track's predicted box (the caller adds the
        class and `reid_min_similarity` conditions). The logged returns that got a new id came back
        4-10 frames later, away from the prediction, at similarity 0.67-0.79: below
        `reid_similarity`, yet each the clear best match of the other."""
        cfg, tr = self.cfg, self.tracks
        ok = np.ones(sim.shape, bool)
        for axis, m in ((1, sim.shape[1]), (0, sim.shape[0])):
            if m > 1:  # the runner-up of each row (axis 1) / column (axis 0)
                second = -np.partition(-sim, 1, axis=axis).take(1, axis=axis)
                ok &= sim - np.expand_dims(second, axis) >= cfg.reid_margin
        pred = tr.predicted_boxes()
        size = np.sqrt(np.maximum((tr.boxes[:, 2] - tr.boxes[:, 0]) * (tr.boxes[:, 3] - tr.boxes[:, 1]), 1.0))
        d = (frame.boxes[:, None, :2] + frame.boxes[:, None, 2:]) - (pred[None, :, :2] + pred[None, :, 2:])
        dist = 0.5 * np.sqrt((d * d).sum(-1))
        return ok & (dist <= cfg.reid_reach * size * tr.age)

    def _assign(self, frame: _Frame) -> tuple[np.ndarray, np.ndarray]:
        """(detection rows, track rows) of the matches: one assignment maximising the summed affinity
        over the allowed pairs, first between the detections and the tracks matched on the previous
        frame, then (with `active_first`) between the detections left and the lost tracks."""
        if len(frame) == 0 or len(self.tracks) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        aff, allowed = self._affinity(frame)
        gain = np.where(allowed, aff - self.cfg.match_threshold, 0.0)
        lost = self.tracks.age > 0
        stages = (~lost, lost) if self.cfg.active_first else (np.ones_like(lost),)
        free = np.ones(len(frame), bool)
        rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for tracks in stages:
            d, t = np.flatnonzero(free), np.flatnonzero(tracks)
            if d.size == 0 or t.size == 0:
                continue
            r, c = linear_sum_assignment(gain[np.ix_(d, t)], maximize=True)
            keep = allowed[d[r], t[c]]
            rows.append(d[r[keep]])
            cols.append(t[c[keep]])
            free[rows[-1]] = False
        return np.concatenate(rows), np.concatenate(cols)

    def _distinct(self, frame: _Frame) -> np.ndarray:
        """Rows of the detections kept, in order: by decreasing score, each one whose mask does not
        overlap that of a detection kept before it by `duplicate_iou` or more. Masks cover visible
        pixels only, so two objects that occlude each other overlap little; boxes cannot tell the
        two cases apart, so without masks every detection is kept."""
        n = len(frame)
        if n < 2 or self.cfg.duplicate_iou > 1 or frame.masks is None:
            return np.arange(n)
        overlap = mask_iou(frame.masks, frame.masks)
        kept = np.zeros(n, bool)
        for i in np.argsort(-frame.scores, kind="stable"):
            kept[i] = not (overlap[i, kept] >= self.cfg.duplicate_iou).any()
        return np.flatnonzero(kept)

    def _refresh(self, frame: _Frame, rows: np.ndarray, cols: np.ndarray) -> None:
        """Matched tracks take the detection's box (and motion, embedding, mask, class vote)."""
        cfg, tr = self.cfg, self.tracks
        if rows.size == 0:
            return
        step = (frame.boxes[rows] - tr.boxes[cols]) / (tr.age[cols] + 1)[:, None]
        tr.velocity[cols] = cfg.velocity_momentum * tr.velocity[cols] + (1 - cfg.velocity_momentum) * step
        tr.boxes[cols] = frame.boxes[rows]
        tr.age[cols] = 0
        self._vote(cols, frame.labels[rows], frame.scores[rows])
        if _same_width(frame.embeddings, tr.embeddings):
            m = cfg.embedding_momentum
            tr.embeddings[cols] = _unit(m * tr.embeddings[cols] + (1 - m) * frame.embeddings[rows])
        if _same_width(frame.masks, tr.masks):
            tr.masks[cols] = frame.masks[rows]

    def _vote(self, cols: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> None:
        tr = self.tracks
        width = int(labels.max()) + 1 if labels.size else 0
        if width > tr.votes.shape[1]:
            tr.votes = np.pad(tr.votes, ((0, 0), (0, width - tr.votes.shape[1])))
        tr.votes[cols, labels] += scores  # cols are distinct: one detection per track and frame

    def _birth(self, frame: _Frame, rows: np.ndarray) -> np.ndarray:
        """Append tracks for detections `rows`; returns their new ids."""
        tr, k = self.tracks, rows.size
        new_ids = np.arange(self.next_id, self.next_id + k, dtype=np.int64)
        if k == 0:
            return new_ids
        self.next_id += k
        start = len(tr)
        tr.ids = np.concatenate([tr.ids, new_ids])
        tr.boxes = np.concatenate([tr.boxes, frame.boxes[rows]])
        tr.velocity = np.concatenate([tr.velocity, np.zeros((k, 4), np.float32)])
        tr.age = np.concatenate([tr.age, np.zeros(k, np.int64)])
        tr.votes = np.concatenate([tr.votes, np.zeros((k, tr.votes.shape[1]))])
        tr.embeddings = _append(tr.embeddings, frame.embeddings, rows, start)
        tr.masks = _append(tr.masks, frame.masks, rows, start)
        self._vote(np.arange(start, start + k), frame.labels[rows], frame.scores[rows])
        return new_ids

    def _forget(self, drop: np.ndarray) -> None:
        """Remove tracks `drop` (M,) bool from the buffer, keeping their class votes."""
        if not drop.any():
            return
        self._store_votes(np.flatnonzero(drop))
        tr, keep = self.tracks, ~drop
        tr.ids, tr.boxes, tr.velocity, tr.age, tr.votes = (
            tr.ids[keep], tr.boxes[keep], tr.velocity[keep], tr.age[keep], tr.votes[keep])
        tr.embeddings = None if tr.embeddings is None else tr.embeddings[keep]
        tr.masks = None if tr.masks is None else tr.masks[keep]

    def _store_votes(self, rows: np.ndarray) -> None:
        for r in rows:
            self._votes[int(self.tracks.ids[r])] = self.tracks.votes[r].copy()


def _append(memory: np.ndarray | None, values: np.ndarray | None, rows: np.ndarray, start: int
            ) -> np.ndarray | None:
    """Append `values[rows]` to a per-track memory. A cue missing on this frame (or of another width,
    e.g. a stream that changed size) gives zero rows, which match nothing; with no memory yet, the
    memory starts here (earlier tracks get zero rows)."""
    if values is None:
        return None if memory is None else np.concatenate([memory, np.zeros((rows.size, memory.shape[1]),
                                                                            memory.dtype)])
    if memory is None or memory.shape[1] != values.shape[1]:
        memory = np.zeros((start, values.shape[1]), np.float32)
    return np.concatenate([memory, values[rows]])
