"""A TensorRT engine (`sipvis export --format tensorrt`, built from the ONNX graph on a CUDA GPU) run on
that GPU. Its metadata sits beside it in `<engine>.json` (an engine file has no room for it).

Not exercised in CI (no GPU, no `tensorrt` there): build and parity are checked by `sipvis export` itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sipvis.errors import SipvisError
from sipvis.io.files import load_json
from sipvis.runtime.exported import INPUT_NAME, ExportedModel, ExportInfo, require


def sidecar(path: Path) -> Path:
    """`model.engine` -> `model.engine.json` (the metadata)."""
    return path.with_name(path.name + ".json")


def build_engine(onnx_bytes: bytes, shape: tuple[int, ...], dynamic: bool) -> bytes:
    """Serialized fp32 engine for the ONNX graph; `shape` (B, 3, Hp, Wp) is the optimisation point
    (batch 1..2B; with `dynamic` height/width from 1/2 to 2x of it)."""
    trt = require("tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SipvisError(f"TensorRT cannot parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    b, c, h, w = shape
    top = max(2 * b, 32)  # the traced sample has batch 1; `--batch` defaults to 8 on CUDA
    lo, hi = ((1, c, h // 2, w // 2), (top, c, 2 * h, 2 * w)) if dynamic else ((1, c, h, w), (top, c, h, w))
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, lo, shape, hi)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise SipvisError("TensorRT could not build an engine for this model (see its log above)")
    return bytes(engine)


class TensorRTModel(ExportedModel):
    """`images (B, 3, Hp, Wp) float32 on a CUDA device -> HeadOutputs` (CUDA tensors) through an engine."""

    runtime = "tensorrt"

    def __init__(self, path: str | Path, device: torch.device, overrides: dict | None = None) -> None:
        trt = require("tensorrt")
        path = Path(path)
        if device.type != "cuda":
            raise SipvisError("the tensorrt runtime needs a CUDA device (--device cuda)")
        super().__init__(read_info(path), str(path), overrides)
        self.device = device
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise SipvisError(f"{path} is not an engine this TensorRT/GPU can run; export it again here")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def run(self, images: torch.Tensor) -> list:
        images = images.to(self.device).contiguous()
        if not self.context.set_input_shape(INPUT_NAME, tuple(images.shape)):
            raise SipvisError(f"{self.source}: input {tuple(images.shape)} is outside the engine's profile; use a "
                              "smaller --batch or frames nearer the exported size, or export again")
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        outputs = []
        for name in self.names:
            if name == INPUT_NAME:
                continue
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=torch.float32, device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise SipvisError(f"TensorRT failed to run {self.source}")
        return outputs


def read_info(path: Path) -> ExportInfo:
    """The sipvis metadata of an engine, from the file beside it (no GPU needed)."""
    return ExportInfo.from_json(_read_text(sidecar(path)), str(path))


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise SipvisError(f"{path} is missing: a TensorRT engine needs the metadata file `sipvis export` wrote")
    return json.dumps(load_json(path, "engine metadata"))
