"""Shared test fixtures: paths to ../shared, and the CI rule that a missing fixture fails instead of skipping."""

from __future__ import annotations

import os
import sys
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# SIPVIS_SHARED points elsewhere when the fixtures are not beside the repository (a GPU machine, say)
SHARED = Path(os.environ.get("SIPVIS_SHARED") or REPO.parent / "shared")
REFERENCE = SHARED / "reference" / "sipmask_vis"
YTVIS_EVAL = SHARED / "reference" / "ytvis_eval"
MEDIA = SHARED / "media"


def require(path: Path) -> Path:
    """Return `path` if it exists; otherwise skip the test (outside CI) or fail it (under CI=true)."""
    if path.exists():
        return path
    reason = f"fixture {path} is missing (../shared is not beside the repository)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # the media tests also run in an environment without torch
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


class QuietHTTPServer(ThreadingHTTPServer):
    """A test server on 127.0.0.1 that does not print a traceback when a client hangs up mid-response
    (the download and stream tests cut connections on purpose)."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
