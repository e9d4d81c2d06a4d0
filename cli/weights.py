"""`sipvis weights ...`: the checkpoint registry and cache (list, download).

One function per subcommand; the work is done by `sipvis.weights`.
"""

from __future__ import annotations

import click


@click.group("weights")
def command() -> None:
    """List, download, convert and inspect checkpoints.

    Weights are cached in $SIPVIS_HOME/weights (default: the user cache directory).
    """


@command.command("list")
def list_command() -> None:
    """Show the known checkpoints, their size and where they are cached."""
    from rich.console import Console
    from rich.table import Table

    from sipvis import weights

    entries = weights.registry()
    console = Console()
    console.print(f"Cache: {weights.weights_dir()}  (set SIPVIS_HOME to move it)", highlight=False)
    table = Table(show_lines=False)
    table.add_column("Name", no_wrap=True)
    table.add_column("Description")
    table.add_column("Size", justify="right", no_wrap=True)
    table.add_column("Cached", overflow="fold")
    for entry in entries:
        path = entry.local_path()
        present = path.exists()
        if present:
            where = str(path)
        elif entry.is_local:
            where = "not built yet"
        else:
            where = "no"
        size = _file_size(path) if present else entry.size
        name = f"{entry.name} (default)" if entry.default else entry.name
        table.add_row(name, entry.description, _human_size(size), where)
    console.print(table)


@command.command("download")
@click.argument("name", required=False)
@click.option("--force", is_flag=True, help="Download again even if the file is already in the cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
def download_command(name: str | None, force: bool, quiet: bool) -> None:
    """Download NAME (a registry name or an http(s) URL) into the cache; print its path.

    Without NAME, the default checkpoint. Interrupted downloads resume where they stopped.
    """
    from sipvis import weights

    spec = name or weights.default_weights_name()
    resolved = weights.download_weights(spec, force=force, progress=not quiet)
    if not quiet:
        digest = weights.recorded_sha256(resolved.path) or "-"
        click.echo(f"{spec}: {_human_size(_file_size(resolved.path))}, format {resolved.format}, sha256 {digest}",
                   err=True)
    click.echo(str(resolved.path))


def _file_size(path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _human_size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "?"
