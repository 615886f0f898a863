"""``GreedyIoUTracker``: the no-motion baseline the tracker is measured against.

The classic IoU tracker (Bochinski et al., AVSS 2017) with a memory: each track keeps the box of
its last detection (no motion model, no masks); per frame, (track, detection) pairs of the same
class are taken greedily in descending box IoU while the IoU is at least ``min_iou``; an
unmatched detection scoring at least ``min_score`` starts a track with the next id at once; a
track unmatched for more than ``max_lost`` frames is removed. Same ``update`` interface as
:class:`maskrt.runtime.tracking.Tracker`.
"""

from __future__ import annotations

import numpy as np

from maskrt.runtime.detections import Detections

from .association import box_iou

__all__ = ["GreedyIoUTracker"]


class GreedyIoUTracker:
    def __init__(self, *, min_iou: float = 0.3, min_score: float = 0.5, max_lost: int = 30) -> None:
        if not 0.0 <= min_iou <= 1.0:
            raise ValueError(f"greedy tracker: min_iou must be in [0, 1], got {min_iou!r}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"greedy tracker: min_score must be in [0, 1], got {min_score!r}")
        if isinstance(max_lost, bool) or not isinstance(max_lost, int) or max_lost < 0:
            raise ValueError(f"greedy tracker: max_lost must be an integer >= 0, got {max_lost!r}")
        self.min_iou, self.min_score, self.max_lost = float(min_iou), float(min_score), max_lost
        self._boxes = np.zeros((0, 4))
        self._cls = np.zeros(0, np.int64)
        self._ids = np.zeros(0, np.int64)
        self._last = np.zeros(0, np.int64)
        self._next_id = 1
        self._frame = -1

    @property
    def ids_issued(self) -> int:
        return self._next_id - 1

    def counts(self) -> dict[str, int]:
        lost = int((self._last < self._frame).sum())
        return {"tentative": 0, "confirmed": len(self._ids) - lost, "lost": lost, "ids": self.ids_issued}

    def track(self, dets: Detections, frame_index: int | None = None) -> Detections:
        return dets.with_track_ids(self.update(dets.boxes, dets.scores, dets.class_ids, None, frame_index))

    def update(self, boxes, scores, class_ids, masks=None, frame_index: int | None = None) -> np.ndarray:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        class_ids = np.asarray(class_ids, np.int64).reshape(-1)
        self._frame = self._frame + 1 if frame_index is None else int(frame_index)
        n = len(scores)
        ids = np.full(n, -1, np.int64)
        cand = np.nonzero(scores >= self.min_score)[0]
        iou = box_iou(boxes[cand], self._boxes)
        iou[class_ids[cand][:, None] != self._cls[None, :]] = 0.0
        used_t = np.zeros(len(self._ids), bool)
        used_d = np.zeros(len(cand), bool)
        # NOTE: a stable sort of the flattened matrix: equal IoUs resolve in (detection, track) order
        order = np.argsort(-iou.reshape(-1), kind="stable")
        for k in order.tolist():
            d, t = divmod(k, max(len(self._ids), 1))
            if iou[d, t] < self.min_iou or iou[d, t] <= 0:
                break
            if used_d[d] or used_t[t]:
                continue
            used_d[d] = used_t[t] = True
            ids[cand[d]] = self._ids[t]
            self._boxes[t] = boxes[cand[d]]
            self._last[t] = self._frame
        new = cand[~used_d]
        if len(new):
            new_ids = np.arange(self._next_id, self._next_id + len(new))
            self._next_id += len(new)
            ids[new] = new_ids
            self._boxes = np.concatenate([self._boxes, boxes[new]])
            self._cls = np.concatenate([self._cls, class_ids[new]])
            self._ids = np.concatenate([self._ids, new_ids])
            self._last = np.concatenate([self._last, np.full(len(new), self._frame)])
        keep = self._frame - self._last <= self.max_lost
        self._boxes, self._cls, self._ids, self._last = (self._boxes[keep], self._cls[keep], self._ids[keep],
                                                         self._last[keep])
        return ids
