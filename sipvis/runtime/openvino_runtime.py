"""An OpenVINO IR (.xml + .bin) or an ONNX file run by OpenVINO on the CPU, in fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sipvis.errors import SipvisError
from sipvis.runtime.exported import METADATA_KEY, ExportedModel, ExportInfo, require
from sipvis.runtime.onnx_runtime import read_info as read_onnx_info


def _deform_conv(node):
    """ONNX DeformConv -> OpenVINO DeformableConvolution-8 (+ bias): OpenVINO's ONNX reader has no rule
    for it. `bilinear_interpolation_pad=True` samples the border as torchvision does (False differs by
    up to 0.2 of a logit on the reference weights)."""
    ops = require("openvino.opset8")
    inputs = [node.get_input(i) for i in range(node.get_input_size())]
    pads = node.get_attribute("pads", [0, 0, 0, 0])
    attrs = dict(strides=node.get_attribute("strides", [1, 1]), pads_begin=pads[:2], pads_end=pads[2:],
                 dilations=node.get_attribute("dilations", [1, 1]), group=node.get_attribute("group", 1),
                 deformable_group=node.get_attribute("offset_group", 1), bilinear_interpolation_pad=True)
    x, weight, offset = inputs[:3]
    if len(inputs) > 4:
        out = ops.deformable_convolution(x, offset, weight, mask=inputs[4], **attrs)
    else:
        out = ops.deformable_convolution(x, offset, weight, **attrs)
    if len(inputs) > 3:
        out = ops.add(out, ops.reshape(inputs[3], ops.constant(np.array([1, -1, 1, 1], np.int64)), False))
    return [out.output(0)]


def read_onnx(path: Path):
    """An ONNX file as an `openvino.Model`, DeformConv included."""
    ov = require("openvino")
    from openvino.frontend import ConversionExtension

    try:
        return ov.convert_model(str(path), extension=[ConversionExtension("DeformConv", _deform_conv)])
    except Exception as exc:  # OpenVINO reports conversion failures as RuntimeError/OpConversionFailure
        raise SipvisError(f"OpenVINO cannot read {path}: {str(exc).strip().splitlines()[-1]}") from None


def read_model(path: Path):
    """(openvino.Model, ExportInfo) of an .xml IR or an .onnx file."""
    ov = require("openvino")
    if path.suffix.lower() == ".onnx":
        return read_onnx(path), read_onnx_info(path)
    if not path.with_suffix(".bin").is_file():
        raise SipvisError(f"{path.with_suffix('.bin')} is missing: an OpenVINO .xml needs its .bin beside it")
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:
        raise SipvisError(f"OpenVINO cannot read {path} (truncated or corrupt?): "
                          f"{str(exc).strip().splitlines()[-1]}") from None
    text = model.get_rt_info()[METADATA_KEY].astype(str) if model.has_rt_info(METADATA_KEY) else None
    return model, ExportInfo.from_json(text, str(path))


class OpenVinoModel(ExportedModel):
    """`images (B, 3, Hp, Wp) float32 -> HeadOutputs` through OpenVINO's CPU plugin.

    fp32 is asked for explicitly: on CPUs with bf16 units OpenVINO otherwise computes in bf16 (outputs
    move by ~1e-1, outside the parity tolerance).

    Args:
        path: .xml (from `sipvis export --format openvino`) or .onnx.
        overrides: post-processing config fields to change.
        threads: inference threads; 0 = torch's current setting.
    """

    runtime = "openvino"

    def __init__(self, path: str | Path, overrides: dict | None = None, threads: int = 0) -> None:
        ov = require("openvino")
        path = Path(path)
        model, info = read_model(path)
        super().__init__(info, str(path), overrides)
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
                  "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, images: torch.Tensor) -> list:
        results = self.request.infer(images.cpu().numpy())
        # copies: the request's output buffers are reused by the next call
        return [np.array(results[out]) for out in self.compiled.outputs]
