"""The per-frame result that flows from the tracker to every sink (video, JSON, PNG, MOTS, window)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FrameInstances:
    """Tracked instances of one frame, on the host, at the original frame size.

    Attributes:
        index: 0-based frame index in the input (after `--vid-stride`, the index of the source frame).
        height, width: original frame size in pixels.
        boxes: (N, 4) float32 x1y1x2y2 in original-frame pixels.
        scores: (N,) float32 detection scores in [0, 1].
        labels: (N,) int64 0-based class indices (into the model's class names).
        track_ids: (N,) int64 track ids as users see them: 1-based, stable across the video.
        masks: (N, H, W) bool instance masks.
        timestamp: presentation time of the frame in seconds, or None when the source has none.
        score_corrections: {(frame index, track id): score} for frames delivered before (or with) this
            one, learned while tracking it: the original tracker's first-frame quirk (see
            `OriginalTracker.first_frame_scores`), which the YouTube-VIS JSON reproduces. Almost always
            empty; plain data, so the sinks need no tracker.
        track_classes: {track id: 0-based class} of the tracks the tracker reported in this frame (before
            any output filter), when the tracker decides a track's class by a vote over its frames (the
            robust tracker): the latest entry of a track is the class the YouTube-VIS JSON gives it.
            Empty for the original tracker (the JSON takes the track's most frequent label). Plain
            data, like `score_corrections`.
        missing: True for a frame that could not be read (`FrameSource.frames(keep_gaps=True)`): it has
            no instances and keeps its position in the outputs — `null` in the YouTube-VIS JSON, no MOTS
            line, no PNG, no video frame (the previous one stays on screen).
    """

    index: int
    height: int
    width: int
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    track_ids: np.ndarray
    masks: np.ndarray
    timestamp: float | None = None
    extra: dict = field(default_factory=dict)
    score_corrections: dict[tuple[int, int], float] = field(default_factory=dict)
    track_classes: dict[int, int] = field(default_factory=dict)
    missing: bool = False

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls, index: int, height: int, width: int, timestamp: float | None = None,
              missing: bool = False) -> "FrameInstances":
        return cls(
            index=index,
            height=height,
            width=width,
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            labels=np.zeros((0,), np.int64),
            track_ids=np.zeros((0,), np.int64),
            masks=np.zeros((0, height, width), bool),
            timestamp=timestamp,
            missing=missing,
        )
