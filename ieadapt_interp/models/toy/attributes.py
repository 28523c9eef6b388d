"""Attribute checks for toy clips: pure image processing, no learned weights.

A clip is an array (F, H, W, 3) (or (F, 3, H, W)) of floats in [0, 1] or uint8. The background colour is read
from each frame's border; the foreground is every pixel far enough from it.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ...models.toy.dataset import BACKGROUNDS, COLOURS, DIRECTIONS, MOTIONS, SHAPES, parse_caption
from ...core.errors import IEAdaptValueError

#: minimum colour distance (0-255 RGB) from the background for a pixel to be foreground
FG_THRESHOLD = 60.0
#: components smaller than this (px) are ignored when counting blobs and finding contours
MIN_BLOB_AREA = 6
#: a net centroid displacement (px, first to last frame, from a linear fit) below this counts as "still"
STATIC_THRESHOLD = 8.0


def to_uint8_clip(clip) -> np.ndarray:
    """(F, H, W, 3) uint8 from a torch/numpy clip in (F, H, W, 3) or (F, 3, H, W), float [0, 1] or uint8."""
    if isinstance(clip, torch.Tensor):
        clip = clip.detach().float().cpu().numpy()
    clip = np.asarray(clip)
    if clip.ndim != 4:
        raise IEAdaptValueError(f"expected a clip of 4 dims (F, H, W, 3), got shape {clip.shape}")
    if clip.shape[-1] != 3 and clip.shape[1] == 3:
        clip = clip.transpose(0, 2, 3, 1)
    if clip.dtype != np.uint8:
        clip = (np.clip(clip, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(clip)


def _nearest(rgb: np.ndarray, table: dict[str, tuple[int, int, int]]) -> str:
    names = list(table)
    ref = np.array([table[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((ref - rgb[None].astype(np.float32)) ** 2).sum(1)))]


def background_colour(frame: np.ndarray) -> np.ndarray:
    border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]], 0).astype(np.float32)
    return np.median(border, 0)


def foreground_masks(clip) -> np.ndarray:
    """(F, H, W) bool foreground masks."""
    c = to_uint8_clip(clip).astype(np.float32)
    border = np.concatenate([c[:, 0], c[:, -1], c[:, :, 0], c[:, :, -1]], 1)  # (F, 4W, 3)
    bg = np.median(border, 1)  # (F, 3)
    d = np.sqrt(((c - bg[:, None, None, :]) ** 2).sum(-1))
    return d > FG_THRESHOLD


def _components(mask: np.ndarray):
    n, lab, stats, cent = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= MIN_BLOB_AREA]
    return lab, stats, cent, keep


def blob_counts(clip) -> np.ndarray:
    """Number of connected foreground components (area >= MIN_BLOB_AREA) in each frame."""
    return np.array([len(_components(m)[3]) for m in foreground_masks(clip)])


def one_blob_fraction(clip) -> float:
    """Fraction of frames whose foreground is exactly one connected blob."""
    return float((blob_counts(clip) == 1).mean())


def dominant_colour(clip) -> str | None:
    """Name of the palette colour nearest to the median foreground colour (None if no foreground)."""
    c = to_uint8_clip(clip)
    m = foreground_masks(c)
    if m.sum() == 0:
        return None
    return _nearest(np.median(c[m], 0), COLOURS)


def background_name(clip) -> str:
    c = to_uint8_clip(clip)
    return _nearest(np.median(np.stack([background_colour(f) for f in c]), 0), BACKGROUNDS)


def centroids(clip) -> np.ndarray:
    """(F, 2) centroid (x, y) of the largest foreground blob per frame; NaN where there is none."""
    out = []
    for m in foreground_masks(clip):
        _, stats, cent, keep = _components(m)
        if not keep:
            out.append([np.nan, np.nan])
            continue
        best = max(keep, key=lambda i: stats[i, cv2.CC_STAT_AREA])
        out.append(cent[best])
    return np.asarray(out, dtype=np.float64)


def displacement(clip) -> np.ndarray:
    """Net (dx, dy) displacement from the first to the last frame, from a least-squares line through the
    centroid trajectory (robust to jitter)."""
    cen = centroids(clip)
    ok = ~np.isnan(cen[:, 0])
    if ok.sum() < 2:
        return np.array([0.0, 0.0])
    t = np.arange(len(cen))[ok]
    slope = np.polyfit(t, cen[ok], 1)[0]  # (2,)
    return slope * (len(cen) - 1)


def motion_direction(clip) -> str:
    """One of left/right/up/down/still (image y grows downwards)."""
    dx, dy = displacement(clip)
    if np.hypot(dx, dy) < STATIC_THRESHOLD:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def frame_shape(mask: np.ndarray) -> str | None:
    """Shape of the largest blob of one mask from its contour: extent = area / min-area-rectangle area is
    about 0.5 for a triangle, pi/4 for a circle and 1 for a square."""
    lab, stats, _, keep = _components(mask)
    if not keep:
        return None
    best = max(keep, key=lambda i: stats[i, cv2.CC_STAT_AREA])
    blob = (lab == best).astype(np.uint8)
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cnt = max(contours, key=cv2.contourArea)
    area = float(blob.sum())
    (w, h) = cv2.minAreaRect(cnt)[1]
    # the contour runs through pixel centres: grow the rectangle by one pixel to compare with pixel area
    rect = (w + 1.0) * (h + 1.0)
    if rect <= 0:
        return None
    extent = area / rect
    if extent < 0.64:
        return "triangle"
    if extent < 0.89:
        return "circle"
    return "square"


def shape_name(clip) -> str | None:
    """Majority vote of :func:`frame_shape` over the frames where the blob does not touch the border."""
    votes = []
    for m in foreground_masks(clip):
        if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
            continue
        s = frame_shape(m)
        if s is not None:
            votes.append(s)
    if not votes:
        return None
    names, counts = np.unique(votes, return_counts=True)
    return str(names[np.argmax(counts)])


def check_clip(clip, caption: str) -> dict:
    """All checks of one clip against its caption."""
    want = parse_caption(caption)
    c = to_uint8_clip(clip)
    got = {
        "colour": dominant_colour(c),
        "shape": shape_name(c),
        "motion": motion_direction(c),
        "background": background_name(c),
    }
    dx, dy = displacement(c)
    return {
        "caption": caption,
        "want_colour": want.colour, "got_colour": got["colour"], "colour_ok": got["colour"] == want.colour,
        "want_shape": want.shape, "got_shape": got["shape"], "shape_ok": got["shape"] == want.shape,
        "want_motion": want.motion, "got_motion": got["motion"], "motion_ok": got["motion"] == want.motion,
        "want_background": want.background, "got_background": got["background"],
        "background_ok": got["background"] == want.background,
        "one_blob_frac": one_blob_fraction(c),
        "dx": float(dx), "dy": float(dy),
    }


__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "DIRECTIONS",
    "FG_THRESHOLD",
    "MIN_BLOB_AREA",
    "MOTIONS",
    "SHAPES",
    "STATIC_THRESHOLD",
    "background_name",
    "blob_counts",
    "centroids",
    "check_clip",
    "displacement",
    "dominant_colour",
    "foreground_masks",
    "frame_shape",
    "motion_direction",
    "one_blob_fraction",
    "shape_name",
    "to_uint8_clip",
]
