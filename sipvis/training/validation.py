"""Validation during training: the split run of `sipvis eval --dataset` on the model being trained."""

from __future__ import annotations

from pathlib import Path

import torch

from sipvis.model.sipmask import SipMaskVIS

# frames per forward pass while validating
VAL_BATCH = 4


def validate(model: SipMaskVIS, ann_file: Path, image_dir: Path, device: torch.device, max_videos: int = 0,
             dtype: torch.dtype = torch.float32) -> dict:
    """Segment and track every video of a YouTube-VIS split with ground truth; AP/AR of the results.

    The same path as `sipvis eval --dataset` (`sipvis.engine.dataset_run.evaluate_split`): frames,
    tracking and category ids (the file's, whatever they are) agree. `max_videos` > 0 scores the
    first N videos (by id) only. Returns the evaluator's `as_dict()` (AP, AP50, ..., per_class).
    The model is left in eval mode.
    """
    from sipvis.data.ytvis import SplitFiles
    from sipvis.engine.dataset_run import Split, evaluate_split
    from sipvis.engine.inference import Segmenter

    split = Split.load(SplitFiles(Path(ann_file), Path(image_dir)), max_videos if max_videos > 0 else None)
    return evaluate_split(split, Segmenter(model, device, dtype, batch_size=VAL_BATCH))
