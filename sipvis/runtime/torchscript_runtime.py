"""A TorchScript file (`sipvis export --format torchscript`) run by torch.jit."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from sipvis.errors import SipvisError
from sipvis.runtime.exported import METADATA_KEY, ExportedModel, ExportInfo


class TorchScriptModel(ExportedModel):
    """`images (B, 3, Hp, Wp) float32 -> HeadOutputs` through a traced module on `device`.

    Args:
        path: the .ts file.
        device: where it runs (CPU or a CUDA device).
        overrides: post-processing config fields to change.
    """

    runtime = "torchscript"

    def __init__(self, path: str | Path, device: torch.device, overrides: dict | None = None) -> None:
        import torchvision  # noqa: F401  registers torchvision::deform_conv2d, which the module calls

        path = Path(path)
        extra = {f"{METADATA_KEY}.json": ""}
        try:
            with warnings.catch_warnings():  # torch.jit's deprecation notice (torch 2.14): it still works
                warnings.simplefilter("ignore")
                self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra).eval()
        except (RuntimeError, ValueError) as exc:
            raise SipvisError(f"{path} is not a readable TorchScript file (truncated or corrupt?): "
                              f"{str(exc).strip().splitlines()[0]}") from None
        super().__init__(ExportInfo.from_json(extra[f"{METADATA_KEY}.json"], str(path)), str(path), overrides)
        self.device = device

    def run(self, images: torch.Tensor) -> list:
        return list(self.module(images.to(self.device)))
