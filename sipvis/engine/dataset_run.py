"""Run the model over every video of a YouTube-VIS-layout split: one results file for the split, a
CodaLab zip, and (when the split has annotations) the official AP.

Layout (the official one; the common variants are found too):

    <root>/<split>/JPEGImages/<video>/00000.jpg ...
    <root>/annotations/<split>.json        (2019 style; also instances_<split>.json, <split>_sub.json)
    <root>/<split>/instances.json          (2021 style)

Each finished video is saved on its own under `<out>/videos/<video_id>.json`, so an interrupted run
resumes where it stopped, and under `torchrun` every rank takes its share of the videos; the first
rank gathers the files into `results.json` and `results.zip`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sipvis.errors import SipvisError

LAYOUT_HELP = ("expected <root>/<split>/JPEGImages/<video>/*.jpg and <root>/annotations/<split>.json "
               "(or <root>/<split>/instances.json), e.g. as `sipvis synth ROOT --split NAME` writes")


@dataclass
class SplitLayout:
    """Where a split's frames and annotation file are."""

    images: Path
    annotations: Path


def find_layout(root: Path, split: str) -> SplitLayout:
    """Locate a split's frame folder and annotation file, or explain the expected layout."""
    if not root.is_dir():
        raise SipvisError(f"dataset root not found: {root} ({LAYOUT_HELP})")
    image_dirs = [root / split / "JPEGImages", root / split / "JPEGImages" / "JPEGImages", root / "JPEGImages"]
    ann_files = [root / "annotations" / f"{split}.json", root / "annotations" / f"instances_{split}.json",
                 root / "annotations" / f"instances_{split}_sub.json", root / "annotations" / f"{split}_sub.json",
                 root / split / "instances.json", root / f"{split}.json"]
    images = next((d for d in image_dirs if d.is_dir()), None)
    annotations = next((f for f in ann_files if f.is_file()), None)
    if images is None:
        raise SipvisError(f"no frame folder for split {split!r} under {root}: {LAYOUT_HELP}")
    if annotations is None:
        raise SipvisError(f"no annotation file for split {split!r} under {root}: {LAYOUT_HELP}")
    return SplitLayout(images, annotations)


def load_videos(annotations: Path) -> tuple[dict, list[dict]]:
    """-> (the whole annotation JSON, its videos sorted by id)."""
    try:
        data = json.loads(annotations.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SipvisError(f"cannot read {annotations}: {exc}") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, list) or not all(isinstance(v, dict) and "file_names" in v and "id" in v
                                               for v in videos):
        raise SipvisError(f"{annotations} is not a YouTube-VIS annotation file (no 'videos' with 'file_names')")
    return data, sorted(videos, key=lambda v: v["id"])


def has_ground_truth(data: dict) -> bool:
    return bool(data.get("annotations"))


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def run_split(layout: SplitLayout, videos: list[dict], segmenter, out_dir: Path, *, rank: int = 0,
              world: int = 1, quiet: bool = False) -> list[Path]:
    """Track this rank's share of `videos` into `out_dir/videos/<id>.json`, skipping finished ones.

    Returns the per-video files of this rank (done before or now).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from sipvis.engine.pipeline import track_source
    from sipvis.io.images import ImageSequenceSource
    from sipvis.io.sinks import ResultsJson
    from sipvis.track.tracker import OriginalTracker

    per_video = out_dir / "videos"
    per_video.mkdir(parents=True, exist_ok=True)
    mine = videos[rank::world]
    todo = [v for v in mine if not (per_video / f"{v['id']}.json").exists()]
    console = Console(stderr=True, quiet=quiet)
    if len(todo) < len(mine):
        console.print(f"resuming: {len(mine) - len(todo)} of {len(mine)} videos already done", highlight=False)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=quiet or rank != 0) as progress:
        task = progress.add_task("videos", total=len(todo))
        frames_task = progress.add_task("frames", total=sum(len(v["file_names"]) for v in todo))
        for video in todo:
            files = [layout.images / name for name in video["file_names"]]
            missing = [f for f in files if not f.is_file()]
            if missing:
                raise SipvisError(f"video {video['id']}: frame not found: {missing[0]} ({LAYOUT_HELP})")
            source = ImageSequenceSource(files, str(files[0].parent), files[0].parent.name, threaded=False)
            # written to a temporary name first: a video counts as done only once its file is complete
            partial = per_video / f".{video['id']}.partial.json"
            tracker = OriginalTracker()
            track_source(source, segmenter, [ResultsJson(partial).video(video["id"], tracker)], tracker,
                         progress=lambda n: progress.advance(frames_task, n))
            if not partial.exists():  # a video with no frame processed still gets its (empty) file
                partial.write_text("[]")
            partial.replace(per_video / f"{video['id']}.json")
            progress.advance(task)
    return [per_video / f"{v['id']}.json" for v in mine]


def gather_results(out_dir: Path, videos: list[dict]) -> Path:
    """Merge the per-video files (in video id order) into `out_dir/results.json` and zip it for CodaLab."""
    from sipvis.evaluation import make_codalab_zip
    from sipvis.io.ytvis_results import write_results_json

    entries = []
    for video in videos:
        path = out_dir / "videos" / f"{video['id']}.json"
        if not path.exists():
            raise SipvisError(f"results of video {video['id']} are missing ({path}); run again to finish")
        entries.extend(json.loads(path.read_text()))
    results = out_dir / "results.json"
    write_results_json(results, entries)
    make_codalab_zip(results, out_dir / "results.zip")
    return results
