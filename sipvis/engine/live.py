"""Live segmentation of a camera, a stream or a file played in real time, with bounded latency.

Three threads, so a slow model never makes the view fall behind the camera:

- capture: reads the source, stamps each frame with the time it arrived (for a file paced with
  `realtime=True`: the time it was due), and hands it over. With `drop=True` the hand-over holds one
  frame: a newer frame replaces one the model has not taken yet (counted as dropped), so the model
  always starts on the newest frame and latency is at most about one model step plus one frame
  interval. With `drop=False` it is a small queue and the reader waits: every frame is processed and
  latency grows when the model is slower than the source. A network stream that drops is reopened
  with back-off (1, 2, 4... s); a camera that stops delivering frames ends the run.
- model: takes the newest frame, runs `Segmenter.track_prepared` one frame at a time, so the tracker
  sees the frames it was given in the order it took them.
- the caller: iterates `LiveStream.results()`, draws, shows, records, and calls `shown(result)` to
  record the end-to-end latency (arrival -> shown). `sipvis.engine.live_run.LiveRun` is that caller
  for `sipvis live` (recording, results JSON, snapshots, stop signals).

Example (headless)::

    with LiveStream(open_source("clip.mp4", threaded=False), segmenter, realtime=True) as live:
        for result in live.results(timeout=0.05):
            if result is not None:
                ...                      # draw result.instances on result.frame.image, show, record
                live.shown(result)
    print(live.end_reason, live.metrics.summary())
"""

from __future__ import annotations

import copy
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sipvis.engine.inference import Segmenter
from sipvis.engine.pipeline import OutputFilter, ScoreCorrections
from sipvis.errors import SipvisError
from sipvis.io.source import Frame, FrameSource
from sipvis.results import FrameInstances
from sipvis.track import OriginalTracker, Tracker

RECONNECT_ATTEMPTS = 5  # tries to reopen a dropped network stream before giving up
RECONNECT_FIRST_DELAY_S = 1.0  # doubled after every failed try
RECONNECT_MAX_DELAY_S = 16.0
_POLL_S = 0.05

# why a run ended (`LiveStream.end_reason`)
END_OF_INPUT = "end of input"
STOPPED = "stopped"
INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
INPUT_LOST = "input lost"  # a camera or stream stopped delivering frames (no reconnection asked for)
STREAM_LOST = "stream lost"  # a stream dropped and could not be reopened


@dataclass
class LiveFrame:
    """A captured frame. `frame.index` counts captured frames from 0 (across reconnects)."""

    frame: Frame
    arrived: float  # time.perf_counter() when it arrived (a paced file: when it was due)


@dataclass
class LiveResult:
    """A processed frame: what the model and tracker made of it, with its timing."""

    frame: Frame
    instances: FrameInstances
    arrived: float  # perf_counter at arrival
    processed: float  # perf_counter when the model and tracker were done with it


class LiveMetrics:
    """Counters and rates of a live run, updated from the capture thread and the caller; read from any thread.

    Attributes:
        captured: frames read from the source.
        processed: frames the model finished.
        shown: frames the caller showed (`LiveStream.shown`).
        dropped: captured frames the model never took (replaced by a newer one).
        latency_ms: arrival -> shown of the last shown frame, in ms (None before the first).
        max_track_id: the highest track id shown so far (= tracks started, when ids are 1, 2, ...).
    """

    def __init__(self, history: int = 100_000) -> None:
        self._lock = threading.Lock()
        self.captured = self.processed = self.shown = self.dropped = 0
        self.latency_ms: float | None = None
        self.latencies_ms: deque[float] = deque(maxlen=history)  # for the summary (bounded memory)
        self.max_track_id = 0
        self._in_times: deque[float] = deque(maxlen=64)
        self._out_times: deque[float] = deque(maxlen=64)
        self.started = time.perf_counter()

    def on_captured(self, t: float, dropped: int) -> None:
        with self._lock:
            self.captured += 1
            self.dropped += dropped
            self._in_times.append(t)

    def on_dropped(self, n: int) -> None:
        with self._lock:
            self.dropped += n

    def on_processed(self) -> None:
        with self._lock:
            self.processed += 1

    def on_shown(self, result: LiveResult, now: float) -> float:
        latency = (now - result.arrived) * 1000.0
        with self._lock:
            self.shown += 1
            self.latency_ms = latency
            self.latencies_ms.append(latency)
            self._out_times.append(now)
            if len(result.instances):
                self.max_track_id = max(self.max_track_id, int(result.instances.track_ids.max()))
        return latency

    @staticmethod
    def _rate(times: deque[float], now: float, horizon: float = 2.0) -> float:
        """Events per second over the recent ones (at least the last two); 0 once they stop coming."""
        with_time = [t for t in times if now - t <= horizon] or list(times)[-2:]
        if len(with_time) < 2:
            return 0.0
        span = with_time[-1] - with_time[0]
        interval = span / (len(with_time) - 1)
        if span <= 0 or now - with_time[-1] > 3 * interval + 0.5:  # stalled
            return 0.0
        return (len(with_time) - 1) / span

    def fps_in(self, now: float | None = None) -> float:
        with self._lock:
            return self._rate(self._in_times, time.perf_counter() if now is None else now)

    def fps_out(self, now: float | None = None) -> float:
        with self._lock:
            return self._rate(self._out_times, time.perf_counter() if now is None else now)

    def summary(self) -> str:
        """One line: counts, mean output rate, median and 95th percentile latency."""
        with self._lock:
            elapsed = max(1e-9, time.perf_counter() - self.started)
            text = (f"{self.captured} frames in, {self.processed} processed, {self.dropped} dropped; "
                    f"{self.shown / elapsed:.1f} fps out")
            lat = sorted(self.latencies_ms)
        if lat:
            p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
            text += f"; latency median {statistics.median(lat):.0f} ms, p95 {p95:.0f} ms"
        return text


class _Handoff:
    """Capture -> model. `drop`: one slot, a new frame replaces the untaken one. Else a FIFO of `size`
    frames whose `put` waits for room."""

    def __init__(self, drop: bool, size: int = 2) -> None:
        self.drop = drop
        self.size = 1 if drop else max(1, size)
        self._items: deque[LiveFrame] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: LiveFrame, stop: threading.Event) -> int:
        """Hand `item` over; returns how many untaken frames it replaced (dropped)."""
        with self._cond:
            if self._closed:
                return 0
            if self.drop:
                dropped = len(self._items)
                self._items.clear()
                self._items.append(item)
                self._cond.notify_all()
                return dropped
            while len(self._items) >= self.size and not self._closed and not stop.is_set():
                self._cond.wait(_POLL_S)
            if self._closed or stop.is_set():
                return 0
            self._items.append(item)
            self._cond.notify_all()
            return 0

    def get(self, timeout: float) -> LiveFrame | None | type[StopIteration]:
        """The next frame, None after `timeout` without one, StopIteration once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return StopIteration if self._closed else None

    def close(self, discard: bool = False) -> int:
        """No more frames. The ones left are still taken by `get`, unless `discard`: then they are dropped
        and their number is returned."""
        with self._cond:
            self._closed = True
            left = len(self._items) if discard else 0
            if discard:
                self._items.clear()
            self._cond.notify_all()
            return left


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class LiveStream:
    """Capture and model threads around a `Segmenter`; the caller consumes results in order.

    Args:
        source: an opened source, read in the capture thread (open files with `threaded=False`).
        segmenter: the model; run one frame at a time (a shallow copy with `batch_size=1` is used).
        drop: keep only the newest frame (bounded latency); False processes every frame.
        realtime: pace a file at its own frame rate (as a camera would deliver it). Live sources
            (`source.is_live`) are never paced.
        reopen: opens the source again after a network stream drops (None: no reconnection).
        output_filter: applied to each frame's instances after tracking.
        tracker: tracker state (a new `OriginalTracker` by default, or a `RobustTracker`); the original's
            first-frame quirk reaches the results as `FrameInstances.score_corrections` (see
            `pipeline.ScoreCorrections`).
        on_event: called with one-line messages (reconnecting, camera lost), from the capture thread.
        reconnect_attempts, reconnect_delay: tries and first back-off delay (doubled each try, at most 16 s).

    Use as a context manager, or call `start()` and finally `close()`.
    """

    def __init__(self, source: FrameSource, segmenter: Segmenter, *, drop: bool = True, realtime: bool = False,
                 reopen: Callable[[], FrameSource] | None = None, output_filter: OutputFilter | None = None,
                 tracker: Tracker | None = None, on_event: Callable[[str], None] | None = None,
                 reconnect_attempts: int = RECONNECT_ATTEMPTS, reconnect_delay: float = RECONNECT_FIRST_DELAY_S,
                 result_queue: int = 2) -> None:
        self.source = source
        self.segmenter = segmenter
        if segmenter.batch_size != 1:  # a batch would hold frames back: latency
            self.segmenter = copy.copy(segmenter)
            self.segmenter.batch_size = 1
        self.drop = drop
        self.realtime = realtime and not source.is_live
        self.reopen = reopen
        self.output_filter = output_filter or OutputFilter()
        self.tracker = tracker or OriginalTracker()
        self._corrections = ScoreCorrections(self.tracker)
        self.on_event = on_event or (lambda message: None)
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self.metrics = LiveMetrics()
        self.end_reason: str | None = None
        self.paused = False
        self.done = False
        self._handoff = _Handoff(drop)
        self._results: queue.Queue = queue.Queue(maxsize=max(1, result_queue))
        self._stop = threading.Event()  # no new frames: capture ends, the model finishes what it holds
        self._abort = threading.Event()  # give up at once (results not yet taken are lost)
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "LiveStream":
        if self._threads:
            return self
        self.metrics.started = time.perf_counter()
        self._threads = [threading.Thread(target=self._capture, name="sipvis-live-capture", daemon=True),
                         threading.Thread(target=self._model, name="sipvis-live-model", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def stop(self, reason: str = STOPPED) -> None:
        """Take no new frame; the frame the model holds is finished and still comes out of `results`."""
        if self.end_reason is None:
            self.end_reason = reason
        self._stop.set()
        self.metrics.on_dropped(self._handoff.close(discard=True))

    def close(self) -> None:
        """Stop everything now and wait for the threads (the model finishes its current frame)."""
        self.stop()
        self._abort.set()
        for thread in self._threads:
            thread.join()
        self.source.close()

    def __enter__(self) -> "LiveStream":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- consuming ---------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> LiveResult | None:
        """The next processed frame in order, or None if none came within `timeout` or the run is over
        (then `done` is True). Re-raises an error of the capture or model thread."""
        if self.done:
            return None
        try:
            item = self._results.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, _Raised):
            self.done = True
            raise item.exc
        if item is StopIteration:
            self.done = True
            if self._error is not None:
                raise self._error
            return None
        return item

    def results(self, timeout: float = _POLL_S) -> Iterator[LiveResult | None]:
        """Yield processed frames in order, and None every `timeout` s without one (time to pump a GUI);
        ends when the run is over."""
        while not self.done:
            yield self.get(timeout)

    def shown(self, result: LiveResult) -> float:
        """Record that `result` is on screen (or written, headless); returns its latency in ms."""
        return self.metrics.on_shown(result, time.perf_counter())

    # -- capture thread ----------------------------------------------------------------------

    def _capture(self) -> None:
        source = self.source
        seq = 0
        try:
            while True:
                ended_by_error = None
                try:
                    seq = self._read(source, seq)
                except SipvisError as exc:
                    ended_by_error = str(exc)
                finally:
                    source.close()
                if self._stop.is_set():
                    break
                if not source.is_live:
                    if ended_by_error:
                        raise SipvisError(ended_by_error)
                    self.end_reason = self.end_reason or END_OF_INPUT
                    break
                if self.reopen is None:
                    self.end_reason = self.end_reason or INPUT_LOST
                    break
                reopened = self._reconnect(source.name)
                if reopened is None:
                    if not self._stop.is_set():
                        self.end_reason = self.end_reason or STREAM_LOST
                    break
                source = self.source = reopened
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._error = exc
        finally:
            self._handoff.close()  # the model still takes what is left, then ends

    def _read(self, source: FrameSource, seq: int) -> int:
        """Read `source` until it ends or the run stops; returns the next sequence number."""
        fps = float(source.fps) if source.fps else 30.0
        origin: float | None = None  # wall time of stream time 0, when pacing
        for frame in source:
            if self._stop.is_set():
                break
            now = time.perf_counter()
            arrived = now
            if self.realtime:
                t = frame.timestamp if frame.timestamp is not None else frame.index / fps
                if origin is None:
                    origin = now - t
                due = origin + t
                if due > now:
                    if self._stop.wait(due - now):
                        break
                elif self.drop and now - due > 1.0 / fps:
                    # decoding fell behind real time: a camera would deliver later frames later, not pile up
                    origin = now - t
                    due = now
                arrived = due  # without dropping, a late frame's wait counts in its latency
            item = LiveFrame(Frame(seq, frame.image, frame.timestamp, frame.pts, frame.time_base), arrived)
            seq += 1
            self.metrics.on_captured(arrived, self._handoff.put(item, self._stop))
        return seq

    def _reconnect(self, name: str) -> FrameSource | None:
        delay = self.reconnect_delay
        for attempt in range(1, self.reconnect_attempts + 1):
            self.on_event(f"{name}: stream lost; reconnecting in {delay:g} s (attempt {attempt}/{self.reconnect_attempts})")
            if self._stop.wait(delay):
                return None
            try:
                source = self.reopen()
            except SipvisError as exc:
                self.on_event(f"{name}: reconnection failed: {exc}")
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
                continue
            self.on_event(f"{name}: reconnected")
            return source
        self.on_event(f"{name}: gave up after {self.reconnect_attempts} reconnection attempts")
        return None

    # -- model thread ------------------------------------------------------------------------

    def _taken(self) -> Iterator:
        """Frames for the model: the newest one each time it asks, prepared on the host."""
        while not self._stop.is_set():
            if self.paused:
                self._stop.wait(_POLL_S)
                continue
            item = self._handoff.get(_POLL_S)
            if item is StopIteration:
                return
            if item is None or self._stop.is_set():
                if item is not None:
                    self.metrics.on_dropped(1)
                continue
            f = item.frame
            yield self.segmenter.prepare(f.image, f.index, f.timestamp, source=item)

    def _model(self) -> None:
        try:
            for prepared, instances in self.segmenter.track_prepared(self._taken(), self.tracker):
                item: LiveFrame = prepared.source
                self.metrics.on_processed()
                instances = self.output_filter(self._corrections(instances))
                result = LiveResult(item.frame, instances, item.arrived, time.perf_counter())
                if not self._put_result(result):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self.stop()
            self._put_result(_Raised(exc))
            return
        self._put_result(StopIteration)

    def _put_result(self, item: object) -> bool:
        while not self._abort.is_set():
            try:
                self._results.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False
