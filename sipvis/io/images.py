"""Image sequences: a folder of frames (YouTube-VIS `JPEGImages/<video>/` layout), a glob, or one image.

Files are ordered by natural sort (`frame2` before `frame10`; zero-padded names
sort the same either way). Images carry no timestamps: frames are spaced
1 / fps apart, `Frame.timestamp` is None and `Frame.pts` is the frame index in
units of 1 / fps, so a written video keeps the spacing after `vid_stride`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from sipvis.errors import SipvisError
from sipvis.io.background import media_warning
from sipvis.io.source import FrameRange, FrameSource, RawFrame

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2"}
DEFAULT_IMAGE_FPS = 30.0


def natural_key(path: Path | str) -> list:
    """Sort key that orders embedded numbers by value: `f2.jpg` < `f10.jpg`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, naturally sorted (hidden files skipped)."""
    return sorted(
        (p for p in folder.iterdir() if not p.name.startswith(".") and is_image_file(p)), key=natural_key
    )


def read_image(path: Path) -> np.ndarray | None:
    """(H, W, 3) uint8 BGR, EXIF orientation applied; None if the file cannot be decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # fromfile + imdecode: works for any path encoding
    except OSError:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return image


class ImageSequenceSource(FrameSource):
    """Frames read one file each with OpenCV. Use `open_source` rather than this class directly.

    Args:
        files: the frames in order.
        spec: what the user gave (folder, pattern or file), for messages.
        name: output name (the folder's name, or the pattern's folder).
        fps: frame rate to assume (images have no timing).
    """

    def __init__(
        self,
        files: list[Path],
        spec: str,
        name: str,
        fps: float = DEFAULT_IMAGE_FPS,
        frame_range: FrameRange = FrameRange(),
        threaded: bool = True,
        queue_size: int = 4,
    ) -> None:
        super().__init__(frame_range, threaded, queue_size)
        if not files:
            raise SipvisError(f"no image files in {spec}")
        if fps <= 0:
            raise SipvisError(f"fps must be positive, got {fps}")
        self.files = list(files)
        self.spec = spec
        self.name = name
        self.fps = Fraction(fps).limit_denominator(1001)
        self.time_base = 1 / self.fps
        self.frame_count = len(self.files)
        self.duration = len(self.files) / float(self.fps)
        for path in self.files:
            first = read_image(path)
            if first is not None:
                break
        else:
            raise SipvisError(f"none of the {len(self.files)} images in {spec} could be read")
        self.height, self.width = first.shape[:2]

    def _frames(self, start: float | None) -> Iterator[RawFrame]:
        first = 0 if not start else max(0, int(start * float(self.fps)) - 1)  # the frame range filter is exact
        for index in range(first, len(self.files)):
            yield RawFrame(index, None, index, self.time_base, lambda i=index: self._load(i))

    def input_files(self) -> list[Path]:
        return list(self.files)

    def _load(self, index: int) -> np.ndarray | None:
        path = self.files[index]
        image = read_image(path)
        if image is None:
            media_warning(f"{path}: not a readable image; frame {index} skipped")
            return None
        if image.shape[:2] != (self.height, self.width):
            raise SipvisError(
                f"{path} is {image.shape[1]}x{image.shape[0]} but the sequence started at "
                f"{self.width}x{self.height}; all frames of a sequence must have one size"
            )
        return image
