"""COCO training augmentations (`sipvis.data.coco_transforms`): the original's parameters, boxes and masks
consistent through every geometric step, one result per seed."""

from __future__ import annotations

import numpy as np
import pytest

from sipvis.data.coco_transforms import (Expand, MinIoURandomCrop, MultiScaleResize, PhotometricDistortion, Sample,
                                         SSDAugment, flip_sample, resize_sample)


def rect_sample(seed: int = 0, h: int = 120, w: int = 160, n: int = 4) -> Sample:
    """A random image with n rectangles whose masks fill their (inclusive, integer) boxes exactly."""
    rng = np.random.default_rng(seed)
    boxes, masks = [], np.zeros((n, h, w), np.uint8)
    for i in range(n):
        x1, y1 = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
        x2, y2 = x1 + int(rng.integers(10, 30)), y1 + int(rng.integers(10, 30))
        boxes.append([x1, y1, x2, y2])
        masks[i, y1:y2 + 1, x1:x2 + 1] = 1
    image = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    return Sample(image, np.array(boxes, np.float32), np.arange(n, dtype=np.int64) + 3, masks)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Inclusive bounding boxes of (N, H, W) masks."""
    out = []
    for m in masks:
        ys, xs = np.nonzero(m)
        out.append([xs.min(), ys.min(), xs.max(), ys.max()])
    return np.array(out, np.float32).reshape(-1, 4)


def same(a: Sample, b: Sample) -> bool:
    return all(np.array_equal(x, y) for x, y in zip((a.image, a.boxes, a.labels, a.masks),
                                                      (b.image, b.boxes, b.labels, b.masks)))


def test_defaults_are_the_original_config_values():
    p = PhotometricDistortion()
    assert (p.brightness_delta, p.contrast_range, p.saturation_range, p.hue_delta) == (32, (0.5, 1.5), (0.5, 1.5), 18)
    assert Expand().ratio_range == (1.0, 4.0) and Expand().mean == (102.9801, 115.9465, 122.7717)
    assert MinIoURandomCrop().min_ious == (0.1, 0.3, 0.5, 0.7, 0.9) and MinIoURandomCrop().min_crop_size == 0.3
    assert SSDAugment().size == (576, 576) and SSDAugment().flip_prob == 0.5
    assert MultiScaleResize().scales == ((1333, 800), (1333, 640)) and MultiScaleResize().scale_mode == "range"


def test_photometric_is_seeded_and_leaves_geometry():
    s = rect_sample()
    a = PhotometricDistortion()(s, np.random.default_rng(3))
    assert same(a, PhotometricDistortion()(s, np.random.default_rng(3)))
    assert any(not np.allclose(a.image, PhotometricDistortion()(s, np.random.default_rng(k)).image) for k in range(4, 8))
    assert a.boxes is s.boxes and a.masks is s.masks and a.image.dtype == np.float32
    neutral = PhotometricDistortion(0, (1, 1), (1, 1), 0)  # only the channel order can change
    for seed in range(6):
        out = neutral(s, np.random.default_rng(seed)).image
        np.testing.assert_allclose(np.sort(out, -1), np.sort(s.image, -1), rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("seed", range(8))
def test_expand_moves_image_boxes_and_masks_together(seed):
    s = rect_sample(seed)
    out = Expand()(s, np.random.default_rng(seed))
    np.testing.assert_array_equal(mask_boxes(out.masks), out.boxes)
    if out is s:
        return
    dx, dy = (out.boxes[0, :2] - s.boxes[0, :2]).astype(int)
    h, w = s.image.shape[:2]
    np.testing.assert_array_equal(out.image[dy:dy + h, dx:dx + w], s.image)
    assert np.allclose(out.image[0, 0], Expand().mean) or (dx == 0 and dy == 0)
    assert out.image.shape[0] >= h and out.image.shape[0] <= 4 * h


@pytest.mark.parametrize("seed", range(12))
def test_min_iou_crop_keeps_boxes_masks_labels_consistent(seed):
    s = rect_sample(seed, n=6)
    out = MinIoURandomCrop()(s, np.random.default_rng(seed))
    assert same(out, MinIoURandomCrop()(s, np.random.default_rng(seed)))
    h, w = out.image.shape[:2]
    assert out.masks.shape == (len(out.boxes), h, w) and len(out.labels) == len(out.boxes) >= 1
    # clipping a rectangle's box to the crop is the crop of its mask (up to the exclusive crop edge)
    expected = out.boxes.copy()
    expected[:, 2] = np.minimum(expected[:, 2], w - 1)
    expected[:, 3] = np.minimum(expected[:, 3], h - 1)
    np.testing.assert_array_equal(mask_boxes(out.masks), expected)
    if out is not s:
        assert 0.3 * 160 - 1 <= w and 0.3 * 120 - 1 <= h and 0.5 - 0.05 <= h / w <= 2 + 0.05
        assert set(out.labels) <= set(s.labels)


def test_min_iou_crop_without_boxes_is_identity():
    s = rect_sample(n=0)
    assert MinIoURandomCrop()(s, np.random.default_rng(0)) is s


def test_resize_and_flip_keep_masks_on_boxes():
    s = rect_sample(1, n=5)
    out, (ws, hs) = resize_sample(s, 576, 576)
    assert out.image.shape == (576, 576, 3) and (ws, hs) == (576 / 160, 576 / 120)
    np.testing.assert_allclose(mask_boxes(out.masks), out.boxes, atol=hs + 1)
    flipped = flip_sample(s)
    np.testing.assert_array_equal(mask_boxes(flipped.masks), flipped.boxes)
    assert same(flip_sample(flipped), s)


@pytest.mark.parametrize("seed", range(6))
def test_ssd_augment_end_to_end(seed):
    s = rect_sample(seed, n=5)
    out, _ = SSDAugment()(s, np.random.default_rng(seed))
    again, _ = SSDAugment()(s, np.random.default_rng(seed))
    assert same(out, again)
    assert out.image.shape == (576, 576, 3) and out.masks.shape[1:] == (576, 576)
    assert len(out.boxes) == len(out.labels) == len(out.masks) >= 1
    visible = out.masks.reshape(len(out.masks), -1).any(1)
    # nearest-neighbour mask resize vs. scaled boxes: within one source pixel (up to 4 x 576 / 48 here)
    np.testing.assert_allclose(mask_boxes(out.masks[visible]), out.boxes[visible], atol=576 / 36 + 1)


@pytest.mark.parametrize("seed", range(4))
def test_multi_scale_resize(seed):
    s = rect_sample(seed, h=300, w=400)
    out, factor = MultiScaleResize()(s, np.random.default_rng(seed))
    h, w = out.image.shape[:2]
    assert 640 <= min(h, w) <= 800 and max(h, w) <= 1333 and factor == pytest.approx(min(h, w) / 300, abs=0.01)
    np.testing.assert_allclose(mask_boxes(out.masks), out.boxes, atol=factor + 1)
    assert same(out, MultiScaleResize()(s, np.random.default_rng(seed))[0])
