"""The progress bars the commands draw on stderr (rich), built from the library's progress callbacks.

The library (sipvis/) only calls back: `advance(frames)` in `track`, `progress(done, total)` in
`synth`, `progress(label, done, total)` in downloads. Everything drawn is here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)
from rich.text import Text


class FpsColumn(ProgressColumn):
    """Frames per second of the task (its speed)."""

    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:.1f} fps")


def frames_bar(console: Console, quiet: bool) -> Callable:
    """For `sipvis.engine.track_run.track_inputs(progress=)`: one bar per input (name, frames done of
    expected, fps, elapsed, remaining), left on screen when the input is done."""

    @contextlib.contextmanager
    def progress(source) -> Iterator[Callable[[int], None]]:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   FpsColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
            task = bar.add_task(source.name, total=source.expected_frames)
            yield lambda n: bar.advance(task, n)

    return progress


@contextlib.contextmanager
def count_bar(description: str, unit: str, enabled: bool = True) -> Iterator[Callable[[int, int | None], None]]:
    """A bar of `description`, done of total `unit` (e.g. "videos"), elapsed, remaining; yields the
    `progress(done, total)` callback to hand to the library."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not enabled) as bar:
        task = bar.add_task(description, total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield progress


class DownloadBars:
    """`progress(label, done, total)` for `sipvis.weights` downloads: a bar per file (label, bytes, speed,
    remaining), started at the first call (when the server answers, so a failed connection draws no
    empty bar). Use as a context manager: the bars stop when it ends."""

    def __init__(self, enabled: bool = True) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn())
        self.bar = Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=False)
        self.tasks: dict[str, int] = {}

    def __call__(self, label: str, done: int, total: int | None) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.bar.add_task(label, total=total)
            self.bar.start()
        self.bar.update(self.tasks[label], total=total, completed=done)

    def __enter__(self) -> "DownloadBars":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
