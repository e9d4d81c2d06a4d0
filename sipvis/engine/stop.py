"""Stop signals: Ctrl-C (SIGINT), `kill` / `timeout` / `docker stop` / schedulers (SIGTERM) and a closed
terminal (SIGHUP) all stop a run the same way, so what it processed so far is saved as valid files.

One `StopSignals` handles the three signals for the whole process (the `sipvis` command installs it
once, in `sipvis.cli.main`, for every command); library loops that can stop cleanly between two steps
ask for it with `stop_signals(polling=True)` and call `check()` there. The escalation is the same
everywhere:

1. the first signal stops the run: in a polling block it only sets `requested`, and the loop stops at
   its next `check()` (between two frames, videos or training steps); elsewhere it raises `Interrupted`
   at once, like Python's own Ctrl-C;
2. a second signal in a polling block raises `Interrupted` at once (the loop did not reach a check:
   a long step, a stalled input);
3. once `Interrupted` has been raised, or inside `shielded()`, signals do not raise: the run is
   writing its outputs (closing the video, renaming the JSON), and an exception there would lose them
   (the "Exception ignored" tracebacks and missing outputs of a quick double Ctrl-C);
4. a third signal ends the process at once, with the exit status of that signal (outputs may then be
   incomplete: the escape from a run stuck in its clean-up).

`Interrupted` is a `KeyboardInterrupt`, so code that already cleans up after Ctrl-C does so for every
stop signal. Its `exit_code` is 128 + the signal's number (130 SIGINT, 143 SIGTERM, 129 SIGHUP), what a
shell reports for a process the signal ended.

Example (a loop in library code)::

    with stop_signals(polling=True) as stop:
        for item in work:
            process(item)
            stop.check()  # raises Interrupted once a stop was asked for
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["Interrupted", "STOP_SIGNALS", "StopSignals", "shielded", "stop_signals"]

# SIGHUP and SIGTERM do not exist (or cannot be caught) on Windows
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT,) + (
    (signal.SIGTERM, signal.SIGHUP) if sys.platform != "win32" else ())
FORCE_AFTER = 3  # the signal that ends the process without waiting for its outputs


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal. `signum`: the first stop signal; `exit_code`: 128 + signum."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class StopSignals:
    """The process's handler of `STOP_SIGNALS` (see the module docstring for what each signal does).

    Attributes:
        requested: the first stop signal received (None: none yet).
        raised: `Interrupted` has been raised; the run is finishing its outputs.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self.raised = False
        self.count = 0
        self._polling = 0
        self._shielded = 0
        self._previous: dict[int, object] = {}

    # -- installing ------------------------------------------------------------------------------

    def install(self) -> bool:
        """Handle the stop signals from now on; False (and nothing changes) outside the main thread,
        where Python cannot install handlers (library use in a worker thread keeps the defaults)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return True

    def restore(self) -> None:
        """Put back the handlers found by `install`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    # -- what a run does -------------------------------------------------------------------------

    def check(self) -> None:
        """At a point where stopping is clean: raise `Interrupted` if a stop was asked for (once)."""
        if self.requested is not None and not self.raised and not self._shielded:
            self._raise()

    @contextlib.contextmanager
    def polling(self) -> Iterator["StopSignals"]:
        """In this block a first signal only sets `requested`; the code calls `check()` between steps."""
        self._polling += 1
        try:
            yield self
        finally:
            self._polling -= 1

    @contextlib.contextmanager
    def shielded(self) -> Iterator["StopSignals"]:
        """In this block (writing outputs) signals are recorded but raise nothing; a stop asked for
        meanwhile is raised by the next `check()`, or at once after the block outside a polling block."""
        self._shielded += 1
        try:
            yield self
        finally:
            self._shielded -= 1
        if self.requested is not None and not self._polling:
            self.check()

    def finished(self) -> None:
        """The run is over (only its exit remains): later signals are absorbed like those after a raise."""
        self.raised = True

    # -- the handler -----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.requested is None:
            self.requested = signum
        if self.count >= FORCE_AFTER:
            # a bare write: the interrupted code may hold the lock of sys.stderr's buffer
            os.write(2, f"\n{signal.Signals(signum).name} again: stopping now, outputs may be incomplete\n".encode())
            os._exit(128 + signum)
        if self.raised or self._shielded:
            return
        if self._polling and self.count == 1:
            return
        self._raise()

    def _raise(self) -> None:
        self.raised = True
        raise Interrupted(self.requested or signal.SIGINT)


def installed() -> StopSignals | None:
    """The `StopSignals` handling SIGINT now, if any."""
    handler = signal.getsignal(signal.SIGINT)
    owner = getattr(handler, "__self__", None)
    return owner if isinstance(owner, StopSignals) else None


@contextlib.contextmanager
def stop_signals(polling: bool = False) -> Iterator[StopSignals]:
    """The process's `StopSignals` for this block: the one installed (by the `sipvis` command), else a new
    one installed for the block and restored after it. Outside the main thread without one installed,
    a `StopSignals` no signal reaches (Ctrl-C stays Python's KeyboardInterrupt).

    `polling`: the block calls `check()` between its steps (see `StopSignals.polling`).
    """
    stop = installed()
    owner = stop is None
    if stop is None:
        stop = StopSignals()
        stop.install()
    try:
        if polling:
            with stop.polling():
                yield stop
        else:
            yield stop
    finally:
        if owner:
            stop.restore()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Signals raise nothing in this block (outputs being finalised) when a `StopSignals` is installed;
    see `StopSignals.shielded`. Without one, a plain block."""
    stop = installed()
    if stop is None:
        yield
        return
    with stop.shielded():
        yield
