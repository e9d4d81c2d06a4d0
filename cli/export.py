"""`sipvis export --format onnx|openvino|torchscript|tensorrt -o PATH`: the network as a file another runtime
runs, with the model's config and class names embedded, and a parity check against eager fp32."""

from __future__ import annotations

import click

FORMAT_NAMES = ("onnx", "openvino", "torchscript", "tensorrt")


@click.command("export")
@click.option("--weights", default=None, help="Registry name, checkpoint path or URL (default: the registry's default).")
@click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES), required=True,
              help="onnx (.onnx, ONNX Runtime), openvino (.xml + .bin), torchscript (.ts), tensorrt (.engine, "
                   "CUDA GPU + the tensorrt package).")
@click.option("-o", "--output", required=True, help="File to write (.onnx, .xml, .ts or .engine).")
@click.option("--size", default=None, metavar="WxH",
              help="Fixed padded input size, multiples of 32 (e.g. 640x384 for 640x360 frames); other sizes are "
                   "then refused. Default: dynamic (any frame size).")
@click.option("--dynamic", is_flag=True, help="Dynamic height and width (the default; exclusive with --size).")
@click.option("--int8", is_flag=True,
              help="Opt-in, ONNX only: quantise the convolutions to int8 (onnxruntime static quantisation, "
                   "calibrated on --calibrate). Faster on CPUs, but outside the fp32 parity tolerance: the "
                   "export reports how far its detections move.")
@click.option("--calibrate", default=None, metavar="SOURCE",
              help="With --int8: a video, folder or image sequence like yours to calibrate on (default: a "
                   "generated clip; your own footage gives better int8 accuracy).")
@click.option("--calibration-frames", default=16, show_default=True, type=click.IntRange(min=1),
              help="With --int8: how many frames of --calibrate to calibrate on (and compare on).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the written path.")
def command(weights, fmt, output, size, dynamic, int8, calibrate, calibration_frames, quiet) -> None:
    """Export the network to ONNX, OpenVINO IR, TorchScript or a TensorRT engine, then check every head output
    against eager PyTorch fp32 on a sample frame (exit 1 when one is outside the reference tolerance).

    \b
    Examples:
      sipvis export --format onnx -o sipmask.onnx
      sipvis export --weights demo --format openvino -o demo.xml --size 256x160
      sipvis export --format onnx --int8 --calibrate my_clip.mp4 -o sipmask.int8.onnx
      sipvis track input.mp4 --weights sipmask.onnx -o out.json
    """
    from pathlib import Path

    from sipvis.cli._options import parse_size
    from sipvis.errors import SipvisError

    if size and dynamic:
        raise click.UsageError("--size and --dynamic exclude each other")
    if int8 and fmt != "onnx":
        raise click.UsageError(f"--int8 writes ONNX (onnxruntime runs it): use --format onnx, not {fmt}")
    if not int8 and (calibrate is not None or click.get_current_context().get_parameter_source(
            "calibration_frames") != click.core.ParameterSource.DEFAULT):
        raise click.UsageError("--calibrate and --calibration-frames go with --int8")
    fixed = None
    if size:
        width, height = parse_size(size, "--size")
        fixed = (height, width)
    calibration = (calibrate, calibration_frames) if int8 else None
    rows = _export(weights, fmt, Path(output), fixed, calibration, quiet)
    bad = [r for r in rows if not r.ok]
    if bad and not int8:
        raise SipvisError(f"parity check failed: {len(bad)} head output(s) outside the tolerance, worst "
                          f"{bad[0].name} {bad[0].max_abs:.3g} > {bad[0].tolerance:.3g}; the file is not usable")


def _export(weights, fmt: str, output, fixed, calibration, quiet: bool) -> list:
    """Build the model, write the file, run the parity check; prints the table unless `quiet`.
    `calibration`: (source or None, frames) for an int8 file, None for fp32."""
    import torch

    from sipvis.checkpoint import build_model
    from sipvis.cli._progress import DownloadBars
    from sipvis.engine.inference import Segmenter
    from sipvis.runtime.choose import RUNTIME_FORMATS, open_exported
    from sipvis.runtime.export import SUFFIXES, export_model, parity, sample_input
    from sipvis.runtime.quantize import calibration_frames, calibration_inputs, detection_agreement
    from sipvis.weights import default_weights_name

    runtime = next(r for r, f in RUNTIME_FORMATS.items() if f == fmt)
    if output.suffix.lower() != SUFFIXES[fmt]:
        raise click.UsageError(f"--format {fmt} writes a {SUFFIXES[fmt]} file; got -o {output}")
    with DownloadBars(enabled=not quiet) as bars:
        model = build_model(weights or default_weights_name(), progress=bars)[0]
    device = torch.device("cuda" if fmt == "tensorrt" else "cpu")
    frames = None
    if calibration is None:
        path = export_model(model, fmt, output, fixed)
    else:
        source, count = calibration
        if source is None and not quiet:
            click.echo("calibrating int8 on a generated clip; --calibrate YOUR_VIDEO calibrates on footage like "
                       "yours (better accuracy)", err=True)
        frames, source = calibration_frames(source, count)
        path = export_model(model, fmt, output, fixed, calibration_inputs(model, frames))
    exported = open_exported(path, runtime, device)
    rows = parity(model, exported, sample_input(model.cfg, fixed))
    click.echo(str(path))
    if not quiet:
        size = "dynamic size" if fixed is None else f"fixed size {fixed[1]}x{fixed[0]}"
        precision = "" if frames is None else f"int8 (calibrated on {len(frames)} frames of {source}), "
        click.echo(f"{fmt}, {precision}{size}, {len(model.cfg.class_names)} classes; parity vs eager fp32 "
                   f"(max |diff| <= 1e-3 (1 + max |eager|)):")
        if model.cfg.task == "image":
            click.echo(_image_model_line(model.cfg))
        outside = "int8" if frames is not None else "FAIL"
        for r in rows:
            click.echo(f"  {r.name:<14} {r.max_abs:10.3g}  tol {r.tolerance:8.3g}  {'ok' if r.ok else outside}")
    if frames is not None and not quiet:
        _print_agreement(*detection_agreement(Segmenter(model), Segmenter(exported), frames))
    return rows


def _print_agreement(share: float, iou: float, count: int) -> None:
    """The int8 file's detections against eager fp32's, on the calibration frames; a warning when low."""
    if count == 0:
        click.echo("int8 against eager fp32: fp32 detects nothing on those frames, so nothing was compared; "
                   "calibrate on footage with objects (--calibrate)")
        return
    click.echo(f"int8 against eager fp32 on those frames: {share:.1%} of {count} detections found again "
               f"(same class, mask IoU >= 0.5, one to one), mean mask IoU {iou:.3f}")
    if share < 0.5:
        click.echo("warning: int8 loses most of fp32's detections here; calibrate on more frames like yours, or "
                   "keep fp32", err=True)


def _image_model_line(cfg) -> str:
    """What the export of an image model holds beside the network (category ids, the re-scoring)."""
    from sipvis.model.families import family_name

    rescoring = "; its mask re-scoring runs in torch, weights in the file's metadata" if cfg.mask_rescoring else ""
    return f"  {family_name(cfg)}, category ids in the metadata{rescoring}"
