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

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):  # click lists options in decoration order, innermost last
            fn = option(fn)
        return fn

    return decorate


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
    from sipvis.weights import default_weights_name

    overrides = {k: v for k, v in (("score_thr", score_thr), ("max_per_img", max_dets)) if v is not None}
    with DownloadBars(enabled=progress) as bars:  # drawn only if the weights must be downloaded
        segmenter = Segmenter.from_checkpoint(weights or default_weights_name(), device, precision, batch,
                                              progress=bars, overrides=overrides)
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


TRACKER_HELP = ("Tracker: 'original' is the paper's greedy matching, outputs identical to the authors' code; "
                "'robust' makes one global assignment per frame (no detection dropped), keeps lost tracks "
                "30 frames to re-identify them, and names each track by a score-weighted class vote.")


def _check_tracker(ctx, param, value: str) -> str:
    """An unknown `--tracker` is one clear line (a `SipvisError` naming the choices), before any work."""
    from sipvis.track import new_tracker

    new_tracker(value)
    return value


def tracker_option():
    """`--tracker original|robust` (default robust), shared by track, live, eval, bench and demo."""
    return click.option("--tracker", default="robust", show_default=True, callback=_check_tracker,
                        metavar="original|robust", help=TRACKER_HELP)
