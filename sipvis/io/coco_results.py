"""COCO results JSON: the image models' detections as the original's `results2json` writes them, and a
streaming writer of one results file.

Format (what pycocotools' `COCO.loadRes` reads): a JSON list of entries
`{"image_id", "bbox": [x, y, w, h], "score", "category_id"}` (box results) or the same plus
`"segmentation": {"size": [h, w], "counts": str}` (mask results, compressed RLE). As in mmdetection v1,
`w = x2 - x1 + 1` and `h = y2 - y1 + 1` (its inclusive pixel convention), entries are grouped by class
(0, 1, ...; within a class in detection order), and a SipMask++ mask entry's score is its re-scored
mask score. `sipvis segment` writes the mask entries only: each carries the box too, so one file
scores both box AP and mask AP.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sipvis.errors import SipvisError
from sipvis.io.files import ensure_folder, publish, reason, temp_file_beside
from sipvis.io.ytvis_results import encode_rles


def category_id_table(category_ids: Sequence[int], num_classes: int) -> list[int]:
    """Label -> dataset category id: `category_ids` when given (one per class), else label + 1."""
    if not category_ids:
        return list(range(1, num_classes + 1))
    if len(category_ids) != num_classes:
        raise ValueError(f"{len(category_ids)} category ids for {num_classes} classes")
    return [int(c) for c in category_ids]


def coco_results_entries(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                         masks: np.ndarray | None, category_ids: Sequence[int],
                         mask_scores: np.ndarray | None = None) -> tuple[list[dict], list[dict]]:
    """One image's detections -> (bbox entries, segm entries), exactly as the original's `results2json`.

    Args:
        image_id: the COCO image id written into every entry.
        boxes: (K, 4) float32 x1y1x2y2 in original-image pixels (possibly inverted, as the original returns).
        scores: (K,) detection scores; labels: (K,) 0-based class indices.
        masks: (K, H, W) bool masks at the original size, or None for box entries only (segm list empty).
        category_ids: label -> category id (`category_id_table`); index it with a label.
        mask_scores: (K,) SipMask++ re-scored mask scores (the segm entries' score), or None.

    Values are widened from float32 to Python floats before the +1, as mmdetection's `bbox.tolist()`.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    order = np.argsort(labels, kind="stable")  # bbox2result: class by class, detection order within one
    bbox_entries: list[dict] = []
    segm_entries: list[dict] = []
    rles = encode_rles(masks) if masks is not None else []  # one pycocotools call for the image
    for k in order.tolist():
        x1, y1, x2, y2 = boxes[k].tolist()
        entry = {"image_id": int(image_id), "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1],
                 "score": float(scores[k]), "category_id": int(category_ids[labels[k]])}
        bbox_entries.append(entry)
        if masks is not None:
            score = float(np.float32(mask_scores[k])) if mask_scores is not None else entry["score"]
            segm_entries.append({**entry, "score": score, "segmentation": rles[k]})
    return bbox_entries, segm_entries


class CocoResultsFile:
    """One COCO results file written as detections come: entries stream into a private temporary file
    beside `path`, which `close` completes (a valid JSON list) and renames onto `path` atomically.
    `discard` drops it instead, so a failed run never replaces an existing `path`.

    Usage::

        out = CocoResultsFile("results.json")
        try:
            out.add(segm_entries)
        except BaseException:
            out.discard()
            raise
        out.close()
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        ensure_folder(self.path.parent)
        if self.path.is_dir():
            raise SipvisError(f"cannot write {self.path}: it is a folder")
        try:
            fd, self._tmp = temp_file_beside(self.path)
            self._file = os.fdopen(fd, "w", encoding="utf-8")
            self._file.write("[")
        except OSError as exc:
            raise SipvisError(f"cannot write {self.path}: {reason(exc)}") from None
        self.count = 0

    def add(self, entries: list[dict]) -> None:
        """Append entries (JSON-ready dicts) to the file."""
        try:
            for entry in entries:
                self._file.write(("\n" if self.count == 0 else ",\n") + json.dumps(entry))
                self.count += 1
        except OSError as exc:
            self.discard()
            raise SipvisError(f"cannot write {self.path}: {reason(exc)}") from None

    def close(self) -> None:
        """Finish the list and put the file in place (a reader sees the old file or the whole new one)."""
        if self._file.closed:
            return
        try:
            self._file.write("\n]\n")
            self._file.close()
            publish(self._tmp, self.path)
        except OSError as exc:
            self.discard()
            raise SipvisError(f"cannot write {self.path}: {reason(exc)}") from None

    def discard(self) -> None:
        """Drop what was written; `path` stays as it was."""
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:  # the flush of a full disk: the file is dropped anyway
                pass
        self._tmp.unlink(missing_ok=True)
