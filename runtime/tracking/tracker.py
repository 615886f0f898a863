"""``Tracker``: ByteTrack-style multi-object tracking of instance detections with mask IoU.

    tracker = Tracker(TrackerConfig(min_hits=2, max_lost=30))
    for frame_index, dets in enumerate(detections_per_frame):
        dets = tracker.track(dets, frame_index)      # Detections with track_ids (-1: not tracked yet)

Per frame (:meth:`Tracker.update`):

1. every track's box is predicted by a constant-velocity Kalman filter (:mod:`.kalman`) over
   the frames since the last update (a live stream's dropped frames count);
2. **stage 1**: detections scoring at least ``high_score`` against the confirmed and lost
   tracks; the similarity is ``mask_weight * mask IoU + (1 - mask_weight) * box IoU`` (masks in
   their box frames, the track's last mask moved with its predicted box), the cost is
   ``1 - similarity + class_cost * (class differs)``; optimal assignment
   (``scipy.optimize.linear_sum_assignment``), pairs below ``match_iou`` refused;
3. **stage 2**: detections in ``[low_score, high_score)`` against the confirmed tracks still
   unmatched (not the lost ones), at ``low_match_iou``: a partly occluded object whose score
   dipped keeps its track without low-score clutter starting tracks (ByteTrack);
4. **stage 3**: tentative tracks against the high-score detections left, at ``tentative_match_iou``;
5. lifecycle: a new track is *tentative* (started by a detection scoring at least
   ``new_track_score``); after ``min_hits`` matches it is *confirmed* and gets the next id
   (1, 2, 3, ... never reused); a tentative track that misses a frame is removed; a confirmed
   one that misses is *lost* (kept, predicted, matchable in stage 1) and removed after more
   than ``max_lost`` frames without a match.

Only detections on confirmed tracks carry an id; the others get -1. The tracker is
deterministic: the same detections give the same ids (ties in the assignment resolve the same
way every time). numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from maskrt.runtime.detections import Detections

from . import kalman
from .association import assign, box_iou, mask_iou
from .config import TrackerConfig

__all__ = ["TENTATIVE", "CONFIRMED", "LOST", "TrackInfo", "Tracker", "TrackerConfig"]

TENTATIVE, CONFIRMED, LOST = 0, 1, 2
STATE_NAMES = {TENTATIVE: "tentative", CONFIRMED: "confirmed", LOST: "lost"}


@dataclass(frozen=True)
class TrackInfo:
    """A track as reported by :attr:`Tracker.tracks`: ``id`` (-1 while tentative), ``state``
    ('tentative' | 'confirmed' | 'lost'), predicted or last box (x1, y1, x2, y2), class, hits,
    frames since the last match."""

    id: int
    state: str
    box: tuple[float, float, float, float]
    class_id: int
    hits: int
    since_update: int


class Tracker:
    """Multi-object tracker over one stream (module docstring). Not thread-safe: one per stream,
    updated in frame order."""

    def __init__(self, config: TrackerConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = TrackerConfig()
        if not isinstance(config, TrackerConfig):
            raise TypeError(f"config must be a TrackerConfig, got {type(config).__name__}")
        unknown = sorted(set(overrides) - set(TrackerConfig.names()))
        if unknown:
            raise ValueError(f"tracker: unknown parameter(s) {unknown}; known: {list(TrackerConfig.names())}")
        self.config = replace(config, **overrides) if overrides else config
        self.reset()

    def reset(self) -> None:
        """Forget every track (ids keep counting up: an id is never reused by this tracker)."""
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        self._id = np.zeros(0, np.int64)
        self._state = np.zeros(0, np.int8)
        self._hits = np.zeros(0, np.int64)
        self._since = np.zeros(0, np.int64)
        self._cls = np.zeros(0, np.int64)
        self._mask: np.ndarray | None = None  # bool [T, M, M] or None (no masks seen)
        self._has_mask = np.zeros(0, bool)
        self._last_frame: int | None = None
        self._frames = 0
        if not hasattr(self, "_next_id"):
            self._next_id = 1

    # ---------------------------------------------------------------- reporting
    @property
    def ids_issued(self) -> int:
        """How many ids this tracker has given out (the last one is this number)."""
        return self._next_id - 1

    def counts(self) -> dict[str, int]:
        """Number of tracks per state, and ids issued."""
        return {"tentative": int((self._state == TENTATIVE).sum()), "confirmed": int((self._state == CONFIRMED).sum()),
                "lost": int((self._state == LOST).sum()), "ids": self.ids_issued}

    @property
    def tracks(self) -> list[TrackInfo]:
        boxes = kalman.cxcywh_to_xyxy(self._mean[:, :4])
        return [TrackInfo(int(self._id[i]), STATE_NAMES[int(self._state[i])],
                          tuple(round(float(v), 2) for v in boxes[i]), int(self._cls[i]), int(self._hits[i]),
                          int(self._since[i])) for i in range(len(self._id))]

    # ---------------------------------------------------------------- tracking
    def track(self, dets: Detections, frame_index: int | None = None) -> Detections:
        """``dets`` with ``track_ids`` set (see :meth:`update`)."""
        ids = self.update(dets.boxes, dets.scores, dets.class_ids, dets.masks, frame_index)
        return dets.with_track_ids(ids)

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, masks: np.ndarray | None = None,
               frame_index: int | None = None) -> np.ndarray:
        """Advance one frame. boxes float [N, 4] (x1, y1, x2, y2), scores [N], class_ids int [N],
        masks (optional) [N, M, M] probabilities relative to each box; frame_index: the frame's
        index in the stream (strictly increasing; a gap is predicted over), default previous + 1.
        Returns int64 [N]: each detection's track id, -1 when it is on no confirmed track."""
        cfg = self.config
        boxes, scores, class_ids, masks = self._check(boxes, scores, class_ids, masks)
        n = len(scores)
        if frame_index is None:
            frame_index = 0 if self._last_frame is None else self._last_frame + 1
        elif isinstance(frame_index, bool) or not isinstance(frame_index, (int, np.integer)):
            raise ValueError(f"frame_index must be an int, got {frame_index!r}")
        frame_index = int(frame_index)
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise ValueError(f"frame_index must increase: got {frame_index} after {self._last_frame}")
        dt = 1 if self._last_frame is None else frame_index - self._last_frame
        self._last_frame = frame_index
        self._frames += 1

        if len(self._mean):
            self._mean, self._cov = kalman.predict(self._mean, self._cov, float(dt))
            self._since += dt
        pred = self._predicted_boxes()
        det_masks = None if masks is None else masks > cfg.mask_threshold
        if det_masks is not None and self._mask is not None and det_masks.shape[1:] != self._mask.shape[1:]:
            raise ValueError(f"masks are {det_masks.shape[1]}x{det_masks.shape[2]}, earlier frames' were "
                             f"{self._mask.shape[1]}x{self._mask.shape[2]}")

        det_track = np.full(n, -1, np.int64)  # detection -> track row
        high = np.nonzero(scores >= cfg.high_score)[0]
        low = np.nonzero((scores >= cfg.low_score) & (scores < cfg.high_score))[0]
        state = self._state
        track_free = np.ones(len(state), bool)

        # NOTE: one similarity matrix (detections at least low_score x all tracks) for the three stages
        cand = np.nonzero(scores >= cfg.low_score)[0]
        sim = np.zeros((n, len(state)))
        if len(cand) and len(state):
            sim[cand] = self._similarity(boxes[cand], None if det_masks is None else det_masks[cand], pred)
        differ = class_ids[:, None] != self._cls[None, :]

        def stage(dets: np.ndarray, rows: np.ndarray, min_sim: float) -> np.ndarray:
            """Match detections ``dets`` to track rows ``rows``; returns the detections left."""
            if len(dets) == 0 or len(rows) == 0:
                return dets
            cost = 1.0 - sim[np.ix_(dets, rows)] + cfg.class_cost * differ[np.ix_(dets, rows)]
            matches, left, _ = assign(cost, 1.0 - min_sim)
            det_track[dets[matches[:, 0]]] = rows[matches[:, 1]]
            track_free[rows[matches[:, 1]]] = False
            return dets[left]

        high_left = stage(high, np.nonzero((state == CONFIRMED) | (state == LOST))[0], cfg.match_iou)
        stage(low, np.nonzero((state == CONFIRMED) & track_free)[0], cfg.low_match_iou)
        high_left = stage(high_left, np.nonzero(state == TENTATIVE)[0], cfg.tentative_match_iou)

        # matched tracks: Kalman correction, hits, confirmation
        matched_det = np.nonzero(det_track >= 0)[0]
        rows = det_track[matched_det]
        if len(rows):
            z = kalman.xyxy_to_cxcywh(boxes[matched_det])
            self._mean[rows], self._cov[rows] = kalman.update(self._mean[rows], self._cov[rows], z)
            self._hits[rows] += 1
            self._since[rows] = 0
            self._cls[rows] = class_ids[matched_det]
            self._set_masks(rows, None if det_masks is None else det_masks[matched_det])
            self._state[rows[self._state[rows] == LOST]] = CONFIRMED
            self._confirm(rows[(self._state[rows] == TENTATIVE) & (self._hits[rows] >= cfg.min_hits)])

        # unmatched tracks: tentative removed, confirmed lost, lost too long removed
        unmatched = track_free.copy()
        unmatched[rows] = False
        keep = np.ones(len(self._state), bool)
        keep[unmatched & (self._state == TENTATIVE)] = False
        self._state[unmatched & (self._state == CONFIRMED)] = LOST
        keep[(self._state == LOST) & (self._since > cfg.max_lost)] = False

        # new tracks from the high-score detections left
        new = high_left[scores[high_left] >= cfg.new_track_score]
        out_rows = det_track.copy()
        if not keep.all():
            remap = np.cumsum(keep) - 1
            out_rows = np.where(out_rows >= 0, remap[np.maximum(out_rows, 0)], -1)
            self._select(keep)
        if len(new):
            start = len(self._state)
            self._append(boxes[new], class_ids[new], None if det_masks is None else det_masks[new])
            out_rows[new] = np.arange(start, start + len(new))
            if cfg.min_hits <= 1:
                self._confirm(np.arange(start, start + len(new)))

        ids = np.full(n, -1, np.int64)
        on = out_rows >= 0
        ids[on] = np.where(self._state[out_rows[on]] == CONFIRMED, self._id[out_rows[on]], -1)
        return ids

    # ---------------------------------------------------------------- internals
    def _check(self, boxes, scores, class_ids, masks):
        boxes = np.asarray(boxes, np.float64)
        scores = np.asarray(scores, np.float64).reshape(-1)
        class_ids = np.asarray(class_ids).reshape(-1)
        n = len(scores)
        if boxes.size == 0 and n == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.shape != (n, 4) or class_ids.shape != (n,):
            raise ValueError(f"tracker: boxes must be [N, 4] and class_ids [N] for N = {n} scores, got boxes "
                             f"{boxes.shape}, class_ids {class_ids.shape}")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError("tracker: boxes and scores must be finite")
        if not np.issubdtype(class_ids.dtype, np.integer):
            raise ValueError(f"tracker: class_ids must be integers, got {class_ids.dtype}")
        if masks is not None:
            masks = np.asarray(masks)
            if masks.ndim != 3 or masks.shape[0] != n or masks.shape[1] != masks.shape[2] or masks.shape[1] < 1:
                raise ValueError(f"tracker: masks must be [N, M, M] for N = {n}, got {masks.shape}")
        return boxes, scores, class_ids.astype(np.int64), masks

    def _predicted_boxes(self) -> np.ndarray:
        z = self._mean[:, :4].copy()
        z[:, 2:4] = np.maximum(z[:, 2:4], 1.0)  # NOTE: a shrinking velocity must not turn a box inside out
        return kalman.cxcywh_to_xyxy(z)

    def _similarity(self, det_boxes, det_masks, track_boxes) -> np.ndarray:
        """[N, T] similarity of detections to every track (predicted boxes, last masks)."""
        iou = box_iou(det_boxes, track_boxes)
        w = self.config.mask_weight
        if w == 0 or det_masks is None or self._mask is None:
            return iou
        has = self._has_mask
        pairs = (iou > 0) & has[None, :]
        if not pairs.any():
            return iou
        miou = mask_iou(det_masks, det_boxes, self._mask, track_boxes, grid=self.config.mask_grid, pairs=pairs)
        # NOTE: a track without a mask (masks not given when it was last matched) is compared by box only
        return np.where(has[None, :], w * miou + (1 - w) * iou, iou)

    def _set_masks(self, rows: np.ndarray, masks: np.ndarray | None) -> None:
        if masks is None:
            self._has_mask[rows] = False
            return
        if self._mask is None:
            self._mask = np.zeros((len(self._state), *masks.shape[1:]), bool)
        self._mask[rows] = masks
        self._has_mask[rows] = True

    def _confirm(self, rows: np.ndarray) -> None:
        for r in rows.tolist():  # NOTE: in row order (= creation order): ids follow the order tracks were born
            self._state[r] = CONFIRMED
            self._id[r] = self._next_id
            self._next_id += 1

    def _select(self, keep: np.ndarray) -> None:
        self._mean, self._cov = self._mean[keep], self._cov[keep]
        self._id, self._state, self._hits = self._id[keep], self._state[keep], self._hits[keep]
        self._since, self._cls, self._has_mask = self._since[keep], self._cls[keep], self._has_mask[keep]
        if self._mask is not None:
            self._mask = self._mask[keep]

    def _append(self, boxes: np.ndarray, class_ids: np.ndarray, masks: np.ndarray | None) -> None:
        k = len(boxes)
        mean, cov = kalman.initiate(kalman.xyxy_to_cxcywh(boxes))
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._id = np.concatenate([self._id, np.full(k, -1, np.int64)])
        self._state = np.concatenate([self._state, np.full(k, TENTATIVE, np.int8)])
        self._hits = np.concatenate([self._hits, np.ones(k, np.int64)])
        self._since = np.concatenate([self._since, np.zeros(k, np.int64)])
        self._cls = np.concatenate([self._cls, class_ids])
        self._has_mask = np.concatenate([self._has_mask, np.zeros(k, bool)])
        if masks is not None and self._mask is None:
            self._mask = np.zeros((len(self._state) - k, *masks.shape[1:]), bool)
        if self._mask is not None:
            add = masks if masks is not None else np.zeros((k, *self._mask.shape[1:]), bool)
            self._mask = np.concatenate([self._mask, add])
        self._has_mask[len(self._state) - k:] = masks is not None
