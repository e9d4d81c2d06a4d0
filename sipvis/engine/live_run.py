"""The `live` run, callable from Python: a `LiveStream` whose results are drawn once and written to the
live sinks (recording, results JSON, snapshots), until the input ends, `quit()`, a duration or a stop
signal (Ctrl-C, SIGTERM, SIGHUP: `sipvis.engine.stop`).

The caller shows and prints: an optional `LiveView` gets each annotated frame and is polled between
frames (a window: keys call `toggle_pause`, `snapshot`, `toggle_recording`, `quit`); without one,
`on_status(elapsed)` is called once a second. Example (headless)::

    live = LiveRun(open_source("clip.mp4", threaded=False), segmenter, realtime=True, json_path="out.json",
                   duration=10)
    reason = live.run()
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

from sipvis.engine.inference import Segmenter
from sipvis.engine.live import (INPUT_LOST, INTERRUPTED, RECONNECT_ATTEMPTS, STOPPED, STREAM_LOST, LiveMetrics,
                                LiveResult, LiveStream)
from sipvis.engine.pipeline import OutputFilter
from sipvis.engine.stop import StopSignals, stop_signals
from sipvis.errors import SipvisError
from sipvis.io.camera import CameraSource
from sipvis.io.render import Renderer
from sipvis.io.sinks import Recorder, ResultsJson, SnapshotSink, Sink, close_all
from sipvis.io.source import Frame, FrameSource
from sipvis.track import new_tracker

STATUS_EVERY_S = 1.0
ARRIVAL_CLOCK = Fraction(1, 1000)  # recordings of cameras and streams count milliseconds of arrival


class LiveView(Protocol):
    """What shows a live run: gets each annotated frame, is polled between frames, closed at the end."""

    def show(self, annotated: np.ndarray, result: LiveResult) -> None: ...

    def poll(self) -> None: ...

    def close(self) -> None: ...


class LiveRun:
    """One live run of `source` (from `cli.live.open_input` or `open_source(..., threaded=False)`).

    Args:
        segmenter: the model; keep_classes: label indices to show and write (None: all).
        reopen: opens a network stream again after it drops (None: no reconnection).
        realtime: play a file at its own frame rate; drop: take the newest frame (where frames arrive
            on their own clock: a live source or `realtime`), else process every frame.
        output: record the annotated stream to this file from the start (None: only when asked).
        json_path: write the run's tracked results (YouTube-VIS JSON) there at the end.
        duration: stop after this many seconds; reconnect: tries to reopen a stream that drops.
        snapshot_dir: where snapshots and recordings without `output` go.
        on_event: one-line messages of the stream (reconnecting...), from the capture thread.
        tracker: 'original' or 'robust' (`sipvis.track.new_tracker`).

    Outputs are finished whatever ends the run. `run()` returns the end reason and raises SipvisError
    when a camera or stream is lost (after its outputs are saved).
    """

    def __init__(self, source: FrameSource, segmenter: Segmenter, keep_classes: set[int] | None = None, *,
                 reopen: Callable[[], FrameSource] | None = None, realtime: bool = False, drop: bool = True,
                 output: str | Path | None = None, json_path: str | Path | None = None,
                 duration: float | None = None, reconnect: int = RECONNECT_ATTEMPTS,
                 snapshot_dir: str | Path = ".", on_event: Callable[[str], None] | None = None,
                 tracker: str = "original") -> None:
        self.source = source
        self.output = output
        self.duration = duration
        # drop frames where they arrive on their own clock; a file read as fast as possible can wait for the model
        live_clock = source.is_live or realtime
        self.stream = LiveStream(source, segmenter, drop=drop and live_clock, realtime=realtime, reopen=reopen,
                                 output_filter=OutputFilter(keep_classes), tracker=new_tracker(tracker),
                                 on_event=on_event, reconnect_attempts=reconnect)
        self.renderer = Renderer(segmenter.class_names, alpha=0.5)
        # a file played through keeps its own timestamps; a camera or stream records its arrival times
        source_clock = None if source.is_live else source.time_base
        self._arrival_clock = source_clock is None
        self.recorder = Recorder(output, source.width, source.height, source.fps, source_clock or ARRIVAL_CLOCK,
                                 folder=snapshot_dir)
        self.snapshots = SnapshotSink(snapshot_dir, segmenter.class_names, source.name)
        json_sink = [ResultsJson(json_path, segmenter.cfg.category_ids).video(1)] if json_path else []
        self.sinks: list[Sink] = [self.recorder, *json_sink, self.snapshots]  # in writing order
        self.shown: tuple[np.ndarray, LiveResult] | None = None  # the annotated frame on screen now
        self.quit_requested = False

    # -- state and requests (keys) -------------------------------------------------------------

    @property
    def metrics(self) -> LiveMetrics:
        return self.stream.metrics

    @property
    def paused(self) -> bool:
        return self.stream.paused

    @property
    def recording(self) -> bool:
        return self.recorder.recording

    def toggle_pause(self) -> bool:
        """Pause or resume the model (the view keeps the last frame); returns whether it is paused now."""
        self.stream.paused = not self.stream.paused
        return self.stream.paused

    def snapshot(self) -> tuple[Path, Path] | None:
        """Save the frame on screen (PNG + JSON); None before the first frame."""
        return self.snapshots.take()

    def toggle_recording(self) -> tuple[bool, Path | None]:
        """Start or stop recording; returns (recording now, the file started or finished)."""
        return self.recorder.toggle()

    def quit(self) -> None:
        """End the run after the frame the model holds."""
        self.quit_requested = True

    # -- the loop ------------------------------------------------------------------------------

    def run(self, view: LiveView | None = None, on_started: Callable[[], None] | None = None,
            on_status: Callable[[float], None] | None = None) -> str | None:
        """Run until the input ends, `quit()`, the duration or a stop signal; returns the end reason.

        `on_started()` follows the start of the recording asked for by `output` (so an unwritable
        output fails before anything is announced). The view is closed at the end.
        """
        start = time.perf_counter()
        # a first stop signal (Ctrl-C, SIGTERM, SIGHUP) ends the loop between two frames; see sipvis.engine.stop
        with stop_signals(polling=True) as stop, contextlib.ExitStack() as finishing:
            try:
                if self.output:
                    self.recorder.start()
                if on_started is not None:
                    on_started()
                with self.stream:
                    self._loop(view, on_status, stop, start)
                    finishing.enter_context(stop.shielded())  # the loop is over: only outputs are left to finish
                reason = self.stream.end_reason
            finally:
                with stop.shielded():  # a signal now would lose the outputs being finished
                    self._finish(view)
        self._raise_if_lost(reason)
        return reason

    def _finish(self, view: LiveView | None) -> None:
        try:
            self.stream.close()  # also when it never started (an unwritable output)
        finally:
            try:
                if view is not None:
                    view.close()
            finally:
                self._close_sinks()

    def _loop(self, view: LiveView | None, on_status, stop: StopSignals, start: float) -> None:
        stopping = False
        next_status = start + STATUS_EVERY_S
        try:
            for result in self.stream.results(timeout=0.02 if view is not None else 0.05):
                if result is not None:
                    self._handle(result, view)
                now = time.perf_counter()
                if view is not None:
                    view.poll()
                elif now >= next_status:
                    next_status += STATUS_EVERY_S * max(1, int((now - next_status) // STATUS_EVERY_S) + 1)
                    if on_status is not None:
                        on_status(now - start)
                timed_out = self.duration is not None and now - start >= self.duration
                if not stopping and (stop.requested is not None or self.quit_requested or timed_out):
                    # the frame the model holds still comes out, then the loop ends
                    self.stream.stop(INTERRUPTED if stop.requested is not None else STOPPED)
                    stopping = True
        except KeyboardInterrupt:  # a second stop signal, or Ctrl-C in library use outside the main thread
            self.stream.stop(INTERRUPTED)
            try:  # what the model already holds still reaches the outputs
                for result in self.stream.results(timeout=0.05):
                    if result is not None:
                        self._write(result, self.renderer.draw(result.frame.image, result.instances))
                        self.stream.shown(result)
            except KeyboardInterrupt:
                pass

    def _handle(self, result: LiveResult, view: LiveView | None) -> None:
        annotated = self.renderer.draw(result.frame.image, result.instances)
        self._write(result, annotated)
        self.shown = (annotated, result)
        if view is not None:
            view.show(annotated, result)
        self.stream.shown(result)

    def _write(self, result: LiveResult, annotated: np.ndarray) -> None:
        """Every sink gets the annotated frame, stamped on the recording's clock."""
        f = result.frame
        pts = round(result.arrived * 1000) if self._arrival_clock else f.pts  # a recording starts each file at 0
        frame = Frame(f.index, annotated, f.timestamp, pts, ARRIVAL_CLOCK if self._arrival_clock else f.time_base)
        for sink in self.sinks:
            sink.write(frame, result.instances)

    def _close_sinks(self) -> None:
        """Close every sink; then raise the first error one of them had."""
        close_all(self.sinks)

    def _raise_if_lost(self, reason: str | None) -> None:
        if reason == INPUT_LOST:
            what = f"camera {self.source.device}" if isinstance(self.source, CameraSource) else self.source.name
            raise SipvisError(f"{what} stopped delivering frames (disconnected?); outputs saved")
        if reason == STREAM_LOST:
            raise SipvisError(f"{self.source.name}: the stream was lost and could not be reopened; outputs saved")
