"""The mmdet-v1 converter: every original key maps, COCO checkpoints convert for fine-tuning, and
sipvis checkpoints round-trip."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import REFERENCE, require
from reference import reference_state_dict
from sipvis.checkpoint import convert_mmdet, load_checkpoint, mmdet_key_to_sipvis, save_checkpoint
from sipvis.errors import SipvisError
from sipvis.model.config import COCO_CLASSES, YTVIS_2019_CLASSES
from sipvis.model.sipmask import SipMaskVIS


def test_every_original_key_has_a_home():
    manifest = json.loads(require(REFERENCE / "manifest.json").read_text())["state_dict"]
    ours = SipMaskVIS().state_dict()
    mapped = {mmdet_key_to_sipvis(e["key"]) for e in manifest} - {None}
    assert mapped == set(ours)
    for e in manifest:
        key = mmdet_key_to_sipvis(e["key"])
        if key is not None:
            assert list(ours[key].shape) == e["shape"], key


def coco_state_dict() -> dict:
    """The reference weights shaped like the authors' COCO SipMask: 80 classes, no tracking branch."""
    state = {k: v for k, v in reference_state_dict().items()
             if not k.startswith(("bbox_head.track_convs", "bbox_head.sipmask_track"))}
    state["bbox_head.fcos_cls.weight"] = torch.randn(80, 256, 3, 3) * 0.01
    state["bbox_head.fcos_cls.bias"] = torch.zeros(80)
    return state


def test_coco_checkpoint_converts_for_youtube_vis_fine_tuning():
    from dataclasses import replace

    from sipvis.model.config import SipMaskConfig

    source = coco_state_dict()
    cfg, state, report = convert_mmdet(source)
    assert cfg.class_names == COCO_CLASSES
    assert {k for k in report.reinitialised} == {k for k in SipMaskVIS(cfg).state_dict()
                                                 if k.startswith(("head.track_tower", "head.track_fuse"))}
    target = replace(SipMaskConfig(), class_names=YTVIS_2019_CLASSES)
    cfg, state, report = convert_mmdet(source, target)
    assert "head.cls_logits.weight" in report.reinitialised and "head.track_fuse.weight" in report.reinitialised
    assert state["head.cls_logits.weight"].shape[0] == 40
    torch.testing.assert_close(state["neck.fpn_convs.0.weight"], source["neck.fpn_convs.0.conv.weight"])
    SipMaskVIS(cfg).load_state_dict(state)  # complete and well-shaped


def test_a_wrong_shape_is_named():
    source = dict(reference_state_dict())
    source["neck.lateral_convs.0.conv.weight"] = torch.zeros(256, 100, 1, 1)
    with pytest.raises(SipvisError, match=r"mis-shaped \(neck.lateral_convs.0.weight"):
        convert_mmdet(source)


def test_save_and_load_round_trip(tmp_path):
    cfg, state, _ = convert_mmdet(reference_state_dict())
    path = save_checkpoint(tmp_path / "model", cfg, state)
    cfg2, state2, meta = load_checkpoint(path)
    assert cfg2 == cfg and meta["format"] == "sipvis-checkpoint"
    assert state2.keys() == state.keys()
    assert all(torch.equal(state[k], state2[k]) for k in state)
