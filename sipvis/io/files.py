"""Small helpers shared by the writers: output folders, one-line error reasons, atomic writes."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sipvis.errors import SipvisError


def reason(exc: BaseException) -> str:
    """The human part of an OS/FFmpeg error ("No space left on device"), without errno or traceback."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def ensure_folder(folder: Path) -> None:
    """Create `folder` and its parents if missing; SipvisError if that is impossible."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise SipvisError(f"cannot write into {folder}: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SipvisError(f"cannot create folder {folder}: {reason(exc)}") from None


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Write `path` all at once or not at all: the block writes to a private temporary file in the same
    folder, which replaces `path` by an atomic rename only when the block ends without an error.

    The temporary name is unique per call (`tempfile.mkstemp`: exclusive create, never follows a
    symlink planted at that name), so two runs writing the same output cannot mix their bytes; an
    existing `path` is untouched until the rename. Errors become one-line `SipvisError`s naming `path`.

    Usage::

        with atomic_write(out, "w", encoding="utf-8") as f:
            json.dump(data, f)
    """
    path = Path(path)
    ensure_folder(path.parent)
    if path.is_dir():
        raise SipvisError(f"cannot write {path}: it is a folder")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise SipvisError(f"cannot write {path}: {reason(exc)}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the user's usual mode
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SipvisError(f"cannot write {path}: {reason(exc)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """`path` gets exactly `data`, or stays as it was (see `atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """`path` gets exactly `text` (UTF-8), or stays as it was (see `atomic_write`)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json_atomic(path: str | Path, obj: object, indent: int | None = None) -> None:
    """`path` gets `obj` as JSON, or stays as it was (see `atomic_write`)."""
    write_text_atomic(path, json.dumps(obj, indent=indent))


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once at import, before any writer thread runs
    os.umask(mask)
    return mask


_UMASK = _read_umask()
