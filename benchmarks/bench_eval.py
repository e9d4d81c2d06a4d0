"""Speed of `sipvis.evaluation.evaluate` against a straightforward per-frame-pair evaluator.

Generates a seeded YouTube-VIS-like case (default 300 videos x 36 frames x up to 10 instances,
360x640 masks as RLE: GT uncompressed as in the official files, results compressed as on CodaLab),
scores it with both implementations in one run, checks that they give the same 12 figures and
prints the times and their ratio.

The naive evaluator below is written from the official semantics with no vectorisation: for every
video, category, result, GT and frame it calls pycocotools (`iou` and `area` per frame pair, or
`merge` and `area` as youtubevos/cocoapi does), then matches and accumulates with plain Python
loops. Both naive variants run by default.

    .venv/bin/python benchmarks/bench_eval.py                 # the figures in BENCHMARKS.md
    .venv/bin/python benchmarks/bench_eval.py --videos 30     # a quick run
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils

# ------------------------------------------------------------------------------------ data


def ellipse_rle(h: int, w: int, cx: float, cy: float, rx: float, ry: float) -> dict:
    """Uncompressed RLE (column-major runs) of a filled axis-aligned ellipse, clipped to the frame."""
    xs = np.arange(max(0, int(np.ceil(cx - rx))), min(w, int(np.floor(cx + rx)) + 1))
    dy = ry * np.sqrt(np.clip(1.0 - ((xs - cx) / rx) ** 2, 0.0, None))
    y0 = np.clip(np.ceil(cy - dy), 0, h).astype(np.int64)
    y1 = np.clip(np.floor(cy + dy) + 1, 0, h).astype(np.int64)
    keep = y1 > y0
    starts, ends = xs[keep] * h + y0[keep], xs[keep] * h + y1[keep]
    if not len(starts):
        return {"size": [h, w], "counts": [h * w]}
    # a run that ends at the bottom of a column and one starting at the top of the next one touch
    new = np.r_[True, starts[1:] != ends[:-1]]
    last = np.r_[starts[1:] != ends[:-1], True]
    starts, ends = starts[new], ends[last]
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
    counts[0] = starts[0]
    counts[1::2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = h * w - ends[-1]
    return {"size": [h, w], "counts": counts.tolist()}


def make_case(videos: int, frames: int, max_inst: int, h: int, w: int, seed: int) -> tuple[dict, list]:
    """A seeded GT dict and results list. Instances move and change size; some leave for a few frames;
    results are jittered copies of most GT tracks (some with the wrong class, some twice) plus
    false positives."""
    rng = np.random.default_rng(seed)
    n_cats = 40
    gt = {"videos": [], "categories": [{"id": c, "name": f"class{c}"} for c in range(1, n_cats + 1)],
          "annotations": []}
    results: list[dict] = []

    def track(cx, cy, rx, ry, vx, vy, jitter=0.0):
        rles, present = [], []
        for t in range(frames):
            j = rng.normal(0, jitter, 4) if jitter else np.zeros(4)
            rles.append(ellipse_rle(h, w, cx + vx * t + j[0], cy + vy * t + j[1],
                                    max(2.0, rx * (1 + 0.01 * t) + j[2]), max(2.0, ry + j[3])))
        return rles

    for v in range(1, videos + 1):
        gt["videos"].append({"id": v, "height": h, "width": w, "length": frames,
                             "file_names": [f"{v:05d}/{t:05d}.jpg" for t in range(frames)]})
        video_cats = rng.choice(np.arange(1, n_cats + 1), size=int(rng.integers(1, 3)), replace=False)
        for _ in range(int(rng.integers(1, max_inst + 1))):
            cat = int(rng.choice(video_cats))
            cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
            rx, ry = rng.uniform(8, 0.3 * w), rng.uniform(8, 0.3 * h)
            vx, vy = rng.normal(0, 2), rng.normal(0, 1)
            rles = track(cx, cy, rx, ry, vx, vy)
            gone = np.zeros(frames, bool)
            if rng.random() < 0.3:  # out of view for a stretch
                s = int(rng.integers(0, frames))
                gone[s:s + int(rng.integers(1, 10))] = True
            segs = [None if g else r for r, g in zip(rles, gone)]
            comp = mask_utils.frPyObjects([s for s in segs if s], h, w)
            areas = iter(mask_utils.area(comp[i:i + 255]) for i in range(0, len(comp), 255))
            flat = [float(a) for chunk in areas for a in chunk]
            it = iter(flat)
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "video_id": v, "category_id": cat, "iscrowd": 0,
                "segmentations": segs, "areas": [None if s is None else next(it) for s in segs],
            })
            # results as a tracker outputs them: most objects found (sometimes under the wrong
            # class), some twice (a duplicate or a fragment with a lower score)
            for hyp in range(2):
                if rng.random() >= (0.9 if hyp == 0 else 0.4):
                    continue
                pcat = cat if rng.random() < (0.85 if hyp == 0 else 0.5) else int(rng.integers(1, n_cats + 1))
                score = rng.uniform(0.3, 1.0) * (1.0 if hyp == 0 else rng.uniform(0.2, 0.6))
                p = track(cx, cy, rx, ry, vx, vy, jitter=rng.uniform(0.5, 6) * (1 + 2 * hyp))
                p = [None if (g and rng.random() < 0.7) else r for r, g in zip(p, gone)]
                results.append({"video_id": v, "category_id": pcat, "score": float(score), "segmentations": p})
        for _ in range(int(rng.integers(1, 6))):  # false positives
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            p = track(cx, cy, rng.uniform(5, 80), rng.uniform(5, 60), rng.normal(0, 2), rng.normal(0, 1))
            pcat = int(rng.choice(video_cats)) if rng.random() < 0.7 else int(rng.integers(1, n_cats + 1))
            results.append({"video_id": v, "category_id": pcat, "score": float(rng.random() * 0.6), "segmentations": p})
    # results are compressed RLE with string counts, exactly as CodaLab expects
    for r in results:
        present = [s for s in r["segmentations"] if s]
        comp = iter(mask_utils.frPyObjects(present, h, w))
        r["segmentations"] = [None if s is None else _str_counts(next(comp)) for s in r["segmentations"]]
    return gt, results


def _str_counts(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].decode("utf-8")}


# ------------------------------------------------------------------------- naive evaluator

IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
AREAS = [(0.0, 1e10), (0.0, 128.0**2), (128.0**2, 256.0**2), (256.0**2, 1e10)]
MAX_DETS = [1, 10, 100]


def naive_evaluate(gt: dict, results: list, frame_op: str = "iou") -> list[float]:
    """YouTube-VIS AP/AR, one frame pair at a time (a plain reading of the official semantics).

    frame_op: how a frame where both masks are present adds to the track's I and U:
      "iou":   pycocotools iou([d], [g]) and the two areas, I = iou (|d| + |g|) / (1 + iou);
      "merge": area(merge([d, g], intersect)) and area(merge([d, g], union)), as youtubevos/cocoapi.
    """
    vid_info = {v["id"]: v for v in gt["videos"]}
    vids = sorted(vid_info)
    cats = sorted(c["id"] for c in gt["categories"])
    gts, dts = defaultdict(list), defaultdict(list)
    for a in gt["annotations"]:
        v = vid_info[a["video_id"]]
        segs = []
        for s in a["segmentations"]:
            if not s:
                segs.append(None)
            elif isinstance(s, list):
                segs.append(mask_utils.merge(mask_utils.frPyObjects(s, v["height"], v["width"])))
            elif isinstance(s["counts"], list):
                segs.append(mask_utils.frPyObjects(s, *s["size"]))
            else:
                segs.append(s)
        nz = [x for x in a["areas"] if x]
        gts[a["video_id"], a["category_id"]].append(
            {"id": a["id"], "segs": segs, "crowd": int(a["iscrowd"]), "area": float(np.mean(nz)) if nz else 0.0})
    for i, r in enumerate(results):
        if r["category_id"] not in cats:
            continue
        nz = [float(mask_utils.area(s)) for s in r["segmentations"] if s]
        nz = [x for x in nz if x]
        dts[r["video_id"], r["category_id"]].append(
            {"id": i + 1, "segs": r["segmentations"], "score": r["score"], "area": float(np.mean(nz)) if nz else 0.0})

    def track_iou(ds, gs):
        inter = union = 0.0
        for d, g in zip(ds, gs):
            if d and g:
                if list(d["size"]) != list(g["size"]):
                    continue  # masks of different sizes add nothing (official)
                if frame_op == "merge":
                    inter += float(mask_utils.area(mask_utils.merge([d, g], True)))
                    union += float(mask_utils.area(mask_utils.merge([d, g], False)))
                else:
                    o = float(mask_utils.iou([d], [g], [0])[0, 0])
                    both = float(mask_utils.area(d)) + float(mask_utils.area(g))
                    i = round(o * both / (1.0 + o))  # o = i / (|d| + |g| - i)
                    inter += i
                    union += both - i
            elif g:
                union += float(mask_utils.area(g))
            elif d:
                union += float(mask_utils.area(d))
        return inter / union if union > 0 else 0.0

    # IoU per (video, category), results in score order (stable), cut at 100
    ious = {}
    for v in vids:
        for c in cats:
            d_list = dts.get((v, c), [])
            order = np.argsort([-d["score"] for d in d_list], kind="mergesort")[:100]
            dts[v, c] = [d_list[i] for i in order]
            ious[v, c] = [[track_iou(d["segs"], g["segs"]) for g in gts.get((v, c), [])] for d in dts[v, c]]

    # greedy matching per (category, area, video)
    ev = {}
    for c in cats:
        for ai, (lo, hi) in enumerate(AREAS):
            for v in vids:
                G, D = gts.get((v, c), []), dts.get((v, c), [])
                if not G and not D:
                    continue
                ig = [g["crowd"] or not (lo <= g["area"] <= hi) for g in G]
                gorder = sorted(range(len(G)), key=lambda j: ig[j])  # stable: non-ignored first
                dtm = [[0] * len(D) for _ in IOU_THRS]
                dig = [[False] * len(D) for _ in IOU_THRS]
                for ti, thr in enumerate(IOU_THRS):
                    gtm = [0] * len(G)
                    for di, d in enumerate(D):
                        best, m = min(thr, 1 - 1e-10), -1
                        for j in gorder:
                            if gtm[j] and not G[j]["crowd"]:
                                continue
                            if m > -1 and not ig[m] and ig[j]:
                                break
                            if ious[v, c][di][j] < best:
                                continue
                            best, m = ious[v, c][di][j], j
                        if m == -1:
                            continue
                        dig[ti][di] = bool(ig[m])
                        dtm[ti][di] = G[m]["id"]
                        gtm[m] = d["id"]
                for ti in range(len(IOU_THRS)):
                    for di, d in enumerate(D):
                        if dtm[ti][di] == 0 and not (lo <= d["area"] <= hi):
                            dig[ti][di] = True
                ev[c, ai, v] = ([d["score"] for d in D], dtm, dig, sum(1 for x in ig if not x))

    T, R, K, A, M = len(IOU_THRS), len(REC_THRS), len(cats), len(AREAS), len(MAX_DETS)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    for k, c in enumerate(cats):
        for ai in range(A):
            es = [ev[c, ai, v] for v in vids if (c, ai, v) in ev]
            if not es:
                continue
            npig = sum(e[3] for e in es)
            if npig == 0:
                continue
            for mi, md in enumerate(MAX_DETS):
                sc = np.concatenate([e[0][:md] for e in es])
                order = np.argsort(-sc, kind="mergesort")
                for ti in range(T):
                    matched = np.concatenate([np.array(e[1][ti][:md], dtype=float) for e in es])[order]
                    ignored = np.concatenate([np.array(e[2][ti][:md], dtype=bool) for e in es])[order]
                    tp = np.cumsum((matched != 0) & ~ignored).astype(float)
                    fp = np.cumsum((matched == 0) & ~ignored).astype(float)
                    rc = tp / npig
                    pr = list(tp / (fp + tp + np.spacing(1)))
                    recall[ti, k, ai, mi] = rc[-1] if len(tp) else 0
                    for i in range(len(pr) - 1, 0, -1):
                        pr[i - 1] = max(pr[i - 1], pr[i])
                    q = np.zeros(R)
                    for ri, pi in enumerate(np.searchsorted(rc, REC_THRS, side="left")):
                        if pi < len(pr):
                            q[ri] = pr[pi]
                    precision[ti, :, k, ai, mi] = q

    def mean(s):
        s = s[s > -1]
        return float(np.mean(s)) if s.size else -1.0

    t50, t75 = [int(np.where(IOU_THRS == x)[0][0]) for x in (0.5, 0.75)]
    return [mean(precision[:, :, :, 0, 2]), mean(precision[[t50], :, :, 0, 2]), mean(precision[[t75], :, :, 0, 2]),
            mean(precision[:, :, :, 1, 2]), mean(precision[:, :, :, 2, 2]), mean(precision[:, :, :, 3, 2]),
            mean(recall[:, :, 0, 0]), mean(recall[:, :, 0, 1]), mean(recall[:, :, 0, 2]),
            mean(recall[:, :, 1, 2]), mean(recall[:, :, 2, 2]), mean(recall[:, :, 3, 2])]


# ------------------------------------------------------------------------------------ main


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=300)
    ap.add_argument("--frames", type=int, default=36)
    ap.add_argument("--max-instances", type=int, default=10)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--naive", choices=["iou", "merge", "both"], default="both",
                    help="per-frame-pair reference: pycocotools iou per frame pair, merge+area per frame "
                         "pair (as youtubevos/cocoapi), or both")
    args = ap.parse_args()

    from sipvis.evaluation import evaluate

    t0 = time.perf_counter()
    gt, results = make_case(args.videos, args.frames, args.max_instances, args.height, args.width, args.seed)
    n_frames = sum(1 for r in results for s in r["segmentations"] if s)
    print(f"case: {args.videos} videos x {args.frames} frames at {args.height}x{args.width}, "
          f"{len(gt['annotations'])} GT tracks, {len(results)} result tracks ({n_frames} result masks); "
          f"generated in {time.perf_counter() - t0:.1f} s")
    print(f"CPU: {cpu_model()}")

    print("times are process CPU seconds (wall seconds in brackets); lower is better")
    ours, t_ours, w_ours = timed(evaluate, gt, results)
    ours = ours.stats
    print(f"  sipvis.evaluation.evaluate:         {t_ours:7.2f} s  [{w_ours:6.2f}]")
    rows = []
    for op in (["iou", "merge"] if args.naive == "both" else [args.naive]):
        stats, t_naive, w_naive = timed(naive_evaluate, gt, results, op)
        diff = float(np.max(np.abs(np.array(ours) - np.array(stats))))
        rows.append((op, t_naive, diff))
        print(f"  naive per frame pair ({op:5s}):       {t_naive:7.2f} s  [{w_naive:6.2f}]  "
              f"-> sipvis is {t_naive / t_ours:.1f}x faster; max |stat difference| {diff:.3g}")
    print("stats (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl):")
    print("  " + " ".join(f"{x:.4f}" for x in ours))
    if any(diff > 1e-12 for _, _, diff in rows):
        raise SystemExit("the evaluators disagree")


def timed(fn, *args):
    """(result, CPU seconds, wall seconds) of fn(*args); CPU time is steadier on a shared machine."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c0, time.perf_counter() - w0


if __name__ == "__main__":
    main()
