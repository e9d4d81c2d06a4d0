"""Per-frame result files: instance-id PNGs and MOTS text. Each is a sink (`sipvis.io.sinks.Sink`):
`write(frame, instances)` (they only read the instances), `close()`.

Instance PNGs (`InstancePngSink`): one PNG per frame, named by the source frame
index (`00000.png`, `00001.png`...; with `vid_stride` only the processed indices).
A pixel's value is the track id of the instance covering it, 0 = background. Files
are 8-bit palette PNGs (palette entry k = the colour track k has in the rendered
video) while every id fits in 0..255; from the first frame with an id above 255 on,
frames are 16-bit greyscale PNGs instead (a warning says so). Either way, reading a
file as an array of indices (e.g. `numpy.array(PIL.Image.open(f))`) gives the ids.

MOTS text (`MotsTxtSink`), the KITTI-MOTS / MOTSChallenge layout: one line per
instance, space-separated:

    frame track_id class_id height width rle

frame is the source frame index, 0-based as KITTI-MOTS numbers frames (`first_frame=1`, `sipvis track
--mots-style mots-challenge`, writes it 1-based, as MOTSChallenge does); track_id the 1-based track id; class_id
the 0-based label + 1 (so 1 is the first class of the model, 0 is never used);
height and width the frame size; rle the COCO compressed RLE string of the mask
(column-major run lengths, as `pycocotools.mask.encode` writes `counts`). Lines
of a frame are sorted by track id; frames appear in the order written. MOTS masks
must not overlap, so overlapping pixels go to the higher-scoring instance (as in
the video and the PNGs), and an instance left with no pixel gets no line.

Both formats resolve overlaps the same way (`render.owner_map`). Both are written
beside their output under a temporary name unique to the run (PNGs into a hidden
`.NAME.XXXXXXXX.partial` folder, MOTS text into `.NAME.XXXXXXXX.partial`) and moved
into place by `close()`, which also runs after Ctrl-C or another output's error,
so an interrupted run keeps every finished frame. After the sink's own write error
(a full disk), or `abort()`, the temporary output is removed and what was at the
output path before stays as it was. A frame that could not be read
(`instances.missing`) gets no PNG and no line; later frames keep their index.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from sipvis.errors import SipvisError
from sipvis.io.background import media_warning
from sipvis.io.colors import track_colors
from sipvis.io.files import ensure_folder, publish, reason, temp_file_beside
from sipvis.io.render import owner_map
from sipvis.io.source import Frame
from sipvis.results import FrameInstances


def id_map(inst: FrameInstances) -> np.ndarray:
    """(H, W) int64 track id of the instance shown at each pixel, 0 for background."""
    ids = np.concatenate([[0], np.asarray(inst.track_ids, np.int64)])
    return ids[owner_map(inst)]


def encode_png(values: np.ndarray, palette_rgb: np.ndarray | None = None) -> bytes:
    """PNG bytes of an (H, W) uint8 image with a palette ((K, 3) uint8 RGB, K <= 256), or of an
    (H, W) uint8/uint16 greyscale image when `palette_rgb` is None. Rows are unfiltered, zlib level 6
    (label maps are long runs of one value, which deflate well without filtering)."""
    if values.ndim != 2 or values.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an (H, W) uint8 or uint16 array, got {values.shape} {values.dtype}")
    h, w = values.shape
    depth = 16 if values.dtype == np.uint16 else 8
    color_type = 0 if palette_rgb is None else 3
    if color_type == 3 and depth != 8:
        raise ValueError("palette PNGs hold 8-bit values")
    pixels = values.astype(">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(h, -1)
    rows = np.zeros((h, 1 + pixels.shape[1]), np.uint8)  # each row starts with filter type 0
    rows[:, 1:] = pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    out = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))]
    if palette_rgb is not None:
        out.append(chunk(b"PLTE", np.ascontiguousarray(palette_rgb, np.uint8).tobytes()))
    out += [chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)), chunk(b"IEND", b"")]
    return b"".join(out)


def _palette_rgb() -> np.ndarray:
    """(256, 3) uint8 RGB: black for 0, then each track id's rendering colour."""
    rgb = track_colors(np.arange(256))[:, ::-1].copy()
    rgb[0] = 0
    return rgb


class InstancePngSink:
    """Writes one instance-id PNG per frame into `folder` (created if missing). See the module docstring.

    Args:
        folder: output folder.
        digits: zero-padding of the file names (5: `00000.png`, as YouTube-VIS names frames).
    """

    def __init__(self, folder: str | Path, digits: int = 5) -> None:
        self.folder = Path(folder)
        self.digits = digits
        self._palette = _palette_rgb()
        self._wide = False  # switched to 16-bit greyscale after an id > 255
        self.frames_written = 0
        self._failed = False
        ensure_folder(self.folder.parent)
        if self.folder.exists() and not self.folder.is_dir():
            raise SipvisError(f"cannot write into {self.folder}: it is a file, not a folder")
        try:  # the frames wait here until `close`: a failed run leaves the folder as it was
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", suffix=".partial",
                                                  dir=self.folder.parent))
        except OSError as exc:
            raise SipvisError(f"cannot create folder {self.folder}: {reason(exc)}") from None

    def path_for(self, index: int) -> Path:
        return self.folder / f"{index:0{self.digits}d}.png"

    def write(self, frame: Frame | None, instances: FrameInstances) -> None:
        """Write the PNG of `instances` (`frame`, the image, is not needed: None is fine)."""
        if instances.missing:  # a gap: no file, later frames keep their index
            return
        ids = id_map(instances)
        if not self._wide and ids.max(initial=0) > 255:
            if ids.max() > 65535:
                raise SipvisError(f"track id {ids.max()} does not fit in a 16-bit PNG")
            self._wide = True
            media_warning(
                f"{self.folder}: track id {ids.max()} > 255; from frame {instances.index} on, PNGs are 16-bit greyscale"
            )
        if self._wide:
            data = encode_png(ids.astype(np.uint16))
        else:
            data = encode_png(ids.astype(np.uint8), self._palette)
        try:  # a plain write: the staging folder is private until `close` moves its files
            (self._staging / self.path_for(instances.index).name).write_bytes(data)
        except OSError as exc:
            self._failed = True
            raise SipvisError(f"cannot write {self.path_for(instances.index)}: {reason(exc)}") from None
        self.frames_written += 1

    def close(self) -> None:
        """Move the PNGs written into the output folder (created if missing); after a write error, `abort`."""
        if self._failed or not self._staging.exists():
            self.abort()
            return
        ensure_folder(self.folder)
        try:
            for png in sorted(self._staging.iterdir()):
                os.replace(png, self.folder / png.name)  # same filesystem: a rename, no space needed
            self._staging.rmdir()
        except OSError as exc:
            raise SipvisError(f"cannot write into {self.folder}: {reason(exc)}; frames left in {self._staging}") from None

    def abort(self) -> None:
        """Drop the PNGs written; the output folder stays as it was."""
        shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> "InstancePngSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# `sipvis track --mots-style` -> the number the first frame of a video gets in the MOTS text
MOTS_STYLES = {"kitti": 0, "mots-challenge": 1}


def mots_lines(frame: FrameInstances, first_frame: int = 0) -> list[str]:
    """The MOTS lines of one frame (see the module docstring), without newlines; source frame i is
    numbered `i + first_frame` (0: KITTI-MOTS, 1: MOTSChallenge)."""
    if not len(frame):
        return []
    # the transposed owner map, C-ordered, is the column-major (H, W) layout pycocotools encodes
    owner_t = np.ascontiguousarray(owner_map(frame).T)
    lines = []
    for k in np.argsort(frame.track_ids, kind="stable"):
        mask = (owner_t == k + 1).T.view(np.uint8)[:, :, None]  # (H, W, 1), Fortran order, no copy
        rle = mask_utils.encode(mask)[0]
        if mask_utils.area(rle) == 0:  # every pixel went to a higher-scoring instance
            continue
        counts = rle["counts"].decode("ascii")
        lines.append(f"{frame.index + first_frame} {int(frame.track_ids[k])} {int(frame.labels[k]) + 1} {frame.height} {frame.width} {counts}")
    return lines


class MotsTxtSink:
    """Writes MOTS text lines to `path` (parent folders created). See the module docstring; `first_frame`:
    the number of source frame 0 (0: KITTI-MOTS, 1: MOTSChallenge, see `MOTS_STYLES`). The lines go to a
    private file beside `path` that `close` moves into place, flushed after every frame: one write call
    a frame, and a killed run's `.partial` file still holds every finished frame."""

    def __init__(self, path: str | Path, first_frame: int = 0) -> None:
        self.path = Path(path)
        self.first_frame = first_frame
        ensure_folder(self.path.parent)
        if self.path.is_dir():
            raise SipvisError(f"cannot write {self.path}: it is a folder")
        try:  # written beside the output and renamed by `close`: a failed run leaves the path as it was
            fd, self._tmp = temp_file_beside(self.path)
            self._file = os.fdopen(fd, "w", encoding="ascii", newline="\n")
        except OSError as exc:
            raise SipvisError(f"cannot write {self.path}: {reason(exc)}") from None
        self.frames_written = 0
        self._failed = False

    def write(self, frame: Frame | None, instances: FrameInstances) -> None:
        """Append the lines of `instances` (`frame`, the image, is not needed: None is fine)."""
        lines = mots_lines(instances, self.first_frame)
        try:
            if lines:
                self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        except OSError as exc:
            self._failed = True
            raise SipvisError(f"cannot write {self.path}: {reason(exc)}") from None
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and move it into place; after a write error, `abort`."""
        if self._file.closed:
            return
        if self._failed:
            self.abort()
            return
        try:
            self._file.close()
            publish(self._tmp, self.path)
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise SipvisError(f"cannot write {self.path}: {reason(exc)}") from None

    def abort(self) -> None:
        """Drop what was written; a file already at the output path stays as it was."""
        try:
            self._file.close()
        except OSError:
            pass  # a full disk refusing the last buffered lines: they are dropped anyway
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "MotsTxtSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
