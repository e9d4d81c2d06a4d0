"""Where `sipvis track`'s CPU time goes, release pipeline against the current one, in one run.

Wall-clock fps on a shared machine measures the share of the cores this process got; CPU time per frame
does not. For each pipeline (the release's `track_source`, loaded from git history into a throw-away
module, and this tree's), alternately on the same clip, model and thread count, this reports per frame:
wall ms, the CPU ms of the thread that runs the network, the CPU ms of the whole process, and, for
scale, the network alone (`Segmenter.forward` in a loop, CPU ms). On an otherwise idle machine with
`cores` cores the pipeline's rate is bounded by max(network thread CPU, process CPU / cores): when the
network's thread does nothing but the network and the rest fits on the other cores, end to end runs
at the network's rate.

    .venv/bin/python benchmarks/bench_pipeline_cpu.py                       # demo model, 1 thread
    .venv/bin/python benchmarks/bench_pipeline_cpu.py --threads 1,2                 # 1 against 2 threads
    .venv/bin/python benchmarks/bench_pipeline_cpu.py --weights r50.pth --frames 6 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from sipvis.engine import pipeline as new_pipeline
from sipvis.engine.bench import generate_clip
from sipvis.engine.inference import Segmenter
from sipvis.io.inputs import open_source
from sipvis.io.sinks import ResultsJson
from sipvis.track import new_tracker

ROOT = Path(__file__).resolve().parents[1]


def release_pipeline(rev: str) -> types.ModuleType:
    """The release's `sipvis/engine/pipeline.py` as a module (it imports only what this tree still has)."""
    code = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:sipvis/engine/pipeline.py"], check=True,
                          capture_output=True, text=True).stdout
    module = types.ModuleType("release_pipeline")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(code, f"{rev}:sipvis/engine/pipeline.py", "exec"), module.__dict__)
    return module


def run_once(track_source, segmenter: Segmenter, clip: str, frames: int, out: Path) -> dict:
    """One pipeline run to a results JSON: wall, network-thread CPU and process CPU ms per frame."""
    main_cpu = time.thread_time()  # the pipelines run the network in the calling thread
    proc_cpu, wall = time.process_time(), time.perf_counter()
    source = open_source(clip, threaded=False, max_frames=frames)
    try:
        stats = track_source(source, segmenter, [ResultsJson(out).video(1)], new_tracker("original"))
    finally:
        source.close()
    n = max(stats.frames, 1)
    return {"wall_ms": 1000 * (time.perf_counter() - wall) / n,
            "network_thread_cpu_ms": 1000 * (time.thread_time() - main_cpu) / n,
            "process_cpu_ms": 1000 * (time.process_time() - proc_cpu) / n}


def network_alone(segmenter: Segmenter, clip: str, frames: int) -> dict:
    """`forward(preprocess)` on the clip's prepared frames, in a loop: CPU and wall ms per frame."""
    source = open_source(clip, threaded=False, max_frames=frames)
    prepared = [segmenter.prepare(f.image, f.index) for f in source]
    source.close()
    images = [segmenter.preprocess([p]) for p in prepared]
    cpu, wall = time.thread_time(), time.perf_counter()
    for x in images:
        segmenter.forward(x)
    n = len(images)
    return {"wall_ms": 1000 * (time.perf_counter() - wall) / n, "cpu_ms": 1000 * (time.thread_time() - cpu) / n}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="demo")
    p.add_argument("--rev", default="8edd17b", help="the release commit")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", default="1", help="intra-op thread counts to alternate, comma-separated (1,2)")
    args = p.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    segmenter = Segmenter.from_checkpoint(args.weights, "cpu", "fp32")
    pipelines = {"release": release_pipeline(args.rev).track_source, "current": new_pipeline.track_source}
    cases = [(name, t) for t in counts for name in (*pipelines, "network alone")]
    runs: dict[str, list[dict]] = {f"{name} @{t} threads": [] for name, t in cases}
    with tempfile.TemporaryDirectory() as tmp:
        clip = str(generate_clip(Path(tmp) / "clip.mp4", 640, 360, args.frames))
        network_alone(segmenter, clip, 2)  # warm-up
        for r in range(args.rounds):
            for name, t in (cases if r % 2 == 0 else cases[::-1]):
                torch.set_num_threads(t)
                key = f"{name} @{t} threads"
                runs[key].append(network_alone(segmenter, clip, args.frames) if name == "network alone" else
                                 run_once(pipelines[name], segmenter, clip, args.frames, Path(tmp) / "o.json"))
            print(f"round {r + 1}: " + json.dumps({k: v[-1] for k, v in runs.items()}), file=sys.stderr)
    medians = {name: {k: round(statistics.median(run[k] for run in rs), 2) for k in rs[0]} for name, rs in runs.items()}
    print(json.dumps({"weights": args.weights, "frames": args.frames, "rounds": args.rounds,
                      "medians_ms_per_frame": medians}, indent=2))


if __name__ == "__main__":
    main()
