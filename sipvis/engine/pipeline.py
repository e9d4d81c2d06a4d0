"""The streaming pipeline for one input: decode + resize in a reader thread, batched network and
post-processing on the device, the tracker in order, and every output (`sipvis.io.sinks.Sink`)
written by a writer thread.

Queues between the stages are bounded, so memory does not grow with the length of the video. Sinks
are closed whatever happens (error, Ctrl-C), so partial outputs are valid files; the first error decides
how the run ends, later ones are warnings (`sinks.close_all`). A run that fails before any frame reached
the outputs aborts them instead (`sinks.abort_all`): no empty output replaces an existing file.

A frame the source cannot read (an unreadable image in a folder) keeps its position: it skips the model
and the tracker and reaches the sinks as `FrameInstances.missing` (a `null` in the JSON, a gap elsewhere).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sipvis.engine.inference import Segmenter
from sipvis.io.background import BackgroundWorker, threaded_iter
from sipvis.engine.stop import shielded
from sipvis.io.sinks import Sink, StopRequested, abort_all, close_all
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
    gaps = _Gaps()
    stats = RunStats()

    def decode_and_prepare():
        for frame in source.frames(keep_gaps=True):
            if gaps.hold(frame):
                yield segmenter.prepare(frame.image, frame.index, frame.timestamp, source=frame)
        gaps.end()

    delivered = [0]  # frames every sink has written (in the writer thread)

    def write(item: tuple[Frame, FrameInstances]) -> None:
        error = None
        for sink in sinks:  # a failing sink does not keep this frame from the others
            try:
                sink.write(*item)
            except Exception as exc:  # noqa: BLE001 - raised below, after every sink had the frame
                error = error or exc
        if error is not None:
            raise error
        delivered[0] += 1

    def submit_gaps(frames: list[Frame]) -> None:
        for gap in frames:
            writer.submit((gap, FrameInstances.empty(gap.index, source.height, source.width, gap.timestamp,
                                                     missing=True)))
            if progress is not None:
                progress(1)

    def post(item) -> None:  # in the post-processing thread: detections, tracks, hand-over to the writer
        if item is None:  # the end of the input: the unreadable frames after the last readable one
            submit_gaps(gaps.before(None))
            return
        batch, outputs = item
        dets = segmenter.postprocess(outputs, batch)
        for frame, instances in segmenter.assign_tracks(batch, dets, tracker):
            submit_gaps(gaps.before(frame.index))
            writer.submit((frame.source, output_filter(corrections(instances))))
            stats.frames += 1

    start = time.perf_counter()
    writer = BackgroundWorker(write, maxsize=queue_size, name=f"sipvis-writer:{source.name}")
    poster = BackgroundWorker(post, maxsize=2, name=f"sipvis-post:{source.name}")
    workers = (poster, writer)  # finished in this order: what the post-processor finishes reaches the writer
    try:
        prepared = threaded_iter(decode_and_prepare, maxsize=max(queue_size, 2 * segmenter.batch_size),
                                 name=f"sipvis-reader:{source.name}")
        for batch in segmenter.batches(prepared):
            poster.submit((batch, segmenter.forward(segmenter.preprocess(batch))))
            if progress is not None:
                progress(len(batch))
        poster.submit(None)
    except StopRequested:
        pass
    except BaseException as exc:
        _finish(workers, sinks, stats, start, delivered, failure=exc)
        raise
    _finish(workers, sinks, stats, start, delivered)
    return stats


class _Gaps:
    """The unreadable frames (`image` None) met by the reader thread, held until the main thread has
    delivered the readable frame after them, so every frame reaches the sinks in source order."""

    def __init__(self) -> None:
        self._pending: list[Frame] = []
        self._by_next: dict[int | None, list[Frame]] = {}  # index of the frame after them (None: the end)

    def hold(self, frame: Frame) -> bool:
        """In the reader thread: keep `frame` if it is a gap (False), else file the gaps before it (True)."""
        if frame.image is None:
            self._pending.append(frame)
            return False
        if self._pending:
            self._by_next[frame.index], self._pending = self._pending, []
        return True

    def end(self) -> None:
        """In the reader thread, after the last frame: the gaps at the end follow it."""
        if self._pending:
            self._by_next[None], self._pending = self._pending, []

    def before(self, index: int | None) -> list[Frame]:
        """In the main thread: the gaps just before frame `index` (None: those at the end)."""
        return self._by_next.pop(index, [])


def _finish(workers: Sequence[BackgroundWorker], sinks: Sequence[Sink], stats: RunStats, start: float,
            delivered: list[int], failure: BaseException | None = None) -> None:
    """Write what was processed (everything, even on Ctrl-C: each worker finished in order, even if an
    earlier one failed) and close every sink; but when the run failed before any frame reached every sink
    (`delivered[0]`, counted by the writer), abort them. The first error decides: `failure` (re-raised by
    the caller) or the first error here, raised; the others are warnings."""
    error = failure
    # a stop signal arriving now must not cut a worker's join short (sinks closed while it still writes)
    with shielded():
        for worker in workers:
            try:
                worker.finish()
            except StopRequested:
                pass
            except BaseException as exc:  # noqa: BLE001 - a stage's error: every sink is still closed
                error = error or exc
        stats.seconds = time.perf_counter() - start
        if error is None:
            close_all(sinks)
        elif delivered[0] == 0:
            abort_all(sinks, error)
        else:
            close_all(sinks, error)
    if error is not None and failure is None:
        raise error

