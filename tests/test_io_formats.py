"""Per-frame result files: instance PNGs (read back with PIL and OpenCV) and MOTS lines (decoded back with
pycocotools)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from test_io_render import instances

from sipvis.errors import SipvisError
from sipvis.io import InstancePngSink, MediaWarning, MotsTxtSink, track_color
from sipvis.io.formats import encode_png
from sipvis.results import FrameInstances


def random_instances(index: int, rng: np.random.Generator, n: int = 3, h: int = 48, w: int = 64) -> FrameInstances:
    """`n` instances with irregular, non-overlapping masks (each pixel drawn for at most one instance)."""
    owner = rng.integers(-1, n, (h, w))  # -1: background
    masks = np.stack([owner == k for k in range(n)])
    ids = rng.choice(np.arange(1, 40), n, replace=False)
    return FrameInstances(
        index, h, w, np.tile(np.array([[0, 0, w, h]], np.float32), (n, 1)), rng.random(n).astype(np.float32),
        rng.integers(0, 40, n), ids, masks,
    )  # fmt: skip


def expected_ids(inst: FrameInstances) -> np.ndarray:
    out = np.zeros((inst.height, inst.width), np.int64)
    for k in range(len(inst)):
        out[inst.masks[k]] = inst.track_ids[k]
    return out


def test_encode_png_is_read_back_exactly_by_pil_and_opencv() -> None:
    rng = np.random.default_rng(1)
    values8 = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    img = Image.open(__import__("io").BytesIO(encode_png(values8, palette)))
    assert img.mode == "P" and img.size == (23, 17)
    np.testing.assert_array_equal(np.array(img), values8)
    np.testing.assert_array_equal(np.array(img.getpalette(), np.uint8).reshape(-1, 3)[:256], palette)
    values16 = rng.integers(0, 65536, (17, 23), dtype=np.uint16)
    decoded = cv2.imdecode(np.frombuffer(encode_png(values16), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, values16)


def test_png_pixel_values_are_the_track_ids(tmp_path) -> None:
    rng = np.random.default_rng(0)
    frames = [random_instances(i, rng) for i in (0, 5, 10)]  # indices after --vid-stride 5
    frames.append(FrameInstances.empty(15, 48, 64))
    with InstancePngSink(tmp_path / "png") as sink:
        for inst in frames:
            sink.write(None, inst)
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["00000.png", "00005.png", "00010.png", "00015.png"]
    for inst in frames:
        img = Image.open(tmp_path / "png" / f"{inst.index:05d}.png")
        assert img.mode == "P"
        np.testing.assert_array_equal(np.array(img), expected_ids(inst))
        palette = np.array(img.getpalette(), np.uint8).reshape(-1, 3)
        for tid in inst.track_ids:  # palette entry = the track's colour in the video (RGB order)
            assert tuple(palette[tid][::-1]) == track_color(tid)
        assert tuple(palette[0]) == (0, 0, 0)


def test_png_overlap_goes_to_the_higher_score_and_big_ids_switch_to_16_bit(tmp_path) -> None:
    overlap = instances(0, [(0, 0, 30, 30), (20, 20, 50, 50)], [3, 9], [0.4, 0.7], h=60, w=60)
    with InstancePngSink(tmp_path) as sink:
        sink.write(None, overlap)
        with pytest.warns(MediaWarning, match="track id 300 > 255; from frame 1 on, PNGs are 16-bit"):
            sink.write(None, instances(1, [(0, 0, 10, 10)], [300], [0.9], h=60, w=60))
        sink.write(None, instances(2, [(5, 5, 10, 10)], [2], [0.9], h=60, w=60))
    ids = np.array(Image.open(tmp_path / "00000.png"))
    assert ids[25, 25] == 9 and ids[10, 10] == 3 and ids[45, 45] == 9 and ids[55, 5] == 0
    wide = cv2.imread(str(tmp_path / "00001.png"), cv2.IMREAD_UNCHANGED)
    assert wide.dtype == np.uint16 and wide[5, 5] == 300 and wide[20, 20] == 0
    assert cv2.imread(str(tmp_path / "00002.png"), cv2.IMREAD_UNCHANGED)[7, 7] == 2
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def parse_mots(path) -> list[tuple[int, int, int, np.ndarray]]:
    """(frame, track id, class id, mask) per line, decoded with pycocotools."""
    out = []
    for line in path.read_text().splitlines():
        frame, tid, cls, h, w, rle = line.split(" ")
        mask = mask_utils.decode({"size": [int(h), int(w)], "counts": rle.encode()})
        out.append((int(frame), int(tid), int(cls), mask.astype(bool)))
    return out


def test_mots_lines_decode_back_to_the_masks(tmp_path) -> None:
    rng = np.random.default_rng(3)
    frames = [random_instances(i, rng, n=4) for i in (0, 1, 7)] + [FrameInstances.empty(8, 48, 64)]
    with MotsTxtSink(tmp_path / "mots" / "out.txt") as sink:
        for inst in frames:
            sink.write(None, inst)
    lines = parse_mots(tmp_path / "mots" / "out.txt")
    assert len(lines) == 12
    for inst in frames[:3]:
        rows = [r for r in lines if r[0] == inst.index]
        assert [r[1] for r in rows] == sorted(inst.track_ids.tolist())  # sorted by track id
        for _, tid, cls, mask in rows:
            k = int(np.flatnonzero(inst.track_ids == tid)[0])
            assert cls == inst.labels[k] + 1
            np.testing.assert_array_equal(mask, inst.masks[k])
    first = (tmp_path / "mots" / "out.txt").read_text().splitlines()[0].split(" ")
    assert first[0] == "0" and first[3:5] == ["48", "64"]


def test_mots_resolves_overlaps_and_is_flushed_every_frame(tmp_path) -> None:
    path = tmp_path / "out.txt"
    sink = MotsTxtSink(path)
    # track 5 lies entirely under the higher-scoring track 6: it gets no line
    sink.write(None, instances(0, [(0, 0, 30, 30), (10, 10, 20, 20), (0, 0, 40, 40)], [4, 5, 6], [0.5, 0.3, 0.9], h=50, w=50))
    sink.write(None, instances(1, [(0, 0, 30, 30), (20, 20, 40, 40)], [4, 6], [0.9, 0.5], [2, 0], h=50, w=50))
    # read while the sink is still open, as after a crash: the lines are in the run's temporary file
    partial = list(tmp_path.glob(".out.txt.*.partial"))
    assert not path.exists() and len(partial) == 1
    rows = parse_mots(partial[0])
    sink.close()
    assert path.read_text() and not partial[0].exists()
    assert [(r[0], r[1], r[2]) for r in rows] == [(0, 6, 1), (1, 4, 3), (1, 6, 1)]
    assert rows[0][3].sum() == 1600
    union = rows[1][3] | rows[2][3]
    assert not (rows[1][3] & rows[2][3]).any() and union.sum() == 900 + 400 - 100
    assert rows[1][3][25, 25] and not rows[2][3][25, 25]  # the overlap went to the 0.9 instance


def test_sink_errors_are_one_line(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SipvisError, match="is a file, not a folder"):
        MotsTxtSink(blocker / "out.txt")
    with pytest.raises(SipvisError, match="is a file, not a folder"):
        InstancePngSink(blocker / "png")


def test_results_json_applies_the_score_corrections_the_frames_carry(tmp_path) -> None:
    """The original tracker's first-frame quirk reaches the JSON as plain data on the instances."""
    import json

    from sipvis.io.sinks import ResultsJson

    def frame(index: int, score: float, corrections: dict) -> FrameInstances:
        inst = instances(index, [(0, 0, 10, 10)], [1], [score], h=20, w=20)
        inst.score_corrections = corrections
        return inst

    for quirk, expected in ((True, (0.2 + 0.6) / 2), (False, (0.4 + 0.6) / 2)):
        out = tmp_path / f"{quirk}.json"
        sink = ResultsJson(out).video(1, first_frame_quirk=quirk)
        sink.write(None, frame(5, 0.4, {}))
        sink.write(None, frame(6, 0.6, {(5, 1): 0.2, (3, 1): 0.9}))  # frame 3 was not written: ignored
        sink.close()
        (entry,) = json.loads(out.read_text())
        assert entry["score"] == pytest.approx(expected)


def test_io_imports_neither_torch_nor_the_tracker_nor_the_engine() -> None:
    import subprocess
    import sys

    code = ("import sys, sipvis.io, sipvis.io.sinks, sipvis.io.formats; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('sipvis.track', 'sipvis.engine'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
