"""Image models (no tracking branch) in `sipvis track`: the robust tracker is chosen by itself, and
`--tracker original` is one error line. Small random image models of each family's shape: outputs are
meaningless, the paths are real (fixed-size resize, both NMS variants, DCN, mask re-scoring)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import MEDIA, require
from models import detecting_model
from sipvis.checkpoint import save_checkpoint
from sipvis.engine.inference import Segmenter
from sipvis.model.config import SipMaskConfig
from sipvis.track import new_tracker


def tiny_image_checkpoint(folder: Path, **fields) -> Path:
    """A narrow ResNet-50 image model at 128x128 (fixed) whose random weights give detections."""
    torch.manual_seed(0)
    cfg = SipMaskConfig(**{**dict(
        task="image", depth=50, backbone_width=8, max_size=(128, 128), resize="fixed", class_names=("a", "b"),
        category_ids=(3, 7), fpn_channels=32, head_channels=32, basis_channels=32, cls_convs=1, reg_convs=2,
        head_norm=False, score_thr=0.05, max_per_img=20, mask_thr=0.4, nms_pre=1000), **fields})
    model = detecting_model(cfg)
    torch.nn.init.constant_(model.head.centerness.bias, 5.0)  # scores ~0.5: over the robust tracker's birth score
    return save_checkpoint(folder / "tiny_image", cfg, model.state_dict())


def sipvis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("fields", [
    {},
    {"resize": "keep_ratio", "max_size": (160, 96), "nms": "per_class", "head_norm": True},
    {"dcn_stages": (3, 4), "mask_rescoring": True, "max_size": (256, 256)},  # re-scoring needs >= 254 px
])
def test_each_family_shape_tracks_with_the_robust_tracker(tmp_path, fields):
    seg = Segmenter.from_checkpoint(str(tiny_image_checkpoint(tmp_path, **fields)), device="cpu")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (90, 150, 3), dtype=np.uint8) for _ in range(3)]
    dets = seg.detect([seg.prepare(f) for f in frames[:2]])
    assert dets.embeddings is None and dets.masks.shape[2:] == (90, 150)
    assert (dets.mask_scores is not None) == bool(fields.get("mask_rescoring"))
    assert dets.valid.any()
    results = list(seg.track(frames, new_tracker("robust")))
    assert len(results) == 3 and all(r.masks.shape[1:] == (90, 150) for r in results)
    with pytest.raises(Exception, match="tracking branch"):
        list(seg.track(frames, new_tracker("original")))


def test_track_cli_with_an_image_model(tmp_path):
    clip = require(MEDIA / "bikes.mp4")
    weights = str(tiny_image_checkpoint(tmp_path))
    out = tmp_path / "out.mp4"
    result = sipvis("track", str(clip), "--weights", weights, "--max-frames", "4", "-o", str(out),
                    "-o", str(tmp_path / "out.json"), "--quiet")
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    entries = json.loads((tmp_path / "out.json").read_text())
    assert entries  # tracks were written, with the model's dataset category ids (3, 7), not label + 1
    assert {e["category_id"] for e in entries} <= {3, 7}
    refused = sipvis("track", str(clip), "--weights", weights, "--max-frames", "2", "-o", str(tmp_path / "x.mp4"),
                     "--tracker", "original", "--quiet")
    lines = [line for line in refused.stderr.strip().splitlines() if line.strip()]
    assert refused.returncode != 0 and len(lines) == 1 and "--tracker robust" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr



def test_tracker_resolution(tmp_path):
    """Both trackers for a model with a tracking branch; original refused for an image model (robust, the
    default, tracks it)."""
    from models import tiny_checkpoint
    from sipvis.cli._model_options import resolve_tracker
    from sipvis.errors import SipvisError

    video = Segmenter.from_checkpoint(str(tiny_checkpoint(tmp_path)), device="cpu")
    image = Segmenter.from_checkpoint(str(tiny_image_checkpoint(tmp_path)), device="cpu")
    assert resolve_tracker("robust", image) == "robust"
    assert resolve_tracker("robust", video) == "robust" and resolve_tracker("original", video) == "original"
    with pytest.raises(SipvisError, match="use --tracker robust"):
        resolve_tracker("original", image)
