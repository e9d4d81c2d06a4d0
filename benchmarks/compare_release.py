"""Today's release against the current tree, side by side in one run: `sipvis track` to a results JSON
end to end (the demo model and the R50 reference weights) and the R50 pre-/post-processing ms per frame.

The release (default: commit 8edd17b, main on 2026-11-29) is checked out into a temporary git worktree
and imported from there (its folder first on `sys.path`, `cli/` linked as `sipvis/cli` as the install
maps it); the current tree is this checkout. Every measurement alternates the two trees round by round,
on the same clip, weights and threads, and the medians are compared (ratio = release / current: above 1
means the current tree is faster). On a loaded machine absolute times are noisy; the ratios are what to
read.

    .venv/bin/python benchmarks/compare_release.py                       # defaults: 640x360 clip, 1 thread
    .venv/bin/python benchmarks/compare_release.py --threads default     # each tree's own thread choice
    .venv/bin/python benchmarks/compare_release.py --new-args "--runtime onnxruntime" --json cmp.json

End to end is frames / seconds of `sipvis track`'s own run of the input (`track_source`: decode to the
closed JSON, model loading excluded; the CLI prints the same as `N frames at F fps`). `--new-args` /
`--old-args` are appended to every `sipvis track` of that tree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASE = "8edd17b"
TIMED_LINE = re.compile(r"compare-release: (\d+) frames in ([\d.]+) s")

# `sipvis track` with the seconds of every input's run (`track_source`'s RunStats: decode to the closed
# outputs) printed in full: the CLI's own "N frames at F fps" has one decimal, 0.0 for a slow model
TRACK = r"""
import sys
try:  # as the console script does before torch loads, in a tree whose CLI sets the pools' wait policy
    from sipvis.engine.threads import passive_waits
    passive_waits()
except ImportError:
    pass
import sipvis.engine.track_run as run

def timed(*args, _track_source=run.track_source, **kwargs):
    stats = _track_source(*args, **kwargs)
    print(f"compare-release: {stats.frames} frames in {stats.seconds:.6f} s", file=sys.stderr)
    return stats

run.track_source = timed
from sipvis.cli import main
sys.argv[0] = "sipvis"
main()
"""

# Pre- and post-processing of one 640x360 frame with the R50 architecture (random weights: every frame has
# `max_per_img` = 10 detections, the heaviest case), through the `Segmenter` stages both trees have, with
# the intra-op threads each tree's `sipvis track` would use.
PREPOST = r"""
import json, statistics, sys, time
import torch
from sipvis.engine.bench import random_model
from sipvis.engine.inference import Segmenter
from sipvis.io.inputs import open_source

clip, reps = sys.argv[1], int(sys.argv[2])
try:  # the thread rule of the CLI's model commands, in a tree that has one
    from sipvis.engine.threads import set_inference_threads
    set_inference_threads()
except ImportError:
    pass
seg = Segmenter(random_model(), "cpu")
image = next(iter(open_source(clip, threaded=False, max_frames=1))).image
pre, post = [], []
with torch.inference_mode():
    for i in range(reps + 1):
        t0 = time.perf_counter()
        frames = [seg.prepare(image, 0)]
        x = seg.preprocess(frames)
        t1 = time.perf_counter()
        out = seg.forward(x)
        t2 = time.perf_counter()
        dets = seg.postprocess(out, frames)
        t3 = time.perf_counter()
        if i:  # the first is a warm-up
            pre.append(t1 - t0)
            post.append(t3 - t2)
print(json.dumps({"pre_ms": 1000 * statistics.median(pre), "post_ms": 1000 * statistics.median(post),
                  "detections": int(dets.valid.sum())}))
"""

# the authors' checkpoint format with the reference recipe's weights (tests/reference.py builds them)
REFERENCE_WEIGHTS = r"""
import sys, torch
sys.path.insert(0, "tests")
from reference import reference_state_dict
torch.save({"state_dict": reference_state_dict(), "meta": {}}, sys.argv[1])
"""


class Tree:
    """One source tree to run: `python -c` from its root (its `sipvis` first on sys.path)."""

    def __init__(self, name: str, root: Path, extra_args: list[str], env: dict[str, str]) -> None:
        self.name, self.root, self.extra_args, self.env = name, root, extra_args, env

    def python(self, code: str, *args: str, stderr: bool = False) -> str:
        """Run `code` with `args`; its stdout (and stderr if asked)."""
        result = subprocess.run([sys.executable, "-c", code, *args], cwd=self.root, env=self.env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{self.name} tree failed: {result.stderr.strip()[-2000:]}")
        return result.stdout + (result.stderr if stderr else "")

    def track_fps(self, clip: Path, weights: str, frames: int, out: Path) -> float:
        """`sipvis track CLIP --weights W -o out.json`; the fps it prints."""
        text = self.python(TRACK, "track", str(clip), "--weights", weights, "--device", "cpu", "--max-frames",
                           str(frames), "-o", str(out), *self.extra_args, stderr=True)
        match = TIMED_LINE.search(text)
        if match is None:
            raise SystemExit(f"{self.name} tree: no timing line in the output of track:\n{text[-2000:]}")
        return int(match.group(1)) / float(match.group(2))


def release_checkout(commit: str, folder: Path) -> Path:
    """`git worktree add --detach` of the release, with `cli/` linked where the install puts it."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(folder), commit],
                   check=True, capture_output=True)
    link = folder / "sipvis" / "cli"
    if not link.exists():
        link.symlink_to(folder / "cli", target_is_directory=True)
    return folder


def thread_env(threads: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if threads != "default":
        env["OMP_NUM_THREADS"] = threads  # both trees: torch reads it at start, the current tree respects it
    return env


def alternate(rounds: int, trees: list[Tree], measure) -> dict[str, list]:
    """`measure(tree)` for each tree in turn, `rounds` times (the order flips every round)."""
    values: dict[str, list] = {t.name: [] for t in trees}
    for r in range(rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            values[tree.name].append(measure(tree))
            print(f"  round {r + 1} {tree.name}: {values[tree.name][-1]}", file=sys.stderr, flush=True)
    return values


def summary(values: dict[str, list], key=None) -> dict:
    pick = (lambda v: v) if key is None else (lambda v: v[key])
    med = {name: statistics.median(pick(v) for v in vs) for name, vs in values.items()}
    return {"median": med, "runs": values}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", default=RELEASE, help="commit of today's release (default %(default)s)")
    p.add_argument("--clip", type=Path, default=None, help="input clip (default: a generated 640x360 one)")
    p.add_argument("--frames", type=int, default=48, help="frames of the clip tracked with the demo model")
    p.add_argument("--r50-frames", type=int, default=6, help="frames tracked with the R50 reference weights")
    p.add_argument("--rounds", type=int, default=3, help="alternations of the two trees per measurement")
    p.add_argument("--prepost-reps", type=int, default=5, help="frames timed per pre/post-processing run")
    p.add_argument("--threads", default="1", help="OMP_NUM_THREADS for both trees, or 'default' (each its own)")
    p.add_argument("--new-args", default="", help="extra `sipvis track` arguments for the current tree")
    p.add_argument("--old-args", default="", help="extra `sipvis track` arguments for the release")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: demo, r50, prepost")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` still removes the release worktree
    env = thread_env(args.threads)
    with tempfile.TemporaryDirectory(prefix="sipvis-compare-") as tmp:
        work = Path(tmp)
        release = release_checkout(args.release, work / "release")
        try:
            trees = [Tree("release", release, shlex.split(args.old_args), env),
                     Tree("current", ROOT, shlex.split(args.new_args), env)]
            report = run_all(args, trees, work, skip)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(release)],
                           capture_output=True)
    report["settings"] = {"release": args.release, "threads": args.threads, "rounds": args.rounds,
                          "new_args": args.new_args, "old_args": args.old_args, "cpus": os.cpu_count(),
                          "load_average": os.getloadavg()}
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def run_all(args: argparse.Namespace, trees: list[Tree], work: Path, skip: set[str]) -> dict:
    """Every measurement not skipped, in the trees' alternation; ratios release / current."""
    clip = args.clip
    if clip is None:
        clip = work / "clip_640x360.mp4"
        trees[1].python("import sys; from sipvis.engine.bench import generate_clip; "
                        "generate_clip(sys.argv[1], 640, 360, int(sys.argv[2]))", str(clip),
                        str(max(args.frames, args.r50_frames)))
    report: dict = {"clip": str(clip)}
    models = []
    if "demo" not in skip:
        models.append(("demo", "demo", args.frames))
    if "r50" not in skip:
        weights = work / "ref.pth"
        trees[1].python(REFERENCE_WEIGHTS, str(weights))
        models.append(("r50", str(weights), args.r50_frames))
    for name, weights, frames in models:
        print(f"{name}: sipvis track to JSON, {frames} frames", file=sys.stderr)
        for tree in trees:  # untimed: converts/caches the weights, warms the disk cache
            tree.track_fps(clip, weights, 1, work / f"warm_{tree.name}.json")
        fps = summary(alternate(args.rounds, trees, lambda t: t.track_fps(clip, weights, frames,
                                                                            work / f"{name}_{t.name}.json")))
        fps["speedup"] = fps["median"]["current"] / fps["median"]["release"]
        report[f"{name} end-to-end json fps"] = fps
    if "prepost" not in skip:
        print("R50 pre/post-processing, 640x360", file=sys.stderr)
        runs = alternate(args.rounds, trees, lambda t: json.loads(
            t.python(PREPOST, str(clip), str(args.prepost_reps)).splitlines()[-1]))
        for key in ("pre_ms", "post_ms"):
            part = summary(runs, key)
            part["ratio"] = part["median"]["release"] / part["median"]["current"]
            report[f"r50 {key}"] = part
        report["r50 detections"] = {name: vs[0]["detections"] for name, vs in runs.items()}
    return report


if __name__ == "__main__":
    main()
