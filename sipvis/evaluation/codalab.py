"""Packaging results for the YouTube-VIS CodaLab server (competition 20128 for the 2019 valid set)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from sipvis.errors import SipvisError


def make_codalab_zip(results_json_path: str | Path, zip_path: str | Path) -> Path:
    """Zip a results file as ``results.json`` at the root of `zip_path` (no sub-folder), as CodaLab asks.

    The source file may have any name; inside the zip it is always ``results.json``.
    Returns the zip path.
    """
    src, dst = Path(results_json_path), Path(zip_path)
    if not src.is_file():
        raise SipvisError(f"results file not found: {src}")
    from sipvis.io.files import atomic_write  # here: sipvis.io loads OpenCV and PyAV

    with atomic_write(dst, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(src, arcname="results.json")
    return dst
