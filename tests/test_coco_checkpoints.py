"""The nine official SipMask COCO checkpoints (../shared/reference/sipmask_coco/manifests): every key of
each loads into the matching image model with no missing or unexpected key, the family is read from the
keys, a checkpoint of another family is refused naming the keys, and the registry knows all nine."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SHARED, require
from sipvis.checkpoint import convert_mmdet, mmdet_key_to_sipvis
from sipvis.errors import SipvisError
from sipvis.model.config import COCO_CATEGORY_IDS, COCO_CLASSES, SipMaskConfig
from sipvis.model.families import OFFICIAL_CONFIGS, official_config
from sipvis.model.sipmask import SipMaskVIS

COCO_REFERENCE = SHARED / "reference" / "sipmask_coco"


def manifest_state(config: str) -> dict[str, torch.Tensor]:
    """Random tensors of the manifest's keys and shapes (what an official checkpoint's state_dict holds)."""
    manifest = json.loads(require(COCO_REFERENCE / "manifests" / f"{config}.json").read_text())
    g = torch.Generator().manual_seed(0)
    return {e["key"]: (torch.zeros(e["shape"], dtype=torch.int64) if "int" in e["dtype"]
                       else torch.randn(e["shape"], generator=g)) for e in manifest["state_dict"]}


@pytest.mark.parametrize("config", sorted(OFFICIAL_CONFIGS))
def test_every_manifest_loads_into_its_family(config):
    state = manifest_state(config)
    cfg, converted, report = convert_mmdet(state)
    assert cfg == official_config(config)
    assert report.ok and not report.reinitialised
    model = SipMaskVIS(cfg)
    model.load_state_dict(converted, strict=True)  # no missing, no unexpected key
    # every tensor is the checkpoint's (num_batches_tracked is dropped)
    for key, value in state.items():
        ours = mmdet_key_to_sipvis(key)
        if ours is not None:
            assert torch.equal(model.state_dict()[ours], value), key


def test_family_fields_of_the_three_kinds():
    accurate = official_config("sipmask_r50_caffe_fpn_gn_1x")
    assert (accurate.cls_convs, accurate.reg_convs, accurate.resize, accurate.max_size, accurate.nms,
            accurate.score_thr) == (3, 4, "keep_ratio", (1333, 800), "per_class", 0.05)
    realtime = official_config("sipmask_r50_caffe_fpn_ssd_6x")
    assert (realtime.cls_convs, realtime.reg_convs, realtime.resize, realtime.max_size, realtime.nms,
            realtime.head_norm, realtime.score_thr) == (1, 2, "fixed", (544, 544), "fast", False, 0.1)
    plus = official_config("sipmask++_r101_caffe_fpn_ssd_gn_10x")
    assert plus.dcn_stages == (2, 3, 4) and plus.mask_rescoring and plus.depth == 101
    for cfg in (accurate, realtime, plus):
        assert cfg.task == "image" and not cfg.has_tracking_branch and cfg.mask_thr == 0.4
        assert cfg.max_per_img == 100 and cfg.nms_pre == 1000 and cfg.class_names == COCO_CLASSES
        assert cfg.category_id(0) == 1 and cfg.category_id(11) == 13 and cfg.category_id(79) == 90
    assert SipMaskConfig().category_id(3) == 4  # YouTube-VIS: label + 1


def test_dcn_blocks_are_the_specified_ones():
    backbone = SipMaskVIS(official_config("sipmask++_r101_caffe_fpn_ssd_6x")).backbone
    deformable = sorted(name.removesuffix(".conv2.conv_offset") for name, _ in backbone.named_modules()
                        if name.endswith("conv2.conv_offset"))
    want = ["layer2.0", "layer2.3"] + [f"layer3.{i}" for i in range(0, 23, 3)] + ["layer4.0"]
    assert deformable == sorted(want)


@pytest.mark.parametrize("source, target, key", [
    ("sipmask_r50_caffe_fpn_ssd_6x", "sipmask_r50_caffe_fpn_gn_1x", "head.cls_tower.1.conv.weight"),
    ("sipmask++_r101_caffe_fpn_ssd_6x", "sipmask_r101_caffe_fpn_ssd_6x", "backbone.layer2.0.conv2.conv_offset"),
    ("sipmask_r50_caffe_fpn_ssd_gn_10x", "sipmask_r50_caffe_fpn_ssd_6x", "head.cls_tower.0.norm.weight"),
])
def test_a_checkpoint_of_another_family_is_refused_with_the_keys(source, target, key):
    with pytest.raises(SipvisError, match="does not fit SipMask") as info:
        convert_mmdet(manifest_state(source), official_config(target))
    assert key in str(info.value) and "\n" not in str(info.value)


def test_registry_names_the_nine_with_their_drive_ids():
    from sipvis.weights import registry

    entries = {e.config: e for e in registry() if e.config}
    assert set(entries) == set(OFFICIAL_CONFIGS)
    for config, entry in entries.items():
        manifest = json.loads(require(COCO_REFERENCE / "manifests" / f"{config}.json").read_text())
        assert entry.gdrive_id == manifest["official_checkpoint"]["google_drive_file_id"]
        assert entry.format == "mmdet-v1"
    names = {e.name for e in entries.values()}
    assert {"sipmask-r50-coco", "sipmask-r50-coco-ms", "sipmask-r101-coco-ms", "sipmask-r50-coco-544",
            "sipmask-r50-coco-544-gn", "sipmask-r101-coco-544", "sipmask-r101-coco-544-gn",
            "sipmask-pp-r101-coco-544", "sipmask-pp-r101-coco-544-gn"} == names


def test_a_registry_download_of_the_wrong_family_is_refused(tmp_path, monkeypatch):
    """A file cached under a registry name whose config is another family: refused, keys named."""
    from sipvis.checkpoint import build_model
    from sipvis.weights import find_entry

    monkeypatch.setenv("SIPVIS_HOME", str(tmp_path))
    entry = find_entry("sipmask-r50-coco-544")
    path = entry.local_path()
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": manifest_state("sipmask_r50_caffe_fpn_ssd_gn_10x"), "meta": {}}, path)
    with pytest.raises(SipvisError, match="norm") as info:
        build_model("sipmask-r50-coco-544")
    assert "does not fit SipMask" in str(info.value)


def test_config_fields_round_trip_and_are_checked():
    cfg = official_config("sipmask++_r101_caffe_fpn_ssd_gn_10x")
    assert SipMaskConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="resize must be one of keep_ratio, fixed"):
        SipMaskConfig.from_dict({"resize": "stretch"})
    with pytest.raises(ValueError, match="category_ids must be empty or one integer per class"):
        SipMaskConfig.from_dict({"class_names": ["a", "b"], "category_ids": [1]})
    with pytest.raises(ValueError, match="dcn_stages"):
        SipMaskConfig.from_dict({"dcn_stages": [5]})
    assert len(COCO_CATEGORY_IDS) == len(COCO_CLASSES) == 80


def test_convert_an_image_model_to_other_classes(tmp_path):
    """`weights convert --classes` of an image model: classifier and re-scoring output re-initialised, the
    COCO category ids dropped (other classes number label + 1), the result loads back."""
    from click.testing import CliRunner

    from sipvis.checkpoint import load_checkpoint
    from sipvis.cli import cli

    torch.save({"state_dict": manifest_state("sipmask_r50_caffe_fpn_ssd_6x"), "meta": {}}, tmp_path / "m.pth")
    result = CliRunner().invoke(cli, ["weights", "convert", str(tmp_path / "m.pth"), str(tmp_path / "out"),
                                      "--classes", "cat,dog"])
    assert result.exit_code == 0, result.output
    assert "head.cls_logits.weight" in result.output
    cfg, state, _ = load_checkpoint(tmp_path / "out.safetensors")
    assert cfg.class_names == ("cat", "dog") and cfg.category_ids == () and cfg.task == "image"
    assert state["head.cls_logits.weight"].shape[0] == 2
