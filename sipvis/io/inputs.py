"""Turn what the user typed into frame sources: `open_source` for one input, `expand_inputs` for several.

Accepted inputs:
  - a video file (anything FFmpeg reads; the content decides, not the extension);
  - a folder of images (one sequence, e.g. YouTube-VIS `JPEGImages/<video>/`), or one image;
  - a glob pattern (`'frames/*.jpg'`; quote it so the shell does not expand it);
  - a URL (`rtsp://`, `rtmp://`, `http(s)://`, `udp://`, `srt://`...);
  - a camera number (`0`), on Linux (v4l2) and macOS (avfoundation).
`expand_inputs` also accepts a folder of videos or of image-sequence folders
(e.g. YouTube-VIS `JPEGImages/`) and returns one input per video.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from sipvis.errors import SipvisError
from sipvis.io.images import DEFAULT_IMAGE_FPS, ImageSequenceSource, image_files, is_image_file, natural_key
from sipvis.io.source import FrameRange, FrameSource
from sipvis.io.video import VideoSource, camera_spec, is_url
from sipvis.io.video_writer import CONTAINERS

# files a folder of videos is searched for: every container sipvis writes, and these it only reads
VIDEO_EXTENSIONS = {
    *CONTAINERS, ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".gif", ".y4m",
}  # fmt: skip
GLOB_CHARS = set("*?[")

Spec = str | Path | int


def open_source(
    spec: Spec,
    vid_stride: int = 1,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
    *,
    fps: float | None = None,
    threaded: bool = True,
    queue_size: int = 4,
) -> FrameSource:
    """Open one input and read its metadata (the first frame is decoded to check it).

    Args:
        spec: video file, image folder, single image, glob pattern, URL, or camera number.
        vid_stride: yield every `vid_stride`-th frame (the first frame in range is always yielded).
        start, end: time range in seconds from the start of the source, `end` exclusive. A video
            file seeks to the keyframe before `start` and decodes from there.
        max_frames: stop after yielding this many frames.
        fps: frame rate to assume for image sequences (default 30); ignored for videos.
        threaded: decode in a background thread, at most `queue_size` frames ahead.

    Raises:
        SipvisError: missing input, unreadable or non-video file, no video stream, no decodable frame,
            empty folder, a pattern matching nothing, a folder of videos (use `expand_inputs`).
    """
    frame_range = FrameRange(start, end, vid_stride, max_frames)
    common = dict(frame_range=frame_range, threaded=threaded, queue_size=queue_size)
    image_fps = DEFAULT_IMAGE_FPS if fps is None else fps
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit() and not Path(spec).exists()):
        device, device_format = camera_spec(int(spec))
        return VideoSource(device, device_format=device_format, **common)
    text = str(spec)
    if is_url(text):
        return VideoSource(text, **common)
    path = Path(text.removeprefix("file://")).expanduser()
    if path.is_dir():
        images = image_files(path)
        if images:
            return ImageSequenceSource(images, str(path), _folder_name(path), image_fps, **common)
        inputs = _expand_folder(path)  # raises if there is nothing to read
        raise SipvisError(f"{path} holds {len(inputs)} videos or image sequences; open them one at a time (expand_inputs)")
    if path.is_file() and is_image_file(path):
        return ImageSequenceSource([path], str(path), path.stem, image_fps, **common)
    if path.exists():
        return VideoSource(str(path), **common)
    if GLOB_CHARS & set(text):
        matches = _glob(text)
        if matches and all(is_image_file(p) for p in matches):
            return ImageSequenceSource(matches, text, _pattern_name(text), image_fps, **common)
        if len(matches) == 1 and matches[0].is_file():
            return VideoSource(str(matches[0]), **common)
        if not matches:
            raise SipvisError(f"no files match {text}")
        raise SipvisError(f"{text} matches {len(matches)} inputs that are not all images; open them one at a time (expand_inputs)")
    raise SipvisError(f"input not found: {path}")


def expand_inputs(specs: Iterable[Spec] | Spec) -> list[str | int]:
    """One entry per video to process, each accepted by `open_source`.

    A folder of images stays one input (a sequence); a folder of videos becomes its videos; a
    folder of image folders (YouTube-VIS `JPEGImages/`) becomes its sequences; a pattern that
    matches only images stays one input, otherwise it becomes what it matches. URLs and camera
    numbers pass through. Order is kept (folder contents in natural order); duplicates are dropped.

    Raises:
        SipvisError: an input that does not exist, a pattern matching nothing, a folder with nothing to read,
            or a folder that mixes images with videos.
    """
    if isinstance(specs, (str, Path, int)):
        specs = [specs]
    out: list[str | int] = []
    for spec in specs:
        for item in _expand_one(spec):
            if item not in out:
                out.append(item)
    return out


def _expand_one(spec: Spec) -> list[str | int]:
    if isinstance(spec, int):
        return [spec]
    text = str(spec)
    if is_url(text) or (text.isdigit() and not Path(text).exists()):
        return [int(text) if text.isdigit() else text]
    path = Path(text).expanduser()
    if path.is_dir():
        return _expand_folder(path)
    if path.exists():
        return [str(path)]
    if GLOB_CHARS & set(text):
        matches = _glob(text)
        if not matches:
            raise SipvisError(f"no files match {text}")
        if all(is_image_file(p) for p in matches):
            return [text]
        out: list[str | int] = []
        for match in matches:
            if match.is_dir():
                out.extend(_expand_folder(match))
            elif is_image_file(match):
                raise SipvisError(f"{text} matches both images and other inputs; give one kind")
            else:
                out.append(str(match))
        return out
    raise SipvisError(f"input not found: {path}")


def _expand_folder(folder: Path) -> list[str | int]:
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=natural_key)
    images = [p for p in entries if is_image_file(p)]
    videos = [p for p in entries if _is_video_file(p)]
    if images and videos:
        raise SipvisError(f"{folder} holds both images and videos; put image sequences in their own folders")
    if images:
        return [str(folder)]
    sequences = [p for p in entries if p.is_dir() and image_files(p)]
    if not videos and not sequences:
        raise SipvisError(f"no images or videos in {folder}")
    return [str(p) for p in sorted(videos + sequences, key=natural_key)]


def _is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file()


def _glob(pattern: str) -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(str(Path(pattern).expanduser())), key=natural_key)]


def _folder_name(folder: Path) -> str:
    return folder.resolve().name or "frames"


def _pattern_name(pattern: str) -> str:
    """The name of the deepest folder in `pattern` that has no wildcard ('frames/*.jpg' -> 'frames')."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next((i for i, p in enumerate(parts) if GLOB_CHARS & set(p)), len(parts))]]
    return _folder_name(Path(*fixed)) if fixed else _folder_name(Path("."))
