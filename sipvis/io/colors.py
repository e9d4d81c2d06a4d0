"""Stable, distinct colours per track id, shared by the renderer and the PNG palette.

The palette steps the hue by the golden ratio, so ids that are close (tracks born
one after another) get far-apart hues, and alternates two brightness levels so the
palette can repeat hues without repeating colours. A track id always maps to the same
colour, in every run and every output.
"""

from __future__ import annotations

import colorsys

import numpy as np

PALETTE_SIZE = 64
_GOLDEN = 0.6180339887498949


def _build_palette(n: int) -> np.ndarray:
    """(n, 3) uint8 BGR colours."""
    colors = np.zeros((n, 3), np.uint8)
    for i in range(n):
        hue = (i * _GOLDEN) % 1.0
        sat = 0.85 if i % 2 == 0 else 0.65
        val = 0.95 if (i // 2) % 2 == 0 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colors[i] = (round(b * 255), round(g * 255), round(r * 255))
    return colors


PALETTE_BGR = _build_palette(PALETTE_SIZE)


def track_colors(track_ids: np.ndarray) -> np.ndarray:
    """(N,) int track ids -> (N, 3) uint8 BGR colours (id k and id k + PALETTE_SIZE share a colour)."""
    return PALETTE_BGR[np.asarray(track_ids, np.int64) % PALETTE_SIZE]


def track_color(track_id: int) -> tuple[int, int, int]:
    """BGR colour of one track id, as a tuple for OpenCV drawing calls."""
    b, g, r = PALETTE_BGR[int(track_id) % PALETTE_SIZE]
    return int(b), int(g), int(r)
