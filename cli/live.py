"""`sipvis live`: segment and track a camera, a stream or a file played in real time, in a window or headless."""

from __future__ import annotations

from pathlib import Path

import click

from sipvis.cli._model_options import build_segmenter, model_options, resolve_tracker, tracker_option
from sipvis.cli._options import COUNT, DURATION, NON_NEGATIVE, RATE
from sipvis.cli._window import Window as _Window
from sipvis.cli._window import check_display
from sipvis.errors import SipvisError

WINDOW = "sipvis live"
KEYS_HELP = "q/Esc quit, space pause, s snapshot, r record"


@click.command("live")
@click.option("--camera", type=NON_NEGATIVE, default=None, help="Camera number (default 0 when no --source is given).")
@click.option("--source", default=None, help="A stream URL (rtsp://, http://...) or a file (with --realtime, "
                                             "played at its own frame rate, as a camera would deliver it).")
@click.option("--width", type=COUNT, default=None, help="Camera frame width to ask for.")
@click.option("--height", type=COUNT, default=None, help="Camera frame height to ask for.")
@click.option("--fps", type=RATE, default=None, help="Camera frame rate to ask for.")
@click.option("--realtime", is_flag=True, help="Play a file at its own frame rate (frames the model cannot keep "
                                               "up with are dropped); without it a file is read as fast as the "
                                               "model takes frames.")
@model_options(batch=False)
@click.option("--no-drop", is_flag=True, help="Process every frame (latency grows when the model is slower than "
                                              "the source); default: always take the newest frame.")
@click.option("--output", "-o", default=None, help="Record the annotated stream to this video file (r toggles).")
@click.option("--json", "json_path", default=None, help="Write the run's tracked results (YouTube-VIS JSON).")
@click.option("--no-window", is_flag=True, help="Headless: no window, a status line every second.")
@click.option("--duration", type=DURATION, default=None, help="Stop after this many seconds.")
@click.option("--reconnect", type=NON_NEGATIVE, default=5, show_default=True,
              help="Tries to reopen a stream that drops (back-off 1, 2, 4... s) before giving up.")
@tracker_option()
def command(camera, source, width, height, fps, realtime, weights, device, precision, class_filter, score_thr,
            max_dets, no_drop, output, json_path, no_window, duration, reconnect, tracker) -> None:
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
    if output is not None:
        from sipvis.io.video_writer import CONTAINERS

        if Path(output).suffix.lower() not in CONTAINERS:
            raise SipvisError(f"--output {output}: use a video file ({', '.join(CONTAINERS)})")
    if not no_window:
        check_display()  # before loading a model: fail in a second, not after it
    opened = open_input(camera, source, width, height, fps)
    try:
        from sipvis.engine.track_run import check_outputs

        # a recording or JSON onto the file being played would replace it when the run ends
        check_outputs([(kind, Path(p)) for kind, p in (("video", output), ("json", json_path)) if p],
                      opened[0].input_files())
        segmenter, keep = build_segmenter(weights, device, precision, 1, score_thr, max_dets, class_filter)
        tracker = resolve_tracker(tracker, segmenter)
    except BaseException:
        opened[0].close()
        raise
    run(opened, segmenter, keep, realtime=realtime, drop=not no_drop, output=output, json_path=json_path,
        show_window=not no_window, duration=duration, reconnect=reconnect, tracker=tracker)


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


def run(opened, segmenter, keep_classes, *, realtime: bool, drop: bool, output: str | None, json_path: str | None,
        show_window: bool, duration: float | None, reconnect: int, snapshot_dir: str | Path = ".",
        tracker: str = "original") -> str:
    """Run the live loop (`sipvis.engine.live_run.LiveRun`) in a window or headless, printing what happens;
    outputs are finished in every case.

    Args:
        opened: (source, reopen) from `open_input`.
        segmenter, keep_classes: from `build_segmenter`.
        snapshot_dir: where `s` snapshots and `r` recordings without --output go.
        tracker: 'original' or 'robust'.

    Returns the end reason. Raises SipvisError when a camera or stream is lost (after its outputs are saved).
    """
    from rich.console import Console

    from sipvis.engine.live_run import LiveRun

    source, reopen = opened
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    live = LiveRun(source, segmenter, keep_classes, reopen=reopen, realtime=realtime, drop=drop, output=output,
                   json_path=json_path, duration=duration, reconnect=reconnect, snapshot_dir=snapshot_dir,
                   on_event=lambda m: console.print(m), tracker=tracker)
    hud = _Hud(_device_text(segmenter))
    try:
        view = _LiveView(_Window(WINDOW), live, hud, console) if show_window else None
    except BaseException:
        source.close()
        raise

    def started() -> None:
        console.print(f"{source.name}: {source.width}x{source.height} @ {float(source.fps):.3g} fps on "
                      f"{hud.device_text}" + (f"; keys: {KEYS_HELP}" if show_window else ""))

    def status(elapsed: float) -> None:
        console.print(_status_line(live.metrics, elapsed, live.shown, hud.device_text, live.paused))

    try:
        return live.run(view, on_started=started, on_status=status)
    finally:
        if live.stream.started:
            console.print(f"{source.name}: {live.metrics.summary()} ({live.stream.end_reason or 'error'})")
        for path in live.recorder.files:
            if path.exists():
                console.print(f"recording: {path}")
        if json_path and Path(json_path).exists():
            console.print(f"results: {json_path}")


class _LiveView:
    """The window of a live run: each frame with the HUD over it, and the keys mapped to the run's requests."""

    def __init__(self, gui, live, hud: _Hud, console) -> None:
        self.gui = gui
        self.live = live
        self.hud = hud
        self.console = console

    def show(self, annotated, result) -> None:
        lines = self.hud.lines(self.live.metrics, len(result.instances), self.live.recording, self.live.paused)
        self.gui.show(_Hud.draw(annotated.copy(), lines))

    def poll(self) -> None:
        key = self.gui.poll()
        if key >= 0:
            self.on_key(key)
        if self.gui.closed():
            self.live.quit()

    def on_key(self, key: int) -> None:
        live, console = self.live, self.console
        if key in (ord("q"), ord("Q"), 27):
            live.quit()
        elif key == ord(" "):
            console.print("paused" if live.toggle_pause() else "resumed")
            if live.shown is not None:
                self.show(*live.shown)
        elif key in (ord("s"), ord("S")):
            try:  # an unwritable snapshot folder is reported; the session goes on
                saved = live.snapshot()
            except SipvisError as exc:
                console.print(f"snapshot failed: {exc}")
                return
            console.print("snapshot: no frame yet" if saved is None else f"snapshot: {saved[0]}, {saved[1]}")
        elif key in (ord("r"), ord("R")):
            try:
                recording, path = live.toggle_recording()
            except SipvisError as exc:
                console.print(f"recording failed: {exc}")
                return
            if recording:
                console.print(f"recording to {path}")
            else:
                console.print(f"recording saved: {path}" if path else "recording stopped (no frame)")

    def close(self) -> None:
        self.gui.close()


def _status_line(metrics, elapsed: float, shown_frame, device_text: str, paused: bool) -> str:
    latency = "-" if metrics.latency_ms is None else f"{metrics.latency_ms:.0f} ms"
    tracks = len(shown_frame[1].instances) if shown_frame is not None else 0
    return (f"[{elapsed:6.1f} s] in {metrics.fps_in():5.1f} fps | out {metrics.fps_out():5.1f} fps | "
            f"latency {latency} | tracks {tracks} | dropped {metrics.dropped} | {device_text}"
            + (" | paused" if paused else ""))
