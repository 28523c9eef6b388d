"""Structure metrics: SSIM and LPIPS against a reference video, and SSIM between consecutive frames."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from .video import check_pair, check_video, to_tensor255
from .weights import WeightFile, locate_file

SSIM_MIN_SIZE = 7  # skimage's default Gaussian-free 7×7 window
LPIPS_MIN_SIZE = 32  # smallest input AlexNet's three max-pools accept
ALEXNET = WeightFile(
    "alexnet-owt-7be5be79.pth",
    "torchvision AlexNet ImageNet weights, https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
)


def _frame_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255))


def ssim(video: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-frame SSIM between ``video`` and ``reference`` (higher = more similar).

    Source: Wang et al. 2004, "Image quality assessment: from error visibility to structural similarity";
    computed with ``skimage.metrics.structural_similarity(channel_axis=-1, data_range=255)`` (7×7 uniform
    window), averaged over frames.

    Args:
        video, reference: uint8 ``(T, H, W, 3)``, same shape, H and W ≥ 7.

    Returns:
        A float in [-1, 1]; 1 for identical videos.

    Example:
        >>> v = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
        >>> ssim(v, v)
        1.0
    """
    check_video(video, min_size=SSIM_MIN_SIZE)
    check_pair(video, reference, min_size=SSIM_MIN_SIZE)
    return float(np.mean([_frame_ssim(a, b) for a, b in zip(video, reference)]))


def temporal_ssim(video: np.ndarray) -> float:
    """Mean SSIM between consecutive frames (weight-free temporal consistency; higher = steadier).

    Source: SSIM (Wang et al. 2004, skimage, ``data_range=255``) of frame ``t`` vs ``t-1``, averaged over
    ``t = 1..T-1``.

    Args:
        video: uint8 ``(T, H, W, 3)`` with T ≥ 2, H and W ≥ 7.

    Returns:
        A float in [-1, 1]; 1 for a static video.

    Example:
        >>> temporal_ssim(np.full((3, 16, 16, 3), 90, np.uint8))
        1.0
    """
    check_video(video, min_frames=2, min_size=SSIM_MIN_SIZE)
    return float(np.mean([_frame_ssim(a, b) for a, b in zip(video[1:], video[:-1])]))


def _alexnet_state_for_lpips(model: torch.nn.Module, alexnet_state: dict) -> dict:
    """Map torchvision ``features.<i>.*`` keys onto lpips' ``slice<k>.<i>.*`` keys."""
    mapped = {}
    for key in model.net.state_dict():
        _, index, param = key.split(".")
        mapped[key] = alexnet_state[f"features.{index}.{param}"]
    return mapped


def build_lpips(alexnet_state: dict | None = None) -> torch.nn.Module:
    """LPIPS v0.1 with the AlexNet backbone; lpips' own linear weights; backbone from ``alexnet_state``.

    With ``alexnet_state=None`` the backbone stays random-initialised (for tests only).
    """
    import lpips as lpips_lib

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=False``
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_lib.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    if alexnet_state is not None:
        model.net.load_state_dict(_alexnet_state_for_lpips(model, alexnet_state))
    return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=4)
def _load_lpips_cached(path: str, device: str) -> torch.nn.Module:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return build_lpips(state).to(device)


def load_lpips(weights: str | os.PathLike | None = None, device: str = "cpu") -> torch.nn.Module:
    """Load LPIPS (AlexNet) with the torchvision AlexNet file ``alexnet-owt-7be5be79.pth``.

    Found at ``weights`` or ``$IEADAPT_WEIGHTS_DIR`` or the torch hub cache (``~/.cache/torch/hub/checkpoints``);
    raises :class:`MissingWeightsError` otherwise. Cached per (path, device).
    """
    path = locate_file("lpips", ALEXNET, weights)
    return _load_lpips_cached(str(Path(path).resolve()), str(device))


@torch.no_grad()
def lpips(
    video: np.ndarray,
    reference: np.ndarray,
    *,
    model: torch.nn.Module | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 8,
) -> float:
    """Mean per-frame LPIPS distance to ``reference`` (lower = more similar).

    Source: Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric";
    the ``lpips`` package, v0.1, AlexNet backbone, inputs scaled to [-1, 1].

    Args:
        video, reference: uint8 ``(T, H, W, 3)``, same shape, H and W ≥ 32.
        model: an already-built ``lpips.LPIPS`` (else :func:`load_lpips` with ``weights``).

    Returns:
        A float ≥ 0 (typically ≤ 1); 0 for identical videos.

    Example:
        >>> lpips(v, v)  # doctest: +SKIP
        0.0
    """
    check_video(video, min_size=LPIPS_MIN_SIZE)
    check_pair(video, reference, min_size=LPIPS_MIN_SIZE)
    model = model if model is not None else load_lpips(weights, device)
    dev = next(model.parameters()).device
    distances = []
    for start in range(0, len(video), batch_size):
        a = to_tensor255(video[start : start + batch_size], dev) / 255.0
        b = to_tensor255(reference[start : start + batch_size], dev) / 255.0
        distances.append(model(a, b, normalize=True).flatten().cpu())
    return float(torch.cat(distances).mean())
