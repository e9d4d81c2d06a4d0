"""End-to-end `sipvis track` on real clips (../shared/media): what comes out decodes back with the
source's frame count, size, rate, duration and audio; JSON, PNG and MOTS agree; Ctrl-C leaves valid files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from conftest import MEDIA, require
from models import tiny_checkpoint

CMD = [sys.executable, "-c", "from sipvis.cli import main; main()", "track", "--tracker", "original"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args, "--quiet"], capture_output=True, text=True, timeout=900)


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f for f in c.decode(video=0)]
        return {"frames": len(frames), "width": frames[0].width, "height": frames[0].height,
                "fps": v.average_rate, "audio": len(c.streams.audio) > 0,
                "duration": float(frames[-1].pts * v.time_base) + 1 / float(v.average_rate),
                "codec": v.codec_context.name, "pix_fmt": frames[0].format.name}


def check_results_json(entries: list, frames: int, size: tuple[int, int]) -> None:
    assert isinstance(entries, list) and entries, "expected a non-empty list of tracks"
    for e in entries:
        assert set(e) == {"video_id", "category_id", "score", "segmentations"}
        assert e["video_id"] == 1 and e["category_id"] >= 1 and 0 <= e["score"] <= 1
        assert len(e["segmentations"]) == frames
        for rle in e["segmentations"]:
            if rle is not None:
                assert rle["size"] == list(size) and isinstance(rle["counts"], str)


def test_video_and_json_round_trip_full_clip(tiny, tmp_path):
    src = require(MEDIA / "bigbuckbunny.mp4")
    result = run(str(src), "--weights", str(tiny), "-o", str(tmp_path / "out.mp4"), "-o", str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stderr
    a, b = probe(src), probe(tmp_path / "out.mp4")
    assert (b["frames"], b["width"], b["height"]) == (a["frames"], a["width"], a["height"])
    assert b["fps"] == a["fps"] and abs(b["duration"] - a["duration"]) < 1e-3
    assert b["codec"] == "h264" and b["pix_fmt"] == "yuv420p" and b["audio"]
    check_results_json(json.loads((tmp_path / "out.json").read_text()), a["frames"], (a["height"], a["width"]))


@pytest.mark.parametrize("clip", ["car-detection.mp4", "cockatoo.mp4"])
def test_audio_is_copied(tiny, tmp_path, clip):
    src = require(MEDIA / clip)
    result = run(str(src), "--weights", str(tiny), "--max-frames", "10", "-o", str(tmp_path / "out.mp4"))
    assert result.returncode == 0, result.stderr
    out = probe(tmp_path / "out.mp4")
    assert out["audio"] and out["frames"] == 10
    assert (out["width"], out["height"]) == (probe(src)["width"], probe(src)["height"])


def test_avi_without_audio(tiny, tmp_path):
    src = require(MEDIA / "vtest.avi")
    result = run(str(src), "--weights", str(tiny), "--max-frames", "6", "-o", str(tmp_path / "out.mp4"))
    assert result.returncode == 0, result.stderr
    out = probe(tmp_path / "out.mp4")
    assert not out["audio"] and (out["frames"], out["width"], out["height"]) == (6, 768, 576)
    assert out["fps"] == Fraction(10)


def test_png_and_mots_match_json(tiny, tmp_path):
    src = require(MEDIA / "car-detection.mp4")
    result = run(str(src), "--weights", str(tiny), "--max-frames", "5", "--vid-stride", "2",
                 "-o", str(tmp_path / "res"), "--format", "json,png,mots")
    assert result.returncode == 0, result.stderr
    entries = json.loads((tmp_path / "res" / "car-detection.json").read_text())
    pngs = sorted((tmp_path / "res" / "car-detection_png").glob("*.png"))
    assert [p.stem for p in pngs] == ["00000", "00002", "00004", "00006", "00008"]
    for pos, png in enumerate(pngs):
        ids = np.asarray(Image.open(png))
        assert ids.max() >= 1, "expected objects in every frame"
        for track_id, entry in enumerate(entries, start=1):
            rle = entry["segmentations"][pos]
            mask = np.zeros(ids.shape, bool) if rle is None else mask_utils.decode(
                {"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
            # a pixel shows one track only: the PNG holds the track on top where masks overlap
            assert np.all(ids[mask & (ids == track_id)] == track_id)
            assert not np.any((ids == track_id) & ~mask)
    lines = (tmp_path / "res" / "car-detection.txt").read_text().splitlines()
    assert lines and all(len(line.split(" ")) == 6 for line in lines)


def test_several_inputs_into_one_json(tiny, tmp_path):
    a, b = require(MEDIA / "bikes.mp4"), require(MEDIA / "vtest.avi")
    result = run(str(a), str(b), "--weights", str(tiny), "--max-frames", "3", "-o", str(tmp_path / "all.json"))
    assert result.returncode == 0, result.stderr
    entries = json.loads((tmp_path / "all.json").read_text())
    assert {e["video_id"] for e in entries} == {1, 2}


def test_ctrl_c_leaves_playable_video_and_valid_json(tiny, tmp_path):
    src = require(MEDIA / "vtest.avi")
    out_mp4, out_json = tmp_path / "out.mp4", tmp_path / "out.json"
    proc = subprocess.Popen([*CMD, str(src), "--weights", str(tiny), "-o", str(out_mp4), "-o", str(out_json),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120

    def partial_size() -> int:  # the video is written under a unique temporary name until it is finished
        return max((p.stat().st_size for p in tmp_path.glob(".out.mp4.*.partial.mp4")), default=0)

    while time.time() < deadline and partial_size() <= 50_000:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Interrupted" in err
    frames = probe(out_mp4)["frames"]
    assert 0 < frames < 795
    entries = json.loads(out_json.read_text())
    assert entries and all(len(e["segmentations"]) == frames for e in entries)
