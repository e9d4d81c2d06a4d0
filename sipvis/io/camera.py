"""Cameras read with OpenCV (`cv2.VideoCapture`), which can ask the driver for a size and a frame rate.

`open_source(0)` opens a camera through FFmpeg at the driver's default mode; `CameraSource` is
what `sipvis live --camera N --width W --height H --fps F` uses. Frames carry the time they were
read (seconds since the first frame), as `pts` in milliseconds, so a recording of a camera keeps
its real timing even when frames are dropped.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from sipvis.errors import SipvisError
from sipvis.io.background import media_warning
from sipvis.io.source import FrameRange, FrameSource, RawFrame

MS = Fraction(1, 1000)  # time base of camera frames: pts are milliseconds


def _quiet_opencv() -> None:
    """OpenCV logs a warning line per backend it tries for a missing camera; our error says it once."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # builds without the logging module
        pass


def linux_cameras() -> list[int]:
    """Indices N of the /dev/videoN devices present (Linux only; empty elsewhere)."""
    found = []
    for path in Path("/dev").glob("video*"):
        m = re.fullmatch(r"video(\d+)", path.name)
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


class CameraSource(FrameSource):
    """A camera (by index) or anything else `cv2.VideoCapture` opens (a file stands in for a camera in tests).

    Args:
        device: camera index, or a path/URL for OpenCV.
        width, height, fps: requested capture mode; the driver picks the closest it supports (a warning
            says when it differs). None keeps the driver's default.

    Iteration ends when the camera stops delivering frames (unplugged, or the end of a file), with a
    `MediaWarning` for a camera. Frames are yielded as they are read: iterate in the thread that reads.

    Raises:
        SipvisError: no camera at that index, or it opens but gives no frame (busy, no permission).
    """

    def __init__(self, device: int | str, width: int | None = None, height: int | None = None,
                 fps: float | None = None) -> None:
        super().__init__(FrameRange(), threaded=False)
        self.device = device
        self.requested = (width, height, fps)
        self.is_camera = isinstance(device, int)
        self.name = f"camera{device}" if self.is_camera else Path(str(device)).stem or "capture"
        self.spec = str(device)
        self.is_live = True
        self.time_base = MS
        self._cap = self._open()
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            what = f"camera {device}" if self.is_camera else str(device)
            raise SipvisError(f"{what} opened but gave no frame (in use by another program, or no permission?)")
        self._first: np.ndarray | None = first
        self.height, self.width = first.shape[:2]
        rate = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = Fraction(rate).limit_denominator(1001) if rate and rate > 0 else Fraction(fps or 30).limit_denominator(1001)
        if self.is_camera:
            self._check_mode(width, height, fps, rate)

    def _open(self) -> cv2.VideoCapture:
        _quiet_opencv()
        if self.is_camera:
            index = int(self.device)
            if sys.platform.startswith("linux") and not Path(f"/dev/video{index}").exists():
                found = linux_cameras()
                seen = f"cameras found: {', '.join(map(str, found))}" if found else "no camera found on this machine"
                raise SipvisError(f"no camera at index {index} (/dev/video{index} does not exist; {seen})")
            cap = cv2.VideoCapture(index)
        else:
            cap = cv2.VideoCapture(str(self.device))
        if not cap.isOpened():
            cap.release()
            what = f"no camera at index {self.device}" if self.is_camera else f"cannot open {self.device}"
            raise SipvisError(f"{what} (OpenCV could not open it)")
        width, height, fps = self.requested
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        if self.is_camera:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer frames queued in the driver = less latency
        return cap

    def _check_mode(self, width: int | None, height: int | None, fps: float | None, rate: float) -> None:
        if (width and width != self.width) or (height and height != self.height):
            media_warning(f"{self.name}: the camera gives {self.width}x{self.height}, not the requested "
                          f"{width or self.width}x{height or self.height}")
        if fps and rate and abs(rate - fps) > 0.5:
            media_warning(f"{self.name}: the camera runs at {rate:g} fps, not the requested {fps:g}")

    def _frames(self, start: float | None) -> Iterator[RawFrame]:
        if self._cap is None:
            self._cap = self._open()
        t0: float | None = None
        count = 0
        try:
            while True:
                if self._first is not None:
                    image, self._first = self._first, None
                else:
                    ok, image = self._cap.read()
                    if not ok or image is None:
                        if self.is_camera:
                            media_warning(f"{self.name}: the camera stopped delivering frames (unplugged?)")
                        return
                now = time.perf_counter()
                t0 = now if t0 is None else t0
                t = now - t0
                yield RawFrame(count, t, round(t * 1000), MS, lambda img=image: np.ascontiguousarray(img))
                count += 1
        finally:
            self.close()

    @property
    def expected_frames(self) -> int | None:
        return None

    def close(self) -> None:
        cap, self._cap = getattr(self, "_cap", None), None
        if cap is not None:
            cap.release()
