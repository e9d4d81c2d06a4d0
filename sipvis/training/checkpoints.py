"""Training checkpoints: the whole state of a run (model, optimizer, scheduler, gradient scaler, random
generators, position), written atomically and read back by `--resume`."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np
import torch

from sipvis.errors import SipvisError


def rng_state() -> dict:
    """The state of every random generator training draws from."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
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
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise SipvisError(f"cannot read training checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or "optimizer" not in state:
        raise SipvisError(f"{path} is not a sipvis training checkpoint")
    return state
