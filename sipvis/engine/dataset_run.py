"""The split run: segment and track every video of a YouTube-VIS-layout split, write one results file
with the split's own category ids (and a CodaLab zip), and score it when the split has annotations.

`sipvis eval --dataset` (`run_dataset`, under torchrun too) and training validation
(`evaluate_split`) both go through here, so they agree on frames, tracking and categories.

Layout: see `sipvis.data.ytvis.find_split`. Each finished video is saved on its own under
`<out>/videos/<video_id>.json` (the tracker's output: category = model label + 1), so an interrupted
run resumes where it stopped, and under `torchrun` every rank takes its share of the videos; the
first rank gathers the files into `results.json` (category ids of the split) and `results.zip`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sipvis.data.ytvis import LAYOUT_HELP, Categories, SplitFiles
from sipvis.engine.distributed import DistInfo, barrier
from sipvis.engine.stop import StopSignals, stop_signals
from sipvis.errors import SipvisError
from sipvis.io.files import load_json, load_json_object
from sipvis.io.files import write_json_atomic


@dataclass
class Split:
    """A split's annotation file, read once.

    Attributes:
        files: where its annotation file and frames are.
        data: the whole annotation JSON.
        videos: the videos to run, sorted by id (the first `subset` of them when one was asked for).
        categories: label index <-> the file's category ids.
        subset: the N of "the first N videos", None for all.
    """

    files: SplitFiles
    data: dict
    videos: list[dict]
    categories: Categories
    subset: int | None = None

    @classmethod
    def load(cls, files: SplitFiles, subset: int | None = None) -> "Split":
        """Read `files.ann_file`; `subset` keeps only the first N videos (by id)."""
        data = load_json_object(files.ann_file, "annotation")
        videos = data.get("videos")
        if not isinstance(videos, list) or not all(isinstance(v, dict) and "file_names" in v and "id" in v
                                                   for v in videos):
            raise SipvisError(f"{files.ann_file} is not a YouTube-VIS annotation file "
                              "(no 'videos' with 'file_names')")
        videos = sorted(videos, key=lambda v: v["id"])
        if subset is not None:
            videos = videos[:subset]
        return cls(files, data, videos, Categories.from_json(data.get("categories") or []), subset)

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.data.get("annotations"))

    def ground_truth(self) -> dict:
        """The annotation JSON restricted to the videos run (the whole file when they are all run)."""
        return self.data if self.subset is None else restricted(self.data, "videos", self.videos, "video_id")


def restricted(data: dict, key: str, kept: list[dict], ref: str) -> dict:
    """An annotation JSON with only the `kept` entries of `data[key]` (videos, images) and the annotations
    whose `ref` field ("video_id", "image_id") names one of them."""
    ids = {entry["id"] for entry in kept}
    return {**data, key: kept, "annotations": [a for a in data.get("annotations") or [] if a.get(ref) in ids]}


class SplitProgress(Protocol):
    """What a split run reports as it goes (a display lives in the CLI)."""

    def resumed(self, done: int, total: int) -> None: ...  # `done` of this rank's `total` videos were finished
    def start(self, videos: int, frames: int) -> None: ...  # what is left to do
    def frames(self, n: int) -> None: ...
    def video_done(self) -> None: ...


def run_split(split: Split, segmenter, out_dir: Path, *, rank: int = 0, world: int = 1,
              progress: SplitProgress | None = None, tracker: str = "original") -> list[Path]:
    """Track this rank's share of the split's videos into `out_dir/videos/<id>.json`, skipping finished ones,
    each with a fresh tracker of kind `tracker` ('original' or 'robust').

    Returns the per-video files of this rank (done before or now).
    """
    per_video = out_dir / "videos"
    per_video.mkdir(parents=True, exist_ok=True)
    mine = split.videos[rank::world]
    todo = [v for v in mine if not (per_video / f"{v['id']}.json").exists()]
    if progress is not None:
        if len(todo) < len(mine):
            progress.resumed(len(mine) - len(todo), len(mine))
        progress.start(len(todo), sum(len(v["file_names"]) for v in todo))
    # a stop signal ends the run after the frame in hand: finished videos stay done, the one interrupted
    # is written under its temporary name only and runs again on resume (sipvis.engine.stop)
    with stop_signals(polling=True) as stop:
        for video in todo:
            _track_video(split, video, segmenter, per_video, progress, tracker, stop)
            if progress is not None:
                progress.video_done()
            stop.check()
    return [per_video / f"{v['id']}.json" for v in mine]


def _track_video(split: Split, video: dict, segmenter, per_video: Path, progress: SplitProgress | None,
                 tracker: str = "original", stop: StopSignals | None = None) -> None:
    """One video's tracks into `per_video/<id>.json` (the file appears only once the video is complete)."""
    from sipvis.engine.pipeline import track_source
    from sipvis.io.images import ImageSequenceSource
    from sipvis.io.sinks import ResultsJson
    from sipvis.track import new_tracker

    files = [split.files.image_dir / name for name in video["file_names"]]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise SipvisError(f"video {video['id']}: frame not found: {missing[0]} ({LAYOUT_HELP})")
    source = ImageSequenceSource(files, str(files[0].parent), files[0].parent.name, threaded=False)
    # written under a temporary name first: an interrupted video must not count as done
    partial = per_video / f".{video['id']}.partial.json"
    done = per_video / f"{video['id']}.json"

    def advance(frames: int) -> None:  # called between two frames: where a stop is clean
        if progress is not None:
            progress.frames(frames)
        if stop is not None:
            stop.check()

    track_source(source, segmenter, [ResultsJson(partial).video(video["id"])], new_tracker(tracker),
                 progress=advance)
    if partial.exists():
        partial.replace(done)
    else:  # a video with no frame processed still gets its (empty) file
        write_json_atomic(done, [])


def collect_results(split: Split, out_dir: Path) -> list[dict]:
    """The per-video files (in video id order) as one results list with the split's category ids;
    tracks of a model label the split has no category for are left out."""
    entries = []
    for video in split.videos:
        path = out_dir / "videos" / f"{video['id']}.json"
        if not path.exists():
            raise SipvisError(f"results of video {video['id']} are missing ({path}); run again to finish")
        entries.extend(load_json(path, f"results of video {video['id']}"))
    return split.categories.results_to_split(entries)


def gather_results(split: Split, out_dir: Path) -> Path:
    """Merge the per-video files into `out_dir/results.json` and zip it for CodaLab."""
    from sipvis.evaluation import make_codalab_zip
    from sipvis.io.ytvis_results import write_results_json

    results = out_dir / "results.json"
    write_results_json(results, collect_results(split, out_dir))
    make_codalab_zip(results, out_dir / "results.zip")
    return results


def run_dataset(split: Split, segmenter, out_dir: Path, info: DistInfo | None = None,
                progress: SplitProgress | None = None, tracker: str = "original") -> Path | None:
    """`sipvis eval --dataset`: this rank's share of the split, then (first rank, once every rank is
    done) results.json + results.zip. Returns the results file on the first rank, None on the others.

    `info` defaults to torchrun's environment; pick the segmenter's device with
    `sipvis.engine.distributed.rank_device`.
    """
    info = info or DistInfo.from_env()
    run_split(split, segmenter, out_dir, rank=info.rank, world=info.world_size, progress=progress, tracker=tracker)
    if info.enabled:
        barrier()
        if not info.main:
            return None
    return gather_results(split, out_dir)


def ground_truth_file(split: Split, out_dir: Path) -> Path:
    """The annotation file to score a run against: the split's own, or for a subset
    `out_dir/gt_subset.json` with only its videos."""
    if split.subset is None:
        return split.files.ann_file
    path = out_dir / "gt_subset.json"
    write_json_atomic(path, split.ground_truth())
    return path


def evaluate_split(split: Split, segmenter, progress: SplitProgress | None = None) -> dict:
    """Training validation: track every video of `split` (in a temporary folder) and score the results
    against its annotations. Returns the evaluator's `as_dict()` (AP, AP50, ..., per_class)."""
    from sipvis.evaluation import evaluate

    with tempfile.TemporaryDirectory(prefix="sipvis-val-") as tmp:
        run_split(split, segmenter, Path(tmp), progress=progress)
        results = collect_results(split, Path(tmp))
    return evaluate(split.ground_truth(), results).as_dict()


# ------------------------------------------------------------------------------ COCO (image models)

COCO_LAYOUT_HELP = "expected DATA_ROOT/annotations/instances_SPLIT.json and DATA_ROOT/SPLIT/ (the official COCO layout)"
COCO_CHUNK = 250  # images per result file under <out>/images/: what an interrupted run redoes at most


@dataclass
class CocoSplit:
    """A COCO split (`sipvis eval --dataset coco SPLIT`), its annotation file read once.

    Attributes:
        ann_file, image_dir: `annotations/instances_<split>.json` and `<split>/` under the data root.
        data: the whole annotation JSON.
        images: the images to run, sorted by id (the first `subset` of them when one was asked for).
    """

    ann_file: Path
    image_dir: Path
    data: dict
    images: list[dict]
    subset: int | None = None

    @classmethod
    def find(cls, data_root: str | Path, split: str, subset: int | None = None) -> "CocoSplit":
        """Read `data_root/annotations/instances_<split>.json`; SipvisError (one line) if the layout is not there."""
        root = Path(data_root)
        ann_file, image_dir = root / "annotations" / f"instances_{split}.json", root / split
        if not ann_file.is_file() or not image_dir.is_dir():
            raise SipvisError(f"no COCO split {split!r} in {root}: {COCO_LAYOUT_HELP}")
        data = load_json_object(ann_file, "COCO annotation")
        images = data.get("images")
        if not isinstance(images, list) or not all(isinstance(im, dict) and "file_name" in im and "id" in im
                                                   for im in images):
            raise SipvisError(f"{ann_file} is not a COCO annotation file (no 'images' with 'file_name' and 'id')")
        images = sorted(images, key=lambda im: im["id"])[:subset]
        return cls(ann_file, image_dir, data, images, subset)

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.data.get("annotations"))

    def ground_truth(self) -> dict:
        """The annotation JSON restricted to the images run (the whole file when they are all run)."""
        return self.data if self.subset is None else restricted(self.data, "images", self.images, "image_id")


def run_coco_dataset(split: CocoSplit, segmenter, out_dir: Path, info: DistInfo | None = None,
                     progress: SplitProgress | None = None) -> Path | None:
    """`sipvis eval --dataset coco`: this rank's chunks of the split's images (`COCO_CHUNK` images per
    `<out>/images/<chunk>.json`, finished chunks skipped, every `world`-th chunk per rank), then (first rank,
    once every rank is done) `<out>/results.json` with every chunk in image id order. Returns that file
    on the first rank, None on the others. `progress`: chunks count as its "videos", images as "frames"."""
    from sipvis.engine.segment_run import InputItem, SegmentPlan, check_image_model, segment_inputs

    check_image_model(segmenter)
    info = info or DistInfo.from_env()
    folder = out_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [split.images[i:i + COCO_CHUNK] for i in range(0, len(split.images), COCO_CHUNK)]
    paths = [folder / f"{c:05d}.json" for c in range(len(chunks))]
    mine = list(range(info.rank, len(chunks), info.world_size))
    todo = [c for c in mine if not paths[c].exists()]
    missing = [p for im in split.images if not (p := split.image_dir / im["file_name"]).is_file()]
    if missing:
        raise SipvisError(f"image not found: {missing[0]} ({len(missing)} missing; {COCO_LAYOUT_HELP})")
    if progress is not None:
        if len(todo) < len(mine):
            progress.resumed(len(mine) - len(todo), len(mine))
        progress.start(len(todo), sum(len(chunks[c]) for c in todo))
    for c in todo:
        items = [InputItem(str(split.image_dir / im["file_name"]), True, Path(im["file_name"]).stem)
                 for im in chunks[c]]
        segment_inputs(items, segmenter, SegmentPlan(json_files=[paths[c]]),  # the file appears once complete
                       image_ids=[im["id"] for im in chunks[c]], progress=progress.frames if progress else None)
        if progress is not None:
            progress.video_done()
    if info.enabled:
        barrier()
        if not info.main:
            return None
    return gather_coco_results(paths, out_dir / "results.json")


def gather_coco_results(chunk_files: list[Path], results: Path) -> Path:
    """Concatenate the chunk files (in order) into `results`, written atomically."""
    from sipvis.io.coco_results import CocoResultsFile

    out = CocoResultsFile(results)
    try:
        for path in chunk_files:
            if not path.exists():
                raise SipvisError(f"results of {path.name} are missing; run again to finish")
            out.add(load_json(path, "COCO results"))
    except BaseException:
        out.discard()
        raise
    out.close()
    return results
