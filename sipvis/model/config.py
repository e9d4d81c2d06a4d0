"""Model configuration: one dataclass holds everything that shapes the network and its test-time behaviour."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

# YouTube-VIS 2019 categories in label order (label i = category_id i + 1).
YTVIS_2019_CLASSES: tuple[str, ...] = (
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog", "snake", "monkey",
    "hand", "rabbit", "duck", "cat", "cow", "fish", "train", "horse", "turtle", "bear",
    "motorbike", "giraffe", "leopard", "fox", "deer", "owl", "surfboard", "airplane", "truck", "zebra",
    "tiger", "elephant", "snowboard", "boat", "shark", "mouse", "frog", "eagle", "earless_seal",
    "tennis_racket",
)

# COCO 2017 categories in contiguous label order (a COCO-trained SipMask has 80 classes).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)

# The dataset category id of each COCO label (the official annotation files' ids: 1..90 with gaps),
# the order of `COCO_CLASSES`: label 0 -> 1 person, 11 -> 13 stop sign, 79 -> 90 toothbrush.
COCO_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)


@dataclass
class SipMaskConfig:
    """Everything that defines a SipMask model. Defaults = the paper's YouTube-VIS R50 model; the COCO
    image models (`sipvis.model.families.coco_config`) differ only in these fields.

    Attributes:
        class_names: one name per class; the number of classes is their count.
        depth: ResNet depth (18, 34, 50, 101).
        style: "caffe" (stride on the 1x1 conv, the original's choice) or "pytorch" (stride on the 3x3).
        frozen_stages: stem + this many stages have no gradient (1 = stem and stage 1, as the original).
        backbone_width: ResNet stem/stage-1 width (64 = standard; the small demo model uses less).
        fpn_channels / head_channels: width of FPN outputs and of the head towers.
        cls_convs / reg_convs / track_convs: depth of each tower (the original's stacked_convs=3 gives 2/3/2).
        num_bases: basis masks (32); each box predicts 4 x num_bases coefficients (2x2 sub-regions).
        track_channels: width of the tracking embedding.
        max_size: (long, short) side limits of the keep-ratio resize.
        pixel_mean / pixel_std: per-channel normalisation in the input's channel order.
        to_rgb: feed RGB instead of BGR (pytorch-style ImageNet weights expect RGB).
        size_divisor: pad input height/width to a multiple of this.
        nms_pre, score_thr, nms_iou, max_per_img, nms_top_k, mask_thr: test-time post-processing.
        task: "vis" (SipMask-VIS: a tracking branch, one frame of a video at a time) or "image" (the COCO
            image models: no tracking branch, the image post-processing of `postprocess_coco`).
        category_ids: dataset category id of each label (COCO: `COCO_CATEGORY_IDS`); empty: label + 1.
        head_norm: GroupNorm in the head towers and after FeatureAlign (False: tower convs with a bias and
            no norm; FeatureAlign's norm parameters still exist, unused, as in the original).
        dcn_stages: ResNet stages (1-4) whose conv2 is deformable (DCNv1) in block 0 and every block whose
            index is a multiple of `dcn_interval` (SipMask++: (2, 3, 4), interval 3).
        mask_rescoring: the SipMask++ mask re-scoring branch (predicted mask IoU x score).
        resize: "keep_ratio" (fit `max_size` = (long, short)) or "fixed" (exactly `max_size` = (width,
            height), the aspect ratio not kept: the 544x544 models).
        nms: "fast" (YOLACT fast NMS on score x centerness) or "per_class" (greedy NMS per class on the raw
            class probability > score_thr, +1-pixel IoU: the 800x1333 image models).
    """

    class_names: tuple[str, ...] = YTVIS_2019_CLASSES
    depth: int = 50
    style: str = "caffe"
    frozen_stages: int = 1
    backbone_width: int = 64
    fpn_channels: int = 256
    head_channels: int = 256
    cls_convs: int = 2
    reg_convs: int = 3
    track_convs: int = 2
    num_bases: int = 32
    track_channels: int = 512
    basis_channels: int = 512
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    regress_ranges: tuple[tuple[float, float], ...] = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))
    max_size: tuple[int, int] = (640, 360)
    pixel_mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    to_rgb: bool = False
    size_divisor: int = 32
    nms_pre: int = 200
    score_thr: float = 0.03
    nms_iou: float = 0.5
    nms_top_k: int = 200
    max_per_img: int = 10
    mask_thr: float = 0.5
    task: str = "vis"
    category_ids: tuple[int, ...] = ()
    head_norm: bool = True
    dcn_stages: tuple[int, ...] = ()
    dcn_interval: int = 3
    mask_rescoring: bool = False
    resize: str = "keep_ratio"
    nms: str = "fast"
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_tracking_branch(self) -> bool:
        return self.task == "vis"

    def category_id(self, label: int) -> int:
        """The dataset category id of 0-based `label`."""
        return self.category_ids[label] if self.category_ids else label + 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SipMaskConfig":
        """The config a sidecar or [model] table describes; ValueError naming every bad field, in one line."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        problems = config_problems(d)
        if problems:
            raise ValueError("; ".join(problems))
        d = dict(d)
        for key in ("class_names", "strides", "max_size", "pixel_mean", "pixel_std", "category_ids", "dcn_stages"):
            if key in d:
                d[key] = tuple(d[key])
        if "regress_ranges" in d:
            d["regress_ranges"] = tuple(tuple(r) for r in d["regress_ranges"])
        return cls(**d)


def _int(x) -> bool:
    return type(x) is int


def _number(x) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def _ints(x, n: int | None = None, low: int = 1) -> bool:
    return isinstance(x, (list, tuple)) and (n is None or len(x) == n) and len(x) > 0 and all(
        _int(v) and v >= low for v in x)


_AT_LEAST = {"backbone_width": 1, "fpn_channels": 1, "head_channels": 1, "num_bases": 1, "track_channels": 1,
             "basis_channels": 1, "size_divisor": 1, "nms_pre": 1, "nms_top_k": 1, "max_per_img": 1,
             "cls_convs": 0, "reg_convs": 0, "track_convs": 0, "frozen_stages": -1, "dcn_interval": 1}
_CHOICES = {"task": ("vis", "image"), "resize": ("keep_ratio", "fixed"), "nms": ("fast", "per_class")}


def config_problems(d: dict) -> list[str]:
    """One line per value of a model config dict (as read from JSON or TOML) that cannot build a model."""
    out = []
    if "depth" in d and not (_int(d["depth"]) and d["depth"] in (18, 34, 50, 101)):
        out.append(f"depth must be one of 18, 34, 50, 101, got {d['depth']!r}")
    if "style" in d and d["style"] not in ("caffe", "pytorch"):
        out.append(f"style must be 'caffe' or 'pytorch', got {d['style']!r}")
    for key, low in _AT_LEAST.items():
        if key in d and not (_int(d[key]) and d[key] >= low):
            out.append(f"{key} must be an integer >= {low}, got {d[key]!r}")
    if "class_names" in d and not (isinstance(d["class_names"], (list, tuple)) and d["class_names"]
                                   and all(isinstance(c, str) for c in d["class_names"])):
        out.append(f"class_names must be a non-empty list of strings, got {d['class_names']!r:.80}")
    if "max_size" in d and not _ints(d["max_size"], 2):
        out.append(f"max_size must be two positive integers [long, short], got {d['max_size']!r}")
    if "strides" in d and not _ints(d["strides"]):
        out.append(f"strides must be a list of positive integers, got {d['strides']!r}")
    ranges = d.get("regress_ranges", ())
    if not (isinstance(ranges, (list, tuple)) and all(
            isinstance(r, (list, tuple)) and len(r) == 2 and all(_number(v) for v in r) for r in ranges)):
        out.append(f"regress_ranges must be a list of [low, high] number pairs, got {ranges!r:.80}")
    for key in ("pixel_mean", "pixel_std"):
        value = d.get(key, (1.0, 1.0, 1.0))
        if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(_number(v) for v in value)) \
                or key == "pixel_std" and 0 in value:
            out.append(f"{key} must be three finite numbers{' (none zero)' if key == 'pixel_std' else ''}, "
                       f"got {value!r}")
    for key in ("score_thr", "nms_iou", "mask_thr"):
        if key in d and not (_number(d[key]) and 0 <= d[key] <= 1):
            out.append(f"{key} must be a finite number in [0, 1], got {d[key]!r}")
    for key in ("to_rgb", "head_norm", "mask_rescoring"):
        if key in d and type(d[key]) is not bool:
            out.append(f"{key} must be true or false, got {d[key]!r}")
    for key, choices in _CHOICES.items():
        if key in d and d[key] not in choices:
            out.append(f"{key} must be one of {', '.join(choices)}, got {d[key]!r}")
    if "dcn_stages" in d and not (isinstance(d["dcn_stages"], (list, tuple))
                                  and all(_int(v) and 1 <= v <= 4 for v in d["dcn_stages"])):
        out.append(f"dcn_stages must be a list of ResNet stages 1-4, got {d['dcn_stages']!r}")
    ids, names = d.get("category_ids", ()), d.get("class_names")
    if not (isinstance(ids, (list, tuple)) and all(_int(v) for v in ids)) \
            or ids and names is not None and len(ids) != len(names):
        out.append(f"category_ids must be empty or one integer per class, got {ids!r:.80}")
    if "extra" in d and not isinstance(d["extra"], dict):
        out.append(f"extra must be an object, got {d['extra']!r:.80}")
    return out
