"""The streaming pipeline for one input: decode + resize in a reader thread, batched network and
post-processing on the device, the tracker in order, and every output (`sipvis.io.sinks.Sink`)
written by a writer thread.

Queues between the stages are bounded, so memory does not grow with the length of the video. Sinks
are closed whatever happens (error, Ctrl-C), so partial outputs are valid files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sipvis.engine.inference import Segmenter
from sipvis.io.background import BackgroundWorker, threaded_iter
from sipvis.io.sinks import Sink, StopRequested, close_all
from sipvis.io.source import Frame, FrameSource
from sipvis.results import FrameInstances
from sipvis.track import OriginalTracker, Tracker

__all__ = ["OutputFilter", "RunStats", "ScoreCorrections", "Sink", "StopRequested", "track_source"]


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
        return dataclasses.replace(inst, boxes=inst.boxes[keep], scores=inst.scores[keep], labels=inst.labels[keep],
                                   track_ids=inst.track_ids[keep], masks=inst.masks[keep])


class ScoreCorrections:
    """Hands the original tracker's first-frame quirk to the sinks as plain data (see
    `OriginalTracker.first_frame_scores`): called with each frame's instances right after the tracker
    has seen that frame, it adds the first-frame scores overwritten since the previous call as
    `score_corrections` {(first frame index, 1-based track id): score}. Other trackers have no such
    quirk: their instances pass unchanged."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._sent: dict[int, float] = {}

    def __call__(self, instances: FrameInstances) -> FrameInstances:
        if not isinstance(self.tracker, OriginalTracker):
            return instances
        changed = {t: s for t, s in self.tracker.first_frame_scores.items() if self._sent.get(t) != s}
        if not changed:
            return instances
        self._sent.update(changed)
        first = self.tracker.first_frame_index
        # track ids as users see them (1-based), like FrameInstances.track_ids
        return dataclasses.replace(instances, score_corrections={(first, t + 1): s for t, s in changed.items()})


@dataclass
class RunStats:
    frames: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def track_source(source: FrameSource, segmenter: Segmenter, sinks: Sequence[Sink],
                 tracker: Tracker | None = None, output_filter: OutputFilter | None = None,
                 progress=None, queue_size: int = 8) -> RunStats:
    """Run one input through the model into `sinks`. `progress(n)` is called after every n frames.

    `source` should be opened with `threaded=False`: decoding and the host-side resize share one
    reader thread here. `tracker`: fresh state for this input (default: a new `OriginalTracker`).

    Four threads overlap: the reader (decode, resize), this one (upload, normalise, the network), the
    post-processor (`Segmenter.postprocess` and `assign_tracks`, in frame order: the tracker is
    sequential) and the writer (the sinks). The network's thread does nothing else, so the run goes as
    fast as the network when the other stages together fit on the remaining cores.
    """
    tracker = tracker or OriginalTracker()
    output_filter = output_filter or OutputFilter()
    corrections = ScoreCorrections(tracker)
    stats = RunStats()

    def decode_and_prepare():
        for frame in source:
            yield segmenter.prepare(frame.image, frame.index, frame.timestamp, source=frame)

    def write(item: tuple[Frame, FrameInstances]) -> None:
        for sink in sinks:
            sink.write(*item)

    # a stand-in segmenter that scripts `detect` itself (tests) runs it whole in the network's thread
    split = type(segmenter).detect is Segmenter.detect

    def post(item) -> None:  # in the post-processing thread: detections, tracks, hand-over to the writer
        batch, outputs = item
        dets = segmenter.postprocess(outputs, batch) if split else outputs
        for frame, instances in segmenter.assign_tracks(batch, dets, tracker):
            writer.submit((frame.source, output_filter(corrections(instances))))
            stats.frames += 1

    start = time.perf_counter()
    writer = BackgroundWorker(write, maxsize=queue_size, name=f"sipvis-writer:{source.name}")
    poster = BackgroundWorker(post, maxsize=2, name=f"sipvis-post:{source.name}")
    try:
        prepared = threaded_iter(decode_and_prepare, maxsize=max(queue_size, 2 * segmenter.batch_size),
                                 name=f"sipvis-reader:{source.name}")
        for batch in segmenter.batches(prepared):
            poster.submit((batch, segmenter.forward(segmenter.preprocess(batch)) if split else segmenter.detect(batch)))
            if progress is not None:
                progress(len(batch))
    except StopRequested:
        pass
    finally:
        try:
            _finish(poster, writer)  # everything processed so far reaches the outputs, even on Ctrl-C
        finally:
            close_all(sinks)
        stats.seconds = time.perf_counter() - start
    return stats


def _finish(*workers: BackgroundWorker) -> None:
    """`finish` every worker in order (each even if an earlier one failed); a stop request is no error,
    the first other error is re-raised."""
    error: BaseException | None = None
    for worker in workers:
        try:
            worker.finish()
        except StopRequested:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the other workers
            error = error or exc
    if error is not None:
        raise error
