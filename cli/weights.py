"""`sipvis weights ...`: the checkpoint registry and cache (list, download), conversion and inspection.

One function per subcommand; the work is done by `sipvis.weights`.
"""

from __future__ import annotations

from pathlib import Path

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
    from sipvis.cli._progress import DownloadBars

    spec = name or weights.default_weights_name()
    with DownloadBars(enabled=not quiet) as bars:
        resolved = weights.download_weights(spec, force=force, progress=bars)
    if not quiet:
        digest = weights.recorded_sha256(resolved.path) or "-"
        click.echo(f"{spec}: {_human_size(_file_size(resolved.path))}, format {resolved.format}, sha256 {digest}",
                   err=True)
    click.echo(str(resolved.path))


@command.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--classes", default="source", show_default=True,
              help="Class set of the converted model: 'source' (keep the checkpoint's), 'ytvis2019', 'coco', "
                   "a comma-separated list, or a text file with one name per line. Layers whose shape depends "
                   "on the classes are re-initialised when it differs from the checkpoint's.")
def convert_command(src: Path, dst: Path, classes: str) -> None:
    """Convert an original SipMask (mmdetection v1) checkpoint SRC.pth into a sipvis checkpoint DST.

    Writes DST.safetensors and DST.json (model settings and class names). The nine official COCO image
    models (SipMask 800x1333, real-time 544x544, SipMask++) convert as image models, their family read from
    the keys; a COCO pre-training of SipMask-VIS (towers of 2 + 3 convs, no tracking branch) converts to
    SipMask-VIS with the missing tracking layers initialised and listed.
    """
    from dataclasses import replace

    from sipvis.checkpoint import convert_mmdet, infer_config, read_mmdet_checkpoint, rename_mmdet, save_checkpoint

    state, meta = read_mmdet_checkpoint(src)
    target = None
    if classes != "source":
        source, names = infer_config(rename_mmdet(state)), _class_names(classes)
        # dataset category ids belong to the source's classes; other classes number label + 1
        target = replace(source, class_names=names, category_ids=source.category_ids if names == source.class_names
                         else ())
    cfg, converted, report = convert_mmdet(state, target)
    path = save_checkpoint(dst, cfg, converted, source=str(src))
    from sipvis.model.families import family_name

    click.echo(f"Converted {src} -> {path} (+ .json): ResNet-{cfg.depth} {cfg.style}, {cfg.num_classes} classes, "
               f"{len(converted)} tensors; {family_name(cfg)}")
    if report.reinitialised:
        click.echo(f"Initialised fresh (not in the checkpoint or class-dependent): {', '.join(report.reinitialised)}")


@command.command("info")
@click.argument("path")
def info_command(path: str) -> None:
    """Describe a checkpoint or an exported file (.onnx, .xml, .ts, .engine): format, architecture,
    classes, parameter count (checkpoints) or precision and input size (exports)."""
    from sipvis.runtime.choose import runtime_of_file

    if runtime_of_file(path):
        _describe_export(Path(path), runtime_of_file(path))
        return
    from sipvis.checkpoint import load_weights
    from sipvis.weights import resolve_weights

    resolved = resolve_weights(path, download=False)
    cfg, state = load_weights(path)
    n_params = sum(v.numel() for v in state.values())
    click.echo(f"path:       {resolved.path}")
    click.echo(f"format:     {resolved.format}")
    _describe_model(cfg)
    click.echo(f"parameters: {n_params / 1e6:.2f} M in {len(state)} tensors")
    click.echo(f"classes:    {cfg.num_classes}: {', '.join(cfg.class_names)}")


def _describe_export(path: Path, runtime: str) -> None:
    """The metadata an exported file carries."""
    from sipvis.errors import SipvisError
    from sipvis.runtime.choose import exported_info

    if not path.is_file():
        raise SipvisError(f"weights file not found: {path}")
    info = exported_info(path, runtime)
    size = "dynamic (any frame size)" if info.input_size is None else \
        f"fixed {info.input_size[1]}x{info.input_size[0]} (WxH, padded)"
    click.echo(f"path:       {path}")
    click.echo(f"format:     {runtime} export, {info.precision}"
               + (" (opt-in, outside the fp32 parity tolerance)" if info.precision != "fp32" else ""))
    _describe_model(info.cfg)
    click.echo(f"input size: {size}")
    click.echo(f"made with:  {', '.join(f'{k} {v}' for k, v in info.versions.items())}")
    click.echo(f"classes:    {info.cfg.num_classes}: {', '.join(info.cfg.class_names)}")


def _describe_model(cfg) -> None:
    """The model, family and tracking lines of `weights info`."""
    from sipvis.model.families import family_name

    if cfg.task == "vis":
        click.echo(f"model:      SipMask-VIS, ResNet-{cfg.depth} ({cfg.style} style), input up to "
                   f"{cfg.max_size[0]}x{cfg.max_size[1]}")
    else:
        how = "resized to exactly" if cfg.resize == "fixed" else "keep-ratio resize to fit"
        click.echo(f"model:      SipMask image model, ResNet-{cfg.depth} ({cfg.style} style), input {how} "
                   f"{cfg.max_size[0]}x{cfg.max_size[1]}")
    click.echo(f"family:     {family_name(cfg)}")
    tracking = ("tracking branch (--tracker original or robust)" if cfg.has_tracking_branch
                else "no tracking branch: videos are tracked by box/mask overlap and class (robust tracker)")
    click.echo(f"tracking:   {tracking}")


def _class_names(spec: str) -> tuple[str, ...]:
    from sipvis.errors import SipvisError
    from sipvis.model.config import COCO_CLASSES, YTVIS_2019_CLASSES

    named = {"ytvis2019": YTVIS_2019_CLASSES, "coco": COCO_CLASSES}
    if spec in named:
        return named[spec]
    path = Path(spec)
    if path.is_file():
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    else:
        names = tuple(n.strip() for n in spec.split(",") if n.strip())
    if not names:
        raise SipvisError(f"--classes {spec!r} names no class")
    return names


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
