"""Learning-rate schedules: linear warm-up times a step or cosine decay, as a pure function of
the iteration.

Being a function of the iteration alone (no hidden state), the learning rate of any iteration
can be recomputed after a resume, on any rank, and checked in a test. ``LRSchedule`` wraps it
with a ``state_dict`` so that checkpoints record where the schedule stood.

Convention: ``factor(i)`` is the multiplier of the base learning rate used by the update that
turns ``i`` completed iterations into ``i + 1`` (so ``factor(0)`` is the first update's).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

SCHEDULES = ("step", "cosine")


def lr_factor(
    i: int,
    *,
    schedule: str,
    max_iters: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_factor: float = 1.0,
) -> float:
    """Multiplier of the base learning rate for the update after ``i`` completed iterations.

    * warm-up (detectron2's "linear"): ``warmup_factor`` at ``i = 0`` rising linearly to 1 at
      ``i = warmup_iters``; it multiplies the decay below;
    * ``"step"``: ``gamma ** (number of milestones <= i)``;
    * ``"cosine"``: ``0.5 * (1 + cos(pi * i / max_iters))``, from 1 down to 0 at ``max_iters``.
    """
    if schedule == "step":
        f = gamma ** bisect.bisect_right(list(milestones), i)
    elif schedule == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * min(i, max_iters) / max_iters))
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if i < warmup_iters:
        alpha = i / warmup_iters
        f *= warmup_factor * (1.0 - alpha) + alpha
    return f


class LRSchedule:
    """``lr_factor`` bound to a configuration, plus the iteration it last served."""

    def __init__(self, schedule: str, max_iters: int, milestones: Sequence[int] = (), gamma: float = 0.1,
                 warmup_iters: int = 0, warmup_factor: float = 1.0) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
        self.kwargs = dict(schedule=schedule, max_iters=int(max_iters), milestones=tuple(int(m) for m in milestones),
                           gamma=float(gamma), warmup_iters=int(warmup_iters), warmup_factor=float(warmup_factor))
        self.last_iter = 0

    def factor(self, i: int) -> float:
        """Multiplier for the update after ``i`` completed iterations (remembers ``i``)."""
        self.last_iter = int(i)
        return lr_factor(i, **self.kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Plain ints, floats and lists (loadable with ``torch.load(weights_only=True)``)."""
        return {"last_iter": self.last_iter,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_iter = int(state["last_iter"])
