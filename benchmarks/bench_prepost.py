"""Pre- and post-processing, old against new, side by side in one run.

The old functions are today's release's, loaded from git history (`--rev`, default b1dcd0e: the code
before the fast path) into throw-away modules, so no second copy lives in the tree. Both sides get the
same inputs, alternately, under the same torch thread count; each figure is the median of `--repeats`
alternating rounds. Every round asserts the outputs are identical (torch.equal on every field of
`Detections`; the pre-processed tensors bit for bit).

Cases:
    post  r50   a random-weight R50 (`sipvis.engine.bench.random_model`): logits near 0 put every
                candidate over the score threshold, so each frame has `max_per_img` = 10 detections and
                200 candidates per class, the heaviest case. Head outputs of one frame, decoded as at
                640x360 (scale 1) and, for the equality check, as at 1280x720 and 500x333.
    post  demo  the bundled demo model (`Segmenter.from_checkpoint("demo")`) on a `sipvis synth` frame.
    pre         `resize_frame` + `normalize_and_pad` of a 640x360 frame (no resize) and a 1280x720 one.

    .venv/bin/python benchmarks/bench_prepost.py                 # the figures in BENCHMARKS.md
    .venv/bin/python benchmarks/bench_prepost.py --repeats 5     # a quick run
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from sipvis.engine.bench import random_model
from sipvis.engine.inference import Segmenter
from sipvis.model import postprocess as new_post
from sipvis.model import preprocess as new_pre
from sipvis.model.postprocess import Detections, FrameGeometry

ROOT = Path(__file__).resolve().parents[1]


def load_old(rev: str) -> tuple[types.ModuleType, types.ModuleType]:
    """Today's release's postprocess and preprocess modules at git revision `rev`; the old postprocess
    is bound to the old box_ops (swapped into sys.modules only while it is imported)."""
    def source(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True,
                              capture_output=True, text=True).stdout

    modules = {}
    saved = sys.modules.get("sipvis.model.box_ops")
    try:
        for name in ("box_ops", "postprocess", "preprocess"):
            module = types.ModuleType(f"old_{name}")
            sys.modules[module.__name__] = module  # dataclasses look their module up there
            try:
                code = source(f"sipvis/model/{name}.py")
            except subprocess.CalledProcessError:  # box_ops did not exist yet at that revision
                continue
            exec(compile(code, f"{rev}:sipvis/model/{name}.py", "exec"), module.__dict__)
            modules[name] = module
            if name == "box_ops":
                sys.modules["sipvis.model.box_ops"] = module
    finally:
        sys.modules["sipvis.model.box_ops"] = saved
    return modules["postprocess"], modules["preprocess"]


def head_outputs(segmenter: Segmenter, image: np.ndarray):
    frame = segmenter.prepare(image)
    with torch.inference_mode():
        return segmenter.forward(segmenter.preprocess([frame])), frame


def assert_same_detections(a: Detections, b: Detections, what: str) -> None:
    for field in ("boxes", "scores", "labels", "valid", "masks", "embeddings"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y), f"{what}: {field} differs"


def side_by_side(old, new, check, repeats: int) -> tuple[float, float]:
    """Median seconds of old() and new(), called alternately (new first in odd rounds); `check(a, b)`
    asserts the outputs of every round are identical."""
    times = {"old": [], "new": []}
    for i in range(repeats):
        outputs = {}
        for name, fn in ((("new", new), ("old", old)) if i % 2 else (("old", old), ("new", new))):
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
        check(outputs["old"], outputs["new"])
    return float(np.median(times["old"])), float(np.median(times["new"]))


def report(name: str, old_s: float, new_s: float) -> None:
    print(f"{name:<44} old {old_s * 1e3:8.2f} ms   new {new_s * 1e3:8.2f} ms   new/old {new_s / old_s:5.3f}"
          f"   ({old_s / new_s:.1f}x)", flush=True)


def post_cases(args, old_post) -> None:
    r50 = Segmenter(random_model(), "cpu")
    image = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    out, frame = head_outputs(r50, image)
    resized = frame.resized.shape[:2]
    # one set of head outputs decoded as if it came from other frame sizes: exercises non-unit scales
    geoms = {"640x360": FrameGeometry(resized, (360, 640), 1.0),
             "1280x720": FrameGeometry(resized, (720, 1280), 0.5),
             "500x333": FrameGeometry(resized, (333, 500), 360 / 333)}
    cases = [(f"post r50 {size}", out, geom, r50.cfg) for size, geom in geoms.items()]
    demo = Segmenter.from_checkpoint("demo", device="cpu")
    demo_image = synth_frame()
    demo_out, demo_frame = head_outputs(demo, demo_image)
    demo_geom = FrameGeometry(demo_frame.resized.shape[:2], demo_frame.original, demo_frame.scale)
    cases.append(("post demo 640x360 (synth frame)", demo_out, demo_geom, demo.cfg))
    for name, out, geom, cfg in cases:
        with torch.inference_mode():
            old_s, new_s = side_by_side(lambda: old_post.postprocess(out, geom, cfg),
                                        lambda: new_post.postprocess(out, geom, cfg),
                                        lambda a, b: assert_same_detections(a, b, name), args.repeats)
            count = int(new_post.postprocess(out, geom, cfg).valid.sum())
        report(f"{name}, {count} det.", old_s, new_s)


def synth_frame() -> np.ndarray:
    """First frame of a seeded `sipvis synth` video (640x360 BGR), what the demo model was trained on."""
    from sipvis.data.synth import SynthConfig, render_video

    cfg = SynthConfig(videos=1, frames=1, seed=0, width=640, height=360)
    return np.ascontiguousarray(render_video(cfg, 0)[0][0])


def pre_cases(args, old_pre, cfg) -> None:
    rng = np.random.default_rng(1)
    for h, w in ((360, 640), (720, 1280)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

        def run(module, image=image):
            resized, _ = module.resize_frame(image, cfg.max_size)
            return module.normalize_and_pad(torch.from_numpy(resized)[None], cfg.pixel_mean, cfg.pixel_std,
                                            cfg.to_rgb, cfg.size_divisor)

        def check(a, b):
            assert a.shape == b.shape and a.stride() == b.stride() and torch.equal(a, b), "pre-processing differs"

        old_s, new_s = side_by_side(lambda: run(old_pre), lambda: run(new_pre), check, args.repeats)
        report(f"pre {w}x{h} (resize + normalise/pad)", old_s, new_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="b1dcd0e", help="git revision of the old functions")
    parser.add_argument("--repeats", type=int, default=21, help="alternating rounds per case (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    old_post, old_pre = load_old(args.rev)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), old = {args.rev}, "
          f"median of {args.repeats}", flush=True)
    pre_cases(args, old_pre, random_model().cfg)
    post_cases(args, old_post)
    print("outputs identical in every round")


if __name__ == "__main__":
    main()
