"""`sipvis eval`: score a YouTube-VIS results file or MOTS folders, or split a GT file for local scoring.

Modes (one per function below, dispatched by `command`):

* ``--gt ann.json --results res.json``: official YouTube-VIS AP/AR and, with ``--metrics``, TrackEval's
  HOTA / CLEAR / Identity (`score_results_file`).
* ``--format kitti-mots|mots-challenge --gt GT_DIR --results DIR``: the tracking metrics of MOTS text
  files (`score_mots_folders`).
* ``--make-split --gt train.json --out DIR``: seeded train/holdout annotation files (`run_make_split`).
* ``--dataset youtube-vis SPLIT --data-root DIR [--weights ...]``: run the model over a split, write
  results.json + a CodaLab results.zip, and score it when the split has annotations (`run_dataset`).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click

from sipvis.cli._model_options import build_segmenter, model_options, tracker_option
from sipvis.cli._options import COUNT, FRACTION, split_commas
from sipvis.errors import SipvisError

_STAT_LABELS = (
    ("AP", "Average Precision  IoU=0.50:0.95  area=all     maxDets=100"),
    ("AP50", "Average Precision  IoU=0.50       area=all     maxDets=100"),
    ("AP75", "Average Precision  IoU=0.75       area=all     maxDets=100"),
    ("APs", "Average Precision  IoU=0.50:0.95  area=small   maxDets=100"),
    ("APm", "Average Precision  IoU=0.50:0.95  area=medium  maxDets=100"),
    ("APl", "Average Precision  IoU=0.50:0.95  area=large   maxDets=100"),
    ("AR1", "Average Recall     IoU=0.50:0.95  area=all     maxDets=1"),
    ("AR10", "Average Recall     IoU=0.50:0.95  area=all     maxDets=10"),
    ("AR100", "Average Recall     IoU=0.50:0.95  area=all     maxDets=100"),
    ("ARs", "Average Recall     IoU=0.50:0.95  area=small   maxDets=100"),
    ("ARm", "Average Recall     IoU=0.50:0.95  area=medium  maxDets=100"),
    ("ARl", "Average Recall     IoU=0.50:0.95  area=large   maxDets=100"),
)
_MAX_WARNINGS_PER_KIND = 3
_MOTS_FORMATS = ("kitti-mots", "mots-challenge")


@click.command("eval")
@click.option("--gt", "gt_path", type=click.Path(path_type=Path),
              help="Ground-truth annotation file (YouTube-VIS format), or folder (--format kitti-mots|mots-challenge).")
@click.option("--results", "results_path", type=click.Path(path_type=Path),
              help="Results file: a JSON list of {video_id, category_id, score, segmentations}; "
                   "for MOTS formats a folder of <seq>.txt files.")
@click.option("--metrics", "metrics_text", default=None,
              help="Comma list of ap (YouTube-VIS AP/AR), hota, clear (MOTA/MOTSA, IDSW), identity (IDF1); "
                   "the tracking metrics equal TrackEval's.  [default: ap; hota,clear,identity for MOTS formats]")
@click.option("--format", "fmt", type=click.Choice(["youtube-vis", *_MOTS_FORMATS, "coco"]), default="youtube-vis",
              show_default=True, help="Input format of --gt/--results (MOTS formats: tracking metrics only; "
                                      "coco: COCO box and mask AP of image results).")
@click.option("--split", "mots_split", default=None,
              help="MOTS split (seqmap name) to score [default: val for kitti-mots, train for mots-challenge].")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Also write the metrics to this JSON file.")
@click.option("--iou-type", type=click.Choice(["segm", "bbox"]), default=None,
              help="segm: official mask AP; bbox: spatio-temporal box AP (sipvis extension).  [default: segm; "
                   "--format coco: both]")
@click.option("--strict", is_flag=True,
              help="Fail on any problem in the results (size mismatch, frame count, ...) instead of warning.")
@click.option("--drop-unknown-videos", is_flag=True,
              help="Drop results whose video is not in the GT (with a warning) instead of failing.")
@click.option("--make-split", is_flag=True,
              help="Instead of scoring: split --gt into OUT/train.json and OUT/holdout.json by video.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Output folder: --make-split writes train.json/holdout.json there; --dataset writes "
                   "results.json, results.zip and per-video files there (default runs/eval/SPLIT).")
@click.option("--ratio", type=FRACTION, default=0.1, show_default=True,
              help="Holdout fraction of the videos (--make-split).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (--make-split).")
@click.option("--dataset", type=click.Choice(["youtube-vis", "coco"]), default=None,
              help="Run the model over SPLIT of a dataset (YouTube-VIS layout, or COCO's: annotations/"
                   "instances_SPLIT.json + SPLIT/), then score it.")
@click.argument("split", required=False)
@click.option("--year", type=click.Choice(["2019", "2021"]), default="2019", show_default=True,
              help="YouTube-VIS edition (default data root data/youtube-vis-YEAR).")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Dataset folder holding <split>/JPEGImages and annotations/ (--dataset; coco: default data/coco).")
@click.option("--subset", type=COUNT, default=None, help="Only the first N videos (coco: images) of the split.")
@model_options(max_dets=False)
@click.option("--quiet", is_flag=True, help="No progress bar and no tables (warnings still go to stderr).")
@tracker_option()
def command(
    gt_path: Path | None,
    results_path: Path | None,
    metrics_text: str | None,
    fmt: str,
    mots_split: str | None,
    json_path: Path | None,
    iou_type: str,
    strict: bool,
    drop_unknown_videos: bool,
    make_split: bool,
    out_dir: Path | None,
    ratio: float,
    seed: int,
    dataset: str | None,
    split: str | None,
    year: str,
    data_root: Path | None,
    subset: int | None,
    weights: str | None,
    device: str,
    precision: str,
    batch: int,
    class_filter: tuple[str, ...],
    score_thr: float | None,
    quiet: bool,
    tracker: str = "original",
) -> None:
    """Score YouTube-VIS (or COCO) results with the official AP/AR, or make a local train/holdout split.

    The 12 figures equal those of the official evaluator (youtubevos/cocoapi), which the YouTube-VIS
    CodaLab server runs; -1 means undefined (no ground truth in that area range). --metrics hota,clear,identity
    adds TrackEval's HOTA, CLEAR (MOTA) and Identity (IDF1), also for KITTI-MOTS and MOTSChallenge folders.

    \b
    Examples:
      sipvis eval --gt holdout.json --results results.json
      sipvis eval --gt holdout.json --results results.json --json metrics.json --quiet
      sipvis eval --gt holdout.json --results results.json --metrics ap,hota,clear,identity
      sipvis eval --format kitti-mots --gt kitti_mots/ --results tracks/ --metrics hota,clear,identity
      sipvis eval --make-split --gt train.json --out splits/ --ratio 0.1 --seed 0
      sipvis eval --dataset youtube-vis valid --data-root data/youtube-vis-2019 --out runs/valid
      sipvis eval --format coco --gt instances_val2017.json --results results.json
      sipvis eval --dataset coco val2017 --data-root data/coco --weights sipmask-r50-coco
    """
    model = dict(weights=weights, device=device, precision=precision, batch=batch, score_thr=score_thr,
                 class_filter=class_filter, tracker=tracker)
    if fmt == "coco" or dataset == "coco":
        return _run_coco(click.get_current_context().params, model)
    metrics = _check_metric_options(metrics_text, fmt, mots_split, iou_type or "segm", strict or drop_unknown_videos)
    if dataset is not None:
        if split is None:
            raise click.UsageError("--dataset youtube-vis needs a SPLIT, e.g. `sipvis eval --dataset youtube-vis valid`")
        if fmt != "youtube-vis":
            raise click.UsageError(f"--format {fmt} does not go with --dataset youtube-vis")
        run_dataset(split, data_root or Path(f"data/youtube-vis-{year}"), out_dir or Path("runs") / "eval" / split,
                    subset=subset, json_path=json_path, quiet=quiet, metrics=metrics, model=model)
        return
    if split is not None:
        raise click.UsageError(f"unexpected argument {split!r}: a SPLIT goes with --dataset youtube-vis")
    if make_split:
        if results_path is not None or json_path is not None or metrics != ("ap",) or fmt != "youtube-vis":
            raise click.UsageError("--make-split takes --gt, --out, --ratio and --seed only")
        if gt_path is None or out_dir is None:
            raise click.UsageError("--make-split needs --gt FILE and --out DIR")
        run_make_split(gt_path, out_dir, ratio=ratio, seed=seed, quiet=quiet)
        return
    if fmt in _MOTS_FORMATS:
        if gt_path is None or results_path is None:
            raise click.UsageError(f"--format {fmt} needs --gt GT_DIR and --results DIR")
        score_mots_folders(fmt, gt_path, results_path, split=mots_split, metrics=metrics, json_path=json_path,
                           quiet=quiet)
        return
    if gt_path is None or results_path is None:
        raise click.UsageError("give --gt ANNOTATIONS.json and --results RESULTS.json "
                               "(or --make-split --gt FILE --out DIR)")
    score_results_file(
        gt_path, results_path, json_path=json_path, iou_type=iou_type or "segm", strict=strict,
        unknown_videos="drop" if drop_unknown_videos else "error", quiet=quiet, metrics=metrics,
    )


def _check_metric_options(text: str | None, fmt: str, mots_split: str | None, iou_type: str,
                          youtube_vis_flags: bool) -> tuple[str, ...]:
    """--metrics as a tuple ("ap" first, then the tracking metrics in canonical order); the options that
    do not go together are usage errors, an unknown metric a one-line error."""
    from sipvis.evaluation.tracking import METRICS, check_metrics

    if fmt not in _MOTS_FORMATS and mots_split is not None:
        raise click.UsageError("--split goes with --format kitti-mots or mots-challenge")
    if fmt in _MOTS_FORMATS and youtube_vis_flags:
        raise click.UsageError(f"--strict and --drop-unknown-videos apply to YouTube-VIS results, not --format {fmt}")
    if text is None:
        return METRICS if fmt in _MOTS_FORMATS else ("ap",)
    names = split_commas((text,))
    unknown = [n for n in names if n != "ap" and n not in METRICS]
    if unknown or not names:
        raise SipvisError(f"--metrics: unknown metric {unknown[0] if unknown else text!r} "
                          f"(choose from ap, {', '.join(METRICS)})")
    metrics = (("ap",) if "ap" in names else ()) + check_metrics(n for n in names if n != "ap")
    if fmt in _MOTS_FORMATS and "ap" in metrics:
        raise click.UsageError(f"--format {fmt} has no AP: choose from --metrics {','.join(METRICS)}")
    if iou_type != "segm" and metrics != ("ap",):
        raise click.UsageError("the tracking metrics (hota, clear, identity) need --iou-type segm")
    return metrics


def run_dataset(split: str, data_root: Path, out_dir: Path, *, subset: int | None, json_path: Path | None,
                quiet: bool, model: dict, metrics: tuple[str, ...] = ("ap",)) -> None:
    """Run the model over a split (this rank's share under torchrun), gather, zip, and score if possible."""
    from sipvis.data.ytvis import find_split
    from sipvis.engine import dataset_run as dr
    from sipvis.engine.distributed import DistInfo

    the_split = dr.Split.load(find_split(data_root, split), subset)
    info = DistInfo.from_env()
    segmenter = _rank_segmenter(model, info, quiet)
    with _SplitView(quiet, show_bars=not quiet and info.main) as view:
        results = dr.run_dataset(the_split, segmenter, out_dir, info, progress=view,
                                 tracker=model.get("tracker", "original"))
    if results is None:  # not the first rank: it gathers and scores
        return
    click.echo(f"results: {results}\nCodaLab upload: {out_dir / 'results.zip'}", err=True)
    if not the_split.has_ground_truth:
        click.echo(f"{the_split.files.ann_file} has no annotations: upload the zip to score it", err=True)
        return
    score_results_file(dr.ground_truth_file(the_split, out_dir), results, json_path=json_path, quiet=quiet,
                       metrics=metrics)


def _rank_segmenter(model: dict, info, quiet: bool, default_weights: str | None = None):
    """The `Segmenter` of this rank (its device under torchrun) for the model options of a dataset run;
    `default_weights` when `--weights` is not given (None: the registry's default video model)."""
    from sipvis.engine.distributed import rank_device

    segmenter, _ = build_segmenter(model["weights"] or default_weights, rank_device(model["device"], info),
                                   model["precision"], model["batch"], model["score_thr"], None,
                                   model["class_filter"], progress=not quiet and info.main)
    return segmenter


class _SplitView:
    """Progress of a split run on stderr: videos and frames bars (first rank), the resume note."""

    def __init__(self, quiet: bool, show_bars: bool, units: tuple[str, str] = ("videos", "frames")) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.console = Console(stderr=True, quiet=quiet)
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn()]
        self.bars = Progress(*columns, console=self.console, disable=not show_bars)
        self.units = units

    def __enter__(self) -> "_SplitView":
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def resumed(self, done: int, total: int) -> None:
        self.console.print(f"resuming: {done} of {total} {self.units[0]} already done", highlight=False)

    def start(self, videos: int, frames: int) -> None:
        self.bars.start()
        self.videos = self.bars.add_task(self.units[0], total=videos)
        self.frames_task = self.bars.add_task(self.units[1], total=frames)

    def frames(self, n: int) -> None:
        self.bars.advance(self.frames_task, n)

    def video_done(self) -> None:
        self.bars.advance(self.videos)


def score_results_file(
    gt_path: Path,
    results_path: Path,
    *,
    json_path: Path | None = None,
    iou_type: str = "segm",
    strict: bool = False,
    unknown_videos: str = "error",
    quiet: bool = False,
    metrics: tuple[str, ...] = ("ap",),
) -> dict:
    """Evaluate `results_path` against `gt_path`, print the tables, optionally write `json_path`.

    `metrics`: "ap" and/or the tracking metrics "hota", "clear", "identity" (checked by the caller).
    Returns the metrics dict: `EvalResult.as_dict()` when AP was asked, plus ``"tracking"`` (the
    `evaluate_tracking_files` dict) when a tracking metric was. Problems raise `SipvisError` (one line).
    """
    from sipvis.evaluation import evaluate, evaluate_tracking_files
    from sipvis.evaluation.schema import IssueKind, parse_gt, parse_results
    from sipvis.io.files import load_json

    for what, path in (("--gt", gt_path), ("--results", results_path)):
        if not path.exists():
            raise SipvisError(f"{what}: file not found: {path}")
    gt_data = load_json(gt_path, "ground-truth")
    res_data = load_json(results_path, "results")
    gt = parse_gt(gt_data, iou_type)  # type: ignore[arg-type]
    # check first, so every problem can be listed (grouped) before failing on the first error
    parsed = parse_results(gt, res_data, iou_type, unknown_videos=unknown_videos)  # type: ignore[arg-type]
    issues = parsed.issues
    errors = [i for i in issues if i.level == "error" or strict]
    if errors:
        raise SipvisError(_one_line(errors))
    _print_issues([i for i in gt.warnings + issues if i.level == "warning"], "Warning")

    out: dict = {}
    result = None
    if "ap" in metrics:
        result = _evaluate_with_progress(evaluate, gt, parsed, iou_type, quiet)
        for issue in result.issues:
            if issue.kind is IssueKind.EMPTY_UNION:  # the only warnings not already printed from the check
                click.echo(f"Warning: {issue.message}", err=True)
        out = result.as_dict()
    tracking = tuple(m for m in metrics if m != "ap")
    if tracking:
        with _progress_bar("scoring tracks", quiet) as progress:
            # the files are parsed once: the tracking metrics reuse the checked GT and results
            out["tracking"] = evaluate_tracking_files("youtube-vis", gt_data, res_data, metrics=tracking,
                                                      parsed=(gt, parsed), progress=progress)
    if json_path is not None:
        _write_metrics(out, json_path)
    if not quiet:
        if result is not None:
            _print_tables(result, gt, None if tracking else json_path)
        if tracking:
            _print_tracking_table(out["tracking"], json_path)
    return out


def score_mots_folders(fmt: str, gt_dir: Path, results_dir: Path, *, split: str | None = None,
                       metrics: tuple[str, ...] = ("hota", "clear", "identity"), json_path: Path | None = None,
                       quiet: bool = False) -> dict:
    """HOTA / CLEAR / Identity of a folder of MOTS ``<seq>.txt`` files against a KITTI-MOTS or MOTSChallenge
    GT folder; prints the table, optionally writes ``{"tracking": ...}`` to `json_path`. Returns that dict."""
    from sipvis.evaluation import evaluate_tracking_files

    with _progress_bar("scoring sequences", quiet) as progress:
        out = {"tracking": evaluate_tracking_files(fmt, gt_dir, results_dir, split=split, metrics=metrics,
                                                   progress=progress)}
    if json_path is not None:
        _write_metrics(out, json_path)
    if not quiet:
        _print_tracking_table(out["tracking"], json_path)
    return out


def _evaluate_with_progress(evaluate, gt, parsed, iou_type, quiet):
    if quiet:
        return evaluate(gt, parsed, iou_type)
    with _progress_bar("scoring videos", quiet, total=len(gt.video_ids)) as progress:
        return evaluate(gt, parsed, iou_type, progress=progress)


@contextmanager
def _progress_bar(label: str, quiet: bool,
                  total: int | None = None) -> Iterator[Callable[[int, int], None] | None]:
    """A transient stderr bar; yields the `progress(done, total)` callback for the library (None when quiet)."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("eval", total=total)
        yield lambda done, of: bar.update(task, completed=done, total=of)


def _one_line(errors: list) -> str:
    """The first problem, plus how many more of each kind: a single line, as CLI errors are."""
    rest: dict[str, int] = defaultdict(int)
    for issue in errors[1:]:
        rest[issue.kind] += 1
    if not rest:
        return errors[0].message
    more = ", ".join(f"{n} {kind}" for kind, n in rest.items())
    return f"{errors[0].message} (and {len(errors) - 1} more: {more})"


def _print_issues(issues: list, label: str) -> None:
    """One stderr line per issue, at most a few per kind, then a count of the rest."""
    shown: dict[str, int] = defaultdict(int)
    for issue in issues:
        shown[issue.kind] += 1
        if shown[issue.kind] <= _MAX_WARNINGS_PER_KIND:
            click.echo(f"{label}: {issue.message}", err=True)
    for kind, n in shown.items():
        if n > _MAX_WARNINGS_PER_KIND:
            click.echo(f"{label}: ... and {n - _MAX_WARNINGS_PER_KIND} more like this ({kind})", err=True)


def _write_metrics(metrics: dict, path: Path) -> None:
    import json

    from sipvis.io.files import write_text_atomic

    write_text_atomic(path, json.dumps(metrics, indent=2) + "\n")


def _fmt(v: float) -> str:
    return "n/a" if v == -1 else f"{v:.3f}"


def _print_tables(result, gt, json_path: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    main = Table(title=f"YouTube-VIS {result.iou_type} evaluation", title_justify="left")
    main.add_column("metric")
    main.add_column("setting")
    main.add_column("value", justify="right")
    for (name, label), value in zip(_STAT_LABELS, result.stats):
        main.add_row(name, label, _fmt(value))
    console.print(main)
    per = Table(title="Per-class AP", title_justify="left")
    per.add_column("id", justify="right")
    per.add_column("category")
    per.add_column("AP@[.50:.95]", justify="right")
    for cat_id, (name, ap) in zip(result.category_ids, result.per_class.items()):
        per.add_row(str(cat_id), name, _fmt(ap))
    console.print(per)
    if any(v == -1 for v in result.stats) or any(v == -1 for v in result.per_class.values()):
        console.print("n/a: undefined (no ground truth there); -1 in --json, as official")
    if json_path is not None:
        console.print(f"Metrics written to {json_path}")


def _print_tracking_table(track: dict, json_path: Path | None) -> None:
    """The compact table of `format_tracking_table` (HOTA, DetA, AssA, MOTA/MOTSA, IDSW, IDF1)."""
    from rich.console import Console
    from rich.table import Table

    from sipvis.evaluation import format_tracking_table

    console = Console()
    header, *rows = format_tracking_table(track)
    table = Table(title=f"Tracking metrics ({track['format']}, as TrackEval)", title_justify="left")
    table.add_column(header[0])
    for name in header[1:]:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if json_path is not None:
        console.print(f"Metrics written to {json_path}")


def run_make_split(gt_path: Path, out_dir: Path, *, ratio: float = 0.1, seed: int = 0, quiet: bool = False) -> None:
    """Write OUT/train.json and OUT/holdout.json (seeded split by video) and say what was written."""
    from sipvis.evaluation import make_split

    if not gt_path.exists():
        raise SipvisError(f"--gt: file not found: {gt_path}")
    res = make_split(gt_path, out_dir, ratio=ratio, seed=seed)
    if not quiet:
        click.echo(f"Wrote {res.train_path} ({len(res.train_videos)} videos, {res.n_train_annotations} annotations)")
        click.echo(f"Wrote {res.holdout_path} ({len(res.holdout_videos)} videos, "
                   f"{res.n_holdout_annotations} annotations)")
        click.echo(f"Score a model's results on the holdout with: sipvis eval --gt {res.holdout_path} "
                   "--results results.json")


# ------------------------------------------------------------------------------ COCO (image models)


def _run_coco(params: dict, model: dict) -> None:
    """`--format coco` (score a results file) and `--dataset coco SPLIT` (run an image model over a split);
    `params` are the command's option values."""
    gt_path, results_path, json_path, iou_type, quiet, dataset, split, data_root, out_dir, subset = (
        params[k] for k in ("gt_path", "results_path", "json_path", "iou_type", "quiet", "dataset", "split",
                            "data_root", "out_dir", "subset"))
    if any(params[k] for k in ("metrics_text", "mots_split", "strict", "drop_unknown_videos", "make_split")):
        raise click.UsageError("--metrics, --split, --strict, --drop-unknown-videos and --make-split do not "
                               "apply to COCO")
    iou_types = (iou_type,) if iou_type else None
    if dataset == "coco":
        if split is None:
            raise click.UsageError("--dataset coco needs a SPLIT, e.g. `sipvis eval --dataset coco val2017`")
        if gt_path is not None or results_path is not None:
            raise click.UsageError("--dataset coco reads its annotations from --data-root; drop --gt/--results")
        run_coco_dataset(split, data_root or Path("data/coco"), out_dir or Path("runs") / "eval" / split,
                         subset=subset, json_path=json_path, quiet=quiet, model=model, iou_types=iou_types)
        return
    if dataset is not None or split is not None:
        raise click.UsageError("--format coco scores a results file: give --gt and --results (or --dataset coco SPLIT)")
    if gt_path is None or results_path is None:
        raise click.UsageError("--format coco needs --gt instances.json and --results results.json")
    score_coco_file(gt_path, results_path, json_path=json_path, iou_types=iou_types, quiet=quiet)


def run_coco_dataset(split: str, data_root: Path, out_dir: Path, *, subset: int | None, json_path: Path | None,
                     quiet: bool, model: dict, iou_types: tuple[str, ...] | None = None) -> None:
    """Run an image model over a COCO split (this rank's share under torchrun), gather, and score."""
    from sipvis.engine import dataset_run as dr
    from sipvis.engine.distributed import DistInfo
    from sipvis.engine.segment_run import DEFAULT_IMAGE_WEIGHTS, check_image_model

    the_split = dr.CocoSplit.find(data_root, split, subset)
    info = DistInfo.from_env()
    segmenter = _rank_segmenter(model, info, quiet, DEFAULT_IMAGE_WEIGHTS)
    check_image_model(segmenter)
    with _SplitView(quiet, show_bars=not quiet and info.main, units=("chunks", "images")) as view:
        results = dr.run_coco_dataset(the_split, segmenter, out_dir, info, progress=view)
    if results is None:  # not the first rank: it gathers and scores
        return
    click.echo(f"results: {results}", err=True)
    if not the_split.has_ground_truth:
        click.echo(f"{the_split.ann_file} has no annotations: nothing to score", err=True)
        return
    score_coco_file(the_split.ground_truth(), results, json_path=json_path, iou_types=iou_types, quiet=quiet)


def score_coco_file(gt: Path | dict, results: Path, *, json_path: Path | None = None,
                    iou_types: tuple[str, ...] | None = None, quiet: bool = False) -> dict:
    """COCO box/mask AP of `results` against `gt` (`sipvis.evaluation.coco`): prints the table, optionally
    writes `json_path` ({"bbox": {...}, "segm": {...}}, each with `stats` in COCOeval's order and
    `per_class`). Returns that dict."""
    from sipvis.evaluation.coco import evaluate_coco

    scored = evaluate_coco(gt, results, iou_types)  # pycocotools reports no progress: no bar
    for warning in next(iter(scored.values())).warnings:
        click.echo(f"Warning: {warning}", err=True)
    out = {iou_type: r.as_dict() for iou_type, r in scored.items()}
    if json_path is not None:
        _write_metrics(out, json_path)
    if not quiet:
        _print_coco_tables(scored, json_path)
    return out


def _print_coco_tables(scored: dict, json_path: Path | None) -> None:
    """One table of the 12 figures (a column per IoU type), one of per-class AP."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    main = Table(title="COCO evaluation (pycocotools COCOeval)", title_justify="left")
    main.add_column("metric")
    main.add_column("setting")
    for iou_type in scored:
        main.add_column(iou_type, justify="right")
    for i, (name, label) in enumerate(_STAT_LABELS):
        main.add_row(name, label, *(_fmt(r.stats[i]) for r in scored.values()))
    console.print(main)
    per = Table(title="Per-class AP@[.50:.95]", title_justify="left")
    per.add_column("id", justify="right")
    per.add_column("category")
    for iou_type in scored:
        per.add_column(iou_type, justify="right")
    first = next(iter(scored.values()))
    for k, (cat_id, name) in enumerate(zip(first.category_ids, first.per_class)):
        per.add_row(str(cat_id), name, *(_fmt(list(r.per_class.values())[k]) for r in scored.values()))
    console.print(per)
    if json_path is not None:
        console.print(f"Metrics written to {json_path}")
