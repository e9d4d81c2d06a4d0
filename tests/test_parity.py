"""Parity with the ORIGINAL SipMask-VIS code on deterministic weights (../shared/reference/sipmask_vis).

Tolerances are the reference README's: input exact; raw outputs max|a-b| <= 1e-3 (1 + max|b|);
detections matched by label and box IoU >= 0.99, |score diff| <= 1e-4, mask IoU >= 0.99 (>= 0.9 under
50 px), same track ids; video JSON entries matched by category and masks, |score diff| <= 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference import (CLIPS, assert_video_results_match, box_iou, decode, expected_frames, expected_video,
                       frames, mask_iou, raw_outputs, reference_state_dict)
from sipvis.checkpoint import convert_mmdet
from sipvis.engine.inference import Segmenter, use_exact_fp32
from sipvis.io.ytvis_results import VideoResultsBuilder
from sipvis.model.preprocess import normalize_and_pad, resize_frame
from sipvis.model.sipmask import SipMaskVIS
from sipvis.track.tracker import OriginalTracker

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="module")
def model() -> SipMaskVIS:
    cfg, state, report = convert_mmdet(reference_state_dict())
    assert report.ok and not report.reinitialised
    net = SipMaskVIS(cfg)
    net.load_state_dict(state)
    return net.eval()


def run_clip(model: SipMaskVIS, clip: str, device: str = "cpu", batch_size: int = 1):
    tracker = OriginalTracker()
    segmenter = Segmenter(model, device, torch.float32, batch_size)
    return list(segmenter.track(frames(clip), tracker)), tracker


@pytest.mark.parametrize("clip", CLIPS)
def test_preprocessed_input_is_exact(model, clip):
    cfg = model.cfg
    resized, _ = resize_frame(frames(clip)[0], cfg.max_size)
    x = normalize_and_pad(torch.from_numpy(resized)[None], cfg.pixel_mean, cfg.pixel_std)
    expected = raw_outputs(clip)["input"]
    assert x.shape[1:] == expected.shape
    assert np.abs(x[0].numpy() - expected).max() <= 1e-4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("clip", CLIPS)
def test_raw_head_outputs(model, clip, device):
    raw = raw_outputs(clip)
    use_exact_fp32(torch.device(device))
    net = model.to(device)
    with torch.inference_mode():
        out = net(torch.from_numpy(raw["input"])[None].to(device))
    model.to("cpu")
    ours = {"feat_masks": out.basis, "track_feats": out.track_feats}
    for level in range(5):
        ours[f"cls_scores_{level}"] = out.cls_logits[level]
        ours[f"bbox_preds_{level}"] = out.bbox_reg[level]
        ours[f"centernesses_{level}"] = out.centerness[level]
        ours[f"cof_preds_{level}"] = out.coeffs[level]
    for name, tensor in ours.items():
        a, b = tensor[0].float().cpu().numpy(), raw[name]
        assert a.shape == b.shape, name
        err, tol = np.abs(a - b).max(), 1e-3 * (1 + np.abs(b).max())
        assert err <= tol, f"{name}: max error {err:.3g} > {tol:.3g}"


def assert_frames_match(results, clip):
    for frame, expected in zip(results, expected_frames(clip), strict=True):
        dets = expected["detections"]
        assert len(frame) == len(dets), f"frame {expected['frame']}: {len(frame)} detections, expected {len(dets)}"
        shape = (frame.height, frame.width)
        unmatched = set(range(len(frame)))
        for det in dets:
            candidates = [j for j in unmatched if frame.labels[j] == det["label"]
                          and box_iou(frame.boxes[j], det["bbox"]) >= 0.99]
            assert candidates, f"frame {expected['frame']}: no match for {det['label']} {det['bbox']}"
            j = max(candidates, key=lambda k: box_iou(frame.boxes[k], det["bbox"]))
            unmatched.remove(j)
            assert abs(frame.scores[j] - det["score"]) <= 1e-4
            assert frame.track_ids[j] == det["track_id"] + 1  # outputs are 1-based
            want = decode(det["segmentation"], shape)
            assert mask_iou(frame.masks[j], want) >= (0.99 if want.sum() >= 50 else 0.9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("clip", CLIPS)
def test_detections_masks_and_track_ids(model, clip, device):
    results, _ = run_clip(model, clip, device)
    assert_frames_match(results, clip)


@pytest.mark.parametrize("clip", CLIPS)
def test_video_results(model, clip):
    results, tracker = run_clip(model, clip)
    builder = VideoResultsBuilder(video_id=1)
    for frame in results:
        builder.add(frame)
    overrides = {(0, t + 1): s for t, s in tracker.first_frame_scores.items()}
    shape = (results[0].height, results[0].width)
    assert_video_results_match(builder.results(overrides), expected_video(clip), shape)


@pytest.mark.parametrize("clip", CLIPS)
def test_batched_inference_equals_frame_by_frame(model, clip):
    single, _ = run_clip(model, clip, batch_size=1)
    batched, _ = run_clip(model, clip, batch_size=3)
    for a, b in zip(single, batched, strict=True):
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        for ma, mb in zip(a.masks, b.masks):
            assert mask_iou(ma, mb) >= 0.999



def test_normalize_and_pad_layout_and_rgb_order():
    images = torch.randint(0, 256, (2, 37, 50, 3), dtype=torch.uint8)
    mean, std = (1.5, 2.25, 3.0), (2.0, 1.0, 0.5)
    x = normalize_and_pad(images, mean, std, divisor=32)
    assert x.shape == (2, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    expected = (images.permute(0, 3, 1, 2).float() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1)
    assert torch.equal(x[:, :, :37, :50], expected) and not x[:, :, 37:].any() and not x[:, :, :, 50:].any()
    rgb = normalize_and_pad(images, mean, std, to_rgb=True)
    assert torch.equal(rgb, normalize_and_pad(images.flip(-1), mean, std))


@pytest.mark.parametrize("seed", range(3))
def test_fast_nms_equals_every_rank_flagged(seed):
    """`fast_nms` examines only the ranks that decide its top-k; flagging all of them gives the same."""
    from sipvis.model.config import SipMaskConfig
    from sipvis.model.postprocess import _nms_flags, fast_nms

    g = torch.Generator().manual_seed(seed)
    cfg = SipMaskConfig()
    boxes = torch.rand(2, 600, 4, generator=g) * 300
    boxes[..., 2:] += boxes[..., :2] * 0.2
    scores = torch.rand(2, 600, 40, generator=g) * 0.3
    scores[1, :, 5:] = 0.0  # a frame with few candidates over the threshold
    scores[0, 10:20] = scores[0, :10]  # exact ties
    index, labels, best, valid = fast_nms(boxes, scores, cfg)
    cls_scores, order = scores.transpose(1, 2).sort(dim=2, descending=True)
    cls_scores, order = cls_scores[..., :200], order[..., :200]
    keep = _nms_flags(boxes, order, cfg.nms_iou) & (cls_scores > cfg.score_thr)
    flat = torch.where(keep, cls_scores, torch.full_like(cls_scores, -1.0)).flatten(1)
    want_best, pos = flat.topk(cfg.max_per_img, dim=1)
    assert torch.equal(best, want_best.clamp(min=0)) and torch.equal(valid, want_best > 0)
    assert torch.equal(labels[valid], (pos // 200)[valid])
    assert torch.equal(index[valid], order.flatten(1).gather(1, pos)[valid])


@pytest.mark.parametrize("factor", [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0), (4.0, 4.0), (5.0, 5.0), (2 / 0.75, 2 / 0.75),
                                    (2.5, 3.125), (10.0, 10.0)])
def test_windowed_upsampling_decides_every_pixel_as_the_whole_map(factor, monkeypatch):
    """Masks upsampled in the windows around their boxes take the whole maps' decisions, thresholded,
    cropped or pasted into a larger frame: boxes anywhere, touching the map's edges, empty or covering it
    all; values sitting on the threshold are handed to the whole-map upsampling, and only those maps."""
    from sipvis.model import postprocess

    handed = []
    whole_map = postprocess._threshold_whole
    monkeypatch.setattr(postprocess, "_threshold_whole",
                        lambda soft, f, t, out, slots: handed.append(slots.clone()) or whole_map(soft, f, t, out, slots))
    g = torch.Generator().manual_seed(int(factor[1] * 100))
    h, w = 45, 80
    r, c = torch.arange(h)[:, None], torch.arange(w)
    on_threshold = 0
    for trial in range(12):
        y1, x1 = torch.randint(0, h, (2, 6, 1, 1), generator=g), torch.randint(0, w, (2, 6, 1, 1), generator=g)
        y2, x2 = y1 + torch.randint(0, h, (2, 6, 1, 1), generator=g), x1 + torch.randint(0, w, (2, 6, 1, 1), generator=g)
        y1[0, 0], y2[0, 0], x1[0, 0], x2[0, 0] = 0, h, 0, w
        soft = torch.rand(2, 6, h, w, generator=g) * ((r >= y1) & (r < y2) & (c >= x1) & (c < x2))
        soft[1, 2] = (soft[1, 2] != 0) * 0.5  # every value of one map on the threshold 0.5
        whole = F.interpolate(soft, scale_factor=factor, mode="bilinear", align_corners=False)
        full_h, full_w = whole.shape[-2:]
        for threshold in (0.5, 0.1, 0.9, 0.0):
            for frame in ((full_h, full_w), (full_h - 3, full_w + 5), (full_h + 2, full_w - 7)):
                handed.clear()
                out = torch.zeros(2, 6, *frame, dtype=torch.bool)
                postprocess._threshold_windows(soft, factor, threshold, out)
                want = torch.zeros_like(out)
                hh, ww = min(frame[0], full_h), min(frame[1], full_w)
                want[..., :hh, :ww] = whole[..., :hh, :ww] > threshold
                assert torch.equal(out, want), (trial, threshold, frame)
                if bool(((whole[1, 2, :hh, :ww] - threshold).abs() <= 1e-7).any()):
                    assert handed and bool(handed[0][1, 2])  # a map with a value on the threshold went whole
                    on_threshold += 1
                for slots in handed:  # only maps with a value near the threshold go whole
                    for i, j in slots.nonzero().tolist():
                        assert bool(((whole[i, j, :hh, :ww] - threshold).abs() <= 2e-6).any()), (i, j)
    assert on_threshold  # the hand-over was exercised

def test_paste_masks_in_chunks_pastes_the_whole_maps_decisions():
    """Any chunking (here one slot at a time, and all at once) gives the whole maps' thresholded
    upsampling at the top-left of the frame, all False in invalid and unused slots."""
    from sipvis.model.postprocess import FrameGeometry, paste_masks

    g = torch.Generator().manual_seed(5)
    soft = torch.rand(2, 4, 36, 64, generator=g) * (torch.rand(2, 4, 36, 64, generator=g) > 0.3)
    valid = torch.tensor([[True, True, False, False, False, False], [True, True, True, False, False, False]])
    # factor 5: 180x320 upsampled, pasted into 170x330 (rows cropped, columns past 320 False)
    geom = FrameGeometry(resized=(72, 128), original=(170, 330), scale=0.4)
    whole = F.interpolate(soft * valid[:, :4, None, None], scale_factor=geom.mask_factor(), mode="bilinear",
                          align_corners=False) > 0.5
    want = torch.zeros(2, 6, 170, 330, dtype=torch.bool)
    want[:, :3, :, :320] = whole[:, :3, :170]
    for budget in (1, None):
        assert torch.equal(paste_masks(soft[:, :3], valid, 3, geom, 0.5, budget=budget), want)
