"""Speed of HOTA + CLEAR + Identity in `sipvis.evaluation.tracking` against TrackEval on the same input.

Uses the seeded YouTube-VIS-like case of `bench_eval.py` (default 300 videos x 36 frames x up to 10
instances at 360x640, 40 categories). As in `bench_eval.py`, both sides start from the parsed JSON
(GT dict and results list in memory) and do everything else: checking and encoding the masks, the
mask IoUs, all three metrics and the combinations. TrackEval reads its files itself, so its
`json.load` is handed ready copies of the same objects (made before the clock starts); the JSON
decoding, the same for both, is timed once on its own. TrackEval is the
PyPI package `trackeval` (numerically the official code); it is not a dependency of sipvis: when it is
not importable the script times sipvis alone and says so. When both run, the numbers are compared
(largest absolute difference over every field of every class and class combination).

    .venv/bin/python benchmarks/bench_tracking_metrics.py                 # the figures in BENCHMARKS.md
    .venv/bin/python benchmarks/bench_tracking_metrics.py --videos 30     # a quick run
    .venv/bin/python benchmarks/bench_tracking_metrics.py --parts         # sipvis's time per stage
    PYTHONPATH=/path/to/trackeval-site .venv/bin/python benchmarks/bench_tracking_metrics.py
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import cpu_model, make_case, timed  # noqa: E402  (the same generated case)


# bench_eval.py's options and defaults: option -> (make_case argument, default)
CASE = {"videos": ("videos", 300), "frames": ("frames", 36), "max-instances": ("max_inst", 10),
        "height": ("h", 360), "width": ("w", 640), "seed": ("seed", 0)}


def write_layout(root: Path, gt: dict, results: list) -> tuple[Path, Path]:
    """TrackEval's YouTube-VIS folders: gt/youtube_vis_val/gt.json, trackers/youtube_vis_val/tracker/data/.
    TrackEval also needs each GT annotation's height and width (the official files have them)."""
    size = {v["id"]: (v["height"], v["width"]) for v in gt["videos"]}
    for ann in gt["annotations"]:
        ann["height"], ann["width"] = size[ann["video_id"]]
    gt_path = root / "gt" / "youtube_vis_val" / "gt.json"
    res_path = root / "trackers" / "youtube_vis_val" / "tracker" / "data" / "pred.json"
    for path, data in ((gt_path, gt), (res_path, results)):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(data))
    return gt_path, res_path


def run_trackeval(root: Path, loaded: list) -> dict:
    """TrackEval's result dict for the tracker (classes and the two class combinations, COMBINED_SEQ).
    `loaded`: what its two `json.load` calls return, in order (GT, then results)."""
    import trackeval
    import trackeval.datasets.youtube_vis as te_ytvis

    te_ytvis.json = SimpleNamespace(load=lambda _f: loaded.pop(0))

    ev = trackeval.Evaluator({"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
                              "TIME_PROGRESS": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
                              "PLOT_CURVES": False, "LOG_ON_ERROR": None, "DISPLAY_LESS_PROGRESS": True})
    ds = trackeval.datasets.YouTubeVIS({"GT_FOLDER": f"{root}/gt/", "TRACKERS_FOLDER": f"{root}/trackers/",
                                        "SPLIT_TO_EVAL": "val", "TRACKERS_TO_EVAL": ["tracker"],
                                        "OUTPUT_FOLDER": f"{root}/out", "PRINT_CONFIG": False})
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"THRESHOLD": 0.5, "PRINT_CONFIG": False}),
               trackeval.metrics.Identity({"THRESHOLD": 0.5, "PRINT_CONFIG": False})]
    res, _ = ev.evaluate([ds], metrics)
    return res[ds.get_name()]["tracker"]["COMBINED_SEQ"]


def max_difference(ours: dict, theirs: dict) -> float:
    """Largest |difference| over every HOTA array, CLEAR and Identity field of every class and combination."""
    worst = 0.0
    for name, te in theirs.items():
        mine = ours["class_combined"][name] if name.startswith("cls_comb") else ours["combined"][name]
        for field, values in mine["HOTA"]["per_alpha"].items():
            worst = max(worst, float(np.max(np.abs(np.asarray(values) - te["HOTA"][field]))))
        for metric in ("CLEAR", "Identity"):
            for field, value in mine[metric].items():
                worst = max(worst, abs(float(value) - float(te[metric][field])))
    return worst


def time_parts(gt: dict, results: list) -> None:
    """CPU seconds of each stage of sipvis's side: the two parses, the counts-string check inside the
    results parse (all strings at once, as `schema` does, and in chunks of 4096 strings), the mask
    IoUs and the metrics."""
    from sipvis.evaluation.schema import compressed_rle_problems, parse_gt, parse_results
    from sipvis.evaluation.tracking import evaluate_tracking
    from sipvis.evaluation.tracking_ytvis import load_youtube_vis

    g, t_gt, _ = timed(parse_gt, gt)
    r, t_res, _ = timed(parse_results, g, results, "segm", "drop")
    (seqs, classes), t_seq, _ = timed(load_youtube_vis, gt, results, (g, r))
    _, t_met, _ = timed(evaluate_tracking, seqs, classes, ("hota", "clear", "identity"), True)
    rles = [m for entry in results for m in entry["segmentations"] if m]

    def chunked() -> list:
        return [(start + i, why) for start in range(0, len(rles), 4096)
                for i, why in compressed_rle_problems(rles[start:start + 4096])]

    whole, t_all, _ = timed(compressed_rle_problems, rles)
    parts, t_chunk, _ = timed(chunked)
    print(f"  stages (CPU s): GT parse {t_gt:.2f}, results parse {t_res:.2f}, mask IoUs {t_seq:.2f}, "
          f"metrics {t_met:.2f}")
    print(f"  counts-string check of the {len(rles)} result masks: at once {t_all:.2f} s, in chunks of "
          f"4096 {t_chunk:.2f} s (same answer: {whole == parts})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for option, (dest, default) in CASE.items():
        ap.add_argument("--" + option, dest=dest, type=int, default=default)
    ap.add_argument("--parts", action="store_true", help="also time sipvis's stages (see time_parts)")
    args = ap.parse_args()
    parts = args.__dict__.pop("parts")

    from sipvis.evaluation.tracking import evaluate_tracking_files

    t0 = time.perf_counter()
    gt, results = make_case(**vars(args))
    print(f"case: {args.videos} videos x {args.frames} frames at {args.h}x{args.w}, "
          f"{len(gt['annotations'])} GT tracks, {len(results)} result tracks; "
          f"generated in {time.perf_counter() - t0:.1f} s")
    print(f"CPU: {cpu_model()}")
    print("times are process CPU seconds (wall seconds in brackets), from the parsed JSON; lower is better")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gt_path, res_path = write_layout(root, gt, results)
        _, t_json, w_json = timed(lambda: [json.loads(p.read_text()) for p in (gt_path, res_path)])
        print(f"  JSON decoding of both files:  {t_json:7.2f} s  [{w_json:6.2f}]  (not in the times below)")
        loaded = [copy.deepcopy(gt), copy.deepcopy(results)]
        ours, t_ours, w_ours = timed(evaluate_tracking_files, "youtube-vis", gt, results)
        print(f"  sipvis HOTA+CLEAR+Identity:  {t_ours:7.2f} s  [{w_ours:6.2f}]")
        if parts:
            time_parts(gt, results)
        del gt, results
        try:
            import trackeval  # noqa: F401
        except ImportError:
            print("  trackeval is not importable: no comparison (pip install trackeval into another "
                  "environment and put it on PYTHONPATH)")
            theirs = None
        else:
            theirs, t_te, w_te = timed(run_trackeval, root, loaded)
            diff = max_difference(ours, theirs)
            print(f"  TrackEval (PyPI trackeval):  {t_te:7.2f} s  [{w_te:6.2f}]  -> sipvis is "
                  f"{t_te / t_ours:.1f}x faster (wall {w_te / w_ours:.1f}x); max |difference| {diff:.3g}")
    for name, label in (("cls_comb_det_av", "detection-averaged"), ("cls_comb_cls_av", "class-averaged")):
        r = ours["class_combined"][name]
        print(f"{label}: HOTA {r['HOTA']['mean_over_alphas']['HOTA']:.4f}  MOTA {r['CLEAR']['MOTA']:.4f}  "
              f"IDSW {r['CLEAR']['IDSW']}  IDF1 {r['Identity']['IDF1']:.4f}")
    if theirs is not None and diff > 1e-9:
        raise SystemExit("sipvis and TrackEval disagree")


if __name__ == "__main__":
    main()
