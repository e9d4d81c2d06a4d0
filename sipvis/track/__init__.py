"""Tracking: memory of objects across frames and the matching of new detections to it.

Two trackers: `OriginalTracker` (the paper's greedy matching, byte-for-byte the authors' outputs) and
`RobustTracker` (Hungarian assignment per frame, active tracks before lost ones, a lost-track buffer,
duplicate detections left out, a class vote per track).
`new_tracker(kind)` builds either from its `--tracker` name.
"""

from __future__ import annotations

from sipvis.errors import SipvisError
from sipvis.track.robust import RobustTracker, RobustTrackerConfig
from sipvis.track.tracker import OriginalTracker, TrackerConfig, visible_detections

# `--tracker` names, in the order the help lists them
TRACKERS = ("original", "robust")

Tracker = OriginalTracker | RobustTracker


def new_tracker(kind: str = "original") -> Tracker:
    """A fresh tracker (one per video) of kind 'original' or 'robust' (its default config); 'auto' (the
    `--tracker` default) is 'original' here: commands resolve it per model first
    (`sipvis.cli._model_options.resolve_tracker`: 'robust' for a model without a tracking branch).

    Raises:
        SipvisError: an unknown kind, naming the choices.
    """
    if kind in ("original", "auto"):
        return OriginalTracker()
    if kind == "robust":
        return RobustTracker(RobustTrackerConfig())
    raise SipvisError(f"unknown tracker {kind!r}: choose from {', '.join(TRACKERS)}")


__all__ = ["TRACKERS", "OriginalTracker", "RobustTracker", "RobustTrackerConfig", "Tracker", "TrackerConfig",
           "new_tracker", "visible_detections"]
