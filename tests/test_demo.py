"""`sipvis demo`: offline clip + tracking, outputs that decode; the bundled demo weights' held-out AP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import pytest

from models import tiny_checkpoint
from sipvis.data.synth import SynthConfig, generate


def test_demo_writes_playable_video_and_json(tmp_path):
    weights = tiny_checkpoint(tmp_path)
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", "demo", "--tracker", "original", "-o", str(out),
                             "--weights", str(weights), "--frames", "6", "--score-thr", "0.03", "--quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"annotated video: {out / 'tracked.mp4'}" in result.stdout
    with av.open(str(out / "tracked.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6
    entries = json.loads((out / "tracked.json").read_text())
    assert entries and all(len(e["segmentations"]) == 6 for e in entries)


def test_demo_runs_in_the_fastest_runtime_when_asked(tmp_path):
    """`sipvis demo --runtime auto` exports the model once into the weights cache and tracks with it."""
    pytest.importorskip("onnxruntime")
    weights = tiny_checkpoint(tmp_path)
    out = tmp_path / "demo"
    env = {**os.environ, "SIPVIS_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", "demo", "-o", str(out),
                             "--weights", str(weights), "--frames", "4", "--score-thr", "0.03", "--quiet",
                             "--runtime", "auto", "--threads", "1"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "Exporting" in result.stderr and "for onnxruntime" in result.stderr
    assert len(list((tmp_path / "home" / "weights" / "exported").glob("*-onnx-*.onnx"))) == 1
    entries = json.loads((out / "tracked.json").read_text())
    assert entries and all(len(e["segmentations"]) == 4 for e in entries)


@pytest.mark.slow
def test_bundled_demo_weights_reach_the_readme_ap_on_the_held_out_split(tmp_path):
    """docs/train.md's claim ("The demo model"), end to end: `sipvis synth ... --seed 100` (50 videos the
    demo model never saw) scored with `sipvis eval --dataset youtube-vis --weights demo` on the CPU.
    docs/train.md: AP 0.536."""
    generate(tmp_path, SynthConfig(videos=50, frames=24, seed=100, split="test100", clips=False), progress=None)
    metrics = tmp_path / "metrics.json"
    result = subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", "eval", "--tracker", "original", "--dataset",
                             "youtube-vis", "test100", "--data-root", str(tmp_path), "--weights", "demo",
                             "--device", "cpu", "--out", str(tmp_path / "run"), "--json", str(metrics), "--quiet"],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
    ap = json.loads(metrics.read_text())["AP"]
    assert ap >= 0.5, ap
    assert abs(ap - 0.536) < 0.01, f"AP {ap:.4f}: docs/train.md (The demo model) says 0.536"
