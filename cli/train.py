"""`sipvis train CONFIG [section.key=value ...]`: train from a TOML config (one process, or many via torchrun)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train", context_settings={"ignore_unknown_options": False})
@click.argument("config", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--resume", "resume", is_flag=False, flag_value="last", default=None, metavar="[CKPT]",
              help="Continue a run: from OUTPUT/checkpoints/last.pt, or from the training checkpoint given.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Output folder (overrides train.output).")
@click.option("--device", default=None, help="auto, cpu, cuda (overrides train.device).")
@click.option("--quiet", "-q", is_flag=True, help="No live view (the JSONL log is still written).")
def command(config: Path, overrides: tuple[str, ...], resume: str | None, output: Path | None, device: str | None,
            quiet: bool) -> None:
    """Train SipMask-VIS as CONFIG says; OVERRIDES change single values, e.g. train.lr=0.01.

    \b
    Examples:
      sipvis train configs/synth_demo.toml
      sipvis train configs/ytvis_r50_1x.toml data.root=data/youtube_vis train.batch_size=4
      sipvis train configs/synth_demo.toml --resume
      torchrun --nproc_per_node 4 -m sipvis.cli.train configs/ytvis_r50_1x.toml

    Writes OUTPUT/log.jsonl, OUTPUT/checkpoints/{last,epoch_N}.pt and the final weights
    OUTPUT/model.safetensors (+ .json), usable as --weights.
    """
    from sipvis.training import load_config, train

    extra = list(overrides)
    if output is not None:
        extra.append(f'train.output="{output.as_posix()}"')
    if device is not None:
        extra.append(f'train.device="{device}"')
    run = load_config(config, extra, output_from_name=True)
    result = train(run, resume=resume, progress=None if quiet else LiveView())
    if result.weights is not None and not quiet:
        click.echo(f"Trained {result.iterations} iterations; weights: {result.weights} "
                   f"(use --weights {result.weights})")
        if result.last_val is not None:
            click.echo(f"Validation mask AP {result.last_val['AP']:.4f} (AP50 {result.last_val['AP50']:.4f})")


class LiveView:
    """The live view of a run (rank 0): a progress bar with loss terms, lr, it/s and ETA."""

    def __init__(self) -> None:
        self.progress = None

    def start(self, total: int, done: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), transient=False)
        self.task = self.progress.add_task("train", total=total, completed=done, speed="", stats="")
        self.progress.start()

    def step(self, iteration: int, window) -> None:
        if self.progress is None:
            return
        if window is None:
            self.progress.update(self.task, completed=iteration, speed="")
            return
        avg = window.losses
        terms = "  ".join(f"{k[5:] if k.startswith('loss_') else k} {v:.3f}"
                          for k, v in avg.items() if k != "match_acc")
        self.progress.update(self.task, completed=iteration, speed=f"{window.speed:.2f} it/s",
                             stats=f"lr {window.lr:.2e}  {terms}" + (f"  acc {avg['match_acc']:.0f}%"
                                                                    if "match_acc" in avg else ""))

    def validated(self, iteration: int, metrics: dict) -> None:
        self._print(f"validation @ {iteration}: mask AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}")

    def interrupted(self, iteration: int, checkpoint: Path) -> None:
        self._print(f"Interrupted at iteration {iteration}; saved {checkpoint} (continue with --resume)")

    def _print(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


if __name__ == "__main__":  # `torchrun ... -m sipvis.cli.train CONFIG ...`: the same as `sipvis train CONFIG ...`
    import sys

    from sipvis.cli import main  # one place for `Error:` lines, exit codes and stop signals

    sys.argv[1:1] = ["train"]
    main()
