"""Peak memory of `sipvis track` on a clip and on the same clip made 4x longer (issue 3: a 4x longer
input must not raise peak RSS by more than 10%).

The clip is a synthetic one (`sipvis.data.synth`, moving textured shapes); the long input is that clip
repeated 4 times, so both have the same content per frame and only the length differs. Both run through
the full pipeline (decode thread, model, tracker, writer thread) into an annotated mp4 and a results
JSON, in a child process whose peak resident set size is read from `os.wait4` (the kernel's maxrss for
that child alone). The model is a small randomly initialised ResNet-18 SipMask (throughput and memory
do not depend on the weight values; random logits give a full 10 detections per frame, so masks flow
through every sink).

What the ratio can catch: anything kept per frame. A leak of L bytes per frame raises the long run's
peak by about 3 * frames * L; the script prints the smallest per-frame leak the 10% limit detects.
The process's baseline is large (importing torch, PyAV and OpenCV alone is ~720 MB), so with the
defaults that is about 1 MB per frame: keeping each decoded 640x360 frame (0.69 MB) plus its masks
(0.23 MB each) would be caught, keeping only the frame would not.

    .venv/bin/python benchmarks/peak_rss.py                       # 32 vs 128 frames at 640x360
    .venv/bin/python benchmarks/peak_rss.py --frames 64 --json rss.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LIMIT = 1.10  # issue 3: at most +10% peak RSS for a 4x longer input
REPEAT = 4


def tiny_checkpoint(folder: Path, max_size: tuple[int, int] = (320, 180), seed: int = 0) -> Path:
    """A ResNet-18 (pytorch style, half width) SipMask with narrow FPN/head, input resized to fit
    `max_size`, random weights. Masks are still pasted at the clip's full size."""
    import torch

    from sipvis.checkpoint import save_checkpoint
    from sipvis.engine.bench import random_model
    from sipvis.model.config import SipMaskConfig

    cfg = SipMaskConfig(depth=18, style="pytorch", backbone_width=32, max_size=max_size,
                        class_names=("thing", "other"), fpn_channels=64, head_channels=64, basis_channels=64,
                        track_channels=64)
    torch.manual_seed(seed)
    return save_checkpoint(folder / "tiny", cfg, random_model(cfg).state_dict())


def make_inputs(folder: Path, frames: int, width: int, height: int, repeat: int = REPEAT) -> tuple[Path, Path]:
    """A synthetic clip of `frames` frames and the same clip repeated `repeat` times (H.264 mp4s)."""
    from sipvis.data.synth import SynthConfig, render_video, write_mp4

    cfg = SynthConfig(videos=1, frames=frames, width=width, height=height, fps=30, clips=True)
    images, _ = render_video(cfg, 0)
    short, long = folder / "short.mp4", folder / f"long_x{repeat}.mp4"
    write_mp4(short, images, cfg.fps)
    write_mp4(long, images * repeat, cfg.fps)
    return short, long


def peak_rss_of_track(clip: Path, weights: Path, out_dir: Path, extra: tuple[str, ...] = ()) -> int:
    """Run `sipvis track clip -o .mp4 -o .json` in a child process; its peak RSS in bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", "from sipvis.cli import main; main()", "track", str(clip), "--weights", str(weights),
           "-o", str(out_dir / "out.mp4"), "-o", str(out_dir / "out.json"), "--quiet", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # os.wait4 reports the rusage of this child alone (RUSAGE_CHILDREN would be the max over all children)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stdout.close()
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"sipvis track {clip.name} failed ({proc.returncode}): {stderr.strip()}")
    return usage.ru_maxrss * 1024  # Linux reports kilobytes


def measure(frames: int = 32, width: int = 640, height: int = 360, workdir: Path | None = None,
            model_size: tuple[int, int] = (320, 180)) -> dict:
    """Peak RSS of `sipvis track` on a `frames`-frame clip and on the 4x longer one, and their ratio.
    `model_size` is the tiny model's input size (its `max_size`)."""
    with tempfile.TemporaryDirectory(prefix="sipvis-rss-") as tmp:
        work = workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        weights = tiny_checkpoint(work, model_size)
        short, long = make_inputs(work, frames, width, height)
        peak_short = peak_rss_of_track(short, weights, work / "out_short")
        peak_long = peak_rss_of_track(long, weights, work / "out_long")
        decoded_long = _count_frames(work / "out_long" / "out.mp4")
    ratio = peak_long / peak_short
    return {
        "size": [width, height], "model_input": list(model_size), "frames_short": frames, "frames_long": frames * REPEAT,
        "frames_written_long": decoded_long,
        "peak_rss_short_mb": round(peak_short / 2**20, 1), "peak_rss_long_mb": round(peak_long / 2**20, 1),
        "ratio": round(ratio, 4), "limit": LIMIT, "ok": ratio <= LIMIT,
        # the smallest per-frame growth that the limit would catch
        "detectable_leak_mb_per_frame": round((LIMIT - 1) * peak_short / ((REPEAT - 1) * frames) / 2**20, 2),
    }


def _count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32, help="frames of the short clip (the long one has 4x)")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the clips (even numbers)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep clips and outputs in this folder")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    result = measure(args.frames, width, height, args.workdir)
    print(f"peak RSS, {result['frames_short']} frames at {width}x{height}: {result['peak_rss_short_mb']} MB")
    print(f"peak RSS, {result['frames_long']} frames (4x):       {result['peak_rss_long_mb']} MB")
    print(f"ratio {result['ratio']:.3f} (limit {LIMIT}): {'ok' if result['ok'] else 'TOO HIGH'}; "
          f"catches leaks of {result['detectable_leak_mb_per_frame']} MB/frame or more")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
