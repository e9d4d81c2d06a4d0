"""`sipvis track INPUT... -o OUT`: segment and track objects in videos, image folders, globs or streams."""

from __future__ import annotations

import click

from sipvis.cli._model_options import build_segmenter, model_options, resolve_tracker, tracker_option
from sipvis.cli._options import COUNT, RATE, SECONDS, split_commas

FORMATS = ("video", "json", "png", "mots")


@click.command("track")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "outputs", multiple=True,
              help="Output file (.mp4/.mkv/.mov/.avi annotated video, .json YouTube-VIS results, .txt MOTS) "
                   "or folder. Repeat for several outputs.")
@click.option("--format", "formats", multiple=True,
              help=f"Outputs to write into an output folder: {', '.join(FORMATS)} (comma-separated; "
                   "default video,json).")
@model_options()
@click.option("--vid-stride", default=1, show_default=True, type=COUNT, help="Process every N-th frame.")
@click.option("--start", type=SECONDS, default=None, help="Start time in seconds.")
@click.option("--end", type=SECONDS, default=None, help="End time in seconds.")
@click.option("--max-frames", type=COUNT, default=None, help="Stop after this many frames per input.")
@tracker_option()
@click.option("--mots-style", type=click.Choice(["kitti", "mots-challenge"]), default="kitti", show_default=True,
              help="Frame numbers of .txt MOTS outputs: 0-based (KITTI-MOTS) or 1-based (MOTSChallenge).")
@click.option("--trails", is_flag=True, help="Draw each track's recent path in the annotated video.")
@click.option("--fps", type=RATE, default=None, help="Frame rate of image-sequence inputs (default 30).")
@click.option("--show", is_flag=True, help="Also show the annotated frames in a window (q or Esc stops).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def command(inputs, outputs, formats, weights, device, precision, batch, vid_stride, start, end, max_frames,
            class_filter, score_thr, max_dets, tracker, mots_style, trails, fps, show, quiet) -> None:
    """Segment and track every object in INPUTS (video files, image folders, globs, URLs, folders of videos).

    \b
    Examples:
      sipvis track input.mp4 -o out.mp4
      sipvis track input.mp4 -o out.mp4 -o out.json
      sipvis track frames_dir/ -o results.json
      sipvis track clips/ -o results/ --format video,json,png
    """
    from sipvis.engine.distributed import DistInfo, rank_device
    from sipvis.engine.pipeline import OutputFilter
    from sipvis.errors import SipvisError
    from sipvis.io.inputs import expand_inputs
    from sipvis.io.source import FrameRange

    formats = split_commas(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise SipvisError(f"unknown --format {', '.join(unknown)}: choose from {', '.join(FORMATS)}")
    if show:
        from sipvis.cli._window import check_display

        check_display(hint="drop --show to run without a window")
    if not outputs and not show:
        raise SipvisError("no output: give -o out.mp4, -o out.json, -o out.txt or -o a_folder/ (or --show)")
    specs = expand_inputs(list(inputs))
    info = DistInfo.from_env()  # under torchrun every rank tracks its share of the inputs
    segmenter, keep_classes = build_segmenter(weights, rank_device(device, info), precision, batch, score_thr,
                                              max_dets, class_filter, progress=not quiet and info.main)
    tracker = resolve_tracker(tracker, segmenter)
    frame_range = FrameRange(start, end, vid_stride, max_frames)
    run_all(specs, outputs, formats, segmenter, OutputFilter(keep_classes), frame_range, fps, trails, quiet, show,
            tracker=tracker, mots_style=mots_style, dist=info)


def run_all(specs, outputs, formats, segmenter, output_filter, frame_range, fps: float | None, trails: bool,
            quiet: bool, show: bool = False, tracker: str = "original", mots_style: str = "kitti", dist=None) -> None:
    """Track every input (`sipvis.engine.track_run.track_inputs`) with a progress bar per input, and print
    where the results are. `dist`: this rank under torchrun (bars and the shared results line on the first)."""
    from rich.console import Console

    from sipvis.cli._progress import frames_bar
    from sipvis.engine.track_run import track_inputs

    console = Console(stderr=True, quiet=quiet)
    open_window = None
    if show:
        from sipvis.cli._window import Window

        def open_window(source):
            return Window(f"sipvis track: {source.name}")

    def done(source, stats, paths) -> None:
        console.print(f"{source.name}: {stats.frames} frames at {stats.fps:.1f} fps -> "
                      + ", ".join(str(p) for kind in paths.values() for p in kind), highlight=False)

    main = dist is None or dist.main
    plan = track_inputs(specs, outputs, formats, segmenter, output_filter, frame_range, fps=fps, trails=trails,
                        open_window=open_window, progress=frames_bar(console, quiet or not main), on_done=done,
                        tracker=tracker, mots_style=mots_style, dist=dist)
    if plan.json_all and main:
        console.print(f"results: {', '.join(str(p) for p in plan.json_all)}", highlight=False)
