"""Throughput of each stage of the tracking pipeline, and of the whole pipeline end to end.

One pass over the input runs the stages one after the other, batch by batch, each timed on its own:

    decode       read and decode one frame (PyAV / OpenCV), no thread
    preprocess   host keep-ratio resize (`Segmenter.prepare`) + upload + normalise/pad on the device
    network      backbone + FPN + head
    postprocess  top-k, fast NMS, crop-split masks pasted at the original size (`postprocess`)
    tracking     the tracker, and the hand-over of the frame's results to the host (`FrameInstances`)
    render       masks, outlines, boxes and captions drawn on the frame (`Renderer`)
    encode       H.264 encoding of the drawn frames (`VideoWriter`, no thread; its final flush included)

Device work is bracketed by `torch.cuda.synchronize`, so a stage is charged for the kernels it
launched and not for the ones before it. The first batch is run through the model `warmup` times
(untimed) first: cuDNN algorithm selection, lazy CUDA initialisation and allocator growth would
otherwise be charged to the first frames.

Then the real pipeline (`track_source`: decode thread, bounded queues, writer thread) runs twice on the
same frames: to a YouTube-VIS JSON, and to the JSON plus an annotated mp4. Because its stages overlap,
its fps is higher than the sum of the stage times suggests; it is the number users get.
"""

from __future__ import annotations

import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch

from sipvis.engine.inference import PreparedFrame, Segmenter
from sipvis.model.postprocess import Detections, FrameGeometry, postprocess
from sipvis.model.preprocess import normalize_and_pad

STAGES = ("decode", "preprocess", "network", "postprocess", "tracking", "render", "encode")
END_TO_END = ("end-to-end json", "end-to-end json+mp4")

MAX_RENDERED = 128  # distinct frames of a generated clip

# Called as progress(phase, frames_done_since_last_call); phase is "stages" or one of END_TO_END.
Progress = Callable[[str, int], None]


@dataclass
class StageTiming:
    """Frames handled by one stage and the seconds it spent on them."""

    name: str
    frames: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.seconds / self.frames if self.frames else 0.0

    def to_dict(self) -> dict:
        return {"frames": self.frames, "seconds": _sig(self.seconds), "fps": _sig(self.fps),
                "ms_per_frame": _sig(self.ms_per_frame)}


def _sig(x: float) -> float:
    """Six significant digits: enough for any timing, short in JSON."""
    return float(f"{x:.6g}")


@dataclass
class BenchResult:
    """Everything `sipvis bench` reports. `stages` are in pipeline order, then the end-to-end runs."""

    stages: list[StageTiming]
    end_to_end: list[StageTiming]
    width: int
    height: int
    frames: int
    detections_per_frame: float
    info: dict = field(default_factory=dict)  # device, precision, batch, weights, input... (filled by the caller)

    def to_dict(self) -> dict:
        return {
            **self.info,
            "input_size": [self.width, self.height],
            "frames": self.frames,
            "detections_per_frame": round(self.detections_per_frame, 3),
            "stages": {s.name: s.to_dict() for s in self.stages},
            "end_to_end": {s.name: s.to_dict() for s in self.end_to_end},
        }


def random_model(cfg=None):
    """A SipMask-VIS with random weights (default: the R50 YouTube-VIS architecture), for throughput only.

    PyTorch's default initialisation is kept on purpose instead of `init_weights`: its classification
    prior (p = 0.01) puts every score under the 0.03 threshold, so post-processing, tracking and
    rendering would be timed on empty frames. Random logits near 0 give full frames (`max_per_img`
    detections), the heaviest case for those stages; the network's cost does not depend on the values.
    """
    from sipvis.model.config import SipMaskConfig
    from sipvis.model.sipmask import SipMaskVIS

    torch.manual_seed(0)
    return SipMaskVIS(cfg or SipMaskConfig())


def generate_clip(path: str | Path, width: int = 640, height: int = 360, frames: int = 16, fps: int = 30,
                  seed: int = 0) -> Path:
    """Write a synthetic clip (moving textured shapes, `sipvis.data.synth`) as an H.264 mp4 (or MPEG-4
    where libx264 is missing). Width and height must be even (yuv420p).

    At most `MAX_RENDERED` distinct frames are rendered (the renderer keeps every frame and mask in
    memory); longer clips loop them, which changes nothing for throughput.
    """
    from sipvis.data.synth import SynthConfig, render_video, write_mp4

    cfg = SynthConfig(videos=1, frames=min(frames, MAX_RENDERED), seed=seed, width=width, height=height, fps=fps,
                      clips=True)
    images, _ = render_video(cfg, 0)
    path = Path(path)
    write_mp4(path, (images * -(-frames // len(images)))[:frames], fps)
    return path


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels, so the wall clock measures them (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _ReplayedDetections(Segmenter):
    """The segmenter with `detect` replaced by detections computed (and timed) beforehand, so that
    `track_prepared` runs exactly the library's tracking and hand-over code and nothing else."""

    def __init__(self, base: Segmenter) -> None:
        super().__init__(base.model, base.device, base.dtype, base.batch_size)
        self.pending: Detections | None = None

    def detect(self, frames: list[PreparedFrame]) -> Detections:
        if self.pending is None:
            raise RuntimeError("no detections queued for this batch")
        dets, self.pending = self.pending, None
        return dets


def measure_stages(segmenter: Segmenter, spec, frames: int, workdir: Path, warmup: int = 1,
                   progress: Progress | None = None) -> tuple[list[StageTiming], int, int, float]:
    """Time each stage on the first `frames` frames of `spec` (anything `open_source` opens).

    Returns (timings in `STAGES` order, width, height, mean detections per frame).
    """
    from sipvis.io.inputs import open_source
    from sipvis.io.render import Renderer
    from sipvis.io.video_writer import VideoWriter
    from sipvis.track.tracker import OriginalTracker

    timings = {name: StageTiming(name) for name in STAGES}
    device, cfg = segmenter.device, segmenter.cfg
    replay = _ReplayedDetections(segmenter)
    tracker = OriginalTracker()
    renderer = Renderer(segmenter.class_names, alpha=0.5)
    detections = 0
    warmed = warmup <= 0

    def timed(name: str, n: int, fn, *args):
        synchronize(device)
        start = time.perf_counter()
        out = fn(*args)
        synchronize(device)
        timings[name].seconds += time.perf_counter() - start
        timings[name].frames += n
        return out

    def upload(prepared: list[PreparedFrame]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack([p.resized for p in prepared])).to(device, non_blocking=True)
        return normalize_and_pad(batch, cfg.pixel_mean, cfg.pixel_std, cfg.to_rgb, cfg.size_divisor)

    def prepare(batch) -> tuple[list[PreparedFrame], torch.Tensor]:
        prepared = [segmenter.prepare(f.image, f.index, f.timestamp, source=f) for f in batch]
        return prepared, upload(prepared)

    def network(images: torch.Tensor):
        with torch.autocast(device.type, dtype=segmenter.dtype, enabled=segmenter.dtype != torch.float32):
            return segmenter.model(images)

    def track(prepared: list[PreparedFrame], dets: Detections):
        replay.pending = dets
        return list(replay.track_prepared(prepared, tracker))

    def render(results):
        return [renderer.draw(frame.source.image, inst) for frame, inst in results]

    def encode(images, results):
        for image, (frame, _) in zip(images, results):
            writer.write(image, frame.source.pts)

    def process(batch) -> None:
        nonlocal detections, warmed
        if not warmed:  # the whole path once per warm-up round, on this first batch, untimed
            for _ in range(warmup):
                prepared = [segmenter.prepare(f.image, f.index, f.timestamp, source=f) for f in batch]
                for _ in segmenter.track_prepared(prepared, OriginalTracker()):
                    pass
            synchronize(device)
            warmed = True
        n = len(batch)
        with torch.inference_mode():
            prepared, images = timed("preprocess", n, prepare, batch)
            out = timed("network", n, network, images)
            geom = FrameGeometry(prepared[0].resized.shape[:2], prepared[0].original, prepared[0].scale)
            dets = timed("postprocess", n, postprocess, out, geom, cfg)
            del out, images
            results = timed("tracking", n, track, prepared, dets)
        detections += sum(len(inst) for _, inst in results)
        drawn = timed("render", n, render, results)
        timed("encode", n, encode, drawn, results)
        if progress is not None:
            progress("stages", n)

    source = open_source(spec, threaded=False, max_frames=frames)
    try:
        writer = VideoWriter(workdir / "stages.mp4", source.width, source.height, source.fps, source.time_base,
                             threaded=False)
        try:
            frame_iter = iter(source)
            batch: list = []
            while True:
                start = time.perf_counter()
                frame = next(frame_iter, None)
                if frame is None:
                    break
                timings["decode"].seconds += time.perf_counter() - start
                timings["decode"].frames += 1
                if batch and frame.image.shape != batch[0].image.shape:  # one batch, one frame size
                    process(batch)
                    batch = []
                batch.append(frame)
                if len(batch) == segmenter.batch_size:
                    process(batch)
                    batch = []
            if batch:
                process(batch)
        finally:
            start = time.perf_counter()
            writer.close()  # the encoder's buffered frames are encoded here
            timings["encode"].seconds += time.perf_counter() - start
        width, height = source.width, source.height
    finally:
        source.close()
    total = timings["decode"].frames
    return [timings[name] for name in STAGES], width, height, detections / max(total, 1)


def measure_end_to_end(segmenter: Segmenter, spec, frames: int, workdir: Path, video: bool,
                       progress: Progress | None = None) -> StageTiming:
    """Run the streaming pipeline (`track_source`) on the first `frames` frames of `spec` into a results
    JSON (and an annotated mp4 if `video`); the time runs until every output file is closed."""
    from sipvis.engine.pipeline import track_source
    from sipvis.io.inputs import open_source
    from sipvis.io.sinks import AnnotatedVideoSink, ResultsJson
    from sipvis.track.tracker import OriginalTracker

    name = END_TO_END[1] if video else END_TO_END[0]
    source = open_source(spec, threaded=False, max_frames=frames)
    try:
        tracker = OriginalTracker()
        sinks = [ResultsJson(workdir / f"{'video' if video else 'json'}.json").video(1, tracker)]
        if video:
            sinks.append(AnnotatedVideoSink(workdir / "annotated.mp4", source, segmenter.class_names))
        report = None if progress is None else (lambda n: progress(name, n))
        stats = track_source(source, segmenter, sinks, tracker, progress=report)
    finally:
        source.close()
    return StageTiming(name, stats.frames, stats.seconds)


def run_bench(segmenter: Segmenter, spec=None, frames: int = 16, size: tuple[int, int] = (640, 360),
              warmup: int | None = None, workdir: str | Path | None = None,
              progress: Progress | None = None) -> BenchResult:
    """Measure every stage and the end-to-end pipeline on `frames` frames of `spec`.

    Args:
        segmenter: the model, device, precision and batch size to measure.
        spec: an input `open_source` accepts; None generates a synthetic clip of `size` (width, height).
        frames: frames used from the input (fewer if it is shorter).
        warmup: untimed passes of the first batch (default 3 on CUDA, 1 on CPU).
        workdir: where the generated clip and the outputs go (default: a temporary folder, removed).
        progress: `progress(phase, n)` after every n frames of each phase.
    """
    if warmup is None:
        warmup = 3 if segmenter.device.type == "cuda" else 1
    with tempfile.TemporaryDirectory(prefix="sipvis-bench-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if spec is None:
            spec = str(generate_clip(work / "input.mp4", size[0], size[1], frames))
        stages, width, height, dets = measure_stages(segmenter, spec, frames, work, warmup, progress)
        e2e = [measure_end_to_end(segmenter, spec, frames, work, video, progress) for video in (False, True)]
    return BenchResult(stages, e2e, width, height, stages[0].frames, dets)


def environment(device: torch.device) -> dict:
    """Where the numbers come from: device name, torch version and threads, date."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {"device_name": name, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "date": date.today().isoformat()}


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()
