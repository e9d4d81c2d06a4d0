"""`encode_rles`: a frame's masks run-length encoded in one call give each mask's own RLE."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

from sipvis.io.ytvis_results import encode_rle, encode_rles


def test_batched_rles_are_each_masks_own():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 37, 53)) > 0.6
    masks[1] = False  # an empty mask
    masks[3] = True  # a full one
    expected = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    got = encode_rles(masks)
    assert [r["counts"] for r in got] == [e["counts"].decode("utf-8") for e in expected]
    assert all(r["size"] == [37, 53] for r in got)
    assert encode_rle(masks[2]) == got[2]
    assert encode_rles(masks[:0]) == []
    assert np.array_equal(mask_utils.decode({"size": [37, 53], "counts": got[4]["counts"]}), masks[4])
