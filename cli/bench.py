"""`sipvis bench [INPUT]`: throughput of each pipeline stage, and end-to-end fps, as a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sipvis.cli._model_options import resolve_tracker, runtime_option, threads_option, tracker_option
from sipvis.cli._options import COUNT_OR_AUTO, NON_NEGATIVE, Size

RANDOM_NOTE = "random weights: throughput only"


def build_bench_segmenter(weights: str | None, device: str, precision: str, batch: int, quiet: bool):
    """(segmenter, weights label, random?) for the options. `--weights` (or the registry's default when it
    is cached) goes through the same builder as `track`; without either, a randomly initialised model of
    the default architecture is measured: speed does not depend on the weight values, and a benchmark
    should not start a large download."""
    from sipvis.cli._model_options import build_segmenter, requested_threads
    from sipvis.engine.bench import random_model
    from sipvis.engine.threads import set_inference_threads
    from sipvis.engine.inference import Segmenter, resolve_device, resolve_precision
    from sipvis.weights import default_weights_name, find_entry

    if weights is None:
        name = default_weights_name()
        entry = find_entry(name)
        if entry is not None and not entry.is_local and not entry.local_path().exists():
            set_inference_threads(requested_threads())  # as build_segmenter does
            dev = resolve_device(device)
            segmenter = Segmenter(random_model(), dev, resolve_precision(precision, dev), batch)
            return segmenter, f"{name} (not cached; {RANDOM_NOTE})", True
        weights = name
    segmenter, _ = build_segmenter(weights, device, precision, batch, progress=not quiet)
    return segmenter, str(weights), False


@click.command("bench")
@click.argument("input_spec", metavar="[INPUT]", required=False)
@click.option("--weights", default=None,
              help="Registry name, checkpoint path or URL. Default: the registry's default if cached, "
                   "else random weights of the same architecture (throughput only).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", default="auto", show_default=True, help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")
@click.option("--batch", default=0, type=COUNT_OR_AUTO, help="Frames per forward pass (default: 8 on CUDA, 1 on CPU).")
@click.option("--frames", default=0, type=COUNT_OR_AUTO, help="Frames to measure (default: 256 on CUDA, 4 on CPU).")
@click.option("--size", default=None, type=Size(64, 4096, even=True),
              help="Size of the generated clip when no INPUT is given (default 640x360).")
@click.option("--warmup", default=None, type=NON_NEGATIVE, help="Untimed passes over the first batch (default: 3 on CUDA, 1 on CPU).")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Also write the figures to this JSON file.")
@tracker_option()
@threads_option()
@runtime_option()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; with --json, no table either.")
def command(input_spec, weights, device, precision, batch, frames, size, warmup, json_path, tracker, quiet) -> None:
    """Measure the throughput of each pipeline stage (decode, pre-process, network, post-process,
    tracking, render, encode) and of the whole `track` pipeline, to JSON and to JSON + mp4.

    Without INPUT a synthetic clip (moving textured shapes) of --size is generated.

    \b
    Examples:
      sipvis bench                                  # generated 640x360 clip, default device
      sipvis bench --device cuda --precision fp16 --batch 8 --frames 512
      sipvis bench my_video.mp4 --frames 100 --json bench.json
    """
    from sipvis.errors import SipvisError

    # options a user can get wrong are checked before the heavy imports (torch, av)
    if input_spec is not None and size is not None:
        raise SipvisError("--size sets the size of the generated clip; it cannot be combined with INPUT")
    dims = size or (640, 360)
    json_out = Path(json_path) if json_path else None
    if json_out is not None and not json_out.parent.exists():
        raise SipvisError(f"cannot write {json_out}: folder {json_out.parent} does not exist")

    from rich.console import Console

    from sipvis.engine.bench import END_TO_END, STAGES, environment
    from sipvis.engine.inference import precision_name

    segmenter, weights_label, random_weights = build_bench_segmenter(weights, device, precision, batch, quiet)
    tracker = resolve_tracker(tracker, segmenter)
    dev, dtype, model = segmenter.device, segmenter.dtype, segmenter.model
    frames = frames or (256 if dev.type == "cuda" else 4)  # R50 on 2 CPU cores: ~4 s a frame
    err = Console(stderr=True, quiet=quiet)
    if random_weights:
        err.print(f"[yellow]{RANDOM_NOTE}[/]: the default weights are not cached "
                  "(`sipvis weights download` fetches them)", highlight=False)
    result = _run_with_progress(segmenter, input_spec, frames, dims, warmup, err, quiet, tracker)

    result.info = {
        "input": input_spec or f"generated {dims[0]}x{dims[1]} synthetic clip",
        "device": str(dev), **environment(dev),
        # an int8 export says so in its metadata (the segmenter's dtype is the float32 it is fed)
        "precision": getattr(getattr(model, "info", None), "precision", None) or precision_name(dtype),
        "runtime": getattr(model, "runtime", "torch"),
        "batch": segmenter.batch_size, "tracker": tracker,
        "weights": weights_label, "random_weights": random_weights,
        "model": f"R{model.cfg.depth} {model.cfg.style}, input up to {model.cfg.max_size[0]}x{model.cfg.max_size[1]}",
    }
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise SipvisError(f"cannot write {json_out}: {exc.strerror or exc}") from None
    if not (quiet and json_out is not None):
        _print_table(result, STAGES, END_TO_END)


def _run_with_progress(segmenter, spec, frames, dims, warmup, console, quiet, tracker: str = "original"):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sipvis.engine.bench import END_TO_END, run_bench

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet, transient=True) as progress:
        tasks = {phase: progress.add_task(label, total=frames) for phase, label in
                 (("stages", "stages, one at a time"), (END_TO_END[0], END_TO_END[0]),
                  (END_TO_END[1], END_TO_END[1]))}
        return run_bench(segmenter, spec, frames, dims, warmup,
                         progress=lambda phase, n: progress.advance(tasks[phase], n), tracker=tracker)


def _print_table(result, stages, end_to_end) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    info = result.info
    title = (f"{info['input']} ({result.width}x{result.height}, {result.frames} frames) on {info['device_name']} "
             f"[{info['device']}], {info['precision']}, batch {info['batch']}")
    table = Table(title=escape(title), title_justify="left")
    for name in ("stage", "frames", "seconds", "fps", "ms/frame"):
        table.add_column(name, justify="left" if name == "stage" else "right")
    for i, timing in enumerate(result.stages + result.end_to_end):
        table.add_row(timing.name, str(timing.frames), f"{timing.seconds:.3f}", f"{timing.fps:.1f}",
                      f"{timing.ms_per_frame:.2f}", end_section=i == len(result.stages) - 1)
    console = Console()
    console.print(table)
    console.print(f"weights: {info['weights']}; model {info['model']}; {info['runtime']} {info['precision']}; "
                  f"tracker {info['tracker']}; "
                  f"{result.detections_per_frame:.1f} detections/frame", highlight=False)
    share = result.network_share()
    if share is not None:
        console.print(f"end to end to JSON runs at {100 * share:.0f}% of the network stage's rate", highlight=False)
