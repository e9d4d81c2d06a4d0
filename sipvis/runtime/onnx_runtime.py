"""An ONNX file run by ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path

import torch

from sipvis.engine.threads import pools_spin
from sipvis.errors import SipvisError
from sipvis.runtime.exported import INPUT_NAME, METADATA_KEY, ExportedModel, ExportInfo, require


def read_info(path: Path) -> ExportInfo:
    """The sipvis metadata of an ONNX file (without loading its weights into a session)."""
    onnx = require("onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not ONNX
        raise SipvisError(f"{path} is not a readable ONNX file (truncated or corrupt?): "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    return ExportInfo.from_json(meta.get(METADATA_KEY), str(path))


class OnnxRuntimeModel(ExportedModel):
    """`images (B, 3, Hp, Wp) float32 -> HeadOutputs` through an `onnxruntime.InferenceSession`.

    Args:
        path: the .onnx file (from `sipvis export --format onnx`).
        overrides: post-processing config fields to change.
        threads: intra-op threads; 0 = torch's current setting (the process's thread policy).
    """

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, overrides: dict | None = None, threads: int = 0) -> None:
        ort = require("onnxruntime")
        path = Path(path)
        super().__init__(read_info(path), str(path), overrides)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle pool threads sleep unless OMP_WAIT_POLICY=ACTIVE (the reason: sipvis.engine.threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if pools_spin() else "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
            raise SipvisError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None

    def run(self, images: torch.Tensor) -> list:
        return self.session.run(None, {INPUT_NAME: images.cpu().numpy()})
