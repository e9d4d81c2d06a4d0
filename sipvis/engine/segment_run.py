"""The `segment` run, callable from Python: an image model over images, folders, globs and videos (frame
by frame, no tracking), written as COCO results JSON, annotated images and instance PNGs.

Example::

    from sipvis.engine.segment_run import plan_outputs, segment_inputs, list_inputs

    items = list_inputs(["photos/", "clip.mp4"])
    summary = segment_inputs(items, segmenter, plan_outputs(["out/"]))

Every image gets an `image_id`: 1..N in input order (a video's frames count one each), or the id a COCO
annotation file gives its file name (`image_ids_from_gt`). Outputs: `-o results.json` (the COCO mask
results of `sipvis.io.coco_results`, which carry the boxes too), `-o DIR/` (`DIR/results.json`,
`DIR/<name>.jpg` annotated as `track` draws, and with `png` `DIR/instances/<name>.png` instance-id maps:
pixel value k = the k-th detection of the image in the model's order, the `#k` of its caption;
0 = background).

Failures leave existing outputs as they were: the JSON is published only when the run finishes (or is
interrupted with Ctrl-C, which publishes what was processed, as `track` does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from sipvis.engine.track_run import check_outputs, unique_names
from sipvis.errors import SipvisError
from sipvis.io.coco_results import CocoResultsFile, category_id_table, coco_results_entries
from sipvis.io.files import load_json_object, write_bytes_atomic
from sipvis.io.formats import InstancePngSink
from sipvis.io.images import image_files, is_image_file, read_image
from sipvis.io.inputs import GLOB_CHARS, _glob, expand_inputs, open_source
from sipvis.io.render import Renderer
from sipvis.results import FrameInstances

# the image model `segment` and `eval --dataset coco` use when no --weights is given: the real-time R50
DEFAULT_IMAGE_WEIGHTS = "sipmask-r50-coco-544"


@dataclass
class InputItem:
    """One input of a segment run: an image file, or a video whose frames are images.

    Attributes:
        spec: the image's path, or the video (file, URL, camera) as `open_source` takes it.
        is_image: True for an image file, False for a video.
        name: output stem (unique over the run; a video's frames add `_<frame index>`).
    """

    spec: str | int
    is_image: bool
    name: str = ""


@dataclass
class SegmentPlan:
    """Where a segment run writes: COCO results files, and an output folder (annotated images, PNGs)."""

    json_files: list[Path] = field(default_factory=list)
    folder: Path | None = None
    png: bool = False


@dataclass
class SegmentSummary:
    """What a run did: images processed, detections written, the files written."""

    images: int = 0
    detections: int = 0
    files: list[Path] = field(default_factory=list)


def list_inputs(specs: Sequence[str | int]) -> list[InputItem]:
    """What the user typed -> one item per image file or video, in input order (folder contents in
    natural order). A folder of images or a glob of images becomes its images.

    Raises:
        SipvisError: a missing input, a pattern matching nothing, an image file OpenCV cannot read.
    """
    items: list[InputItem] = []
    for spec in expand_inputs(list(specs)):
        path = Path(str(spec)).expanduser()
        if isinstance(spec, str) and path.is_dir():
            items += [InputItem(str(p), True) for p in image_files(path)]
        elif isinstance(spec, str) and GLOB_CHARS & set(spec) and not path.exists():
            items += [InputItem(str(p), True) for p in _glob(spec)]
        else:
            items.append(InputItem(spec, isinstance(spec, str) and is_image_file(path)))
    for item in items:
        # a header check only (no decode): a text file named .jpg fails here, before any model work
        if item.is_image and not cv2.haveImageReader(str(item.spec)):
            raise SipvisError(f"{item.spec} is not an image OpenCV can read")
    names = unique_names([Path(str(i.spec)).stem if not isinstance(i.spec, int) else f"camera{i.spec}"
                          for i in items])
    for item, name in zip(items, names):
        item.name = name
    return items


def plan_outputs(outputs: Sequence[str], png: bool = False) -> SegmentPlan:
    """`-o` values -> a plan: `.json` files get the results; anything else is the output folder (one)."""
    plan = SegmentPlan(png=png)
    for out in outputs:
        path = Path(out)
        if path.suffix.lower() == ".json" and not path.is_dir():
            plan.json_files.append(path)
        elif path.suffix and not out.endswith(("/", "\\")) and not path.is_dir():
            raise SipvisError(f"-o {out}: unknown output type {path.suffix!r}; give results.json or a folder")
        elif plan.folder is not None:
            raise SipvisError(f"-o {out}: one output folder only (already {plan.folder})")
        else:
            plan.folder = path
    if plan.folder is not None:
        plan.json_files.append(plan.folder / "results.json")
    if png and plan.folder is None:
        raise SipvisError("--png writes into an output folder: give -o DIR/")
    if not plan.json_files:
        raise SipvisError("no output: give -o results.json or -o a_folder/")
    return plan


def image_ids_from_gt(gt_file: str | Path, items: Sequence[InputItem]) -> list[int]:
    """The image id of each item from a COCO annotation file's `images` (matched by file name, without
    folders). Raises SipvisError (one line) for a video input, or names that the file does not hold."""
    data = load_json_object(gt_file, "COCO annotation")
    images = data.get("images")
    if not isinstance(images, list) or not all(isinstance(im, dict) and "file_name" in im and "id" in im
                                               for im in images):
        raise SipvisError(f"{gt_file} is not a COCO annotation file (no 'images' with 'file_name' and 'id')")
    ids = {Path(str(im["file_name"])).name: int(im["id"]) for im in images}
    videos = [str(i.spec) for i in items if not i.is_image]
    if videos:
        raise SipvisError(f"--gt maps image file names to ids; {videos[0]} is a video")
    missing = [str(i.spec) for i in items if Path(str(i.spec)).name not in ids]
    if missing:
        raise SipvisError(f"{len(missing)} of {len(items)} images are not in {gt_file} "
                          f"(first: {Path(missing[0]).name}); its file names look like {images[0]['file_name']!r}"
                          if images else f"{gt_file} lists no images")
    return [ids[Path(str(i.spec)).name] for i in items]


def check_image_model(segmenter) -> None:
    """`segment` needs an image model (`SipMaskConfig.task == "image"`); a VIS model is one clear line."""
    if segmenter.cfg.task != "image":
        raise SipvisError("these weights are a video (SipMask-VIS) model: `sipvis segment` needs an image model, "
                          "e.g. --weights sipmask-r50-coco; use `sipvis track` for this one")


@dataclass
class _Frame:
    """A frame on its way through the model: its run-wide number, image id, output name, image."""

    number: int
    image_id: int
    name: str
    image: np.ndarray


def _frames(items: Sequence[InputItem], image_ids: Sequence[int] | None) -> Iterator[_Frame]:
    """Every image of the run in order; a video's frames one after the other."""
    number = 0
    for item in items:
        if item.is_image:
            image = read_image(Path(str(item.spec)))
            if image is None:
                raise SipvisError(f"{item.spec} is not an image OpenCV can read")
            named = [(item.name, image)]
        else:
            named = _video_frames(item)
        for name, image in named:
            yield _Frame(number, image_ids[number] if image_ids else number + 1, name, image)
            number += 1


def _video_frames(item: InputItem) -> Iterator[tuple[str, np.ndarray]]:
    with open_source(item.spec, threaded=False) as source:
        for frame in source:
            yield f"{item.name}_{frame.index:06d}", frame.image


class _NamedPngs(InstancePngSink):
    """Instance PNGs named after the image (`name`, set before each write) instead of a frame number."""

    name = ""

    def path_for(self, index: int) -> Path:
        return self.folder / f"{self.name}.png"


class _Outputs:
    """The files of a run: results JSON(s), annotated images and instance PNGs of the output folder."""

    def __init__(self, plan: SegmentPlan, class_names: Sequence[str]) -> None:
        self.plan = plan
        self.results: list[CocoResultsFile] = []
        self.renderer = Renderer(class_names, alpha=0.5)
        self.pngs = _NamedPngs(plan.folder / "instances") if plan.png and plan.folder else None
        for path in plan.json_files:
            self.results.append(CocoResultsFile(path))

    def write(self, frame: _Frame, instances: FrameInstances, entries: list[dict]) -> list[Path]:
        for out in self.results:
            out.add(entries)
        written = []
        if self.plan.folder is not None:
            ok, data = cv2.imencode(".jpg", self.renderer.draw(frame.image, instances))
            if not ok:
                raise SipvisError(f"cannot encode the annotated image of {frame.name}")
            written.append(self.plan.folder / f"{frame.name}.jpg")
            write_bytes_atomic(written[-1], data.tobytes())
        if self.pngs is not None:
            self.pngs.name = frame.name
            self.pngs.write(None, instances)
            written.append(self.pngs.path_for(instances.index))
        return written

    def close(self, publish: bool) -> None:
        for out in self.results:
            out.close() if publish else out.discard()
        if self.pngs is not None:  # written into a staging folder, moved in at close (InstancePngSink)
            self.pngs.close() if publish else self.pngs.abort()


def segment_inputs(items: Sequence[InputItem], segmenter, plan: SegmentPlan, *,
                   image_ids: Sequence[int] | None = None, keep_classes: set[int] | None = None,
                   progress: Callable[[int], None] | None = None) -> SegmentSummary:
    """Run an image model (a `Segmenter` of `task == "image"`) over `items` into the outputs of `plan`.

    Args:
        image_ids: one per image of the run (`image_ids_from_gt`); None numbers them 1..N.
        keep_classes: label indices to write (`--classes`), None for all.
        progress: called with 1 after each image.

    Raises:
        SipvisError: a VIS model, an unreadable image or video, an unwritable output.
    """
    check_image_model(segmenter)
    _check_outputs_spare_inputs(items, plan)
    cfg = segmenter.cfg
    table = category_id_table(cfg.category_ids, len(segmenter.class_names))
    summary = SegmentSummary(files=list(plan.json_files))
    outputs = _Outputs(plan, segmenter.class_names)
    publish = False
    try:
        prepared = (segmenter.prepare(f.image, f.number, source=f) for f in _frames(items, image_ids))
        for batch in segmenter.batches(prepared):
            for frame, instances, mask_scores in _host_detections(batch, segmenter.detect(batch), keep_classes):
                _, segm = coco_results_entries(frame.image_id, instances.boxes, instances.scores, instances.labels,
                                               instances.masks, table, mask_scores)
                summary.files += outputs.write(frame, instances, segm)
                summary.images += 1
                summary.detections += len(instances)
                if progress is not None:
                    progress(1)
        publish = True
    except KeyboardInterrupt:
        publish = True  # Ctrl-C keeps what was processed, as `track` does
        raise
    finally:
        outputs.close(publish)
    return summary


def _check_outputs_spare_inputs(items: Sequence[InputItem], plan: SegmentPlan) -> None:
    """Refuse, before any work, an output that would overwrite an input image (`segment photos/ -o photos/`
    names the annotated image of `a.jpg` `photos/a.jpg`): `track_run.check_outputs`, the one rule."""
    images = [i for i in items if i.is_image]
    outputs = [("json", path) for path in plan.json_files]
    if plan.folder is not None:
        outputs += [("image", plan.folder / f"{i.name}.jpg") for i in images]
    check_outputs(outputs, [Path(str(i.spec)) for i in images])


def _host_detections(batch, dets, keep_classes: set[int] | None
                     ) -> Iterator[tuple[_Frame, FrameInstances, np.ndarray | None]]:
    """A batch's `Detections` on the host, per frame, in the model's order: valid slots of the wanted
    classes, as `FrameInstances` (instance k has id k + 1) with the re-scored mask scores (or None)."""
    mask_scores = dets.mask_scores
    wanted = dets.valid  # (B, K), once per batch
    if keep_classes is not None:
        wanted = wanted & torch.isin(dets.labels, torch.tensor(sorted(keep_classes), device=wanted.device))
    for b, prepared in enumerate(batch):
        keep = wanted[b]
        frame: _Frame = prepared.source
        h, w = frame.image.shape[:2]
        n = int(keep.sum())
        instances = FrameInstances(
            index=frame.number, height=h, width=w,
            boxes=dets.boxes[b][keep].float().cpu().numpy(), scores=dets.scores[b][keep].float().cpu().numpy(),
            labels=dets.labels[b][keep].cpu().numpy(), track_ids=np.arange(1, n + 1, dtype=np.int64),
            masks=dets.masks[b][keep].cpu().numpy().astype(bool, copy=False))
        yield frame, instances, None if mask_scores is None else mask_scores[b][keep].float().cpu().numpy()


__all__ = ["DEFAULT_IMAGE_WEIGHTS", "InputItem", "SegmentPlan", "SegmentSummary", "check_image_model",
           "image_ids_from_gt", "list_inputs", "plan_outputs", "segment_inputs"]
