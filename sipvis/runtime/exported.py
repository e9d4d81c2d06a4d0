"""What every exported model shares: the flat output order of `HeadOutputs`, the metadata embedded in the
file (model config, class names, input size, versions), and the callable wrapper the `Segmenter` runs.

Image models (`cfg.task` "image"): the exported graph is the network (backbone, FPN, head), as for the VIS
model. SipMask++'s mask re-scoring runs in the post-processing on each detection's cropped soft mask (a
variable number of masks of a variable size, after NMS), so it stays in torch beside the exported network:
its weights (~112k parameters) travel in the metadata as base64 safetensors (`mask_rescoring`), and the
`ExportedModel` rebuilds it as `head.mask_scoring`, where the `Segmenter` looks for it.
"""

from __future__ import annotations

import base64
import importlib
import json
from dataclasses import dataclass, replace

import numpy as np
import torch

from sipvis.errors import SipvisError
from sipvis.model.config import SipMaskConfig
from sipvis.model.head import HeadOutputs, MaskRescoring

METADATA_KEY = "sipvis"  # ONNX metadata_props key, OpenVINO rt_info key, TorchScript extra file stem
METADATA_FORMAT = "sipvis-export"
ONNX_OPSET = 19  # the first opset with DeformConv
INPUT_NAME = "images"

# what each optional package is installed with
EXTRAS = {"onnx": "onnx", "onnxscript": "onnx", "onnxruntime": "onnx", "openvino": "openvino",
          "tensorrt": "tensorrt"}


def require(module: str):
    """Import an optional package, or a one-line `SipvisError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(module.split(".")[0], module)
        hint = f'pip install "sipvis[{extra}]"' if extra != "tensorrt" else "pip install tensorrt (with a CUDA GPU)"
        raise SipvisError(f"{module} is not installed: {hint}") from None


def output_names(levels: int) -> list[str]:
    """Flat output order of `HeadOutputs` for `levels` pyramid levels (the reference's names, per level)."""
    names = []
    for field in ("cls_logits", "bbox_reg", "centerness", "coeffs"):
        names += [f"{field}_{level}" for level in range(levels)]
    return names + ["basis", "track_feats"]


def flatten(out: HeadOutputs) -> tuple[torch.Tensor, ...]:
    """`HeadOutputs` -> tensors in `output_names` order."""
    return (*out.cls_logits, *out.bbox_reg, *out.centerness, *out.coeffs, out.basis, out.track_feats)


def unflatten(tensors: list[torch.Tensor], levels: int) -> HeadOutputs:
    """Tensors in `output_names` order -> `HeadOutputs`."""
    per = [list(tensors[i * levels:(i + 1) * levels]) for i in range(4)]
    return HeadOutputs(*per, tensors[4 * levels], tensors[4 * levels + 1])


class FlatHeads(torch.nn.Module):
    """The network with a flat tuple of outputs (what exporters and tracers take)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return flatten(self.model(images))


@dataclass(frozen=True)
class ExportInfo:
    """The metadata an exported file carries.

    Attributes:
        cfg: the model config (class names included).
        input_size: (Hp, Wp) for a fixed-size export, None for a dynamic one.
        versions: package versions that made the file (sipvis, torch, the target runtime).
        rescoring: the SipMask++ mask re-scoring state dict (`MaskRescoring`, float32), None without one.
        precision: "fp32", or "int8" for an opt-in quantised ONNX file (`sipvis export --int8`; outside the
            fp32 parity contract).
    """

    cfg: SipMaskConfig
    input_size: tuple[int, int] | None
    versions: dict
    rescoring: dict[str, torch.Tensor] | None = None
    precision: str = "fp32"

    def to_json(self) -> str:
        from sipvis.model.families import family_name

        meta = {"format": METADATA_FORMAT, "version": 1, "model": self.cfg.to_dict(),
                "family": family_name(self.cfg), "input_size": list(self.input_size) if self.input_size else None,
                "versions": self.versions, "precision": self.precision}
        if self.rescoring is not None:
            from safetensors.torch import save

            state = {k: v.detach().float().cpu().contiguous() for k, v in self.rescoring.items()}
            meta["mask_rescoring"] = base64.b64encode(save(state)).decode("ascii")
        return json.dumps(meta)

    @classmethod
    def from_json(cls, text: str | None, source: str) -> "ExportInfo":
        """Parse embedded metadata; a file without it is a one-line error naming `source`."""
        try:
            meta = json.loads(text) if text else None
            if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
                raise ValueError("no sipvis metadata")
            size = meta.get("input_size")
            return cls(SipMaskConfig.from_dict(meta["model"]), tuple(size) if size else None,
                       meta.get("versions") or {}, _rescoring_state(meta.get("mask_rescoring")),
                       str(meta.get("precision", "fp32")))
        except (ValueError, TypeError, KeyError) as exc:
            raise SipvisError(f"{source} is not a sipvis export ({exc}); make one with `sipvis export`") from None


def _rescoring_state(text: str | None) -> dict[str, torch.Tensor] | None:
    """base64 safetensors -> the re-scoring state dict; ValueError when it does not decode."""
    if text is None:
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(base64.b64decode(text.encode("ascii"), validate=True))
    except (SafetensorError, ValueError) as exc:
        raise ValueError(f"bad mask_rescoring weights: {exc}") from None


class ExportedHead:
    """The part of the head the post-processing runs in torch: `mask_scoring` (SipMask++ re-scoring) or None.

    Args:
        info: the file's metadata; a model with `mask_rescoring` in its config must carry the weights.
        source: the file's path (for messages).
    """

    def __init__(self, info: ExportInfo, source: str) -> None:
        self.mask_scoring: MaskRescoring | None = None
        if not info.cfg.mask_rescoring:
            return
        if info.rescoring is None:
            raise SipvisError(f"{source} is a SipMask++ export without its mask re-scoring weights: "
                              f"export it again with this sipvis")
        module = MaskRescoring(info.cfg.num_classes)
        try:
            module.load_state_dict(info.rescoring)
        except RuntimeError as exc:
            raise SipvisError(f"{source}: mask re-scoring weights do not fit the model "
                              f"({str(exc).splitlines()[0]})") from None
        self.mask_scoring = module.eval()


class ExportedModel:
    """An exported network as the `Segmenter` sees it: `cfg`, `eval()`, `to(device)` and
    `(images: (B, 3, Hp, Wp) float32) -> HeadOutputs`. Subclasses implement `run` (float32 NCHW numpy or
    tensor in, arrays/tensors in `output_names` order out).

    Args:
        info: the file's metadata.
        source: the file's path (for messages).
        overrides: post-processing config fields to change (score_thr, max_per_img ...).
    """

    runtime = "exported"

    def __init__(self, info: ExportInfo, source: str, overrides: dict | None = None) -> None:
        self.info = info
        self.cfg = replace(info.cfg, **(overrides or {}))
        self.source = source
        self.head = ExportedHead(info, source)  # image models: what the post-processing runs in torch

    def eval(self) -> "ExportedModel":
        return self

    def to(self, device: torch.device | str) -> "ExportedModel":
        """The device is checked when the runtime is chosen (`choose.load_model`); the network stays in its
        runtime, only the re-scoring branch (SipMask++, run by the post-processing in torch) moves."""
        if self.head.mask_scoring is not None:
            self.head.mask_scoring.to(device)
        return self

    def check_size(self, images: torch.Tensor) -> None:
        """A fixed-size export refuses another input size with one clear line."""
        size = self.info.input_size
        if size is not None and tuple(images.shape[2:]) != tuple(size):
            h, w = size
            got = f"{images.shape[3]}x{images.shape[2]}"
            raise SipvisError(f"{self.source} was exported for {w}x{h} (WxH) padded inputs, these frames pad to "
                              f"{got}: export it again with --dynamic or --size {got}")

    def __call__(self, images: torch.Tensor) -> HeadOutputs:
        self.check_size(images)
        outs = self.run(images.float().contiguous())
        return unflatten([o if isinstance(o, torch.Tensor) else torch.from_numpy(np.asarray(o)) for o in outs],
                         len(self.cfg.strides))

    def run(self, images: torch.Tensor) -> list:
        raise NotImplementedError
