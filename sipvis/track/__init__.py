"""Tracking: memory of objects across frames and the matching of new detections to it."""

from sipvis.track.tracker import OriginalTracker, TrackerConfig, visible_detections

__all__ = ["OriginalTracker", "TrackerConfig", "visible_detections"]
