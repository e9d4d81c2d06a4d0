"""Renderer: exact mask blending, overlap order, stable colours, captions, trails."""

from __future__ import annotations

import numpy as np
import pytest

from sipvis.io import Renderer, label_text, track_color, track_colors
from sipvis.io.colors import PALETTE_SIZE
from sipvis.results import FrameInstances


def instances(index: int, boxes: list[tuple[int, int, int, int]], ids: list[int], scores: list[float],
              labels: list[int] | None = None, h: int = 120, w: int = 160) -> FrameInstances:  # fmt: skip
    """Instances whose masks fill their integer boxes exactly."""
    masks = np.zeros((len(boxes), h, w), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, y1:y2, x1:x2] = True
    return FrameInstances(
        index, h, w, np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
        np.array(labels or [0] * len(boxes)), np.array(ids), masks,
    )  # fmt: skip


def near(pixel: np.ndarray, color: tuple[int, int, int], tol: int = 40) -> bool:
    """Within `tol` per channel: lines and text are anti-aliased, so edges mix with the background."""
    return bool(np.abs(pixel.astype(int) - np.array(color)).max() <= tol)


def blend(pixel: np.ndarray, color: tuple[int, int, int], alpha: float) -> np.ndarray:
    return pixel.astype(float) * (1 - alpha) + np.array(color, float) * alpha


def test_masks_are_blended_with_the_track_colour_and_nothing_else_changes() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    before = image.copy()
    inst = instances(0, [(40, 40, 100, 90)], [7], [0.8])
    out = Renderer(["person"], alpha=0.4, boxes=False, labels=False, outlines=False).draw(image, inst)
    np.testing.assert_array_equal(image, before)  # the input is left alone
    inside = inst.masks[0]
    expected = blend(image[inside], track_color(7), 0.4)
    assert np.abs(out[inside].astype(float) - expected).max() <= 1.0
    np.testing.assert_array_equal(out[~inside], image[~inside])


def test_overlap_shows_the_higher_score_and_boxes_labels_are_drawn() -> None:
    image = np.full((120, 160, 3), 100, np.uint8)
    inst = instances(0, [(20, 30, 80, 100), (60, 30, 120, 100)], [1, 2], [0.95, 0.6], labels=[0, 1])
    out = Renderer(["person", "car"], alpha=1.0, outlines=False).draw(image, inst)
    assert tuple(out[60, 70]) == track_color(1)  # overlap: the 0.95 instance is on top
    assert tuple(out[60, 100]) == track_color(2)
    assert tuple(out[60, 40]) == track_color(1)
    # each box edge is in its track colour; the caption sits above the box on a band of that colour
    assert near(out[100, 110], track_color(2)) and near(out[30, 20], track_color(1))
    band = out[:29, 20:80]
    assert (np.abs(band.astype(int) - track_color(1)).max(axis=-1) == 0).sum() > 200
    assert (band.min(axis=-1) > 200).any() or (band.max(axis=-1) < 60).any()  # the text itself


def test_colours_are_stable_distinct_and_shared_with_the_palette() -> None:
    ids = np.arange(1, 21)
    colors = track_colors(ids)
    assert len({tuple(c) for c in colors}) == 20
    assert [track_color(i) for i in ids] == [tuple(int(v) for v in c) for c in colors]
    assert track_color(5) == track_color(5 + PALETTE_SIZE)
    # neighbours (tracks born one after the other) are far apart in colour
    gaps = np.abs(colors[1:].astype(int) - colors[:-1].astype(int)).sum(axis=1)
    assert gaps.min() > 60


def test_caption_text() -> None:
    assert label_text(["person", "car"], 0, 3, 0.8713) == "person #3 0.87"
    assert label_text(["person"], 7, 12, 0.5) == "class7 #12 0.50"


def test_trails_follow_the_box_centres_and_forget_old_tracks() -> None:
    renderer = Renderer(["person"], alpha=0.0, trails=True, trail_length=5, boxes=False, labels=False, outlines=False)
    image = np.zeros((120, 160, 3), np.uint8)
    out = None
    for t in range(4):  # centre moves from (30, 60) to (90, 60)
        out = renderer.draw(image, instances(t, [(20 + 20 * t, 50, 40 + 20 * t, 70)], [4], [0.9]))
    row = out[60, 32:89]
    assert all(near(px, track_color(4)) for px in row)  # a line from centre to centre
    assert (out[:50] == 0).all() and (out[71:] == 0).all()  # and nothing else
    for t in range(4, 10):
        renderer.draw(image, instances(t, [], [], []))
    assert 4 not in renderer._history  # unseen for trail_length frames: dropped
    plain = Renderer(["person"], alpha=0.0, boxes=False, labels=False, outlines=False)
    assert (plain.draw(image, instances(0, [(20, 50, 40, 70)], [4], [0.9])) == 0).all()


def test_empty_frame_and_size_mismatch() -> None:
    image = np.full((120, 160, 3), 9, np.uint8)
    out = Renderer(["person"], trails=True).draw(image, FrameInstances.empty(0, 120, 160))
    np.testing.assert_array_equal(out, image)
    with pytest.raises(ValueError, match="masks are"):
        Renderer(["person"]).draw(np.zeros((100, 160, 3), np.uint8), instances(0, [(1, 1, 5, 5)], [1], [0.5]))
