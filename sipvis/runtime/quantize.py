"""int8 ONNX, opt-in and outside the fp32 parity contract: onnxruntime's static quantisation of the
convolutions (QDQ: int8 per-channel weights, uint8 activations whose ranges are calibrated by min/max on
real frames). onnxruntime fuses each quantised convolution into one integer kernel (VNNI where the CPU has
it); the deformable convolutions and everything else stay float32.

Its accuracy change is measured, not assumed: `detection_agreement` compares its detections with eager
fp32's on frames of the user's choice, and `sipvis export --int8` prints the figure.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from sipvis.errors import SipvisError
from sipvis.io.files import ensure_folder, write_bytes_atomic
from sipvis.runtime.exported import INPUT_NAME, METADATA_KEY, ExportInfo, require
from sipvis.track.robust import mask_iou


def calibration_frames(source, frames: int) -> tuple[list[np.ndarray], str]:
    """The first `frames` frames of `source` (anything `sipvis track` reads; None: a generated 640x360 clip
    of moving shapes) as (H, W, 3) uint8 BGR arrays, and how to name where they came from."""
    from sipvis.io.inputs import open_source

    if frames < 1:
        raise SipvisError(f"--calibration-frames must be at least 1, got {frames}")
    if source is None:
        from sipvis.engine.bench import generate_clip

        with tempfile.TemporaryDirectory(prefix="sipvis-calibrate-") as tmp:
            clip = generate_clip(Path(tmp) / "calibrate.mp4", 640, 360, frames)
            return calibration_frames(clip, frames)[0], "a generated 640x360 clip"
    reader = open_source(source, threaded=False, max_frames=frames)
    try:
        images = [frame.image for frame in reader]
    finally:
        reader.close()
    if not images:
        raise SipvisError(f"{source}: no frames to calibrate int8 on")
    return images, str(source)


def calibration_inputs(model: torch.nn.Module, images: Iterable[np.ndarray]) -> list[torch.Tensor]:
    """Frames pre-processed for `model` as `sipvis track` does it: (1, 3, Hp, Wp) float32 each."""
    from sipvis.engine.inference import Segmenter

    segmenter = Segmenter(model)
    return [segmenter.preprocess([segmenter.prepare(image)]) for image in images]


def write_int8_onnx(model: torch.nn.Module, path: Path, example: torch.Tensor, images: Sequence[torch.Tensor],
                    info: ExportInfo) -> None:
    """`path` gets `model` (folded, eager) as ONNX with its convolutions quantised to int8, calibrated on
    `images` (pre-processed (1, 3, Hp, Wp) float32 batches), `info` in its metadata.

    The float32 graph is the one `sipvis export --format onnx` writes from `example` (dynamic or fixed as
    `info.input_size` says); only the finished file is moved into place."""
    require("onnx")
    quantization = require("onnxruntime.quantization")
    from sipvis.runtime.export import onnx_model

    fixed = info.input_size
    if fixed is not None and any(tuple(image.shape[2:]) != tuple(fixed) for image in images):
        got = next(image.shape for image in images if tuple(image.shape[2:]) != tuple(fixed))
        raise SipvisError(f"the calibration frames pad to {got[3]}x{got[2]}, the export is fixed at "
                          f"{fixed[1]}x{fixed[0]}: calibrate on frames of that size, or export --dynamic")
    proto = onnx_model(model, example, dynamic=fixed is None)

    class Frames(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(images)

        def get_next(self):
            image = next(self.pending, None)
            return None if image is None else {INPUT_NAME: image.contiguous().numpy()}

    ensure_folder(path.parent)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        quantized = Path(tmp) / "int8.onnx"
        with _quiet_root_logger():  # its advice to pre-process the graph: ours is already folded
            quantization.quantize_static(
                proto, quantized, Frames(), quant_format=quantization.QuantFormat.QDQ,
                op_types_to_quantize=["Conv"], per_channel=True, activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8)
        onnx = require("onnx")
        result = onnx.load(str(quantized))
    del result.metadata_props[:]  # the quantiser keeps the float graph's entries: replace them
    entry = result.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    write_bytes_atomic(path, result.SerializeToString())


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantiser logs advice through the root logger: keep it off the user's console."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def detection_agreement(reference, candidate, images: Iterable[np.ndarray]) -> tuple[float, float, int]:
    """How closely `candidate`'s detections follow `reference`'s (two `Segmenter`s on the CPU) on `images`.

    Detections are paired one to one, greedily by mask IoU, within a class; a pair counts at IoU >= 0.5.

    Returns:
        (share of the reference's detections paired; mean mask IoU of the pairs; number of reference
        detections). (0.0, 0.0, 0) when the reference finds nothing: nothing to compare.
    """
    matched, total, ious = 0, 0, []
    for image in images:
        want, got = (seg.detect([seg.prepare(image)]) for seg in (reference, candidate))
        a, b = want.valid[0], got.valid[0]
        total += int(a.sum())
        if not bool(a.any()) or not bool(b.any()):
            continue
        iou = mask_iou(*(d.masks[0][v].flatten(1).float().numpy() for d, v in ((want, a), (got, b))))
        same_class = want.labels[0][a].numpy()[:, None] == got.labels[0][b].numpy()[None, :]
        pairs = _greedy_pairs(np.where(same_class, iou, 0.0), 0.5)
        matched += len(pairs)
        ious += pairs
    if total == 0:
        return 0.0, 0.0, 0
    return matched / total, float(np.mean(ious)) if ious else 0.0, total


def _greedy_pairs(iou: np.ndarray, threshold: float) -> list[float]:
    """(N, M) IoU -> the IoUs of one-to-one pairs taken highest first, each at least `threshold`."""
    used_rows, used_cols, taken = set(), set(), []
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        row, col = divmod(int(flat), iou.shape[1])
        if iou[row, col] < threshold:
            break
        if row not in used_rows and col not in used_cols:
            used_rows.add(row)
            used_cols.add(col)
            taken.append(float(iou[row, col]))
    return taken


__all__ = ["calibration_frames", "calibration_inputs", "detection_agreement", "write_int8_onnx"]
