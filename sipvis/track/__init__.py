"""Tracking: memory of objects across frames and the matching of new detections to it.

Two trackers: `OriginalTracker` (the paper's greedy matching, byte-for-byte the authors' outputs) and
`RobustTracker` (Hungarian assignment per frame, active tracks before lost ones, a lost-track buffer
with re-identification by embedding, motion or an unambiguous match, duplicate detections left out, a
class vote per track; the CLI's default).
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
    """A fresh tracker (one per video) of kind 'original' or 'robust' (its default config). 'original'
    needs a model with a tracking branch (`sipvis.cli._model_options.resolve_tracker` checks it).

    Raises:
        SipvisError: an unknown kind, naming the choices.
    """
    if kind == "original":
        return OriginalTracker()
    if kind == "robust":
        return RobustTracker(RobustTrackerConfig())
    raise SipvisError(f"unknown tracker {kind!r}: choose from {', '.join(TRACKERS)}")


__all__ = ["TRACKERS", "OriginalTracker", "RobustTracker", "RobustTrackerConfig", "Tracker", "TrackerConfig",
           "new_tracker", "visible_detections"]
