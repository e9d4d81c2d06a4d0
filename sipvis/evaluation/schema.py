"""Reading and checking YouTube-VIS ground truth and results files.

Turns the JSON structures into flat, evaluator-friendly data (every frame mask is stored once in
a `MaskStore`; a track keeps indices into it) and reports every problem it sees as an `Issue`
that says where (``results[12].segmentations[3]``), what was found and what was expected.

Where the official evaluator (youtubevos/cocoapi ``ytvos.py`` / ``ytvoseval.py``) defines a value
for odd input we keep that value and report a *warning*; where it crashes or the input cannot be
scored meaningfully we report an *error* (the evaluator then raises `SipvisError`):

====================================  ==========  =================================================
input                                 level       behaviour
====================================  ==========  =================================================
results not a list / entry not a      error       -
dict / missing or mistyped key
video id not in the GT                error       official: AssertionError. ``unknown_videos="drop"``
                                                  drops them with a warning instead.
0-based video ids (GT starts at 1)    error       the message says to add 1 to every video_id
polygon or malformed RLE in results   error       official: TypeError
RLE counts not decodable, or runs     error       official: hangs or reads past the string (pycocotools)
not adding up to height x width
uncompressed RLE in results           warning     accepted (converted); official: TypeError
empty results list                    warning     every AP/AR is 0 where GT exists (official: crash)
unknown category id                   warning     dropped, as the official code does silently
RLE size != video size                warning     official value: that frame adds 0 to I and U
len(segmentations) != video length    warning     official value: Python ``zip`` (extra frames
                                                  ignored by the IoU, still in the track area)
GT annotation id 0                    warning     official quirk kept: it can never be a TP
duplicate GT/video/category ids       error       (official silently lets the last one win)
====================================  ==========  =================================================
"""

from __future__ import annotations

import array
import functools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils

from sipvis.errors import SipvisError
from sipvis.io.files import json_type_name, load_json, no_gc

IouType = Literal["segm", "bbox"]

RESULT_KEYS = ("video_id", "category_id", "score", "segmentations")
GT_ANN_KEYS = ("id", "video_id", "category_id", "iscrowd", "segmentations", "areas")


class IssueKind(StrEnum):
    """What an `Issue` is about (its value is the short code printed in summaries)."""

    NOT_A_LIST = "not_a_list"              # results: not a JSON list
    EMPTY = "empty"                        # results: an empty list
    SCHEMA = "schema"                      # results: an entry or field of the wrong shape
    UNKNOWN_VIDEO = "unknown_video"        # results: a video id the GT does not have
    ZERO_BASED_IDS = "zero_based_ids"      # results: video ids 0..N-1 against a GT with 1..N
    UNKNOWN_CATEGORY = "unknown_category"  # results: a category id the GT does not have
    UNCOMPRESSED_RLE = "uncompressed_rle"  # results: counts as a list
    SIZE_MISMATCH = "size_mismatch"        # results: RLE size other than the video's
    FRAME_COUNT = "frame_count"            # results: len(segmentations) != video length
    GT_OUTSIDE = "gt_outside"              # GT: annotations of unlisted videos or categories
    GT_ID_ZERO = "gt_id_zero"              # GT: annotation id 0 (never a true positive, official)
    EMPTY_UNION = "empty_union"            # evaluation: a result/GT pair with an empty union


@dataclass(frozen=True)
class Issue:
    """One problem found in a results (or ground-truth) file, or while scoring them.

    Attributes:
        level: "error" (cannot be scored as given) or "warning" (scored with the official semantics).
        kind: what it is about, e.g. IssueKind.SIZE_MISMATCH (a str enum: compares equal to "size_mismatch").
        message: one readable line naming the entry, the field, what was found and what was expected.
        index: position of the offending entry in the results list (None for file-level problems).
    """

    level: Literal["error", "warning"]
    kind: IssueKind
    message: str
    index: int | None = None


# ------------------------------------------------------------------------------------------- storage


class MaskStore:
    """Every present frame mask of a file, as compressed RLE dicts, plus their areas and sizes.

    Masks are appended during parsing; `finalize()` converts the uncompressed ones in one batch and
    computes all areas with one `pycocotools.mask.area` call.

    Attributes (after finalize):
        rles: list of N compressed RLE dicts ``{"size": [h, w], "counts": str|bytes}``.
        area: (N,) float64 pixel counts (exact integers).
        height, width: (N,) int64 RLE sizes.
    """

    def __init__(self) -> None:
        self.rles: list[dict] = []
        self._uncompressed: list[int] = []
        self._where: dict[int, tuple[str, int]] = {}
        self.area = np.zeros(0)
        self.height = np.zeros(0, dtype=np.int64)
        self.width = np.zeros(0, dtype=np.int64)

    def add(self, rle: dict, uncompressed: bool = False, where: tuple[str, int] = ("an RLE", -1)) -> int:
        """Append one mask; `where` = (entry path, frame) names it in error messages."""
        if uncompressed:
            self._uncompressed.append(len(self.rles))
            self._where[len(self.rles)] = where
        self.rles.append(rle)
        return len(self.rles) - 1

    def finalize(self, locate=None) -> None:
        """Check every counts string, convert uncompressed RLEs, compute areas and sizes.

        Raises SipvisError on bad counts, naming the mask with `locate(index)` (a callable giving e.g.
        ``results[3].segmentations[7]``) or, for an uncompressed RLE, where it was added.
        """
        # before any pycocotools call that walks the runs: runs past the frame make it loop for ages
        # (uncompressed counts are skipped here and checked as they are converted)
        bad = compressed_rle_problems(self.rles)
        if bad:
            i, why = bad[0]
            more = f" (and {len(bad) - 1} more such masks)" if len(bad) > 1 else ""
            raise SipvisError(f"{self._name(i, locate)}: {why}{more}")
        if self._uncompressed:
            self._convert_uncompressed()
        self.area = rle_areas(self.rles)
        self.height = np.fromiter((r["size"][0] for r in self.rles), dtype=np.int64, count=len(self.rles))
        self.width = np.fromiter((r["size"][1] for r in self.rles), dtype=np.int64, count=len(self.rles))

    def _name(self, i: int, locate) -> str:
        name = locate(i) if locate is not None else None
        if name is None:
            entry, t = self._where.get(i, (f"mask #{i}", -1))
            name = entry if t < 0 else f"{entry}.segmentations[{t}]"
        return name

    def _convert_uncompressed(self) -> None:
        converted = []
        for i in self._uncompressed:
            rle = self.rles[i]
            try:
                # array.array reads a list of ints ~3x faster than np.array, and pycocotools
                # copies a uint32 ndarray without a per-element Python conversion
                counts = np.frombuffer(array.array("I", rle["counts"]), dtype=np.uint32)
                size = [int(rle["size"][0]), int(rle["size"][1])]
            except (TypeError, ValueError, OverflowError):
                entry, t = self._where.get(i, ("an RLE", -1))
                raise SipvisError(f"{entry}.segmentations[{t}]: an uncompressed RLE needs 'size' [h, w] "
                                  "and 'counts', a list of non-negative integers") from None
            if int(counts.sum(dtype=np.int64)) != size[0] * size[1]:
                raise SipvisError(f"{self._name(i, None)}: its run lengths do not add up to height x width "
                                  "(the RLE does not fit its 'size')")
            converted.append({"size": size, "counts": counts})
        # frPyObjects on uncompressed RLEs uses each one's own size (as the official annToRLE does)
        for i, rle in zip(self._uncompressed, mask_utils.frPyObjects(converted, 0, 0)):
            self.rles[i] = rle
        self._uncompressed = []


MAX_RUN_CHARS = 6  # 30 bits: pycocotools shifts an int by 5 per character, so longer runs overflow
# a run's last character (value 0..63 after subtracting 48) -> its 5 bits sign-extended from bit 0x10
_SIGNED5 = ((np.arange(256) & 0x1F) ^ 0x10).astype(np.int32) - 16


# RLE strings checked per numpy pass: the passes stay in cache (all 300 videos at once took 5x longer)
RLE_CHECK_CHUNK = 4096


def compressed_rle_problems(rles: list[dict]) -> list[tuple[int, str]]:
    """[(index, why)] of the RLEs whose compressed counts pycocotools would misread, in index order
    (`_rle_chunk_problems` on slices of `RLE_CHECK_CHUNK`)."""
    return [(start + i, why) for start in range(0, len(rles), RLE_CHECK_CHUNK)
            for i, why in _rle_chunk_problems(rles[start:start + RLE_CHECK_CHUNK])]


def _rle_chunk_problems(rles: list[dict]) -> list[tuple[int, str]]:
    """[(index, why)] of the RLEs whose compressed counts pycocotools would misread, in index order.

    A counts string (pycocotools' ``rleToString`` format) holds each run length in characters
    48..111: 5 bits each, least significant first, bit 0x20 = "more characters follow", bit 0x10 of
    the last one = negative; from the fourth run on, the value is a difference to the run two before.
    Wrong: characters outside that range, a run cut off at the end of the string, runs of more than
    `MAX_RUN_CHARS` characters, a negative run, runs not adding up to height x width. All strings are
    decoded at once in numpy (a handful of passes over the characters and over the runs).
    """
    idx = [i for i, r in enumerate(rles) if type(r["counts"]) in (str, bytes)]
    if not idx:
        return []
    parts = [c.encode("utf-8", "surrogatepass") if type(c) is str else c for c in (rles[i]["counts"] for i in idx)]
    n = len(idx)
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=n)
    stop = np.cumsum(lengths)  # one past each string's last character
    v = np.frombuffer(b"".join(parts), dtype=np.uint8) - np.uint8(48)  # below 48 wraps to >= 208
    why: dict[int, str] = {}

    def mark(strings: np.ndarray, text: str) -> None:
        for k in np.unique(strings):
            why.setdefault(int(k), text)

    outside = v > 63
    if outside.any():
        mark(np.searchsorted(stop, np.flatnonzero(outside), side="right"),
             "counts is not a compressed RLE string (characters outside '0'..'o')")
        v = np.where(outside, np.uint8(0), v)
    nonempty = np.flatnonzero(lengths)
    ends = (v & 0x20) == 0
    mark(nonempty[~ends[stop[nonempty] - 1]], "counts ends in the middle of a run length")
    ends[stop[nonempty] - 1] = True  # a run never continues into the next string
    gend = np.flatnonzero(ends)
    G = len(gend)
    first = np.searchsorted(gend, stop - lengths)  # each string's first run (G for a string without runs)
    runs = np.diff(first, append=G)

    def owners(groups: np.ndarray) -> np.ndarray:
        return np.searchsorted(first, groups, side="right") - 1

    # one-character runs (nearly all): the character's 5 bits, sign-extended from bit 0x10. int32 wraps
    # like pycocotools' unsigned 32-bit counts, which is all the checks below need
    x = _SIGNED5[v[gend]]
    multi = np.unique(np.searchsorted(gend, np.flatnonzero(~ends)))  # runs of several characters
    if multi.size:
        glen = gend[multi] - np.where(multi > 0, gend[multi - 1], -1)
        mark(owners(multi[glen > MAX_RUN_CHARS]), "counts holds a run longer than any image")
        value = x[multi]
        for j in range(1, MAX_RUN_CHARS):  # Horner towards the least significant (first) character
            more = glen > j
            value[more] = (value[more] << 5) | (v[gend[multi[more]] - j] & 0x1F)
        x[multi] = value
    # run m > 2 adds run m - 2, two places back in the flat array too: a cumulative sum over the even and
    # one over the odd places, each restarted where a string starts; run 2 does not add run 0, so run 0
    # is taken out of it first
    three = first[runs >= 3]
    x[three + 2] -= x[three]
    counts = np.empty_like(x)
    for p in (0, 1):
        total = np.cumsum(x[p::2], dtype=np.int32)
        k = (first + (first % 2 != p)) // 2  # index of each string's first run of that parity
        before = np.concatenate((np.zeros(1, np.int32), total))[k]
        counts[p::2] = total - np.repeat(before, np.diff(np.append(k, len(total))))
    mark(owners(np.flatnonzero(counts < 0)), "counts holds a negative run length (or one over 2**31)")
    sums = np.zeros(n, dtype=np.int64)
    if G:
        sums[runs > 0] = np.add.reduceat(counts, first[runs > 0], dtype=np.int64)
    area = np.array([int(rles[i]["size"][0]) * int(rles[i]["size"][1]) for i in idx], dtype=np.int64)
    mark(np.flatnonzero(sums != area), "its run lengths do not add up to height x width (the RLE does not fit its 'size')")
    return [(idx[k], why[k]) for k in sorted(why)]


def rle_areas(rles: list[dict]) -> np.ndarray:
    """(N,) float64 pixel counts of compressed RLEs.

    Chunked by 255: pycocotools 2.0.11 `mask.area` fails on numpy 2 for lists of 256 or more
    ("Python integer 256 out of bounds for uint8").
    """
    if not rles:
        return np.zeros(0)
    return np.concatenate([mask_utils.area(rles[i:i + 255]) for i in range(0, len(rles), 255)]).astype(np.float64)


@dataclass
class Track:
    """One video instance (a GT annotation or a result) after parsing.

    Attributes:
        video_id, category_id: as in the file.
        ann_id: GT annotation id, or for results the 1-based position in the file (official).
        score: detection score (1.0 for GT).
        iscrowd: GT crowd flag (0 for results).
        length: len(segmentations) — the official IoU zips two tracks' lists.
        frames: (P,) int64 indices of the present (truthy) frame entries.
        mask_idx: (P,) int64 indices into the `MaskStore` (segm) — empty for bbox-only tracks.
        avg_area: mean of the non-null, non-zero per-frame areas (0 if none), used for area ranges.
        boxes: (length, 4) float64 x, y, w, h per frame, NaN where absent (bbox evaluation only).
    """

    video_id: int
    category_id: int
    ann_id: int
    score: float
    iscrowd: int
    length: int
    frames: np.ndarray
    mask_idx: np.ndarray
    avg_area: float = 0.0
    boxes: np.ndarray | None = None


@dataclass
class Video:
    id: int
    height: int | None
    width: int | None
    length: int | None  # declared frame count ('length' or len(file_names)); None if unknown


@dataclass
class GroundTruth:
    """A parsed ground-truth file (only the fields the evaluator reads).

    Attributes:
        videos: id -> Video, and video_ids sorted ascending (the official evaluation order).
        categories: id -> display name, and cat_ids sorted ascending.
        tracks: GT annotations whose video and category are known, in file order.
        masks: the GT frame masks (segm).
        warnings: problems that do not stop evaluation.
    """

    videos: dict[int, Video]
    video_ids: list[int]
    categories: dict[int, str]
    cat_ids: list[int]
    tracks: list[Track]
    masks: MaskStore
    warnings: list[Issue] = field(default_factory=list)
    iou_type: str = "segm"


@dataclass
class Results:
    """Parsed results: tracks to evaluate (unknown categories/videos already dropped) and issues."""

    tracks: list[Track]
    masks: MaskStore
    issues: list[Issue]

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "warning"]


# ------------------------------------------------------------------------------------------ helpers


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _rle_problem(seg: dict) -> str | None:
    """Why `seg` is not a usable RLE dict, or None."""
    size, counts = seg.get("size"), seg.get("counts")
    # fast path for the common case (this runs once per frame mask)
    if type(size) is list and len(size) == 2 and type(size[0]) is int and type(size[1]) is int \
            and size[0] >= 0 and size[1] >= 0 and type(counts) in (str, bytes, list):
        return None
    if size is None or counts is None:
        missing = [k for k in ("size", "counts") if seg.get(k) is None]
        return f"an RLE needs 'size' and 'counts' (missing {', '.join(missing)})"
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)):
        return f"RLE 'size' must be [height, width] (two non-negative integers), got {size!r}"
    if not isinstance(counts, (str, bytes, list)):
        return f"RLE 'counts' must be a string (compressed RLE), got {json_type_name(counts)}"
    # the values of uncompressed counts are checked by pycocotools in MaskStore.finalize (fast)
    return None


def _boxes_array(boxes: Any, length: int, where: str) -> np.ndarray:
    """(length, 4) float64 x,y,w,h from a per-frame list of [x, y, w, h] | null, NaN where absent."""
    out = np.full((length, 4), np.nan)
    if not isinstance(boxes, list):
        raise SipvisError(f"{where}.bboxes must be a list with one [x, y, w, h] or null per frame")
    for t, box in enumerate(boxes[:length]):
        if not box:  # official: a falsy entry is absent
            continue
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise SipvisError(f"{where}.bboxes[{t}] must be [x, y, w, h] or null, got {box!r}")
        out[t] = box
    return out


def _rle_boxes(masks: MaskStore, track: Track, length: int) -> np.ndarray:
    """Per-frame boxes of a track computed from its masks (pycocotools toBbox), NaN where absent."""
    out = np.full((length, 4), np.nan)
    if len(track.frames):
        keep = track.frames < length
        out[track.frames[keep]] = mask_utils.toBbox([masks.rles[i] for i in track.mask_idx[keep]])
    return out


# ------------------------------------------------------------------------------------ ground truth


@no_gc()  # parsing allocates millions of small acyclic objects
def parse_gt(gt: dict | str | Path, iou_type: IouType = "segm") -> GroundTruth:
    """Parse a YouTube-VIS annotation file (dict or path); raise `SipvisError` on schema errors.

    Polygons are rasterised at the video's height x width and their parts merged; uncompressed
    RLEs are converted with their own size (both as the official ``annToRLE``).
    """
    data = load_json(gt, "ground-truth")
    if not isinstance(data, dict):
        hint = " (this looks like a results file; pass it as --results)" if isinstance(data, list) else ""
        raise SipvisError(
            f"ground truth must be a JSON object with 'videos', 'categories' and 'annotations', "
            f"got {json_type_name(data)}{hint}"
        )
    for key in ("videos", "categories", "annotations"):
        if not isinstance(data.get(key), list):
            found = "missing" if key not in data else json_type_name(data[key])
            raise SipvisError(f"ground truth: '{key}' must be a list ({found})")
    videos = _gt_videos(data["videos"])
    categories = _gt_categories(data["categories"])
    masks = MaskStore()
    tracks, warnings = _gt_tracks(data["annotations"], videos, categories, masks, iou_type)
    masks.finalize()
    if iou_type == "bbox":
        for tr in tracks:
            if tr.boxes is None:
                tr.boxes = _rle_boxes(masks, tr, tr.length)
    return GroundTruth(
        videos=videos, video_ids=sorted(videos), categories=categories, cat_ids=sorted(categories),
        tracks=tracks, masks=masks, warnings=warnings, iou_type=iou_type,
    )


def _gt_videos(entries: list) -> dict[int, Video]:
    videos: dict[int, Video] = {}
    for v in _with_unique_ids(entries, "videos", "video"):
        length = v.get("length")
        if not _is_int(length):
            length = len(v["file_names"]) if isinstance(v.get("file_names"), list) else None
        h, w = v.get("height"), v.get("width")
        videos[v["id"]] = Video(v["id"], h if _is_int(h) else None, w if _is_int(w) else None, length)
    return videos


def _gt_categories(entries: list) -> dict[int, str]:
    return {c["id"]: str(c.get("name", c["id"])) for c in _with_unique_ids(entries, "categories", "category")}


def _with_unique_ids(entries: list, key: str, noun: str) -> Iterator[dict]:
    """The GT's `key` list, each entry checked to be an object with an integer id not seen before."""
    seen: set[int] = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not _is_int(e.get("id")):
            raise SipvisError(f"ground truth: {key}[{i}] needs an integer 'id'")
        if e["id"] in seen:
            raise SipvisError(f"ground truth: duplicate {noun} id {e['id']} ({key}[{i}])")
        seen.add(e["id"])
        yield e


def _gt_tracks(annotations: list, videos: dict[int, Video], categories: dict[int, str], masks: MaskStore,
               iou_type: IouType) -> tuple[list[Track], list[Issue]]:
    """The GT annotations of listed videos and categories as tracks (masks into `masks`), and warnings."""
    tracks: list[Track] = []
    warnings: list[Issue] = []
    seen_ids: dict[int, int] = {}
    outside = 0
    for i, ann in enumerate(annotations):
        where = f"ground truth annotations[{i}]"
        _check_gt_annotation(ann, where, seen_ids)
        seen_ids[ann["id"]] = i
        # the official evaluator only sees annotations of listed videos and categories
        video = videos.get(ann["video_id"])
        if video is None or ann["category_id"] not in categories:
            outside += 1
            continue
        if ann["id"] == 0:
            warnings.append(Issue(
                "warning", IssueKind.GT_ID_ZERO,
                f"{where} has id 0: the official evaluator stores matches by GT id and treats 0 as "
                "'unmatched', so this annotation can never be a true positive (kept, as official); "
                "number annotations from 1 to avoid it",
            ))
        frames, idx = _gt_masks(ann["segmentations"], video, where, masks)
        area_vals = [a for a in ann["areas"] if a]  # official: null and 0 are left out of the mean
        if not all(_is_number(a) for a in area_vals):
            raise SipvisError(f"{where}.areas must hold numbers or null")
        avg_area = float(np.array(area_vals).mean()) if area_vals else 0.0
        tracks.append(Track(
            video_id=ann["video_id"], category_id=ann["category_id"], ann_id=ann["id"], score=1.0,
            iscrowd=int(bool(ann["iscrowd"])), length=len(ann["segmentations"]),
            frames=np.asarray(frames, dtype=np.int64), mask_idx=np.asarray(idx, dtype=np.int64),
            avg_area=avg_area,
        ))
        if iou_type == "bbox" and "bboxes" in ann:
            tracks[-1].boxes = _boxes_array(ann["bboxes"], len(ann["bboxes"]), where)
            tracks[-1].length = len(ann["bboxes"])
    if outside:
        warnings.append(Issue("warning", IssueKind.GT_OUTSIDE,
                              f"ground truth: {outside} annotation(s) reference a video or category that is "
                              "not listed; they are not evaluated (as official)"))
    return tracks, warnings


def _check_gt_annotation(ann: Any, where: str, seen_ids: dict[int, int]) -> None:
    if not isinstance(ann, dict):
        raise SipvisError(f"{where} must be an object, got {json_type_name(ann)}")
    missing = [k for k in GT_ANN_KEYS if k not in ann]
    if missing:
        raise SipvisError(f"{where} is missing {', '.join(repr(k) for k in missing)}")
    for k in ("id", "video_id", "category_id"):
        if not _is_int(ann[k]):
            raise SipvisError(f"{where}.{k} must be an integer, got {ann[k]!r}")
    if ann["id"] in seen_ids:
        raise SipvisError(f"{where}: duplicate annotation id {ann['id']} (also annotations[{seen_ids[ann['id']]}])")
    if not isinstance(ann["segmentations"], list) or not isinstance(ann["areas"], list):
        raise SipvisError(f"{where}: 'segmentations' and 'areas' must be lists (one entry per frame)")


def _gt_masks(segmentations: list, video: Video, where: str, masks: MaskStore) -> tuple[list[int], list[int]]:
    """(present frame indices, their indices into `masks`) of one GT annotation."""
    frames, idx = [], []
    rles, unc, unc_where = masks.rles, masks._uncompressed, masks._where
    for t, seg in enumerate(segmentations):
        if not seg:  # official: a falsy entry (null, {}, []) is an absent frame
            continue
        if type(seg) is dict and type(seg.get("counts")) is list and type(seg.get("size")) is list \
                and len(seg["size"]) == 2:  # fast path: the official files' uncompressed RLE
            unc.append(len(rles))
            unc_where[len(rles)] = (where, t)
            idx.append(len(rles))
            rles.append(seg)
            frames.append(t)
            continue
        if isinstance(seg, list):  # polygon(s), rasterised at the video size and merged
            if video.height is None or video.width is None:
                raise SipvisError(f"{where}.segmentations[{t}] is a polygon but video {video.id} "
                                  "has no 'height'/'width' to rasterise it")
            try:
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, video.height, video.width))
            except Exception:
                raise SipvisError(f"{where}.segmentations[{t}] is not a valid polygon list") from None
            idx.append(masks.add(rle))
        elif isinstance(seg, dict):
            problem = _rle_problem(seg)
            if problem:
                raise SipvisError(f"{where}.segmentations[{t}]: {problem}")
            idx.append(masks.add(seg, uncompressed=isinstance(seg["counts"], list), where=(where, t)))
        else:
            raise SipvisError(f"{where}.segmentations[{t}] must be an RLE, a polygon list or null, "
                              f"got {json_type_name(seg)}")
        frames.append(t)
    return frames, idx


# ------------------------------------------------------------------------------------------ results


@no_gc()  # parsing allocates millions of small acyclic objects
def parse_results(
    gt: GroundTruth,
    results: list | str | Path,
    iou_type: IouType = "segm",
    unknown_videos: Literal["error", "drop"] = "error",
) -> Results:
    """Parse and check a results list against `gt`. Never raises for content problems: see `.issues`.

    Raises `SipvisError` only when the file cannot be read or is not JSON.
    """
    data = load_json(results, "results")
    issues: list[Issue] = []
    masks = MaskStore()
    tracks: list[Track] = []
    if not isinstance(data, list):
        hint = ""
        if isinstance(data, dict):
            hint = (" (this looks like a ground-truth file)" if "annotations" in data and "videos" in data
                    else " (an object; a results file is a list of them)")
        issues.append(Issue("error", IssueKind.NOT_A_LIST,
                            "results must be a JSON list of {video_id, category_id, score, segmentations} "
                            f"objects, got {json_type_name(data)}{hint}"))
        return Results(tracks, masks, issues)
    if not data:
        issues.append(Issue("warning", IssueKind.EMPTY,
                            "results list is empty: every AP/AR is 0 where GT exists "
                            "(the official evaluator crashes on an empty list)"))
    zero_based = _looks_zero_based(data, set(gt.videos))
    if zero_based is not None:
        issues.append(zero_based)
    unknown_cats: list[tuple[int, int]] = []  # (index, category id) of results of unknown categories
    for i, res in enumerate(data):
        track = _parse_result(i, res, gt, iou_type, masks, issues, unknown_videos, zero_based is not None)
        if isinstance(track, Track):
            tracks.append(track)
        elif track is not None:
            unknown_cats.append(track)
    if unknown_cats:
        (i0, c0), n = unknown_cats[0], len(unknown_cats)
        issues.append(Issue("warning", IssueKind.UNKNOWN_CATEGORY,
                            f"{n} result(s) have a category_id that is not a GT category "
                            f"(first: results[{i0}].category_id {c0}; GT ids: {_id_range(set(gt.categories))}); "
                            "they are ignored, as official", i0))
    if not any(x.level == "error" for x in issues):
        try:
            masks.finalize(functools.partial(_locate_mask, tracks))
        except SipvisError as exc:
            issues.append(Issue("error", IssueKind.SCHEMA, str(exc)))
            return Results(tracks, masks, issues)
        _finish_results(tracks, masks, iou_type)
    return Results(tracks, masks, issues)


def _locate_mask(tracks: list[Track], index: int) -> str | None:
    """``results[i].segmentations[t]`` of mask `index` (result tracks have ann_id = i + 1)."""
    for tr in tracks:
        hit = np.flatnonzero(tr.mask_idx == index)
        if hit.size:
            return f"results[{tr.ann_id - 1}].segmentations[{int(tr.frames[hit[0]])}]"
    return None


def _parse_result(i: int, res: Any, gt: GroundTruth, iou_type: IouType, masks: MaskStore, issues: list[Issue],
                  unknown_videos: str, zero_based: bool) -> Track | tuple[int, int] | None:
    """results[i] as a track; (i, category id) for a result of an unknown category; None when the
    entry is left out (its problem appended to `issues`)."""
    where = f"results[{i}]"
    need_segm = iou_type == "segm"
    if not isinstance(res, dict):
        issues.append(Issue("error", IssueKind.SCHEMA, f"{where} must be an object, got {json_type_name(res)}", i))
        return None
    required = RESULT_KEYS if need_segm else ("video_id", "category_id", "score")
    missing = [k for k in required if k not in res]
    if not need_segm and "segmentations" not in res and "bboxes" not in res:
        missing.append("segmentations' or 'bboxes")
    if missing:
        issues.append(Issue("error", IssueKind.SCHEMA,
                            f"{where} is missing {', '.join(repr(k) for k in missing)} "
                            f"(expected keys: {', '.join(RESULT_KEYS)})", i))
        return None
    bad = _field_problem(res)
    if bad:
        issues.append(Issue("error", IssueKind.SCHEMA, f"{where}.{bad}", i))
        return None
    vid, cat = res["video_id"], res["category_id"]
    if vid not in gt.videos:
        if not zero_based:
            level = "error" if unknown_videos == "error" else "warning"
            tail = "" if level == "error" else " (dropped)"
            issues.append(Issue(level, IssueKind.UNKNOWN_VIDEO,
                                f"{where}.video_id {vid} is not a video of the ground truth "
                                f"(GT ids: {_id_range(set(gt.videos))}){tail}", i))
        return None
    if cat not in gt.categories:
        return i, cat
    video = gt.videos[vid]
    segs = res.get("segmentations")
    frames: list[int] = []
    idx: list[int] = []
    n_frames = 0
    if segs is not None:
        n_frames = len(segs)
        if not _result_masks(segs, video, where, i, masks, issues, frames, idx):
            return None
    boxes = None
    if iou_type == "bbox" and "bboxes" in res:
        try:
            boxes = _boxes_array(res["bboxes"], len(res["bboxes"]), where)
        except SipvisError as exc:
            issues.append(Issue("error", IssueKind.SCHEMA, str(exc), i))
            return None
        if segs is None:
            n_frames = len(res["bboxes"])
    if video.length is not None and n_frames != video.length:
        issues.append(Issue(
            "warning", IssueKind.FRAME_COUNT,
            f"{where} (video_id {vid}) has {n_frames} segmentations but video {vid} has "
            f"{video.length} frames: the official IoU zips the two lists, so frames past the "
            "shorter one are ignored", i))
    return Track(video_id=vid, category_id=cat, ann_id=i + 1, score=float(res["score"]), iscrowd=0,
                 length=n_frames, frames=np.asarray(frames, dtype=np.int64),
                 mask_idx=np.asarray(idx, dtype=np.int64), boxes=boxes)


def _result_masks(segs: list, video: Video, where: str, i: int, masks: MaskStore, issues: list[Issue],
                  frames: list[int], idx: list[int]) -> bool:
    """Append a result's present frames and their mask indices; False (and an error issue) on a bad entry."""
    vsize, rles = [video.height, video.width], masks.rles
    for t, seg in enumerate(segs):
        if not seg:
            continue
        if type(seg) is dict and type(seg.get("counts")) is str and seg.get("size") == vsize:
            frames.append(t)  # fast path: a CodaLab-style compressed RLE at the video size
            idx.append(len(rles))
            rles.append(seg)
            continue
        if isinstance(seg, dict):
            problem = _rle_problem(seg)
            if problem is None:
                _rle_warnings(seg, video, f"{where}.segmentations[{t}]", i, issues)
                idx.append(masks.add(seg, uncompressed=isinstance(seg["counts"], list), where=(where, t)))
                frames.append(t)
                continue
            issues.append(Issue("error", IssueKind.SCHEMA, f"{where}.segmentations[{t}]: {problem}", i))
        elif isinstance(seg, list):
            issues.append(Issue("error", IssueKind.SCHEMA,
                                f"{where}.segmentations[{t}] is a polygon list; results must be "
                                "compressed RLE {'size': [h, w], 'counts': '<string>'} or null", i))
        else:
            issues.append(Issue("error", IssueKind.SCHEMA,
                                f"{where}.segmentations[{t}] must be an RLE object or null, "
                                f"got {json_type_name(seg)}", i))
        return False
    return True


def _rle_warnings(seg: dict, video: Video, where: str, i: int, issues: list[Issue]) -> None:
    """Warnings about a usable result RLE: uncompressed counts, a size other than the video's."""
    if isinstance(seg["counts"], list):
        issues.append(Issue(
            "warning", IssueKind.UNCOMPRESSED_RLE,
            f"{where} is an uncompressed RLE (counts as a list): "
            "accepted here, but the official evaluator / CodaLab reject it "
            "(encode with pycocotools.mask.encode)", i))
    h, w = seg["size"]
    known = video.height is not None and video.width is not None
    if known and (h, w) != (video.height, video.width):
        issues.append(Issue(
            "warning", IssueKind.SIZE_MISMATCH,
            f"{where} has RLE size [{h}, {w}] but video {video.id} is "
            f"[{video.height}, {video.width}] (height, width): such a frame adds 0 to "
            "intersection and union (official); masks must be at the original video size", i))


def _finish_results(tracks: list[Track], masks: MaskStore, iou_type: IouType) -> None:
    """Track areas (and for bbox, per-frame boxes and box areas) once the masks are finalised."""
    _track_areas(tracks, masks)
    if iou_type == "bbox":
        for tr in tracks:
            if tr.boxes is None:
                tr.boxes = _rle_boxes(masks, tr, tr.length)
            if not len(tr.mask_idx):  # bbox-only result: its area ranges use box areas
                a = tr.boxes[:, 2] * tr.boxes[:, 3]
                a = a[np.isfinite(a) & (a != 0)]
                tr.avg_area = float(a.mean()) if a.size else 0.0


def _field_problem(res: dict) -> str | None:
    if not _is_int(res["video_id"]):
        return f"video_id must be an integer, got {res['video_id']!r}"
    if not _is_int(res["category_id"]):
        return f"category_id must be an integer, got {res['category_id']!r}"
    score = res["score"]
    if not _is_number(score) or not math.isfinite(score):
        return f"score must be a finite number, got {score!r}"
    segs = res.get("segmentations")
    if "segmentations" in res and not isinstance(segs, list):
        return f"segmentations must be a list (one RLE or null per frame), got {json_type_name(segs)}"
    return None


def _track_areas(tracks: list[Track], masks: MaskStore) -> None:
    """avg_area of result tracks: mean of the non-zero RLE areas of all entries (official loadRes).

    The areas are exact integers, so a plain float64 sum equals numpy's pairwise one.
    """
    if not tracks:
        return
    counts = np.array([len(t.mask_idx) for t in tracks])
    flat = np.concatenate([t.mask_idx for t in tracks]) if counts.sum() else np.zeros(0, np.int64)
    areas = masks.area[flat]
    owner = np.repeat(np.arange(len(tracks)), counts)
    nz = areas != 0
    sums = np.bincount(owner[nz], weights=areas[nz], minlength=len(tracks)).astype(np.float64)
    ns = np.bincount(owner[nz], minlength=len(tracks))
    avg = np.divide(sums, ns, out=np.zeros_like(sums), where=ns > 0)
    for tr, a in zip(tracks, avg.tolist()):
        tr.avg_area = a


def _id_range(ids: set[int]) -> str:
    if not ids:
        return "none"
    lo, hi = min(ids), max(ids)
    if len(ids) == hi - lo + 1:
        return f"{lo}..{hi}"
    return f"{len(ids)} ids from {lo} to {hi}"


def _looks_zero_based(data: list, gt_ids: set[int]) -> Issue | None:
    """An error when the results use video ids 0..N-1 while the GT uses 1..N (dataset index vs id)."""
    if not gt_ids or 0 in gt_ids or min(gt_ids) != 1:
        return None
    vids = [r.get("video_id") for r in data if isinstance(r, dict)]
    ints = [v for v in vids if _is_int(v)]
    if 0 not in ints:
        return None
    if not all((v + 1) in gt_ids for v in ints):  # every id, shifted by one, must be a GT video
        return None
    first = next(i for i, r in enumerate(data) if isinstance(r, dict) and r.get("video_id") == 0)
    return Issue(
        "error", IssueKind.ZERO_BASED_IDS,
        f"results use 0-based video ids (results[{first}].video_id is 0, but the ground-truth ids start "
        f"at 1): add 1 to every video_id (the GT id is the dataset index + 1)", first,
    )


def validate_results(
    gt: dict | str | Path | GroundTruth,
    results: list | str | Path,
    iou_type: IouType = "segm",
) -> list[Issue]:
    """Check a results file against a ground truth without evaluating.

    Returns every problem found (errors first, each naming the entry index and field); an empty list
    means the file is a clean YouTube-VIS / CodaLab submission for this ground truth.
    GT-level warnings (e.g. annotation id 0) are included. A ground truth that cannot be parsed
    raises `SipvisError`.
    """
    gt_parsed = gt if isinstance(gt, GroundTruth) else parse_gt(gt, iou_type)
    res = parse_results(gt_parsed, results, iou_type)
    issues = res.issues + gt_parsed.warnings
    return sorted(issues, key=lambda x: x.level != "error")
