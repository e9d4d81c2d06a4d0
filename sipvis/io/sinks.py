"""Sinks: what the tracking pipeline writes each processed frame to (annotated video, YouTube-VIS JSON).

Each sink has `write(frame, instances)` (called in frame order, in the writer thread) and `close()`
(called once, also after an error or Ctrl-C, so what was processed is saved as a valid file).
"""

from __future__ import annotations

from pathlib import Path

from sipvis.io.render import Renderer
from sipvis.io.source import Frame, FrameSource
from sipvis.io.video_writer import VideoWriter
from sipvis.io.ytvis_results import VideoResultsBuilder, write_results_json
from sipvis.results import FrameInstances
from sipvis.track.tracker import OriginalTracker


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
        self.writer.write(self.renderer.draw(frame.image, instances), frame.pts)

    def close(self) -> None:
        self.writer.close()


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
        from sipvis.engine.pipeline import StopRequested

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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: list[dict] = []

    def video(self, video_id: int, tracker: OriginalTracker, first_frame_quirk: bool = True) -> "VideoJsonSink":
        return VideoJsonSink(self, video_id, tracker, first_frame_quirk)

    def add(self, entries: list[dict]) -> None:
        self.entries.extend(entries)
        write_results_json(self.path, self.entries)


class VideoJsonSink:
    """Aggregates one video's frames per track and hands them to its `ResultsJson` at close.

    `first_frame_quirk` applies the original's first-frame score overwrite (see `OriginalTracker`),
    which the reference outputs of the original code contain.
    """

    def __init__(self, target: ResultsJson, video_id: int, tracker: OriginalTracker, first_frame_quirk: bool) -> None:
        self.target = target
        self.builder = VideoResultsBuilder(video_id)
        self.tracker = tracker
        self.first_frame_quirk = first_frame_quirk
        self._positions: dict[int, int] = {}

    def write(self, frame: Frame, instances: FrameInstances) -> None:
        self._positions[instances.index] = self.builder.num_frames
        self.builder.add(instances)

    def close(self) -> None:
        overrides = {}
        first = self.tracker.first_frame_index
        if self.first_frame_quirk and first in self._positions:
            overrides = {(self._positions[first], t + 1): s for t, s in self.tracker.first_frame_scores.items()}
        self.target.add(self.builder.results(overrides))
