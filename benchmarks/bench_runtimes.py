"""Network-only time per frame of each runtime, side by side in one run: torch eager fp32 against the
exported model in onnxruntime, OpenVINO and TorchScript (and, opt-in, the int8 ONNX of `sipvis export --int8`).

Models: the R50 SipMask-VIS on the reference's deterministic weights (../shared/reference/sipmask_vis,
built by its recipe) and the bundled demo model. Input: one pre-processed frame of 640x360 padded to
384x640 (`sipvis.runtime.export.sample_input`), batch 1. For each thread count (torch.set_num_threads,
onnxruntime intra_op_num_threads, OpenVINO INFERENCE_NUM_THREADS) the contenders run alternately, one
call each per round; figures are medians over `--repeats` rounds after `--warmup` rounds. Every
exported runtime's outputs are checked against eager fp32 first (the reference tolerance), and its
largest deviation relative to that tolerance is printed.

Exports are made once into `--cache` (default benchmarks/.runtimes/) and reused.

    .venv/bin/python benchmarks/bench_runtimes.py                    # the figures in BENCHMARKS.md
    .venv/bin/python benchmarks/bench_runtimes.py --models demo --threads 1 --repeats 5
    .venv/bin/python benchmarks/bench_runtimes.py --int8             # adds the int8 ONNX of `sipvis export --int8`
    .venv/bin/python benchmarks/bench_runtimes.py --models demo --threads 1 --fixed   # fixed vs dynamic size
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from sipvis.checkpoint import build_model, convert_mmdet
from sipvis.model.sipmask import SipMaskVIS
from sipvis.runtime.choose import open_exported
from sipvis.runtime.export import export_model, onnx_to_openvino, parity, sample_input

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("torch", "onnxruntime", "openvino", "torchscript")


def load_models(names: list[str]) -> dict[str, SipMaskVIS]:
    models = {}
    if "r50" in names:
        sys.path.insert(0, str(ROOT / "tests"))
        from reference import reference_state_dict  # the reference recipe's deterministic weights

        cfg, state, _ = convert_mmdet(reference_state_dict())
        models["r50"] = SipMaskVIS(cfg)
        models["r50"].load_state_dict(state)
    if "demo" in names:
        models["demo"] = build_model("demo")[0]
    return {k: m.eval() for k, m in models.items()}


def exported_files(name: str, model: SipMaskVIS, cache: Path, int8: bool, fixed: bool) -> dict[str, Path]:
    """runtime -> file, exported (dynamic size; with `fixed` also a 384x640 ONNX) on first use."""
    files = {"onnxruntime": cache / f"{name}.onnx", "openvino": cache / f"{name}.xml",
             "torchscript": cache / f"{name}.ts"}
    if not files["onnxruntime"].exists():
        export_model(model, "onnx", files["onnxruntime"])
    if not files["openvino"].exists():
        onnx_to_openvino(files["onnxruntime"], files["openvino"])
    if not files["torchscript"].exists():
        export_model(model, "torchscript", files["torchscript"])
    if fixed:
        files["onnxruntime-fixed"] = cache / f"{name}.384x640.onnx"
        if not files["onnxruntime-fixed"].exists():
            export_model(model, "onnx", files["onnxruntime-fixed"], size=(384, 640))
    if int8:
        files["onnxruntime-int8"] = quantized(model, files["onnxruntime"])
    return files


def quantized(model: SipMaskVIS, onnx_file: Path) -> Path:
    """`sipvis export --int8` of `model` beside `onnx_file`: its convolutions int8, calibrated on the
    default 16 frames of a generated clip (opt-in; not parity-preserving)."""
    from sipvis.runtime.quantize import calibration_frames, calibration_inputs

    out = onnx_file.with_name(onnx_file.stem + ".int8.onnx")
    if not out.exists():
        export_model(model, "onnx", out, calibration=calibration_inputs(model, calibration_frames(None, 16)[0]))
    return out


def contenders(model: SipMaskVIS, files: dict[str, Path], threads: int) -> dict:
    """runtime -> callable on (1, 3, Hp, Wp) images, set up for `threads` threads."""
    from sipvis.runtime.onnx_runtime import OnnxRuntimeModel
    from sipvis.runtime.openvino_runtime import OpenVinoModel

    out = {"torch": model}
    for runtime, path in files.items():
        if runtime.startswith("onnxruntime"):
            out[runtime] = OnnxRuntimeModel(path, threads=threads)
        elif runtime == "openvino":
            out[runtime] = OpenVinoModel(path, threads=threads)
        else:
            out[runtime] = open_exported(path, runtime, torch.device("cpu"))
    return out


def measure(models: dict[str, SipMaskVIS], args) -> None:
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, repeats {args.repeats}; "
          f"ms/frame (median), ratio to torch eager, max deviation / tolerance")
    for name, model in models.items():
        files = exported_files(name, model, args.cache, args.int8, args.fixed)
        images = sample_input(model.cfg, (384, 640))
        for threads in args.threads:
            torch.set_num_threads(threads)
            runs = contenders(model, files, threads)
            deviation = {k: max(r.max_abs / r.tolerance for r in parity(model, f, images))
                         for k, f in runs.items() if k != "torch"}
            times: dict[str, list[float]] = {k: [] for k in runs}
            with torch.inference_mode():
                for round_ in range(args.warmup + args.repeats):
                    for key, fn in runs.items():  # alternating: one call of each per round
                        start = time.perf_counter()
                        fn(images)
                        if round_ >= args.warmup:
                            times[key].append(time.perf_counter() - start)
            base = statistics.median(times["torch"])
            for key, values in times.items():
                med = statistics.median(values)
                dev = f"{deviation[key]:.3g}" if key in deviation else "-"
                print(f"{name:5} threads {threads}  {key:17} {1000 * med:8.1f} ms  x{med / base:5.2f}  dev/tol {dev}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["r50", "demo"], choices=["r50", "demo"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="also the int8 ONNX of `sipvis export --int8` (opt-in)")
    parser.add_argument("--fixed", action="store_true", help="also onnxruntime on a fixed-size (384x640) export")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".runtimes")
    args = parser.parse_args()
    missing = [m for m in ("onnxruntime", "openvino", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"needs {', '.join(missing)}: pip install -e '.[onnx,openvino]'")
    args.cache.mkdir(parents=True, exist_ok=True)
    measure(load_models(args.models), args)


if __name__ == "__main__":
    main()
