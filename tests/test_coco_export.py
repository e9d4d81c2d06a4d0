"""The COCO image models through the export/runtime path (`sipvis export`, `--weights model.onnx`,
`--runtime onnxruntime`): the exported 544x544 real-time R50 (ONNX, OpenVINO, TorchScript) and SipMask++ (ONNX, with the
mask re-scoring in torch, its weights in the metadata) run through the `Segmenter` and pass test_coco_parity's
own checks against the ORIGINAL SipMask-mmdetection outputs (../shared/reference/sipmask_coco, the README's
tolerances): those test functions are called with the exported model behind their `segmenter`.

Each format skips when its package is absent (fails under CI=true). The exports take about 30 s (R50) and
60 s (R101 + DCN) each on 2 cores: one per module.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from click.testing import CliRunner

import test_coco_parity as parity
from sipvis.engine.inference import Segmenter
from sipvis.errors import SipvisError
from sipvis.runtime.exported import ExportedModel, ExportInfo
from test_export import needs

R50 = "sipmask_r50_caffe_fpn_ssd_6x"
PLUS = "sipmask++_r101_caffe_fpn_ssd_gn_10x"
CPU = torch.device("cpu")


def run_cli(*args: str):
    from sipvis.cli import cli

    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def reference_pth(tmp_path_factory):
    """config -> the original-format .pth of the reference's deterministic weights (made once)."""
    folder = tmp_path_factory.mktemp("coco_pth")

    @functools.lru_cache(maxsize=None)
    def make(config: str):
        path = folder / f"{config}.pth"
        torch.save({"state_dict": parity.reference_checkpoint(config), "meta": {}}, path)
        return path

    return make


@pytest.fixture(scope="module")
def r50_onnx(reference_pth, tmp_path_factory):
    """`sipvis export --weights <original .pth> --format onnx --size 544x544` of the real-time R50."""
    needs("onnx")
    out = tmp_path_factory.mktemp("coco_onnx") / "r50.onnx"
    result = run_cli("export", "--weights", str(reference_pth(R50)), "--format", "onnx", "-o", str(out),
                     "--size", "544x544")
    assert result.exit_code == 0, result.output
    assert "real-time image model (fixed 544x544, plain head)" in result.output and "FAIL" not in result.output
    return out


def check_against_original(monkeypatch, segmenter: Segmenter, config: str, rescoring: bool = False) -> None:
    """test_coco_parity's input, raw-output and detection checks with `segmenter` as the model under test."""
    monkeypatch.setattr(parity, "segmenter", lambda _config: segmenter)
    monkeypatch.setattr(parity, "run_case", functools.lru_cache(maxsize=None)(parity.run_case.__wrapped__))
    parity.test_raw_head_outputs(config)
    for image in parity.IMAGES:
        parity.test_preprocessed_input_and_geometry(config, image)
        parity.test_detections_masks_and_mask_scores(config, image)
    if rescoring:
        parity.test_mask_rescoring_branch_output()


@pytest.mark.slow
def test_onnx_export_of_the_544_r50_reproduces_the_original(r50_onnx, monkeypatch):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(r50_onnx), load_external_data=False).metadata_props}
    meta = json.loads(props["sipvis"])
    assert meta["model"]["task"] == "image" and meta["model"]["resize"] == "fixed"
    assert meta["model"]["category_ids"][:3] == [1, 2, 3] and len(meta["model"]["category_ids"]) == 80
    assert meta["family"].startswith("SipMask real-time") and "mask_rescoring" not in meta
    segmenter = Segmenter.from_checkpoint(str(r50_onnx), device="cpu", precision="fp32")
    assert isinstance(segmenter.model, ExportedModel) and segmenter.model.head.mask_scoring is None
    check_against_original(monkeypatch, segmenter, R50)


@pytest.mark.slow
def test_openvino_export_of_the_544_r50_reproduces_the_original(r50_onnx, tmp_path, monkeypatch):
    needs("openvino")
    from sipvis.runtime.choose import open_exported
    from sipvis.runtime.export import onnx_to_openvino

    xml = onnx_to_openvino(r50_onnx, tmp_path / "r50.xml")  # the same graph `sipvis export --format openvino` reads
    segmenter = Segmenter(open_exported(xml, "openvino", CPU), "cpu", torch.float32, 1)
    assert segmenter.cfg.task == "image" and segmenter.cfg.category_ids[-1] == 90
    check_against_original(monkeypatch, segmenter, R50)


@pytest.mark.slow
def test_sipmask_pp_onnx_export_rescoring_travels_in_the_metadata(reference_pth, tmp_path, monkeypatch):
    """SipMask++ (DCNv1 backbone, GN head, mask re-scoring): the exported network plus the re-scoring
    module rebuilt from the file's metadata give the original's detections and re-scored mask scores."""
    needs("onnx")
    out = tmp_path / "pp.onnx"
    result = run_cli("export", "--weights", str(reference_pth(PLUS)), "--format", "onnx", "-o", str(out),
                     "--size", "544x544", "-q")
    assert result.exit_code == 0, result.output
    segmenter = Segmenter.from_checkpoint(str(out), device="cpu", precision="fp32")
    assert segmenter.model.head.mask_scoring is not None and segmenter.cfg.dcn_stages == (2, 3, 4)
    check_against_original(monkeypatch, segmenter, PLUS, rescoring=True)


@pytest.mark.slow
def test_segment_with_runtime_onnxruntime_on_a_checkpoint(reference_pth, tmp_path, monkeypatch):
    """`sipvis segment IMAGE --weights <checkpoint> --runtime onnxruntime`: exported on the fly into the
    weights cache; the COCO results entries are the original's (category, box, score)."""
    needs("onnx")
    monkeypatch.setenv("SIPVIS_HOME", str(tmp_path / "home"))
    out = tmp_path / "out.json"
    result = run_cli("segment", str(parity.COCO_REFERENCE / "images" / "coffee.png"), "--weights",
                     str(reference_pth(R50)), "--runtime", "onnxruntime", "--device", "cpu", "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "home" / "weights" / "exported").glob("*-onnx-dynamic-*.onnx"))
    ours = json.loads(out.read_text())
    want = parity.expected(R50, "coffee")["coco_results_segm"]
    assert len(ours) == len(want)
    free = list(range(len(ours)))
    for entry in want:
        def box_diff(j: int) -> float:
            return max(abs(a - b) for a, b in zip(ours[j]["bbox"], entry["bbox"]))
        j = min((j for j in free if ours[j]["category_id"] == entry["category_id"]), key=box_diff)
        free.remove(j)
        assert box_diff(j) < 0.05 and abs(ours[j]["score"] - entry["score"]) <= 1e-4


def test_rescoring_weights_round_trip_through_the_metadata():
    from sipvis.model.families import coco_config
    from sipvis.model.head import MaskRescoring

    cfg = coco_config(101, realtime=True, head_norm=True, plus=True)
    module = MaskRescoring(cfg.num_classes)
    info = ExportInfo.from_json(ExportInfo(cfg, (544, 544), {}, module.state_dict()).to_json(), "x.onnx")
    assert info.cfg == cfg and info.input_size == (544, 544)
    rebuilt = ExportedModel(info, "x.onnx").head.mask_scoring
    masks = torch.rand(3, 1, 140, 180, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(masks), module(masks))
    assert ExportedModel(ExportInfo(coco_config(), None, {}), "y.onnx").head.mask_scoring is None


def test_sipmask_pp_export_without_rescoring_weights_is_one_line():
    from sipvis.model.families import coco_config

    cfg = coco_config(101, plus=True)
    with pytest.raises(SipvisError, match="without its mask re-scoring weights"):
        ExportedModel(ExportInfo.from_json(ExportInfo(cfg, None, {}).to_json(), "old.onnx"), "old.onnx")
    text = json.loads(ExportInfo(cfg, None, {}).to_json())
    text["mask_rescoring"] = "not base64!"
    with pytest.raises(SipvisError, match="old.onnx is not a sipvis export .*mask_rescoring"):
        ExportInfo.from_json(json.dumps(text), "old.onnx")


@pytest.mark.slow
def test_bench_takes_runtime(tmp_path, monkeypatch):
    """`sipvis bench --runtime onnxruntime`: the network it measures is the exported one (exported once
    into the weights cache), and the figures are written."""
    needs("onnx")
    monkeypatch.setenv("SIPVIS_HOME", str(tmp_path / "home"))
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--weights", "demo", "--device", "cpu", "--runtime", "onnxruntime", "--frames", "1",
                     "--size", "128x96", "-q", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "Exporting demo for onnxruntime" in result.output
    assert list((tmp_path / "home" / "weights" / "exported").glob("*-onnx-dynamic-*.onnx"))
    figures = json.loads(out.read_text())
    assert figures["stages"]["network"]["frames"] == 1 and figures["end_to_end"]["end-to-end json"]["frames"] == 1


@pytest.mark.slow
def test_torchscript_export_of_the_544_r50_reproduces_the_original(reference_pth, tmp_path, monkeypatch):
    out = tmp_path / "r50.ts"
    result = run_cli("export", "--weights", str(reference_pth(R50)), "--format", "torchscript", "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    segmenter = Segmenter.from_checkpoint(str(out), device="cpu", precision="fp32")
    assert segmenter.model.runtime == "torchscript" and segmenter.cfg.task == "image"
    check_against_original(monkeypatch, segmenter, R50)
