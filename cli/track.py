"""`sipvis track INPUT... -o OUT`: segment and track objects in videos, image folders, globs or streams."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import click

from sipvis.cli._model_options import build_segmenter, model_options
from sipvis.cli._options import split_commas

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".m4v", ".avi"}
FORMATS = ("video", "json", "png", "mots")
TRACKERS = ("original",)


@dataclass
class OutputPlan:
    """Where each input's outputs go. `json_all` is one results file shared by every input."""

    per_input: list[dict[str, Path]] = field(default_factory=list)
    json_all: Path | None = None


def plan_outputs(names: list[str], outputs: tuple[str, ...], formats: tuple[str, ...]) -> OutputPlan:
    """Decide the output paths. A file `-o` (by extension) is one output; any other `-o` is a folder that
    receives `<name>.mp4`, `<name>.json`, `<name>_png/`, `<name>.txt` for the formats asked (default:
    video and json). Several inputs share one .json file (video ids in input order)."""
    from sipvis.errors import SipvisError

    plan = OutputPlan(per_input=[{} for _ in names])
    for out in outputs:
        path = Path(out)
        suffix = path.suffix.lower()
        kind = "video" if suffix in VIDEO_SUFFIXES else {".json": "json", ".txt": "mots"}.get(suffix)
        if kind == "json" and len(names) > 1:
            plan.json_all = path
        elif kind is not None:
            if len(names) > 1:
                raise SipvisError(f"-o {out}: with {len(names)} inputs, give a folder (one output per input) "
                                  "or a .json file (all videos in one results file)")
            if formats and kind not in formats:
                raise SipvisError(f"-o {out} is a {kind} file but --format asks for {','.join(formats)}")
            plan.per_input[0][kind] = path
        elif suffix and not out.endswith(("/", "\\")) and not path.is_dir():
            raise SipvisError(f"-o {out}: unknown output type {suffix!r}; use .mp4/.mkv/.mov/.avi (video), "
                              ".json (YouTube-VIS results), .txt (MOTS), or a folder")
        else:
            unique = _unique_names(names)
            for slot, name in zip(plan.per_input, unique):
                for kind in formats or ("video", "json"):
                    slot[kind] = path / {"video": f"{name}.mp4", "json": f"{name}.json", "png": f"{name}_png",
                                         "mots": f"{name}.txt"}[kind]
    return plan


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        safe = re.sub(r"[^\w.-]+", "_", name) or "input"
        seen[safe] = seen.get(safe, 0) + 1
        unique.append(safe if seen[safe] == 1 else f"{safe}_{seen[safe]}")
    return unique


@click.command("track")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "outputs", multiple=True,
              help="Output file (.mp4/.mkv/.mov/.avi annotated video, .json YouTube-VIS results, .txt MOTS) "
                   "or folder. Repeat for several outputs.")
@click.option("--format", "formats", multiple=True,
              help=f"Outputs to write into an output folder: {', '.join(FORMATS)} (comma-separated; "
                   "default video,json).")
@model_options()
@click.option("--vid-stride", default=1, show_default=True, type=int, help="Process every N-th frame.")
@click.option("--start", type=float, default=None, help="Start time in seconds.")
@click.option("--end", type=float, default=None, help="End time in seconds.")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames per input.")
@click.option("--tracker", default="original", show_default=True, type=click.Choice(TRACKERS),
              help="Tracking preset; 'original' matches the authors' code exactly.")
@click.option("--trails", is_flag=True, help="Draw each track's recent path in the annotated video.")
@click.option("--fps", type=float, default=None, help="Frame rate of image-sequence inputs (default 30).")
@click.option("--show", is_flag=True, help="Also show the annotated frames in a window (q or Esc stops).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def command(inputs, outputs, formats, weights, device, precision, batch, vid_stride, start, end, max_frames,
            class_filter, score_thr, max_dets, tracker, trails, fps, show, quiet) -> None:
    """Segment and track every object in INPUTS (video files, image folders, globs, URLs, folders of videos).

    \b
    Examples:
      sipvis track input.mp4 -o out.mp4
      sipvis track input.mp4 -o out.mp4 -o out.json
      sipvis track frames_dir/ -o results.json
      sipvis track clips/ -o results/ --format video,json,png
    """
    from sipvis.engine.pipeline import OutputFilter
    from sipvis.errors import SipvisError
    from sipvis.io.inputs import expand_inputs

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
    segmenter, keep_classes = build_segmenter(weights, device, precision, batch, score_thr, max_dets, class_filter,
                                              progress=not quiet)
    run_all(specs, outputs, formats, segmenter, OutputFilter(keep_classes),
            dict(vid_stride=vid_stride, start=start, end=end, max_frames=max_frames, fps=fps), trails, quiet, show)


def run_all(specs, outputs, formats, segmenter, output_filter, window: dict, trails: bool, quiet: bool,
            show: bool = False) -> None:
    """Open each input, plan its outputs, run the pipeline with a progress bar, print where results are."""
    from rich.console import Console

    from sipvis.engine.pipeline import track_source
    from sipvis.io.inputs import open_source
    from sipvis.io.sinks import AnnotatedVideoSink, ResultsJson, WindowSink
    from sipvis.track.tracker import OriginalTracker

    console = Console(stderr=True, quiet=quiet)
    sources = []
    try:
        for spec in specs:
            sources.append(open_source(spec, threaded=False, **window))
        plan = plan_outputs([s.name for s in sources], outputs, formats)
        shared_json = ResultsJson(plan.json_all) if plan.json_all else None
        for video_id, (source, paths) in enumerate(zip(sources, plan.per_input), start=1):
            tracker = OriginalTracker()
            sinks = []
            try:
                if shared_json is not None:
                    sinks.append(shared_json.video(video_id, tracker))
                if "json" in paths:
                    sinks.append(ResultsJson(paths["json"]).video(1, tracker))
                if "video" in paths:
                    sinks.append(AnnotatedVideoSink(paths["video"], source, segmenter.class_names, trails))
                sinks.extend(_format_sinks(paths, source, segmenter.class_names))
                if show:
                    from sipvis.cli._window import Window

                    sinks.append(WindowSink(lambda: Window(f"sipvis track: {source.name}"), segmenter.class_names,
                                            trails))
            except BaseException:
                for sink in sinks:
                    sink.close()
                raise
            stats = _run_one(source, segmenter, sinks, tracker, output_filter, console, quiet)
            console.print(f"{source.name}: {stats.frames} frames at {stats.fps:.1f} fps -> "
                          + ", ".join(str(p) for p in paths.values()), highlight=False)
        if shared_json is not None:
            console.print(f"results: {plan.json_all}", highlight=False)
    finally:
        for source in sources:
            source.close()


def _format_sinks(paths: dict, source, class_names) -> list:
    """Per-frame PNG and MOTS outputs (sipvis.io.formats)."""
    if "png" not in paths and "mots" not in paths:
        return []
    from sipvis.io import formats as fmt

    sinks = []
    if "png" in paths:
        sinks.append(_FrameSinkAdapter(fmt.InstancePngSink(paths["png"])))
    if "mots" in paths:
        sinks.append(_FrameSinkAdapter(fmt.MotsTxtSink(paths["mots"])))
    return sinks


class _FrameSinkAdapter:
    """Adapts a sink that only needs the instances (`write(instances)`) to the pipeline's interface."""

    def __init__(self, sink) -> None:
        self.sink = sink

    def write(self, frame, instances) -> None:
        self.sink.write(instances)

    def close(self) -> None:
        self.sink.close()


def _run_one(source, segmenter, sinks, tracker, output_filter, console, quiet):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from sipvis.engine.pipeline import track_source

    total = source.expected_frames
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               _FpsColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        task = progress.add_task(source.name, total=total)
        return track_source(source, segmenter, sinks, tracker, output_filter,
                            progress=lambda n: progress.advance(task, n))


def _fps_column_class():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class FpsColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed or 0:.1f} fps")

    return FpsColumn


def _FpsColumn():  # noqa: N802 - reads like the column class it builds
    return _fps_column_class()()
