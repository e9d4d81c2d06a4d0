"""Throughput of each stage of the tracking pipeline, and of the whole pipeline end to end.

One pass over the input runs the stages one after the other, batch by batch, each timed on its own:

    decode       read and decode one frame (PyAV / OpenCV), no thread
    preprocess   host keep-ratio resize (`Segmenter.prepare`) + upload + normalise/pad on the device
                 (`Segmenter.preprocess`)
    network      backbone + FPN + head (`Segmenter.forward`)
    postprocess  top-k, fast NMS, crop-split masks pasted at the original size (`Segmenter.postprocess`)
    tracking     the tracker, and the hand-over of the frame's results to the host (`Segmenter.assign_tracks`)
    render       masks, outlines, boxes and captions drawn on the frame (`Renderer`)
    encode       H.264 encoding of the drawn frames (`VideoWriter`, no thread; its final flush included)

The stages are the segmenter's own methods, batched by `Segmenter.batches`, exactly as `track` composes
them: the benchmark cannot drift from production. Device work is bracketed by `torch.cuda.synchronize`,
so a stage is charged for the kernels it launched and not for the ones before it. The first batch is
run through the model `warmup` times (untimed) first: cuDNN algorithm selection, lazy CUDA
initialisation and allocator growth would otherwise be charged to the first frames.

Then the real pipeline (`track_source`: reader thread, the network in the calling thread, a
post-processing + tracking thread, writer thread, bounded queues between them) runs twice on the same
frames: to a YouTube-VIS JSON, and to the JSON plus an annotated mp4. Because its stages overlap, its fps
is higher than the sum of the stage times suggests; it is the number users get.
"""

from __future__ import annotations

import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch

from sipvis.engine.inference import PreparedFrame, Segmenter

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

    def network_share(self) -> float | None:
        """End to end to JSON as a fraction of the network stage's rate (1 = the pipeline runs as fast as
        its network alone); None when either was not measured."""
        rates = {s.name: s.fps for s in self.stages + self.end_to_end}
        if not rates.get("network") or END_TO_END[0] not in rates:
            return None
        return rates[END_TO_END[0]] / rates["network"]

    def to_dict(self) -> dict:
        share = self.network_share()
        return {
            **self.info,
            "input_size": [self.width, self.height],
            "frames": self.frames,
            "detections_per_frame": round(self.detections_per_frame, 3),
            "stages": {s.name: s.to_dict() for s in self.stages},
            "end_to_end": {s.name: s.to_dict() for s in self.end_to_end},
            "end_to_end_json_vs_network": None if share is None else round(share, 4),
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


class _StageClock:
    """The `StageTiming` of every stage, filled as the stages run."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.timings = {name: StageTiming(name) for name in STAGES}

    def add(self, name: str, frames: int, seconds: float) -> None:
        self.timings[name].frames += frames
        self.timings[name].seconds += seconds

    def timed(self, name: str, frames: int, fn: Callable, *args):
        """`fn(*args)`, charged to stage `name` for `frames` frames, device work included."""
        synchronize(self.device)
        start = time.perf_counter()
        out = fn(*args)
        synchronize(self.device)
        self.add(name, frames, time.perf_counter() - start)
        return out


def _prepared_frames(segmenter: Segmenter, source, clock: _StageClock) -> Iterator[PreparedFrame]:
    """The source's frames, each decoded (timed as "decode") and resized on the host (`Segmenter.prepare`,
    timed as part of "preprocess", whose frames are counted with the batch's device part)."""
    frames = iter(source)
    while True:
        start = time.perf_counter()
        frame = next(frames, None)
        if frame is None:
            return
        clock.add("decode", 1, time.perf_counter() - start)
        start = time.perf_counter()
        prepared = segmenter.prepare(frame.image, frame.index, frame.timestamp, source=frame)
        clock.add("preprocess", 0, time.perf_counter() - start)
        yield prepared


class _BatchStages:
    """One batch through every stage after decoding, each timed on its own: the segmenter's stages, then
    the renderer and the encoder of the annotated video."""

    def __init__(self, segmenter: Segmenter, clock: _StageClock, writer, tracker: str = "original") -> None:
        from sipvis.io.render import Renderer
        from sipvis.track import new_tracker

        self.segmenter, self.clock, self.writer = segmenter, clock, writer
        self.kind = tracker
        self.tracker = new_tracker(tracker)
        self.renderer = Renderer(segmenter.class_names, alpha=0.5)

    def warm_up(self, batch: list[PreparedFrame], rounds: int) -> None:
        """The whole path `rounds` times on `batch`, untimed, with a tracker of its own."""
        from sipvis.track import new_tracker

        for _ in range(rounds):
            for _ in self.segmenter.track_prepared(batch, new_tracker(self.kind)):
                pass
        synchronize(self.segmenter.device)

    def run(self, batch: list[PreparedFrame]) -> int:
        """Time every stage on `batch`; returns how many instances its frames have."""
        seg, timed, n = self.segmenter, self.clock.timed, len(batch)
        images = timed("preprocess", n, seg.preprocess, batch)
        outputs = timed("network", n, seg.forward, images)
        dets = timed("postprocess", n, seg.postprocess, outputs, batch)
        del outputs, images  # the device memory a production batch would have released by now
        results = timed("tracking", n, lambda: list(seg.assign_tracks(batch, dets, self.tracker)))
        drawn = timed("render", n, lambda: [self.renderer.draw(f.source.image, inst) for f, inst in results])
        timed("encode", n, self._encode, drawn, results)
        return sum(len(inst) for _, inst in results)

    def _encode(self, images: list[np.ndarray], results) -> None:
        for image, (frame, _) in zip(images, results):
            self.writer.write(image, frame.source.pts)


def measure_stages(segmenter: Segmenter, spec, frames: int, workdir: Path, warmup: int = 1,
                   progress: Progress | None = None, tracker: str = "original"
                   ) -> tuple[list[StageTiming], int, int, float]:
    """Time each stage on the first `frames` frames of `spec` (anything `open_source` opens), batched by
    `Segmenter.batches`, with the tracker `tracker` ('original' or 'robust').

    Returns (timings in `STAGES` order, width, height, mean detections per frame).
    """
    from sipvis.io.inputs import open_source
    from sipvis.io.video_writer import VideoWriter

    clock = _StageClock(segmenter.device)
    detections = 0
    source = open_source(spec, threaded=False, max_frames=frames)
    try:
        writer = VideoWriter(workdir / "stages.mp4", source.width, source.height, source.fps, source.time_base,
                             threaded=False)
        try:
            stages = _BatchStages(segmenter, clock, writer, tracker)
            for i, batch in enumerate(segmenter.batches(_prepared_frames(segmenter, source, clock))):
                if i == 0 and warmup > 0:
                    stages.warm_up(batch, warmup)
                detections += stages.run(batch)
                if progress is not None:
                    progress("stages", len(batch))
        finally:
            start = time.perf_counter()
            writer.close()  # the encoder's buffered frames are encoded here
            clock.add("encode", 0, time.perf_counter() - start)
        width, height = source.width, source.height
    finally:
        source.close()
    total = clock.timings["decode"].frames
    return [clock.timings[name] for name in STAGES], width, height, detections / max(total, 1)


def measure_end_to_end(segmenter: Segmenter, spec, frames: int, workdir: Path, video: bool,
                       progress: Progress | None = None, tracker: str = "original") -> StageTiming:
    """Run the streaming pipeline (`track_source`) on the first `frames` frames of `spec` into a results
    JSON (and an annotated mp4 if `video`), with the tracker `tracker`; the time runs until every output
    file is closed."""
    from sipvis.engine.pipeline import track_source
    from sipvis.io.inputs import open_source
    from sipvis.io.sinks import AnnotatedVideoSink, ResultsJson
    from sipvis.track import new_tracker

    name = END_TO_END[1] if video else END_TO_END[0]
    source = open_source(spec, threaded=False, max_frames=frames)
    try:
        sinks = [ResultsJson(workdir / f"{'video' if video else 'json'}.json").video(1)]
        if video:
            sinks.append(AnnotatedVideoSink(workdir / "annotated.mp4", source, segmenter.class_names))
        report = None if progress is None else (lambda n: progress(name, n))
        stats = track_source(source, segmenter, sinks, new_tracker(tracker), progress=report)
    finally:
        source.close()
    return StageTiming(name, stats.frames, stats.seconds)


def run_bench(segmenter: Segmenter, spec=None, frames: int = 16, size: tuple[int, int] = (640, 360),
              warmup: int | None = None, workdir: str | Path | None = None,
              progress: Progress | None = None, tracker: str = "original") -> BenchResult:
    """Measure every stage and the end-to-end pipeline on `frames` frames of `spec`.

    Args:
        segmenter: the model, device, precision and batch size to measure.
        spec: an input `open_source` accepts; None generates a synthetic clip of `size` (width, height).
        frames: frames used from the input (fewer if it is shorter).
        warmup: untimed passes of the first batch (default 3 on CUDA, 1 on CPU).
        workdir: where the generated clip and the outputs go (default: a temporary folder, removed).
        progress: `progress(phase, n)` after every n frames of each phase.
        tracker: the tracker timed ('original' or 'robust').
    """
    if warmup is None:
        warmup = 3 if segmenter.device.type == "cuda" else 1
    with tempfile.TemporaryDirectory(prefix="sipvis-bench-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if spec is None:
            spec = str(generate_clip(work / "input.mp4", size[0], size[1], frames))
        stages, width, height, dets = measure_stages(segmenter, spec, frames, work, warmup, progress, tracker)
        e2e = [measure_end_to_end(segmenter, spec, frames, work, video, progress, tracker) for video in (False, True)]
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
