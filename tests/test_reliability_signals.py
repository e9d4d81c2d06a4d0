"""Issue 14, items 4 and 8: stop signals (SIGTERM, SIGHUP, Ctrl-C twice) end every long-running command
like Ctrl-C, with finished outputs, the documented exit status and no traceback; numeric options are
checked when the command line is parsed, in click's own error style.

The subprocess tests wait for real progress (files the run writes), never for a fixed time: the waits
below are only upper bounds for a loaded machine.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from models import tiny_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CLI = [sys.executable, "-c", "from sipvis.cli import main; main()"]
WAIT_S = 600  # upper bound for the first frames of a run on a loaded 2-core machine


# -- the helper, in this process ------------------------------------------------------------------


def _signal(sig: int) -> None:
    signal.raise_signal(sig)  # the Python handler runs before the next line


def test_polling_block_stops_at_check_then_absorbs_signals():
    from sipvis.engine.stop import Interrupted, stop_signals

    before = signal.getsignal(signal.SIGTERM)
    with stop_signals(polling=True) as stop:
        _signal(signal.SIGTERM)  # the first signal only asks: the loop stops at its next check
        assert stop.requested == signal.SIGTERM
        with pytest.raises(Interrupted) as info:
            stop.check()
        assert info.value.exit_code == 143 and isinstance(info.value, KeyboardInterrupt)
        _signal(signal.SIGINT)  # outputs are being finished now: nothing is raised
        stop.check()
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_signal_in_a_polling_block_interrupts_at_once():
    from sipvis.engine.stop import Interrupted, stop_signals

    with stop_signals(polling=True) as stop:
        _signal(signal.SIGHUP)
        with pytest.raises(Interrupted) as info:
            _signal(signal.SIGINT)
        assert info.value.exit_code == 129  # the first signal decides the exit status
        assert stop.raised


def test_outside_polling_a_signal_interrupts_at_once_and_shielded_blocks_wait():
    from sipvis.engine.stop import Interrupted, stop_signals

    with stop_signals() as stop:
        with pytest.raises(Interrupted) as info:
            with stop.shielded():
                _signal(signal.SIGTERM)  # finishing outputs: recorded, raised after the block
                finished = True
        assert finished and info.value.exit_code == 143
        _signal(signal.SIGTERM)  # after the raise: absorbed


def test_third_signal_ends_the_process_with_its_status():
    script = ("import signal, time\n"
              "from sipvis.engine.stop import StopSignals\n"
              "stop = StopSignals(); stop.install()\n"
              "try:\n"
              "    signal.raise_signal(signal.SIGTERM)\n"
              "except KeyboardInterrupt:\n"
              "    signal.raise_signal(signal.SIGTERM)\n"  # absorbed while 'finishing'
              "    signal.raise_signal(signal.SIGTERM)\n"  # the third: exit at once
              "    time.sleep(5)\n"
              "print('not reached')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 143 and "not reached" not in result.stdout
    assert "Traceback" not in result.stderr


# -- the commands, as a user runs them --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """A 600-frame 160x96 clip of two moving boxes: far longer than a test waits for."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for i in range(600):
            image = np.full((96, 160, 3), 40, np.uint8)
            x = (3 * i) % 140
            image[20:60, x:x + 20] = (200, 60, 60)
            image[50:90, 140 - x:160 - x] = (40, 200, 90)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _wait_for(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {WAIT_S} s")
        time.sleep(0.2)


def _decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.slow
@pytest.mark.parametrize("sig, status, message", [
    (signal.SIGTERM, 143, "Interrupted (SIGTERM)."),
    (signal.SIGHUP, 129, "Interrupted (SIGHUP)."),
], ids=["sigterm", "sighup"])
def test_track_stopped_by_a_signal_finishes_its_outputs(tiny, long_clip, tmp_path, sig, status, message):
    out = tmp_path / "res"
    proc = subprocess.Popen([*CLI, "track", str(long_clip), "--weights", str(tiny), "--device", "cpu", "-o",
                             f"{out}/", "--format", "video,json,png", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # instance PNGs are written frame by frame (wherever the sink keeps them until the end)
    _wait_for(proc, lambda: len(list(out.rglob("*.png"))) >= 3, "frames written")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == status, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().splitlines()[-1] == message, err
    frames = _decoded_frames(out / "clip.mp4")
    assert 3 <= frames < 600
    entries = json.loads((out / "clip.json").read_text())
    assert entries and all(len(e["segmentations"]) == frames for e in entries)



# Ctrl-C twice, the second landing exactly while the outputs are being finished: the first comes after
# the third frame is written, the second when the annotated video is closed
_TWICE_SCRIPT = """
import signal, sys
from sipvis.cli import main
from sipvis.io.sinks import AnnotatedVideoSink

write, close = AnnotatedVideoSink.write, AnnotatedVideoSink.close
written = []

def write_then_ctrl_c(self, frame, instances):
    write(self, frame, instances)
    written.append(frame)
    if len(written) == 3:
        signal.raise_signal(signal.SIGINT)

def ctrl_c_then_close(self):
    signal.raise_signal(signal.SIGINT)
    close(self)

AnnotatedVideoSink.write, AnnotatedVideoSink.close = write_then_ctrl_c, ctrl_c_then_close
sys.argv = ["sipvis", "track", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_second_ctrl_c_while_outputs_are_finished_changes_nothing(tiny, long_clip, tmp_path):
    out_mp4, out_json = tmp_path / "out.mp4", tmp_path / "out.json"
    result = subprocess.run([sys.executable, "-c", _TWICE_SCRIPT, str(long_clip), "--weights", str(tiny),
                             "--device", "cpu", "-o", str(out_mp4), "-o", str(out_json), "--quiet"],
                            capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "Interrupted.", result.stderr
    frames = _decoded_frames(out_mp4)
    assert 3 <= frames < 600
    entries = json.loads(out_json.read_text())
    assert entries and all(len(e["segmentations"]) == frames for e in entries)

@pytest.mark.slow
def test_eval_dataset_stopped_by_sigterm_keeps_finished_videos(tiny, tmp_path):
    from sipvis.data.synth import SynthConfig, generate

    root = tmp_path / "data"
    generate(root, SynthConfig(videos=3, frames=40, seed=5, split="valid", width=96, height=64, clips=False))
    out = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "eval", "--dataset", "youtube-vis", "valid", "--data-root", str(root),
                             "--weights", str(tiny), "--device", "cpu", "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    videos = out / "videos"
    _wait_for(proc, lambda: videos.is_dir() and any(videos.glob("[0-9]*.json")), "finished video")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().splitlines()[-1] == "Interrupted (SIGTERM).", err
    assert not (out / "results.json").exists()  # the split was not finished
    done = sorted(videos.glob("[0-9]*.json"))
    assert 1 <= len(done) < 3
    for path in done:  # finished videos: complete results, kept for the resume
        assert all(len(e["segmentations"]) == 40 for e in json.loads(path.read_text()))
    for path in videos.glob(".*.partial.json"):  # the video in hand: a valid file under its temporary name
        json.loads(path.read_text())


_TRAIN_SCRIPT = """
import signal, sys
from sipvis.training import load_config, train

class Progress:  # sends SIGTERM to its own process during the first training step's report
    def start(self, total, done): pass
    def step(self, iteration, window):
        if iteration == 1:
            signal.raise_signal(signal.SIGTERM)
    def validated(self, iteration, metrics): pass
    def interrupted(self, iteration, checkpoint): print("saved at", iteration)
    def close(self): pass

try:
    train(load_config(sys.argv[1], sys.argv[2:]), progress=Progress())
except KeyboardInterrupt as exc:
    print("stopped", exc.exit_code)
    sys.exit(3)
"""


@pytest.mark.slow
def test_train_stopped_by_sigterm_saves_the_step_it_finished(tmp_path):
    from sipvis.data.synth import SynthConfig, generate

    root = tmp_path / "data"
    generate(root, SynthConfig(videos=4, frames=4, seed=0, split="train", width=128, height=72, clips=False,
                               classes=("circle", "square", "triangle")))
    repo = Path(__file__).resolve().parent.parent
    overrides = [f'data.root="{root}"', "model.max_size=[128, 72]", "data.scales=[[128, 72]]", "data.workers=0",
                 "train.threads=1", "train.batch_size=1", "train.iters=50", "train.log_interval=1",
                 "train.val_interval=0", 'data.val_split=""', f'train.output="{tmp_path / "out"}"']
    result = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(repo / "configs" / "synth_demo.toml"),
                             *overrides], capture_output=True, text=True, timeout=WAIT_S)
    # the signal came during step 1: the step is finished, then the run stops (it is not killed)
    assert result.returncode == 3, result.stderr
    assert result.stdout.split() == ["saved", "at", "1", "stopped", "143"], result.stdout + result.stderr
    from sipvis.training.checkpoints import load_state

    assert load_state(tmp_path / "out" / "checkpoints" / "last.pt")["iteration"] == 1


# -- option values, checked while parsing -------------------------------------------------------------

TRACK = ["track", "in.mp4", "-o", "out.json"]


@pytest.mark.parametrize("args, option, problem", [
    (TRACK + ["--start", "nan"], "--start", "'nan' is not a finite number"),
    (TRACK + ["--start", "-1"], "--start", "-1.0 is not in the range x>=0"),
    (TRACK + ["--end", "inf"], "--end", "'inf' is not a finite number"),
    (TRACK + ["--fps", "0"], "--fps", "0.0 is not in the range x>0"),
    (TRACK + ["--fps", "-inf"], "--fps", "'-inf' is not a finite number"),
    (TRACK + ["--score-thr", "nan"], "--score-thr", "'nan' is not a finite number"),
    (TRACK + ["--score-thr", "1.5"], "--score-thr", "1.5 is not in the range 0<=x<=1"),
    (TRACK + ["--score-thr", "-0.1"], "--score-thr", "-0.1 is not in the range 0<=x<=1"),
    (TRACK + ["--max-dets", "-3"], "--max-dets", "-3 is not in the range x>=1"),
    (TRACK + ["--batch", "-1"], "--batch", "-1 is not in the range x>=0"),
    (TRACK + ["--max-frames", "0"], "--max-frames", "0 is not in the range x>=1"),
    (TRACK + ["--vid-stride", "0"], "--vid-stride", "0 is not in the range x>=1"),
    (["live", "--source", "x.mp4", "--no-window", "--duration", "nan"], "--duration", "'nan' is not a finite"),
    (["live", "--camera", "-1", "--no-window"], "--camera", "-1 is not in the range x>=0"),
    (["live", "--camera", "0", "--fps", "inf", "--no-window"], "--fps", "'inf' is not a finite number"),
    (["live", "--source", "x.mp4", "--reconnect", "-2"], "--reconnect", "-2 is not in the range x>=0"),
    (["eval", "--dataset", "youtube-vis", "valid", "--subset", "0"], "--subset", "0 is not in the range x>=1"),
    (["eval", "--make-split", "--gt", "a.json", "--out", "o", "--ratio", "nan"], "--ratio", "'nan' is not a"),
    (["eval", "--gt", "a.json", "--results", "r.json", "--score-thr", "inf"], "--score-thr", "'inf' is not a"),
    (["bench", "--frames", "-4"], "--frames", "-4 is not in the range x>=0"),
    (["bench", "--warmup", "-1"], "--warmup", "-1 is not in the range x>=0"),
    (["bench", "--size", "641x360"], "--size", "'641x360': width and height must be even"),
    (["live", "--source", "x.mp4", "--no-window", "--duration", "0"], "--duration", "0.0 is not in the range x>0"),
    (["eval", "--make-split", "--gt", "a.json", "--out", "o", "--ratio", "1.5"], "--ratio", "1.5 is not in the range 0<x<1"),
    (["synth", "out", "--videos", "0"], "--videos", "0 is not in the range x>=1"),
    (["demo", "--frames", "0"], "--frames", "0 is not in the range x>=1"),
    (["demo", "--score-thr", "nan"], "--score-thr", "'nan' is not a finite number"),
])
def test_bad_numbers_are_usage_errors_before_any_work(args, option, problem, tmp_path, monkeypatch):
    from sipvis.cli import cli

    monkeypatch.chdir(tmp_path)  # nothing may be written, and no input exists
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert f"Error: Invalid value for '{option}': {problem}" in result.output, result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())
