"""The `robust` tracker (sipvis.track.robust): ids stay with their objects through smooth motion,
same-class crossings (where the original tracker swaps or drops) and occlusions shorter than
`max_age`; no detection above the birth score is dropped; it works without embeddings, uses masks
when given, votes a class per track and is deterministic."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from sipvis.track.robust import RobustTracker, RobustTrackerConfig, pack_to_host
from sipvis.track.tracker import OriginalTracker, visible_detections


def _bench_module():
    """benchmarks/bench_tracker.py: its scene generator and its identity counts."""
    spec = importlib.util.spec_from_file_location("bench_tracker", REPO / "benchmarks" / "bench_tracker.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_tracker"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_bench = _bench_module()
make_scene, run_tracker = _bench.make_scene, _bench.run_tracker

DIM = 16


def bases(n: int, seed: int = 0) -> np.ndarray:
    """n object embeddings, (n, DIM)."""
    return np.random.default_rng(seed).normal(0, 1, (n, DIM))


def frame(boxes, labels, scores, emb=None, order=None):
    """Detections as the Segmenter gives them (sorted by score); returns the tensors and the object
    index of each row."""
    boxes, labels, scores = np.asarray(boxes, np.float32), np.asarray(labels), np.asarray(scores, np.float32)
    order = np.argsort(-scores, kind="stable") if order is None else np.asarray(order)
    out = [torch.tensor(boxes[order]), torch.tensor(scores[order]), torch.tensor(labels[order])]
    out.append(None if emb is None else torch.tensor(np.asarray(emb, np.float32)[order]))
    return out, order


def run(tracker, frames, masks=None):
    """Per frame, {object index: id} for the objects present."""
    result = []
    for t, ((boxes, scores, labels, emb), order) in enumerate(frames):
        kw = {} if masks is None else {"masks": masks[t]}
        ids = tracker.update(boxes, scores, labels, emb, t, **kw)
        result.append({int(obj): ids[i] for i, obj in enumerate(order)})
    return result


def kept(got) -> bool:
    """Each object has one id over all frames, and no two objects share one."""
    per_object: dict[int, set[int]] = {}
    for g in got:
        for obj, track_id in g.items():
            per_object.setdefault(obj, set()).add(track_id)
    ids = [next(iter(s)) for s in per_object.values() if len(s) == 1]
    return len(ids) == len(per_object) and len(set(ids)) == len(ids) and -1 not in ids


def box(cx, cy, half=30.0):
    return [cx - half, cy - half, cx + half, cy + half]


def test_smooth_motion_keeps_ids():
    rng = np.random.default_rng(1)
    base = bases(3)
    frames = []
    for t in range(40):
        centres = [(50 + 5 * t, 60 + 2 * t), (400 - 4 * t, 100 + 3 * t), (300, 300 - 3 * t)]
        emb = base + rng.normal(0, 0.3, base.shape)
        frames.append(frame([box(*c) for c in centres], [0, 0, 1], rng.uniform(0.5, 0.9, 3), emb))
    for with_emb in (True, False):
        tracker = RobustTracker()
        if not with_emb:
            frames = [((b, s, lab, None), o) for (b, s, lab, _), o in frames]
        got = run(tracker, frames)
        assert kept(got) and len(got[-1]) == 3, with_emb


def crossing(rng, with_emb=True, steps=12):
    """Two same-class objects on one row, moving towards each other at 20 px/frame (a third of their
    width): at step 6 each one is where the other was at step 5. Weak embeddings (norm 0.5), as when
    the tracking branch is not decisive."""
    base = bases(2, seed=3)
    base *= 0.5 / np.linalg.norm(base, axis=1, keepdims=True)
    frames = []
    for t in range(steps):
        xa, xb = 100 + 20 * t, 320 - 20 * t
        emb = base + rng.normal(0, 0.02, base.shape) if with_emb else None
        frames.append(frame([box(xa, 150), box(xb, 150)], [2, 2], [0.8, 0.7] if t % 2 else [0.7, 0.8], emb))
    return frames


@pytest.mark.parametrize("with_emb", [True, False])
def test_crossing_same_class_keeps_ids_where_original_fails(with_emb):
    frames = crossing(np.random.default_rng(0), with_emb)
    assert kept(run(RobustTracker(), frames))
    if with_emb:  # the original needs embeddings
        original = run(OriginalTracker(), frames)
        assert not kept(original), original  # swapped (or dropped) at the crossing


def occluded(k: int, with_emb: bool = True):
    """Object 0 moves slowly and is hidden for k frames from frame 5; object 1 (same class) stays."""
    rng = np.random.default_rng(5)
    base = bases(2, seed=7)
    frames = []
    for t in range(5 + k + 5):
        objs = [0, 1] if not 5 <= t < 5 + k else [1]
        centres = {0: (100 + 2 * t, 100), 1: (400, 250)}
        emb = (base + rng.normal(0, 0.2, base.shape))[objs] if with_emb else None
        (tensors, order) = frame([box(*centres[o]) for o in objs], [1] * len(objs), [0.9, 0.8][:len(objs)], emb)
        frames.append((tensors, np.asarray(objs)[order]))
    return frames


@pytest.mark.parametrize("with_emb", [True, False])
@pytest.mark.parametrize("k", [1, 4, 6, 7, 10])
def test_occlusion_up_to_max_age_keeps_id_longer_gets_new(with_emb, k):
    """A track survives `max_age` (6) unmatched frames: hidden for k <= 6 frames the object gets its
    id back, hidden for longer it gets a new one (the next id, 2)."""
    tracker = RobustTracker(RobustTrackerConfig(max_age=6))
    got = run(tracker, occluded(k, with_emb))
    expected = 0 if k <= 6 else 2
    assert [g.get(0) for g in got] == [0] * 5 + [None] * k + [expected] * 5
    assert all(g[1] == 1 for g in got)
    if k > 6:
        assert sorted(tracker.tracks.ids.tolist()) == [1, 2]  # the forgotten track left the buffer


def test_no_detection_above_birth_score_dropped():
    """Crowded frames of heavily overlapping same-class detections: every detection at or above the
    birth score gets an id, ids are unique within a frame; the original drops some."""
    rng = np.random.default_rng(11)
    cfg = RobustTrackerConfig()
    robust, original = RobustTracker(cfg), OriginalTracker()
    original_dropped = 0
    for t in range(30):
        n = int(rng.integers(5, 15))
        centres = rng.uniform(100, 160, (n, 2))
        scores = np.sort(rng.uniform(0.05, 0.95, n))[::-1].copy()
        (boxes, s, labels, emb), _ = frame([box(*c) for c in centres], np.zeros(n, int), scores,
                                           rng.normal(0, 1, (n, DIM)))
        ids = robust.update(boxes, s, labels, emb, t)
        assert len(ids) == n
        assert all(i >= 0 for i, sc in zip(ids, scores) if sc >= cfg.birth_score)
        shown = [i for i in ids if i >= 0]
        assert len(shown) == len(set(shown))
        assert visible_detections(ids) == [i for i, x in enumerate(ids) if x >= 0]
        original_dropped += original.update(boxes, s, labels, emb, t).count(-1)
    assert original_dropped > 0


def test_low_score_detections_continue_tracks_but_do_not_start_them():
    tracker = RobustTracker()
    boxes = torch.tensor([box(100, 100)])
    assert tracker.update(boxes, torch.tensor([0.1]), torch.tensor([0])) == [-1]  # below birth: not reported
    assert tracker.update(boxes, torch.tensor([0.9]), torch.tensor([0])) == [0]
    assert tracker.update(boxes + 2, torch.tensor([0.2]), torch.tensor([0])) == [0]  # continues its track


def test_without_embeddings_none_and_zero_width_agree():
    scene = make_scene(frames=150, objects=6, seed=4)
    a, b = RobustTracker(), RobustTracker()
    for f in scene:
        ids = a.update(f.boxes, f.scores, f.labels, None)
        assert ids == b.update(f.boxes, f.scores, f.labels, f.embeddings[:, :0])
    counts = run_tracker(RobustTracker, scene, embeddings=False)
    assert counts["dropped"] == 0
    assert counts["id_switches"] <= 10


def test_class_vote_is_score_weighted():
    tracker = RobustTracker()
    emb = torch.tensor(bases(1))
    labels = [1] * 5 + [2] * 5
    scores = [0.9] * 5 + [0.35] * 5  # label 1: 4.5, label 2: 1.75
    for t, (lab, sc) in enumerate(zip(labels, scores)):
        ids = tracker.update(torch.tensor([box(100 + t, 100)]), torch.tensor([sc]), torch.tensor([lab]), emb, t)
        assert ids == [0]  # the label flip does not break the track
    assert tracker.classes() == {0: 1}
    assert tracker.voted_labels(ids) == [1]  # the vote, not this frame's label 2
    for t in range(10, 25):  # 15 more frames of label 2 at 0.35: 1.75 + 5.25 = 7.0 > 4.5
        tracker.update(torch.tensor([box(100 + t, 100)]), torch.tensor([0.35]), torch.tensor([2]), emb, t)
    assert tracker.track_class(0) == 2
    assert tracker.voted_labels([-1, 0]) == [-1, 2]


def test_class_vote_of_forgotten_tracks_is_kept():
    tracker = RobustTracker(RobustTrackerConfig(max_age=1))
    tracker.update(torch.tensor([box(100, 100)]), torch.tensor([0.9]), torch.tensor([3]))
    for _ in range(3):
        tracker.update(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert len(tracker.tracks) == 0
    assert tracker.classes() == {0: 3}
    tracker.reset()
    assert tracker.classes() == {}


@pytest.mark.parametrize("as_numpy", [False, True])
def test_masks_separate_objects_with_identical_boxes(as_numpy):
    """Two same-class objects share one box (left and right halves of it) and swap score order every
    frame: without embeddings the box cue cannot tell them apart, the mask cue can."""
    h, w = 64, 64
    left, right = np.zeros((h, w), bool), np.zeros((h, w), bool)
    left[16:48, 16:32], right[16:48, 32:48] = True, True
    frames, masks = [], []
    for t in range(12):
        order = [0, 1] if t % 2 else [1, 0]
        frames.append(frame([[16, 16, 47, 47]] * 2, [0, 0], [0.8, 0.8], order=order))
        pair = np.stack([left, right])[order]
        masks.append(pair if as_numpy else torch.tensor(pair))  # host arrays, as the Segmenter holds them
    tracker = RobustTracker(RobustTrackerConfig(mask_stride=1))
    assert kept(run(tracker, frames, masks))
    plain = run(RobustTracker(), frames)
    assert not kept(plain)  # the mask cue is what keeps them apart


def test_deterministic_and_numpy_inputs_match_tensors():
    scene = make_scene(frames=120, objects=10, seed=9)
    first, second, host = RobustTracker(), RobustTracker(), RobustTracker()
    for f in scene:
        ids = first.update(f.boxes, f.scores, f.labels, f.embeddings)
        assert ids == second.update(f.boxes, f.scores, f.labels, f.embeddings)
        assert ids == host.update(f.boxes.numpy(), f.scores.numpy(), f.labels.numpy(), f.embeddings.numpy())


def test_keeps_identities_on_the_benchmark_scene():
    """The benchmark's scene (crossings, occlusions, false detections): robust switches ids far less
    than the original and reports every real detection."""
    scene = make_scene(frames=300, objects=10, seed=0)
    robust = run_tracker(RobustTracker, scene)
    original = run_tracker(OriginalTracker, scene)
    assert robust["dropped"] == 0 < original["dropped"]
    assert robust["id_switches"] * 5 <= original["id_switches"]


def test_pack_to_host_splits_back_what_it_packed():
    """The one copy per frame from an accelerator: boxes, scores, labels, embeddings and masks packed
    into one float32 block and split back exactly (here on the CPU; the CUDA test runs it for real)."""
    n = 5
    parts = [torch.rand(n, 4) * 600, torch.rand(n), torch.arange(n) * 7, torch.randn(n, 3),
             torch.rand(n, 6, 4) > 0.5]
    out = pack_to_host(parts)
    assert [a.shape for a in out] == [(n, 4), (n, 1), (n, 1), (n, 3), (n, 24)]
    for a, t in zip(out, parts):
        np.testing.assert_array_equal(a, t.reshape(n, -1).float().numpy())
    empty = pack_to_host([torch.zeros(0, 4), torch.zeros(0)])
    assert [a.shape for a in empty] == [(0, 4), (0, 1)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_tensors_give_the_same_ids():
    scene = make_scene(frames=60, objects=10, seed=2)
    cpu, gpu = RobustTracker(), RobustTracker()
    for f in scene:
        ids = cpu.update(f.boxes, f.scores, f.labels, f.embeddings)
        assert ids == gpu.update(f.boxes.cuda(), f.scores.cuda(), f.labels.cuda(), f.embeddings.cuda())


def test_empty_frames():
    tracker = RobustTracker()
    assert tracker.update(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), None) == []
    assert tracker.update(torch.tensor([box(50, 50)]), torch.tensor([0.9]), torch.tensor([0]), None) == [0]
    assert tracker.update(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), None) == []
    assert tracker.update(torch.tensor([box(52, 50)]), torch.tensor([0.9]), torch.tensor([0]), None) == [0]


# -- the three causes of ID switches found on the demo model's synthetic videos ------------------------


def _rect_mask(x0: int, x1: int, h: int = 120, w: int = 400) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[40:80, x0:x1] = True
    return m


@pytest.mark.parametrize("duplicate_iou", [0.5, 2.0])
def test_second_detection_of_an_object_does_not_take_a_hidden_objects_track(duplicate_iou):
    """Object A (label 0) goes behind object B (label 1); B is then detected twice, the second time with
    A's label and a lower score, as the model does. That duplicate must not continue A's track, so A
    gets its id back when it comes out (without embeddings: the overlap cue alone would give it A)."""
    cfg = RobustTrackerConfig(duplicate_iou=duplicate_iou, mask_stride=1)
    tracker = RobustTracker(cfg)
    a_box, b_box = [150, 40, 189, 79], [160, 40, 199, 79]
    a_mask, b_mask = _rect_mask(150, 160), _rect_mask(160, 200)  # A's visible part: left of B
    ids = []
    for t in range(10):
        if t < 3 or t >= 7:  # A visible
            boxes, labels, scores, masks = [a_box, b_box], [0, 1], [0.8, 0.9], [a_mask, b_mask]
        else:  # A hidden; B detected twice
            boxes, labels, scores, masks = [b_box, b_box], [1, 0], [0.9, 0.5], [b_mask, b_mask]
        (bx, sc, lab, _), order = frame(boxes, labels, scores)
        out = tracker.update(bx, sc, lab, None, t, masks=torch.tensor(np.stack(masks)[order]))
        ids.append({int(o): out[i] for i, o in enumerate(order)})
    a_id = ids[0][0]
    if duplicate_iou <= 1:
        assert all(ids[t][1] == -1 for t in range(3, 7))  # the duplicate is not reported
        assert ids[7][0] == a_id and ids[9][0] == a_id  # A comes back under its id
    else:  # the cause, for the record: the duplicate takes A's track
        assert ids[3][1] == a_id


@pytest.mark.parametrize("active_first", [True, False])
def test_a_lost_track_does_not_take_the_object_an_active_track_follows(active_first):
    """A duplicate track (born from a second detection of one object, then lost) must not win that
    object's detection back from the track following it, even when its cues are slightly better."""
    e = bases(2, seed=5)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    e_b = e[1] - (e[1] @ e[0]) * e[0]
    e_b = 0.5 * e[0] + np.sqrt(0.75) * e_b / np.linalg.norm(e_b)  # cosine 0.5 with e[0]
    tracker = RobustTracker(RobustTrackerConfig(active_first=active_first))
    first = tracker.update(torch.tensor([box(100, 100), box(104, 100)]), torch.tensor([0.9, 0.8]),
                           torch.tensor([0, 0]), torch.tensor(np.stack([e[0], e_b]), dtype=torch.float32))
    assert first == [0, 1]
    assert tracker.update(torch.tensor([box(100, 100)]), torch.tensor([0.9]), torch.tensor([0]),
                          torch.tensor(e[:1], dtype=torch.float32), 1) == [0]
    # the object now looks more like the duplicate's memory and sits where it was
    look = 0.45 * e[0] + e_b
    got = tracker.update(torch.tensor([box(104, 100)]), torch.tensor([0.9]), torch.tensor([0]),
                         torch.tensor(look[None], dtype=torch.float32), 2)
    assert got == ([0] if active_first else [1])


def test_lost_track_comes_back_where_its_motion_predicts_it():
    """A lost track is re-identified by a moderately similar detection (cosine 0.6, below
    `reid_similarity`) where its motion predicts it, but not by the same detection far away."""
    e = bases(2, seed=6)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    perp = e[1] - (e[1] @ e[0]) * e[0]
    back = 0.6 * e[0] + 0.8 * perp / np.linalg.norm(perp)
    for far, expect_same in ((0, True), (300, False)):
        tracker = RobustTracker()
        for t in range(6):
            assert tracker.update(torch.tensor([box(100 + 10 * t, 100)]), torch.tensor([0.8]), torch.tensor([0]),
                                  torch.tensor(e[:1], dtype=torch.float32), t) == [0]
        for t in range(6, 9):  # hidden
            tracker.update(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                           torch.zeros(0, DIM), t)
        got = tracker.update(torch.tensor([box(190 + far, 100)]), torch.tensor([0.8]), torch.tensor([0]),
                             torch.tensor(back[None], dtype=torch.float32), 9)
        assert (got == [0]) == expect_same, (far, got)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _like(base: np.ndarray, other: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector at cosine `cos` to unit `base`, in the plane of `base` and `other`."""
    perp = other - (other @ base) * base
    return cos * base + np.sqrt(1 - cos * cos) * perp / np.linalg.norm(perp)


@pytest.mark.parametrize("case, expect_same", [
    ("clear", True),  # the only lost track of its class, clearly the best likeness: the id comes back
    ("ambiguous", False),  # a second lost track of the class about as alike: a new id rather than a guess
    ("other_class", False),  # the detection's label differs from the track's class
    ("beyond_reach", False),  # farther than `reid_reach` track sizes per missed frame
    ("disabled", False),  # reid_margin > 1: round 1's rule (reid_similarity only)
])
def test_unambiguous_reidentification_away_from_the_prediction(case, expect_same):
    """An object hidden for 5 frames comes back 2.5 track sizes from where its motion predicts it
    (box IoU 0) with cosine 0.7, below `reid_similarity` 0.8: it takes its lost track back only when
    the match is unambiguous (same class, best by `reid_margin` both ways, within reach)."""
    e = _unit_rows(bases(3, seed=8))
    back = e[2]  # the returning detection's look
    e0 = _like(back, e[0], 0.7)  # object 0's memory: cosine 0.7 to it
    # object 1 (same class): unrelated, or in the ambiguous case about as alike (0.68)
    e1 = _like(back, e[1], 0.68) if case == "ambiguous" else e[1]
    cfg = RobustTrackerConfig(reid_margin=2.0) if case == "disabled" else RobustTrackerConfig()
    tracker = RobustTracker(cfg)
    for t in range(5):  # object 0 moves right; object 1 (same class) sits far below
        got = tracker.update(torch.tensor([box(100 + 10 * t, 100), box(400, 400)]), torch.tensor([0.8, 0.8]),
                             torch.tensor([0, 0]), torch.tensor(np.stack([e0, e1]), dtype=torch.float32), t)
        assert got == [0, 1]
    for t in range(5, 10):  # both hidden
        tracker.update(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, DIM), t)
    # predicted: x centre 140 + 10 * 6 = 200; 2.5 sizes (61 px) away, or 6 per missed frame beyond reach
    dx = 6 * 61 * 5 if case == "beyond_reach" else 150
    label = 1 if case == "other_class" else 0
    got = tracker.update(torch.tensor([box(200 + dx, 100)]), torch.tensor([0.8]), torch.tensor([label]),
                         torch.tensor(back[None], dtype=torch.float32), 10)
    assert (got == [0]) == expect_same, (case, got)
    if not expect_same:  # never dropped, never given to the other object: a new track
        assert got == [2], (case, got)
