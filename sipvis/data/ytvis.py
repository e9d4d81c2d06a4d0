"""YouTube-VIS training data (2019 and 2021 layouts, and any custom dataset in that format).

A sample is a frame that has at least one valid instance, plus a reference frame drawn uniformly
from the *other* valid frames of the same video (the frame itself when it is the only one). An
instance is valid on a frame when it has a box there with width and height >= 1 and a positive area
and is not a crowd region. `pids[i] = k` when instance i of the current frame is the k-th (1-based)
instance of the reference frame, 0 when it does not appear there — the original's `gt_pids`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch.utils.data import Dataset

from sipvis.data.batch import SampleKey, TrainSample, sample_rng
from sipvis.data.transforms import TrainTransform, xywh_to_inclusive_xyxy
from sipvis.errors import SipvisError
from sipvis.io.files import load_json_object
from sipvis.model.losses import FrameTargets


LAYOUT_HELP = ("expected <root>/<split>/JPEGImages/<video>/*.jpg and <root>/annotations/<split>.json "
               "(or <root>/<split>/instances.json), e.g. as `sipvis synth ROOT --split NAME` writes")


@dataclass
class SplitFiles:
    """Where a split's annotations and frames are."""

    ann_file: Path
    image_dir: Path


def find_split(data_root: str | Path, split: str) -> SplitFiles:
    """Locate a YouTube-VIS split's frame folder and annotation file under `data_root`, or explain the
    expected layout. Tried in order (the first that exists wins, frames and annotations separately):

    - frames: `<split>/JPEGImages/`, `<split>/JPEGImages/JPEGImages/`, `JPEGImages/`
    - annotations: `annotations/<split>.json` (2019 layout as commonly arranged; `sipvis synth`),
      `annotations/instances_<split>.json`, `annotations/instances_<split>_sub.json`,
      `annotations/<split>_sub.json`, `<split>/instances.json` (the official 2021 download), `<split>.json`
    """
    root = Path(data_root)
    if not root.is_dir():
        raise SipvisError(f"dataset root not found: {root} ({LAYOUT_HELP})")
    image_dirs = [root / split / "JPEGImages", root / split / "JPEGImages" / "JPEGImages", root / "JPEGImages"]
    ann_files = [root / "annotations" / f"{split}.json", root / "annotations" / f"instances_{split}.json",
                 root / "annotations" / f"instances_{split}_sub.json", root / "annotations" / f"{split}_sub.json",
                 root / split / "instances.json", root / f"{split}.json"]
    images = next((d for d in image_dirs if d.is_dir()), None)
    annotations = next((f for f in ann_files if f.is_file()), None)
    if images is None or annotations is None:
        missing = "frame folder" if images is None else "annotation file"
        raise SipvisError(f"no YouTube-VIS split {split!r} under {root}: no {missing} ({LAYOUT_HELP})")
    return SplitFiles(annotations, images)


@dataclass(frozen=True)
class Categories:
    """A dataset's categories in label order: sorted by id, as the original. The model's label i is
    category `ids[i]`, whatever the ids are (1..N or not)."""

    ids: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def from_json(cls, categories: list[dict]) -> "Categories":
        """From an annotation file's `categories` list."""
        cats = sorted(categories, key=lambda c: int(c["id"]))
        return cls(tuple(int(c["id"]) for c in cats), tuple(str(c["name"]) for c in cats))

    @property
    def to_label(self) -> dict[int, int]:
        """category id -> 0-based label."""
        return {c: i for i, c in enumerate(self.ids)}

    def results_to_split(self, entries: list[dict]) -> list[dict]:
        """Results whose `category_id` is the model's label + 1 (the tracker's output) with this split's
        category ids instead; entries of a label beyond the split's categories are left out."""
        out = []
        for entry in entries:
            label = int(entry["category_id"]) - 1
            if 0 <= label < len(self.ids):
                out.append({**entry, "category_id": self.ids[label]})
        return out


def load_annotations(path: str | Path, kind: str, keys: tuple[str, ...]) -> dict:
    """A dataset's annotation file (`kind`, e.g. "COCO instances file") as a dict that has `keys`."""
    data = load_json_object(path, kind.removesuffix(" file"))
    for key in keys:
        if key not in data:
            raise SipvisError(f"{path} has no {key!r}: not a {kind}")
    return data


def decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """Compressed RLE, uncompressed RLE or polygons -> (height, width) uint8 mask."""
    if isinstance(seg, list):  # polygons
        polys = [p for p in seg if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, *seg["size"])
    elif isinstance(seg, dict):
        counts = seg["counts"]
        rle = {"size": seg["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise SipvisError(f"unreadable segmentation of type {type(seg).__name__}")
    return mask_utils.decode(rle)


class AnnotatedDataset(Dataset):
    """What the training datasets share: an annotation file with categories, a frame folder, a transform.

    Attributes (after `_load`): image_dir, transform, categories, cat_to_label (category id -> label),
    class_names (in label order).
    """

    def _load(self, ann_file: str | Path, image_dir: str | Path, transform: TrainTransform | None, kind: str,
              keys: tuple[str, ...]) -> dict:
        """Read `ann_file` (a `kind` that must have `keys`, "annotations" and "categories"); returns it."""
        data = load_annotations(ann_file, kind, (*keys, "annotations", "categories"))
        self.image_dir = Path(image_dir)
        self.transform = transform or TrainTransform()
        self.categories = Categories.from_json(data["categories"])
        self.cat_to_label, self.class_names = self.categories.to_label, self.categories.names
        return data


class YTVISDataset(AnnotatedDataset):
    """Frame pairs from a YouTube-VIS-format annotation file.

    Args:
        ann_file: annotations JSON (`videos`, `annotations`, `categories`).
        image_dir: folder the `file_names` are relative to (`.../JPEGImages`).
        transform: resize / flip / normalisation.
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, transform: TrainTransform | None = None) -> None:
        data = self._load(ann_file, image_dir, transform, "YouTube-VIS annotation file", ("videos",))
        self.videos = data["videos"]
        by_video: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            by_video.setdefault(int(ann["video_id"]), []).append(ann)
        # per video: its annotations; per (video, frame): indices of the valid instances
        self.video_anns: list[list[dict]] = []
        self.valid: list[dict[int, list[int]]] = []
        self.samples: list[tuple[int, int]] = []
        for v, video in enumerate(self.videos):
            anns = by_video.get(int(video["id"]), [])
            self.video_anns.append(anns)
            per_frame: dict[int, list[int]] = {}
            for f in range(len(video["file_names"])):
                ok = [a for a, ann in enumerate(anns) if _valid_on(ann, f)]
                if ok:
                    per_frame[f] = ok
                    self.samples.append((v, f))
            self.valid.append(per_frame)
        if not self.samples:
            raise SipvisError(f"{ann_file} has no annotated frame to train on")

    def __len__(self) -> int:
        return len(self.samples)

    def frame(self, v: int, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """Frame f of video v: (H, W, 3) uint8 BGR image, (N, 4) inclusive boxes, (N,) labels, instance ids."""
        video = self.videos[v]
        path = self.image_dir / video["file_names"][f]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise SipvisError(f"cannot read frame {path}")
        anns = [self.video_anns[v][a] for a in self.valid[v].get(f, [])]
        boxes = xywh_to_inclusive_xyxy([a["bboxes"][f] for a in anns])
        labels = np.array([self.cat_to_label[int(a["category_id"])] for a in anns], np.int64)
        return img, boxes, labels, [int(a["id"]) for a in anns]

    def masks(self, v: int, f: int, height: int, width: int) -> np.ndarray:
        anns = [self.video_anns[v][a] for a in self.valid[v].get(f, [])]
        if not anns:
            return np.zeros((0, height, width), np.uint8)
        return np.stack([decode_segmentation(a["segmentations"][f], height, width) for a in anns])

    def __getitem__(self, key: int | SampleKey) -> TrainSample:
        index, rng = sample_rng(key)
        v, f = self.samples[index]
        others = [g for g in self.valid[v] if g != f]
        ref_f = others[int(rng.integers(len(others)))] if others else f
        scale, flip = self.transform.sample(rng)
        img, boxes, labels, ids = self.frame(v, f)
        ref_img, ref_boxes, _, ref_ids = self.frame(v, ref_f)
        masks = self.masks(v, f, img.shape[0], img.shape[1])
        image, factor = self.transform.image(img, scale, flip)
        ref_image, ref_factor = self.transform.image(ref_img, scale, flip)
        size = tuple(image.shape[1:])
        pids = [ref_ids.index(i) + 1 if i in ref_ids else 0 for i in ids]
        targets = FrameTargets(
            boxes=torch.from_numpy(self.transform.boxes(boxes, factor, flip, size)),
            labels=torch.from_numpy(labels),
            masks=torch.from_numpy(self.transform.masks(masks, size, flip)),
            ref_boxes=torch.from_numpy(self.transform.boxes(ref_boxes, ref_factor, flip, tuple(ref_image.shape[1:]))),
            pids=torch.tensor(pids, dtype=torch.int64),
        )
        info = {"video_id": int(self.videos[v]["id"]), "frame": f, "ref_frame": ref_f, "scale_factor": factor,
                "flip": flip}
        return TrainSample(image, ref_image, targets, info)


def _valid_on(ann: dict, f: int) -> bool:
    boxes = ann.get("bboxes") or []
    areas = ann.get("areas") or []
    segs = ann.get("segmentations") or []
    if f >= len(boxes) or boxes[f] is None or f >= len(segs) or segs[f] is None:
        return False
    _, _, w, h = boxes[f]
    area = areas[f] if f < len(areas) and areas[f] is not None else w * h
    return not ann.get("iscrowd", 0) and area > 0 and w >= 1 and h >= 1
