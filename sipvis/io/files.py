"""Small helpers shared by the writers: output folders and one-line error reasons."""

from __future__ import annotations

from pathlib import Path

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
