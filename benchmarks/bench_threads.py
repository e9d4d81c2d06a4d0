"""The network's thread policy, end to end: `sipvis track` to a results JSON under three policies, side by
side in one run, on an idle machine or beside busy processes.

Policies (all this tree, the same clip, weights and runtime; alternated round by round, medians compared):
- `one-thread`: `--threads 1`, the rule before 2026-11-30 on a 2-core machine (one core left to the
  pipeline's reader and writer threads);
- `all-sleeping`: the default (every available core; idle pool threads sleep: `OMP_WAIT_POLICY=PASSIVE`,
  onnxruntime without spinning; `sipvis.engine.threads`);
- `all-spinning`: every core with `OMP_WAIT_POLICY=ACTIVE` (torch's and onnxruntime's pools spin).

`--busy N` starts N processes that each keep one core busy (a pure-Python loop) for the timed rounds,
as another program on the machine would. fps = frames / seconds of `sipvis track`'s own run of the input
(decode to the closed JSON, model loading excluded), as `benchmarks/compare_release.py` measures it.

    .venv/bin/python benchmarks/bench_threads.py --model r50 --frames 4                 # idle machine
    .venv/bin/python benchmarks/bench_threads.py --model demo --frames 48 --busy 1      # beside one busy process
    .venv/bin/python benchmarks/bench_threads.py --model demo --runtime torch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from compare_release import REFERENCE_WEIGHTS, ROOT, Tree, alternate, summary

BUSY = "while True: pass"


def policies(runtime: str) -> list[Tree]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "PYTHONPATH")}
    args = ["--runtime", runtime]
    return [Tree("one-thread", ROOT, [*args, "--threads", "1"], env),
            Tree("all-sleeping", ROOT, args, env),
            Tree("all-spinning", ROOT, args, {**env, "OMP_WAIT_POLICY": "ACTIVE"})]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["r50", "demo"], default="demo")
    p.add_argument("--runtime", default="onnxruntime", help="`sipvis track --runtime` (default %(default)s)")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--busy", type=int, default=0, help="busy processes running beside the timed rounds")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    trees = policies(args.runtime)
    with tempfile.TemporaryDirectory(prefix="sipvis-threads-") as tmp:
        work = Path(tmp)
        clip = work / "clip_640x360.mp4"
        trees[1].python("import sys; from sipvis.engine.bench import generate_clip; "
                        "generate_clip(sys.argv[1], 640, 360, int(sys.argv[2]))", str(clip), str(args.frames))
        weights = "demo"
        if args.model == "r50":
            weights = str(work / "ref.pth")
            trees[1].python(REFERENCE_WEIGHTS, weights)
        for tree in trees:  # untimed: converts, exports into the weights cache, warms the disk cache
            tree.track_fps(clip, weights, 1, work / "warm.json")
        busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
        try:
            runs = alternate(args.rounds, trees, lambda t: t.track_fps(clip, weights, args.frames,
                                                                        work / f"{t.name}.json"))
        finally:
            for proc in busy:
                proc.kill()
    report = {"fps": summary(runs), "settings": {**vars(args), "json": None, "cpus": os.cpu_count(),
                                                 "load_average": os.getloadavg()}}
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
