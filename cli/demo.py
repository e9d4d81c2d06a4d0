"""`sipvis demo`: a fully offline first run — a synthetic clip tracked with the bundled demo weights."""

from __future__ import annotations

from pathlib import Path

import click

from sipvis.cli._model_options import runtime_option, threads_option, tracker_option
from sipvis.cli._options import COUNT, SCORE


@click.command("demo")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("sipvis-demo"),
              show_default=True, help="Folder for the clip and the results.")
@click.option("--seed", default=7, show_default=True, type=int, help="Which synthetic clip to make.")
@click.option("--frames", default=48, show_default=True, type=COUNT, help="Length of the clip.")
@click.option("--weights", default="demo", show_default=True, help="Weights to run (registry name, path or URL).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--score-thr", default=0.3, show_default=True, type=SCORE,
              help="Minimum detection score shown and tracked (the model's own default, 0.03, suits AP).")
@tracker_option()
@runtime_option()
@threads_option()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(out_dir: Path, seed: int, frames: int, weights: str, device: str, score_thr: float,
            tracker: str, quiet: bool) -> None:
    """Make a synthetic clip (moving textured shapes), segment and track it with the demo model, and
    write an annotated mp4 and YouTube-VIS JSON. Needs no network."""
    from sipvis.data.synth import DEFAULT_CLASSES, SHAPES, SynthConfig, render_video, write_mp4
    from sipvis.cli._model_options import build_segmenter
    from sipvis.errors import SipvisError
    from sipvis.engine.pipeline import OutputFilter
    from sipvis.cli.track import run_all
    from sipvis.io.source import FrameRange

    segmenter, _ = build_segmenter(weights, device, "auto", score_thr=score_thr, progress=not quiet)
    names = segmenter.class_names
    classes = names if all(n in SHAPES for n in names) else DEFAULT_CLASSES  # another model: any shapes
    cfg = SynthConfig(videos=1, frames=frames, seed=seed, split="demo", classes=classes, width=640, height=360)
    clip_frames, _ = render_video(cfg, 0)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SipvisError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    clip = out_dir / "synthetic_clip.mp4"
    write_mp4(clip, clip_frames, cfg.fps)
    outputs = (str(out_dir / "tracked.mp4"), str(out_dir / "tracked.json"))
    run_all([str(clip)], outputs, (), segmenter, OutputFilter(), FrameRange(), None, trails=True, quiet=quiet,
            tracker=tracker)
    click.echo(f"input clip:      {clip}")
    click.echo(f"annotated video: {outputs[0]}")
    click.echo(f"results JSON:    {outputs[1]}")
