"""Tracking metrics (HOTA, CLEAR, Identity, Count) equal to the official TrackEval on every oracle case of
../shared/reference/trackeval/cases (1e-9 for floats, exact for counts, every field, per sequence and per
class), the MOTS readers' one-line errors, inputs sipvis accepts where TrackEval refuses them, and a track's
own MOTS output scored against itself."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MEDIA, SHARED, YTVIS_EVAL, require
from pycocotools import mask as mask_utils

from sipvis.errors import SipvisError
from sipvis.evaluation.tracking import (
    ALPHAS,
    SequenceClass,
    evaluate_tracking,
    evaluate_tracking_files,
    format_tracking_table,
)
from sipvis.io.formats import MotsTxtSink
from sipvis.results import FrameInstances

CASES = SHARED / "reference" / "trackeval" / "cases"


def _case_names() -> list[str]:
    """Every case folder; a placeholder (which skips, or fails under CI) when ../shared is absent."""
    if not CASES.is_dir():
        return ["<cases missing>"]
    return sorted(p.name for p in CASES.iterdir() if (p / "expected.json").is_file())


def _inputs(case: Path, fmt: str) -> tuple[Path, Path]:
    """GT and results paths of a case in TrackEval's default layout (the tracker is named `tracker`)."""
    if fmt == "youtube-vis":
        return case / "gt.json", case / "pred.json"
    if fmt == "kitti-mots":
        return case / "gt", case / "trackers" / "tracker" / "data"
    return case / "gt", case / "trackers" / "MOTS-train" / "tracker" / "data"


def _compare(got, want, path: str, diffs: list[str]) -> None:
    """Every field of `want` in `got` with the same keys: ints exact (and int), floats within 1e-9."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            diffs.append(f"{path}: keys {sorted(got) if isinstance(got, dict) else got!r} != {sorted(want)}")
            return
        for k in want:
            _compare(got[k], want[k], f"{path}.{k}", diffs)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            diffs.append(f"{path}: {got!r} != {want!r}")
            return
        for i, (g, w) in enumerate(zip(got, want)):
            _compare(g, w, f"{path}[{i}]", diffs)
    elif isinstance(want, int):
        if type(got) is not int or got != want:
            diffs.append(f"{path}: {got!r} != {want!r} (exact)")
    elif not (isinstance(got, float) and abs(got - want) <= 1e-9):
        diffs.append(f"{path}: {got!r} != {want!r}")


@pytest.mark.parametrize("name", _case_names())
def test_trackeval_case(name):
    case = require(CASES / name)
    expected = json.loads((case / "expected.json").read_text())
    fmt = expected["format"].replace("_", "-")
    result = evaluate_tracking_files(fmt, *_inputs(case, fmt))
    assert result["classes"] == expected["classes"]
    assert result["sequences"] == expected["sequences"]
    assert np.array_equal(ALPHAS, expected["alphas"])
    diffs: list[str] = []
    for key in ("combined", "per_sequence", "class_combined"):
        assert (key in result) == (key in expected), key
        if key in expected:
            _compare(result[key], expected[key], key, diffs)
    assert not diffs, f"{len(diffs)} fields differ from TrackEval:\n" + "\n".join(diffs[:20])
    # the headline is the same numbers again, as the terminal table shows them
    table = {row[0]: row for row in format_tracking_table(result)[1:]}
    for cls, head in expected["headline"].items():
        label = {"cls_comb_cls_av": "all (class-averaged)", "cls_comb_det_av": "all (detection-averaged)"}.get(cls, cls)
        assert table[label][1] == f"{head['HOTA']:.3f}" and table[label][5] == str(head["IDSW"])


def test_only_requested_metrics_and_table_columns():
    case = require(CASES / "mots_kitti_basic")
    result = evaluate_tracking_files("kitti-mots", *_inputs(case, "kitti-mots"), metrics=["identity", "clear"])
    assert result["metrics"] == ["clear", "identity"]
    assert set(result["combined"]["car"]) == {"CLEAR", "Identity", "Count"}
    assert format_tracking_table(result)[0] == ("class", "MOTSA", "IDSW", "IDF1")
    with pytest.raises(SipvisError, match="unknown tracking metric 'mota'"):
        evaluate_tracking_files("kitti-mots", *_inputs(case, "kitti-mots"), metrics=["mota"])
    with pytest.raises(SipvisError, match="unknown tracking format"):
        evaluate_tracking_files("mot17", *_inputs(case, "kitti-mots"))
    calls = []
    evaluate_tracking_files("kitti-mots", *_inputs(case, "kitti-mots"), progress=lambda *a: calls.append(a))
    assert calls == [(1, 2), (2, 2)]


def test_already_parsed_youtube_vis_gives_the_same():
    """The CLI parses once for AP and passes the parsed files on."""
    from sipvis.evaluation.schema import load_json, parse_gt, parse_results

    case = require(CASES / "ytvis_trackeval_quirks")
    gt = load_json(case / "gt.json", "ground-truth")
    parsed_gt = parse_gt(gt)
    parsed = (parsed_gt, parse_results(parsed_gt, case / "pred.json", unknown_videos="drop"))
    assert evaluate_tracking_files("youtube-vis", gt, case / "pred.json", parsed=parsed) == \
        evaluate_tracking_files("youtube-vis", case / "gt.json", case / "pred.json")


# ------------------------------------------------------------- inputs TrackEval refuses, sipvis accepts


def _ytvis(gt, results) -> dict:
    r = evaluate_tracking_files("youtube-vis", gt, results)
    return {k: r[k] for k in ("combined", "class_combined", "per_sequence")}


def _uncompressed(rle: dict) -> dict:
    """The same mask as an uncompressed RLE (counts a list), as the official GT files hold it."""
    m = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode() if isinstance(rle["counts"], str)
                           else rle["counts"]})
    flat = m.ravel(order="F")
    counts = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, len(flat)])
    if len(flat) and flat[0]:  # uncompressed counts start with a run of zeros
        counts = np.r_[0, counts]
    return {"size": rle["size"], "counts": [int(c) for c in counts]}


def test_compressed_gt_scores_as_its_uncompressed_copy():
    case = require(YTVIS_EVAL / "compressed_gt")
    gt = json.loads((case / "gt.json").read_text())
    plain = copy.deepcopy(gt)
    for ann in plain["annotations"]:
        ann["segmentations"] = [s and _uncompressed(s) for s in ann["segmentations"]]
    assert _ytvis(gt, case / "pred.json") == _ytvis(plain, case / "pred.json")


def test_polygon_gt_scores_as_its_rasterised_copy():
    case = require(YTVIS_EVAL / "polygon_gt")
    gt = json.loads((case / "gt.json").read_text())
    size = {v["id"]: (v["height"], v["width"]) for v in gt["videos"]}
    raster = copy.deepcopy(gt)
    for ann in raster["annotations"]:
        h, w = size[ann["video_id"]]
        ann["segmentations"] = [
            s and _uncompressed({"size": [h, w], "counts": mask_utils.merge(mask_utils.frPyObjects(s, h, w))["counts"]})
            if isinstance(s, list) else s for s in ann["segmentations"]]
    assert _ytvis(gt, case / "pred.json") == _ytvis(raster, case / "pred.json")


def test_uncompressed_results_score_as_compressed():
    case = require(YTVIS_EVAL / "pred_uncompressed")
    pred = json.loads((case / "pred.json").read_text())
    comp = copy.deepcopy(pred)
    for r in comp:
        r["segmentations"] = [s and {"size": s["size"], "counts": mask_utils.frPyObjects(s, *s["size"])["counts"]
                                     .decode()} if s and isinstance(s["counts"], list) else s
                              for s in r["segmentations"]]
    assert _ytvis(case / "gt.json", pred) == _ytvis(case / "gt.json", comp)


def test_size_mismatch_is_one_clear_line():
    case = require(YTVIS_EVAL / "size_mismatch")
    with pytest.raises(SipvisError, match=r"results\[\d+\]\.segmentations\[\d+\] has RLE size .* ground-truth mask"):
        evaluate_tracking_files("youtube-vis", case / "gt.json", case / "pred.json")


# ---------------------------------------------------------------------------------- MOTS layouts


def _frame(index: int, boxes: list[tuple[int, int, int, int, int, int]], h: int = 24, w: int = 32) -> FrameInstances:
    """A frame with (track id, label, x0, y0, x1, y1) rectangles (later ones drawn on top)."""
    masks = np.zeros((len(boxes), h, w), bool)
    for i, (_, _, x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    return FrameInstances(
        index=index, height=h, width=w,
        boxes=np.array([b[2:] for b in boxes], np.float32).reshape(-1, 4),
        scores=np.linspace(0.5, 0.9, len(boxes), dtype=np.float32),
        labels=np.array([b[1] for b in boxes], np.int64), track_ids=np.array([b[0] for b in boxes], np.int64),
        masks=masks)


def _write_track(path: Path, frames: int = 6, first_frame: int = 0) -> Path:
    """MOTS text as `sipvis track -o x.txt` writes it: two crossing objects of class 1 and 2, one leaving
    (`first_frame=1`: as `--mots-style mots-challenge` numbers the frames)."""
    with MotsTxtSink(path, first_frame) as sink:
        for t in range(frames):
            boxes = [(1, 0, 2 + 3 * t, 4, 10 + 3 * t, 14), (2, 1, 22 - 3 * t, 6, 30 - 3 * t, 18)]
            if t < frames - 2:
                boxes.append((5, 1, 12, 18, 16, 23))
            sink.write(None, _frame(t, boxes))
    return path


def _kitti(root: Path, seqs: dict[str, int], text: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A KITTI-MOTS GT folder (label_02, seqmap) and results folder; `text`: GT = results file contents."""
    gt, res = root / "gt", root / "res"
    (gt / "label_02").mkdir(parents=True)
    res.mkdir()
    (gt / "evaluate_mots.seqmap.val").write_text(
        "".join(f"{s} empty 000000 {n - 1:06d}\n" for s, n in seqs.items()))
    for s in seqs:
        body = (text or {}).get(s, "")
        (gt / "label_02" / f"{s}.txt").write_text(body)
        (res / f"{s}.txt").write_text(body)
    return gt, res


def _challenge(root: Path, seqs: dict[str, int], text: dict[str, str], size: tuple[int, int] = (24, 32)
               ) -> tuple[Path, Path]:
    gt, res = root / "gt", root / "res"
    (gt / "seqmaps").mkdir(parents=True)
    res.mkdir()
    (gt / "seqmaps" / "MOTS-train.txt").write_text("name\n" + "".join(f"{s}\n" for s in seqs))
    for s, n in seqs.items():
        folder = gt / "MOTS-train" / s
        (folder / "gt").mkdir(parents=True)
        (folder / "seqinfo.ini").write_text(f"[Sequence]\nname={s}\nseqLength={n}\nimWidth={size[1]}\nimHeight={size[0]}\n")
        (folder / "gt" / "gt.txt").write_text(text[s])
        (res / f"{s}.txt").write_text(text[s])
    return gt, res


def _assert_perfect(result: dict, classes: list[str]) -> None:
    for c in classes:
        r = result["combined"][c]
        assert r["HOTA"]["mean_over_alphas"]["HOTA"] == pytest.approx(1.0, abs=1e-12)
        assert r["CLEAR"]["MOTA"] == 1.0 and r["CLEAR"]["IDSW"] == 0
        assert r["Identity"]["IDF1"] == 1.0
        assert r["Count"]["GT_Dets"] > 0


def test_own_mots_output_against_itself_kitti(tmp_path):
    text = _write_track(tmp_path / "track.txt").read_text()
    gt, res = _kitti(tmp_path, {"0000": 6, "0001": 6}, {"0000": text, "0001": text})
    _assert_perfect(evaluate_tracking_files("kitti-mots", gt, res), ["car", "pedestrian"])


def test_own_mots_output_against_itself_challenge(tmp_path):
    # MOTSChallenge frames are 1-based: what `sipvis track --mots-style mots-challenge` writes
    text = _write_track(tmp_path / "track1.txt", first_frame=1).read_text()
    lines = _write_track(tmp_path / "track.txt").read_text().splitlines()
    assert text == "".join(f"{int(l.split()[0]) + 1} {l.split(' ', 1)[1]}\n" for l in lines)
    gt, res = _challenge(tmp_path, {"MOTS20-01": 6}, {"MOTS20-01": text})
    _assert_perfect(evaluate_tracking_files("mots-challenge", gt, res), ["pedestrian"])
    # the KITTI numbering is refused with the file and line
    (res / "MOTS20-01.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(SipvisError, match=r"MOTS20-01\.txt:1: frame 0 is outside .*1-based"):
        evaluate_tracking_files("mots-challenge", gt, res)


@pytest.mark.slow
def test_sipvis_track_output_against_itself(tmp_path):
    from models import tiny_checkpoint

    src = require(MEDIA / "car-detection.mp4")
    weights = tiny_checkpoint(tmp_path / "w")
    cmd = [sys.executable, "-c", "from sipvis.cli import main; main()", "track", str(src), "--weights", str(weights),
           "--max-frames", "4", "--tracker", "original", "-o", str(tmp_path / "out.txt"), "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    text = (tmp_path / "out.txt").read_text()
    classes = {line.split()[2] for line in text.splitlines()}
    assert classes & {"1", "2"}, "the tiny model labels its masks 1 and 2"
    gt, res = _kitti(tmp_path, {"0000": 4}, {"0000": text})
    result = evaluate_tracking_files("kitti-mots", gt, res)
    _assert_perfect(result, [c for c, i in (("car", "1"), ("pedestrian", "2")) if i in classes])
    # the same run numbered for MOTSChallenge (1-based frames) scores perfectly in that layout
    run = subprocess.run([*cmd[:-3], "-o", str(tmp_path / "out1.txt"), "--mots-style", "mots-challenge", "--quiet"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    text1 = (tmp_path / "out1.txt").read_text()
    assert text1 == "".join(f"{int(l.split()[0]) + 1} {l.split(' ', 1)[1]}\n" for l in text.splitlines())
    if "2" in classes:  # MOTSChallenge scores pedestrians (class 2) only
        size = tuple(int(v) for v in text1.split()[3:5])
        gt, res = _challenge(tmp_path / "challenge", {"MOTS20-01": 4}, {"MOTS20-01": text1}, size)
        _assert_perfect(evaluate_tracking_files("mots-challenge", gt, res), ["pedestrian"])


# ------------------------------------------------------------------------------ bad MOTS inputs


def _line(frame: int, tid: int, cls: int, x0: int, x1: int, h: int = 24, w: int = 32) -> str:
    m = np.zeros((h, w), np.uint8, order="F")
    m[2:10, x0:x1] = 1
    return f"{frame} {tid} {cls} {h} {w} {mask_utils.encode(m)['counts'].decode()}\n"


def test_missing_seqmap(tmp_path):
    gt, res = _kitti(tmp_path, {"0000": 3})
    (gt / "evaluate_mots.seqmap.val").unlink()
    with pytest.raises(SipvisError, match=r"sequence map .*not found: .*evaluate_mots\.seqmap\.val"):
        evaluate_tracking_files("kitti-mots", gt, res)
    with pytest.raises(SipvisError, match=r"seqmaps/MOTS-test\.txt"):
        evaluate_tracking_files("mots-challenge", gt, res, split="test")


def test_single_line_kitti_seqmap_is_accepted(tmp_path):
    gt, res = _kitti(tmp_path, {"0000": 3}, {"0000": _line(0, 1, 1, 0, 5)})
    assert evaluate_tracking_files("kitti-mots", gt, res)["combined"]["car"]["CLEAR"]["MOTA"] == 1.0


def test_overlapping_masks_name_file_and_line(tmp_path):
    gt, res = _kitti(tmp_path, {"0000": 3, "0001": 3}, {"0000": _line(0, 1, 1, 0, 5) + _line(1, 1, 1, 0, 5)})
    (res / "0000.txt").write_text(_line(0, 1, 1, 0, 5) + _line(0, 2, 2, 4, 9))
    with pytest.raises(SipvisError, match=r"res/0000\.txt:2: the mask overlaps the mask of line 1"):
        evaluate_tracking_files("kitti-mots", gt, res)
    # GT masks and the ignore region must be disjoint too
    (gt / "label_02" / "0001.txt").write_text(_line(0, 1, 1, 0, 5) + _line(0, 10000, 10, 3, 8))
    (res / "0000.txt").write_text("")
    with pytest.raises(SipvisError, match=r"label_02/0001\.txt:2: the mask overlaps"):
        evaluate_tracking_files("kitti-mots", gt, res)


def test_frame_out_of_range(tmp_path):
    gt, res = _kitti(tmp_path, {"0000": 3, "0001": 3})
    (res / "0001.txt").write_text(_line(0, 1, 1, 0, 5) + _line(3, 1, 1, 0, 5))
    with pytest.raises(SipvisError, match=r"res/0001\.txt:2: frame 3 is outside sequence 0001 \(frames 0\.\.2\)"):
        evaluate_tracking_files("kitti-mots", gt, res)


def test_mismatched_sizes(tmp_path):
    gt, res = _kitti(tmp_path, {"0000": 3, "0001": 3}, {"0000": _line(0, 1, 1, 0, 5)})
    (res / "0000.txt").write_text(_line(0, 1, 1, 0, 5, h=20, w=30))
    with pytest.raises(SipvisError, match=r"res/0000\.txt:1: mask size 20x30 .* differs from the sequence's 24x32"):
        evaluate_tracking_files("kitti-mots", gt, res)


def test_malformed_and_duplicate_lines(tmp_path):
    gt, res = _kitti(tmp_path, {"0000": 3, "0001": 3})
    (gt / "label_02" / "0000.txt").write_text(_line(0, 1, 1, 0, 5) + "1 2 car 24 32 abc\n")
    with pytest.raises(SipvisError, match=r"label_02/0000\.txt:2: expected 'frame track_id class_id height width rle'"):
        evaluate_tracking_files("kitti-mots", gt, res)
    (gt / "label_02" / "0000.txt").write_text(_line(0, 1, 1, 0, 5) + _line(0, 1, 2, 10, 15))
    with pytest.raises(SipvisError, match=r"0000\.txt:2: track id 1 appears twice in one frame \(also line 1\)"):
        evaluate_tracking_files("kitti-mots", gt, res)


def test_missing_files(tmp_path):
    gt, res = _kitti(tmp_path, {"0000": 3, "0001": 3})
    (res / "0001.txt").unlink()
    with pytest.raises(SipvisError, match=r"results file of sequence 0001 .* not found: .*res/0001\.txt"):
        evaluate_tracking_files("kitti-mots", gt, res)
    with pytest.raises(SipvisError, match="results folder not found"):
        evaluate_tracking_files("kitti-mots", gt, tmp_path / "nope")
    gt2, res2 = _challenge(tmp_path / "c", {"MOTS20-01": 3}, {"MOTS20-01": ""})
    (gt2 / "MOTS-train" / "MOTS20-01" / "seqinfo.ini").write_text("[Sequence]\nname=x\n")
    with pytest.raises(SipvisError, match=r"seqinfo\.ini: needs a \[Sequence\] section with an integer seqLength"):
        evaluate_tracking_files("mots-challenge", gt2, res2)


# --------------------------------------------------------------------------------- the core API


def test_core_api_on_plain_arrays():
    """Two frames, one GT id followed by tracker 7 then 9: an ID switch, HOTA's AssA halves."""
    one = np.ones((1, 1))
    seq = SequenceClass.from_frames([np.array([3]), np.array([3])], [np.array([7]), np.array([9])], [one, one])
    r = evaluate_tracking({"s": {"a": seq}}, ["a"])["combined"]["a"]
    assert r["CLEAR"]["IDSW"] == 1 and r["CLEAR"]["CLR_TP"] == 2
    assert r["HOTA"]["mean_over_alphas"]["AssA"] == pytest.approx(0.5)
    assert r["Identity"]["IDTP"] == 1 and r["Count"] == {"Dets": 2, "GT_Dets": 2, "IDs": 2, "GT_IDs": 1}


def test_challenge_size_and_frame_errors_name_file_and_line(tmp_path):
    # MOTSChallenge: the size comes from seqinfo.ini, frames are 1..seqLength
    gt, res = _challenge(tmp_path, {"MOTS20-01": 3}, {"MOTS20-01": _line(1, 1, 2, 0, 5)})
    (res / "MOTS20-01.txt").write_text(_line(1, 1, 2, 0, 5) + _line(2, 1, 2, 0, 5, h=20, w=30))
    with pytest.raises(SipvisError, match=r"res/MOTS20-01\.txt:2: mask size 20x30 .* differs from the sequence's 24x32"):
        evaluate_tracking_files("mots-challenge", gt, res)
    (res / "MOTS20-01.txt").write_text(_line(1, 1, 2, 0, 5) + _line(4, 1, 2, 0, 5))
    with pytest.raises(SipvisError, match=r"res/MOTS20-01\.txt:2: frame 4 is outside sequence MOTS20-01 \(frames 1\.\.3"):
        evaluate_tracking_files("mots-challenge", gt, res)
