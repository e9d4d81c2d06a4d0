"""What every reader returns: decoded `Frame`s and a `FrameSource` that iterates them.

A `FrameSource` knows its metadata up front (size, frame rate, duration...) and
yields frames in display order. The frame range shared by all readers
(`FrameRange`: `start`/`end` in seconds, `vid_stride`, `max_frames`) is applied here,
so each reader only has to decode; a reader may seek close to `start` first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np

from sipvis.errors import SipvisError
from sipvis.io.background import threaded_iter

# A frame stamped less than this fraction of a frame interval before `start` (or `end`) counts as
# on it: container time bases round timestamps (e.g. to 1 ms in Matroska).
RANGE_TOLERANCE = 0.1


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based index of the frame in the source (before `vid_stride`; after a seek
            it is derived from the timestamp and the average frame rate).
        image: (H, W, 3) uint8 BGR, contiguous, already rotated to its display orientation; None for a
            frame that could not be read, only from `FrameSource.frames(keep_gaps=True)`.
        timestamp: presentation time in seconds from the start of the stream; None for
            image sequences and for sources that carry no timestamps.
        pts: presentation timestamp in `time_base` units as stored in the source (not shifted
            to 0); pass it to `VideoWriter.write` to keep the source timing. None if unknown.
        time_base: the unit of `pts` in seconds; None if unknown.
    """

    index: int
    image: np.ndarray | None
    timestamp: float | None = None
    pts: int | None = None
    time_base: Fraction | None = None


@dataclass
class RawFrame:
    """A frame found by a reader but not yet converted to an image.

    `load()` returns the (H, W, 3) uint8 BGR image, or None if it cannot be read
    (the reader has warned). Readers yield these so frames the frame range drops
    (`vid_stride`, before `start`) are never converted or read from disk.
    """

    index: int
    timestamp: float | None
    pts: int | None
    time_base: Fraction | None
    load: Callable[[], np.ndarray | None]


@dataclass(frozen=True)
class FrameRange:
    """Which frames of a source to yield: the time range, every `stride`-th frame, at most `max_frames`."""

    start: float | None = None
    end: float | None = None
    stride: int = 1
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise SipvisError(f"vid_stride must be at least 1, got {self.stride}")
        if self.start is not None and self.start < 0:
            raise SipvisError(f"start must be >= 0 seconds, got {self.start}")
        if self.end is not None and self.start is not None and self.end <= self.start:
            raise SipvisError(f"end ({self.end} s) must be after start ({self.start} s)")
        if self.max_frames is not None and self.max_frames < 1:
            raise SipvisError(f"max_frames must be at least 1, got {self.max_frames}")


class FrameSource:
    """Base class of the readers: metadata plus iteration over `Frame`s.

    Subclasses set the metadata attributes in `__init__` and implement `_frames(start)`,
    which yields `RawFrame`s in display order beginning at (or, after a keyframe seek,
    a little before) `start` seconds. Iterating twice decodes twice.

    Attributes:
        name: short name for outputs (file stem, folder name, or host/path of a URL).
        spec: what was opened (path, pattern or URL).
        width, height: frame size as displayed, after rotation.
        fps: average frame rate (for image sequences: the rate given to `open_source`).
        frame_count: number of frames in the whole source if the container says so, else None.
        duration: length of the whole source in seconds, or None (live streams).
        rotation: degrees counter-clockwise applied to decoded frames to display them (0/90/180/270).
        has_audio: whether the source has an audio stream (which `VideoWriter(audio_from=)` can copy).
        time_base: unit of `Frame.pts`, or None.
        is_live: True for network streams and cameras (no seeking, no known end).
    """

    name: str
    spec: str
    width: int
    height: int
    fps: Fraction
    frame_count: int | None = None
    duration: float | None = None
    rotation: int = 0
    has_audio: bool = False
    time_base: Fraction | None = None
    is_live: bool = False

    def __init__(self, frame_range: FrameRange, threaded: bool = True, queue_size: int = 4) -> None:
        self.frame_range = frame_range
        self.threaded = threaded
        self.queue_size = queue_size

    def _frames(self, start: float | None) -> Iterator[RawFrame]:
        raise NotImplementedError

    @property
    def expected_frames(self) -> int | None:
        """How many frames iteration will yield (for progress bars); estimated, None if unknown."""
        total = self.frame_count
        if total is None and self.duration is not None and self.fps:
            total = round(self.duration * float(self.fps))
        if total is None:
            return self.frame_range.max_frames
        w = self.frame_range
        # the same tolerance as `_in_range`: frame i (at i / fps) is in when i >= start * fps - 0.1
        first = 0 if w.start is None else min(total, math.ceil(w.start * float(self.fps) - RANGE_TOLERANCE))
        last = total if w.end is None else min(total, math.ceil(w.end * float(self.fps) - RANGE_TOLERANCE))
        n = max(0, -(-(last - first) // w.stride))
        return n if w.max_frames is None else min(n, w.max_frames)

    def _in_range(self, keep_gaps: bool = False) -> Iterator[Frame]:
        w = self.frame_range
        eps = RANGE_TOLERANCE / float(self.fps)
        seen = yielded = 0
        for frame in self._frames(w.start):
            t = frame.timestamp if frame.timestamp is not None else frame.index / float(self.fps)
            if w.start is not None and t < w.start - eps:
                continue
            if w.end is not None and t >= w.end - eps:
                return
            if seen % w.stride == 0:
                image = frame.load()
                if image is None and not keep_gaps:  # unreadable (the reader warned); the next frame takes its turn
                    continue
                yield Frame(frame.index, image, frame.timestamp, frame.pts, frame.time_base)
                yielded += 1
                if w.max_frames is not None and yielded >= w.max_frames:
                    return
            seen += 1

    def frames(self, keep_gaps: bool = False) -> Iterator[Frame]:
        """The frames in range, in order (what iterating the source gives).

        `keep_gaps`: a frame the reader found but could not read (an unreadable image; the reader has
        warned, naming the file) is yielded at its position with `image` None, so outputs that keep frame
        positions (the YouTube-VIS JSON) can leave it empty; it counts towards `max_frames`. Without it,
        such a frame is left out and the next frame takes its turn.
        """
        produce = partial(self._in_range, keep_gaps)
        if not self.threaded:
            return produce()
        return threaded_iter(produce, maxsize=self.queue_size, name=f"sipvis-reader:{self.name}")

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def input_files(self) -> list[Path]:
        """The local files this source reads (none for streams and cameras): outputs must not overwrite them."""
        path = Path(self.spec)
        return [path] if not self.is_live and path.is_file() else []

    def close(self) -> None:
        """Release what the source holds open between iterations (nothing by default)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        fps = f"{float(self.fps):.3g}" if self.fps else "?"
        return f"<{type(self).__name__} {self.spec!r} {self.width}x{self.height} @ {fps} fps>"
