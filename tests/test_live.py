"""`sipvis live`: the latest-frame policy (bounded latency, dropped frames) against a deliberately slow model,
`--no-drop`, reconnection and a lost camera, the keys and HUD of the window (in process, and as a screenshot
of a real window under Xvfb), headless runs (status lines, a playable recording, a parseable JSON), Ctrl-C,
and the one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import deque
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from click.testing import CliRunner
from conftest import MEDIA, require

from sipvis.engine.inference import Segmenter
from sipvis.engine.live import END_OF_INPUT, INPUT_LOST, STOPPED, STREAM_LOST, LiveStream
from sipvis.errors import SipvisError
from sipvis.io.inputs import open_source
from sipvis.io.render import Renderer
from sipvis.io.source import FrameRange, FrameSource, RawFrame
from sipvis.model.config import SipMaskConfig
from sipvis.model.postprocess import Detections
from sipvis.results import FrameInstances

CLASSES = ("thing", "other")
STATUS_RE = re.compile(r"\[\s*[\d.]+ s\] in\s+[\d.]+ fps \| out\s+[\d.]+ fps \| latency (\d+ ms|-) \| "
                       r"tracks \d+ \| dropped \d+ \| cpu fp32")
SUMMARY_RE = re.compile(r"(\d+) frames in, (\d+) processed, (\d+) dropped")


class SlowSegmenter(Segmenter):
    """A stand-in model that takes `delay` seconds per frame and finds two fixed objects (boxes, masks and
    embeddings that keep their tracks); the real tracker and post-tracking path run on its output.
    `seen` lists the frame indices in the order the model got them."""

    def __init__(self, delay: float) -> None:  # no network: only what Segmenter's methods use
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.batch_size = 1
        self.cfg = SipMaskConfig(class_names=CLASSES, max_size=(160, 96))
        self.model = None
        self.delay = delay
        self.seen: list[int] = []

    @staticmethod
    def boxes_for(h: int, w: int) -> list[tuple[int, int, int, int]]:
        return [(w // 10, h // 5, 4 * w // 10, 4 * h // 5), (55 * w // 100, 3 * h // 10, 9 * w // 10, 9 * h // 10)]

    def preprocess(self, frames):
        return frames

    def forward(self, frames):  # the "network": takes its time in the network's thread
        time.sleep(self.delay)
        self.seen.extend(f.index for f in frames)
        return frames

    def postprocess(self, outputs, frames) -> Detections:
        b = len(frames)
        h, w = frames[0].original
        boxes = torch.tensor(self.boxes_for(h, w), dtype=torch.float32)
        masks = torch.zeros(b, 2, h, w, dtype=torch.bool)
        for k, (x1, y1, x2, y2) in enumerate(self.boxes_for(h, w)):
            masks[:, k, y1:y2, x1:x2] = True
        return Detections(boxes=boxes.expand(b, 2, 4).clone(), scores=torch.tensor([[0.9, 0.8]] * b),
                          labels=torch.tensor([[0, 1]] * b), valid=torch.ones(b, 2, dtype=torch.bool),
                          masks=masks, embeddings=torch.eye(2, 8).expand(b, 2, 8).clone())


def bikes() -> Path:
    return require(MEDIA / "bikes.mp4")  # 640x272, 25 fps, 250 frames


def run_for(stream: LiveStream, seconds: float) -> list[tuple[int, float]]:
    """Consume a started stream for `seconds`, then stop it and drain; (frame index, latency ms) per result."""
    out = []
    start = time.perf_counter()
    for result in stream.results(timeout=0.02):
        if result is not None:
            out.append((result.frame.index, stream.shown(result)))
        if time.perf_counter() - start > seconds:
            stream.stop()
    return out


# -- the latest-frame policy ------------------------------------------------------------------------


def test_realtime_file_with_slow_model_drops_frames_and_latency_stays_bounded():
    delay = 0.12  # 3x the 40 ms frame interval of the 25 fps source
    model = SlowSegmenter(delay)
    with LiveStream(open_source(bikes(), threaded=False), model, realtime=True) as stream:
        shown = run_for(stream, 3.0)
    m = stream.metrics
    indices = [i for i, _ in shown]
    latencies = [lat for _, lat in shown]
    assert len(shown) >= 8
    assert indices == sorted(set(indices))  # in order, each once
    assert model.seen == indices  # the tracker saw exactly the frames it was given, in that order
    assert max(np.diff(indices)) >= 2 and m.dropped > 0  # the model skipped to the newest frame
    assert m.processed == len(shown) and m.processed + m.dropped <= m.captured
    assert m.captured >= 2 * m.processed  # the source kept its own pace
    # latency = waiting for the model (< one step) + one model step: it does not accumulate
    bound_ms = (2 * delay + 0.04 + 0.3) * 1000  # 0.3 s of slack for a busy CI machine
    assert max(latencies) < bound_ms, latencies
    third = len(latencies) // 3
    assert np.mean(latencies[-third:]) < np.mean(latencies[:third]) + delay * 1000, latencies
    assert stream.end_reason == STOPPED


def test_no_drop_processes_every_frame_and_latency_grows():
    model = SlowSegmenter(0.12)
    with LiveStream(open_source(bikes(), threaded=False), model, realtime=True, drop=False) as stream:
        shown = run_for(stream, 2.5)
    indices = [i for i, _ in shown]
    latencies = [lat for _, lat in shown]
    assert len(indices) >= 8
    assert indices == list(range(len(indices)))  # every frame, none skipped
    assert model.seen == indices
    # the same slow model without dropping falls further behind with every frame (the contrast to the test above)
    assert latencies[-1] > latencies[0] + 0.05 * 1000 * (len(latencies) - 1) / 2


def test_file_plays_to_its_end_without_realtime():
    source = open_source(require(MEDIA / "car-detection.mp4"), max_frames=12, threaded=False)
    model = SlowSegmenter(0.0)
    with LiveStream(source, model, drop=False) as stream:
        shown = run_for(stream, 60)
    assert [i for i, _ in shown] == list(range(12))
    assert stream.end_reason == END_OF_INPUT


class FakeStream(FrameSource):
    """A live source that delivers `n` frames of 64x48 and then ends (the connection dropped)."""

    def __init__(self, n: int, value: int) -> None:
        super().__init__(FrameRange(), threaded=False)
        self.name, self.spec, self.width, self.height = "cam", "rtsp://cam/stream", 64, 48
        self.fps, self.is_live, self.n, self.value = Fraction(25), True, n, value

    def _frames(self, start):
        for i in range(self.n):
            image = np.full((48, 64, 3), self.value, np.uint8)
            yield RawFrame(i, i / 25, i, Fraction(1, 25), lambda image=image: image)


def test_stream_reconnects_with_back_off_then_gives_up():
    attempts = deque([SipvisError("connection refused"), FakeStream(3, 200)])

    def reopen():
        item = attempts.popleft() if attempts else SipvisError("connection refused")
        if isinstance(item, Exception):
            raise item
        return item

    events: list[str] = []
    stream = LiveStream(FakeStream(4, 100), SlowSegmenter(0.0), drop=False, reopen=reopen, on_event=events.append,
                        reconnect_attempts=3, reconnect_delay=0.01)
    with stream:
        shown = run_for(stream, 30)
    assert [i for i, _ in shown] == list(range(7))  # 4 frames, reconnect, 3 more, numbered on
    assert stream.end_reason == STREAM_LOST
    assert events[:4] == ["cam: stream lost; reconnecting in 0.01 s (attempt 1/3)",
                          "cam: reconnection failed: connection refused",
                          "cam: stream lost; reconnecting in 0.02 s (attempt 2/3)",
                          "cam: reconnected"]
    assert events[-1] == "cam: gave up after 3 reconnection attempts"
    assert "reconnecting in 0.04 s (attempt 3/3)" in events[-3]


def test_lost_camera_ends_cleanly_and_keeps_the_recording(tmp_path):
    from sipvis.cli.live import run
    from sipvis.io.camera import CameraSource

    camera = CameraSource(str(require(MEDIA / "car-detection.mp4")))  # OpenCV capture whose frames run out
    assert camera.is_live and (camera.width, camera.height) == (768, 432)
    out = tmp_path / "rec.mp4"
    with pytest.raises(SipvisError, match="stopped delivering frames"):
        run((camera, None), SlowSegmenter(0.0), None, realtime=False, drop=True, output=str(out),
            json_path=str(tmp_path / "r.json"), show_window=False, duration=None, reconnect=0)
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 1
    assert isinstance(json.loads((tmp_path / "r.json").read_text()), list)


def test_unknown_camera_index_is_one_line():
    from sipvis.io.camera import CameraSource

    index = 63
    if Path(f"/dev/video{index}").exists():
        pytest.skip("a camera exists at index 63")
    with pytest.raises(SipvisError, match=f"no camera at index {index}"):
        CameraSource(index)


# -- keys, HUD and the window (in process) ----------------------------------------------------------


class FakeWindow:
    """Stands in for the OpenCV window: records every image shown and presses keys on a script.

    `script` is a list of (shown_count, key): a key is pressed once at least that many images were shown."""

    last: "FakeWindow | None" = None
    script: list[tuple[int, str]] = []

    def __init__(self, title: str = "") -> None:
        self.frames: list[np.ndarray] = []
        self.pending = deque(self.script)
        FakeWindow.last = self

    def show(self, image: np.ndarray) -> None:
        self.frames.append(image.copy())

    def poll(self) -> int:
        if self.pending and len(self.frames) >= self.pending[0][0]:
            return ord(self.pending.popleft()[1])
        return -1

    def closed(self) -> bool:
        return False

    def close(self) -> None:
        pass


def frame_at(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="bgr24")
    raise AssertionError(f"no frame {index}")


def hud_region(image: np.ndarray) -> np.ndarray:
    return image[4:60, 4:100]


def test_window_keys_snapshot_record_pause_quit(tmp_path, monkeypatch):
    from sipvis.cli import live

    FakeWindow.script = [(1, "s"), (3, "r"), (5, "r"), (6, " "), (7, " "), (10, "q")]
    monkeypatch.setattr(live, "_Window", FakeWindow)
    snaps = tmp_path / "snaps"
    source = open_source(bikes(), threaded=False)
    model = SlowSegmenter(0.01)
    reason = live.run((source, None), model, None, realtime=True, drop=True, output=str(tmp_path / "rec.mp4"),
                      json_path=str(tmp_path / "run.json"), show_window=True, duration=30, reconnect=0,
                      snapshot_dir=snaps)
    assert reason == STOPPED  # by q, long before --duration
    window = FakeWindow.last
    assert len(window.frames) >= 10

    # snapshot: the annotated frame (what the renderer draws on that source frame) + its instances
    (png,) = snaps.glob("*.png")
    (js,) = snaps.glob("*.json")
    assert png.stem == js.stem
    snap = json.loads(js.read_text())
    assert (snap["width"], snap["height"], snap["source"]) == (640, 272, "bikes")
    assert [(i["track_id"], i["class"], i["category_id"]) for i in snap["instances"]] == [(1, "thing", 1), (2, "other", 2)]
    boxes = SlowSegmenter.boxes_for(272, 640)
    masks = np.stack([mask_utils.decode(i["segmentation"]).astype(bool) for i in snap["instances"]])
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        assert mask.sum() == (x2 - x1) * (y2 - y1) and mask[y1:y2, x1:x2].all()
    inst = FrameInstances(snap["frame"], 272, 640, np.array([i["box"] for i in snap["instances"]], np.float32),
                          np.array([i["score"] for i in snap["instances"]], np.float32), np.array([0, 1]),
                          np.array([1, 2]), masks)
    expected = Renderer(CLASSES, alpha=0.5).draw(frame_at(bikes(), snap["frame"]), inst)
    saved = cv2.imread(str(png))
    assert np.array_equal(saved, expected)

    # the window showed that frame with the HUD over its top-left corner, and nothing else changed
    shown = window.frames[0]
    assert np.array_equal(shown[120:], saved[120:]) and np.array_equal(shown[:, 300:], saved[:, 300:])
    hud = hud_region(shown)
    assert (hud.max(axis=2) < 90).mean() > 0.5 and (hud.min(axis=2) > 200).sum() > 30  # dark panel, white text
    assert not np.array_equal(hud, hud_region(saved))

    # r stopped the recording started by --output after 3 frames, and started rec_2.mp4; both are playable
    with av.open(str(tmp_path / "rec.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3
    with av.open(str(tmp_path / "rec_2.mp4")) as container:
        first = next(container.decode(video=0)).to_ndarray(format="bgr24")
        assert first.shape == (272, 640, 3)
    # the results JSON holds every processed frame (two tracks)
    results = json.loads((tmp_path / "run.json").read_text())
    assert sorted(r["category_id"] for r in results) == [1, 2]
    assert len(results[0]["segmentations"]) == len(model.seen)
    # pause re-showed the frame; the frames after it are newer ones (resume works)
    assert len(window.frames) >= 10


# -- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A small random model whose biases are set so it finds large objects in any frame."""
    from sipvis.checkpoint import save_checkpoint
    from sipvis.model.sipmask import SipMaskVIS

    torch.manual_seed(0)
    cfg = SipMaskConfig(class_names=CLASSES, depth=18, style="pytorch", max_size=(160, 96), fpn_channels=32,
                        head_channels=32, basis_channels=32, track_channels=32)
    model = SipMaskVIS(cfg)
    model.init_weights()
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(4.0)
        model.head.bbox_pred.bias.fill_(3.0)
        model.head.basis_out.bias.fill_(1.0)
        model.head.mask_coeffs.bias.fill_(1.0)
    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny", cfg, model.state_dict())


def sipvis_popen(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from sipvis.cli import main; main()", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def test_headless_run_prints_status_and_writes_playable_outputs(tiny_weights, tmp_path):
    out, js = tmp_path / "out.mp4", tmp_path / "out.json"
    proc = sipvis_popen("live", "--tracker", "original", "--source", str(bikes()), "--realtime", "--no-window", "--duration", "2",
                        "--weights", str(tiny_weights), "--output", str(out), "--json", str(js), cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if STATUS_RE.search(line)]) >= 1, stderr
    captured, processed, dropped = map(int, SUMMARY_RE.search(stderr).groups())
    assert processed >= 1 and captured >= processed
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(frames) == processed and frames[0].shape == (272, 640, 3)
    results = json.loads(js.read_text())
    assert results and all(len(r["segmentations"]) == processed for r in results)
    assert {r["category_id"] for r in results} <= {1, 2}


def _interrupt_run(tiny_weights, folder) -> None:
    folder.mkdir()
    out, js = folder / "out.mkv", folder / "out.json"
    proc = sipvis_popen("live", "--tracker", "original", "--source", str(bikes()), "--realtime", "--no-window", "--weights",
                        str(tiny_weights), "-o", str(out), "--json", str(js), cwd=folder)
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for the first status line: frames are flowing
        line = proc.stderr.readline()
        lines.append(line)
        if STATUS_RE.search(line) or not line:
            break
    assert STATUS_RE.search(lines[-1]), "".join(lines)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(lines) + rest
    assert proc.returncode == 0, stderr
    assert "(interrupted)" in stderr and "Traceback" not in stderr
    processed = int(SUMMARY_RE.search(stderr).group(2))
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == processed
    assert all(len(r["segmentations"]) == processed for r in json.loads(js.read_text()))


def test_ctrl_c_ends_cleanly_with_playable_outputs(tiny_weights, tmp_path):
    _interrupt_run(tiny_weights, tmp_path / "run")


@pytest.mark.parametrize("args, env_change, message", [
    (["--camera", "0", "--source", "x.mp4", "--no-window"], {}, "give either --camera or --source, not both"),
    (["--source", "x.mp4", "--width", "640", "--no-window"], {}, "--width/--height/--fps are requests to a camera"),
    (["--source", "x.mp4", "--no-window", "-o", "out.gif"], {}, "--output out.gif: use a video file"),
    (["--source", "missing.mp4", "--no-window"], {}, "input not found"),
    (["--camera", "63", "--no-window"], {}, "no camera at index 63"),
    (["--source", "x.mp4"], {"DISPLAY": None, "WAYLAND_DISPLAY": None}, "no display available (DISPLAY is not set); run headless with --no-window"),
    (["--source", "x.mp4"], {"DISPLAY": ":87", "WAYLAND_DISPLAY": None}, "cannot connect to X display :87"),
])
def test_errors_are_one_line(args, env_change, message, monkeypatch, tmp_path):
    from sipvis.cli import cli

    if "63" in args and Path("/dev/video63").exists():
        pytest.skip("a camera exists at index 63")
    if sys.platform != "linux" and "DISPLAY" in env_change:
        pytest.skip("display detection is checked on Linux")
    monkeypatch.chdir(tmp_path)
    for key, value in env_change.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, ["live", *args])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output


# -- a real window under a virtual display ----------------------------------------------------------


@pytest.fixture
def xvfb():
    missing = [tool for tool in ("Xvfb", "xwd") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install xvfb x11-apps)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    number = next(n for n in range(99, 140) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            assert server.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.1)
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def screenshot(display: str) -> np.ndarray:
    """The whole screen as (H, W, 3) BGR, from `xwd -root` (a ZPixmap of a depth-24 TrueColor/DirectColor screen)."""
    data = subprocess.run(["xwd", "-root", "-silent", "-display", display], capture_output=True, check=True,
                          timeout=30).stdout
    header = struct.unpack(">25I", data[:100])
    header_size, depth, width, height, byte_order, bytes_per_line, ncolors = (
        header[0], header[3], header[4], header[5], header[7], header[12], header[19])
    # the header's bits_per_pixel is not reliable (Xvfb's xwd says 24 for 4-byte pixels): use the row length
    step = bytes_per_line // width
    assert depth == 24 and step in (3, 4), header
    start = header_size + 12 * ncolors
    pixels = np.frombuffer(data[start:start + bytes_per_line * height], np.uint8).reshape(height, bytes_per_line)
    pixels = pixels[:, :step * width].reshape(height, width, step)
    if byte_order == 0:  # least significant byte first: B, G, R(, X)
        return pixels[..., :3]
    return pixels[..., step - 3:][..., ::-1]


def annotated_window_visible(screen: np.ndarray) -> bool:
    """The live window is on screen showing the video with the HUD: a dark panel with white text at its top
    left, and picture content beside and below it (the root window around it is black)."""
    ys, xs = np.nonzero(screen.max(axis=2) > 0)
    if len(ys) < 100 * 100:
        return False
    top, left = ys.min(), xs.min()
    window = screen[top:ys.max() + 1, left:xs.max() + 1]
    if window.shape[0] < 200 or window.shape[1] < 300:
        return False
    hud = hud_region(window)
    dark_panel = (hud.max(axis=2) < 90).mean() > 0.5
    white_text = (hud.min(axis=2) > 200).sum() > 30
    picture = window[120:250, 20:300].std() > 10
    return bool(dark_panel and white_text and picture)


def test_window_under_virtual_display_shows_annotated_frames(xvfb, tiny_weights, tmp_path):
    from sipvis.engine.bench import generate_clip

    env = {**os.environ, "DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb"}
    env.pop("WAYLAND_DISPLAY", None)
    # played in real time for as long as the test waits (a 10 s clip could end before a loaded machine
    # has drawn its first frame); the run stops as soon as the window is seen
    clip = generate_clip(tmp_path / "long.mp4", 640, 360, frames=600, fps=5)
    proc = sipvis_popen("live", "--tracker", "original", "--source", str(clip), "--realtime", "--duration", "120", "--weights",
                        str(tiny_weights), env=env, cwd=tmp_path)
    try:
        seen = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if annotated_window_visible(screenshot(xvfb)):
                seen = True
                break
        if not seen and proc.poll() is not None:
            raise AssertionError(f"live ended (exit {proc.returncode}) before a window was seen: "
                                 f"{proc.communicate()[1][-2000:]}")
        assert seen, "no annotated frame with the HUD appeared on the virtual display"
        proc.send_signal(signal.SIGINT)  # Ctrl-C with a window open ends cleanly too
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        assert "keys: q/Esc quit, space pause, s snapshot, r record" in stderr
        assert SUMMARY_RE.search(stderr), stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_unwritable_output_is_one_line_and_nothing_else(tiny_weights, tmp_path, monkeypatch):
    from sipvis.cli import cli

    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(cli, ["live", "--tracker", "original", "--source", str(bikes()), "--no-window", "--weights",
                                      str(tiny_weights), "-o", str(blocker / "out.mp4")])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: cannot ") and "file" in lines[0], result.output


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_first_ctrl_c_asks_to_stop_between_frames_second_interrupts():
    """The first signal must not raise inside the loop (it could land between a frame's outputs)."""
    from sipvis.engine.stop import stop_signals

    before = signal.getsignal(signal.SIGINT)
    with stop_signals(polling=True) as stop:  # what LiveRun.run uses
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # let the handler run
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_failed_snapshot_or_recording_is_reported_and_the_session_goes_on():
    """`s` or `r` on an unwritable folder prints why; the window keeps running (no exception out of the key)."""
    import io

    from rich.console import Console

    from sipvis.cli.live import _LiveView
    from sipvis.errors import SipvisError

    class Live:
        quit_called = False

        def snapshot(self):
            raise SipvisError("cannot write /ro/snap.png: Read-only file system")

        def toggle_recording(self):
            raise SipvisError("cannot write /ro/rec.mp4: Read-only file system")

        def quit(self):
            self.quit_called = True

    out = io.StringIO()
    view = _LiveView(gui=None, live=Live(), hud=None, console=Console(file=out, width=200))
    view.on_key(ord("s"))
    view.on_key(ord("r"))
    assert "snapshot failed: cannot write /ro/snap.png" in out.getvalue()
    assert "recording failed: cannot write /ro/rec.mp4" in out.getvalue()
    assert not view.live.quit_called
