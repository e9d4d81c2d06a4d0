"""The `track` run, callable from Python: open each input, plan its outputs, run the streaming pipeline
(`pipeline.track_source`) into its sinks, one input after the other.

Example::

    from sipvis.engine.track_run import track_inputs
    from sipvis.io.inputs import expand_inputs

    plan = track_inputs(expand_inputs(["clips/"]), ["results/"], ("video", "json"), segmenter)

The caller shows progress and prints: `progress(source)` returns a context manager around one input's
run that yields a callable `advance(frames)`; `on_done(source, stats, paths)` follows each input (`paths`:
kind -> that input's output paths).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from sipvis.engine.distributed import DistInfo, barrier
from sipvis.engine.inference import Segmenter
from sipvis.engine.pipeline import OutputFilter, RunStats, track_source
from sipvis.errors import SipvisError
from sipvis.model.config import SipMaskConfig
from sipvis.io.files import load_json
from sipvis.io.formats import MOTS_STYLES, InstancePngSink, MotsTxtSink
from sipvis.io.inputs import open_source
from sipvis.io.sinks import AnnotatedVideoSink, ResultsJson, Sink, WindowSink, abort_all
from sipvis.io.source import FrameRange, FrameSource
from sipvis.io.video_writer import CONTAINERS
from sipvis.io.ytvis_results import write_results_json
from sipvis.track import new_tracker

# what a file `-o` holds, by extension (every video container the writer knows is a video)
FILE_KINDS = {**{suffix: "video" for suffix in CONTAINERS}, ".json": "json", ".txt": "mots"}
# the file (or folder) each format gets inside an output folder
FOLDER_NAMES = {"video": "{}.mp4", "json": "{}.json", "png": "{}_png", "mots": "{}.txt"}

Progress = Callable[[FrameSource], AbstractContextManager[Callable[[int], None] | None]]
OnDone = Callable[[FrameSource, RunStats, dict[str, Path]], None]
OpenWindow = Callable[[FrameSource], object]  # a window: show(image), poll() -> key, closed(), close()


@dataclass
class OutputPlan:
    """Where each input's outputs go: `per_input[i][kind]` lists input i's outputs of that kind, in the
    order given (`-o a.mp4 -o b.mp4`: two videos). `json_all` lists the results files shared by every input."""

    per_input: list[dict[str, list[Path]]] = field(default_factory=list)
    json_all: list[Path] = field(default_factory=list)

    def outputs(self) -> list[tuple[str, Path]]:
        """Every output as (kind, path), in order."""
        per_input = [(kind, p) for slot in self.per_input for kind, paths in slot.items() for p in paths]
        return per_input + [("json", p) for p in self.json_all]


def plan_outputs(names: list[str], outputs: Sequence[str], formats: Sequence[str],
                 inputs: Sequence[Path] = ()) -> OutputPlan:
    """Decide the output paths. A file `-o` (by extension) is one output; any other `-o` is a folder that
    receives `<name>.mp4`, `<name>.json`, `<name>_png/`, `<name>.txt` for the formats asked (default:
    video and json). Several inputs share one .json file (video ids in input order). Every `-o` is
    written, several of one kind included.

    Raises:
        SipvisError: an unknown output type, a file `-o` for several inputs (other than .json), a kind
            --format does not ask for, two outputs at one path, a file output at an existing folder, or an
            output that is one of the `inputs` (the local files read, `FrameSource.input_files`) or a
            link to one.
    """
    plan = OutputPlan(per_input=[{} for _ in names])
    for out in outputs:
        path = Path(out)
        suffix = path.suffix.lower()
        kind = FILE_KINDS.get(suffix)
        if kind == "json" and len(names) > 1:
            plan.json_all.append(path)
        elif kind is not None:
            if len(names) > 1:
                raise SipvisError(f"-o {out}: with {len(names)} inputs, give a folder (one output per input) "
                                  "or a .json file (all videos in one results file)")
            if formats and kind not in formats:
                raise SipvisError(f"-o {out} is a {kind} file but --format asks for {','.join(formats)}")
            plan.per_input[0].setdefault(kind, []).append(path)
        elif suffix and not out.endswith(("/", "\\")) and not path.is_dir():
            raise SipvisError(f"-o {out}: unknown output type {suffix!r}; use .mp4/.mkv/.mov/.avi (video), "
                              ".json (YouTube-VIS results), .txt (MOTS), or a folder")
        else:
            for slot, name in zip(plan.per_input, unique_names(names)):
                for kind in formats or ("video", "json"):
                    slot.setdefault(kind, []).append(path / FOLDER_NAMES[kind].format(name))
    check_outputs(plan.outputs(), inputs)
    return plan


def check_outputs(outputs: Sequence[tuple[str, Path]], inputs: Sequence[Path]) -> None:
    """Refuse outputs that would destroy data or each other: an output file that is an input file (the same
    path, a symbolic or a hard link: the same file on disk), a PNG folder that holds input files, two
    outputs at one path, and a file output where a folder is. `outputs`: (kind, path) as in `OutputPlan`.

    Raises:
        SipvisError: one line naming the output (and the input it would overwrite).
    """
    files = {_file_id(f): f for f in inputs}
    folders = {_file_id(f.parent): f for f in inputs}
    seen: set[Path] = set()
    for kind, path in outputs:
        ident = _file_id(path)
        if ident is not None and ident in (folders if kind == "png" else files):
            if kind == "png":
                raise SipvisError(f"output folder {path} holds the input {folders[ident]}; choose another output path")
            raise SipvisError(f"output {path} is the input {files[ident]}; choose another output path")
        if kind != "png" and path.is_dir():
            raise SipvisError(f"cannot write {path}: it is a folder")
        key = path.resolve()
        if key in seen:
            raise SipvisError(f"output {path} is given twice; give each output once")
        seen.add(key)


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing path (what links to one file share), else None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def unique_names(names: list[str]) -> list[str]:
    """File-safe names, made unique by `_2`, `_3`... in input order."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        safe = re.sub(r"[^\w.-]+", "_", name) or "input"
        seen[safe] = seen.get(safe, 0) + 1
        unique.append(safe if seen[safe] == 1 else f"{safe}_{seen[safe]}")
    return unique


def track_inputs(specs: Sequence, outputs: Sequence[str], formats: Sequence[str], segmenter: Segmenter,
                 output_filter: OutputFilter | None = None, frame_range: FrameRange = FrameRange(), *,
                 fps: float | None = None, trails: bool = False, open_window: OpenWindow | None = None,
                 progress: Progress | None = None, on_done: OnDone | None = None,
                 tracker: str = "original", mots_style: str = "kitti",
                 dist: DistInfo | None = None) -> OutputPlan:
    """Track every input of `specs` (from `expand_inputs`) into the outputs planned from `outputs` and
    `formats` (see `plan_outputs`); returns the plan.

    Args:
        frame_range: which frames of each input (`--start/--end/--vid-stride/--max-frames`).
        fps: frame rate of image-sequence inputs.
        trails: draw each track's recent path in annotated videos.
        open_window: `open_window(source)` builds a window to show the input's annotated frames in (q stops).
        progress, on_done: see the module docstring.
        tracker: 'original' or 'robust' (`sipvis.track.new_tracker`); each input gets a fresh one.
        mots_style: frame numbering of MOTS text outputs: 'kitti' (0-based) or 'mots-challenge' (1-based).
        dist: this process's place under torchrun (`DistInfo.from_env()`; default alone): see `shard_of`.
    """
    new_tracker(tracker)  # an unknown name fails before any input is opened
    progress = progress or (lambda source: contextlib.nullcontext())
    sources: list[FrameSource] = []
    try:
        for spec in specs:
            sources.append(open_source(spec, frame_range.stride, frame_range.start, frame_range.end,
                                       frame_range.max_frames, fps=fps, threaded=False))
        plan = plan_outputs([s.name for s in sources], outputs, formats,
                            [f for s in sources for f in s.input_files()])
        dist = dist or DistInfo()
        shared_json = [ResultsJson(rank_part(path, dist), segmenter.cfg.category_ids) for path in plan.json_all]
        if dist.enabled:
            for target in shared_json:
                target.path.unlink(missing_ok=True)  # a part left by an interrupted run
        for video_id, (source, paths) in enumerate(zip(sources, plan.per_input), start=1):
            if not shard_of(video_id - 1, dist):
                continue
            sinks = _open_sinks(source, paths, segmenter.cfg, trails, open_window,
                                [target.video(video_id) for target in shared_json], MOTS_STYLES[mots_style])
            with progress(source) as advance:
                stats = track_source(source, segmenter, sinks, new_tracker(tracker), output_filter, progress=advance)
            if on_done is not None:
                on_done(source, stats, paths)
        if dist.enabled:
            for path in plan.json_all:
                merge_rank_parts(path, dist)
        return plan
    finally:
        for source in sources:
            source.close()


def shard_of(position: int, dist: DistInfo) -> bool:
    """Whether the input at `position` (0-based, input order) is this rank's: under `torchrun --nproc_per_node
    N`, rank r tracks inputs r, r + N, r + 2N... (as `eval --dataset` shares videos). Each writes its inputs'
    own outputs; a results JSON shared by every input is merged by the first rank (`merge_rank_parts`), so
    the outputs are those of one process."""
    return position % dist.world_size == dist.rank


def rank_part(path: Path, dist: DistInfo) -> Path:
    """Where this rank collects its videos' entries of the shared results JSON `path` (`path` when alone)."""
    return path if not dist.enabled else path.with_name(f".{path.name}.rank{dist.rank}")


def merge_rank_parts(path: Path, dist: DistInfo) -> None:
    """Once every rank is done, the first one writes `path` from the ranks' parts, video ids in input order
    (each video's entries in their order), and removes the parts."""
    barrier()
    if not dist.main:
        return
    parts = [rank_part(path, DistInfo(r, dist.world_size)) for r in range(dist.world_size)]
    entries = [e for part in parts if part.exists() for e in load_json(part, "results part")]
    write_results_json(path, sorted(entries, key=lambda e: e["video_id"]))  # a stable sort
    for part in parts:
        part.unlink(missing_ok=True)


def _open_sinks(source: FrameSource, paths: dict[str, list[Path]], cfg: SipMaskConfig, trails: bool,
                open_window: OpenWindow | None, shared: list[Sink], mots_first_frame: int = 0) -> list[Sink]:
    """The sinks of one input, in writing order. If one fails to open, those opened are aborted (nothing is
    written over an existing file) and the error is raised. `cfg` gives the class names and category ids."""
    class_names = cfg.class_names
    openers: list[Callable[[], Sink]] = [lambda sink=sink: sink for sink in shared]
    for path in paths.get("json", []):
        openers.append(lambda path=path: ResultsJson(path, cfg.category_ids).video(1))
    for path in paths.get("video", []):
        openers.append(lambda path=path: AnnotatedVideoSink(path, source, class_names, trails))
    for path in paths.get("png", []):
        openers.append(lambda path=path: InstancePngSink(path))
    for path in paths.get("mots", []):
        openers.append(lambda path=path: MotsTxtSink(path, mots_first_frame))
    if open_window is not None:
        openers.append(lambda: WindowSink(lambda: open_window(source), class_names, trails))
    sinks: list[Sink] = []
    try:
        for open_sink in openers:
            sinks.append(open_sink())
    except BaseException as exc:
        abort_all(sinks, exc)
        raise
    return sinks
