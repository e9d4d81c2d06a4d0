"""`sipvis.checkpoint.build_model`, the one way from a `--weights` value to a model: sipvis checkpoints with
config overrides, original checkpoints converted once and cached, fine-tuning targets (COCO -> other
classes) with the re-initialised layers reported, one-line errors naming the keys that do not fit; and
the callers built on it (training init, the CLI's segmenter)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models import tiny_checkpoint
from reference import reference_state_dict
from sipvis.checkpoint import build_model, convert_mmdet, load_checkpoint
from sipvis.errors import SipvisError
from sipvis.model.config import SipMaskConfig

TRACKING = ("head.track_tower.", "head.track_fuse.")


def test_sipvis_checkpoint_with_overrides(tmp_path):
    path = tiny_checkpoint(tmp_path)
    model, report = build_model(str(path), overrides={"score_thr": 0.5, "max_per_img": 3})
    cfg, state, _ = load_checkpoint(path)
    assert model.cfg == replace(cfg, score_thr=0.5, max_per_img=3)
    assert not model.training and report.ok and not report.reinitialised
    loaded = model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_a_checkpoint_of_another_model_is_one_line(tmp_path):
    from sipvis.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "other", SipMaskConfig(), torch.nn.Linear(3, 4).state_dict())
    with pytest.raises(SipvisError, match=r"other.safetensors does not fit the model: .*missing"):
        build_model(str(tmp_path / "other.safetensors"))


def test_original_checkpoint_is_converted_once_and_cached(tmp_path):
    source = reference_state_dict()
    torch.save({"state_dict": source, "meta": {}}, tmp_path / "ref.pth")
    model, report = build_model(str(tmp_path / "ref.pth"))
    cached = tmp_path / "ref.pth.sipvis.safetensors"
    assert cached.is_file() and report.ok
    _, expected, _ = convert_mmdet(source)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    stamp = cached.stat().st_mtime_ns
    again, _ = build_model(str(tmp_path / "ref.pth"))
    assert cached.stat().st_mtime_ns == stamp  # the second build read the cache
    assert torch.equal(again.state_dict()["head.cls_logits.weight"], expected["head.cls_logits.weight"])


def test_coco_checkpoint_for_fine_tuning(tmp_path):
    """An original COCO SipMask (80 classes, no tracking branch) into a 3-class target: the classifier and
    the tracking branch start fresh and are reported; everything else is the checkpoint's."""
    source = {k: v for k, v in reference_state_dict().items() if "track" not in k}
    source["bbox_head.fcos_cls.weight"] = torch.randn(80, 256, 3, 3) * 0.01
    source["bbox_head.fcos_cls.bias"] = torch.zeros(80)
    torch.save({"state_dict": source, "meta": {}}, tmp_path / "coco.pth")
    target = SipMaskConfig(class_names=("a", "b", "c"))
    model, report = build_model(str(tmp_path / "coco.pth"), target=target, overrides={"score_thr": 0.1})
    assert model.cfg == replace(target, score_thr=0.1)
    assert {k for k in report.reinitialised} == {k for k in model.state_dict()
                                                 if k.startswith(("head.cls_logits.", *TRACKING))}
    assert model.state_dict()["head.cls_logits.weight"].shape == (3, 256, 3, 3)
    torch.testing.assert_close(model.state_dict()["neck.fpn_convs.0.weight"], source["neck.fpn_convs.0.conv.weight"])
    assert not (tmp_path / "coco.pth.sipvis.safetensors").exists()  # converted for the target, not cached


def test_target_with_other_classes_from_a_sipvis_checkpoint(tmp_path):
    path = tiny_checkpoint(tmp_path)
    cfg, state, _ = load_checkpoint(path)
    model, report = build_model(str(path), target=replace(cfg, class_names=("x", "y", "z")))
    assert set(report.reinitialised) == {"head.cls_logits.weight", "head.cls_logits.bias"}
    loaded = model.state_dict()
    assert loaded["head.cls_logits.weight"].shape[0] == 3
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("head.cls_logits."))


def test_target_that_does_not_fit_names_the_keys(tmp_path):
    path = tiny_checkpoint(tmp_path)
    cfg, _, _ = load_checkpoint(path)
    with pytest.raises(SipvisError, match=r"tiny.safetensors does not fit the model: \d+ missing or mis-shaped "
                                          r"keys \(neck\."):
        build_model(str(path), target=replace(cfg, fpn_channels=32))


def test_training_init_keeps_the_models_own_fresh_layers(tmp_path):
    from sipvis.training.model import load_init_weights
    from sipvis.model.sipmask import SipMaskVIS

    path = tiny_checkpoint(tmp_path)
    cfg, state, _ = load_checkpoint(path)
    model = SipMaskVIS(replace(cfg, class_names=("x", "y", "z")))
    model.init_weights()
    own = model.head.cls_logits.weight.detach().clone()
    fresh = load_init_weights(model, str(path))
    assert fresh == ["head.cls_logits.weight", "head.cls_logits.bias"]
    assert torch.equal(model.head.cls_logits.weight, own)  # the seeded initialisation train() starts from
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("head.cls_logits."))


def test_cli_segmenter_takes_the_overrides_and_the_default_batch(tmp_path):
    from sipvis.cli._model_options import build_segmenter

    segmenter, keep = build_segmenter(str(tiny_checkpoint(tmp_path)), "cpu", "auto", 0, score_thr=0.2, max_dets=5,
                                      class_filter=("other",), progress=False)
    assert (segmenter.cfg.score_thr, segmenter.cfg.max_per_img) == (0.2, 5) and keep == {1}
    assert segmenter.batch_size == 1 and segmenter.dtype == torch.float32
    with pytest.raises(SipvisError, match="unknown class nope"):
        build_segmenter(str(tiny_checkpoint(tmp_path)), "cpu", "auto", class_filter=("nope",))
