"""Sinks: every output a run writes each processed frame to, behind one interface (`Sink`).

A sink has `write(frame, instances)` (called once per processed frame, in frame order; by `track` in
the writer thread) and `close()` (called once, also after an error or Ctrl-C, so what was processed is
saved as a valid file). `frame` is the image the frame's outputs are drawn from: the source frame in
`track`, the annotated view in `live`. Sinks that only need the instances ignore it. A frame that
could not be read arrives as `instances.missing` (and `frame.image` None): it keeps its position.

The sinks that write files also have `abort()`, called instead of `close()` when a run fails before
any frame reached them (e.g. another output could not be opened): nothing is published and a file
already at the output path stays as it was (`abort_all`).

The sinks: `AnnotatedVideoSink` (draw + encode), `VideoJsonSink` (YouTube-VIS results, via
`ResultsJson`), `InstancePngSink` and `MotsTxtSink` (`sipvis.io.formats`), `WindowSink` (show in a
window), and for live runs `Recorder` (record the annotated view, started and stopped at will) and
`SnapshotSink` (save the frame on screen as PNG + JSON on request).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from sipvis.errors import SipvisError
from sipvis.io.background import media_warning
from sipvis.io.files import write_bytes_atomic, write_json_atomic
from sipvis.io.render import Renderer
from sipvis.io.source import Frame, FrameSource
from sipvis.io.video_writer import VideoWriter
from sipvis.io.ytvis_results import VideoResultsBuilder, encode_rle, write_results_json
from sipvis.results import FrameInstances


class StopRequested(Exception):
    """Raised by a sink to end the run early and cleanly (e.g. the user pressed q in the window)."""


class Sink(Protocol):
    """Receives every processed frame in order and is closed once at the end."""

    def write(self, frame: Frame, instances: FrameInstances) -> None: ...

    def close(self) -> None: ...


def close_all(sinks: Iterable[Sink], failure: BaseException | None = None) -> None:
    """Close every sink, even when one fails (a full disk under the JSON must not lose the video).

    The first error decides: `failure` (what already ended the run, which the caller re-raises) or else
    the first error of a close, raised here. Every other distinct error is reported as a `MediaWarning`,
    so none is lost."""
    errors = [] if failure is None else [failure]
    for sink in sinks:
        try:
            sink.close()
        except Exception as exc:  # noqa: BLE001 - every sink gets its close; the first error is re-raised
            errors.append(exc)
    _report(errors, raise_first=failure is None)


def abort_all(sinks: Iterable[Sink], failure: BaseException | None = None) -> None:
    """Drop the outputs of a run that failed before any frame reached them: `abort()` each sink (`close()`
    for a sink without one), so no empty output replaces a file already at its path. Errors as `close_all`."""
    errors = [] if failure is None else [failure]
    for sink in sinks:
        try:
            getattr(sink, "abort", sink.close)()
        except Exception as exc:  # noqa: BLE001 - every sink is dropped; the first error is re-raised
            errors.append(exc)
    _report(errors, raise_first=failure is None)


def _report(errors: list[BaseException], raise_first: bool) -> None:
    """Raise `errors[0]` (if `raise_first`), and warn about every later error with another message."""
    seen: set[str] = set()
    for k, exc in enumerate(errors):
        if str(exc) in seen:  # a writer repeats its own failure when it is closed
            continue
        seen.add(str(exc))
        if k:
            media_warning(str(exc))
    if errors and raise_first:
        raise errors[0]


class AnnotatedVideoSink:
    """Draws instances on the source frame and encodes it with the source's size, rate and timestamps.

    Args:
        path: output video file.
        source: the input (size, fps, time base, audio).
        class_names: label index -> name for the captions.
        trails: draw each track's recent path.
    """

    def __init__(self, path: str | Path, source: FrameSource, class_names, trails: bool = False) -> None:
        audio = source.spec if source.has_audio and not source.is_live else None
        self.writer = VideoWriter(path, source.width, source.height, source.fps, source.time_base, audio_from=audio)
        self.renderer = Renderer(class_names, alpha=0.5, trails=trails)

    def write(self, frame: Frame, instances: FrameInstances) -> None:
        if instances.missing:  # no picture: the previous frame stays on screen until the next one
            return
        self.writer.write(self.renderer.draw(frame.image, instances), frame.pts)

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class WindowSink:
    """Shows each annotated frame in a window (created in the writer thread, which then owns it).

    Args:
        open_window: builds the window object (`show(image)`, `poll() -> key`, `closed()`, `close()`).
        class_names: label index -> name for the captions.
    q, Esc or closing the window ends the run cleanly (outputs are finished, exit status 0).
    """

    def __init__(self, open_window, class_names, trails: bool = False) -> None:
        self.open_window = open_window
        self.window = None
        self.renderer = Renderer(class_names, alpha=0.5, trails=trails)

    def write(self, frame: Frame, instances: FrameInstances) -> None:
        if instances.missing:
            return
        if self.window is None:
            self.window = self.open_window()
        self.window.show(self.renderer.draw(frame.image, instances))
        if self.window.poll() in (ord("q"), 27) or self.window.closed():
            raise StopRequested()

    def close(self) -> None:
        if self.window is not None:
            self.window.close()


class ResultsJson:
    """One YouTube-VIS results file for one or more videos (video ids 1, 2, ... in input order).

    The file is rewritten atomically each time a video finishes, so an interrupted run leaves a valid
    JSON of every video processed so far (including the interrupted one, up to its last frame).
    """

    def __init__(self, path: str | Path, category_ids: Sequence[int] = ()) -> None:
        self.path = Path(path)
        self.category_ids = tuple(category_ids)  # label -> dataset category id; empty: label + 1
        self.entries: list[dict] = []

    def video(self, video_id: int, first_frame_quirk: bool = True) -> "VideoJsonSink":
        """The sink of one video. `first_frame_quirk`: apply the instances' `score_corrections`."""
        return VideoJsonSink(self, video_id, first_frame_quirk)

    def add(self, entries: list[dict]) -> None:
        self.entries.extend(entries)
        write_results_json(self.path, self.entries)


class VideoJsonSink:
    """Aggregates one video's frames per track and hands them to its `ResultsJson` at close.

    `first_frame_quirk` applies the `score_corrections` the frames carry (the original tracker's
    first-frame score overwrite, see `FrameInstances`), which the reference outputs of the original
    code contain. A track's category is its latest `track_classes` entry when the frames carry one
    (the robust tracker's class vote), else its most frequent label.
    """

    def __init__(self, target: ResultsJson, video_id: int, first_frame_quirk: bool = True) -> None:
        self.target = target
        self.builder = VideoResultsBuilder(video_id)
        self.first_frame_quirk = first_frame_quirk
        self._positions: dict[int, int] = {}  # frame index -> position in `segmentations`
        self._corrections: dict[tuple[int, int], float] = {}
        self._classes: dict[int, int] = {}  # track id -> latest voted class

    def write(self, frame: Frame | None, instances: FrameInstances) -> None:
        self._positions[instances.index] = self.builder.num_frames
        self.builder.add(instances)
        self._corrections.update(instances.score_corrections)
        self._classes.update(instances.track_classes)

    def close(self) -> None:
        overrides = {}
        if self.first_frame_quirk:
            overrides = {(self._positions[index], track_id): score
                         for (index, track_id), score in self._corrections.items() if index in self._positions}
        self.target.add(self.builder.results(overrides, self._classes, self.target.category_ids))

    def abort(self) -> None:
        """Add nothing: the results file is not rewritten for this video."""


class Recorder:
    """Records the frames it is given (live: the annotated view); `start`/`stop` any number of times, one
    file per start. Frames written while not recording are skipped.

    Args:
        path: the first recording's file (.mp4/.mkv/.mov/.avi); later ones get `_2`, `_3`... None: each
            start creates `sipvis_live_<date>-<time>.mp4` in `folder`.
        width, height, fps: frame size and nominal rate.
        time_base: the unit of the `pts` of the frames written (a file played through: its own clock;
            a camera or stream: the arrival clock in ms, so a recording plays in real time, dropped
            frames included, the previous frame staying on screen).
    """

    def __init__(self, path: str | Path | None, width: int, height: int, fps: float | Fraction,
                 time_base: Fraction, folder: str | Path = ".") -> None:
        self.path = Path(path) if path is not None else None
        self.folder = Path(folder)
        self.size = (width, height)
        self.fps = fps
        self.time_base = time_base
        self.files: list[Path] = []
        self._writer: VideoWriter | None = None
        self._count = 0

    @property
    def recording(self) -> bool:
        return self._writer is not None

    def _next_path(self) -> Path:
        self._count += 1
        if self.path is None:
            path = self.folder / f"sipvis_live_{datetime.now():%Y%m%d-%H%M%S}.mp4"
        elif self._count == 1:
            path = self.path
        else:
            path = self.path.with_name(f"{self.path.stem}_{self._count}{self.path.suffix}")
        n = 2
        base = path
        while path.exists() and path not in self.files and self.path is None:
            path = base.with_name(f"{base.stem}_{n}{base.suffix}")
            n += 1
        return path

    def start(self) -> Path:
        if self._writer is None:
            path = self._next_path()
            self._writer = VideoWriter(path, *self.size, self.fps, self.time_base)
            self.files.append(path)
        return self._writer.path

    def stop(self) -> Path | None:
        """Finish the current file (playable); returns its path, or None if not recording."""
        writer, self._writer = self._writer, None
        if writer is None:
            return None
        writer.close()
        return writer.path if writer.frames_written else None

    def toggle(self) -> tuple[bool, Path | None]:
        """Start or stop; returns (recording now, the file started or finished)."""
        if self.recording:
            return False, self.stop()
        return True, self.start()

    def write(self, frame: Frame, instances: FrameInstances) -> None:
        if self._writer is not None:
            self._writer.write(frame.image, frame.pts)

    def close(self) -> None:
        self.stop()


class SnapshotSink:
    """Keeps the last frame written (live: the annotated view on screen) and saves it on request
    (`take`) as `sipvis_snapshot_<date>-<time>_<frame>.png` + `.json` (its instances, `snapshot_dict`).

    Args:
        folder: where snapshots go (created when the first is taken).
        class_names: label index -> name, for the JSON.
        source: the input's name, for the JSON.
    """

    def __init__(self, folder: str | Path, class_names: Sequence[str], source: str = "") -> None:
        self.folder = Path(folder)
        self.class_names = class_names
        self.source = source
        self.last: tuple[Frame, FrameInstances] | None = None

    def write(self, frame: Frame, instances: FrameInstances) -> None:
        self.last = (frame, instances)

    def take(self) -> tuple[Path, Path] | None:
        """Save the last frame; returns (png, json), or None before the first frame.

        Raises:
            SipvisError: the folder is not writable.
        """
        if self.last is None:
            return None
        frame, instances = self.last
        return write_snapshot(self.folder, frame.image, instances, self.class_names, self.source)

    def close(self) -> None:
        """Nothing is held open; present for the common sink interface."""


def snapshot_dict(instances: FrameInstances, class_names: Sequence[str], source: str = "") -> dict:
    """The instances of one frame as JSON-ready data (masks as COCO compressed RLE, category ids 1-based)."""
    out = []
    for k in np.argsort(-instances.scores, kind="stable"):
        label = int(instances.labels[k])
        out.append({
            "track_id": int(instances.track_ids[k]),
            "category_id": label + 1,
            "class": class_names[label] if 0 <= label < len(class_names) else f"class{label}",
            "score": round(float(instances.scores[k]), 6),
            "box": [round(float(v), 2) for v in instances.boxes[k]],  # x1, y1, x2, y2 in pixels
            "segmentation": encode_rle(instances.masks[k]),
        })
    return {"source": source, "frame": instances.index, "timestamp": instances.timestamp,
            "width": instances.width, "height": instances.height, "instances": out}


def write_snapshot(folder: str | Path, image: np.ndarray, instances: FrameInstances, class_names: Sequence[str],
                   source: str = "") -> tuple[Path, Path]:
    """Write `sipvis_snapshot_<date>-<time>_<frame>.png` (the annotated image) and `.json` (its instances).

    Raises:
        SipvisError: the folder is not writable.
    """
    folder = Path(folder)
    stem = folder / f"sipvis_snapshot_{datetime.now():%Y%m%d-%H%M%S}_{instances.index:06d}"
    png, js = stem.with_suffix(".png"), stem.with_suffix(".json")
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise SipvisError(f"cannot write snapshot {png}: OpenCV could not encode the PNG")
    # each file whole or not at all (errors name the file), and never a PNG without its JSON
    write_bytes_atomic(png, data.tobytes())
    try:
        write_json_atomic(js, snapshot_dict(instances, class_names, source), indent=1)
    except BaseException:
        png.unlink(missing_ok=True)
        raise
    return png, js
