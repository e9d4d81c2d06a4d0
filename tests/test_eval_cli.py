"""`sipvis eval`: tables, --json, one-line errors, --make-split, and end-to-end GT-as-results scoring."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import YTVIS_EVAL, require
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
    assert r.exit_code == 1 and "--ratio must be between 0 and 1" in r.stderr


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
