"""Training: a TOML config, a plain loop, DDP through torchrun, resumable checkpoints.

    from sipvis.training import load_config, train
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

Modules: config (the TOML config and every default), model (building, initialising, trainable
BatchNorm, the module DDP wraps), schedule (optimiser groups, warm-up + steps), data (datasets, batch
loop), checkpoints (training state, resume), loop (the steps of a run), validation (the split run of
`sipvis eval --dataset`); torchrun's layout is `sipvis.engine.distributed`.
"""

from sipvis.training.config import DataConfig, RunConfig, TrainConfig, load_config
from sipvis.training.data import build_datasets
from sipvis.training.loop import TrainProgress, TrainResult, WindowStats, train
from sipvis.training.model import (TrainingModel, create_model, inference_state, init_from_scratch, jitter_generator,
                                   load_init_weights, use_trainable_bn)
from sipvis.training.schedule import WarmupStep, param_groups
from sipvis.training.validation import validate

__all__ = [
    "DataConfig",
    "RunConfig",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingModel",
    "WarmupStep",
    "WindowStats",
    "build_datasets",
    "create_model",
    "inference_state",
    "init_from_scratch",
    "jitter_generator",
    "load_config",
    "load_init_weights",
    "param_groups",
    "train",
    "use_trainable_bn",
    "validate",
]
