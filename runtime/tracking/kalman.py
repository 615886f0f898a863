"""Constant-velocity Kalman filter on boxes, batched over tracks (numpy only).

State per track: ``(cx, cy, w, h, vcx, vcy, vw, vh)`` in pixels and pixels per frame; the
measurement is the box ``(cx, cy, w, h)``. Noise follows ByteTrack/BoT-SORT (``xywh`` variant):
standard deviations proportional to the box size, position ``1/20`` and velocity ``1/160`` of it,
so the filter behaves the same at every scale.

All functions take and return arrays over T tracks (``mean`` float64 [T, 8], ``cov`` float64
[T, 8, 8]) so that predicting 100 tracks is a handful of numpy calls, not 100.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STD_POSITION", "STD_VELOCITY", "initiate", "predict", "update", "xyxy_to_cxcywh", "cxcywh_to_xyxy"]

STD_POSITION = 1.0 / 20.0
STD_VELOCITY = 1.0 / 160.0


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


def cxcywh_to_xyxy(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64).reshape(-1, 4)
    hw, hh = z[:, 2] / 2, z[:, 3] / 2
    return np.stack([z[:, 0] - hw, z[:, 1] - hh, z[:, 0] + hw, z[:, 1] + hh], 1)


def _wh4(wh: np.ndarray) -> np.ndarray:
    """[T, 4] scale per measured coordinate: (w, h, w, h), floored at 1 px."""
    w, h = np.maximum(wh[:, 0], 1.0), np.maximum(wh[:, 1], 1.0)
    return np.stack([w, h, w, h], 1)


def initiate(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from measurements ``z`` [T, 4] (cx, cy, w, h): zero velocity, a wide prior."""
    z = np.asarray(z, np.float64).reshape(-1, 4)
    mean = np.concatenate([z, np.zeros_like(z)], 1)
    s = _wh4(z[:, 2:4])
    std = np.concatenate([2 * STD_POSITION * s, 10 * STD_VELOCITY * s], 1)
    cov = np.zeros((len(z), 8, 8))
    idx = np.arange(8)
    cov[:, idx, idx] = std ** 2
    return mean, cov


def predict(mean: np.ndarray, cov: np.ndarray, dt: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One prediction step of ``dt`` frames (per track or one for all): x' = F x, P' = F P F^T + Q dt.

    NOTE: a gap of dt frames (a live stream's dropped frames) is one step with F(dt) and the
    process noise scaled by dt, not dt unit steps: the same mean, slightly less covariance
    growth than stepping, and cheap."""
    t = len(mean)
    dt = np.broadcast_to(np.asarray(dt, np.float64), (t,))
    f = np.tile(np.eye(8), (t, 1, 1))
    f[:, np.arange(4), np.arange(4) + 4] = dt[:, None]
    s = _wh4(mean[:, 2:4])
    q_std = np.concatenate([STD_POSITION * s, STD_VELOCITY * s], 1)
    new_mean = np.einsum("tij,tj->ti", f, mean)
    new_cov = f @ cov @ f.transpose(0, 2, 1)
    idx = np.arange(8)
    new_cov[:, idx, idx] += q_std ** 2 * dt[:, None]
    return new_mean, new_cov


def update(mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct T predicted tracks with their measurements ``z`` [T, 4] (cx, cy, w, h)."""
    z = np.asarray(z, np.float64).reshape(-1, 4)
    r_std = STD_POSITION * _wh4(mean[:, 2:4])
    s = cov[:, :4, :4].copy()
    idx = np.arange(4)
    s[:, idx, idx] += r_std ** 2
    # K = P H^T S^-1, with H = [I 0]: solve S^T K^T = (P H^T)^T (S is symmetric)
    pht = cov[:, :, :4]  # [T, 8, 4]
    gain = np.linalg.solve(s, pht.transpose(0, 2, 1)).transpose(0, 2, 1)  # [T, 8, 4]
    innovation = z - mean[:, :4]
    new_mean = mean + np.einsum("tij,tj->ti", gain, innovation)
    new_cov = cov - gain @ s @ gain.transpose(0, 2, 1)
    return new_mean, new_cov
