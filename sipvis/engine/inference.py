"""Frames in, tracked instances out: the model, its device/precision, batching, post-processing and
the tracker, for one video at a time.

The streaming pipeline (decode thread, bounded queues, writer threads) in `sipvis.engine.pipeline`
drives this; library users can call `Segmenter.track(frames)` directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from sipvis.errors import SipvisError
from sipvis.model.config import SipMaskConfig
from sipvis.model.fold import folded_for_inference
from sipvis.model.head import HeadOutputs
from sipvis.model.postprocess import Detections, FrameGeometry
from sipvis.model.postprocess import postprocess as decode_detections
from sipvis.model.postprocess_coco import postprocess_image
from sipvis.model.preprocess import normalize_and_pad, resize_exact, resize_frame
from sipvis.model.sipmask import SipMaskVIS
from sipvis.results import FrameInstances
from sipvis.track import OriginalTracker, RobustTracker, Tracker, visible_detections
from sipvis.weights import DownloadProgress


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a usable device, or a clear error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise SipvisError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SipvisError(f"device {spec!r} requested but no CUDA GPU is available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SipvisError(f"device {spec!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
    elif device.type != "cpu":
        raise SipvisError(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    return device


# The one table of compute precisions: option name <-> dtype.
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def precision_name(dtype: torch.dtype) -> str:
    """torch.float16 -> 'fp16' (the option's spelling)."""
    return next((name for name, d in PRECISIONS.items() if d == dtype), str(dtype))


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    """'auto' = fp16 on CUDA, fp32 on CPU."""
    if spec == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if spec not in PRECISIONS:
        raise SipvisError(f"unknown precision {spec!r}: use auto, {', '.join(PRECISIONS)}")
    if spec == "fp16" and device.type == "cpu":
        raise SipvisError("fp16 is not supported on CPU; use --precision fp32 or bf16")
    return PRECISIONS[spec]


def default_batch_size(device: torch.device) -> int:
    """Frames per forward pass when the user gives none: 8 fill a GPU; on a CPU batching gains nothing."""
    return 8 if device.type == "cuda" else 1


def use_exact_fp32(device: torch.device) -> None:
    """Make fp32 on CUDA IEEE fp32: PyTorch lets cuDNN convolutions use TF32 (10-bit mantissa) on Ampere
    and newer GPUs, which moves outputs by ~1e-3 relative (seen on an H100: outside the reference's
    parity tolerance). The switches are process-wide; fp16/bf16 runs are not affected by them."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


@dataclass
class PreparedFrame:
    """A frame resized on the host, ready to be batched to the device."""

    index: int
    resized: np.ndarray  # (h, w, 3) uint8 BGR
    scale: float | tuple[float, float]  # (w_scale, h_scale) for a fixed-size model (`cfg.resize` "fixed")
    original: tuple[int, int]
    timestamp: float | None = None
    source: object = None  # what the caller wants back with the result (e.g. the decoded frame)


class Segmenter:
    """A SipMask-VIS model ready for inference.

    One batch goes through named stages, which `track_prepared` composes and `sipvis bench` times:
    `prepare` (host resize, per frame) -> `batches` -> `preprocess` (upload, normalise, pad) -> `forward`
    (the network) -> `postprocess` (detections and masks) -> `assign_tracks` (the tracker, results to
    the host).

    Args:
        model: the network (moved to `device`, eval mode): a `SipMaskVIS`, or a runtime of an exported file
            (`sipvis.runtime`), which takes the same (B, 3, Hp, Wp) float32 images and returns `HeadOutputs`.
        device: where the network and post-processing run.
        dtype: compute precision of the network (post-processing is float32).
        batch_size: frames per forward pass; 0 picks the device's default (`default_batch_size`).
    """

    def __init__(self, model: SipMaskVIS, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 batch_size: int = 1) -> None:
        self.device = torch.device(device)
        # frozen BatchNorm folded into the convolutions (a copy: a model being trained is never rewritten)
        self.model = folded_for_inference(model.eval(), channels_last=self.device.type == "cpu").to(self.device)
        self.cfg: SipMaskConfig = model.cfg
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size or default_batch_size(self.device)))
        if dtype == torch.float32:
            use_exact_fp32(self.device)

    @classmethod
    def from_checkpoint(cls, weights, device: str = "auto", precision: str = "auto", batch_size: int = 1,
                        progress: DownloadProgress | None = None, overrides: dict | None = None,
                        runtime: str | None = None, notice=None) -> "Segmenter":
        """Any `--weights` value: registry name, URL, sipvis checkpoint or the original `.pth`, built by
        `sipvis.checkpoint.build_model` with the config `overrides` (e.g. score_thr, max_per_img), or an
        exported file (.onnx, .xml, .ts, .engine). Device and precision are checked before the weights are
        fetched; `progress` is told how a download goes (`sipvis.weights.DownloadProgress`).

        `runtime`: None runs the file in its own runtime (torch for checkpoints); "auto" or a runtime name
        as `--runtime` (`sipvis.runtime.choose`); `notice` is told one line when that exports on the fly."""
        from sipvis.runtime import load_model
        from sipvis.runtime.choose import device_for

        dev = device_for(weights, runtime, resolve_device(device), explicit=device != "auto")
        dtype = resolve_precision(precision, dev)
        model = load_model(weights, runtime, dev, dtype, overrides=overrides, progress=progress, notice=notice)
        return cls(model, dev, dtype, batch_size)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.cfg.class_names

    def prepare(self, image: np.ndarray, index: int = 0, timestamp: float | None = None,
                source: object = None) -> PreparedFrame:
        """Host-side part of pre-processing (the original's cv2 resize); safe to run in a decode thread."""
        if self.cfg.resize == "fixed":
            resized, scale = resize_exact(image, self.cfg.max_size)
        else:
            resized, scale = resize_frame(image, self.cfg.max_size)
        return PreparedFrame(index, resized, scale, image.shape[:2], timestamp, source)

    def batches(self, frames: Iterable[PreparedFrame]) -> Iterator[list[PreparedFrame]]:
        """Group frames in order, `batch_size` at a time; a size change (a stream) starts a new batch.
        A batch is yielded as soon as it is complete, before the next frame is taken."""
        batch: list[PreparedFrame] = []
        for frame in frames:
            if batch and frame.original != batch[0].original:
                yield batch
                batch = []
            batch.append(frame)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    @torch.inference_mode()
    def preprocess(self, frames: list[PreparedFrame]) -> torch.Tensor:
        """Upload a batch of frames of one size and normalise/pad it -> (B, 3, Hp, Wp) float32 on the device."""
        if any(f.original != frames[0].original for f in frames):
            raise ValueError("all frames of a batch must have the same size")
        batch = torch.from_numpy(np.stack([f.resized for f in frames])).to(self.device, non_blocking=True)
        return normalize_and_pad(batch, self.cfg.pixel_mean, self.cfg.pixel_std, self.cfg.to_rgb,
                                 self.cfg.size_divisor)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> HeadOutputs:
        """The network on (B, 3, Hp, Wp) images, at the segmenter's precision -> raw `HeadOutputs`."""
        with self._autocast():
            return self.model(images)

    @torch.inference_mode()
    def postprocess(self, outputs: HeadOutputs, frames: list[PreparedFrame]) -> Detections:
        """Raw outputs of `frames` (one size) -> padded `Detections` on the device, at the original size.
        Image models (`cfg.task` "image") decode as the original SipMask-mmdetection (`postprocess_coco`)."""
        geom = FrameGeometry(frames[0].resized.shape[:2], frames[0].original, frames[0].scale)
        if self.cfg.task == "image":
            return postprocess_image(outputs, geom, self.cfg, self.model.head.mask_scoring)
        return decode_detections(outputs, geom, self.cfg)

    def detect(self, frames: list[PreparedFrame]) -> Detections:
        """`preprocess`, `forward` and `postprocess` of frames of one size."""
        return self.postprocess(self.forward(self.preprocess(frames)), frames)

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def track(self, frames: Iterable[np.ndarray | PreparedFrame], tracker: Tracker | None = None
              ) -> Iterator[FrameInstances]:
        """Segment and track one video. Frames are taken in order, `batch_size` at a time.

        `tracker`: an `OriginalTracker` (the default) or a `RobustTracker` (`sipvis.track.new_tracker`; the
        default for a model without a tracking branch), fresh for each video."""
        prepared = (f if isinstance(f, PreparedFrame) else self.prepare(f, i) for i, f in enumerate(frames))
        if tracker is None:
            tracker = OriginalTracker() if self.cfg.has_tracking_branch else RobustTracker()
        for _, instances in self.track_prepared(prepared, tracker):
            yield instances

    def track_prepared(self, frames: Iterable[PreparedFrame], tracker: Tracker
                       ) -> Iterator[tuple[PreparedFrame, FrameInstances]]:
        """Like `track`, for frames already prepared, yielding each frame with its instances."""
        for batch in self.batches(frames):
            yield from self.assign_tracks(batch, self.detect(batch), tracker)

    def assign_tracks(self, batch: list[PreparedFrame], dets: Detections, tracker: Tracker
                      ) -> Iterator[tuple[PreparedFrame, FrameInstances]]:
        """The tracker on a batch's detections, frame by frame, and the hand-over to the host: yields each
        frame with its `FrameInstances` (1-based track ids; detections the tracker hides left out).

        The original tracker works on the device copies (its calls are the authors'); the robust one on
        the host copies the batch makes anyway (no further sync per frame), and its frames report each
        track's voted class (`labels`, `track_classes`)."""
        counts = dets.valid.sum(1).tolist()  # valid slots come first: one sync per batch
        k = max(counts)
        # results cross to the host once per batch
        boxes, scores, labels, masks = (t[:, :k].cpu().numpy() for t in (dets.boxes, dets.scores, dets.labels,
                                                                          dets.masks))
        robust = isinstance(tracker, RobustTracker)
        if not robust and dets.embeddings is None:
            raise SipvisError("the original tracker needs a model with a tracking branch (SipMask-VIS); "
                              "this image model has none: use --tracker robust")
        # a model without a tracking branch has embeddings of width 0 (or none): the robust tracker
        # then matches on overlap and class only
        emb = dets.embeddings[:, :k].cpu().numpy() if robust and dets.embeddings is not None else None
        for b, frame in enumerate(batch):
            n = counts[b]
            if robust:
                ids = tracker.update(boxes[b, :n], scores[b, :n], labels[b, :n],
                                     None if emb is None else emb[b, :n], frame.index, masks=masks[b, :n])
            else:
                ids = tracker.update(dets.boxes[b, :n], dets.scores[b, :n], dets.labels[b, :n],
                                     dets.embeddings[b, :n], frame.index)
            keep = visible_detections(ids)
            track_ids = np.asarray([ids[i] + 1 for i in keep], dtype=np.int64)
            frame_labels, classes = labels[b, keep], {}
            if robust:
                frame_labels = np.asarray(tracker.voted_labels(ids), dtype=np.int64)[keep]
                classes = dict(zip(track_ids.tolist(), frame_labels.tolist()))
            yield frame, FrameInstances(
                index=frame.index,
                height=frame.original[0],
                width=frame.original[1],
                boxes=boxes[b, keep],
                scores=scores[b, keep],
                labels=frame_labels,
                track_ids=track_ids,
                masks=masks[b, keep],
                timestamp=frame.timestamp,
                track_classes=classes,
            )
