"""Validation and conversion of videos given to metrics: uint8 numpy arrays ``frames × H × W × 3``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from ..core.errors import IEAdaptValueError


def check_video(video: object, *, name: str = "video", min_frames: int = 1, min_size: int = 1) -> np.ndarray:
    """Return ``video`` unchanged if it is a uint8 array ``(T, H, W, 3)``; raise ValueError otherwise.

    Metrics convert nothing (a float video is an error here); display code that does convert uses
    :func:`ieadapt_interp.analysis.video.as_uint8_video`.

    Example:
        >>> check_video(np.zeros((2, 8, 8, 3), np.uint8)).shape
        (2, 8, 8, 3)
    """
    if not isinstance(video, np.ndarray):
        # ValueError, not TypeError: every malformed video raises the same error class
        raise IEAdaptValueError(  # noqa: TRY004
            f"{name} must be a numpy array (frames, H, W, 3) of uint8, got {type(video).__name__}"
        )
    if video.ndim != 4 or video.shape[-1] != 3:
        raise IEAdaptValueError(f"{name} must have shape (frames, H, W, 3), got {video.shape}")
    if video.dtype != np.uint8:
        raise IEAdaptValueError(f"{name} must be uint8 in [0, 255], got dtype {video.dtype}")
    frames, height, width, _ = video.shape
    if frames < min_frames:
        raise IEAdaptValueError(f"{name} needs at least {min_frames} frame(s), got {frames}")
    if min(height, width) < min_size:
        raise IEAdaptValueError(f"{name} frames must be at least {min_size}×{min_size} pixels, got {height}×{width}")
    return video


def check_pair(video: np.ndarray, reference: object, *, min_size: int = 1) -> np.ndarray:
    """Validate ``reference`` like ``video`` and require the same shape; return it."""
    if reference is None:
        raise IEAdaptValueError("this metric compares against a reference video: pass reference=...")
    reference = check_video(reference, name="reference", min_size=min_size)
    if reference.shape != video.shape:
        raise IEAdaptValueError(f"reference shape {reference.shape} differs from video shape {video.shape}")
    return reference


def to_tensor255(video: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` → float32 tensor ``(T, 3, H, W)`` with values in [0, 255]."""
    return torch.from_numpy(np.ascontiguousarray(video)).to(device).permute(0, 3, 1, 2).float()


def resize_as_uint8(frames: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize [0, 255] frames as torchvision does a uint8 tensor (``antialias=False``, then clamp and round)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    out = F.interpolate(frames, size=size, mode=mode, align_corners=False, antialias=False)
    return out.clamp(0, 255).round()


def resize_shorter(frames: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Resize so the shorter side is ``size`` (torchvision ``Resize(size)`` on a uint8 tensor)."""
    height, width = frames.shape[-2:]
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    new_hw = (size, new_long) if height <= width else (new_long, size)
    return resize_as_uint8(frames, new_hw, mode)


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size × size`` crop (torchvision ``CenterCrop`` rounding)."""
    height, width = frames.shape[-2:]
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return frames[..., top : top + size, left : left + size]
