"""Training data: the dataset a run trains on, the validation split it scores, and the batch loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sipvis.data.ytvis import SplitFiles
from sipvis.errors import SipvisError
from sipvis.model.config import SipMaskConfig
from sipvis.training.config import RunConfig


def build_datasets(run: RunConfig, cfg_model: dict):
    """(training dataset, validation split files or None).

    The validation split is None when none is configured or when it has no ground truth (e.g. the
    YouTube-VIS valid split): there is nothing to score then.
    """
    from sipvis.data.batch import RepeatDataset
    from sipvis.data.coco import COCODataset
    from sipvis.data.transforms import TrainTransform
    from sipvis.data.ytvis import YTVISDataset

    dc = run.data
    mean = cfg_model.get("pixel_mean", SipMaskConfig.pixel_mean)
    std = cfg_model.get("pixel_std", SipMaskConfig.pixel_std)
    to_rgb = cfg_model.get("to_rgb", SipMaskConfig.to_rgb)
    transform = TrainTransform(scales=tuple(tuple(s) for s in dc.scales), scale_mode=dc.scale_mode,
                               flip_prob=dc.flip_prob, mean=tuple(mean), std=tuple(std), to_rgb=to_rgb)
    ann, images = _training_files(run)
    if dc.format == "ytvis":
        dataset = YTVISDataset(ann, images, transform)
    elif dc.format == "coco":
        image_model = cfg_model.get("task") == "image"  # single images, the original's image augmentations
        dataset = COCODataset(ann, images, transform, dc.augment if image_model else None, dc.resize)
    else:
        raise SipvisError(f"data.format must be 'ytvis' or 'coco', got {dc.format!r}")
    if dc.repeat > 1:
        dataset = RepeatDataset(dataset, dc.repeat)
    return dataset, _validation_split(run, dataset.class_names)


def _training_files(run: RunConfig) -> tuple[Path, Path]:
    from sipvis.data.ytvis import find_split

    dc = run.data
    if dc.ann_file:
        return Path(dc.ann_file), Path(dc.image_dir or ".")
    if not dc.root:
        raise SipvisError("no training data: set data.root (+ data.split) or data.ann_file + data.image_dir")
    if dc.format == "coco":
        return Path(dc.root) / "annotations" / f"instances_{dc.split}.json", Path(dc.root) / dc.split
    s = find_split(dc.root, dc.split)
    return s.ann_file, s.image_dir


def _validation_split(run: RunConfig, class_names: tuple[str, ...]) -> SplitFiles | None:
    from sipvis.data.ytvis import Categories, find_split
    from sipvis.io.files import load_json_object

    dc = run.data
    if dc.val_ann_file:
        val = SplitFiles(Path(dc.val_ann_file), Path(dc.val_image_dir or "."))
    elif dc.val_split:
        val = find_split(dc.root, dc.val_split)
    else:
        return None
    gt = load_json_object(val.ann_file, "validation annotation")
    if not gt.get("annotations"):
        return None  # a split without ground truth (e.g. YouTube-VIS valid): nothing to score
    if Categories.from_json(gt.get("categories") or []).names != class_names:
        raise SipvisError(f"the validation split {val.ann_file} has other categories than the training data")
    return val


def batches(loader) -> Iterator:
    """Iterate a DataLoader, turning a worker's multi-line re-raised SipvisError into its one line."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except SipvisError as exc:
            text = str(exc)
            if "Original Traceback" in text:
                text = text.strip().splitlines()[-1].split("SipvisError: ", 1)[-1]
                raise SipvisError(text) from None
            raise
        yield batch
