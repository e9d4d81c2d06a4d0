"""`track --show`: frames go to a window; q ends the run cleanly with valid outputs."""

from __future__ import annotations

import json

import numpy as np

from conftest import REFERENCE, require
from models import tiny_checkpoint
from sipvis.engine.inference import Segmenter
from sipvis.engine.pipeline import track_source
from sipvis.io.inputs import open_source
from sipvis.io.sinks import ResultsJson, WindowSink
from sipvis.track.tracker import OriginalTracker


class ScriptedWindow:
    """Records shown images and presses q after `quit_after` frames."""

    def __init__(self, quit_after: int) -> None:
        self.shown: list[np.ndarray] = []
        self.quit_after = quit_after
        self.closed_called = False

    def show(self, image: np.ndarray) -> None:
        self.shown.append(image)

    def poll(self) -> int:
        return ord("q") if len(self.shown) >= self.quit_after else -1

    def closed(self) -> bool:
        return False

    def close(self) -> None:
        self.closed_called = True


def test_q_in_the_window_stops_cleanly(tmp_path):
    segmenter = Segmenter.from_checkpoint(str(tiny_checkpoint(tmp_path)), device="cpu")
    source = open_source(require(REFERENCE / "clip_a" / "frames"), threaded=False)
    window = ScriptedWindow(quit_after=2)
    tracker = OriginalTracker()
    sinks = [WindowSink(lambda: window, segmenter.class_names), ResultsJson(tmp_path / "o.json").video(1)]
    track_source(source, segmenter, sinks, tracker)
    assert window.closed_called and len(window.shown) == 2
    frame0 = next(iter(open_source(REFERENCE / "clip_a" / "frames", threaded=False))).image
    assert window.shown[0].shape == frame0.shape and not np.array_equal(window.shown[0], frame0)  # annotated
    entries = json.loads((tmp_path / "o.json").read_text())
    assert entries and all(1 <= len(e["segmentations"]) <= 3 for e in entries)


def test_track_inputs_runs_from_python_with_progress_and_done_callbacks(tmp_path):
    """The `track` run without the CLI: the caller gets the frames as they go and each input's summary."""
    import contextlib

    from sipvis.engine.track_run import track_inputs
    from sipvis.io.source import FrameRange

    segmenter = Segmenter.from_checkpoint(str(tiny_checkpoint(tmp_path)), device="cpu")
    advanced, done = [], []

    @contextlib.contextmanager
    def progress(source):
        yield advanced.append

    plan = track_inputs([str(require(REFERENCE / "clip_a" / "frames"))], [str(tmp_path / "out.json")], (), segmenter,
                        frame_range=FrameRange(max_frames=3), progress=progress,
                        on_done=lambda source, stats, paths: done.append((stats.frames, paths)))
    assert plan.per_input == [{"json": [tmp_path / "out.json"]}]
    assert sum(advanced) == 3 and done == [(3, {"json": [tmp_path / "out.json"]})]
    assert all(len(e["segmentations"]) == 3 for e in json.loads((tmp_path / "out.json").read_text()))
