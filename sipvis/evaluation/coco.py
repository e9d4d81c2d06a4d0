"""COCO box and mask AP: pycocotools' own `COCOeval`, so the 12 figures are the official ones exactly, with
the inputs checked first (one-line errors instead of pycocotools' asserts and tracebacks), its printing
kept off the terminal, and the per-class AP read out of its precision array.

    from sipvis.evaluation.coco import evaluate_coco
    r = evaluate_coco("instances_val2017.json", "results.json")   # {"bbox": CocoEvalResult, "segm": ...}
    r["segm"].stats      # 12 figures in COCOeval's order (STAT_NAMES), -1 where undefined
    r["segm"].per_class  # {category name: AP@[.50:.95]}

Results are a list of `{"image_id", "category_id", "score", "bbox"}` and/or `"segmentation"` (RLE or
polygons), as `sipvis segment` and the original's `results2json` write them. Each entry is loaded as
`COCO.loadRes` loads it (an entry with a `bbox` gets `area = w * h`, which the area ranges of mask AP use
too, as in every evaluation of such a file with pycocotools).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sipvis.errors import SipvisError
from sipvis.evaluation.ytvis import STAT_NAMES
from sipvis.io.files import json_type_name, load_json, no_gc

IOU_TYPES = ("bbox", "segm")


@dataclass
class CocoEvalResult:
    """One IoU type's outcome.

    Attributes:
        iou_type: "bbox" or "segm".
        stats: the 12 figures of `COCOeval.summarize` (order of `STAT_NAMES`), -1 where undefined.
        per_class: category name -> AP (IoU .50:.95, area all, maxDets 100), -1 where undefined.
        category_ids: the GT's category ids, in `per_class` order (sorted).
        precision: (T=10, R=101, K, A=4, M=3) `COCOeval.eval["precision"]`.
        warnings: problems that did not stop the evaluation, one line each (e.g. results of categories
            the GT does not have, which COCOeval ignores).
    """

    iou_type: str
    stats: list[float]
    per_class: dict[str, float]
    category_ids: list[int]
    precision: np.ndarray = field(repr=False)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready: ``{"stats": [12], "AP": .., ..., "ARl": .., "per_class": {name: AP}}``."""
        out: dict = {"stats": [float(s) for s in self.stats]}
        out.update({name: float(v) for name, v in zip(STAT_NAMES, self.stats)})
        out["per_class"] = {k: float(v) for k, v in self.per_class.items()}
        return out


def evaluate_coco(gt: str | Path | dict, results: str | Path | list, iou_types: tuple[str, ...] | None = None
                  ) -> dict[str, CocoEvalResult]:
    """Box and/or mask AP of `results` against the COCO annotation file `gt` (paths or parsed JSON).

    Args:
        iou_types: which to compute; None = every type the results support ("bbox" when every entry has
            a box, "segm" when every entry has a segmentation).

    Returns:
        {iou type: CocoEvalResult}, in the order of `IOU_TYPES`.

    Raises:
        SipvisError: a file that is not a COCO annotation/results file, results for images not in the GT,
            a mask of another size than its image, results that lack what an asked IoU type needs.
    """
    gt_data = load_json(gt, "ground-truth")
    res_data = load_json(results, "results")
    images = check_ground_truth(gt_data)
    present = check_results(res_data, images)
    if iou_types is None:
        iou_types = tuple(t for t in IOU_TYPES if t in present)
    missing = [t for t in iou_types if t not in present]
    if missing or not iou_types:
        raise SipvisError(f"the results have no {missing[0] if missing else 'bbox or segmentation'} in every entry; "
                          f"{'their AP cannot be computed' if missing else 'nothing to score'}")
    if "segm" in iou_types and any("segmentation" not in a for a in gt_data.get("annotations") or []):
        raise SipvisError("the ground truth has annotations without a segmentation: mask AP needs them "
                          "(score boxes only with --iou-type bbox)")
    known = {c["id"] for c in gt_data["categories"]}
    unknown = sorted({r["category_id"] for r in res_data} - known)
    warnings = [f"{sum(r['category_id'] in unknown for r in res_data)} results have category ids the ground truth "
                f"does not have ({', '.join(map(str, unknown[:5]))}{', ...' if len(unknown) > 5 else ''}): "
                "they are not scored"] if unknown else []
    return {t: replace(_evaluate_one(gt_data, res_data, t), warnings=warnings) for t in IOU_TYPES if t in iou_types}


def check_ground_truth(data: object) -> dict[int, tuple[int, int]]:
    """The GT's image id -> (height, width); SipvisError (one line) if it is no COCO annotation file."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise SipvisError("the ground truth is not a COCO annotation file (needs 'images' and 'categories' lists)")
    images = {}
    for im in data["images"]:
        if not (isinstance(im, dict) and _is_int(im.get("id")) and _is_int(im.get("height"))
                and _is_int(im.get("width"))):
            raise SipvisError(f"ground truth: an image entry lacks an integer id, height or width: {im!r:.100}")
        images[im["id"]] = (im["height"], im["width"])
    for cat in data["categories"]:
        if not (isinstance(cat, dict) and _is_int(cat.get("id"))):
            raise SipvisError(f"ground truth: a category lacks an integer id: {cat!r:.100}")
    for ann in data.get("annotations") or []:
        if not (isinstance(ann, dict) and ann.get("image_id") in images and "bbox" in ann and "area" in ann):
            raise SipvisError(f"ground truth: an annotation lacks bbox/area or names an unknown image: {ann!r:.100}")
    return images


def check_results(data: object, images: dict[int, tuple[int, int]]) -> set[str]:
    """Check a results list against the GT's images; returns the IoU types every entry supports."""
    if not isinstance(data, list):
        raise SipvisError(f"the results are {json_type_name(data)}, expected a list of detections")
    has_box = has_segm = True
    for i, r in enumerate(data):
        if not isinstance(r, dict) or not _is_int(r.get("category_id")) or not _is_number(r.get("score")):
            raise SipvisError(f"results entry {i} is not a detection with an integer category_id and a score")
        if r.get("image_id") not in images:
            unknown = sum(1 for e in data if isinstance(e, dict) and e.get("image_id") not in images)
            raise SipvisError(f"{unknown} results are for images not in the ground truth "
                              f"(first: image_id {r.get('image_id')!r})")
        box, segm = r.get("bbox"), r.get("segmentation")
        if box is not None and not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
            raise SipvisError(f"results entry {i}: bbox must be 4 numbers [x, y, w, h], got {box!r:.80}")
        if isinstance(segm, dict) and list(segm.get("size") or ()) != list(images[r["image_id"]]):
            raise SipvisError(f"results entry {i}: mask size {segm.get('size')} is not the size of image "
                              f"{r['image_id']} {list(images[r['image_id']])}")
        if segm is not None and not isinstance(segm, (dict, list)):
            raise SipvisError(f"results entry {i}: segmentation must be an RLE object or polygons")
        has_box &= box is not None
        has_segm &= segm is not None
    return {t for t, ok in (("bbox", has_box), ("segm", has_segm)) if ok}


def _evaluate_one(gt_data: dict, res_data: list, iou_type: str) -> CocoEvalResult:
    """pycocotools on private copies of the entries (it writes into them), its prints swallowed."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()), no_gc():
        gt = COCO()
        gt.dataset = {**gt_data, "annotations": [dict(a) for a in gt_data.get("annotations") or []]}
        gt.createIndex()
        if res_data:
            dt = gt.loadRes([dict(r) for r in res_data])
        else:  # loadRes cannot take an empty list; no detection scores 0 wherever there is GT
            dt = COCO()
            dt.dataset = {"images": gt_data["images"], "categories": gt_data["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]
    cat_ids = list(ev.params.catIds)
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt_data["categories"]}
    per_class = {}
    for k, cat_id in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]  # area all, maxDets 100
        per_class[names[cat_id]] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return CocoEvalResult(iou_type, [float(s) for s in ev.stats], per_class, cat_ids, precision)


def _is_int(x: object) -> bool:
    return type(x) is int


def _is_number(x: object) -> bool:
    return type(x) in (int, float) and math.isfinite(x)
