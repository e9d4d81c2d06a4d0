"""Small file helpers shared by every module: output folders, one-line error reasons, atomic writes,
and the one JSON reader with the project's error messages."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

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


def temp_file_beside(path: Path, keep_suffix: bool = False) -> tuple[int, Path]:
    """Create a new private file beside `path` for writing it under another name: `.NAME.XXXXXXXX.partial`,
    or with `keep_suffix` `.NAME.XXXXXXXX.partial.EXT` (for writers that pick a format by extension).

    The name is unique per call (`tempfile.mkstemp`: exclusive create, never follows a symlink planted at
    that name), so two runs writing the same output cannot mix their bytes. Returns (open fd, path).
    Raises OSError; `publish` moves the finished file into place.
    """
    suffix = ".partial" + (path.suffix if keep_suffix else "")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    return fd, Path(name)


def publish(tmp: Path, path: Path) -> None:
    """Give the finished temporary file the user's usual mode (mkstemp makes it 0600) and rename it to
    `path` atomically: a reader sees the old file or the new one, never half of one. Raises OSError."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Write `path` all at once or not at all: the block writes to a private temporary file in the same
    folder (`temp_file_beside`), which replaces `path` by an atomic rename only when the block ends
    without an error. An existing `path` is untouched until the rename. Errors become one-line
    `SipvisError`s naming `path`.

    Usage::

        with atomic_write(out, "w", encoding="utf-8") as f:
            json.dump(data, f)
    """
    path = Path(path)
    ensure_folder(path.parent)
    if path.is_dir():
        raise SipvisError(f"cannot write {path}: it is a folder")
    try:
        fd, tmp = temp_file_beside(path)
    except OSError as exc:
        raise SipvisError(f"cannot write {path}: {reason(exc)}") from None
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
        publish(tmp, path)
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


# ------------------------------------------------------------------------------------------ reading


@contextlib.contextmanager
def no_gc():
    """Pause Python's cyclic garbage collector (restored on exit, nesting-safe).

    Loading, parsing and scoring allocate millions of small acyclic objects; every automatic full
    collection walks all live ones, which made large evaluations several times slower.
    Reference counting still frees everything.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


MAX_JSON_DIGITS = 30  # longer integers are no id, count or size: refused instead of overflowing later
_LONG_DIGITS = re.compile(rb"\d{%d}" % (MAX_JSON_DIGITS + 1))


class _HugeInteger(ValueError):
    pass


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise _HugeInteger(len(text.lstrip("-")))
    return int(text)


def load_json(source: str | Path | dict | list, what: str) -> Any:
    """Return `source` itself if it is already parsed, else the parsed JSON file; errors are one line.

    Integers of more than `MAX_JSON_DIGITS` digits and nesting deeper than the interpreter's recursion
    limit are refused with one line too (the former only checked when the bytes hold such a digit run,
    which keeps the fast C parser on ordinary files).
    """
    if isinstance(source, (dict, list)):
        return source
    path = Path(source)
    if not path.exists():
        raise SipvisError(f"{what} file not found: {path}")
    if path.is_dir():
        raise SipvisError(f"{what} path is a directory, expected a JSON file: {path}")
    try:
        with path.open("rb") as fh, no_gc():
            raw = fh.read()
            if _LONG_DIGITS.search(raw):
                return json.loads(raw, parse_int=_bounded_int)
            return json.loads(raw)
    except _HugeInteger as exc:
        raise SipvisError(f"{what} file {path} holds an integer of {exc.args[0]} digits "
                          f"(at most {MAX_JSON_DIGITS} are accepted)") from None
    except RecursionError:
        raise SipvisError(f"{what} file {path} is nested too deeply to be a {what} file") from None
    except json.JSONDecodeError as exc:
        raise SipvisError(
            f"{what} file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise SipvisError(f"{what} file {path} is not valid JSON (not UTF-8 text)") from None
    except ValueError as exc:  # Python's own limit on integer digits (4300)
        raise SipvisError(f"{what} file {path} is not usable JSON ({exc})") from None
    except OSError as exc:
        raise SipvisError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None


def load_json_object(path: str | Path, what: str) -> dict:
    """`load_json` for files that must hold a JSON object (annotation files, configs)."""
    data = load_json(path, what)
    if not isinstance(data, dict):
        raise SipvisError(f"{what} file {path} is not a JSON object (found {json_type_name(data)})")
    return data


def json_type_name(x: Any) -> str:
    """How an error message names a JSON value's type ("an object", "a list", ...)."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(x), type(x).__name__
    )
