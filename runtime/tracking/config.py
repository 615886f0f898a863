"""``TrackerConfig``: the tracker's parameters, validated (standard library only: ``maskrt video
--help`` reads its defaults without loading numpy or scipy)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

__all__ = ["TrackerConfig"]


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker parameters (validated at construction; a bad one raises ValueError naming it).

    high_score: detections at least this go to stage 1; low_score: detections below are ignored;
    new_track_score: an unmatched detection starts a track when it scores at least this;
    match_iou / low_match_iou / tentative_match_iou: minimum similarity in stages 1 / 2 / 3;
    mask_weight: share of mask IoU in the similarity (0: boxes only); class_cost: added to the
    cost of a pair whose classes differ (>= 1 forbids such pairs);
    min_hits: matches before a track is confirmed (1: at once); max_lost: frames a confirmed
    track survives without a match; mask_threshold: probability above which a mask cell is on;
    mask_grid: lattice points per side when comparing two masks.
    """

    high_score: float = 0.5
    low_score: float = 0.1
    new_track_score: float = 0.6
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    tentative_match_iou: float = 0.3
    mask_weight: float = 0.5
    class_cost: float = 1.0
    min_hits: int = 2
    max_lost: int = 30
    mask_threshold: float = 0.5
    mask_grid: int = 16

    def __post_init__(self) -> None:
        def number(name: str, lo: float, hi: float, hi_open: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo or v > hi \
                    or (hi_open and v == hi):
                raise ValueError(f"tracker: {name} must be a number in [{lo}, {hi}{')' if hi_open else ']'}, "
                                 f"got {v!r}")

        def integer(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                raise ValueError(f"tracker: {name} must be an integer >= {lo}, got {v!r}")

        for name in ("high_score", "low_score", "new_track_score", "match_iou", "low_match_iou",
                     "tentative_match_iou", "mask_weight"):
            number(name, 0.0, 1.0)
        number("mask_threshold", 0.0, 1.0, hi_open=True)
        number("class_cost", 0.0, math.inf, hi_open=True)
        integer("min_hits", 1)
        integer("max_lost", 0)
        integer("mask_grid", 2)
        if self.low_score > self.high_score:
            raise ValueError(f"tracker: low_score ({self.low_score}) must be <= high_score ({self.high_score})")
        if self.new_track_score < self.high_score:
            raise ValueError(f"tracker: new_track_score ({self.new_track_score}) must be >= high_score "
                             f"({self.high_score}): tracks start from stage-1 detections")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
