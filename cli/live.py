"""`sipvis live`: segment and track a camera, a stream or a file played in real time, in a window or headless."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click

from sipvis.cli._model_options import build_segmenter, model_options
from sipvis.cli._window import Window as _Window
from sipvis.cli._window import check_display

WINDOW = "sipvis live"
KEYS_HELP = "q/Esc quit, space pause, s snapshot, r record"
STATUS_EVERY_S = 1.0


@click.command("live")
@click.option("--camera", type=int, default=None, help="Camera number (default 0 when no --source is given).")
@click.option("--source", default=None, help="A stream URL (rtsp://, http://...) or a file (with --realtime, "
                                             "played at its own frame rate, as a camera would deliver it).")
@click.option("--width", type=int, default=None, help="Camera frame width to ask for.")
@click.option("--height", type=int, default=None, help="Camera frame height to ask for.")
@click.option("--fps", type=float, default=None, help="Camera frame rate to ask for.")
@click.option("--realtime", is_flag=True, help="Play a file at its own frame rate (frames the model cannot keep "
                                               "up with are dropped); without it a file is read as fast as the "
                                               "model takes frames.")
@model_options(batch=False)
@click.option("--no-drop", is_flag=True, help="Process every frame (latency grows when the model is slower than "
                                              "the source); default: always take the newest frame.")
@click.option("--output", "-o", default=None, help="Record the annotated stream to this video file (r toggles).")
@click.option("--json", "json_path", default=None, help="Write the run's tracked results (YouTube-VIS JSON).")
@click.option("--no-window", is_flag=True, help="Headless: no window, a status line every second.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--reconnect", type=int, default=5, show_default=True,
              help="Tries to reopen a stream that drops (back-off 1, 2, 4... s) before giving up.")
def command(camera, source, width, height, fps, realtime, weights, device, precision, class_filter, score_thr,
            max_dets, no_drop, output, json_path, no_window, duration, reconnect) -> None:
    """Live segmentation and tracking of a camera, stream or file, with bounded latency.

    The model always works on the newest frame: when it is slower than the source, frames are dropped,
    so the view never falls behind. Keys in the window: q/Esc quit, space pause, s snapshot (PNG + JSON
    of the current frame), r start/stop recording.

    \b
    Examples:
      sipvis live --camera 0
      sipvis live --camera 0 --width 1280 --height 720 --fps 30 -o live.mp4
      sipvis live --source rtsp://192.168.1.10/stream --classes person
      sipvis live --source clip.mp4 --realtime --no-window --duration 10 --json out.json
    """
    from sipvis.errors import SipvisError

    if camera is not None and source is not None:
        raise SipvisError("give either --camera or --source, not both")
    if source is not None and (width or height or fps):
        raise SipvisError("--width/--height/--fps are requests to a camera; with --source the stream decides")
    if duration is not None and duration <= 0:
        raise SipvisError(f"--duration must be positive, got {duration:g}")
    if reconnect < 0:
        raise SipvisError(f"--reconnect must be 0 or more, got {reconnect}")
    if output is not None:
        from sipvis.io.video_writer import CONTAINERS

        if Path(output).suffix.lower() not in CONTAINERS:
            raise SipvisError(f"--output {output}: use a video file ({', '.join(CONTAINERS)})")
    if not no_window:
        check_display()  # before loading a model: fail in a second, not after it
    opened = open_input(camera, source, width, height, fps)
    try:
        segmenter, keep = build_segmenter(weights, device, precision, 1, score_thr, max_dets, class_filter)
    except BaseException:
        opened[0].close()
        raise
    run(opened, segmenter, keep, realtime=realtime, drop=not no_drop, output=output, json_path=json_path,
        window=not no_window, duration=duration, reconnect=reconnect)


def open_input(camera, source, width, height, fps):
    """(source, reopen): the opened input and, for network streams, how to open it again after a drop."""
    from sipvis.io.inputs import open_source
    from sipvis.io.video import is_url

    if source is None:
        from sipvis.io.camera import CameraSource

        index = 0 if camera is None else camera
        return CameraSource(index, width, height, fps), None
    opened = open_source(source, threaded=False)
    reopen = (lambda: open_source(source, threaded=False)) if is_url(source) and opened.is_live else None
    return opened, reopen


class _Hud:
    """The text drawn over the live view: rates, latency, tracks, device, and the recording/pause state."""

    def __init__(self, device_text: str) -> None:
        self.device_text = device_text

    def lines(self, metrics, tracks: int, recording: bool, paused: bool) -> list[str]:
        latency = "-" if metrics.latency_ms is None else f"{metrics.latency_ms:.0f} ms"
        state = ("  PAUSED" if paused else "") + ("  REC" if recording else "")
        return [f"fps in {metrics.fps_in():.1f}  out {metrics.fps_out():.1f}",
                f"latency {latency}",
                f"tracks {tracks}  dropped {metrics.dropped}",
                f"{self.device_text}{state}"]

    @staticmethod
    def draw(image, lines: list[str]):
        """Draw `lines` in a dark panel at the top left of `image` (in place); returns it."""
        import cv2

        h, w = image.shape[:2]
        scale = max(0.45, min(1.2, min(h, w) / 720 * 0.7))
        thick = 1 if scale < 0.8 else 2
        sizes = [cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0] for line in lines]
        step = max(s[1] for s in sizes) + int(10 * scale) + 2
        pad = int(8 * scale) + 2
        pw = min(w, max(s[0] for s in sizes) + 2 * pad)
        ph = min(h, step * len(lines) + pad)
        panel = image[:ph, :pw]
        panel[:] = (panel.astype("uint16") * 3 // 10).astype("uint8")  # darken, so text reads on any frame
        for i, line in enumerate(lines):
            y = pad + step * i + sizes[i][1]
            cv2.putText(image, line, (pad, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
        return image


def _device_text(segmenter) -> str:
    from sipvis.engine.inference import precision_name

    return f"{segmenter.device} {precision_name(segmenter.dtype)}"


class _StopSignals:
    """While the live loop runs, a first Ctrl-C (or `kill`) asks it to stop between two frames, so every
    frame the model finished reaches the recording and the JSON; a second one interrupts at once.

    (A KeyboardInterrupt raised in the middle of writing a frame's outputs lost that frame: the summary
    counted it as processed, the JSON and the recording did not have it.)
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def install(self) -> "_StopSignals":
        signals = [signal.SIGINT] + ([signal.SIGTERM] if sys.platform != "win32" else [])
        for sig in signals:
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not in the main thread (library use): Ctrl-C stays a KeyboardInterrupt
                break
        return self

    def _on_signal(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def __enter__(self) -> "_StopSignals":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()


def run(opened, segmenter, keep_classes, *, realtime: bool, drop: bool, output: str | None, json_path: str | None,
        window: bool, duration: float | None, reconnect: int, snapshot_dir: str | Path = ".") -> str:
    """Run the live loop until the input ends, q/Esc, --duration or Ctrl-C; outputs are finished in every case.

    Args:
        opened: (source, reopen) from `open_input`.
        segmenter, keep_classes: from `build_segmenter`.
        snapshot_dir: where `s` snapshots and `r` recordings without --output go.

    Returns the end reason. Raises SipvisError when a camera or stream is lost (after its outputs are saved).
    """
    from rich.console import Console

    from sipvis.engine.live import INPUT_LOST, INTERRUPTED, STOPPED, STREAM_LOST, LiveStream, Recorder, write_snapshot
    from sipvis.engine.pipeline import OutputFilter
    from sipvis.errors import SipvisError
    from sipvis.io.camera import CameraSource
    from sipvis.io.render import Renderer
    from sipvis.io.sinks import ResultsJson

    source, reopen = opened
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    is_camera = isinstance(source, CameraSource)
    # drop frames where they arrive on their own clock; a file read as fast as possible can wait for the model
    live_clock = source.is_live or realtime
    stream = LiveStream(source, segmenter, drop=drop and live_clock, realtime=realtime, reopen=reopen,
                        output_filter=OutputFilter(keep_classes), on_event=lambda m: console.print(m),
                        reconnect_attempts=reconnect)
    renderer = Renderer(segmenter.class_names, alpha=0.5)
    recorder = Recorder(output, source.width, source.height, source.fps,
                        source_clock=None if source.is_live else source.time_base, folder=snapshot_dir)
    json_sink = ResultsJson(json_path).video(1, stream.tracker) if json_path else None
    hud = _Hud(_device_text(segmenter))
    shown_frame = None  # (annotated image, result) on screen now, for snapshots and pause
    state = {"quit": False}

    try:
        gui = _Window(WINDOW) if window else None
    except BaseException:
        source.close()
        raise
    stop_signals = _StopSignals().install()

    def handle(result) -> None:
        nonlocal shown_frame
        annotated = renderer.draw(result.frame.image, result.instances)
        recorder.write(annotated, result)
        if json_sink is not None:
            json_sink.write(result.frame, result.instances)
        shown_frame = (annotated, result)
        if gui is not None:
            gui.show(_Hud.draw(annotated.copy(), hud.lines(stream.metrics, len(result.instances),
                                                            recorder.recording, stream.paused)))
        stream.shown(result)

    def on_key(key: int) -> None:
        if key in (ord("q"), ord("Q"), 27):
            state["quit"] = True
        elif key == ord(" "):
            stream.paused = not stream.paused
            console.print("paused" if stream.paused else "resumed")
            if shown_frame is not None:
                annotated, result = shown_frame
                gui.show(_Hud.draw(annotated.copy(), hud.lines(stream.metrics, len(result.instances),
                                                                recorder.recording, stream.paused)))
        elif key in (ord("s"), ord("S")):
            if shown_frame is None:
                console.print("snapshot: no frame yet")
            else:
                annotated, result = shown_frame
                png, js = write_snapshot(snapshot_dir, annotated, result.instances, segmenter.class_names,
                                         source.name)
                console.print(f"snapshot: {png}, {js}")
        elif key in (ord("r"), ord("R")):
            recording, path = recorder.toggle()
            if recording:
                console.print(f"recording to {path}")
            else:
                console.print(f"recording saved: {path}" if path else "recording stopped (no frame)")

    reason = None
    stopping = False
    start = time.perf_counter()
    next_status = start + STATUS_EVERY_S
    try:
        if output:
            recorder.start()
        console.print(f"{source.name}: {source.width}x{source.height} @ {float(source.fps):.3g} fps on "
                      f"{hud.device_text}" + (f"; keys: {KEYS_HELP}" if window else ""))
        with stream:
            try:
                for result in stream.results(timeout=0.02 if gui is not None else 0.05):
                    if result is not None:
                        handle(result)
                    now = time.perf_counter()
                    if gui is not None:
                        key = gui.poll()
                        if key >= 0:
                            on_key(key)
                        if gui.closed():
                            state["quit"] = True
                    elif now >= next_status:
                        next_status += STATUS_EVERY_S * max(1, int((now - next_status) // STATUS_EVERY_S) + 1)
                        console.print(_status_line(stream.metrics, now - start, shown_frame, hud.device_text,
                                                   stream.paused))
                    timed_out = duration is not None and now - start >= duration
                    if not stopping and (stop_signals.requested or state["quit"] or timed_out):
                        # the frame the model holds still comes out, then the loop ends
                        stream.stop(INTERRUPTED if stop_signals.requested else STOPPED)
                        stopping = True
            except KeyboardInterrupt:  # a second Ctrl-C, or library use outside the main thread
                stream.stop(INTERRUPTED)
                try:  # what the model already holds still reaches the outputs
                    for result in stream.results(timeout=0.05):
                        if result is not None:
                            recorder.write(renderer.draw(result.frame.image, result.instances), result)
                            if json_sink is not None:
                                json_sink.write(result.frame, result.instances)
                            stream.shown(result)
                except KeyboardInterrupt:
                    pass
        reason = stream.end_reason
    finally:
        stream.close()  # also when it never started (an unwritable --output)
        stop_signals.restore()
        if gui is not None:
            gui.close()
        errors = []
        for close in (recorder.close, json_sink.close if json_sink is not None else None):
            if close is None:
                continue
            try:
                close()
            except SipvisError as exc:
                errors.append(exc)
        if stream.started:
            console.print(f"{source.name}: {stream.metrics.summary()} ({stream.end_reason or 'error'})")
        for path in recorder.files:
            if path.exists():
                console.print(f"recording: {path}")
        if json_path and Path(json_path).exists():
            console.print(f"results: {json_path}")
        if errors:
            raise errors[0]
    if reason == INPUT_LOST:
        what = f"camera {source.device}" if is_camera else source.name
        raise SipvisError(f"{what} stopped delivering frames (disconnected?); outputs saved")
    if reason == STREAM_LOST:
        raise SipvisError(f"{source.name}: the stream was lost and could not be reopened; outputs saved")
    return reason


def _status_line(metrics, elapsed: float, shown_frame, device_text: str, paused: bool) -> str:
    latency = "-" if metrics.latency_ms is None else f"{metrics.latency_ms:.0f} ms"
    tracks = len(shown_frame[1].instances) if shown_frame is not None else 0
    return (f"[{elapsed:6.1f} s] in {metrics.fps_in():5.1f} fps | out {metrics.fps_out():5.1f} fps | "
            f"latency {latency} | tracks {tracks} | dropped {metrics.dropped} | {device_text}"
            + (" | paused" if paused else ""))
