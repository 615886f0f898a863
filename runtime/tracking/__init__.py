"""Instance tracking: stable ids across frames (numpy and scipy; no torch).

* :class:`Tracker` / :class:`TrackerConfig`: ByteTrack-style two-stage association on mask IoU,
  box IoU and class, constant-velocity Kalman motion, tentative -> confirmed -> lost -> removed.
* :class:`GreedyIoUTracker`: the no-motion greedy IoU baseline it is measured against.
* :mod:`.association`: box IoU, box-frame mask IoU, gated optimal assignment.
* :mod:`.kalman`: the batched constant-velocity Kalman filter.
* :mod:`.evaluate` (``maskrt track-eval``): MOTA / IDF1 / ID switches with motmetrics.

Names are loaded on first use (``TrackerConfig`` without scipy).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"TrackerConfig": "config", "Tracker": "tracker", "TrackInfo": "tracker", "TENTATIVE": "tracker",
          "CONFIRMED": "tracker", "LOST": "tracker", "GreedyIoUTracker": "baseline"}

__all__ = ["CONFIRMED", "LOST", "TENTATIVE", "GreedyIoUTracker", "TrackInfo", "Tracker", "TrackerConfig"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
