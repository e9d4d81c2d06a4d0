"""`sipvis segment INPUT... -o OUT`: an image model (COCO) over images, folders, globs or videos (frame by
frame, no tracking): COCO results JSON, annotated images, instance PNGs."""

from __future__ import annotations

import click

from sipvis.cli._model_options import build_segmenter, model_options


@click.command("segment")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "outputs", multiple=True, required=True,
              help="results.json (COCO results) or a folder (annotated images + results.json). Repeatable.")
@click.option("--png", is_flag=True, help="Also write an instance-id PNG per image into OUT/instances/.")
@click.option("--gt", "gt_file", default=None,
              help="COCO annotation file whose 'images' give each input's image_id (matched by file name).")
@model_options()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def command(inputs, outputs, png, gt_file, weights, device, precision, batch, class_filter, score_thr, max_dets,
            quiet) -> None:
    """Segment every object in INPUTS (images, image folders, globs, videos) with an image model.

    Images get image_id 1..N in input order (a video's frames one each), or the ids of --gt.
    --weights defaults to sipmask-r50-coco-544 (real-time, 80 COCO classes).

    \b
    Examples:
      sipvis segment photo.jpg -o results.json --weights sipmask-r50-coco-544
      sipvis segment photos/ -o out/ --png --weights sipmask-r50-coco
      sipvis segment 'val2017/*.jpg' -o results.json --gt instances_val2017.json --weights sipmask-r50-coco
    """
    from rich.console import Console

    from sipvis.cli._progress import count_bar
    from sipvis.engine.segment_run import DEFAULT_IMAGE_WEIGHTS, check_image_model, image_ids_from_gt, list_inputs, \
        plan_outputs, segment_inputs

    plan = plan_outputs(outputs, png)
    items = list_inputs(inputs)
    image_ids = image_ids_from_gt(gt_file, items) if gt_file else None
    segmenter, keep_classes = build_segmenter(weights or DEFAULT_IMAGE_WEIGHTS, device, precision, batch, score_thr,
                                              max_dets, class_filter, progress=not quiet)
    check_image_model(segmenter)
    total = len(items) if all(item.is_image for item in items) else None  # a video's length is not counted
    with count_bar("segmenting", "images", enabled=not quiet) as bar:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            bar(done, total)

        summary = segment_inputs(items, segmenter, plan, image_ids=image_ids, keep_classes=keep_classes,
                                 progress=advance)
    console = Console(stderr=True, quiet=quiet)
    console.print(f"{summary.images} images, {summary.detections} detections -> "
                  + ", ".join(str(p) for p in plan.json_files)
                  + (f" and {plan.folder}/" if plan.folder is not None else ""), highlight=False)
