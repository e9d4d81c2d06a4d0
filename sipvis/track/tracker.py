"""The original SipMask-VIS / MaskTrack R-CNN tracker: greedy matching of each detection against a
memory of tracked objects by embedding similarity, score, box IoU and class agreement."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sipvis.model.box_ops import box_iou


@dataclass
class TrackerConfig:
    """Weights of the combined matching score: log p(match) + a*log(score) + b*IoU + c*same_class.

    `no_claim_score` is the bar a detection must beat to claim a memory object in a frame (-100 in the
    original, so in practice any claim succeeds unless another detection scored higher).
    """

    score_weight: float = 1.0
    iou_weight: float = 2.0
    label_weight: float = 10.0
    no_claim_score: float = -100.0


@dataclass
class _Memory:
    boxes: torch.Tensor  # (M, 4) original-frame pixels
    embeddings: torch.Tensor  # (M, E)
    labels: torch.Tensor  # (M,) label of the detection that created the object (never updated)


@dataclass
class OriginalTracker:
    """Per-video tracker state. Call `update` once per frame, in order; `reset` between videos.

    Ids are 0-based in creation order. A detection whose best column is "new object" starts a track;
    otherwise it claims memory object j if its combined score beats the best claim on j so far in this
    frame, replacing j's box and embedding (not its label). A detection that fails to claim gets -1.
    As in the original, an earlier claimant keeps its id when a later detection takes over the object,
    so one id can appear twice in a frame; `visible_detections` keeps the later one, as the original's
    per-frame dict does.

    `first_frame_scores` reproduces a quirk of the original run on CPU (its reference outputs): the
    memory shares storage with the first frame's detections until the first new object is appended,
    so claims made before then overwrite the first frame's reported scores. It records
    {track_id (0-based): score} for the first frame's detections, frame `first_frame_index`; the engine
    hands them to the sinks as plain data (`FrameInstances.score_corrections`, built by
    `sipvis.engine.pipeline.ScoreCorrections`) and the YouTube-VIS JSON applies them.
    """

    cfg: TrackerConfig = field(default_factory=TrackerConfig)
    memory: _Memory | None = None
    first_frame_scores: dict[int, float] = field(default_factory=dict)
    first_frame_index: int | None = None
    _aliased: bool = False

    def reset(self) -> None:
        self.memory = None
        self.first_frame_scores = {}
        self.first_frame_index = None
        self._aliased = False

    def update(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
               embeddings: torch.Tensor, frame_index: int = 0) -> list[int]:
        """Match one frame's detections (sorted by score, descending) to the memory.

        Args:
            boxes: (N, 4) x1y1x2y2 original-frame pixels; scores: (N,); labels: (N,) int;
            embeddings: (N, E).
        Returns:
            N track ids (0-based; -1 = dropped).
        """
        n = boxes.shape[0]
        if n == 0:
            return []
        if self.memory is None:
            self.memory = _Memory(boxes.clone(), embeddings.clone(), labels.clone())
            self.first_frame_index = frame_index
            self._aliased = True
            return list(range(n))
        mem = self.memory
        logits = torch.cat([embeddings.new_zeros(n, 1), embeddings @ mem.embeddings.T], dim=1)  # (N, 1+M)
        iou = torch.cat([boxes.new_zeros(n, 1), box_iou(boxes, mem.boxes, pixel_offset=1.0)], dim=1)
        same = torch.cat([boxes.new_ones(n, 1), (labels[:, None] == mem.labels[None, :]).to(boxes.dtype)], dim=1)
        combined = (torch.log_softmax(logits, dim=1) + self.cfg.score_weight * torch.log(scores)[:, None]
                    + self.cfg.iou_weight * iou + self.cfg.label_weight * same)
        best_score, best_col = combined.max(dim=1)
        best_score, best_col = best_score.tolist(), best_col.tolist()  # one host sync per frame
        ids = [-1] * n
        claims = [self.cfg.no_claim_score] * mem.boxes.shape[0]
        new_rows = []
        for i, col in enumerate(best_col):
            if col == 0:
                ids[i] = mem.boxes.shape[0] + len(new_rows)
                new_rows.append(i)
                self._aliased = False
            elif best_score[i] > claims[col - 1]:
                obj = col - 1
                ids[i] = obj
                claims[obj] = best_score[i]
                mem.boxes[obj] = boxes[i]
                mem.embeddings[obj] = embeddings[i]
                if self._aliased:
                    self.first_frame_scores[obj] = float(scores[i])
        if new_rows:
            rows = torch.tensor(new_rows, device=boxes.device)
            mem.boxes = torch.cat([mem.boxes, boxes[rows]])
            mem.embeddings = torch.cat([mem.embeddings, embeddings[rows]])
            mem.labels = torch.cat([mem.labels, labels[rows]])
        return ids


def visible_detections(ids: list[int]) -> list[int]:
    """Indices of the detections a frame reports: one per track id >= 0, the last one holding it."""
    last: dict[int, int] = {}
    for i, track_id in enumerate(ids):
        if track_id >= 0:
            last[track_id] = i
    return sorted(last.values())
