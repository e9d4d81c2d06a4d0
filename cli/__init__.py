"""The `sipvis` command line: a click group whose subcommands live one per file in this package.

Subcommands are imported lazily so `sipvis --help` stays fast and a command's
heavy imports (torch, av) are paid only when that command runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import sys
import warnings

import click

from sipvis import SipvisError, __version__
from sipvis.engine.stop import Interrupted, StopSignals
from sipvis.engine.threads import passive_waits

# command name -> (module, one-line help shown by `sipvis --help` without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "track": ("sipvis.cli.track", "Segment and track objects in videos, folders, streams."),
    "weights": ("sipvis.cli.weights", "List, download, convert and inspect checkpoints."),
    "eval": ("sipvis.cli.eval", "Score YouTube-VIS, COCO or MOTS results (AP, HOTA, IDF1), or run a dataset split."),
    "synth": ("sipvis.cli.synth", "Write a synthetic YouTube-VIS-format dataset."),
    "train": ("sipvis.cli.train", "Train a model from a TOML config."),
    "demo": ("sipvis.cli.demo", "Offline demo: synthetic clip + bundled demo weights."),
    "bench": ("sipvis.cli.bench", "Measure the throughput of each pipeline stage."),
    "live": ("sipvis.cli.live", "Live segmentation of a camera or stream in a window."),
    "segment": ("sipvis.cli.segment", "Segment images (and video frames) with an image model: COCO JSON, pictures."),
    "export": ("sipvis.cli.export", "Export the network to ONNX, OpenVINO, TorchScript or TensorRT."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _) in COMMANDS.items() if _module_exists(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _module_exists(COMMANDS[name][0]):
            return None
        return importlib.import_module(COMMANDS[name][0]).command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SipvisError as exc:
            raise click.ClickException(str(exc)) from None


def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sipvis")
def cli() -> None:
    """sipvis: segment every object in a video, name it, and follow it across frames."""


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main() -> None:
    """The `sipvis` console script. Exit codes: 0 done, 1 an `Error:` line, 2 a usage error, 128 + N a
    stop signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; see `sipvis.engine.stop`)."""
    warnings.formatwarning = _format_warning  # one readable line, not the source line that warned
    passive_waits()  # before any command imports torch: its OpenMP pool reads the policy once
    stop = StopSignals()
    stop.install()  # SIGTERM and SIGHUP stop every command the way Ctrl-C does
    try:
        code = cli.main(prog_name="sipvis", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        interrupted = _interrupted(exc)
        click.echo("Interrupted." if interrupted.signum == signal.SIGINT else f"Interrupted ({interrupted.name}).",
                   err=True)
        sys.exit(interrupted.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    finally:
        stop.finished()  # a signal during the exit itself must not print a traceback
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted(exc: BaseException) -> Interrupted:
    """The stop signal behind `exc` (click wraps a KeyboardInterrupt in Abort); Ctrl-C if none is known."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        if isinstance(candidate, Interrupted):
            return candidate
    return Interrupted(signal.SIGINT)


__all__ = ["cli", "main"]
