"""`sipvis eval`: tables, --json, one-line errors, --make-split, end-to-end GT-as-results scoring, and the
tracking metrics (--metrics hota,clear,identity; --format kitti-mots|mots-challenge) through the CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import MEDIA, SHARED, YTVIS_EVAL, require
from pycocotools import mask as mask_utils

from sipvis.cli import cli
from sipvis.evaluation import STAT_NAMES, evaluate


def run(*args: str):
    return CliRunner().invoke(cli, ["eval", *args])


def _case(name: str) -> Path:
    return require(YTVIS_EVAL / name)


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _gt_as_results(gt: dict) -> list[dict]:
    """The GT tracks written as a CodaLab results file (compressed RLE with string counts)."""
    videos = {v["id"]: v for v in gt["videos"]}
    out = []
    for a in gt["annotations"]:
        v = videos[a["video_id"]]
        segs = []
        for s in a["segmentations"]:
            if not s:
                segs.append(None)
                continue
            if isinstance(s, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(s, v["height"], v["width"]))
            elif isinstance(s["counts"], list):
                rle = mask_utils.frPyObjects(s, *s["size"])
            else:
                rle = dict(s)
            if isinstance(rle["counts"], bytes):
                rle["counts"] = rle["counts"].decode("utf-8")
            segs.append(rle)
        out.append({"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0, "segmentations": segs})
    return out


# -------------------------------------------------------------------------------------- scoring


def test_table_and_json(tmp_path: Path) -> None:
    case = _case("false_positives")
    out = tmp_path / "deep" / "metrics.json"
    r = run("--gt", str(case / "gt.json"), "--results", str(case / "pred.json"), "--json", str(out))
    assert r.exit_code == 0, r.output
    expected = json.loads((case / "expected.json").read_text())["stats"]
    for name, value in zip(("AP", "AP50", "AR100"), (expected[0], expected[1], expected[8])):
        line = next(ln for ln in r.stdout.splitlines() if f" {name} " in ln)
        assert f"{value:.3f}" in line
    assert "n/a" in r.stdout  # APm is undefined (-1) in this case
    assert "Per-class AP" in r.stdout
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["stats", *STAT_NAMES, "per_class"]
    np.testing.assert_allclose(metrics["stats"], expected, rtol=0, atol=1e-9)
    assert metrics["stats"] == [metrics[n] for n in STAT_NAMES]
    lib = evaluate(case / "gt.json", case / "pred.json")
    assert metrics["per_class"] == lib.per_class


def test_quiet_prints_nothing_but_writes_json(tmp_path: Path) -> None:
    case = _case("perfect")
    r = run("--gt", str(case / "gt.json"), "--results", str(case / "pred.json"), "--json", str(tmp_path / "m.json"), "--quiet")
    assert r.exit_code == 0 and r.output == ""
    assert json.loads((tmp_path / "m.json").read_text())["AP"] == pytest.approx(1.0, abs=1e-12)


def test_not_json(tmp_path: Path) -> None:
    case = _case("perfect")
    bad = tmp_path / "res.json"
    bad.write_text('[{"video_id": 1,')
    r = run("--gt", str(case / "gt.json"), "--results", str(bad))
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [
        f"Error: results file {bad} is not valid JSON (line 1, column 17: Expecting property name enclosed in double quotes)"
    ]
    assert "Traceback" not in r.output


def test_missing_file(tmp_path: Path) -> None:
    case = _case("perfect")
    r = run("--gt", str(case / "gt.json"), "--results", str(tmp_path / "nope.json"))
    assert r.exit_code == 1 and r.stderr.strip() == f"Error: --results: file not found: {tmp_path / 'nope.json'}"


def test_wrong_schema(tmp_path: Path) -> None:
    case = _case("perfect")
    gt = str(case / "gt.json")
    r = run("--gt", gt, "--results", gt)  # GT passed as results
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "results must be a JSON list" in r.stderr and "looks like a ground-truth file" in r.stderr
    res = json.loads((case / "pred.json").read_text())
    del res[2]["score"]
    res[3]["segmentations"] = "oops"
    r = run("--gt", gt, "--results", str(_write(tmp_path / "r.json", res)))
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "Error: results[2] is missing 'score'" in r.stderr and "(and 1 more: 1 schema)" in r.stderr


def test_size_mismatch_warns_and_strict_fails() -> None:
    case = _case("size_mismatch")
    args = ("--gt", str(case / "gt.json"), "--results", str(case / "pred.json"))
    r = run(*args)
    assert r.exit_code == 0
    assert "Warning: results[0].segmentations[0] has RLE size [32, 24] but video 1 is [24, 32]" in r.stderr
    assert "may not match" in r.stderr  # the official evaluator's own warning, too
    r = run(*args, "--strict", "--quiet")
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("Error: results[0].segmentations[0] has RLE size [32, 24]")


def test_zero_based_ids(tmp_path: Path) -> None:
    case = _case("perfect")
    res = json.loads((case / "pred.json").read_text())
    for x in res:
        x["video_id"] -= 1
    r = run("--gt", str(case / "gt.json"), "--results", str(_write(tmp_path / "r.json", res)))
    assert r.exit_code == 1
    assert "0-based video ids" in r.stderr and "add 1 to every video_id" in r.stderr


def test_unknown_video_fails_or_drops() -> None:
    case = _case("unknown_video")
    args = ("--gt", str(case / "gt.json"), "--results", str(case / "pred.json"), "--quiet")
    r = run(*args)
    assert r.exit_code == 1 and "is not a video of the ground truth" in r.stderr
    r = run(*args, "--drop-unknown-videos")
    assert r.exit_code == 0 and "(dropped)" in r.stderr


def test_empty_results(tmp_path: Path) -> None:
    case = _case("perfect")
    r = run("--gt", str(case / "gt.json"), "--results", str(_write(tmp_path / "r.json", [])),
            "--json", str(tmp_path / "m.json"))
    assert r.exit_code == 0 and "results list is empty" in r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["stats"] == [0.0] * 12


def test_usage_errors() -> None:
    assert run().exit_code == 2
    assert run("--make-split", "--gt", "x.json").exit_code == 2


# ------------------------------------------------------------------------------------ make-split


def test_make_split_reproducible(tmp_path: Path) -> None:
    gt = _case("many_videos") / "gt.json"
    outs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        r = run("--make-split", "--gt", str(gt), "--out", str(tmp_path / name), "--ratio", "0.1", "--seed", str(seed))
        assert r.exit_code == 0, r.output
        assert "holdout.json (4 videos" in r.stdout
        outs.append({p: (tmp_path / name / p).read_bytes() for p in ("train.json", "holdout.json")})
    assert outs[0] == outs[1]  # same seed -> byte-identical files
    assert outs[0]["holdout.json"] != outs[2]["holdout.json"]
    full = json.loads(gt.read_text())
    train, hold = (json.loads(outs[0][p]) for p in ("train.json", "holdout.json"))
    t_ids, h_ids = {v["id"] for v in train["videos"]}, {v["id"] for v in hold["videos"]}
    assert not t_ids & h_ids and t_ids | h_ids == {v["id"] for v in full["videos"]}
    assert sorted(a["id"] for a in train["annotations"] + hold["annotations"]) == sorted(a["id"] for a in full["annotations"])
    # the holdout file scores like any GT: its own tracks as results give AP 1
    r = run("--gt", str(tmp_path / "a" / "holdout.json"),
            "--results", str(_write(tmp_path / "r.json", _gt_as_results(hold))), "--json", str(tmp_path / "m.json"))
    assert r.exit_code == 0 and json.loads((tmp_path / "m.json").read_text())["AP"] == pytest.approx(1.0, abs=1e-12)


def test_make_split_bad_ratio(tmp_path: Path) -> None:
    r = run("--make-split", "--gt", str(_case("perfect") / "gt.json"), "--out", str(tmp_path), "--ratio", "1.5")
    assert r.exit_code == 2 and "Invalid value for '--ratio'" in r.stderr and "0<x<1" in r.stderr


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("name", ["many_videos", "polygon_gt", "compressed_gt"])
def test_gt_as_results_is_perfect_and_perturbed_is_not(tmp_path: Path, name: str) -> None:
    case = _case(name)
    gt = json.loads((case / "gt.json").read_text())
    perfect = [r for r, a in zip(_gt_as_results(gt), gt["annotations"]) if not a["iscrowd"]]
    r = run("--gt", str(case / "gt.json"), "--results", str(_write(tmp_path / "p.json", perfect)),
            "--json", str(tmp_path / "p_m.json"), "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "p_m.json").read_text())
    for name_, v in zip(STAT_NAMES, m["stats"]):
        if name_ != "AR1":  # AR1 < 1 where a video holds several GT of one category
            assert v == -1 or v == pytest.approx(1.0, abs=1e-12), name_

    # perturb: shift every mask, drop a third of the tracks, relabel some, lower the scores at random
    rng = np.random.default_rng(0)
    noisy = []
    cats = sorted(c["id"] for c in gt["categories"])
    for res in copy.deepcopy(perfect):
        if rng.random() < 1 / 3:
            continue
        res["score"] = float(rng.random())
        if rng.random() < 0.2:
            res["category_id"] = int(rng.choice(cats))
        segs = []
        for s in res["segmentations"]:
            if s is None:
                segs.append(None)
                continue
            m_ = mask_utils.decode(s)
            m_ = np.roll(m_, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 2)))
            rle = mask_utils.encode(np.asfortranarray(m_))
            segs.append({"size": rle["size"], "counts": rle["counts"].decode()})
        res["segmentations"] = segs
        noisy.append(res)
    r = run("--gt", str(case / "gt.json"), "--results", str(_write(tmp_path / "n.json", noisy)),
            "--json", str(tmp_path / "n_m.json"), "--quiet")
    assert r.exit_code == 0, r.output
    ap = json.loads((tmp_path / "n_m.json").read_text())["AP"]
    assert 0.0 < ap < 1.0


def test_bbox_iou_type(tmp_path: Path) -> None:
    """GT masks given back as results: their boxes match the GT `bboxes`, so box AP is 1; noisy is lower."""
    case = _case("many_videos")
    gt = json.loads((case / "gt.json").read_text())
    perfect = [r for r, a in zip(_gt_as_results(gt), gt["annotations"]) if not a["iscrowd"]]
    r = run("--gt", str(case / "gt.json"), "--results", str(_write(tmp_path / "p.json", perfect)),
            "--iou-type", "bbox", "--json", str(tmp_path / "m.json"))
    assert r.exit_code == 0, r.output
    assert "YouTube-VIS bbox evaluation" in r.stdout
    assert json.loads((tmp_path / "m.json").read_text())["AP"] == pytest.approx(1.0, abs=1e-12)
    r = run("--gt", str(case / "gt.json"), "--results", str(case / "pred.json"), "--iou-type", "bbox",
            "--json", str(tmp_path / "n.json"), "--quiet")
    assert r.exit_code == 0
    assert 0.0 < json.loads((tmp_path / "n.json").read_text())["AP"] < 1.0


# ------------------------------------------------------------------------------ tracking metrics

TRACKEVAL = SHARED / "reference" / "trackeval" / "cases"


def _errors(r) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("Error:")]


def _assert_same(got, want, path: str) -> None:
    """Every field of `want` in `got` (ints exact, floats within 1e-9): the oracle tests' comparison."""
    from test_tracking_metrics import _compare

    diffs: list[str] = []
    _compare(got, want, path, diffs)
    assert not diffs, "\n".join(diffs[:20])


@pytest.mark.parametrize("name, args", [
    ("ytvis_false_positives", ("--gt", "gt.json", "--results", "pred.json")),
    ("mots_kitti_basic", ("--format", "kitti-mots", "--gt", "gt", "--results", "trackers/tracker/data")),
])
def test_tracking_metrics_equal_trackeval(tmp_path: Path, name: str, args: tuple[str, ...]) -> None:
    case = require(TRACKEVAL / name)
    args = tuple(str(case / a) if prev in ("--gt", "--results") else a for prev, a in zip(("",) + args, args))
    out = tmp_path / "m.json"
    r = run(*args, "--metrics", "hota,clear,identity", "--json", str(out))
    assert r.exit_code == 0, r.output
    expected = json.loads((case / "expected.json").read_text())
    got = json.loads(out.read_text())
    assert list(got) == ["tracking"]  # no AP asked, no AP written
    track = got["tracking"]
    assert track["classes"] == expected["classes"] and track["metrics"] == ["hota", "clear", "identity"]
    for key in ("combined", "per_sequence", "class_combined"):
        assert (key in track) == (key in expected), key
        if key in expected:
            _assert_same(track[key], expected[key], key)
    # the compact table: one row per class (and class combinations for YouTube-VIS), headline figures
    assert "Tracking metrics" in r.stdout and "Per-class AP" not in r.stdout
    header = next(line for line in r.stdout.splitlines() if "HOTA" in line)
    mota = "MOTSA" if name.startswith("mots") else "MOTA"
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == ["class", "HOTA", "DetA", "AssA", mota, "IDSW", "IDF1"]
    for cls, head in expected["headline"].items():
        label = {"cls_comb_cls_av": "all (class-averaged)", "cls_comb_det_av": "all (detection-averaged)"}.get(cls, cls)
        row = next(line for line in r.stdout.splitlines() if f" {label} " in line)
        assert f"{head['HOTA']:.3f}" in row and f" {head['IDSW']} " in row
    assert f"Metrics written to {out}" in r.stdout.replace("\n", "")


def test_ap_and_hota_in_one_run(tmp_path: Path) -> None:
    case = require(TRACKEVAL / "ytvis_false_positives")
    args = ("--gt", str(case / "gt.json"), "--results", str(case / "pred.json"))
    r = run(*args, "--metrics", "ap,hota", "--json", str(tmp_path / "both.json"))
    assert r.exit_code == 0, r.output
    assert "Per-class AP" in r.stdout and "Tracking metrics" in r.stdout
    assert r.stdout.count("Metrics written to") == 1
    both = json.loads((tmp_path / "both.json").read_text())
    assert list(both) == ["stats", *STAT_NAMES, "per_class", "tracking"]
    assert both["tracking"]["metrics"] == ["hota"] and set(both["tracking"]["combined"]["c1"]) == {"HOTA", "Count"}
    # the AP part is exactly what --metrics ap (the default) writes
    r = run(*args, "--json", str(tmp_path / "ap.json"), "--quiet")
    assert r.exit_code == 0 and r.output == ""
    ap = json.loads((tmp_path / "ap.json").read_text())
    assert {k: v for k, v in both.items() if k != "tracking"} == ap
    expected = json.loads((case / "expected.json").read_text())["combined"]["c1"]["HOTA"]["mean_over_alphas"]
    assert both["tracking"]["combined"]["c1"]["HOTA"]["mean_over_alphas"]["HOTA"] == pytest.approx(
        expected["HOTA"], abs=1e-9)


def test_tracking_metric_errors_are_one_line(tmp_path: Path) -> None:
    case = require(TRACKEVAL / "mots_kitti_basic")
    kitti = ("--format", "kitti-mots", "--gt", str(case / "gt"), "--results", str(case / "trackers/tracker/data"))
    r = run(*kitti, "--metrics", "hota,mota")
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: --metrics: unknown metric 'mota' (choose from ap, hota, clear, identity)"
    r = run(*kitti, "--metrics", "ap,hota")
    assert r.exit_code == 2
    assert _errors(r) == ["Error: --format kitti-mots has no AP: choose from --metrics hota,clear,identity"]
    r = run(*kitti, "--split", "test", "--quiet")
    assert r.exit_code == 1 and len(_errors(r)) == 1 and r.stderr.strip() == _errors(r)[0]
    assert "sequence map" in r.stderr and str(case / "gt" / "evaluate_mots.seqmap.test") in r.stderr
    yt = require(TRACKEVAL / "ytvis_false_positives")
    r = run("--gt", str(yt / "gt.json"), "--results", str(yt / "pred.json"), "--metrics", "hota", "--iou-type", "bbox")
    assert r.exit_code == 2 and _errors(r) == ["Error: the tracking metrics (hota, clear, identity) need --iou-type segm"]
    r = run("--gt", str(yt / "gt.json"), "--results", str(yt / "pred.json"), "--split", "val")
    assert r.exit_code == 2 and _errors(r) == ["Error: --split goes with --format kitti-mots or mots-challenge"]


def test_mots_defaults_to_every_tracking_metric(tmp_path: Path) -> None:
    case = require(TRACKEVAL / "mots_challenge_basic")
    r = run("--format", "mots-challenge", "--gt", str(case / "gt"), "--results",
            str(case / "trackers/MOTS-train/tracker/data"), "--json", str(tmp_path / "m.json"), "--quiet")
    assert r.exit_code == 0 and r.output == ""
    track = json.loads((tmp_path / "m.json").read_text())["tracking"]
    assert track["metrics"] == ["hota", "clear", "identity"] and track["format"] == "mots-challenge"
    expected = json.loads((case / "expected.json").read_text())
    _assert_same(track["combined"], expected["combined"], "combined")


@pytest.mark.slow
def test_sipvis_track_output_scores_perfectly_against_itself(tmp_path: Path) -> None:
    """`sipvis track -o x.txt` (bundled demo weights) as both GT and results of a KITTI-MOTS layout:
    HOTA = MOTA = IDF1 = 1 through `sipvis eval --format kitti-mots`."""
    src = require(MEDIA / "car-detection.mp4")
    sipvis = [sys.executable, "-c", "from sipvis.cli import main; main()"]
    # the original tracker writes every detection of the demo model (trained on shapes, weak on this real
    # clip); the robust one starts no track below its birth score
    track = subprocess.run([*sipvis, "track", str(src), "--weights", "demo", "--max-frames", "5", "--tracker", "original",
                            "-o", str(tmp_path / "x.txt"), "--quiet"], capture_output=True, text=True, timeout=900)
    assert track.returncode == 0, track.stderr
    text = (tmp_path / "x.txt").read_text()
    assert text.strip(), "the demo model found nothing to track"
    gt, res = tmp_path / "gt", tmp_path / "res"
    (gt / "label_02").mkdir(parents=True)
    res.mkdir()
    (gt / "evaluate_mots.seqmap.val").write_text("0000 empty 000000 000004\n")
    (gt / "label_02" / "0000.txt").write_text(text)
    (res / "0000.txt").write_text(text)
    r = subprocess.run([*sipvis, "eval", "--format", "kitti-mots", "--gt", str(gt), "--results", str(res),
                        "--metrics", "hota,clear,identity", "--json", str(tmp_path / "m.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "MOTSA" in r.stdout
    track_res = json.loads((tmp_path / "m.json").read_text())["tracking"]
    scored = [c for c in track_res["classes"] if track_res["combined"][c]["Count"]["GT_Dets"] > 0]
    assert scored, f"no KITTI-MOTS class (1 car, 2 pedestrian) in the demo model's output: {text[:200]}"
    for c in scored:
        m = track_res["combined"][c]
        assert m["HOTA"]["mean_over_alphas"]["HOTA"] == pytest.approx(1.0, abs=1e-12)
        assert m["CLEAR"]["MOTA"] == 1.0 and m["CLEAR"]["IDSW"] == 0
        assert m["Identity"]["IDF1"] == 1.0


@pytest.mark.slow
def test_dataset_run_accepts_metrics(tmp_path: Path) -> None:
    """`--dataset youtube-vis SPLIT --metrics ...` scores the split's results with the same numbers as
    `sipvis eval --gt --results` on the files it wrote."""
    from sipvis.data.synth import SynthConfig, generate
    from sipvis.evaluation import evaluate_tracking_files

    root = tmp_path / "ytvis"
    generate(root, SynthConfig(videos=2, frames=4, seed=5, split="holdout", width=320, height=180, clips=False))
    sipvis = [sys.executable, "-c", "from sipvis.cli import main; main()"]
    common = [*sipvis, "eval", "--dataset", "youtube-vis", "holdout", "--data-root", str(root), "--weights", "demo",
              "--device", "cpu", "--out", str(tmp_path / "run")]
    r = subprocess.run([*common, "--metrics", "ap,hota,identity", "--json", str(tmp_path / "m.json")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Per-class AP" in r.stdout and "Tracking metrics" in r.stdout and "IDF1" in r.stdout
    m = json.loads((tmp_path / "m.json").read_text())
    assert len(m["stats"]) == 12 and m["tracking"]["metrics"] == ["hota", "identity"]
    want = evaluate_tracking_files("youtube-vis", root / "annotations" / "holdout.json",
                                   tmp_path / "run" / "results.json", metrics=["hota", "identity"])
    assert m["tracking"] == json.loads(json.dumps(want))
    # resumed (nothing left to run), tracking only: no AP in the file
    r = subprocess.run([*common, "--metrics", "clear", "--json", str(tmp_path / "c.json"), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert list(json.loads((tmp_path / "c.json").read_text())) == ["tracking"]
