"""How the network's thread pools are sized and how they wait when a model command runs: chosen, not
inherited.

The pipeline has its own threads beside the network's: the reader (decode + host resize, FFmpeg's
codec threads) and the writer (RLE, JSON, drawing, encoding); the machine may run other work too.

Size (`choose_threads`): the network gets every CPU this process may run on (its affinity mask, e.g. a
container's cpuset), shared among the processes torchrun starts on the machine (`LOCAL_WORLD_SIZE`).
An explicit choice always wins: `--threads N` (`requested`), else `OMP_NUM_THREADS` when set (torch
read it at start and keeps it).

Waiting (`passive_waits`, `pools_spin`): a pool thread with no work sleeps instead of spinning on its
core. The CLI sets `OMP_WAIT_POLICY=PASSIVE` before torch loads (torch's OpenMP pool reads it once),
unless the user set it; onnxruntime's pool spins only when `OMP_WAIT_POLICY=ACTIVE`. Spinning threads
held the cores the reader, the writer and other processes needed: on a 2-core machine with one other
busy process, two spinning threads made the R50 network 1.1-1.5x and the demo model 1.3-2x slower than
one thread, where two sleeping threads were as fast as one; on an idle machine they made `sipvis track`
1.8x faster (R50, onnxruntime) than the former rule of one core left to the pipeline (BENCHMARKS.md,
"Threads").

Small eager networks (`fit_threads_to_model`): an eager torch network whose input is under
`SMALL_INPUT_PIXELS` runs on one thread: its operations are too small to share, and on 2 cores the demo
model (256x144) tracked 1.2x faster on one thread than on two (while the R50, 640x360, was 1.6x faster
on two). Exported runtimes keep every core: there the demo model was fastest on two as well.

Only the CLI calls these (`cli.main`, `cli._model_options.build_segmenter`): library code never changes
the pools of the program that imported it.
"""

from __future__ import annotations

import os

from sipvis.errors import SipvisError

WAIT_POLICY = "OMP_WAIT_POLICY"
# an eager network whose input (the config's max_size) has fewer pixels runs on one intra-op thread
SMALL_INPUT_PIXELS = 100_000


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def passive_waits(environ: dict | None = None) -> None:
    """Idle pool threads sleep (`OMP_WAIT_POLICY=PASSIVE`) unless the user chose a policy. Effective only
    before torch is imported: OpenMP reads the variable once, when torch loads it."""
    environ = os.environ if environ is None else environ
    if not environ.get(WAIT_POLICY, "").strip():
        environ[WAIT_POLICY] = "PASSIVE"


def pools_spin(environ: dict | None = None) -> bool:
    """Whether the exported runtimes' pools may spin while waiting: only when `OMP_WAIT_POLICY=ACTIVE`."""
    environ = os.environ if environ is None else environ
    return environ.get(WAIT_POLICY, "").strip().upper() == "ACTIVE"


def choose_threads(requested: int | None = None, cores: int | None = None, default: int | None = None,
                   environ: dict | None = None) -> int | None:
    """The intra-op thread count to set, or None to leave torch's pool as it is (OMP_NUM_THREADS given).

    Args:
        requested: `--threads` (None or 0 = automatic).
        cores: CPUs available (default `available_cores()`).
        default: torch's current pool size (default `torch.get_num_threads()`), an upper bound.
        environ: the environment (default `os.environ`).
    """
    if requested is not None and requested < 0:
        raise SipvisError(f"--threads {requested}: give a positive number of threads, or 0 for automatic")
    environ = os.environ if environ is None else environ
    if user_chose_threads(requested, environ):
        return requested or None  # --threads N, or OMP_NUM_THREADS that torch already applied
    cores = available_cores() if cores is None else cores
    # processes started together by torchrun on this machine share its cores
    cores //= max(1, int(environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    if default is None:
        import torch

        default = torch.get_num_threads()
    return max(1, min(default, cores))


def user_chose_threads(requested: int | None, environ: dict) -> bool:
    """Whether the thread count is the user's: `--threads N` (N > 0) or `OMP_NUM_THREADS` set."""
    return bool(requested) or bool(environ.get("OMP_NUM_THREADS", "").strip())


def set_inference_threads(requested: int | None = None) -> int:
    """Apply `choose_threads` to torch's intra-op pool; returns the pool size now in effect."""
    import torch

    threads = choose_threads(requested)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def fit_threads_to_model(model, device, requested: int | None = None, environ: dict | None = None) -> int:
    """After the model is built: an eager torch network on the CPU with a small input
    (`SMALL_INPUT_PIXELS`) gets one intra-op thread, unless the count was chosen (`--threads`,
    `OMP_NUM_THREADS`). Returns the pool size now in effect."""
    import torch

    chosen = user_chose_threads(requested, os.environ if environ is None else environ)
    # TorchScript runs torch's own kernels on torch's pool
    eager = getattr(model, "runtime", "torch") in ("torch", "torchscript") and torch.device(device).type == "cpu"
    width, height = model.cfg.max_size
    if eager and not chosen and width * height < SMALL_INPUT_PIXELS:
        torch.set_num_threads(1)
    return torch.get_num_threads()
