"""The model options shared by the commands that run a model (`track`, `live`, `eval`, `bench`, `demo`),
`--tracker`, and the one function that turns them into a ready `Segmenter` plus the class filter users
asked for.

Usage in a command::

    @click.command("x")
    @model_options()                 # --weights --device --precision --batch --classes --score-thr --max-dets
    def command(weights, device, precision, batch, class_filter, score_thr, max_dets, ...):
        segmenter, keep = build_segmenter(weights, device, precision, batch, score_thr, max_dets,
                                          class_filter, progress=True)
"""

from __future__ import annotations

from collections.abc import Callable

import click

from sipvis.cli._options import COUNT, COUNT_OR_AUTO, SCORE, split_commas


def model_options(batch: bool = True, max_dets: bool = True) -> Callable:
    """Click decorator adding the model options. `batch`/`max_dets` False leave those two out (the
    function then receives neither parameter)."""
    options = [
        click.option("--weights", default=None,
                     help="Registry name, checkpoint path or URL (default: the registry's default)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--precision", default="auto", show_default=True,
                     help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16."),
    ]
    if batch:
        options.append(click.option("--batch", default=0, type=COUNT_OR_AUTO,
                                    help="Frames per forward pass (default: 8 on CUDA, 1 on CPU)."))
    options += [
        click.option("--classes", "class_filter", multiple=True,
                     help="Only output these classes (names, comma-separated)."),
        click.option("--score-thr", type=SCORE, default=None,
                     help="Minimum detection score (default: the model's, 0.03)."),
    ]
    if max_dets:
        options.append(click.option("--max-dets", type=COUNT, default=None,
                                    help="Most detections per frame (default: the model's, 10)."))
    options.append(runtime_option())
    options.append(threads_option())

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):  # click lists options in decoration order, innermost last
            fn = option(fn)
        return fn

    return decorate


RUNTIME_KEY = "sipvis.runtime"
RUNTIME_HELP = ("Runtime of the network: torch, onnxruntime, openvino (CPU), tensorrt (CUDA), or auto (the "
                "fastest installed: onnxruntime on CPU). Default: the weights file's own (torch for checkpoints; "
                ".onnx/.xml/.ts/.engine files their runtime). A checkpoint is exported for another runtime once, "
                "into the weights cache.")


def _remember_runtime(ctx: click.Context, param, value: str | None) -> None:
    """`--runtime` reaches `build_segmenter` through the context: the commands' signatures stay as they are."""
    ctx.meta[RUNTIME_KEY] = value


def runtime_option() -> Callable:
    """`--runtime torch|onnxruntime|openvino|tensorrt|auto` (see `sipvis.runtime.choose`)."""
    from sipvis.runtime.choose import RUNTIMES

    return click.option("--runtime", type=click.Choice(RUNTIMES), default=None, expose_value=False,
                        callback=_remember_runtime, help=RUNTIME_HELP)


def build_segmenter(weights: str | None, device: str, precision: str, batch: int = 0,
                    score_thr: float | None = None, max_dets: int | None = None,
                    class_filter: tuple[str, ...] = (), progress: bool = True):
    """Load `--weights`, apply the post-processing overrides and build the `Segmenter`.

    Returns:
        (segmenter, keep_classes): `keep_classes` is the set of label indices `--classes` asked for, or
        None for all; pass it to `sipvis.engine.pipeline.OutputFilter`.

    Raises:
        SipvisError: unknown device/precision, unreadable weights, a class the model does not know.
    """
    from sipvis.cli._progress import DownloadBars
    from sipvis.engine.inference import Segmenter
    from sipvis.engine.threads import fit_threads_to_model, set_inference_threads
    from sipvis.weights import default_weights_name

    set_inference_threads(requested_threads())
    overrides = {k: v for k, v in (("score_thr", score_thr), ("max_per_img", max_dets)) if v is not None}
    ctx = click.get_current_context(silent=True)
    runtime = ctx.meta.get(RUNTIME_KEY) if ctx else None
    with DownloadBars(enabled=progress) as bars:  # drawn only if the weights must be downloaded
        segmenter = Segmenter.from_checkpoint(weights or default_weights_name(), device, precision, batch,
                                              progress=bars, overrides=overrides, runtime=runtime,
                                              notice=lambda line: click.echo(line, err=True))
    fit_threads_to_model(segmenter.model, segmenter.device, requested_threads())
    return segmenter, class_indices(class_filter, segmenter.class_names)


def class_indices(class_filter: tuple[str, ...] | list[str], class_names: tuple[str, ...]) -> set[int] | None:
    """`--classes` values -> label indices, or None when no filter was given."""
    from sipvis.errors import SipvisError

    if not class_filter:
        return None
    names = split_commas(class_filter)
    missing = [n for n in names if n not in class_names]
    if missing:
        raise SipvisError(f"unknown class {', '.join(missing)}; this model knows: {', '.join(class_names)}")
    return {class_names.index(n) for n in names}


THREADS_HELP = ("Intra-op threads of the network on CPU (default 0: one per available core, sleeping when idle; "
                "one for a small eager model; OMP_NUM_THREADS and OMP_WAIT_POLICY are respected when set).")


def _store_threads(ctx, param, value: int | None) -> None:
    """`--threads` is kept in the click context (`requested_threads`), so the commands need no parameter
    (a negative value is refused by its type while parsing)."""
    ctx.meta["sipvis.threads"] = value


def threads_option():
    """`--threads N` (0 = automatic, `sipvis.engine.threads.choose_threads`), read by `build_segmenter`."""
    return click.option("--threads", type=COUNT_OR_AUTO, default=0, show_default=True, expose_value=False,
                        callback=_store_threads, help=THREADS_HELP)


def requested_threads() -> int | None:
    """The `--threads` value of the running command (None outside click or without the option)."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get("sipvis.threads")


TRACKER_HELP = ("Tracker: 'original' is the paper's greedy matching, outputs identical to the authors' code; "
                "'robust' makes one global assignment per frame (no detection dropped), keeps lost tracks "
                "30 frames to re-identify them, and names each track by a score-weighted class vote; it also "
                "tracks the image models (COCO), which have no tracking branch.")


def _check_tracker(ctx, param, value: str) -> str:
    """An unknown `--tracker` is one clear line (a `SipvisError` naming the choices), before any work."""
    from sipvis.track import new_tracker

    new_tracker(value)
    return value


def tracker_option():
    """`--tracker original|robust` (default robust), shared by track, live, eval, bench and demo; commands
    pass the value through `resolve_tracker` once the model is built."""
    return click.option("--tracker", default="robust", show_default=True, callback=_check_tracker,
                        metavar="original|robust", help=TRACKER_HELP)


def resolve_tracker(kind: str, segmenter) -> str:
    """The tracker a model runs with: `kind`, except that 'original' needs the model's tracking branch
    (SipMask-VIS): asked of an image model (COCO), which has none, it is a `SipvisError`."""
    from sipvis.errors import SipvisError

    if kind == "original" and not segmenter.cfg.has_tracking_branch:
        raise SipvisError("--tracker original needs a model with a tracking branch (SipMask-VIS); this image "
                          "model has none: use --tracker robust (the default)")
    return kind
