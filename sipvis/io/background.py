"""Run a producer or a consumer in its own thread behind a small bounded queue.

Decoding and encoding release the GIL inside FFmpeg, so a reader thread and a
writer thread overlap with the model. Queues are bounded so that a slow side
stalls the other instead of letting frames pile up in memory.

Warnings about the media (`media_warning`) raised in a worker thread are carried
back and re-issued with `warnings.warn` in the caller's thread, so the CLI's
warning display and `warnings.catch_warnings` see them (`catch_warnings` itself
is not thread-safe, so worker threads must not use it). An exception in a worker
is re-raised in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.1  # how often a blocked thread checks whether the other side has gone away
_local = threading.local()


class MediaWarning(UserWarning):
    """A problem with the media that sipvis worked around (corrupt packet skipped, encoder fallback...)."""


def media_warning(message: str) -> None:
    """Warn about the media; from a worker thread the warning is re-issued in the caller's thread."""
    pending = getattr(_local, "pending", None)
    if pending is None:
        warnings.warn(message, MediaWarning, stacklevel=3)
    else:
        pending.append(message)  # workers started by a worker hand their warnings up the chain


class _Pending:
    """Messages a worker thread collected, handed over under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[str] = []

    def append(self, message: str) -> None:
        with self._lock:
            self._messages.append(message)

    def reissue(self) -> None:
        with self._lock:
            messages, self._messages = self._messages, []
        for message in messages:
            media_warning(message)


class _End:
    pass


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def threaded_iter(produce: Callable[[], Iterator[T]], maxsize: int = 4, name: str = "sipvis-reader") -> Iterator[T]:
    """Iterate `produce()` in a background thread, at most `maxsize` items ahead of the consumer.

    Closing the returned generator early (a `break` in the consumer's loop) stops
    the producer at its next item and closes its iterator in the producer thread,
    so what it holds (an open container) is released there.
    """
    items: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()
    pending = _Pending()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        _local.pending = pending
        it = None
        try:
            it = produce()
            for item in it:
                if not put(item):
                    return
            put(_End())
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Raised(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            pending.reissue()
            if isinstance(item, _End):
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()
        pending.reissue()


class BackgroundWorker(Generic[T]):
    """Feed items to `handle(item)` in a background thread through a bounded queue.

    `submit` blocks while the queue is full (back-pressure) and re-raises, in the
    caller's thread, the first exception `handle` raised; later items are then
    dropped. `finish` waits until every submitted item is handled, stops the
    thread and re-raises a pending exception.
    """

    def __init__(self, handle: Callable[[T], None], maxsize: int = 8, name: str = "sipvis-writer") -> None:
        self._handle = handle
        self._items: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._error: BaseException | None = None
        self._pending = _Pending()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        _local.pending = self._pending
        while True:
            item = self._items.get()
            if isinstance(item, _End):
                return
            if self._error is not None:
                continue  # drain; the caller sees the error on its next call
            try:
                self._handle(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc

    def _check(self) -> None:
        self._pending.reissue()
        if self._error is not None:
            raise self._error

    def submit(self, item: T) -> None:
        self._check()
        while True:
            try:
                self._items.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                self._check()

    def finish(self) -> None:
        """Handle everything submitted so far, stop the thread, re-raise a pending error."""
        if self._thread.is_alive():
            self._items.put(_End())
            self._thread.join()
        self._check()
