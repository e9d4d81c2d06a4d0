"""The streaming pipeline for one input: decode + resize in a reader thread, batched network and
post-processing on the device, the tracker in order, and every output written by a writer thread.

Queues between the stages are bounded, so memory does not grow with the length of the video. Sinks
are closed whatever happens (error, Ctrl-C), so partial outputs are valid files.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sipvis.engine.inference import Segmenter
from sipvis.io.background import BackgroundWorker, threaded_iter
from sipvis.io.source import Frame, FrameSource
from sipvis.results import FrameInstances
from sipvis.track.tracker import OriginalTracker


class StopRequested(Exception):
    """Raised by a sink to end the run early and cleanly (e.g. the user pressed q in the window)."""


class Sink(Protocol):
    """Receives every processed frame in order (in the writer thread) and is closed once at the end."""

    def write(self, frame: Frame, instances: FrameInstances) -> None: ...

    def close(self) -> None: ...


@dataclass
class OutputFilter:
    """What users ask to see, applied after tracking so track identities do not depend on it.

    Attributes:
        classes: label indices to keep (None = all).
        min_score: drop instances scoring below this.
    """

    classes: set[int] | None = None
    min_score: float = 0.0

    def __call__(self, inst: FrameInstances) -> FrameInstances:
        keep = inst.scores >= self.min_score
        if self.classes is not None:
            keep &= np.isin(inst.labels, list(self.classes))
        if keep.all():
            return inst
        return FrameInstances(inst.index, inst.height, inst.width, inst.boxes[keep], inst.scores[keep],
                              inst.labels[keep], inst.track_ids[keep], inst.masks[keep], inst.timestamp)


@dataclass
class RunStats:
    frames: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def track_source(source: FrameSource, segmenter: Segmenter, sinks: Sequence[Sink],
                 tracker: OriginalTracker | None = None, output_filter: OutputFilter | None = None,
                 progress=None, queue_size: int = 8) -> RunStats:
    """Run one input through the model into `sinks`. `progress(n)` is called after every n frames.

    `source` should be opened with `threaded=False`: decoding and the host-side resize share one
    reader thread here.
    """
    tracker = tracker or OriginalTracker()
    output_filter = output_filter or OutputFilter()

    def decode_and_prepare():
        for frame in source:
            yield segmenter.prepare(frame.image, frame.index, frame.timestamp, source=frame)

    def write(item: tuple[Frame, FrameInstances]) -> None:
        for sink in sinks:
            sink.write(*item)

    stats = RunStats()
    start = time.perf_counter()
    writer = BackgroundWorker(write, maxsize=queue_size, name=f"sipvis-writer:{source.name}")
    try:
        prepared = threaded_iter(decode_and_prepare, maxsize=max(queue_size, 2 * segmenter.batch_size),
                                 name=f"sipvis-reader:{source.name}")
        for frame, instances in segmenter.track_prepared(prepared, tracker):
            writer.submit((frame.source, output_filter(instances)))
            stats.frames += 1
            if progress is not None:
                progress(1)
    except StopRequested:
        pass
    finally:
        try:
            writer.finish()  # everything processed so far reaches the outputs, even on Ctrl-C
        except StopRequested:
            pass
        finally:
            for sink in sinks:
                sink.close()
        stats.seconds = time.perf_counter() - start
    return stats
