"""`sipvis eval --dataset youtube-vis SPLIT`: the model over a split in the official layout, a results
file and CodaLab zip, AP when annotations exist, resume, subset, and a clear layout error."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from models import tiny_checkpoint
from sipvis.data.synth import SynthConfig, generate


def sipvis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ytvis")
    generate(root, SynthConfig(videos=3, frames=4, seed=3, split="holdout", width=320, height=180, clips=False),
             progress=False)
    return root


def test_dataset_run_scores_and_zips(dataset, tmp_path):
    weights = tiny_checkpoint(tmp_path)
    out = tmp_path / "run"
    result = sipvis("eval", "--dataset", "youtube-vis", "holdout", "--data-root", str(dataset), "--weights",
                    str(weights), "--out", str(out), "--json", str(tmp_path / "m.json"), "--quiet")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    gt = json.loads((dataset / "annotations" / "holdout.json").read_text())
    lengths = {v["id"]: len(v["file_names"]) for v in gt["videos"]}
    assert {e["video_id"] for e in results} == set(lengths)
    assert all(len(e["segmentations"]) == lengths[e["video_id"]] for e in results)
    with zipfile.ZipFile(out / "results.zip") as zf:
        assert zf.namelist() == ["results.json"]
        assert json.loads(zf.read("results.json")) == results
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert len(metrics["stats"]) == 12 and 0.0 <= metrics["AP"] < 0.5  # random weights score low

    again = sipvis("eval", "--dataset", "youtube-vis", "holdout", "--data-root", str(dataset), "--weights",
                   str(weights), "--out", str(out), "--subset", "2")
    assert again.returncode == 0, again.stderr
    assert "resuming: 2 of 2 videos already done" in again.stderr
    assert len({e["video_id"] for e in json.loads((out / "results.json").read_text())}) <= 2


def test_missing_layout_is_explained(tmp_path):
    (tmp_path / "root").mkdir()
    result = sipvis("eval", "--dataset", "youtube-vis", "valid", "--data-root", str(tmp_path / "root"),
                    "--weights", "x")
    assert result.returncode == 1
    assert "expected <root>/<split>/JPEGImages" in result.stderr and "Traceback" not in result.stderr


def test_torchrun_shards_give_the_same_numbers(dataset, tmp_path):
    weights = tiny_checkpoint(tmp_path)
    common = ["eval", "--dataset", "youtube-vis", "holdout", "--data-root", str(dataset), "--weights", str(weights),
              "--device", "cpu", "--quiet"]
    single = sipvis(*common, "--out", str(tmp_path / "one"), "--json", str(tmp_path / "one.json"))
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                "-m", "sipvis.cli", *common, "--out", str(tmp_path / "two"), "--json", str(tmp_path / "two.json")]
    sharded = subprocess.run(torchrun, capture_output=True, text=True, timeout=600)
    assert sharded.returncode == 0, sharded.stderr
    per_video = sorted(p.name for p in (tmp_path / "two" / "videos").glob("*.json"))
    assert per_video == ["1.json", "2.json", "3.json"]
    assert json.loads((tmp_path / "two.json").read_text()) == json.loads((tmp_path / "one.json").read_text())
