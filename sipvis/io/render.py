"""Draw tracked instances on a frame: translucent masks, outlines, boxes, "class #id score" labels, trails.

Colours come from the track id (`colors.track_color`), so an object keeps its colour
for the whole video and matches the PNG palette. Where masks overlap, the
higher-scoring instance is drawn on top. All pixel work is whole-array numpy/OpenCV.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import cv2
import numpy as np

from sipvis.io.colors import track_color, track_colors
from sipvis.results import FrameInstances


def owner_map(inst: FrameInstances) -> np.ndarray:
    """(H, W) map of which instance is shown at each pixel: k + 1 for `inst`'s instance k, 0 for background.

    Overlaps go to the higher score (ties: the later instance). uint8 while there are fewer
    than 256 instances (so OpenCV lookup tables apply), int32 beyond.
    """
    dtype = np.uint8 if len(inst) < 256 else np.int32
    owner = np.zeros((inst.height, inst.width), dtype)
    for k in np.argsort(inst.scores, kind="stable"):  # lowest score first, so the highest is written last
        owner[inst.masks[k]] = k + 1
    return owner


def label_text(class_names: Sequence[str], label: int, track_id: int, score: float) -> str:
    """The caption of one instance, e.g. `person #3 0.87`."""
    name = class_names[label] if 0 <= label < len(class_names) else f"class{label}"
    return f"{name} #{track_id} {score:.2f}"


class Renderer:
    """Draws `FrameInstances` onto BGR frames. Stateful only for trails: call `draw` in frame order.

    Args:
        class_names: names of the model's classes, indexed by the 0-based `labels`.
        alpha: mask opacity in [0, 1].
        trails: draw the path of each track's box centre over the last `trail_length` frames.
        trail_length: frames of history per track; a track unseen for that long is forgotten.
        boxes, labels, outlines: draw boxes, captions, mask outlines.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        alpha: float = 0.5,
        trails: bool = False,
        *,
        trail_length: int = 30,
        boxes: bool = True,
        labels: bool = True,
        outlines: bool = True,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.class_names = list(class_names)
        self.alpha = alpha
        self.trails = trails
        self.trail_length = trail_length
        self.boxes, self.labels, self.outlines = boxes, labels, outlines
        self._history: dict[int, deque[tuple[int, int]]] = {}
        self._last_seen: dict[int, int] = {}
        self._calls = 0

    def draw(self, image_bgr: np.ndarray, inst: FrameInstances) -> np.ndarray:
        """Return a new (H, W, 3) uint8 BGR image with `inst` drawn on `image_bgr` (left unchanged)."""
        h, w = image_bgr.shape[:2]
        if inst.masks.shape[1:] != (h, w) and len(inst):
            raise ValueError(f"masks are {inst.masks.shape[1:]} but the image is {(h, w)}")
        out = image_bgr.copy()
        thickness = max(1, round(min(h, w) / 360))
        if len(inst):
            colors = track_colors(inst.track_ids)  # (N, 3)
            self._draw_masks(out, image_bgr, inst, colors)
            if self.outlines:
                self._draw_outlines(out, inst, thickness)
        if self.trails:
            self._draw_trails(out, inst, thickness)
        if len(inst) and (self.boxes or self.labels):
            self._draw_boxes_and_labels(out, inst, thickness)
        return out

    def _draw_masks(self, out: np.ndarray, image: np.ndarray, inst: FrameInstances, colors: np.ndarray) -> None:
        owner = owner_map(inst)
        shown = owner > 0
        if self.alpha == 0 or not shown.any():
            return
        table = np.zeros((max(256, len(inst) + 1), 3), np.uint8)
        table[1 : len(inst) + 1] = colors
        if owner.dtype == np.uint8:  # colour of each pixel's instance by table lookup, one channel at a time
            layer = cv2.merge([cv2.LUT(owner, np.ascontiguousarray(table[:256, c])) for c in range(3)])
        else:
            layer = table[owner]
        blended = cv2.addWeighted(image, 1.0 - self.alpha, layer, self.alpha, 0.0)
        cv2.copyTo(blended, shown.view(np.uint8), out)

    def _draw_outlines(self, out: np.ndarray, inst: FrameInstances, thickness: int) -> None:
        h, w = out.shape[:2]
        for k in range(len(inst)):
            # find contours only around the instance: its box, widened in case the mask spills over
            x1, y1, x2, y2 = inst.boxes[k]
            pad = 4
            xa, ya = max(0, int(x1) - pad), max(0, int(y1) - pad)
            xb, yb = min(w, int(np.ceil(x2)) + pad), min(h, int(np.ceil(y2)) + pad)
            if xb <= xa or yb <= ya:
                continue
            crop = np.ascontiguousarray(inst.masks[k, ya:yb, xa:xb], dtype=np.uint8)
            contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(xa, ya))
            if contours:
                cv2.drawContours(out, contours, -1, track_color(inst.track_ids[k]), thickness, cv2.LINE_AA)

    def _draw_boxes_and_labels(self, out: np.ndarray, inst: FrameInstances, thickness: int) -> None:
        h, w = out.shape[:2]
        font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, min(h, w) / 1200)
        text_thickness = max(1, thickness // 2)
        for k in np.argsort(inst.scores, kind="stable"):  # highest score drawn last, on top
            color = track_color(inst.track_ids[k])
            x1, y1, x2, y2 = (int(round(float(v))) for v in inst.boxes[k])
            if self.boxes:
                cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
            if not self.labels:
                continue
            text = label_text(self.class_names, int(inst.labels[k]), int(inst.track_ids[k]), float(inst.scores[k]))
            (tw, th), base = cv2.getTextSize(text, font, scale, text_thickness)
            # above the box if there is room, else just inside its top edge; kept within the frame
            top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else max(0, y1)
            left = min(max(0, x1), max(0, w - tw - 4))
            cv2.rectangle(out, (left, top), (left + tw + 4, top + th + base + 2), color, cv2.FILLED)
            ink = (0, 0, 0) if 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2] > 140 else (255, 255, 255)
            cv2.putText(out, text, (left + 2, top + th + 1), font, scale, ink, text_thickness, cv2.LINE_AA)

    def _draw_trails(self, out: np.ndarray, inst: FrameInstances, thickness: int) -> None:
        self._calls += 1
        for k in range(len(inst)):
            tid = int(inst.track_ids[k])
            x1, y1, x2, y2 = inst.boxes[k]
            trail = self._history.setdefault(tid, deque(maxlen=self.trail_length))
            trail.append((int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2))))
            self._last_seen[tid] = self._calls
        for tid in [t for t, seen in self._last_seen.items() if self._calls - seen >= self.trail_length]:
            del self._history[tid], self._last_seen[tid]  # bounded memory over long videos
        for tid in (int(t) for t in inst.track_ids):
            points = self._history[tid]
            if len(points) > 1:
                cv2.polylines(out, [np.array(points, np.int32)], False, track_color(tid), thickness + 1, cv2.LINE_AA)
