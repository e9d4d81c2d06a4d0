"""A training run's configuration: a TOML file with [model], [data] and [train] tables, plus
`section.key=value` overrides. The dataclasses below hold every default of a run.

    run = load_config("configs/synth_demo.toml", ["train.iters=200"])
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sipvis.data.transforms import TrainTransform
from sipvis.errors import SipvisError
from sipvis.model.config import SipMaskConfig, config_problems


@dataclass
class DataConfig:
    """Where the training (and validation) data are and how samples are augmented.

    Attributes:
        format: "ytvis" (YouTube-VIS 2019/2021 or a custom dataset in that format) or "coco".
        root: dataset root; with `split` the files are found as in `sipvis.data.ytvis.find_split`.
        split: training split name.
        ann_file / image_dir: explicit paths instead of root + split.
        val_split (or val_ann_file + val_image_dir): a YouTube-VIS split with ground truth, scored
            every `train.val_interval` epochs ("" = no validation).
        val_max_videos: validate on the first N videos only (0 = all).
        scales: [long, short] resize limits; two entries with scale_mode "range" = multi-scale.
        scale_mode: "range" or "value".
        flip_prob: horizontal flip probability (the same flip for both frames of a pair).
        workers: DataLoader worker processes per training process.
        augment: "none" (resize + flip) or "ssd" (the real-time COCO models' `SSDAugment`: photometric
            distortion, expand, min-IoU crop, fixed resize, flip; COCO data and an image model only).
        resize: "keep-ratio" (scales are [long, short] limits) or "fixed" (scales are [width, height],
            the ratio not kept: the 544 family). Image models only; VIS training keeps the ratio.
        repeat: the dataset repeated this many times per epoch (the original's 3x / 5x of the "6x" /
            "10x" real-time schedules).
    """

    format: str = "ytvis"
    root: str = ""
    split: str = "train"
    ann_file: str = ""
    image_dir: str = ""
    val_split: str = ""
    val_ann_file: str = ""
    val_image_dir: str = ""
    val_max_videos: int = 0
    # the augmentation defaults are the transform's own (one place)
    scales: list = field(default_factory=lambda: [list(s) for s in TrainTransform.scales])
    scale_mode: str = TrainTransform.scale_mode
    flip_prob: float = TrainTransform.flip_prob
    workers: int = 2
    augment: str = "none"
    resize: str = "keep-ratio"
    repeat: int = 1


@dataclass
class TrainConfig:
    """Optimisation, schedule and bookkeeping.

    Attributes:
        epochs: training length in epochs (ignored when `iters` > 0).
        iters: training length in iterations (0 = use epochs).
        steps: epochs after which the learning rate is multiplied by `gamma` (with epochs).
        step_iters: iterations after which it is (with iters).
        batch_size: pairs per process and iteration.
        lr: base learning rate (for the whole batch over all processes; not rescaled).
        momentum, weight_decay: SGD.
        bias_lr_mult, bias_decay_mult: learning-rate and weight-decay multipliers of biases.
        warmup: "linear" (from lr * warmup_ratio to lr over warmup_iters iterations) or "constant"
            (lr * warmup_ratio for warmup_iters iterations, then lr: the original's 800x1333 recipes).
        warmup_iters, warmup_ratio: the warm-up's length and starting factor.
        grad_clip: max gradient norm (0 = no clipping).
        amp: fp16 autocast + gradient scaling when training on CUDA.
        seed: seeds initialisation, data order and augmentation.
        ref_jitter: reference-box jitter amplitude of the tracking loss (0.05 as the original).
        init: "scratch" or any --weights value (sipvis checkpoint, registry name, mmdet-v1 .pth, e.g.
            the COCO SipMask model); mismatching class layers and a missing tracking branch are
            initialised fresh.
        backbone_norm: "frozen" (the original: BatchNorm statistics and affine fixed) or "bn" (trainable
            BatchNorm with batch statistics, for training from scratch; folded back to fixed statistics
            in the saved weights).
        log_interval: iterations between log lines.
        checkpoint_interval: epochs between kept epoch checkpoints (last.pt is refreshed as well).
        checkpoint_iters: also refresh last.pt every that many iterations (0 = only per epoch).
        val_interval: epochs between validations (0 = never; the end of training always validates
            when a validation split is set).
        output: output folder.
        device: "auto", "cpu", "cuda" (with torchrun, each process takes cuda:LOCAL_RANK).
        threads: CPU threads of each training process (0 = PyTorch's default). On a shared or small
            machine 1 is often much faster than an oversubscribed default.
    """

    epochs: int = 12
    iters: int = 0
    steps: list = field(default_factory=lambda: [8, 11])
    step_iters: list = field(default_factory=list)
    gamma: float = 0.1
    batch_size: int = 8
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 1e-4
    bias_lr_mult: float = 2.0
    bias_decay_mult: float = 0.0
    warmup: str = "linear"
    warmup_iters: int = 1000
    warmup_ratio: float = 1.0 / 80
    grad_clip: float = 0.0
    amp: bool = True
    seed: int = 0
    ref_jitter: float = 0.05
    init: str = "scratch"
    backbone_norm: str = "frozen"
    log_interval: int = 20
    checkpoint_interval: int = 1
    checkpoint_iters: int = 0
    val_interval: int = 1
    output: str = "runs/train"
    device: str = "auto"
    threads: int = 0


@dataclass
class RunConfig:
    """A whole training run: `model` holds SipMaskConfig fields (class_names may be left out: they
    come from the dataset)."""

    model: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = ""

    def to_dict(self) -> dict:
        return {"model": dict(self.model), "data": asdict(self.data), "train": asdict(self.train)}


def _parse_value(text: str) -> Any:
    """TOML value if it parses ('0.01', 'true', '[[640, 360]]', '"x"'), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *,
                output_from_name: bool = False) -> RunConfig:
    """Read a TOML run config ([model], [data], [train] tables) and apply `section.key=value` overrides.

    With `output_from_name` (what `sipvis train` does), a run whose file and overrides leave
    train.output unset writes to runs/<config file stem> instead of TrainConfig's default.
    """
    raw: dict = {}
    source = ""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise SipvisError(f"config not found: {p}")
        try:
            raw = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SipvisError(f"{p} is not valid TOML: {exc}") from None
        source = str(p)
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise SipvisError(f"override {item!r} must look like section.key=value, e.g. train.lr=0.01")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or parts[0] not in ("model", "data", "train"):
            raise SipvisError(f"override key {key!r} must be model.KEY, data.KEY or train.KEY")
        raw.setdefault(parts[0], {})[parts[1]] = _parse_value(value.strip())
    unknown = sorted(set(raw) - {"model", "data", "train"})
    if unknown:
        raise SipvisError(f"unknown config table [{unknown[0]}]: use [model], [data] and [train]")
    model = dict(raw.get("model", {}))
    known_model = {f.name for f in fields(SipMaskConfig)}
    bad = sorted(set(model) - known_model)
    if bad:
        raise SipvisError(f"unknown [model] key {bad[0]!r}")
    problems = config_problems(model)
    if problems:  # by value, before any network is built from them
        raise SipvisError(f"{source or 'config overrides'}: [model] " + "; ".join(problems))
    run = RunConfig(model=model, data=_build(DataConfig, raw.get("data", {}), "data"),
                    train=_build(TrainConfig, raw.get("train", {}), "train"), source=source)
    problems = run_problems(run)
    if problems:
        raise SipvisError(f"{source or 'config overrides'}: " + "; ".join(problems))
    if output_from_name and path is not None and "output" not in raw.get("train", {}):
        run.train.output = str(Path("runs") / Path(path).stem)
    return run


def _build(cls, values: dict, table: str):
    known = {f.name: f for f in fields(cls)}
    out = cls()
    for key, value in values.items():
        if key not in known:
            raise SipvisError(f"unknown [{table}] key {key!r}; known: {', '.join(sorted(known))}")
        default = getattr(out, key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise SipvisError(f"[{table}] {key} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SipvisError(f"[{table}] {key} must be a number, got {value!r}")
            if not math.isfinite(value):  # TOML has nan and inf
                raise SipvisError(f"[{table}] {key} must be a finite number, got {value!r}")
            value = type(default)(value) if isinstance(default, float) or float(value).is_integer() else value
        if isinstance(default, str) and not isinstance(value, str):
            raise SipvisError(f"[{table}] {key} must be a string, got {value!r}")
        if isinstance(default, list) and not isinstance(value, list):
            raise SipvisError(f"[{table}] {key} must be a list, got {value!r}")
        setattr(out, key, value)
    return out


_RUN_CHOICES = (("data", "augment", ("none", "ssd")), ("data", "resize", ("keep-ratio", "fixed")),
                ("train", "warmup", ("linear", "constant")))


def run_problems(run: RunConfig) -> list[str]:
    """One line per [data] / [train] value that cannot make a run, and per combination that does not fit
    the model's task (image models train on COCO-format data, one image at a time)."""
    out = []
    for table, key, choices in _RUN_CHOICES:
        value = getattr(getattr(run, table), key)
        if value not in choices:
            out.append(f"{table}.{key} must be one of {', '.join(choices)}, got {value!r}")
    dc, image = run.data, run.model.get("task", "vis") == "image"
    if dc.repeat < 1:
        out.append(f"data.repeat must be an integer >= 1, got {dc.repeat!r}")
    if not image and (dc.augment != "none" or dc.resize != "keep-ratio"):
        out.append("data.augment and data.resize apply to image models (model.task = \"image\")")
    if image and dc.format != "coco":
        out.append(f"an image model (model.task = \"image\") trains on data.format = \"coco\", got {dc.format!r}")
    if image and (dc.val_split or dc.val_ann_file):
        out.append("validation while training an image model is not supported: score the saved weights "
                   "with `sipvis eval --dataset coco` (leave data.val_split empty)")
    # the model's input (model.resize: keep_ratio | fixed) and the data's resize are one choice in two tables
    model_resize = str(run.model.get("resize", "keep_ratio"))
    if dc.augment == "ssd" and dc.resize != "fixed":
        out.append("data.augment = \"ssd\" resizes to a fixed size: set data.resize = \"fixed\"")
    elif image and model_resize.replace("_", "-") != dc.resize:
        out.append(f"model.resize ({model_resize}) and data.resize ({dc.resize}) must agree: both fixed (the "
                   "544x544 models) or keep_ratio / keep-ratio (the 1333x800 models)")
    return out


def check_train_config(tc: TrainConfig) -> None:
    """The [train] values whose meaning is checked before a run starts."""
    if tc.backbone_norm not in ("frozen", "bn"):
        raise SipvisError(f"train.backbone_norm must be 'frozen' or 'bn', got {tc.backbone_norm!r}")
    if tc.batch_size < 1:
        raise SipvisError("train.batch_size must be at least 1")


def resolve_model_config(run: RunConfig, class_names: tuple[str, ...],
                         category_ids: tuple[int, ...] = ()) -> SipMaskConfig:
    """The model config: [model] values, class names (and, for image models, category ids) from the
    dataset unless given. An image model (`task = "image"`) starts from its family's config
    (`families.coco_config`: the family is chosen by depth, resize ("fixed" = real-time), head_norm and
    mask_rescoring / dcn_stages (SipMask++)); the other [model] values override it."""
    values = dict(run.model)
    if "class_names" in values and len(values["class_names"]) != len(class_names):
        raise SipvisError(f"[model] class_names has {len(values['class_names'])} classes but the dataset has "
                          f"{len(class_names)}")
    values.setdefault("class_names", list(class_names))
    if values.get("task") == "image":
        values = {**_image_family(values), **values}
        if category_ids and len(category_ids) == len(values["class_names"]):
            values.setdefault("category_ids", list(category_ids))
    try:
        return SipMaskConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise SipvisError(f"invalid [model] config: {exc}") from None


def _image_family(values: dict) -> dict:
    """The family config (`families.coco_config`) that a [model] table of an image model selects."""
    from sipvis.model.families import coco_config

    plus = bool(values.get("mask_rescoring", False) or values.get("dcn_stages"))
    base = coco_config(depth=values.get("depth", 50), realtime=values.get("resize", "keep_ratio") == "fixed",
                       head_norm=values.get("head_norm", True), plus=plus,
                       class_names=tuple(values["class_names"]))
    out = base.to_dict()
    out.pop("category_ids")  # the dataset's own, set by the caller (COCO's for the COCO files)
    return out
