"""Weight-free motion and consistency metrics: OpenCV Farneback optical flow, colour histograms."""

from __future__ import annotations

import itertools
import warnings

import cv2
import numpy as np

from .video import check_video

FLOW_MIN_SIZE = 8
_FARNEBACK = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}


def farneback_flow(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
    """Dense flow ``(H, W, 2)`` (x, y) from ``frame0`` to ``frame1`` (uint8 RGB), so that
    ``frame0[y, x] ≈ frame1[y + fy, x + fx]``. OpenCV ``calcOpticalFlowFarneback`` with its usual settings
    (pyramid 0.5 × 3 levels, window 15, 3 iterations, poly_n 5, sigma 1.2). Identical grey frames give
    exactly zero flow (Farneback itself leaves ~0.3 px artefacts at the borders)."""
    g0 = cv2.cvtColor(frame0, cv2.COLOR_RGB2GRAY)
    g1 = cv2.cvtColor(frame1, cv2.COLOR_RGB2GRAY)
    if np.array_equal(g0, g1):
        return np.zeros((*g0.shape, 2), np.float32)
    return cv2.calcOpticalFlowFarneback(g0, g1, None, **_FARNEBACK)


def flow_magnitude(video: np.ndarray) -> float:
    """Mean optical-flow magnitude between consecutive frames, in pixels per frame (higher = more motion).

    Source: OpenCV Farneback flow (Farnebäck 2003, "Two-frame motion estimation based on polynomial
    expansion"); the mean over pixels and over frame pairs ``(t-1, t)`` of ``‖flow‖₂``. A continuous,
    weight-free measure; VBench's binary ``dynamic_degree`` (RAFT, thresholded) is
    :func:`ieadapt_interp.metrics.vbench.dynamic_degree`. Called ``dynamic_degree`` before this release.

    Args:
        video: uint8 ``(T, H, W, 3)``, T ≥ 2, H and W ≥ 8.

    Returns:
        A float ≥ 0; 0 for a static video, ≈ d for content translating by d pixels per frame.

    Example:
        >>> flow_magnitude(np.zeros((4, 32, 32, 3), np.uint8))
        0.0
    """
    check_video(video, min_frames=2, min_size=FLOW_MIN_SIZE)
    magnitudes = [np.linalg.norm(farneback_flow(a, b), axis=-1).mean() for a, b in itertools.pairwise(video)]
    return float(np.mean(magnitudes))


def dynamic_degree(video: np.ndarray) -> float:
    """Deprecated alias of :func:`flow_magnitude` (warns; removed in the next release).

    ``ieadapt_interp.metrics.dynamic_degree`` and the registry name ``"dynamic_degree"`` are now VBench's binary
    RAFT score (:func:`ieadapt_interp.metrics.vbench.dynamic_degree`).
    """
    warnings.warn(
        "ieadapt_interp.metrics.motion.dynamic_degree is renamed flow_magnitude (the continuous Farneback measure); "
        "'dynamic_degree' now names VBench's binary RAFT score. This alias is removed in the next release.",
        FutureWarning,
        stacklevel=2,
    )
    return flow_magnitude(video)


def _backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``out[y, x] = image[y + flow_y, x + flow_x]`` (bilinear, border replicated), float32."""
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(
        image.astype(np.float32),
        grid_x + flow[..., 0],
        grid_y + flow[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def interpolate_midpoint(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
    """Flow-based midpoint frame between two uint8 frames.

    Bidirectional Farneback flows combined with Super SloMo's intermediate-flow approximation at t = ½
    (Jiang et al. 2018, Eq. 4): ``F_½→0 = ¼(F_1→0 − F_0→1)``, ``F_½→1 = ¼(F_0→1 − F_1→0)``; the two
    backward-warped frames are averaged. Returns uint8 ``(H, W, 3)``.
    """
    f01 = farneback_flow(frame0, frame1)
    f10 = farneback_flow(frame1, frame0)
    warped0 = _backward_warp(frame0, 0.25 * (f10 - f01))
    warped1 = _backward_warp(frame1, 0.25 * (f01 - f10))
    return np.clip(np.rint(0.5 * (warped0 + warped1)), 0, 255).astype(np.uint8)


def motion_smoothness_flow(video: np.ndarray) -> float:
    """VBench's motion-smoothness formula with a flow-based interpolator instead of AMT (higher = smoother).

    Source: VBench (Huang et al. 2024) ``motion_smoothness``: keep the even frames, re-create each odd frame
    by interpolating its two even neighbours, score ``(255 − mean |original − interpolated|) / 255``. VBench
    interpolates with the learned AMT-S network; here :func:`interpolate_midpoint` (Farneback flow) does, so
    values are comparable only with this metric, never with VBench's ``motion_smoothness``.

    Args:
        video: uint8 ``(T, H, W, 3)``, T ≥ 3, H and W ≥ 8.

    Returns:
        A float in [0, 1]; 1 for a static video.

    Example:
        >>> motion_smoothness_flow(np.full((5, 32, 32, 3), 7, np.uint8))
        1.0
    """
    check_video(video, min_frames=3, min_size=FLOW_MIN_SIZE)
    kept, dropped = video[0::2], video[1::2]
    errors = [
        cv2.absdiff(target, interpolate_midpoint(a, b)).mean()
        for a, b, target in zip(kept[:-1], kept[1:], dropped)
    ]
    return float((255.0 - np.mean(errors)) / 255.0)


HIST_BINS = 8


def colour_descriptor(frame: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Square root of the frame's normalised joint RGB histogram (``bins``³ cells), float64 ``(bins³,)``, unit
    L2 norm, so the cosine of two descriptors is the Bhattacharyya coefficient of the two colour distributions.

    Example:
        >>> d = colour_descriptor(np.zeros((4, 4, 3), np.uint8))
        >>> float(d @ d), int(d.argmax())
        (1.0, 0)
    """
    cells = (frame.reshape(-1, 3).astype(np.int64) * bins) // 256
    index = (cells[:, 0] * bins + cells[:, 1]) * bins + cells[:, 2]
    histogram = np.bincount(index, minlength=bins**3).astype(np.float64)
    return np.sqrt(histogram / histogram.sum())


def subject_consistency_hist(video: np.ndarray, bins: int = HIST_BINS) -> float:
    """A weight-free *stand-in* for VBench's ``subject_consistency``: VBench's formula on colour histograms.

    **Not VBench's metric.** Source: the formula of VBench's ``subject_consistency`` (Huang et al. 2024), which
    compares DINO ViT-B/16 features of each frame with the previous and the first frame
    (:func:`ieadapt_interp.metrics.vbench.subject_consistency`, needs weights). This stand-in keeps the formula, mean over t ≥ 1 of ``(max(0, cos(f_t, f_{t−1})) + max(0, cos(f_t, f_0))) / 2``,
    but ``f_t`` is a fixed, weight-free descriptor: :func:`colour_descriptor` (the square-rooted joint RGB
    histogram, ``bins`` levels per channel), so each cosine is a Bhattacharyya coefficient. A histogram ignores
    where pixels are, so a subject that only moves keeps its score (away from the borders), while one that
    changes colour, size, splits or flickers lowers it. Values are comparable only with this metric.

    Args:
        video: uint8 ``(T, H, W, 3)``, T ≥ 2.
        bins: histogram levels per channel.

    Returns:
        A float in [0, 1]; 1 when every frame has the first frame's colour distribution.

    Example:
        >>> v = np.zeros((3, 16, 16, 3), np.uint8); v[:, 4:8, 4:8] = 255
        >>> subject_consistency_hist(np.stack([v[0], np.roll(v[1], 5, axis=1), v[2]]))  # moved, unchanged
        1.0
    """
    check_video(video, min_frames=2)
    features = np.stack([colour_descriptor(frame, bins) for frame in video])
    previous = np.clip(np.sum(features[1:] * features[:-1], axis=1), 0, None)
    first = np.clip(features[1:] @ features[0], 0, None)
    return float(np.clip(np.mean((previous + first) / 2), 0.0, 1.0))
