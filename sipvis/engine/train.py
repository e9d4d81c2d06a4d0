"""Training: a TOML config, a plain loop, DDP through torchrun, resumable checkpoints.

    from sipvis.engine.train import load_config, train
    run = load_config("configs/synth_demo.toml", ["train.iters=200"])
    result = train(run)                 # -> TrainResult(weights=..., iterations=..., last_val=...)

The recipe is the original's: SGD (momentum 0.9, weight decay 1e-4; biases at 2x the learning rate
and without weight decay), linear warm-up, step decay, the SipMask-VIS losses on (frame, reference
frame) pairs. Mixed precision (fp16 autocast + gradient scaling) on CUDA. One process per device;
`torchrun --nproc_per_node N -m sipvis.cli.train ...` (or `torchrun ... $(which sipvis) train ...`)
runs data-parallel with a distributed sampler, gradients averaged by DDP, logging, validation and
checkpoints on rank 0 (gloo on CPU, NCCL on CUDA).

Outputs under `train.output`:
    log.jsonl                 one JSON object per logged iteration / validation
    checkpoints/last.pt       full training state (model, optimizer, scheduler, scaler, RNG, position)
    checkpoints/epoch_N.pt    the same at the end of epoch N (every `checkpoint_interval` epochs)
    model.safetensors/.json   final weights as a sipvis checkpoint (`--weights` loads them)
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import time
import tomllib
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from sipvis.errors import SipvisError
from sipvis.model.backbone import BasicBlock, Bottleneck, FrozenBatchNorm2d
from sipvis.model.config import SipMaskConfig
from sipvis.model.head import SipMaskHead
from sipvis.model.losses import FrameTargets, LossConfig, compute_losses, total_loss
from sipvis.model.sipmask import SipMaskVIS

# ----------------------------------------------------------------------------------------- config


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
    scales: list = field(default_factory=lambda: [[640, 360]])
    scale_mode: str = "range"
    flip_prob: float = 0.5
    workers: int = 2


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
        warmup_iters, warmup_ratio: linear warm-up from lr * ratio to lr over that many iterations.
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


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a TOML run config ([model], [data], [train] tables) and apply `section.key=value` overrides."""
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
    return RunConfig(model=model, data=_build(DataConfig, raw.get("data", {}), "data"),
                     train=_build(TrainConfig, raw.get("train", {}), "train"), source=source)


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
            value = type(default)(value) if isinstance(default, float) or float(value).is_integer() else value
        if isinstance(default, str) and not isinstance(value, str):
            raise SipvisError(f"[{table}] {key} must be a string, got {value!r}")
        if isinstance(default, list) and not isinstance(value, list):
            raise SipvisError(f"[{table}] {key} must be a list, got {value!r}")
        setattr(out, key, value)
    return out


# ------------------------------------------------------------------------------------ distributed


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_spec: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's environment; start the process group (NCCL on CUDA, gloo on CPU)."""
    from sipvis.engine.inference import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_spec)
    if device.type == "cuda" and info.enabled:
        if info.local_rank >= torch.cuda.device_count():
            raise SipvisError(f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def _all_reduce_mean(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    if not info.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


# ----------------------------------------------------------------------------------- model pieces


class TrainingModel(nn.Module):
    """What DDP wraps: current and reference frames through one backbone pass, the full head on the
    current frames, the tracking tower on the reference frames, then the losses.

    Args:
        model: the network.
        loss_cfg: loss settings.
    """

    def __init__(self, model: SipMaskVIS, loss_cfg: LossConfig) -> None:
        super().__init__()
        self.model = model
        self.loss_cfg = loss_cfg

    def forward(self, images: torch.Tensor, ref_images: torch.Tensor, targets: list[FrameTargets],
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """images, ref_images: (B, 3, Hp, Wp) -> dict of loss terms (float32 scalars)."""
        b = images.shape[0]
        m = self.model
        feats = m.neck(m.backbone(torch.cat((images, ref_images))))
        out = m.head([f[:b] for f in feats], with_track=True)
        ref_track = m.head.track_map([f[b:] for f in feats[:3]])
        with torch.autocast(images.device.type, enabled=False):
            return compute_losses(out, ref_track.float(), targets, m.cfg, self.loss_cfg, generator)


def init_from_scratch(model: SipMaskVIS) -> None:
    """Initialisation for training without pretrained weights.

    Backbone: He initialisation, each residual branch's last conv at zero (the network starts as its
    shortcuts, which trains stably). Neck and head: the original's initialisation, except the two
    basis-mask layers, which get He initialisation too: with the original's N(0, 0.01) the basis
    masks and the coefficients both start near zero, their product's gradients vanish and the mask
    loss stays at log 2 for a long time (the original only ever fine-tunes pretrained weights).
    """
    for m in model.backbone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.conv3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.conv2.weight)
    model.init_weights()
    for conv in (model.head.basis_fuse, model.head.basis_out):
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(conv.bias)


def use_trainable_bn(model: SipMaskVIS) -> int:
    """Replace the backbone's FrozenBatchNorm2d layers outside its frozen stages by BatchNorm2d layers
    with the same statistics and affine values (same state-dict names, plus num_batches_tracked).
    Returns how many were replaced."""
    fs = model.cfg.frozen_stages
    frozen = (["bn1", "conv1"] if fs >= 0 else []) + [f"layer{i}." for i in range(1, fs + 1)]
    count = 0
    for name, module in list(model.backbone.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, FrozenBatchNorm2d) or any(full.startswith(p) for p in frozen):
                continue
            bn = nn.BatchNorm2d(child.weight.numel(), eps=child.eps).to(child.weight.device)
            with torch.no_grad():
                bn.weight.copy_(child.weight)
                bn.bias.copy_(child.bias)
                bn.running_mean.copy_(child.running_mean)
                bn.running_var.copy_(child.running_var)
            setattr(module, child_name, bn)
            count += 1
    return count


def inference_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict loadable by `SipMaskVIS` (BatchNorm's num_batches_tracked dropped), on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def load_init_weights(model: SipMaskVIS, spec: str) -> list[str]:
    """Initialise `model` from any --weights value (`build_model` with the model's config as target).
    Returns the keys left freshly initialised: those keep `model`'s own initial values."""
    from sipvis.checkpoint import build_model

    loaded, report = build_model(spec, target=model.cfg)
    fresh = set(report.reinitialised)
    model.load_state_dict({k: v for k, v in loaded.state_dict().items() if k not in fresh}, strict=False)
    return [k for k in model.state_dict() if k in fresh]


def create_model(run: RunConfig, class_names: tuple[str, ...], initialise: bool = True
                 ) -> tuple[SipMaskConfig, SipMaskVIS, list[str]]:
    """Seed everything with `train.seed`, build the network and initialise it as `train.init` says.
    Returns (config, model, keys left freshly initialised when loading weights)."""
    tc = run.train
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    random.seed(tc.seed)
    cfg = resolve_model_config(run, class_names)
    model = SipMaskVIS(cfg)
    fresh: list[str] = []
    if initialise:
        if tc.init == "scratch":
            init_from_scratch(model)
        else:
            model.init_weights()
            fresh = load_init_weights(model, tc.init)
    return cfg, model, fresh


def jitter_generator(seed: int, iteration: int, rank: int, device: torch.device) -> torch.Generator:
    """Random source of the reference-box jitter of one iteration on one process: a pure function of
    (seed, iteration, rank), so resuming and worker counts do not change the run."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + iteration) * 64 + rank)


# ---------------------------------------------------------------------------------------- schedule


class WarmupStep:
    """Learning-rate factor at iteration i: linear warm-up (mmcv's: 1 - (1 - i/W)(1 - ratio)) times
    gamma ** (number of step points <= i)."""

    def __init__(self, warmup_iters: int, warmup_ratio: float, step_points: list[int], gamma: float) -> None:
        self.warmup_iters, self.warmup_ratio = warmup_iters, warmup_ratio
        self.step_points, self.gamma = sorted(int(s) for s in step_points), gamma

    def __call__(self, i: int) -> float:
        factor = self.gamma ** sum(1 for s in self.step_points if i >= s)
        if i < self.warmup_iters:
            factor *= 1 - (1 - i / self.warmup_iters) * (1 - self.warmup_ratio)
        return factor


def param_groups(model: nn.Module, tc: TrainConfig) -> list[dict]:
    """Two groups: weights (lr, weight decay) and biases (lr x bias_lr_mult, decay x bias_decay_mult)."""
    weights, biases = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (biases if name.endswith(".bias") else weights).append(p)
    return [{"params": weights, "lr": tc.lr, "weight_decay": tc.weight_decay},
            {"params": biases, "lr": tc.lr * tc.bias_lr_mult, "weight_decay": tc.weight_decay * tc.bias_decay_mult}]


# -------------------------------------------------------------------------------------------- data


def build_datasets(run: RunConfig, cfg_model: dict):
    """(training dataset, validation (ann_file, image_dir) or None)."""
    from sipvis.data.coco import COCODataset
    from sipvis.data.transforms import TrainTransform
    from sipvis.data.ytvis import YTVISDataset, category_table, find_split, load_json_file

    dc = run.data
    mean = cfg_model.get("pixel_mean", SipMaskConfig.pixel_mean)
    std = cfg_model.get("pixel_std", SipMaskConfig.pixel_std)
    to_rgb = cfg_model.get("to_rgb", SipMaskConfig.to_rgb)
    transform = TrainTransform(scales=tuple(tuple(s) for s in dc.scales), scale_mode=dc.scale_mode,
                               flip_prob=dc.flip_prob, mean=tuple(mean), std=tuple(std), to_rgb=to_rgb)
    if dc.ann_file:
        ann, images = Path(dc.ann_file), Path(dc.image_dir or ".")
    elif dc.root:
        if dc.format == "coco":
            ann, images = Path(dc.root) / "annotations" / f"instances_{dc.split}.json", Path(dc.root) / dc.split
        else:
            s = find_split(dc.root, dc.split)
            ann, images = s.ann_file, s.image_dir
    else:
        raise SipvisError("no training data: set data.root (+ data.split) or data.ann_file + data.image_dir")
    if dc.format == "ytvis":
        dataset = YTVISDataset(ann, images, transform)
    elif dc.format == "coco":
        dataset = COCODataset(ann, images, transform)
    else:
        raise SipvisError(f"data.format must be 'ytvis' or 'coco', got {dc.format!r}")
    val = None
    if dc.val_ann_file:
        val = (Path(dc.val_ann_file), Path(dc.val_image_dir or "."))
    elif dc.val_split:
        s = find_split(dc.root, dc.val_split)
        val = (s.ann_file, s.image_dir)
    if val is not None:
        gt = load_json_file(val[0], "validation annotation file")
        if not gt.get("annotations"):
            val = None  # a split without ground truth (e.g. YouTube-VIS valid): nothing to score
        elif category_table(gt.get("categories") or [])[1] != dataset.class_names:
            raise SipvisError(f"the validation split {val[0]} has other categories than the training data")
    return dataset, val


# --------------------------------------------------------------------------------------- validation


def validate(model: SipMaskVIS, ann_file: Path, image_dir: Path, device: torch.device, max_videos: int = 0,
             dtype: torch.dtype = torch.float32) -> dict:
    """Segment and track every video of a YouTube-VIS split with ground truth; AP/AR of the results.

    Returns the evaluator's `as_dict()` (AP, AP50, ..., per_class). The model is left in eval mode.
    """
    import cv2

    from sipvis.data.ytvis import category_table, load_json_file
    from sipvis.engine.inference import Segmenter
    from sipvis.evaluation import evaluate
    from sipvis.io.ytvis_results import VideoResultsBuilder

    gt = load_json_file(ann_file, "validation annotation file")
    cat_ids = sorted(int(c["id"]) for c in gt["categories"])
    label_to_cat = dict(enumerate(cat_ids))
    _, names = category_table(gt["categories"])
    videos = gt["videos"][:max_videos] if max_videos > 0 else gt["videos"]
    if max_videos > 0:
        keep = {int(v["id"]) for v in videos}
        gt = dict(gt, videos=videos, annotations=[a for a in gt["annotations"] if int(a["video_id"]) in keep])
    segmenter = Segmenter(model, device, dtype, batch_size=4)
    results: list[dict] = []
    for video in videos:
        frames = []
        for name in video["file_names"]:
            img = cv2.imread(str(image_dir / name), cv2.IMREAD_COLOR)
            if img is None:
                raise SipvisError(f"cannot read validation frame {image_dir / name}")
            frames.append(img)
        builder = VideoResultsBuilder(int(video["id"]))
        for frame in segmenter.track(frames):
            builder.add(frame)
        for entry in builder.results():
            label = entry["category_id"] - 1
            if label in label_to_cat:
                entry["category_id"] = label_to_cat[label]
                results.append(entry)
    return evaluate(gt, results).as_dict()


# ------------------------------------------------------------------------------------------- train


@dataclass
class TrainResult:
    """What a run produced."""

    weights: Path | None
    iterations: int
    output: Path
    last_losses: dict = field(default_factory=dict)
    last_val: dict | None = None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):
            torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def resolve_model_config(run: RunConfig, class_names: tuple[str, ...]) -> SipMaskConfig:
    """The model config: [model] values, class names from the dataset unless given."""
    values = dict(run.model)
    if "class_names" in values and len(values["class_names"]) != len(class_names):
        raise SipvisError(f"[model] class_names has {len(values['class_names'])} classes but the dataset has "
                          f"{len(class_names)}")
    values.setdefault("class_names", list(class_names))
    try:
        return SipMaskConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise SipvisError(f"invalid [model] config: {exc}") from None


class _Live:
    """Rich live view on rank 0 (a progress bar with loss terms, lr, it/s, ETA); silent when quiet."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.progress = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), transient=False)
        self.task = self.progress.add_task("train", total=total, completed=start, speed="", stats="")
        self.progress.start()

    def update(self, iteration: int, speed: str = "", stats: str | None = None) -> None:
        if self.progress is not None:
            kw = {"completed": iteration, "speed": speed}
            if stats is not None:
                kw["stats"] = stats
            self.progress.update(self.task, **kw)

    def print(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def train(run: RunConfig, resume: str | Path | None = None, quiet: bool = False) -> TrainResult:
    """Run (or resume) training as configured. Returns where the final weights are.

    Args:
        run: the configuration.
        resume: a training checkpoint to continue from, or "last" for `output/checkpoints/last.pt`.
        quiet: no live view (the JSONL log is still written).
    """
    from torch.utils.data import DataLoader

    from sipvis.checkpoint import save_checkpoint
    from sipvis.data.batch import PairCollate, PairSampler

    tc = run.train
    if tc.backbone_norm not in ("frozen", "bn"):
        raise SipvisError(f"train.backbone_norm must be 'frozen' or 'bn', got {tc.backbone_norm!r}")
    if tc.batch_size < 1:
        raise SipvisError("train.batch_size must be at least 1")
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    info, device = setup_distributed(tc.device)
    output = Path(tc.output)
    ckpt_dir = output / "checkpoints"

    resume_state = None
    if resume is not None:
        path = ckpt_dir / "last.pt" if str(resume) == "last" else Path(resume)
        if not path.is_file():
            raise SipvisError(f"nothing to resume: {path} does not exist")
        try:
            resume_state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a truncated or foreign file
            raise SipvisError(f"cannot read training checkpoint {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(resume_state, dict) or "optimizer" not in resume_state:
            raise SipvisError(f"{path} is not a sipvis training checkpoint")

    dataset, val = build_datasets(run, run.model)
    cfg, model, fresh = create_model(run, dataset.class_names, initialise=resume_state is None)
    if tc.backbone_norm == "bn":
        use_trainable_bn(model)
    model.to(device)
    model.train()
    wrapped: nn.Module = TrainingModel(model, LossConfig(ref_jitter=tc.ref_jitter))
    if info.enabled:
        if device.type == "cuda" and tc.backbone_norm == "bn":
            wrapped = nn.SyncBatchNorm.convert_sync_batchnorm(wrapped)
        wrapped = nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    # the model that is saved and validated (the DDP-wrapped copy shares its parameters)
    net: SipMaskVIS = (wrapped.module if info.enabled else wrapped).model

    sampler = PairSampler(len(dataset), shuffle=True, seed=tc.seed, rank=info.rank, world_size=info.world_size)
    iters_per_epoch = len(sampler) // tc.batch_size
    if iters_per_epoch == 0:
        raise SipvisError(f"the dataset has {len(dataset)} samples: fewer than one batch of {tc.batch_size} "
                          f"per process ({info.world_size} process(es))")
    if tc.iters > 0:
        total_iters, step_points = tc.iters, list(tc.step_iters)
    else:
        total_iters, step_points = tc.epochs * iters_per_epoch, [s * iters_per_epoch for s in tc.steps]
    optimizer = torch.optim.SGD(param_groups(net, tc), lr=tc.lr, momentum=tc.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupStep(tc.warmup_iters, tc.warmup_ratio, step_points, tc.gamma))
    use_amp = tc.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if use_amp:  # the scaler skips the first steps while it finds its scale; PyTorch warns about that
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()` before `optimizer.step()`")

    iteration = 0
    if resume_state is not None:
        net.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        _set_rng_state(resume_state["rng"])
        iteration = int(resume_state["iteration"])

    loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler, drop_last=True,
                        num_workers=run.data.workers, collate_fn=PairCollate(cfg.size_divisor),
                        pin_memory=device.type == "cuda")
    log_file = None
    if info.main:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(json.dumps(run.to_dict(), indent=2))
        log_file = open(output / "log.jsonl", "a")
        _log(log_file, {"type": "start", "iteration": iteration, "total_iters": total_iters,
                        "iters_per_epoch": iters_per_epoch, "world_size": info.world_size, "device": str(device),
                        "amp": use_amp, "params": sum(p.numel() for p in net.parameters()),
                        "freshly_initialised": len(fresh)})
    live = _Live(total_iters, iteration, enabled=info.main and not quiet)

    def save_training(path: Path, epoch_done: int) -> None:
        _atomic_save({"format": "sipvis-train", "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
                      "iteration": iteration, "epoch": epoch_done, "config": run.to_dict(),
                      "model_config": cfg.to_dict()}, path)

    def run_validation() -> dict | None:
        if val is None:
            return None
        result = None
        if info.main:
            result = validate(net, val[0], val[1], device, run.data.val_max_videos)
            net.train()
            _log(log_file, {"type": "val", "iteration": iteration,
                            **{k: v for k, v in result.items() if k not in ("stats", "per_class")},
                            "per_class": result["per_class"]})
            live.print(f"validation @ {iteration}: mask AP {result['AP']:.4f}  AP50 {result['AP50']:.4f}")
        if info.enabled:
            dist.barrier()
        return result

    last_losses: dict = {}
    last_val = None
    window: dict[str, float] = {}
    window_n = 0
    t_window = time.perf_counter()
    it_window = iteration
    try:
        while iteration < total_iters:
            epoch, in_epoch = divmod(iteration, iters_per_epoch)
            sampler.set_epoch(epoch)
            sampler.set_start(in_epoch * tc.batch_size)
            for batch in _batches(loader):
                batch = batch.to(device)
                gen = jitter_generator(tc.seed, iteration, info.rank, device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    losses = wrapped(batch.images, batch.ref_images, batch.targets, gen)
                loss = total_loss(losses)
                if not torch.isfinite(loss):
                    raise SipvisError(f"the loss became {float(loss.detach())} at iteration {iteration}; "
                                      "lower train.lr or set train.grad_clip")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if tc.grad_clip > 0 or not use_amp:
                    scaler.unscale_(optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip or math.inf)
                    # with AMP the scaler skips non-finite steps; without it they would wreck the weights
                    if not use_amp and not torch.isfinite(norm):
                        raise SipvisError(f"the gradients became non-finite at iteration {iteration}; "
                                          "lower train.lr or set train.grad_clip")
                lr_used = optimizer.param_groups[0]["lr"]
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                iteration += 1
                for k, v in losses.items():
                    window[k] = window.get(k, 0.0) + float(v.detach())
                window["loss"] = window.get("loss", 0.0) + float(loss.detach())
                window_n += 1
                if iteration % tc.log_interval == 0 or iteration == total_iters:
                    avg = _all_reduce_mean({k: v / window_n for k, v in window.items()}, info, device)
                    now = time.perf_counter()
                    speed = (iteration - it_window) / max(now - t_window, 1e-9)
                    eta = (total_iters - iteration) / max(speed, 1e-9)
                    last_losses = avg
                    if info.main:
                        record = {"type": "train", "iteration": iteration, "epoch": iteration / iters_per_epoch,
                                  "lr": lr_used, **{k: round(v, 6) for k, v in avg.items()},
                                  "it_s": round(speed, 4), "img_s": round(speed * tc.batch_size * info.world_size, 3),
                                  "eta_s": round(eta, 1)}
                        if device.type == "cuda":
                            record["mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
                        _log(log_file, record)
                        terms = "  ".join(f"{k[5:] if k.startswith('loss_') else k} {v:.3f}"
                                          for k, v in avg.items() if k != "match_acc")
                        live.update(iteration, f"{speed:.2f} it/s",
                                    f"lr {record['lr']:.2e}  {terms}  acc {avg.get('match_acc', 0):.0f}%")
                    window, window_n, t_window, it_window = {}, 0, now, iteration
                else:
                    live.update(iteration)
                epoch_done = iteration % iters_per_epoch == 0
                if info.main and (epoch_done or (tc.checkpoint_iters and iteration % tc.checkpoint_iters == 0)):
                    save_training(ckpt_dir / "last.pt", iteration // iters_per_epoch)
                    n = iteration // iters_per_epoch
                    if epoch_done and tc.checkpoint_interval and n % tc.checkpoint_interval == 0:
                        save_training(ckpt_dir / f"epoch_{n}.pt", n)
                if epoch_done and tc.val_interval and (iteration // iters_per_epoch) % tc.val_interval == 0 \
                        and iteration < total_iters:
                    last_val = run_validation()
                if iteration >= total_iters:
                    break
        weights = None
        if info.main:
            save_training(ckpt_dir / "last.pt", iteration // iters_per_epoch)
            weights = save_checkpoint(output / "model", cfg, inference_state(net), iterations=iteration,
                                      trained_with=run.to_dict())
            _log(log_file, {"type": "end", "iteration": iteration, "weights": str(weights)})
        last_val = run_validation() if val is not None else last_val
        if info.enabled:
            dist.barrier()
    except KeyboardInterrupt:
        if info.main:  # the state after the last completed step: --resume continues from here
            save_training(ckpt_dir / "last.pt", iteration // iters_per_epoch)
            _log(log_file, {"type": "interrupted", "iteration": iteration})
            live.print(f"Interrupted at iteration {iteration}; saved {ckpt_dir / 'last.pt'} (continue with --resume)")
        raise
    finally:
        live.close()
        if log_file is not None:
            log_file.close()
    return TrainResult(weights, iteration, output, last_losses, last_val)


def _batches(loader):
    """Iterate a DataLoader, turning a worker's multi-line re-raised SipvisError into its one line."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except SipvisError as exc:
            text = str(exc)
            if "Original Traceback" in text:
                text = text.strip().splitlines()[-1].split("SipvisError: ", 1)[-1]
                raise SipvisError(text) from None
            raise
        yield batch


def _log(f, record: dict) -> None:
    if f is None:
        return
    record = {"time": round(time.time(), 3), **record}
    f.write(json.dumps(record) + "\n")
    f.flush()


__all__ = [
    "DataConfig",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingModel",
    "WarmupStep",
    "create_model",
    "jitter_generator",
    "load_config",
    "param_groups",
    "train",
    "validate",
]

