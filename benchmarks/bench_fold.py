"""The network alone on CPU: unfolded against frozen BatchNorm folded (`sipvis.model.fold`), with and without
channels_last weights, and with a contiguous (NCHW) input instead of the channels_last one pre-processing
makes. One 640x360 frame, the variants called alternately, medians; the largest deviation of the folded
network's raw outputs from the unfolded one's is printed first.

    .venv/bin/python benchmarks/bench_fold.py r50 --repeats 7      # random-weight R50 (bench.random_model)
    .venv/bin/python benchmarks/bench_fold.py demo --repeats 30    # the bundled demo model
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from sipvis.checkpoint import build_model
from sipvis.engine.bench import random_model
from sipvis.model.fold import folded_for_inference
from sipvis.model.preprocess import normalize_and_pad, resize_frame


def _outputs(out) -> list[torch.Tensor]:
    return [*out.cls_logits, *out.bbox_reg, *out.centerness, *out.coeffs, out.basis, out.track_feats]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=("r50", "demo"))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = (random_model() if args.model == "r50" else build_model("demo")[0]).eval()
    cfg = model.cfg
    image = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    resized, _ = resize_frame(image, cfg.max_size)
    x = normalize_and_pad(torch.from_numpy(resized)[None], cfg.pixel_mean, cfg.pixel_std)  # channels_last
    folded = folded_for_inference(model)
    variants = {"unfolded": (model, x), "folded": (folded, x),
                "folded + channels_last weights": (folded_for_inference(model, channels_last=True), x),
                "folded, NCHW input": (folded, x.contiguous())}
    with torch.inference_mode():
        ref, out = model(x), folded(x)
        deviation = max(float((a - b).abs().max() / (1 + b.abs().max())) for a, b in zip(_outputs(out), _outputs(ref)))
        print(f"max |folded - unfolded| / (1 + max|unfolded|) over the raw outputs: {deviation:.2g}")
        for net, inp in variants.values():
            net(inp)  # warm-up
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            for name, (net, inp) in variants.items():
                start = time.perf_counter()
                net(inp)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["unfolded"])
    for name, ts in times.items():
        print(f"{name:32s} {1000 * statistics.median(ts):9.1f} ms  ratio {statistics.median(ts) / base:.3f}")


if __name__ == "__main__":
    main()
