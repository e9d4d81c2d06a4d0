"""How many threads torch's intra-op pool gets when a model command runs: chosen, not inherited.

The pipeline has its own threads beside the network's: the reader (decode + host resize, FFmpeg's
codec threads) and the writer (RLE, JSON, drawing, encoding). With torch's default (one intra-op
thread per core) they oversubscribe the cores: on a 2-core machine the network ran 1.5-4x slower with
two intra-op threads than with one while the reader and writer worked (BENCHMARKS.md, "Threads").

The rule (`choose_threads`): one core is left to the pipeline's own threads, so the network gets
`cores - 1` intra-op threads (at least 1, at most torch's default), where `cores` is the number of CPUs
this process may run on (its affinity mask, e.g. a container's cpuset), shared among the processes
torchrun starts on the machine (`LOCAL_WORLD_SIZE`). An explicit choice always wins:
`--threads N` (`requested`), else `OMP_NUM_THREADS` when set (torch read it at start and keeps it).

Only the CLI's model commands call `set_inference_threads` (`cli._model_options.build_segmenter`): library
code never changes the pool of the program that imported it.
"""

from __future__ import annotations

import os

import torch

from sipvis.errors import SipvisError

# threads kept free for the reader (decode, resize) and the writer (RLE, JSON, drawing, encoding)
PIPELINE_CORES = 1


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_threads(requested: int | None = None, cores: int | None = None, default: int | None = None,
                   environ: dict | None = None) -> int | None:
    """The intra-op thread count to set, or None to leave torch's pool as it is (OMP_NUM_THREADS given).

    Args:
        requested: `--threads` (None or 0 = automatic).
        cores: CPUs available (default `available_cores()`).
        default: torch's current pool size (default `torch.get_num_threads()`).
        environ: the environment (default `os.environ`).
    """
    if requested is not None and requested < 0:
        raise SipvisError(f"--threads {requested}: give a positive number of threads, or 0 for automatic")
    if requested:
        return requested
    environ = os.environ if environ is None else environ
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None
    cores = available_cores() if cores is None else cores
    # processes started together by torchrun on this machine share its cores
    cores //= max(1, int(environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    default = torch.get_num_threads() if default is None else default
    return max(1, min(default, cores - PIPELINE_CORES))


def set_inference_threads(requested: int | None = None) -> int:
    """Apply `choose_threads` to torch's intra-op pool; returns the pool size now in effect."""
    threads = choose_threads(requested)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()
