"""`--tracker original|robust` and the Python API: the robust tracker runs through every path (track,
live, eval --dataset, bench, `Segmenter.track`), its tracks are named by their class vote in the
YouTube-VIS JSON, a model without a tracking branch works with it, and an unknown name is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from sipvis.engine.inference import Segmenter
from sipvis.engine.pipeline import ScoreCorrections, track_source
from sipvis.errors import SipvisError
from sipvis.io.inputs import open_source
from sipvis.io.sinks import ResultsJson
from sipvis.io.ytvis_results import VideoResultsBuilder
from sipvis.model.config import SipMaskConfig
from sipvis.model.postprocess import Detections
from sipvis.results import FrameInstances
from sipvis.track import OriginalTracker, RobustTracker, new_tracker

H, W = 96, 160
# one object that stays put; its label flips from 0 (three weak frames) to 1 (two strong ones): the
# most frequent label is 0, the score-weighted vote 1
LABELS = [0, 0, 0, 1, 1]
SCORES = [0.31, 0.31, 0.31, 0.95, 0.95]


def sipvis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


class ScriptedSegmenter(Segmenter):
    """A stand-in model (no network) whose frame t has one detection with LABELS[t], SCORES[t]; the
    real `assign_tracks` and everything after it run on its output. `emb_width` 0 = no tracking branch."""

    def __init__(self, emb_width: int = 8) -> None:  # only what Segmenter's methods use
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.batch_size = 2  # several frames per batch: the per-batch host copies are sliced per frame
        self.cfg = SipMaskConfig(class_names=("thing", "other"), max_size=(W, H))
        self.model = None
        self.emb_width = emb_width

    def preprocess(self, frames):
        return frames

    def forward(self, frames):  # no network: `postprocess` makes the scripted detections
        return frames

    def postprocess(self, outputs, frames) -> Detections:
        b = len(frames)
        t = [f.index % len(LABELS) for f in frames]
        masks = torch.zeros(b, 1, H, W, dtype=torch.bool)
        masks[:, :, 20:60, 30:90] = True
        return Detections(boxes=torch.tensor([[[30.0, 20.0, 89.0, 59.0]]]).expand(b, 1, 4).clone(),
                          scores=torch.tensor([[SCORES[i]] for i in t]), labels=torch.tensor([[LABELS[i]] for i in t]),
                          valid=torch.ones(b, 1, dtype=torch.bool), masks=masks,
                          embeddings=torch.ones(b, 1, self.emb_width) / max(self.emb_width, 1) ** 0.5)


def frames(n: int = len(LABELS)) -> list[np.ndarray]:
    return [np.zeros((H, W, 3), np.uint8) for _ in range(n)]


def test_new_tracker_builds_each_kind_and_names_the_choices():
    assert isinstance(new_tracker("original"), OriginalTracker)
    assert isinstance(new_tracker("robust"), RobustTracker)
    with pytest.raises(SipvisError, match="unknown tracker 'bogus': choose from original, robust"):
        new_tracker("bogus")


@pytest.mark.parametrize("emb_width", [8, 0])
def test_python_api_robust_reports_the_vote_also_without_tracking_branch(emb_width):
    tracker = RobustTracker()
    out = list(ScriptedSegmenter(emb_width).track(frames(), tracker=tracker))
    assert [inst.track_ids.tolist() for inst in out] == [[1]] * 5  # one track through the label flip
    assert [inst.labels.tolist() for inst in out] == [[0], [0], [0], [1], [1]]  # the vote so far
    assert out[-1].track_classes == {1: 1} and tracker.classes() == {0: 1}
    assert all(inst.masks.shape == (1, H, W) for inst in out)


def test_robust_json_category_is_the_final_vote_not_the_majority_label(tmp_path):
    """The same frames into a results JSON: robust names the track by its final vote (category 2) though
    its label was 0 on most frames; the original tracker's first-frame quirk is not applied to it."""
    source = open_source(_write_frames(tmp_path / "frames"), threaded=False)
    out = tmp_path / "r.json"
    tracker = RobustTracker()
    track_source(source, ScriptedSegmenter(), [ResultsJson(out).video(1)], tracker)
    entries = json.loads(out.read_text())
    assert len(entries) == 1 and entries[0]["category_id"] == tracker.classes()[0] + 1 == 2
    assert entries[0]["score"] == pytest.approx(np.mean(SCORES), abs=1e-6)
    assert ScoreCorrections(tracker)(FrameInstances.empty(0, H, W)).score_corrections == {}


def _write_frames(folder: Path) -> Path:
    import cv2

    folder.mkdir()
    for i, image in enumerate(frames()):
        cv2.imwrite(str(folder / f"{i:05d}.png"), image)
    return folder


def test_builder_takes_the_given_class_else_the_majority_label():
    builder = VideoResultsBuilder(1)
    for label, score in zip(LABELS, SCORES):
        builder.add(FrameInstances(index=0, height=4, width=4, boxes=np.zeros((1, 4), np.float32),
                                   scores=np.array([score], np.float32), labels=np.array([label]),
                                   track_ids=np.array([1]), masks=np.ones((1, 4, 4), bool)))
    assert builder.results()[0]["category_id"] == 1  # most frequent label 0
    assert builder.results(classes={1: 1})[0]["category_id"] == 2
    assert builder.results(classes={7: 0})[0]["category_id"] == 1  # another track's class changes nothing


def test_track_cli_robust_json_names_each_track_by_its_last_voted_label(tmp_path):
    """`sipvis track --tracker robust` with the demo model: valid JSON, video and MOTS; each track's
    category is the class its MOTS lines show on its last frame (the vote, which frames report)."""
    from sipvis.data.synth import SynthConfig, render_video, write_mp4

    cfg = SynthConfig(videos=1, frames=12, seed=7, split="t", width=320, height=180)
    clip = tmp_path / "clip.mp4"
    write_mp4(clip, render_video(cfg, 0)[0], cfg.fps)
    js, mots = tmp_path / "x.json", tmp_path / "x.txt"
    result = sipvis("track", str(clip), "--weights", "demo", "--device", "cpu", "--tracker", "robust",
                    "-o", str(js), "-o", str(tmp_path / "x.mp4"), "-o", str(mots), "--quiet")
    assert result.returncode == 0, result.stderr
    entries = json.loads(js.read_text())
    assert entries and (tmp_path / "x.mp4").stat().st_size > 0
    last_class: dict[int, int] = {}
    rows: dict[int, int] = defaultdict(int)
    for line in mots.read_text().splitlines():
        _, track_id, class_id = (int(v) for v in line.split()[:3])
        last_class[track_id] = class_id
        rows[track_id] += 1
    assert [e["category_id"] for e in entries] == [last_class[t] for t in sorted(last_class)]
    assert [sum(s is not None for s in e["segmentations"]) for e in entries] == [rows[t] for t in sorted(rows)]


@pytest.mark.parametrize("command", [["track", "in.mp4", "-o", "x.json"], ["live", "--source", "in.mp4"],
                                     ["eval", "--dataset", "youtube-vis", "val"], ["bench"], ["demo"]])
def test_unknown_tracker_is_one_line_before_any_work(command):
    result = sipvis(*command, "--tracker", "bogus")
    assert result.returncode != 0
    assert result.stderr.strip() == "Error: unknown tracker 'bogus': choose from original, robust"


def test_live_robust_headless_on_a_file(tmp_path):
    from sipvis.data.synth import SynthConfig, render_video, write_mp4

    cfg = SynthConfig(videos=1, frames=8, seed=3, split="t", width=320, height=180)
    clip = tmp_path / "clip.mp4"
    write_mp4(clip, render_video(cfg, 0)[0], cfg.fps)
    js = tmp_path / "live.json"
    result = sipvis("live", "--source", str(clip), "--no-window", "--no-drop", "--weights", "demo", "--device",
                    "cpu", "--tracker", "robust", "--json", str(js))
    assert result.returncode == 0, result.stderr
    entries = json.loads(js.read_text())
    assert entries and all(len(e["segmentations"]) == 8 for e in entries)


def test_eval_dataset_with_robust(tmp_path):
    from models import tiny_checkpoint
    from sipvis.data.synth import SynthConfig, generate

    generate(tmp_path / "ds", SynthConfig(videos=2, frames=3, seed=3, split="holdout", width=320, height=180,
                                          clips=False))
    out = tmp_path / "run"
    result = sipvis("eval", "--dataset", "youtube-vis", "holdout", "--data-root", str(tmp_path / "ds"), "--weights",
                    str(tiny_checkpoint(tmp_path)), "--out", str(out), "--json", str(tmp_path / "m.json"),
                    "--tracker", "robust", "--quiet")
    assert result.returncode == 0, result.stderr
    assert all(len(e["segmentations"]) == 3 for e in json.loads((out / "results.json").read_text()))
    assert len(json.loads((tmp_path / "m.json").read_text())["stats"]) == 12


def test_bench_times_the_robust_tracker(tmp_path):
    from test_bench import tiny_config

    from sipvis.checkpoint import save_checkpoint
    from sipvis.engine.bench import random_model

    tiny = save_checkpoint(tmp_path / "tiny", tiny_config(), random_model(tiny_config()).state_dict())
    out = tmp_path / "b.json"
    result = sipvis("bench", "--frames", "2", "--size", "160x96", "--device", "cpu", "--weights", str(tiny),
                    "--tracker", "robust", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["tracker"] == "robust" and report["stages"]["tracking"]["frames"] == 2
    assert "tracker robust" in result.stdout
