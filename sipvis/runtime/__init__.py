"""Runtimes behind `Segmenter.forward`: the eager PyTorch model, or an exported file run by ONNX Runtime,
OpenVINO, TorchScript or TensorRT.

Every runtime object is a callable `(images: (B, 3, Hp, Wp) float32 tensor) -> HeadOutputs`, exactly like
`SipMaskVIS.forward`, with the model's `cfg`; `sipvis.engine.inference.Segmenter` runs it unchanged.

- `exported`: what every exported model shares (output names, embedded metadata, the fixed-size check).
- `export`: eager model -> ONNX / OpenVINO / TorchScript / TensorRT file, and the parity check.
- `onnx_runtime`, `openvino_runtime`, `torchscript_runtime`, `tensorrt_runtime`: one runtime each.
- `choose`: `--weights` + `--runtime` -> a runtime object (exports on the fly into the weights cache).
"""

from sipvis.runtime.choose import RUNTIMES, load_model, runtime_of_file

__all__ = ["RUNTIMES", "load_model", "runtime_of_file"]
