"""Instance tracking: stable ids across frames (numpy and scipy; no torch).

* :class:`Tracker` / :class:`TrackerConfig`: ByteTrack-style two-stage association on mask IoU,
  box IoU and class, constant-velocity Kalman motion, tentative -> confirmed -> lost -> removed.
* :class:`GreedyIoUTracker`: the no-motion greedy IoU baseline it is measured against.
* :mod:`.association`: box IoU, box-frame mask IoU, gated optimal assignment.
* :mod:`.kalman`: the batched constant-velocity Kalman filter.
* :mod:`.evaluate` (``maskrt track-eval``): MOTA / IDF1 / ID switches with motmetrics.
"""

from .baseline import GreedyIoUTracker
from .tracker import CONFIRMED, LOST, TENTATIVE, Tracker, TrackerConfig, TrackInfo

__all__ = ["CONFIRMED", "LOST", "TENTATIVE", "GreedyIoUTracker", "TrackInfo", "Tracker", "TrackerConfig"]
