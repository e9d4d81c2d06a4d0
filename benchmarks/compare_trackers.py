"""Both trackers side by side on one synthetic split with the bundled demo model: mask AP, HOTA, DetA,
AssA, MOTA, ID switches, IDF1 and predicted tracks per tracker, from the same `sipvis eval --dataset`
run a user makes, plus each tracker's own time per frame (tracking alone, 10 objects per frame).

    python benchmarks/compare_trackers.py --seed 505 --videos 16           # ~5 min on 2 CPU cores
    OMP_NUM_THREADS=1 python benchmarks/compare_trackers.py --seed 707     # the BENCHMARKS.md figures (707, 808, 505, 606)

The split is made by `sipvis synth` (shapes of the same class cross, occlude each other, enter and
leave); use a seed the trackers were not tuned on. The tracking metrics are TrackEval's, combined over
classes as TrackEval's detection-weighted class combination (`cls_comb_det_av`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_tracker import TRACKERS, make_scene, run_tracker  # noqa: E402

TRACKER_NAMES = ("original", "robust")


def sipvis(*args: str) -> None:
    result = subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", *args],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"sipvis {' '.join(args)} failed:\n{result.stderr}")


def score_split(root: Path, split: str, tracker: str, device: str) -> dict:
    """`sipvis eval --dataset` with one tracker -> the figures of the table."""
    out = root / f"run_{tracker}"
    metrics = root / f"metrics_{tracker}.json"
    sipvis("eval", "--dataset", "youtube-vis", split, "--data-root", str(root), "--weights", "demo",
           "--device", device, "--tracker", tracker, "--metrics", "ap,hota,clear,identity",
           "--out", str(out), "--json", str(metrics), "--quiet")
    m = json.loads(metrics.read_text())
    comb = m["tracking"]["class_combined"]["cls_comb_det_av"]
    tracks = len(json.loads((out / "results.json").read_text()))
    return {"AP": m["AP"], "HOTA": comb["HOTA"]["mean_over_alphas"]["HOTA"],
            "DetA": comb["HOTA"]["mean_over_alphas"]["DetA"], "AssA": comb["HOTA"]["mean_over_alphas"]["AssA"],
            "MOTA": comb["CLEAR"]["MOTA"], "IDSW": comb["CLEAR"]["IDSW"], "IDF1": comb["Identity"]["IDF1"],
            "tracks": tracks, "gt_tracks": comb["Count"]["GT_IDs"]}


def tracker_speed(repeats: int) -> dict[str, float]:
    """Median frames/s of each tracker's `update` alone on the same 2000-frame scene (10 objects)."""
    import torch

    torch.set_num_threads(1)
    scene = make_scene(2000, 10, seed=0)
    runs: dict[str, list[float]] = {name: [] for name in TRACKER_NAMES}
    for _ in range(repeats):  # alternate the contenders
        for name in TRACKER_NAMES:
            make, emb, masks = TRACKERS[name]
            runs[name].append(run_tracker(make, scene, emb, masks)["fps"])
    return {name: statistics.median(v) for name, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=303)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--root", type=Path, default=None, help="keep the split and runs here (default: a temp dir)")
    ap.add_argument("--repeats", type=int, default=5, help="tracker-speed runs per tracker (median)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        split = f"seed{args.seed}"
        sipvis("synth", str(root), "--videos", str(args.videos), "--frames", str(args.frames), "--seed",
               str(args.seed), "--split", split, "--no-clips", "--quiet")
        rows = {name: score_split(root, split, name, args.device) for name in TRACKER_NAMES}
    speed = tracker_speed(args.repeats)
    print(f"split: sipvis synth --videos {args.videos} --frames {args.frames} --seed {args.seed}; demo weights, "
          f"{args.device}; load average {os.getloadavg()[0]:.1f}")
    cols = ("AP", "HOTA", "DetA", "AssA", "MOTA", "IDSW", "IDF1", "tracks", "gt_tracks")
    print(f"{'tracker':<10}" + "".join(f"{c:>9}" for c in cols) + f"{'track fps':>11}")
    for name, r in rows.items():
        cells = "".join(f"{r[c]:>9}" if isinstance(r[c], int) else f"{r[c]:>9.3f}" for c in cols)
        print(f"{name:<10}{cells}{speed[name]:>11.0f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "tracker_fps": speed}, indent=2))


if __name__ == "__main__":
    main()
