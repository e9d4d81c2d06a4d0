"""The training loop, as named steps: prepare (model, data, optimiser, resume), one optimisation step,
the logging window, checkpointing, validation, finish.

Logging, validation and checkpoints happen on rank 0; every rank steps, and the window's loss means
are averaged over ranks. A display (the CLI's live view) follows the run through `TrainProgress`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import torch
from torch import nn

from sipvis.engine.distributed import DistInfo, all_reduce_mean, barrier, setup_distributed
from sipvis.engine.stop import StopSignals, stop_signals
from sipvis.errors import SipvisError
from sipvis.model.losses import LossConfig, total_loss
from sipvis.model.sipmask import SipMaskVIS
from sipvis.training.checkpoints import load_state, resume_path, rng_state, save_state, set_rng_state
from sipvis.training.config import RunConfig, check_train_config
from sipvis.training.data import batches, build_datasets
from sipvis.training.model import TrainingModel, create_model, inference_state, jitter_generator, use_trainable_bn
from sipvis.training.schedule import WarmupStep, param_groups


@dataclass
class TrainResult:
    """What a run produced."""

    weights: Path | None
    iterations: int
    output: Path
    last_losses: dict = field(default_factory=dict)
    last_val: dict | None = None


@dataclass
class WindowStats:
    """The logging window that just closed.

    Attributes:
        iteration: iterations done.
        lr: learning rate of the window's last step.
        losses: mean of each loss term (and "loss", the total; "match_acc") over the window and all ranks.
        speed: iterations per second over the window.
    """

    iteration: int
    lr: float
    losses: dict[str, float]
    speed: float


class TrainProgress(Protocol):
    """What a run reports as it goes, on rank 0 only (a display lives in the CLI)."""

    def start(self, total: int, done: int) -> None: ...
    def step(self, iteration: int, window: WindowStats | None) -> None: ...  # window: when one closed
    def validated(self, iteration: int, metrics: dict) -> None: ...
    def interrupted(self, iteration: int, checkpoint: Path) -> None: ...
    def close(self) -> None: ...


class JsonlLog:
    """`log.jsonl`: one JSON object per line, each with its wall-clock time first; inert when off."""

    def __init__(self, path: Path | None) -> None:
        self.file: IO | None = open(path, "a") if path is not None else None

    def write(self, record: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class LossWindow:
    """Sums of the loss terms over the iterations since the last log line."""

    def __init__(self, iteration: int, start_time: float | None = None) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.start_time = time.perf_counter() if start_time is None else start_time
        self.start_iteration = iteration
        self.closed_at = self.start_time

    def add(self, losses: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        self.sums["loss"] = self.sums.get("loss", 0.0) + float(loss.detach())
        self.n += 1

    def close(self, iteration: int, lr: float, info: DistInfo, device: torch.device) -> WindowStats:
        """The means over this window (and all ranks) and the speed since it opened."""
        avg = all_reduce_mean({k: v / self.n for k, v in self.sums.items()}, info, device)
        self.closed_at = time.perf_counter()
        speed = (iteration - self.start_iteration) / max(self.closed_at - self.start_time, 1e-9)
        return WindowStats(iteration, lr, avg, speed)


class Trainer:
    """One run's state and its steps; `train()` drives them."""

    def __init__(self, run: RunConfig, resume: str | Path | None = None,
                 progress: TrainProgress | None = None) -> None:
        tc = self.tc = run.train
        self.run = run
        check_train_config(tc)
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        self.info, self.device = setup_distributed(tc.device)
        self.output = Path(tc.output)
        self.ckpt_dir = self.output / "checkpoints"
        resume_state = load_state(resume_path(resume, self.ckpt_dir)) if resume is not None else None
        self.dataset, self.val = build_datasets(run, run.model)
        categories = getattr(self.dataset, "categories", None)
        self.cfg, model, self.fresh = create_model(run, self.dataset.class_names, resume_state is None,
                                                   categories.ids if categories is not None else ())
        self.wrapped, self.net = self._wrap(model)
        self._schedule()
        self.iteration = 0
        if resume_state is not None:
            self._resume(resume_state)
        self.loader = self._loader()
        self.progress = progress if self.info.main else None
        self.log = JsonlLog(self._start_outputs() if self.info.main else None)
        self.log.write(self._start_record())
        self.last_losses: dict = {}
        self.last_val: dict | None = None

    # ------------------------------------------------------------------------------------ prepare

    def _wrap(self, model: SipMaskVIS) -> tuple[nn.Module, SipMaskVIS]:
        """(what is stepped: the losses module, DDP-wrapped under torchrun; the network saved and validated)."""
        tc, info, device = self.tc, self.info, self.device
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
        # the DDP-wrapped copy shares its parameters with this one
        return wrapped, (wrapped.module if info.enabled else wrapped).model

    def _schedule(self) -> None:
        """Sampler, run length, optimiser, learning-rate schedule, gradient scaler."""
        from sipvis.data.batch import PairSampler

        tc, info = self.tc, self.info
        self.sampler = PairSampler(len(self.dataset), shuffle=True, seed=tc.seed, rank=info.rank,
                                   world_size=info.world_size)
        self.iters_per_epoch = len(self.sampler) // tc.batch_size
        if self.iters_per_epoch == 0:
            raise SipvisError(f"the dataset has {len(self.dataset)} samples: fewer than one batch of "
                              f"{tc.batch_size} per process ({info.world_size} process(es))")
        if tc.iters > 0:
            self.total_iters, step_points = tc.iters, list(tc.step_iters)
        else:
            self.total_iters = tc.epochs * self.iters_per_epoch
            step_points = [s * self.iters_per_epoch for s in tc.steps]
        self.optimizer = torch.optim.SGD(param_groups(self.net, tc), lr=tc.lr, momentum=tc.momentum)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupStep(tc.warmup_iters, tc.warmup_ratio, step_points, tc.gamma, tc.warmup))
        self.use_amp = tc.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        if self.use_amp:  # the scaler skips the first steps while it finds its scale; PyTorch warns about that
            warnings.filterwarnings("ignore",
                                    message="Detected call of `lr_scheduler.step()` before `optimizer.step()`")

    def _resume(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.iteration = int(state["iteration"])

    def _loader(self):
        from torch.utils.data import DataLoader

        from sipvis.data.batch import PairCollate

        return DataLoader(self.dataset, batch_size=self.tc.batch_size, sampler=self.sampler, drop_last=True,
                          num_workers=self.run.data.workers, collate_fn=PairCollate(self.cfg.size_divisor),
                          pin_memory=self.device.type == "cuda")

    def _start_outputs(self) -> Path:
        """The output folder and its config.json (rank 0); returns the log's path."""
        from sipvis.io.files import write_json_atomic

        self.output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.output / "config.json", self.run.to_dict(), indent=2)
        return self.output / "log.jsonl"

    def _start_record(self) -> dict:
        return {"type": "start", "iteration": self.iteration, "total_iters": self.total_iters,
                "iters_per_epoch": self.iters_per_epoch, "world_size": self.info.world_size,
                "device": str(self.device), "amp": self.use_amp,
                "params": sum(p.numel() for p in self.net.parameters()), "freshly_initialised": len(self.fresh)}

    # --------------------------------------------------------------------------------------- steps

    def step(self, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor, float]:
        """One optimisation step on `batch`: (loss terms, total loss, learning rate used)."""
        tc, device, iteration = self.tc, self.device, self.iteration
        batch = batch.to(device)
        gen = jitter_generator(tc.seed, iteration, self.info.rank, device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.use_amp):
            losses = self.wrapped(batch.images, batch.ref_images, batch.targets, gen)  # ref_images: None (image model)
        loss = total_loss(losses)
        if not torch.isfinite(loss):
            raise SipvisError(f"the loss became {float(loss.detach())} at iteration {iteration}; "
                              "lower train.lr or set train.grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if tc.grad_clip > 0 or not self.use_amp:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), tc.grad_clip or math.inf)
            # with AMP the scaler skips non-finite steps; without it they would wreck the weights
            if not self.use_amp and not torch.isfinite(norm):
                raise SipvisError(f"the gradients became non-finite at iteration {iteration}; "
                                  "lower train.lr or set train.grad_clip")
        lr_used = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        return losses, loss, lr_used

    def log_due(self) -> bool:
        return self.iteration % self.tc.log_interval == 0 or self.iteration == self.total_iters

    def log_window(self, window: LossWindow, lr: float) -> None:
        """Close the logging window: average over ranks, one `train` log record, the display."""
        stats = window.close(self.iteration, lr, self.info, self.device)
        self.last_losses = stats.losses
        if not self.info.main:
            return
        eta = (self.total_iters - self.iteration) / max(stats.speed, 1e-9)
        record = {"type": "train", "iteration": self.iteration, "epoch": self.iteration / self.iters_per_epoch,
                  "lr": lr, **{k: round(v, 6) for k, v in stats.losses.items()},
                  "it_s": round(stats.speed, 4),
                  "img_s": round(stats.speed * self.tc.batch_size * self.info.world_size, 3), "eta_s": round(eta, 1)}
        if self.device.type == "cuda":
            record["mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        self.log.write(record)
        if self.progress is not None:
            self.progress.step(self.iteration, stats)

    def save(self, path: Path) -> None:
        """The full training state (rank 0 only), to continue with --resume."""
        save_state({"format": "sipvis-train", "model": self.net.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(), "rng": rng_state(), "iteration": self.iteration,
                    "epoch": self.iteration // self.iters_per_epoch, "config": self.run.to_dict(),
                    "model_config": self.cfg.to_dict()}, path)

    def checkpoint(self) -> None:
        """After a step: last.pt at each epoch end (and every `checkpoint_iters`), epoch_N.pt every
        `checkpoint_interval` epochs."""
        tc, it = self.tc, self.iteration
        epoch_done = it % self.iters_per_epoch == 0
        if self.info.main and (epoch_done or (tc.checkpoint_iters and it % tc.checkpoint_iters == 0)):
            self.save(self.ckpt_dir / "last.pt")
            n = it // self.iters_per_epoch
            if epoch_done and tc.checkpoint_interval and n % tc.checkpoint_interval == 0:
                self.save(self.ckpt_dir / f"epoch_{n}.pt")

    def validation_due(self) -> bool:
        """At the end of every `val_interval`-th epoch but the last (the end of training validates anyway)."""
        it, ipe, vi = self.iteration, self.iters_per_epoch, self.tc.val_interval
        return it % ipe == 0 and bool(vi) and (it // ipe) % vi == 0 and it < self.total_iters

    def validate(self) -> dict | None:
        """Score the validation split on rank 0 (the others wait); the metrics there, else None."""
        from sipvis.training.validation import validate

        if self.val is None:
            return None
        result = None
        if self.info.main:
            result = validate(self.net, self.val.ann_file, self.val.image_dir, self.device,
                              self.run.data.val_max_videos)
            self.net.train()
            self.log.write({"type": "val", "iteration": self.iteration,
                            **{k: v for k, v in result.items() if k not in ("stats", "per_class")},
                            "per_class": result["per_class"]})
            if self.progress is not None:
                self.progress.validated(self.iteration, result)
        if self.info.enabled:
            barrier()
        return result

    def finish(self) -> Path | None:
        """Final training state and inference weights (rank 0), the last validation; the weights' path."""
        from sipvis.checkpoint import save_checkpoint

        weights = None
        if self.info.main:
            self.save(self.ckpt_dir / "last.pt")
            weights = save_checkpoint(self.output / "model", self.cfg, inference_state(self.net),
                                      iterations=self.iteration, trained_with=self.run.to_dict())
            self.log.write({"type": "end", "iteration": self.iteration, "weights": str(weights)})
        if self.val is not None:
            self.last_val = self.validate()
        if self.info.enabled:
            barrier()
        return weights

    def interrupted(self) -> None:
        """Ctrl-C: keep the state after the last completed step, so --resume continues from there."""
        if self.info.main:
            self.save(self.ckpt_dir / "last.pt")
            self.log.write({"type": "interrupted", "iteration": self.iteration})
            if self.progress is not None:
                self.progress.interrupted(self.iteration, self.ckpt_dir / "last.pt")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        self.log.close()


def train(run: RunConfig, resume: str | Path | None = None, progress: TrainProgress | None = None) -> TrainResult:
    """Run (or resume) training as configured. Returns where the final weights are.

    Args:
        run: the configuration.
        resume: a training checkpoint to continue from, or "last" for `output/checkpoints/last.pt`.
        progress: told about the run as it goes (on rank 0); None = no display (the JSONL log is
            still written).
    """
    t = Trainer(run, resume, progress)
    if t.progress is not None:
        t.progress.start(t.total_iters, t.iteration)
    # a first stop signal (Ctrl-C, SIGTERM, SIGHUP) ends training after the step in hand, a second at once.
    # Under torchrun each rank would stop after its own step and leave the others waiting in a collective,
    # so there a signal interrupts at once, as Ctrl-C always did.
    with stop_signals(polling=not t.info.enabled) as stop:
        try:
            _epochs(t, stop)
            weights = t.finish()
        except KeyboardInterrupt:
            t.interrupted()
            raise
        finally:
            t.close()
    return TrainResult(weights, t.iteration, t.output, t.last_losses, t.last_val)


def _epochs(t: Trainer, stop: StopSignals) -> None:
    """Step until `total_iters`, epoch by epoch (resuming mid-epoch where a checkpoint stopped); a stop
    asked for by a signal ends it after a whole step (`stop.check()` raises `Interrupted`)."""
    window = LossWindow(t.iteration)
    while t.iteration < t.total_iters:
        epoch, in_epoch = divmod(t.iteration, t.iters_per_epoch)
        t.sampler.set_epoch(epoch)
        t.sampler.set_start(in_epoch * t.tc.batch_size)
        for batch in batches(t.loader):
            losses, loss, lr = t.step(batch)
            window.add(losses, loss)
            if t.log_due():
                t.log_window(window, lr)
                window = LossWindow(t.iteration, window.closed_at)
            elif t.progress is not None:
                t.progress.step(t.iteration, None)
            t.checkpoint()
            if t.validation_due():
                t.last_val = t.validate()
            stop.check()
            if t.iteration >= t.total_iters:
                break
