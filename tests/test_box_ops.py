"""sipvis.model.box_ops on hand-computed cases: IoU under both pixel conventions, level points, decoding
and encoding, the crop-split quadrant rule."""

from __future__ import annotations

import pytest
import torch

from sipvis.model.box_ops import (aligned_box_iou, box_area, box_iou, box_to_distance, crop_split,
                                  crop_split_regions, distance_to_box, level_points, quadrant_index)


def test_box_area_both_conventions():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 4.0], [2.0, 3.0, 2.0, 3.0]])
    assert box_area(boxes).tolist() == [40.0, 0.0]
    assert box_area(boxes, pixel_offset=1.0).tolist() == [55.0, 1.0]  # inclusive: a point is one pixel


def test_box_iou_continuous_and_inclusive_pixels():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [4.0, 0.0, 8.0, 4.0], [20.0, 20.0, 30.0, 30.0]])
    continuous = box_iou(a, b, pixel_offset=0.0)
    inclusive = box_iou(a, b, pixel_offset=1.0)
    assert continuous.shape == (2, 3)
    # half overlap: 50 / (100 + 100 - 50); inclusive: 6 * 11 / (121 + 121 - 66)
    assert continuous[0, 0] == pytest.approx(50 / 150)
    assert inclusive[0, 0] == pytest.approx(66 / 176)
    # boxes that touch at x = 4 share nothing continuously, but one pixel column as inclusive pixels
    assert continuous[1, 1] == 0
    assert inclusive[1, 1] == pytest.approx(5 / (25 + 25 - 5))
    # disjoint boxes: 0 under both
    assert continuous[:, 2].tolist() == [0.0, 0.0] and inclusive[:, 2].tolist() == [0.0, 0.0]
    # a box with itself
    assert box_iou(a, a).diagonal().tolist() == [1.0, 1.0]
    assert box_iou(a, a, pixel_offset=1.0).diagonal().tolist() == [1.0, 1.0]


def test_pairwise_iou_batches_and_agrees_with_aligned():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 3, 5, 2, generator=g) * 50
    boxes = torch.cat((xy, xy + torch.rand(2, 3, 5, 2, generator=g) * 30 + 1), -1)  # (2, 3, 5, 4)
    for offset in (0.0, 1.0):
        pairwise = box_iou(boxes, boxes.flip(-2), pixel_offset=offset)
        assert pairwise.shape == (2, 3, 5, 5)
        aligned = aligned_box_iou(boxes, boxes.flip(-2), pixel_offset=offset)
        assert torch.equal(pairwise.diagonal(dim1=-2, dim2=-1), aligned)
        assert torch.equal(pairwise, box_iou(boxes.flip(-2), boxes, pixel_offset=offset).transpose(-1, -2))


def test_level_points_are_stride_centres_row_major():
    pts = level_points(2, 3, 8, torch.device("cpu"))
    assert pts.tolist() == [[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [4.0, 12.0], [12.0, 12.0], [20.0, 12.0]]
    assert level_points(1, 2, 16, torch.device("cpu")).tolist() == [[8.0, 8.0], [24.0, 8.0]]


def test_distance_to_box_round_trip_and_clipping():
    points = torch.tensor([[12.0, 4.0], [20.0, 12.0]])
    dist = torch.tensor([[2.0, 4.0, 6.0, 8.0], [30.0, 1.0, 5.0, 50.0]])
    boxes = distance_to_box(points, dist)
    assert boxes.tolist() == [[10.0, 0.0, 18.0, 12.0], [-10.0, 11.0, 25.0, 62.0]]
    assert torch.equal(box_to_distance(points, boxes), dist)
    # clipped to an image of height 40, width 24: x to [0, 23], y to [0, 39]
    assert distance_to_box(points, dist, clip_to=(40, 24)).tolist() == [[10.0, 0.0, 18.0, 12.0],
                                                                        [0.0, 11.0, 23.0, 39.0]]
    # encoding broadcasts: (P, 1, 2) points against (1, N, 4) boxes -> (P, N, 4)
    assert box_to_distance(points[:, None], boxes[None]).shape == (2, 2, 4)


def test_crop_split_quadrants_on_a_hand_made_box():
    size = (6, 7)
    maps = [torch.full((1,) + size, float(q)) for q in range(4)]  # map q holds the value q everywhere
    boxes = torch.tensor([[1.0, 0.0, 5.0, 4.0]])  # 4 x 4 pixels: x 1..4, y 0..3
    values, inside = crop_split(maps, boxes, size)
    # half a side is (4 + 0.1) / 2 = 2.05, so offsets 0, 1, 2 are the first half and 3 the second
    expected = torch.tensor([
        [0, 0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 1, 0, 0],
        [0, 2, 2, 2, 3, 0, 0],
    ], dtype=torch.float32)
    assert inside[0, :4, 1:5].all() and inside.sum() == 16
    assert torch.equal((values * inside)[0, :4], expected) and not inside[0, 4:].any()


def test_crop_split_consumes_a_generator_in_order_and_wants_four_maps():
    size = (4, 4)
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 4.0]], [[2.0, 2.0, 4.0, 4.0]]])  # (B=2, N=1, 4)
    seen = []

    def maps():
        for q in range(4):
            seen.append(q)
            yield torch.full((2, 1) + size, 10.0 + q)

    values, inside = crop_split(maps(), boxes, size)
    assert seen == [0, 1, 2, 3] and values.shape == (2, 1, 4, 4) and inside.shape == (2, 1, 4, 4)
    assert values[0, 0, 0].tolist() == [10.0, 10.0, 10.0, 11.0]
    assert values[1, 0, 2:, 2:].tolist() == [[10.0, 10.0], [10.0, 10.0]]  # 2 pixels: both in the first half
    assert inside[1, 0].sum() == 4
    with pytest.raises(ValueError):
        crop_split([torch.zeros((1,) + size)] * 3, boxes[0], size)


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_box_iou_is_aligned_box_iou_on_broadcast_pairs_bit_for_bit(offset):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 40, 4, generator=g) * 50
    b = torch.rand(3, 30, 4, generator=g) * 50
    a[0, :5, 2:] = a[0, :5, :2]  # zero-area boxes: 0 / 0 IoU must stay NaN
    b[0, :5] = a[0, :5]
    a[1, :5, 2:] = a[1, :5, :2] - 3  # inverted boxes (random weights give them)
    expected = aligned_box_iou(a[..., :, None, :], b[..., None, :, :], offset)
    got = box_iou(a, b, offset)
    assert got.shape == (3, 40, 30)
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.nan_to_num(7.0), expected.nan_to_num(7.0))


def test_quadrant_index_picks_what_crop_split_picks():
    g = torch.Generator().manual_seed(1)
    size = (24, 40)
    boxes = torch.rand(2, 5, 4, generator=g) * 20
    boxes[..., 2:] += boxes[..., :2]
    maps = torch.rand(4, 2, 5, *size, generator=g)
    values, inside = crop_split(maps.unbind(0), boxes, size)
    right, bottom, inside2 = crop_split_regions(boxes, size)
    picked = maps.permute(1, 2, 0, 3, 4).gather(2, quadrant_index(right, bottom)[:, :, None]).squeeze(2)
    assert torch.equal(inside, inside2) and torch.equal(picked, values)
