"""Which runtime runs a `--weights` value, and the on-the-fly export into the weights cache.

The rule (`--runtime`):
- not given: the file's own runtime: `.onnx` -> onnxruntime, `.xml` -> openvino, `.ts` -> torchscript,
  `.engine` -> tensorrt, anything else (registry name, sipvis checkpoint, original `.pth`) -> torch.
- `auto`: an exported file runs in its own runtime; a checkpoint runs in onnxruntime on the CPU when it
  is installed (measured fastest on CPU, BENCHMARKS.md "Exported runtimes"), else in torch; on CUDA torch.
- a named runtime: a checkpoint is exported for it once, into `<weights cache>/exported/`, keyed by the
  checkpoint's sha256, the format and the versions of sipvis, torch and the runtime; an `.onnx` file
  also runs in openvino. Exports on the fly are dynamic-size (any frame size).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sipvis.errors import SipvisError

if TYPE_CHECKING:  # torch is imported when a model is loaded, not when the CLI lists this module's choices
    import torch

    from sipvis.weights import DownloadProgress

RUNTIMES = ("torch", "onnxruntime", "openvino", "tensorrt", "auto")
# file suffix -> the runtime that runs it
FILE_RUNTIMES = {".onnx": "onnxruntime", ".xml": "openvino", ".ts": "torchscript", ".engine": "tensorrt",
                 ".plan": "tensorrt"}
# runtime -> the export format it runs
RUNTIME_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "torchscript": "torchscript",
                   "tensorrt": "tensorrt"}


def runtime_of_file(weights: str | Path) -> str | None:
    """The runtime an exported file needs, from its suffix; None for anything torch loads."""
    return FILE_RUNTIMES.get(Path(str(weights)).suffix.lower())


def choose_runtime(requested: str | None, weights: str | Path, device: torch.device) -> str:
    """`--runtime` (None when not given) for these weights on this device -> the runtime that runs them."""
    if requested is not None and requested not in RUNTIMES:
        raise SipvisError(f"unknown runtime {requested!r}: use {', '.join(RUNTIMES)}")
    own = runtime_of_file(weights)
    if requested is None or (requested == "auto" and own):
        return own or "torch"
    if requested == "auto":
        fast = device.type == "cpu" and importlib.util.find_spec("onnxruntime") is not None
        return "onnxruntime" if fast else "torch"
    return requested


def device_for(weights: str | Path, runtime: str | None, device: torch.device, explicit: bool) -> torch.device:
    """`--device auto` on a CUDA machine means the CPU for a runtime that runs only there (onnxruntime,
    OpenVINO); an explicit device is kept (and refused later with one line if the runtime cannot use it)."""
    import torch

    if not explicit and choose_runtime(runtime, weights, device) in ("onnxruntime", "openvino"):
        return torch.device("cpu")
    return device


def load_model(weights: str | Path, runtime: str | None, device: torch.device, dtype: torch.dtype,
               overrides: dict | None = None, progress: DownloadProgress | None = None,
               notice: Callable[[str], None] | None = None):
    """`--weights` + `--runtime` -> the network the `Segmenter` runs: an eager `SipMaskVIS` (torch) or an
    `ExportedModel` (a callable with the same signature and `cfg`).

    Args:
        device, dtype: already resolved (`resolve_device`, `resolve_precision`); exported runtimes run fp32.
        overrides: post-processing config fields (score_thr, max_per_img).
        progress: told how a download goes.
        notice: told one line when a checkpoint is exported on the fly.
    """
    from sipvis.checkpoint import build_model

    chosen = choose_runtime(runtime, weights, device)
    own = runtime_of_file(weights)
    if chosen == "torch" and own is None:
        return build_model(weights, overrides=overrides, progress=progress)[0]
    _check_target(chosen, device, dtype)
    if own is None:
        return open_exported(cached_export(weights, chosen, device, progress, notice), chosen, device, overrides)
    if chosen == own or (chosen == "openvino" and own == "onnxruntime"):
        path = Path(str(weights)).expanduser()
        if not path.is_file():
            raise SipvisError(f"Weights file not found: {path}")
        return open_exported(path, chosen, device, overrides)
    if chosen == "torch":
        raise SipvisError(f"{weights} is an exported {own} model; --runtime torch needs the checkpoint it came from")
    raise SipvisError(f"{weights} is an exported {own} model: it runs with --runtime {own} or auto; for {chosen}, "
                      f"export the checkpoint with `sipvis export --format {RUNTIME_FORMATS[chosen]}`")


def _check_target(runtime: str, device: torch.device, dtype: torch.dtype) -> None:
    import torch

    if dtype != torch.float32:
        raise SipvisError(f"the {runtime} runtime runs in fp32: use --precision fp32")
    if runtime in ("onnxruntime", "openvino") and device.type != "cpu":
        raise SipvisError(f"the {runtime} runtime runs on the CPU here: use --device cpu")
    if runtime == "tensorrt" and device.type != "cuda":
        raise SipvisError("the tensorrt runtime needs a CUDA device (--device cuda)")


def open_exported(path: Path, runtime: str, device: torch.device, overrides: dict | None = None):
    """An exported file in `runtime` -> its `ExportedModel`."""
    if runtime == "onnxruntime":
        from sipvis.runtime.onnx_runtime import OnnxRuntimeModel

        return OnnxRuntimeModel(path, overrides)
    if runtime == "openvino":
        from sipvis.runtime.openvino_runtime import OpenVinoModel

        return OpenVinoModel(path, overrides)
    if runtime == "torchscript":
        from sipvis.runtime.torchscript_runtime import TorchScriptModel

        return TorchScriptModel(path, device, overrides)
    from sipvis.runtime.tensorrt_runtime import TensorRTModel

    return TensorRTModel(path, device, overrides)


def exported_info(path: Path, runtime: str):
    """An exported file's metadata (`ExportInfo`), read without running it where the format allows (ONNX,
    TensorRT's metadata file); OpenVINO and TorchScript files are opened on the CPU."""
    if runtime == "onnxruntime":
        from sipvis.runtime.onnx_runtime import read_info

        return read_info(path)
    if runtime == "tensorrt":
        from sipvis.runtime.tensorrt_runtime import read_info

        return read_info(path)
    import torch

    return open_exported(path, runtime, torch.device("cpu")).info


def source_sha256(weights: str | Path, progress: DownloadProgress | None = None) -> str:
    """sha256 of the files a `--weights` value loads (a sipvis checkpoint: its .safetensors and .json)."""
    from sipvis.checkpoint import checkpoint_paths
    from sipvis.weights import resolve_weights, sha256_file

    resolved = resolve_weights(str(weights), progress=progress)
    if resolved.sha256 and resolved.format != "sipvis":  # a registry file just verified: not hashed again
        return hashlib.sha256(resolved.sha256.encode()).hexdigest()
    files = checkpoint_paths(resolved.path) if resolved.format == "sipvis" else (resolved.path,)
    return hashlib.sha256("".join(sha256_file(Path(f)) for f in files).encode()).hexdigest()


def cached_path(weights: str | Path, fmt: str, progress: DownloadProgress | None = None) -> Path:
    """Where the on-the-fly export of `weights` to `fmt` lives in the weights cache."""
    from sipvis.runtime.export import SUFFIXES, versions
    from sipvis.weights import weights_dir

    tag = hashlib.sha256(json.dumps(versions(fmt), sort_keys=True).encode()).hexdigest()[:8]
    return weights_dir() / "exported" / f"{source_sha256(weights, progress)[:16]}-{fmt}-dynamic-{tag}{SUFFIXES[fmt]}"


def cached_export(weights: str | Path, runtime: str, device: torch.device, progress: DownloadProgress | None = None,
                  notice: Callable[[str], None] | None = None) -> Path:
    """The cached export of a checkpoint for `runtime`, made (and parity-checked) on first use."""
    from sipvis.checkpoint import build_model
    from sipvis.runtime.export import export_model, parity, sample_input

    fmt = RUNTIME_FORMATS[runtime]
    path = cached_path(weights, fmt, progress)
    if path.is_file() and (fmt != "openvino" or path.with_suffix(".bin").is_file()):
        return path
    if notice:
        notice(f"Exporting {weights} for {runtime} (once; cached as {path})")
    model = build_model(weights, progress=progress)[0]
    export_model(model, fmt, path)
    bad = [r for r in parity(model, open_exported(path, runtime, device), sample_input(model.cfg))
           if not r.ok]
    if bad:
        path.unlink(missing_ok=True)
        raise SipvisError(f"the {runtime} export of {weights} does not match eager fp32: {bad[0].name} differs "
                          f"by {bad[0].max_abs:.3g} (tolerance {bad[0].tolerance:.3g}); use --runtime torch")
    return path
