"""Training checkpoints: the whole state of a run (model, optimizer, scheduler, gradient scaler, random
generators, position), written atomically and read back by `--resume`.

A checkpoint is data, never code: it holds tensors and plain Python values only (the numpy generator's
state is stored as a tensor), and is read with `torch.load(weights_only=True)`, which refuses any other
object instead of running it. Checkpoints of older sipvis versions hold that numpy state as an array;
numpy's array reconstruction is allowed for them, nothing else.
"""

from __future__ import annotations

import contextlib
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from sipvis.errors import SipvisError

# what the numpy generator state of a checkpoint written before it was stored as a tensor needs
_NUMPY_CORE = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
_OLD_NUMPY_STATE = [_NUMPY_CORE.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def rng_state() -> dict:
    """The state of every random generator training draws from."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # a tuple: a checkpoint of an older version
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):
            torch.cuda.set_rng_state_all(state["cuda"])


def save_state(state: dict, path: Path) -> None:
    """torch.save `state` to `path` all at once or not at all."""
    from sipvis.io.files import atomic_write

    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def resume_path(resume: str | Path, ckpt_dir: Path) -> Path:
    """The checkpoint `--resume` means: "last" is `ckpt_dir/last.pt`."""
    return ckpt_dir / "last.pt" if str(resume) == "last" else Path(resume)


def load_state(path: Path) -> dict:
    """Read a training checkpoint written by `save_state` (one-line errors for anything else)."""
    if not path.is_file():
        raise SipvisError(f"nothing to resume: {path} does not exist")
    try:
        with torch.serialization.safe_globals(_OLD_NUMPY_STATE):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # an object other than tensors and plain values: never run it
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise SipvisError(f"refusing to resume from {path}: it holds Python objects other than tensors and "
                          f"plain values{what}, which could run code; not a sipvis training checkpoint") from None
    except Exception as exc:  # a truncated or foreign file
        raise SipvisError(f"cannot read training checkpoint {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
    if not isinstance(state, dict) or "optimizer" not in state:
        raise SipvisError(f"{path} is not a sipvis training checkpoint")
    return state
