"""Eager SipMask-VIS -> an exported file (ONNX, OpenVINO IR, TorchScript, TensorRT engine) with the model's
config and class names embedded, and the parity check of an export against eager fp32.

Deformable convolution: torchvision's `deform_conv2d` is written as the standard ONNX `DeformConv` (opset
19; ONNX Runtime runs it on the CPU). OpenVINO's ONNX reader has no `DeformConv` rule, so the OpenVINO
export reads the same ONNX graph with a conversion rule to its own `DeformableConvolution` (opset 8,
`bilinear_interpolation_pad=True`: torchvision's sampling at the image border) and saves IR in fp32.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sipvis.errors import SipvisError
from sipvis.io.files import atomic_write, ensure_folder, publish, write_bytes_atomic
from sipvis.model.config import SipMaskConfig
from sipvis.model.fold import folded_for_inference
from sipvis.runtime.exported import (INPUT_NAME, METADATA_KEY, ONNX_OPSET, ExportInfo, FlatHeads, flatten,
                                     output_names, require)

FORMATS = ("onnx", "openvino", "torchscript", "tensorrt")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".ts", "tensorrt": ".engine"}


def versions(fmt: str) -> dict:
    """The package versions an export of `fmt` depends on (part of the weights-cache key)."""
    import sipvis

    out = {"sipvis": sipvis.__version__, "torch": torch.__version__}
    if fmt in ("onnx", "openvino", "tensorrt"):  # the graph comes from torch.onnx + onnxscript
        out["onnx_opset"] = ONNX_OPSET
        out["onnxscript"] = require("onnxscript").__version__
    module = {"openvino": "openvino", "tensorrt": "tensorrt"}.get(fmt)
    if module:
        out[module] = require(module).__version__
    return out


def default_input_size(cfg: SipMaskConfig) -> tuple[int, int]:
    """(Hp, Wp) of a landscape frame at the model's largest input size (640x360 -> 384x640)."""
    long, short = cfg.max_size
    div = cfg.size_divisor
    return -(-short // div) * div, -(-long // div) * div


def sample_input(cfg: SipMaskConfig, size: tuple[int, int] | None = None, batch: int = 1) -> torch.Tensor:
    """A deterministic pre-processed frame batch -> (batch, 3, Hp, Wp) float32 (a smooth random image,
    normalised like a real one), for tracing and the parity check."""
    from sipvis.model.preprocess import normalize_and_pad

    h, w = size or default_input_size(cfg)
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(batch, 3, max(1, h // 16), max(1, w // 16), generator=g) * 255
    image = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    image = image.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return normalize_and_pad(image, cfg.pixel_mean, cfg.pixel_std, cfg.to_rgb, cfg.size_divisor).contiguous()


def _deform_conv(input, weight, offset, mask, bias, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                 dil_h: int, dil_w: int, groups: int, offset_groups: int, use_mask: bool):
    """torchvision::deform_conv2d -> ONNX DeformConv (opset 19): the same offset layout, (dy, dx) per
    kernel point per offset group; the mask is passed only when torchvision uses one."""
    from onnxscript import opset19 as op

    attrs = dict(dilations=[dil_h, dil_w], group=groups, kernel_shape=[weight.shape[2], weight.shape[3]],
                 offset_group=offset_groups, pads=[pad_h, pad_w, pad_h, pad_w], strides=[stride_h, stride_w])
    if use_mask:
        return op.DeformConv(input, weight, offset, bias, mask, **attrs)
    return op.DeformConv(input, weight, offset, bias, **attrs)


def onnx_model(model: torch.nn.Module, example: torch.Tensor, dynamic: bool):
    """Export to an in-memory `onnx.ModelProto` (opset 19). Batch is always dynamic; height and width
    (multiples of the size divisor) only when `dynamic`."""
    require("onnx")
    require("onnxscript")
    from torch.export import Dim

    div = model.cfg.size_divisor
    dims = {0: Dim("batch", min=1, max=256)}
    if dynamic:
        dims.update({2: div * Dim("h_blocks", min=1, max=8192 // div), 3: div * Dim("w_blocks", min=1, max=8192 // div)})
    levels = len(model.cfg.strides)
    program = torch.onnx.export(
        FlatHeads(model).eval(), (example,), dynamo=True, opset_version=ONNX_OPSET, verbose=False,
        input_names=[INPUT_NAME], output_names=output_names(levels), dynamic_shapes={"images": dims},
        custom_translation_table={torch.ops.torchvision.deform_conv2d.default: _deform_conv})
    return program.model_proto


def write_onnx(model: torch.nn.Module, path: Path, example: torch.Tensor, info: ExportInfo, dynamic: bool) -> None:
    """`path` gets the ONNX graph with `info` in its metadata_props (key "sipvis")."""
    proto = onnx_model(model, example, dynamic)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    write_bytes_atomic(path, proto.SerializeToString())


def write_openvino(model: torch.nn.Module, path: Path, example: torch.Tensor, info: ExportInfo,
                   dynamic: bool) -> None:
    """`path` (.xml) and its .bin get the OpenVINO IR (fp32 weights) with `info` in rt_info["sipvis"]."""
    proto = onnx_model(model, example, dynamic)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    ensure_folder(path.parent)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        onnx_file.write_bytes(proto.SerializeToString())
        onnx_to_openvino(onnx_file, path)


def onnx_to_openvino(onnx_file: Path, path: Path) -> Path:
    """Convert a sipvis ONNX export to OpenVINO IR at `path` (.xml + .bin, fp32), its metadata carried over
    into rt_info["sipvis"]. The .bin is renamed into place first: a reader that finds the .xml finds it."""
    from sipvis.runtime.openvino_runtime import read_model

    ov = require("openvino")
    ir, info = read_model(Path(onnx_file))
    ir.set_rt_info(info.to_json(), METADATA_KEY)
    ensure_folder(path.parent)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(ir, str(xml), compress_to_fp16=False)
        publish(xml.with_suffix(".bin"), path.with_suffix(".bin"))
        publish(xml, path)
    return path


def write_torchscript(model: torch.nn.Module, path: Path, example: torch.Tensor, info: ExportInfo,
                      dynamic: bool) -> None:
    """`path` gets a traced TorchScript module with `info` as the extra file "sipvis.json"."""
    import warnings

    with warnings.catch_warnings():  # the tracer's notes on shape arithmetic: the parity check decides
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(FlatHeads(model).eval(), (example,), check_trace=False)
        with atomic_write(path, "wb") as f:  # torch.jit is deprecated in torch 2.14 (it warns); it still works
            torch.jit.save(traced, f, _extra_files={f"{METADATA_KEY}.json": info.to_json()})


def write_tensorrt(model: torch.nn.Module, path: Path, example: torch.Tensor, info: ExportInfo,
                   dynamic: bool) -> None:
    """`path` gets a TensorRT engine built from the ONNX graph (fp32), `info` in `<path>.json` beside it."""
    from sipvis.runtime.tensorrt_runtime import build_engine, sidecar

    if not torch.cuda.is_available():
        raise SipvisError("TensorRT export needs a CUDA GPU; none is available here")
    require("tensorrt")
    engine = build_engine(onnx_model(model, example, dynamic).SerializeToString(), tuple(example.shape), dynamic)
    write_bytes_atomic(path, engine)
    write_bytes_atomic(sidecar(path), info.to_json().encode())


WRITERS: dict[str, Callable] = {"onnx": write_onnx, "openvino": write_openvino, "torchscript": write_torchscript,
                                "tensorrt": write_tensorrt}


def export_model(model: torch.nn.Module, fmt: str, path: str | Path, size: tuple[int, int] | None = None,
                 calibration: Sequence[torch.Tensor] | None = None) -> Path:
    """Write `model` (eager SipMaskVIS: a VIS or an image model) as `fmt` to `path`.

    Args:
        size: (Hp, Wp) multiples of the size divisor for a fixed-size export; None: dynamic height and
            width (any padded frame size). The batch size is dynamic either way.
        calibration: pre-processed (1, 3, Hp, Wp) frames: an int8 ONNX file calibrated on them
            (`sipvis.runtime.quantize`, opt-in, outside the fp32 parity contract); None: fp32.

    Returns:
        the written path (for OpenVINO the .xml; its .bin sits beside it).
    """
    if fmt not in WRITERS:
        raise SipvisError(f"unknown export format {fmt!r}: use {', '.join(FORMATS)}")
    if size is not None and any(s % model.cfg.size_divisor or s <= 0 for s in size):
        raise SipvisError(f"--size {size[1]}x{size[0]}: width and height must be positive multiples of "
                          f"{model.cfg.size_divisor} (the padded input size)")
    if calibration is not None and fmt != "onnx":
        raise SipvisError(f"int8 quantisation writes ONNX only (onnxruntime runs it), not {fmt}")
    if calibration is not None and not calibration:
        raise SipvisError("int8 quantisation needs at least one calibration frame")
    path = Path(path)
    scoring = model.head.mask_scoring  # SipMask++: runs in torch in the post-processing, weights in the metadata
    info = ExportInfo(model.cfg, size, versions(fmt), scoring.state_dict() if scoring is not None else None,
                      "fp32" if calibration is None else "int8")
    example = sample_input(model.cfg, size)
    with torch.no_grad():
        # the network as Segmenter runs it: frozen BatchNorm folded into the convolutions
        network = folded_for_inference(model.eval())
        if calibration is None:
            WRITERS[fmt](network, path, example, info, size is None)
        else:
            from sipvis.runtime.quantize import write_int8_onnx

            write_int8_onnx(network, path, example, calibration, info)
    return path


@dataclass
class ParityRow:
    """One head output: max |exported - eager| against the reference tolerance 1e-3 * (1 + max |eager|)."""

    name: str
    max_abs: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.max_abs <= self.tolerance)


def parity(model: torch.nn.Module, exported: Callable, images: torch.Tensor) -> list[ParityRow]:
    """Every head output of `exported(images)` against eager fp32 `model(images)`."""
    with torch.inference_mode():
        want = flatten(model.eval()(images))
        got = flatten(exported(images))
    rows = []
    for name, a, b in zip(output_names(len(model.cfg.strides)), got, want, strict=True):
        a, b = a.float().cpu().numpy(), b.float().cpu().numpy()
        if a.shape != b.shape:
            raise SipvisError(f"export parity: {name} has shape {a.shape}, eager {b.shape}")
        rows.append(ParityRow(name, float(np.abs(a - b).max()) if a.size else 0.0,
                              1e-3 * (1 + float(np.abs(b).max()) if b.size else 1.0)))
    return rows


__all__ = ["FORMATS", "SUFFIXES", "ParityRow", "default_input_size", "export_model", "parity", "sample_input",
           "versions"]
