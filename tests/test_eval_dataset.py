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
    generate(root, SynthConfig(videos=3, frames=4, seed=3, split="holdout", width=320, height=180, clips=False))
    return root


def test_dataset_run_scores_and_zips(dataset, tmp_path):
    weights = tiny_checkpoint(tmp_path)
    out = tmp_path / "run"
    result = sipvis("eval", "--tracker", "original", "--dataset", "youtube-vis", "holdout", "--data-root", str(dataset), "--weights",
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

    again = sipvis("eval", "--tracker", "original", "--dataset", "youtube-vis", "holdout", "--data-root", str(dataset), "--weights",
                   str(weights), "--out", str(out), "--subset", "2")
    assert again.returncode == 0, again.stderr
    assert "resuming: 2 of 2 videos already done" in again.stderr
    assert len({e["video_id"] for e in json.loads((out / "results.json").read_text())}) <= 2


def test_missing_layout_is_explained(tmp_path):
    (tmp_path / "root").mkdir()
    result = sipvis("eval", "--tracker", "original", "--dataset", "youtube-vis", "valid", "--data-root", str(tmp_path / "root"),
                    "--weights", "x")
    assert result.returncode == 1
    assert "expected <root>/<split>/JPEGImages" in result.stderr and "Traceback" not in result.stderr


def test_torchrun_shards_give_the_same_numbers(dataset, tmp_path):
    weights = tiny_checkpoint(tmp_path)
    common = ["eval", "--tracker", "original", "--dataset", "youtube-vis", "holdout", "--data-root", str(dataset), "--weights", str(weights),
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



def test_non_contiguous_category_ids_give_the_same_ap_in_eval_and_validation(tmp_path):
    """Categories numbered 12, 7, 3 (in that file order): `sipvis eval --dataset` and training validation
    run one split path, write the split's own category ids (model label i -> i-th smallest id) and score
    the same. The ground truth is made from the model's own tracks, so the right ids score AP 1."""
    import pycocotools.mask as mask_utils
    import torch

    from sipvis.checkpoint import build_model
    from sipvis.data.ytvis import find_split
    from sipvis.training import validate

    root = tmp_path / "ytvis"
    generate(root, SynthConfig(videos=2, frames=3, seed=5, split="holdout", width=160, height=96, clips=False,
                               classes=("circle", "square", "triangle")))
    ann_path = root / "annotations" / "holdout.json"
    gt = json.loads(ann_path.read_text())
    gt["categories"] = [{"id": i, "name": n} for i, n in ((12, "triangle"), (7, "square"), (3, "circle"))]
    gt["annotations"] = []
    ann_path.write_text(json.dumps(gt))
    weights = tiny_checkpoint(tmp_path)  # two classes: labels 0 and 1 are categories 3 and 7

    def run(out):
        result = sipvis("eval", "--tracker", "original", "--dataset", "youtube-vis", "holdout", "--data-root", str(root), "--weights",
                        str(weights), "--device", "cpu", "--batch", "4", "--out", str(out), "--json",
                        str(out / "m.json"), "--quiet")
        assert result.returncode == 0, result.stderr
        return result

    run(tmp_path / "first")  # no annotations yet: results only
    tracks = [e for v in gt["videos"]
              for e in json.loads((tmp_path / "first" / "videos" / f"{v['id']}.json").read_text())]
    assert {e["category_id"] for e in tracks} == {1, 2}  # the tracker's label + 1
    results = json.loads((tmp_path / "first" / "results.json").read_text())
    assert [e["category_id"] for e in results] == [{1: 3, 2: 7}[e["category_id"]] for e in tracks]
    for n, e in enumerate(results):  # the ground truth: the model's own tracks, in the split's ids
        areas = [int(mask_utils.area(m)) if m else None for m in e["segmentations"]]
        gt["annotations"].append({"id": n + 1, "video_id": e["video_id"], "category_id": e["category_id"],
                                  "segmentations": e["segmentations"], "areas": areas, "iscrowd": 0})
    ann_path.write_text(json.dumps(gt))

    result = run(tmp_path / "second")
    assert "not a GT category" not in result.stderr
    cli_metrics = json.loads((tmp_path / "second" / "m.json").read_text())
    assert list(cli_metrics["per_class"]) == ["circle", "square", "triangle"]
    assert cli_metrics["AP"] == pytest.approx(1.0) and cli_metrics["per_class"]["triangle"] == -1
    split = find_split(root, "holdout")
    val_metrics = validate(build_model(weights)[0], split.ann_file, split.image_dir, torch.device("cpu"))
    assert val_metrics == cli_metrics


def test_split_run_from_python_reports_through_callbacks(dataset, tmp_path):
    """The split run is a library call: no display of its own, progress through the callbacks it is given."""
    from sipvis.checkpoint import build_model
    from sipvis.data.ytvis import find_split
    from sipvis.engine import dataset_run as dr
    from sipvis.engine.distributed import DistInfo
    from sipvis.engine.inference import Segmenter

    class Events:
        def __init__(self):
            self.log = []

        def resumed(self, done, total):
            self.log.append(("resumed", done, total))

        def start(self, videos, frames):
            self.log.append(("start", videos, frames))

        def frames(self, n):
            self.log.append(("frames", n))

        def video_done(self):
            self.log.append(("video_done",))

    split = dr.Split.load(find_split(dataset, "holdout"), subset=2)
    segmenter = Segmenter(build_model(tiny_checkpoint(tmp_path))[0], "cpu")
    events = Events()
    results = dr.run_dataset(split, segmenter, tmp_path / "out", DistInfo(), progress=events)
    assert results == tmp_path / "out" / "results.json" and (tmp_path / "out" / "results.zip").is_file()
    assert events.log[0] == ("start", 2, 8) and events.log.count(("video_done",)) == 2
    assert sum(e[1] for e in events.log if e[0] == "frames") == 8
    assert {e["video_id"] for e in json.loads(results.read_text())} <= {1, 2}
    gt_file = dr.ground_truth_file(split, tmp_path / "out")
    assert gt_file.name == "gt_subset.json" and [v["id"] for v in json.loads(gt_file.read_text())["videos"]] == [1, 2]
    again = Events()
    dr.run_split(split, segmenter, tmp_path / "out", progress=again)
    assert again.log == [("resumed", 2, 2), ("start", 0, 0)]
