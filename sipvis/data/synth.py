"""Synthetic video instance segmentation data in the official YouTube-VIS 2019 layout.

Each video shows a few textured shapes (one shape per class, each class with its own colour
family and texture pattern, so classes are learnable) moving along smooth paths over a textured
background (noise, gradient, stripes or plaid, sometimes slowly panning). Objects scale, rotate,
enter and leave the frame and occlude each other in a fixed depth order. Masks are exact: every
object is rasterised without anti-aliasing into a label map, and an instance's mask on a frame is
the set of pixels it VISIBLY owns. A frame where an instance is fully occluded or out of the frame
has `null` for its segmentation, box and area, as in the official annotations.

Everything is drawn from `numpy.random.Generator`s seeded by `(seed, video_index)`, so one video
can be rendered on its own (`render_video`) and the same arguments always give byte-identical
JPEGs and annotation JSON.

Layout written by `generate(out_dir, cfg)`:

    out_dir/<split>/JPEGImages/<video>/00000.jpg ...
    out_dir/<split>/videos/<video>.mp4            (when cfg.clips; H.264, or MPEG-4 part 2 fallback)
    out_dir/annotations/<split>.json
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sipvis.errors import SipvisError
from sipvis.io.files import write_text_atomic

# --------------------------------------------------------------------------------------------------
# Classes: one shape each. Hue (OpenCV scale 0..180) and texture pattern are fixed per shape, so a
# class looks the same whatever subset of classes a dataset uses. The first five are far apart in hue.
# --------------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "ring", "cross",
    "ellipse", "hexagon", "diamond", "crescent", "pentagon", "arrow",
)
DEFAULT_CLASSES: tuple[str, ...] = SHAPES[:5]
_HUES: dict[str, int] = {
    "circle": 0, "square": 36, "triangle": 72, "star": 108, "ring": 144, "cross": 18,
    "ellipse": 54, "hexagon": 90, "diamond": 126, "crescent": 162, "pentagon": 9, "arrow": 99,
}
_PATTERNS: tuple[str, ...] = ("speckle", "stripes", "checker", "rings", "gradient", "dots")

_TILE = 128  # side of an instance's texture tile; the shape's unit radius maps to _TILE / 2 pixels
_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def class_names(k: int) -> tuple[str, ...]:
    """The first `k` class names (1 <= k <= len(SHAPES)), e.g. `class_names(5)` = circle..ring."""
    if not 1 <= k <= len(SHAPES):
        raise SipvisError(f"--classes must be between 1 and {len(SHAPES)}, got {k}")
    return SHAPES[:k]


@dataclass
class SynthConfig:
    """Everything that decides a synthetic dataset; the same config always gives the same bytes.

    Attributes:
        videos: number of videos.
        frames: frames per video (all annotated).
        seed: non-negative seed; video i draws from `numpy.random.default_rng([seed, i])`.
        split: split name, used for the image folder and `annotations/<split>.json`.
        width, height: frame size in pixels.
        classes: class names, each one of `SHAPES`; category ids are 1-based in this order.
        clips: also write an mp4 of every video (`<split>/videos/<video>.mp4`).
        fps: frame rate of the mp4 clips.
        objects: (min, max) objects placed in a video (some may never be visible and are dropped).
        object_size: (min, max) object diameter as a fraction of min(width, height); the default
            gives 40..160 px at 640x360.
        jpeg_quality: JPEG quality of the written frames.
    """

    videos: int = 20
    frames: int = 36
    seed: int = 0
    split: str = "train"
    width: int = 640
    height: int = 360
    classes: tuple[str, ...] = DEFAULT_CLASSES
    clips: bool = True
    fps: int = 10
    objects: tuple[int, int] = (2, 5)
    object_size: tuple[float, float] = (40 / 360, 160 / 360)
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        self.objects = (int(self.objects[0]), int(self.objects[1]))
        self.object_size = (float(self.object_size[0]), float(self.object_size[1]))
        self.validate()

    def validate(self) -> None:
        """Raise `SipvisError` (one line) for settings a user can get wrong."""
        if self.videos < 1:
            raise SipvisError(f"--videos must be at least 1, got {self.videos}")
        if self.frames < 1:
            raise SipvisError(f"--frames must be at least 1, got {self.frames}")
        if self.seed < 0:
            raise SipvisError(f"--seed must be non-negative, got {self.seed}")
        if not _SPLIT_RE.match(self.split) or self.split in (".", ".."):
            raise SipvisError(
                f"--split must be a plain folder name (letters, digits, . _ -), got {self.split!r}"
            )
        for name, v in (("width", self.width), ("height", self.height)):
            if not 64 <= v <= 4096:
                raise SipvisError(f"--size {name} must be between 64 and 4096 pixels, got {v}")
        if self.clips and (self.width % 2 or self.height % 2):
            raise SipvisError(
                f"mp4 clips need an even width and height, got {self.width}x{self.height}; "
                "use an even --size or --no-clips"
            )
        if not self.classes:
            raise SipvisError("at least one class is needed")
        unknown = [c for c in self.classes if c not in SHAPES]
        if unknown:
            raise SipvisError(f"unknown class {unknown[0]!r}; known classes: {', '.join(SHAPES)}")
        if len(set(self.classes)) != len(self.classes):
            raise SipvisError(f"--classes lists a class twice: {','.join(self.classes)}")
        if not 1 <= self.objects[0] <= self.objects[1] <= 50:
            raise SipvisError(f"objects per video must satisfy 1 <= min <= max <= 50, got {self.objects}")
        if not 0.01 <= self.object_size[0] <= self.object_size[1] <= 1.0:
            raise SipvisError(f"object_size must satisfy 0.01 <= min <= max <= 1, got {self.object_size}")
        if not 1 <= self.fps <= 240:
            raise SipvisError(f"fps must be between 1 and 240, got {self.fps}")
        if not 1 <= self.jpeg_quality <= 100:
            raise SipvisError(f"jpeg_quality must be between 1 and 100, got {self.jpeg_quality}")

    def video_name(self, video_index: int) -> str:
        """Folder/clip name of the 0-based `video_index` (its YouTube-VIS video id is index + 1)."""
        return f"video_{video_index + 1:05d}"


@dataclass
class SynthInstance:
    """One annotated object of a rendered video.

    Attributes:
        track_id: 1-based identity within the video, stable over all frames.
        category_id: 1-based index into `SynthConfig.classes`.
        depth: drawing order, 0 = furthest back; a higher depth occludes a lower one.
        masks: T entries, each an (H, W) bool mask of the pixels this instance visibly owns on that
            frame, or None where it is fully occluded or out of the frame.
        full_areas: T pixel counts of the whole shape inside the frame before occlusion
            (0 = out of the frame); `area < full_area` means the instance is partly occluded.
    """

    track_id: int
    category_id: int
    depth: int
    masks: list[np.ndarray | None]
    full_areas: list[int]

    @property
    def areas(self) -> list[int | None]:
        """Visible pixel count per frame, None where not visible."""
        return [None if m is None else int(m.sum()) for m in self.masks]

    @property
    def boxes(self) -> list[list[float] | None]:
        """Per frame `[x, y, w, h]` (pixels, tight around the visible mask) or None."""
        return [None if m is None else mask_bbox(m) for m in self.masks]


def mask_bbox(mask: np.ndarray) -> list[float]:
    """Tight `[x, y, w, h]` of a non-empty (H, W) bool mask: w = last column - first column + 1."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]


# --------------------------------------------------------------------------------------------------
# Geometry: every shape is a list of filled polygons plus a list of hole polygons, in unit radius.
# --------------------------------------------------------------------------------------------------


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], 1) * radius


def _unit_shape(name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(filled polygons, hole polygons) of a shape, each (N, 2) xy with the shape inside radius 1."""
    if name == "circle":
        return [_regular(64)], []
    if name == "square":
        return [_regular(4, 1.0, np.pi / 4)], []
    if name == "triangle":
        return [_regular(3)], []
    if name == "star":
        pts = _regular(10)
        pts[1::2] *= 0.45
        return [pts], []
    if name == "ring":
        return [_regular(64)], [_regular(64, 0.55)]
    if name == "cross":
        a, b = 1.0, 0.34
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        return [np.array(pts, float)], []
    if name == "ellipse":
        return [_regular(64) * np.array([1.0, 0.55])], []
    if name == "hexagon":
        return [_regular(6, 1.0, 0.0)], []
    if name == "diamond":
        return [_regular(4) * np.array([0.6, 1.0])], []
    if name == "crescent":
        return [_regular(64)], [_regular(64, 0.8) + np.array([0.45, -0.1])]
    if name == "pentagon":
        return [_regular(5)], []
    if name == "arrow":
        pts = [(1.0, 0.0), (0.2, -0.75), (0.2, -0.3), (-1.0, -0.3), (-1.0, 0.3), (0.2, 0.3), (0.2, 0.75)]
        return [np.array(pts, float)], []
    raise ValueError(f"unknown shape {name}")


_UNIT_SHAPES = {name: _unit_shape(name) for name in SHAPES}


def _hsv_to_bgr(h: float, s: float, v: float) -> np.ndarray:
    """One colour, OpenCV HSV (h in 0..180, s and v in 0..255) -> (3,) float32 BGR."""
    px = np.array([[[h % 180, np.clip(s, 0, 255), np.clip(v, 0, 255)]]], np.uint8)
    return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend colours a, b (3,) by weights t (H, W) in [0, 1] -> (H, W, 3) float32."""
    return a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(h, w) float32 value noise in [0, 1]: a coarse random grid upsampled with cubic interpolation."""
    gh, gw = max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w))
    grid = rng.random((gh, gw), dtype=np.float32)
    up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(up, 0.0, 1.0)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 BGR background: noise, gradient, stripes or plaid in muted colours."""
    hue = rng.uniform(0, 180)
    c1 = _hsv_to_bgr(hue, rng.uniform(0, 110), rng.uniform(60, 200))
    c2 = _hsv_to_bgr(hue + rng.uniform(-40, 40), rng.uniform(0, 110), rng.uniform(60, 220))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(4))
    if kind == 0:  # noise
        t = 0.65 * _smooth_noise(rng, h, w, int(rng.integers(6, 20))) + 0.35 * _smooth_noise(rng, h, w, 60)
    elif kind == 1:  # gradient along a random direction, with mild noise
        a = rng.uniform(0, 2 * np.pi)
        t = x * np.cos(a) + y * np.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        t = 0.85 * t + 0.15 * _smooth_noise(rng, h, w, 40)
    elif kind == 2:  # soft stripes
        a, period = rng.uniform(0, np.pi), rng.uniform(12, 60)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(a) + y * np.sin(a)) / period)
    else:  # plaid: two stripe sets
        a, p1, p2 = rng.uniform(0, np.pi), rng.uniform(16, 70), rng.uniform(16, 70)
        u = x * np.cos(a) + y * np.sin(a)
        v = -x * np.sin(a) + y * np.cos(a)
        t = 0.25 * (2 + np.sin(2 * np.pi * u / p1) + np.sin(2 * np.pi * v / p2))
    return np.clip(_mix(c1, c2, t.astype(np.float32)), 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, shape: str) -> np.ndarray:
    """(_TILE, _TILE, 3) uint8 BGR texture of one instance: its class's hue and pattern, jittered."""
    hue = _HUES[shape] + rng.uniform(-5, 5)
    main = _hsv_to_bgr(hue, rng.uniform(170, 255), rng.uniform(170, 255))
    second = _hsv_to_bgr(hue + rng.uniform(-6, 6), rng.uniform(120, 255), rng.uniform(60, 130))
    pattern = _PATTERNS[SHAPES.index(shape) % len(_PATTERNS)]
    y, x = (np.mgrid[0:_TILE, 0:_TILE].astype(np.float32) + 0.5) / (_TILE / 2) - 1.0  # in [-1, 1]
    freq = rng.uniform(3.0, 6.0)
    a = rng.uniform(0, np.pi)
    if pattern == "speckle":
        t = _smooth_noise(rng, _TILE, _TILE, 12)
    elif pattern == "stripes":
        t = (np.sin(freq * np.pi * (x * np.cos(a) + y * np.sin(a))) > 0).astype(np.float32)
    elif pattern == "checker":
        t = ((np.floor(x * freq) + np.floor(y * freq)) % 2).astype(np.float32)
    elif pattern == "rings":
        t = 0.5 + 0.5 * np.sin(freq * np.pi * np.sqrt(x * x + y * y))
    elif pattern == "gradient":
        t = np.clip(0.5 + 0.5 * (x * np.cos(a) + y * np.sin(a)), 0, 1)
    else:  # dots
        t = ((np.sin(freq * np.pi * x) * np.sin(freq * np.pi * y)) > 0.4).astype(np.float32)
    return np.clip(_mix(main, second, t.astype(np.float32)), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Motion: each object follows a straight path with a perpendicular wobble, from a start to an end
# point that may lie outside the frame (enter / leave / cross), while scaling and rotating.
# --------------------------------------------------------------------------------------------------


@dataclass
class _Object:
    shape: str
    category_id: int
    texture: np.ndarray  # (_TILE, _TILE, 3) uint8
    centers: np.ndarray  # (T, 2) float64 xy
    radii: np.ndarray  # (T,) float64, pixels
    angles: np.ndarray  # (T,) float64, radians
    depth: int = 0


def _outside_point(rng: np.random.Generator, side: int, r: float, w: int, h: int) -> np.ndarray:
    """A centre far enough beyond `side` (0 left, 1 right, 2 top, 3 bottom) that a radius-r shape is out."""
    gap = 1.05 * r + 2
    if side == 0:
        return np.array([-gap, rng.uniform(r, h - r)])
    if side == 1:
        return np.array([w + gap, rng.uniform(r, h - r)])
    if side == 2:
        return np.array([rng.uniform(r, w - r), -gap])
    return np.array([rng.uniform(r, w - r), h + gap])


def _make_object(rng: np.random.Generator, cfg: SynthConfig, category_id: int) -> _Object:
    shape = cfg.classes[category_id - 1]
    w, h, t_len = cfg.width, cfg.height, cfg.frames
    u = np.arange(t_len) / max(t_len - 1, 1)  # normalised time in [0, 1]
    lo, hi = (s * min(w, h) for s in cfg.object_size)

    # Size: a base diameter, a slow growth or shrink over the video, and a gentle pulse.
    base = rng.uniform(lo, hi)
    growth = rng.uniform(0.7, 1.4) ** u
    pulse = 1 + rng.uniform(0, 0.12) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * u + rng.uniform(0, 2 * np.pi))
    radii = np.clip(base * growth * pulse, 0.8 * lo, 1.2 * hi) / 2
    r_max, r_in = float(radii.max()), float(min(radii.max(), 0.45 * min(w, h)))

    def inside() -> np.ndarray:
        return np.array([rng.uniform(r_in, w - r_in), rng.uniform(r_in, h - r_in)])

    mode = rng.choice(4, p=[0.5, 0.2, 0.2, 0.1])  # stay, enter, leave, cross
    side = int(rng.integers(4))
    if mode == 0:
        p0, p1 = inside(), inside()
    elif mode == 1:
        p0, p1 = _outside_point(rng, side, r_max, w, h), inside()
    elif mode == 2:
        p0, p1 = inside(), _outside_point(rng, side, r_max, w, h)
    else:
        p0, p1 = _outside_point(rng, side, r_max, w, h), _outside_point(rng, side ^ 1, r_max, w, h)

    d = p1 - p0
    normal = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)
    wobble = rng.uniform(0, 0.06 * min(w, h)) * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * u + rng.uniform(0, 2 * np.pi))
    centers = p0[None] + u[:, None] * d[None] + wobble[:, None] * normal[None]
    angles = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.08, 0.08) * np.arange(t_len)
    return _Object(shape, category_id, _texture(rng, shape), centers, radii, angles)


def _draw(obj: _Object, t: int, w: int, h: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray] | None:
    """Rasterise object `obj` on frame t, clipped to the frame.

    Returns ((x0, y0), mask (h', w') bool, colours (h', w', 3) uint8) over the clipped box, or None
    when the shape does not touch the frame.
    """
    fill, holes = _UNIT_SHAPES[obj.shape]
    r, a = float(obj.radii[t]), float(obj.angles[t])
    cx, cy = (float(v) for v in obj.centers[t])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    x0, y0 = max(int(np.floor(cx - r)) - 1, 0), max(int(np.floor(cy - r)) - 1, 0)
    x1, y1 = min(int(np.ceil(cx + r)) + 2, w), min(int(np.ceil(cy + r)) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return None

    shift = 4  # sub-pixel vertices: coordinates are passed in 1/16 pixel
    def poly(p: np.ndarray) -> np.ndarray:
        xy = p @ rot.T * r + np.array([cx - x0, cy - y0])
        return np.round(xy * (1 << shift)).astype(np.int32)

    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(canvas, [poly(p) for p in fill], 1, lineType=cv2.LINE_8, shift=shift)
    if holes:
        cv2.fillPoly(canvas, [poly(p) for p in holes], 0, lineType=cv2.LINE_8, shift=shift)
    mask = canvas.astype(bool)
    if not mask.any():
        return None

    # Texture tile -> frame crop: tile centre to the object centre, scaled and rotated with it.
    s = r / (_TILE / 2)
    m = np.array(
        [[s * np.cos(a), -s * np.sin(a), 0.0], [s * np.sin(a), s * np.cos(a), 0.0]], np.float64
    )
    c = np.array([_TILE / 2, _TILE / 2])
    m[:, 2] = np.array([cx - x0, cy - y0]) - m[:, :2] @ c
    colours = cv2.warpAffine(
        obj.texture, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    return (x0, y0), mask, colours


def render_video(cfg: SynthConfig, video_index: int) -> tuple[list[np.ndarray], list[SynthInstance]]:
    """Render one video in memory, without touching the disk.

    Args:
        cfg: the dataset configuration (size, frames, classes, seed...).
        video_index: 0-based video index; the result depends only on (cfg, video_index).

    Returns:
        frames: `cfg.frames` arrays (H, W, 3) uint8 BGR.
        instances: the objects visible on at least one frame, ordered by track_id (1..N).
    """
    rng = np.random.default_rng([cfg.seed, video_index])
    w, h, t_len = cfg.width, cfg.height, cfg.frames

    # Background, optionally panning slowly: a larger canvas cropped at a moving offset.
    margin = int(rng.integers(0, 2)) * max(8, min(w, h) // 15)
    bg = _background(rng, h + 2 * margin, w + 2 * margin)
    pan0, pan1 = rng.integers(0, 2 * margin + 1, size=2), rng.integers(0, 2 * margin + 1, size=2)

    n_obj = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    objects = [_make_object(rng, cfg, int(rng.integers(len(cfg.classes))) + 1) for _ in range(n_obj)]
    for depth, k in enumerate(rng.permutation(n_obj)):
        objects[k].depth = depth
    back_to_front = sorted(range(n_obj), key=lambda k: objects[k].depth)

    frames: list[np.ndarray] = []
    visible: list[list[np.ndarray | None]] = [[] for _ in objects]
    full: list[list[int]] = [[] for _ in objects]
    for t in range(t_len):
        u = t / max(t_len - 1, 1)
        ox, oy = np.round(pan0 + (pan1 - pan0) * u).astype(int)
        frame = bg[oy : oy + h, ox : ox + w].copy()
        # labels[y, x] = 1 + index of the front-most object covering the pixel, 0 for background.
        labels = np.zeros((h, w), np.uint8)
        for k in back_to_front:
            drawn = _draw(objects[k], t, w, h)
            if drawn is None:
                full[k].append(0)
                continue
            (x0, y0), mask, colours = drawn
            mh, mw = mask.shape
            labels[y0 : y0 + mh, x0 : x0 + mw][mask] = k + 1
            frame[y0 : y0 + mh, x0 : x0 + mw][mask] = colours[mask]
            full[k].append(int(mask.sum()))
        for k in range(n_obj):
            m = labels == k + 1 if full[k][t] else None
            visible[k].append(m if m is not None and m.any() else None)
        frames.append(frame)

    instances: list[SynthInstance] = []
    for k, obj in enumerate(objects):
        if all(m is None for m in visible[k]):
            continue  # never seen (e.g. hidden behind a larger object the whole time): not annotated
        instances.append(SynthInstance(len(instances) + 1, obj.category_id, obj.depth, visible[k], full[k]))
    return frames, instances


# --------------------------------------------------------------------------------------------------
# Writing: JPEGs, mp4 clips, annotation JSON.
# --------------------------------------------------------------------------------------------------


def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) bool mask -> pycocotools compressed RLE `{"size": [H, W], "counts": str}`."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("utf-8")}


def _mp4_codec() -> str:
    """'libx264' when PyAV's FFmpeg can encode H.264 with it, else 'mpeg4' (MPEG-4 part 2)."""
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # PyAV raises UnknownCodecError (or ValueError on older versions)
        return "mpeg4"


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> str:
    """Encode (H, W, 3) uint8 BGR frames (even H and W) to an mp4 at `fps`; returns the codec used."""
    import av

    codec = _mp4_codec()
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "20", "preset": "superfast"}  # test clips: speed over size
        else:
            stream.bit_rate = 4_000_000  # mpeg4 defaults to a very low rate; keep textures legible
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush delayed frames
    return codec


def _mkdir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise SipvisError(f"cannot create folder {path}: a file with that name exists")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SipvisError(f"cannot create folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise SipvisError(f"cannot write to {path}: permission denied")


def generate(out_dir: str | Path, cfg: SynthConfig,
             progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Write a synthetic dataset in the official YouTube-VIS layout under `out_dir`.

    Re-running with the same arguments rewrites identical files (a video's old frames are removed
    first, so a shorter run leaves no stale JPEGs behind). `progress(videos done, videos)` is called
    before the first video and after each one.

    Returns:
        the path of the annotation file, `out_dir/annotations/<split>.json`.
    """
    out_dir = Path(out_dir)
    img_root = out_dir / cfg.split / "JPEGImages"
    clip_root = out_dir / cfg.split / "videos"
    ann_dir = out_dir / "annotations"
    for d in (out_dir, img_root, ann_dir) + ((clip_root,) if cfg.clips else ()):
        _mkdir(d)
    videos: list[dict] = []
    annotations: list[dict] = []
    if progress is not None:
        progress(0, cfg.videos)
    for vi in range(cfg.videos):
        name = cfg.video_name(vi)
        frames, instances = render_video(cfg, vi)
        _write_video_files(cfg, name, frames, img_root, clip_root)
        videos.append(_video_entry(cfg, vi + 1, name))
        for inst in instances:
            annotations.append(_annotation_entry(cfg, len(annotations) + 1, vi + 1, inst))
        if progress is not None:
            progress(vi + 1, cfg.videos)

    ann_path = ann_dir / f"{cfg.split}.json"
    text = json.dumps(_dataset(cfg, videos, annotations), separators=(",", ":"), ensure_ascii=False)
    write_text_atomic(ann_path, text)  # a reader never sees a half-written file
    return ann_path


def _write_video_files(cfg: SynthConfig, name: str, frames: list[np.ndarray], img_root: Path,
                       clip_root: Path) -> None:
    """The video's JPEG frames (replacing any earlier ones) and, with `cfg.clips`, its mp4 clip."""
    encode = [int(cv2.IMWRITE_JPEG_QUALITY), cfg.jpeg_quality]
    vdir = img_root / name
    try:
        if vdir.exists():
            shutil.rmtree(vdir)
        vdir.mkdir(parents=True)
        for t, img in enumerate(frames):
            ok, buf = cv2.imencode(".jpg", img, encode)
            if not ok:
                raise SipvisError(f"JPEG encoding failed for {name} frame {t}")
            (vdir / f"{t:05d}.jpg").write_bytes(buf.tobytes())
        if cfg.clips:
            write_mp4(clip_root / f"{name}.mp4", frames, cfg.fps)
    except OSError as exc:
        raise SipvisError(f"cannot write {name}: {exc.strerror or exc}") from None


def _video_entry(cfg: SynthConfig, vid: int, name: str) -> dict:
    return {
        "id": vid,
        "width": cfg.width,
        "height": cfg.height,
        "length": cfg.frames,
        "file_names": [f"{name}/{t:05d}.jpg" for t in range(cfg.frames)],
        "license": 1,
        "flickr_url": "",
        "coco_url": "",
        "date_captured": "2019-01-01 00:00:00.000000",
    }


def _annotation_entry(cfg: SynthConfig, ann_id: int, vid: int, inst: SynthInstance) -> dict:
    return {
        "id": ann_id,
        "video_id": vid,
        "category_id": inst.category_id,
        "iscrowd": 0,
        "segmentations": [None if m is None else mask_to_rle(m) for m in inst.masks],
        "bboxes": inst.boxes,
        "areas": [None if a is None else float(a) for a in inst.areas],
        "width": cfg.width,
        "height": cfg.height,
        "length": cfg.frames,
    }


def _dataset(cfg: SynthConfig, videos: list[dict], annotations: list[dict]) -> dict:
    return {
        "info": {
            "description": "sipvis synthetic video instance segmentation dataset",
            "url": "",
            "version": "1.0",
            "year": 2019,
            "contributor": "sipvis synth",
            "date_created": "2019-01-01 00:00:00.000000",
            "sipvis_synth": {
                "seed": cfg.seed, "videos": cfg.videos, "frames": cfg.frames, "split": cfg.split,
                "width": cfg.width, "height": cfg.height, "classes": list(cfg.classes),
            },
        },
        "licenses": [{"id": 1, "name": "CC0 1.0 (synthetic data)", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "videos": videos,
        "categories": [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(cfg.classes)],
        "annotations": annotations,
    }


__all__ = [
    "DEFAULT_CLASSES",
    "SHAPES",
    "SynthConfig",
    "SynthInstance",
    "class_names",
    "generate",
    "mask_bbox",
    "mask_to_rle",
    "render_video",
    "write_mp4",
]
