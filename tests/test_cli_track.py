"""Black-box: the original's checkpoint format -> `sipvis weights convert` -> `sipvis track` reproduces
the reference JSON; and every user error ends in one clear line with a non-zero exit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch

from conftest import REFERENCE, require
from reference import assert_video_results_match, expected_video, reference_state_dict


def sipvis(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def mmdet_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "sipmask_ref.pth"
    torch.save({"state_dict": reference_state_dict(), "meta": {}}, path)
    return path


@pytest.fixture(scope="module")
def converted(mmdet_checkpoint, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("converted") / "ref"
    result = sipvis("weights", "convert", str(mmdet_checkpoint), str(dst))
    assert result.returncode == 0, result.stderr
    assert "ResNet-50 caffe, 40 classes" in result.stdout
    return dst.with_suffix(".safetensors")


@pytest.mark.parametrize("clip", ["clip_a", "clip_b"])
def test_convert_then_track_reproduces_reference_json(converted, clip, tmp_path):
    frames_dir = require(REFERENCE / clip / "frames")
    out = tmp_path / "out.json"
    result = sipvis("track", str(frames_dir), "--tracker", "original", "--weights", str(converted), "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    ours = json.loads(out.read_text())
    shape = tuple(ours[0]["segmentations"][0]["size"])
    assert_video_results_match(ours, expected_video(clip), shape)


def test_track_accepts_the_original_pth_directly(mmdet_checkpoint, tmp_path):
    frames_dir = require(REFERENCE / "clip_b" / "frames")
    local = tmp_path / "orig.pth"
    shutil.copy(mmdet_checkpoint, local)
    out = tmp_path / "out.json"
    result = sipvis("track", str(frames_dir), "--tracker", "original", "--weights", str(local), "-o", str(out), "-o", str(tmp_path / "a.mp4"),
                    "--quiet")
    assert result.returncode == 0, result.stderr
    assert_video_results_match(json.loads(out.read_text()), expected_video("clip_b"), (333, 500))
    assert (tmp_path / "orig.pth.sipvis.safetensors").exists()  # converted once, cached beside it
    with av.open(str(tmp_path / "a.mp4")) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded == 3


def test_weights_info(converted):
    result = sipvis("weights", "info", str(converted))
    assert result.returncode == 0, result.stderr
    assert "ResNet-50 (caffe style)" in result.stdout and "40: person, giant_panda" in result.stdout


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_input(converted, tmp_path):
    one_line_error(sipvis("track", str(tmp_path / "nope.mp4"), "--weights", str(converted), "-o",
                          str(tmp_path / "o.json")), "not found", "nope.mp4")


def test_unreadable_image(converted, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "00000.jpg").write_bytes(b"this is not a jpeg")
    one_line_error(sipvis("track", str(folder), "--weights", str(converted), "-o", str(tmp_path / "o.json")),
                   "none of the 1 images", "could be read")


def test_checkpoint_of_another_model(tmp_path):
    from sipvis.checkpoint import save_checkpoint
    from sipvis.model.config import SipMaskConfig

    other = torch.nn.Linear(3, 4).state_dict()
    save_checkpoint(tmp_path / "other", SipMaskConfig(), other)
    one_line_error(sipvis("track", str(require(REFERENCE / "clip_b" / "frames")), "--weights",
                          str(tmp_path / "other.safetensors"), "-o", str(tmp_path / "o.json")),
                   "does not fit the model", "missing")


def test_mmdet_checkpoint_of_another_model(tmp_path):
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}, "meta": {}}, tmp_path / "x.pth")
    one_line_error(sipvis("weights", "convert", str(tmp_path / "x.pth"), str(tmp_path / "y")), "not a SipMask model")


def test_truncated_checkpoints(converted, mmdet_checkpoint, tmp_path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(mmdet_checkpoint.read_bytes()[:100_000])
    one_line_error(sipvis("weights", "convert", str(cut), str(tmp_path / "y")), "truncated or corrupt")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(converted.read_bytes()[:100_000])
    shutil.copy(converted.with_suffix(".json"), tmp_path / "broken.json")
    one_line_error(sipvis("weights", "info", str(broken)), "truncated or corrupt")


def test_unknown_output_type_and_format(converted, tmp_path):
    frames_dir = str(require(REFERENCE / "clip_b" / "frames"))
    one_line_error(sipvis("track", frames_dir, "--weights", str(converted), "-o", str(tmp_path / "o.xyz")),
                   "unknown output type")
    one_line_error(sipvis("track", frames_dir, "--weights", str(converted), "-o", str(tmp_path), "--format", "gif"),
                   "unknown --format gif")


def test_no_gpu_is_a_clear_error(converted, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    one_line_error(sipvis("track", str(require(REFERENCE / "clip_b" / "frames")), "--weights", str(converted),
                          "--device", "cuda", "-o", str(tmp_path / "o.json")), "no CUDA GPU")
