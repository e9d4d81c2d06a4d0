"""Tests of the synthetic YouTube-VIS dataset generator (`sipvis synth`, sipvis.data.synth)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools import mask as mask_utils

from sipvis.cli import cli
from sipvis.data import synth
from sipvis.data.synth import SHAPES, SynthConfig, generate, render_video
from sipvis.errors import SipvisError

# pycocotools' decode trips a numpy-2 DeprecationWarning inside the library; it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# A moderate set: big enough that occlusions and enter/leave events happen, small enough to be fast.
CFG = SynthConfig(videos=6, frames=20, seed=0, split="train")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_a")
    ann = generate(out, CFG, progress=None)
    assert ann == out / "annotations" / "train.json"
    return out


@pytest.fixture(scope="module")
def gt(dataset: Path) -> dict:
    return json.loads((dataset / "annotations" / "train.json").read_text(encoding="utf-8"))


def _decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("utf-8")}).astype(bool)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- layout


def test_layout_matches_official(dataset: Path, gt: dict) -> None:
    assert sorted(p.name for p in dataset.iterdir()) == ["annotations", "train"]
    assert [p.name for p in (dataset / "annotations").iterdir()] == ["train.json"]
    img_root = dataset / "train" / "JPEGImages"
    names = sorted(p.name for p in img_root.iterdir())
    assert names == [f"video_{i:05d}" for i in range(1, CFG.videos + 1)]
    for video in gt["videos"]:
        folder = video["file_names"][0].split("/")[0]
        assert video["file_names"] == [f"{folder}/{t:05d}.jpg" for t in range(CFG.frames)]
        on_disk = sorted(p.name for p in (img_root / folder).iterdir())
        assert on_disk == [f"{t:05d}.jpg" for t in range(CFG.frames)]
    img = cv2.imread(str(img_root / gt["videos"][0]["file_names"][-1]))
    assert img.shape == (CFG.height, CFG.width, 3)
    clips = sorted(p.name for p in (dataset / "train" / "videos").iterdir())
    assert clips == [f"{n}.mp4" for n in names]


# ---------------------------------------------------------------------------------------------- schema


def test_json_schema(gt: dict) -> None:
    assert set(gt) == {"info", "licenses", "videos", "annotations", "categories"}
    assert gt["categories"] == [
        {"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(["circle", "square", "triangle", "star", "ring"])
    ]
    assert [v["id"] for v in gt["videos"]] == list(range(1, CFG.videos + 1))
    for v in gt["videos"]:
        assert (v["width"], v["height"], v["length"]) == (640, 360, CFG.frames)
        assert len(v["file_names"]) == CFG.frames
    anns = gt["annotations"]
    assert len(anns) >= CFG.videos * CFG.objects[0] // 2
    assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
    required = {"id", "video_id", "category_id", "iscrowd", "segmentations", "bboxes", "areas", "width", "height", "length"}
    for a in anns:
        assert required <= set(a)
        assert 1 <= a["video_id"] <= CFG.videos and 1 <= a["category_id"] <= len(CFG.classes)
        assert a["iscrowd"] == 0 and (a["width"], a["height"], a["length"]) == (640, 360, CFG.frames)
        assert len(a["segmentations"]) == len(a["bboxes"]) == len(a["areas"]) == CFG.frames
        present = [s is not None for s in a["segmentations"]]
        assert present == [b is not None for b in a["bboxes"]] == [x is not None for x in a["areas"]]
        assert any(present), "an annotated instance must be visible at least once"
        for s, b in zip(a["segmentations"], a["bboxes"]):
            if s is not None:
                assert s["size"] == [360, 640] and isinstance(s["counts"], str)
                assert len(b) == 4 and all(isinstance(x, float) for x in b)


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(dataset: Path, tmp_path: Path) -> None:
    generate(tmp_path, SynthConfig(**{**CFG.__dict__, "clips": False}), progress=None)
    ann_a = (dataset / "annotations" / "train.json").read_bytes()
    ann_b = (tmp_path / "annotations" / "train.json").read_bytes()
    assert ann_a == ann_b
    jpgs_a = _all_files(dataset / "train" / "JPEGImages")
    jpgs_b = _all_files(tmp_path / "train" / "JPEGImages")
    assert len(jpgs_a) == CFG.videos * CFG.frames
    assert jpgs_a == jpgs_b


def test_different_seed_differs(dataset: Path, tmp_path: Path) -> None:
    cfg = SynthConfig(videos=2, frames=CFG.frames, seed=1, clips=False)
    generate(tmp_path, cfg, progress=None)
    a = json.loads((dataset / "annotations" / "train.json").read_text())
    b = json.loads((tmp_path / "annotations" / "train.json").read_text())
    seg = lambda d: [x["segmentations"] for x in d["annotations"] if x["video_id"] == 1]  # noqa: E731
    assert seg(a) != seg(b)
    first = "train/JPEGImages/video_00001/00000.jpg"
    assert (dataset / first).read_bytes() != (tmp_path / first).read_bytes()


def test_render_video_is_deterministic_and_independent_of_order() -> None:
    cfg = SynthConfig(videos=3, frames=4, seed=7, clips=False)
    later_first = render_video(cfg, 2)
    render_video(cfg, 0)
    again = render_video(cfg, 2)
    assert all(np.array_equal(x, y) for x, y in zip(later_first[0], again[0]))
    assert [i.masks[0] is None or i.masks[0].sum() for i in later_first[1]] == [
        i.masks[0] is None or i.masks[0].sum() for i in again[1]
    ]


# ---------------------------------------------------------------------------------------------- masks


def test_rle_decodes_to_exact_drawn_masks(dataset: Path, gt: dict) -> None:
    for vi in range(CFG.videos):
        frames, instances = render_video(CFG, vi)
        anns = [a for a in gt["annotations"] if a["video_id"] == vi + 1]
        assert [a["category_id"] for a in anns] == [i.category_id for i in instances]
        assert [i.track_id for i in instances] == list(range(1, len(instances) + 1))
        for a, inst in zip(anns, instances):
            for t, (rle, mask) in enumerate(zip(a["segmentations"], inst.masks)):
                if mask is None:
                    assert rle is None
                else:
                    assert np.array_equal(_decode(rle), mask), (vi, a["id"], t)
        # The JPEGs on disk are the in-memory frames, up to JPEG loss.
        disk = cv2.imread(str(dataset / "train" / "JPEGImages" / CFG.video_name(vi) / "00003.jpg"))
        assert np.abs(disk.astype(int) - frames[3].astype(int)).mean() < 4.0


def test_bboxes_and_areas_match_masks(gt: dict) -> None:
    checked = 0
    for a in gt["annotations"]:
        for rle, box, area in zip(a["segmentations"], a["bboxes"], a["areas"]):
            if rle is None:
                continue
            m = _decode(rle)
            ys, xs = np.nonzero(m)
            assert area == float(m.sum()) == float(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}))
            assert area > 0
            expected = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert box == [float(v) for v in expected]
            np.testing.assert_allclose(box, mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()}))
            checked += 1
    assert checked > 50


def test_visible_masks_are_disjoint_and_cover_the_drawn_object() -> None:
    """Visible masks never overlap; a lone circle's mask is a disc of the class colour."""
    frames, instances = render_video(CFG, 0)
    for t in range(CFG.frames):
        stack = np.stack([i.masks[t] for i in instances if i.masks[t] is not None])
        assert stack.sum(0).max() <= 1

    for cls, fill_ratio in (("circle", 1.0), ("ring", 1 - 0.55**2)):
        cfg = SynthConfig(videos=3, frames=4, seed=3, objects=(1, 1), classes=(cls,), clips=False)
        n_checked = 0
        for vi in range(cfg.videos):
            frames, (inst,) = render_video(cfg, vi)
            for t, m in enumerate(inst.masks):
                if m is None or inst.full_areas[t] != m.sum():
                    continue
                x, y, w, h = synth.mask_bbox(m)
                if x == 0 or y == 0 or x + w == cfg.width or y + h == cfg.height or w < 20:
                    continue  # clipped by the frame edge: the disc formula does not apply
                assert m.sum() / (np.pi * w * h / 4) == pytest.approx(fill_ratio, abs=0.04)
                assert m[int(y + h / 2), int(x + w / 2)] == (cls == "circle")  # the ring has a hole
                # Objects are saturated; the backgrounds are muted: the mask edge is the colour edge.
                sat = cv2.cvtColor(frames[t], cv2.COLOR_BGR2HSV)[..., 1]
                around = cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~m
                assert np.median(sat[m]) > 150 and np.median(sat[around]) < 120
                n_checked += 1
        assert n_checked >= 3


def test_occlusion_and_enter_leave_events_occur(gt: dict) -> None:
    occluded = fully_occluded = enter_leave = 0
    for vi in range(CFG.videos):
        _, instances = render_video(CFG, vi)
        for inst in instances:
            for area, full in zip(inst.areas, inst.full_areas):
                if area is not None and area < full:
                    occluded += 1
                if area is None and full > 0:
                    fully_occluded += 1
            out_of_frame = [f == 0 for f in inst.full_areas]
            if any(out_of_frame) and not all(out_of_frame):
                enter_leave += 1
                assert all(m is None for m, out in zip(inst.masks, out_of_frame) if out)
    assert occluded >= 1 and enter_leave >= 1
    # This seed also hides an instance completely behind another on some frame (null, not empty).
    assert fully_occluded >= 1
    nulls = sum(s is None for a in gt["annotations"] for s in a["segmentations"])
    assert nulls >= enter_leave


def test_every_shape_renders_and_sizes_are_reasonable() -> None:
    cfg = SynthConfig(videos=2, frames=3, seed=5, classes=SHAPES, objects=(12, 12), clips=False)
    seen = set()
    for vi in range(cfg.videos):
        frames, instances = render_video(cfg, vi)
        assert len(frames) == 3 and frames[0].shape == (360, 640, 3) and frames[0].dtype == np.uint8
        seen |= {i.category_id for i in instances}
    assert len(seen) >= 8
    # Unoccluded, fully inside objects measure 40..160 px (with the growth/pulse margin of 0.8..1.2).
    cfg = SynthConfig(videos=4, frames=6, seed=2, objects=(1, 1), classes=("circle",), clips=False)
    for vi in range(cfg.videos):
        _, (inst,) = render_video(cfg, vi)
        for m in inst.masks:
            if m is not None:
                x, y, w, h = synth.mask_bbox(m)
                if x > 0 and y > 0 and x + w < 640 and y + h < 360:
                    assert 0.8 * 40 - 2 <= w <= 1.2 * 160 + 2


def test_fixed_class_list_and_size(tmp_path: Path) -> None:
    cfg = SynthConfig(videos=2, frames=2, seed=0, split="valid", width=320, height=240, classes=("star", "circle"))
    ann = generate(tmp_path, cfg, progress=None)
    d = json.loads(ann.read_text())
    assert ann == tmp_path / "annotations" / "valid.json"
    assert [c["name"] for c in d["categories"]] == ["star", "circle"]
    assert {a["category_id"] for a in d["annotations"]} <= {1, 2}
    assert cv2.imread(str(tmp_path / "valid" / "JPEGImages" / "video_00002" / "00001.jpg")).shape == (240, 320, 3)


# ---------------------------------------------------------------------------------------------- clips


def _decode_mp4(path: Path) -> tuple[str, float, list[np.ndarray]]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        name, rate = stream.codec_context.name, float(stream.average_rate)
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(stream)]
    return name, rate, frames


def test_mp4_clip_decodes(dataset: Path) -> None:
    name, rate, frames = _decode_mp4(dataset / "train" / "videos" / "video_00002.mp4")
    assert name == synth._mp4_codec().replace("libx264", "h264")
    assert rate == 10.0
    assert len(frames) == CFG.frames and frames[0].shape == (360, 640, 3)
    mem, _ = render_video(CFG, 1)
    assert np.abs(frames[5].astype(int) - mem[5].astype(int)).mean() < 8.0


def test_mpeg4_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth, "_mp4_codec", lambda: "mpeg4")
    frames, _ = render_video(SynthConfig(videos=1, frames=5, width=160, height=96, clips=False), 0)
    assert synth.write_mp4(tmp_path / "a.mp4", frames, 10) == "mpeg4"
    name, _, decoded = _decode_mp4(tmp_path / "a.mp4")
    assert name == "mpeg4" and len(decoded) == 5 and decoded[0].shape == (96, 160, 3)


# ---------------------------------------------------------------------------------------------- CLI


def _run(args: list[str]):
    return CliRunner().invoke(cli, ["synth", *args])


def test_cli_writes_dataset(tmp_path: Path) -> None:
    res = _run([str(tmp_path / "d"), "--videos", "2", "--frames", "3", "--seed", "4", "--split", "valid",
                "--size", "320x192", "--classes", "circle,ring,star", "--no-clips", "--quiet"])
    assert res.exit_code == 0, res.output
    assert res.output == ""
    d = json.loads((tmp_path / "d" / "annotations" / "valid.json").read_text())
    assert len(d["videos"]) == 2 and d["videos"][0]["width"] == 320 and d["videos"][0]["height"] == 192
    assert [c["name"] for c in d["categories"]] == ["circle", "ring", "star"]
    assert not (tmp_path / "d" / "valid" / "videos").exists()
    # The CLI and the library give the same bytes for the same settings.
    cfg = SynthConfig(videos=2, frames=3, seed=4, split="valid", width=320, height=192,
                      classes=("circle", "ring", "star"), clips=False)
    lib = generate(tmp_path / "lib", cfg, progress=None)
    assert lib.read_bytes() == (tmp_path / "d" / "annotations" / "valid.json").read_bytes()


def test_cli_summary_line(tmp_path: Path) -> None:
    res = _run([str(tmp_path / "d"), "--videos", "1", "--frames", "2", "--no-clips", "--classes", "3"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().startswith("Wrote 1 videos x 2 frames")
    assert str(tmp_path / "d" / "annotations" / "train.json") in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "641x360"], "Error: mp4 clips need an even width and height, got 641x360; use an even --size or --no-clips"),
        (["--classes", "13"], "Error: --classes must be between 1 and 12, got 13"),
        (["--classes", "circle,blob"], "Error: unknown class 'blob'; known classes: " + ", ".join(SHAPES)),
        (["--split", "../x"], "Error: --split must be a plain folder name (letters, digits, . _ -), got '../x'"),
    ],
)
def test_cli_bad_arguments_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    res = _run([str(tmp_path / "d"), "--quiet", *args])
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [message]
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "640by360"], "Invalid value for '--size': '640by360' must look like WIDTHxHEIGHT, e.g. 640x360."),
        (["--size", "16x16"], "Invalid value for '--size': '16x16': width and height must be between 64 and 4096."),
        (["--videos", "0"], "Invalid value for '--videos': 0 is not in the range x>=1."),
        (["--frames", "-3"], "Invalid value for '--frames': -3 is not in the range x>=1."),
    ],
)
def test_cli_bad_values_refused_while_parsing(tmp_path: Path, args: list[str], message: str) -> None:
    """Option values are checked as the command line is parsed: click's usage error, exit status 2."""
    res = _run([str(tmp_path / "d"), "--quiet", *args])
    assert res.exit_code == 2
    assert res.stderr.splitlines()[-1] == f"Error: {message}"
    assert not (tmp_path / "d").exists()


def test_cli_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = _run([str(blocker / "out"), "--quiet", "--videos", "1", "--frames", "1"])
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [f"Error: cannot create folder {blocker / 'out'}: Not a directory"]
    res = _run([str(blocker), "--quiet", "--videos", "1", "--frames", "1"])
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [f"Error: cannot create folder {blocker}: a file with that name exists"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_cli_read_only_out(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        res = _run([str(ro), "--quiet", "--videos", "1", "--frames", "1"])
    finally:
        ro.chmod(0o700)
    assert res.exit_code == 1
    assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith("Error: cannot")


def test_console_script_error_is_one_line(tmp_path: Path) -> None:
    """Through the installed entry point: exit status 1 and one line on stderr, no traceback."""
    code = "import sys; from sipvis.cli import main; sys.argv = ['sipvis'] + sys.argv[1:]; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "synth", str(tmp_path / "d"), "--size", "x360"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == "Error: Invalid value for '--size': 'x360' must look like WIDTHxHEIGHT, e.g. 640x360."


def test_config_validation_in_library() -> None:
    with pytest.raises(SipvisError, match="--frames must be at least 1"):
        SynthConfig(frames=0)
    with pytest.raises(SipvisError, match="lists a class twice"):
        SynthConfig(classes=("circle", "circle"))
    one = SynthConfig(videos=1, frames=1, clips=False)
    frames, instances = render_video(one, 0)
    assert len(frames) == 1 and all(len(i.masks) == 1 for i in instances)


def test_progress_callback_counts_videos(tmp_path: Path) -> None:
    calls = []
    generate(tmp_path, SynthConfig(videos=3, frames=2, seed=0, width=96, height=64, clips=False),
             progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
