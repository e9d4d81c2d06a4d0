"""`sipvis export` and the runtimes behind `Segmenter.forward` (sipvis.runtime): exported reference-weights
models reproduce the original's outputs (../shared/reference/sipmask_vis, test_parity's tolerances), the CLI
round trip equals the torch run, metadata survives, on-the-fly exports land in the cache once, and every
failure a user can cause is one line.

Each format's tests skip when its package is absent (fail under CI=true: CI installs .[onnx,openvino]).
The R50 exports are made once per module (about a minute each on 2 cores).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REFERENCE, require
from reference import CLIPS, assert_video_results_match, frames, raw_outputs, reference_state_dict
from sipvis.checkpoint import build_model, convert_mmdet
from sipvis.engine.inference import Segmenter
from sipvis.errors import SipvisError
from sipvis.model.sipmask import SipMaskVIS
from test_parity import assert_frames_match

PACKAGES = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("onnx", "onnxscript", "openvino"),
            "torchscript": ()}
RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "torchscript": "torchscript"}
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".ts"}
# names of the reference's raw outputs (raw_frame0.npz) in our flat output order
REFERENCE_NAMES = ([f"{n}_{level}" for n in ("cls_scores", "bbox_preds", "centernesses", "cof_preds") for level in range(5)]
                   + ["feat_masks", "track_feats"])


def needs(fmt: str) -> None:
    """Skip (fail under CI=true) when a package `fmt` needs is not installed."""
    missing = [p for p in PACKAGES[fmt] if importlib.util.find_spec(p) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (pip install 'sipvis[onnx,openvino]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def sipvis(*args: str, env: dict | None = None, prelude: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", f"{prelude}from sipvis.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def reference_model() -> SipMaskVIS:
    cfg, state, _ = convert_mmdet(reference_state_dict())
    net = SipMaskVIS(cfg)
    net.load_state_dict(state)
    return net.eval()


@pytest.fixture(scope="module")
def reference_export(reference_model, tmp_path_factory):
    """fmt -> the reference model exported to it (dynamic size), made on first use, once per module."""
    from sipvis.runtime.choose import open_exported
    from sipvis.runtime.export import export_model, onnx_to_openvino

    folder, made = tmp_path_factory.mktemp("r50"), {}

    def get(fmt: str):
        needs(fmt)
        if fmt not in made:
            path = folder / f"r50{SUFFIX[fmt]}"
            if fmt == "openvino":  # converted from the ONNX export: one R50 export fewer
                onnx_to_openvino(Path(get("onnx").source), path)
            else:
                export_model(reference_model, fmt, path)
            made[fmt] = open_exported(path, RUNTIME[fmt], torch.device("cpu"))
        return made[fmt]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "torchscript"])
def test_exported_reference_model_reproduces_raw_outputs(reference_export, fmt, clip):
    """Every head output of the exported model on the reference input, against the original's, with the
    reference tolerance max|a-b| <= 1e-3 (1 + max|b|) (test_parity.test_raw_head_outputs)."""
    raw = raw_outputs(clip)
    from sipvis.runtime.exported import flatten

    with torch.inference_mode():
        out = flatten(reference_export(fmt)(torch.from_numpy(raw["input"])[None]))
    for name, tensor in zip(REFERENCE_NAMES, out, strict=True):
        a, b = tensor[0].numpy(), raw[name]
        assert a.shape == b.shape, name
        err, tol = np.abs(a - b).max(), 1e-3 * (1 + np.abs(b).max())
        assert err <= tol, f"{fmt} {name}: max error {err:.3g} > {tol:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "torchscript"])
def test_exported_reference_model_tracks_like_the_original(reference_export, fmt, clip):
    """The exported model in an unchanged `Segmenter`: detections, masks and track ids of the original."""
    segmenter = Segmenter(reference_export(fmt), "cpu", torch.float32, 1)
    assert_frames_match(list(segmenter.track(frames(clip))), clip)


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory) -> Path:
    """`sipvis export --weights demo --format onnx` (dynamic size), through the CLI."""
    needs("onnx")
    path = tmp_path_factory.mktemp("demo") / "demo.onnx"
    result = sipvis("export", "--weights", "demo", "--format", "onnx", "-o", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(path) and "dynamic size, 5 classes" in lines[1]
    assert len([line for line in lines if line.endswith(" ok")]) == 22  # every head output checked
    return path


@pytest.fixture(scope="module")
def synth_frames(tmp_path_factory) -> Path:
    """A folder of 6 synthetic 640x360 frames of the demo model's shapes."""
    from sipvis.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(videos=1, frames=6, seed=3, split="s", clips=False), progress=None)
    return next(p.parent for p in sorted(root.rglob("*.jpg")))


@pytest.mark.slow
def test_export_then_track_equals_the_torch_run(demo_onnx, synth_frames, tmp_path):
    ours, torch_run = tmp_path / "onnx.json", tmp_path / "torch.json"
    for weights, out in ((str(demo_onnx), ours), ("demo", torch_run)):
        result = sipvis("track", str(synth_frames), "--weights", weights, "-o", str(out), "--quiet")
        assert result.returncode == 0, result.stderr
    want = json.loads(torch_run.read_text())
    assert want, "the demo model found nothing to track"
    assert_video_results_match(json.loads(ours.read_text()), want, (360, 640))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "torchscript"])
def test_metadata_round_trip_and_fixed_size(fmt, tmp_path):
    """Config and class names come back from the file; a fixed-size export refuses another size in one line."""
    needs(fmt)
    from sipvis.runtime.choose import open_exported
    from sipvis.runtime.export import export_model

    model = build_model("demo", overrides={"score_thr": 0.25})[0]
    path = export_model(model, fmt, tmp_path / f"demo{SUFFIX[fmt]}", size=(160, 256))
    exported = open_exported(path, RUNTIME[fmt], torch.device("cpu"), overrides={"max_per_img": 7})
    assert exported.info.cfg == model.cfg and exported.info.input_size == (160, 256)
    assert exported.cfg.class_names == ("circle", "square", "triangle", "star", "ring")
    assert exported.cfg.max_per_img == 7 and exported.cfg.score_thr == 0.25
    with pytest.raises(SipvisError, match=r"exported for 256x160 \(WxH\) padded inputs, these frames pad to 256x128"):
        exported(torch.zeros(1, 3, 128, 256))


@pytest.mark.slow
def test_onnxruntime_pool_sleeps_unless_active(demo_onnx, monkeypatch):
    """Idle onnxruntime threads give their core back unless OMP_WAIT_POLICY=ACTIVE (sipvis.engine.threads)."""
    from sipvis.runtime.onnx_runtime import OnnxRuntimeModel

    for policy, spin in (("", "0"), ("PASSIVE", "0"), ("ACTIVE", "1")):
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
        options = OnnxRuntimeModel(demo_onnx).session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == spin


def test_runtime_exports_once_into_the_weights_cache(tmp_path, monkeypatch):
    needs("onnx")
    from sipvis.runtime.onnx_runtime import OnnxRuntimeModel

    monkeypatch.setenv("SIPVIS_HOME", str(tmp_path))
    notes: list[str] = []
    first = Segmenter.from_checkpoint("demo", device="cpu", runtime="onnxruntime", notice=notes.append)
    assert isinstance(first.model, OnnxRuntimeModel) and len(notes) == 1 and "Exporting demo" in notes[0]
    cached = list((tmp_path / "weights" / "exported").glob("*-onnx-dynamic-*.onnx"))
    assert len(cached) == 1 and not [p for p in cached[0].parent.iterdir() if p.name.startswith(".")]
    again = Segmenter.from_checkpoint("demo", device="cpu", runtime="auto", notice=notes.append)
    assert isinstance(again.model, OnnxRuntimeModel) and len(notes) == 1  # auto on CPU: onnxruntime, cached
    assert isinstance(Segmenter.from_checkpoint("demo", device="cpu").model, SipMaskVIS)  # default: the file's own


@pytest.mark.slow
def test_errors_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all" * 10)
    frames_dir = str(require(REFERENCE / "clip_b" / "frames"))  # never decoded: the weights fail first
    out = str(tmp_path / "o.json")
    if importlib.util.find_spec("onnx"):
        one_line_error(sipvis("track", frames_dir, "--weights", str(garbage), "-o", out), "garbage.onnx")
    one_line_error(sipvis("track", frames_dir, "--weights", str(garbage), "-o", out,
                          prelude="import sys; sys.modules['onnx'] = sys.modules['onnxruntime'] = None; "),
                   "is not installed", 'pip install "sipvis[onnx]"')
    one_line_error(sipvis("track", frames_dir, "--weights", str(garbage), "--runtime", "torch", "-o", out),
                   "exported onnxruntime model", "--runtime torch")
    one_line_error(sipvis("track", frames_dir, "--weights", str(tmp_path / "missing.xml"), "-o", out), "not found")
    if not torch.cuda.is_available():
        one_line_error(sipvis("export", "--weights", "demo", "--format", "tensorrt", "-o", str(tmp_path / "x.engine")),
                       "CUDA GPU")
    result = sipvis("export", "--weights", "demo", "--format", "onnx", "-o", str(tmp_path / "x.xml"))
    assert result.returncode == 2 and "writes a .onnx file" in result.stderr


@pytest.mark.slow
def test_int8_export_is_quantised_calibrated_and_tracks(synth_frames, tmp_path):
    """`--int8`: an ONNX file whose convolutions are int8 (QDQ), int8 in its metadata, with the agreement of
    its detections with eager fp32's printed, and usable by `track` like any export."""
    needs("onnx")
    import onnx

    from sipvis.runtime.onnx_runtime import read_info

    path = tmp_path / "demo.int8.onnx"
    result = sipvis("export", "--weights", "demo", "--format", "onnx", "--int8", "--calibrate", str(synth_frames),
                    "--calibration-frames", "4", "-o", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(path) and "int8 (calibrated on 4 frames of" in lines[1]
    assert len([line for line in lines if line.endswith((" ok", " int8"))]) == 22  # every output, none FAIL
    agreement = lines[-1]
    assert agreement.startswith("int8 against eager fp32 on those frames: ")
    share = float(agreement.split(": ")[1].split("%")[0])
    assert 80 <= share <= 100, agreement  # measured 94-99% for the demo model
    assert read_info(path).precision == "int8"
    described = sipvis("weights", "info", str(path))
    assert described.returncode == 0, described.stderr
    assert "format:     onnxruntime export, int8 (opt-in" in described.stdout
    assert "input size: dynamic" in described.stdout and "classes:    5: circle" in described.stdout
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "DeformConv"} <= ops
    out = tmp_path / "int8.json"
    result = sipvis("track", str(synth_frames), "--weights", str(path), "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()), "the int8 model found nothing to track"
    result = sipvis("bench", str(synth_frames), "--weights", str(path), "--frames", "2", "--json", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert (report["runtime"], report["precision"]) == ("onnxruntime", "int8")


def test_detection_agreement_counts_what_the_candidate_finds_again(synth_frames):
    """Against itself: everything, IoU 1. Against the same model keeping one detection a frame: exactly
    its top detection, one per frame that has any."""
    import cv2

    from sipvis.runtime.quantize import detection_agreement

    images = [cv2.imread(str(p)) for p in sorted(synth_frames.glob("*.jpg"))[:3]]
    reference = Segmenter.from_checkpoint("demo", device="cpu")
    share, iou, count = detection_agreement(reference, reference, images)
    assert (share, iou) == (1.0, 1.0) and count > 3
    top_only = Segmenter.from_checkpoint("demo", device="cpu", overrides={"max_per_img": 1})
    share, iou, count = detection_agreement(reference, top_only, images)
    assert share == pytest.approx(3 / count) and iou == 1.0
    blind = Segmenter.from_checkpoint("demo", device="cpu", overrides={"score_thr": 1.0})
    assert detection_agreement(blind, reference, images) == (0.0, 0.0, 0)  # nothing to compare


def test_int8_options_are_checked(tmp_path):
    out = str(tmp_path / "x.xml")
    result = sipvis("export", "--weights", "demo", "--format", "openvino", "--int8", "-o", out)
    assert result.returncode == 2 and "--int8 writes ONNX" in result.stderr
    for option in (("--calibrate", "x.mp4"), ("--calibration-frames", "4")):
        result = sipvis("export", "--weights", "demo", "--format", "onnx", *option, "-o", out)
        assert result.returncode == 2 and "go with --int8" in result.stderr
    needs("onnx")
    one_line_error(sipvis("export", "--weights", "demo", "--format", "onnx", "--int8", "--calibrate",
                          str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "x.onnx")), "missing.mp4")
