"""`sipvis bench`: every stage and both end-to-end runs are measured and reported (table and JSON), on a
generated clip and on a real one; user errors end in one line; the random-weights fallback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MEDIA, require
from sipvis.checkpoint import save_checkpoint
from sipvis.engine.bench import END_TO_END, STAGES, random_model, run_bench
from sipvis.engine.inference import Segmenter
from sipvis.model.config import SipMaskConfig


def sipvis(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def tiny_config() -> SipMaskConfig:
    return SipMaskConfig(depth=18, style="pytorch", backbone_width=16, max_size=(160, 96), class_names=("a", "b"),
                         fpn_channels=64, head_channels=64, basis_channels=64, track_channels=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny", tiny_config(), random_model(tiny_config()).state_dict())


def test_bench_cli_reports_every_stage(tiny, tmp_path):
    out = tmp_path / "x.json"
    result = sipvis("bench", "--frames", "4", "--size", "320x192", "--device", "cpu", "--weights", str(tiny),
                    "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["input_size"] == [320, 192] and report["frames"] == 4
    assert report["device"] == "cpu" and report["precision"] == "fp32" and report["batch"] == 1
    assert report["runtime"] == "torch"
    assert report["random_weights"] is False and report["weights"] == str(tiny)
    assert list(report["stages"]) == list(STAGES)
    assert list(report["end_to_end"]) == list(END_TO_END)
    for timing in [*report["stages"].values(), *report["end_to_end"].values()]:
        assert timing["frames"] == 4
        assert timing["seconds"] > 0 and timing["fps"] > 0
        assert timing["fps"] == pytest.approx(4 / timing["seconds"], rel=1e-4)
        assert timing["ms_per_frame"] == pytest.approx(1000 * timing["seconds"] / 4, rel=1e-4)
    assert report["detections_per_frame"] > 0  # random logits: masks went through post-processing and render
    for name in (*STAGES, *END_TO_END):  # the table on stdout has a row per stage
        assert name in result.stdout
    share = report["end_to_end"]["end-to-end json"]["fps"] / report["stages"]["network"]["fps"]
    assert report["end_to_end_json_vs_network"] == pytest.approx(share, rel=1e-3)
    assert f"end to end to JSON runs at {100 * share:.0f}% of the network stage's rate" in " ".join(result.stdout.split())


def test_quiet_with_json_prints_nothing(tiny, tmp_path):
    out = tmp_path / "x.json"
    result = sipvis("bench", "--frames", "2", "--size", "128x96", "--device", "cpu", "--weights", str(tiny),
                    "--batch", "2", "--json", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    report = json.loads(out.read_text())
    assert report["batch"] == 2 and report["stages"]["network"]["frames"] == 2


def test_bench_on_a_real_clip_uses_its_size():
    clip = require(MEDIA / "bikes.mp4")
    segmenter = Segmenter(random_model(tiny_config()), "cpu", torch.float32, batch_size=2)
    result = run_bench(segmenter, str(clip), frames=2, warmup=0)
    assert (result.width, result.height, result.frames) == (640, 272, 2)
    assert [s.name for s in result.stages] == list(STAGES)
    assert all(s.frames == 2 and s.seconds > 0 for s in result.stages + result.end_to_end)


def test_batches_follow_the_batch_size_and_the_frame_size():
    segmenter = Segmenter(random_model(tiny_config()), "cpu", torch.float32, batch_size=2)
    small, large = np.zeros((90, 160, 3), np.uint8), np.zeros((96, 170, 3), np.uint8)
    frames = [segmenter.prepare(image, i) for i, image in enumerate([small, small, small, large, large, small])]
    assert [[f.index for f in b] for b in segmenter.batches(frames)] == [[0, 1], [2], [3, 4], [5]]


def test_stages_are_timed_on_the_segmenters_own_methods(tmp_path, monkeypatch):
    """The stage timings call the methods `track` composes, once per batch: no copy that could drift."""
    from collections import Counter

    from sipvis.engine.bench import generate_clip, measure_stages

    segmenter = Segmenter(random_model(tiny_config()), "cpu", torch.float32, batch_size=2)
    calls: Counter = Counter()
    for name in ("batches", "preprocess", "forward", "postprocess", "assign_tracks"):
        def counted(*args, _name=name, _method=getattr(segmenter, name), **kwargs):
            calls[_name] += 1
            return _method(*args, **kwargs)
        monkeypatch.setattr(segmenter, name, counted)
    clip = generate_clip(tmp_path / "clip.mp4", 160, 96, frames=3)
    timings, width, height, _ = measure_stages(segmenter, str(clip), 3, tmp_path, warmup=0)
    assert calls == {"batches": 1, "preprocess": 2, "forward": 2, "postprocess": 2, "assign_tracks": 2}
    assert (width, height) == (160, 96) and all(t.frames == 3 for t in timings)


def test_default_weights_fall_back_to_random_r50(tmp_path, monkeypatch):
    from sipvis.cli.bench import RANDOM_NOTE, build_bench_segmenter

    monkeypatch.setenv("SIPVIS_HOME", str(tmp_path))  # an empty cache: the official weights are not there
    segmenter, label, random_weights = build_bench_segmenter(None, "cpu", "auto", 0, quiet=True)
    assert random_weights and RANDOM_NOTE in label
    cfg = segmenter.cfg
    assert (cfg.depth, cfg.style, cfg.num_classes, cfg.max_size) == (50, "caffe", 40, (640, 360))
    assert segmenter.batch_size == 1 and segmenter.dtype == torch.float32


def one_line_error(exit_code: int, stderr: str, *fragments: str) -> None:
    assert exit_code == 1
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args, fragments", [
    (("clip.mp4", "--size", "320x192"), ("cannot be combined with INPUT",)),
    (("--precision", "fp16", "--device", "cpu"), ("fp16 is not supported on CPU",)),
    (("--json", "/nonexistent_dir/x.json"), ("cannot write", "does not exist")),
])
def test_user_errors_are_one_line(args, fragments):
    from click.testing import CliRunner

    from sipvis.cli import cli

    result = CliRunner().invoke(cli, ["bench", *args])  # in-process: these fail before any model is built
    one_line_error(result.exit_code, result.stderr, *fragments)


@pytest.mark.parametrize("size, fragment", [("320x191", "must be even"), ("big", "must look like WIDTHxHEIGHT"),
                                            ("32x32", "between 64 and 4096")])
def test_bad_sizes_are_usage_errors(size, fragment):
    from click.testing import CliRunner

    from sipvis.cli import cli

    result = CliRunner().invoke(cli, ["bench", "--size", size])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Invalid value for '--size'")
    assert fragment in result.stderr


def test_missing_input_is_one_line(tiny, tmp_path):
    from click.testing import CliRunner

    from sipvis.cli import cli

    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "nope.mp4"), "--weights", str(tiny), "--device", "cpu"])
    one_line_error(result.exit_code, result.stderr, "input not found")
