"""VBench's quality metrics (Huang et al. 2024, "VBench: Comprehensive Benchmark Suite for Video Generative
Models"): ``aesthetic_quality``, ``imaging_quality``, ``subject_consistency``, ``motion_smoothness``.

Each follows VBench's own code path (preprocessing, model, normalisation), with the models loaded from local
files (see :mod:`.weights`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .clip import CLIP_L14, clip_pixels
from .dino import load_dino
from .musiq import MUSIQ, musiq_state_dict
from .video import check_video, resize_as_uint8, resize_shorter, to_tensor255
from .weights import WeightFile, locate_file, locate_hf_model

if TYPE_CHECKING:  # transformers is imported lazily: it takes seconds
    from transformers import CLIPVisionModelWithProjection, ViTModel

AESTHETIC_HEAD = WeightFile(
    "sa_0_4_vit_l_14_linear.pth",
    "LAION aesthetic predictor head, https://github.com/LAION-AI/aesthetic-predictor",
    extra_dirs=("~/.cache/vbench/aesthetic_model/emb_reader",),
)
MUSIQ_SPAQ = WeightFile(
    "musiq_spaq_ckpt-358bb6af.pth",
    "pyiqa MUSIQ trained on SPAQ, https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/"
    "musiq_spaq_ckpt-358bb6af.pth",
    extra_dirs=("~/.cache/vbench/pyiqa_model", "~/.cache/torch/hub/pyiqa"),
)
AMT_S = WeightFile(
    "amt-s.pth",
    "AMT-S frame interpolation, https://huggingface.co/lalala125/AMT",
    extra_dirs=("~/.cache/vbench/amt_model",),
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MetricNotImplementedError(NotImplementedError):
    """A registered metric whose computation this package does not provide (``.metric`` names it)."""

    def __init__(self, metric: str, message: str):
        super().__init__(message)
        self.metric = metric


# ---------------------------------------------------------------- aesthetic quality
class AestheticScorer(nn.Module):
    """LAION aesthetic predictor: ``Linear(768, 1)`` on L2-normalised CLIP ViT-L/14 image embeddings."""

    def __init__(self, clip: CLIPVisionModelWithProjection, head: nn.Linear):
        super().__init__()
        self.clip, self.head = clip, head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        embeds = F.normalize(self.clip(pixel_values=pixels).image_embeds.float(), dim=-1, p=2)
        return self.head(embeds).squeeze(-1)


@functools.lru_cache(maxsize=2)
def _load_aesthetic_cached(clip_path: str, head_path: str, device: str) -> AestheticScorer:
    from transformers import CLIPVisionModelWithProjection

    clip = CLIPVisionModelWithProjection.from_pretrained(clip_path, local_files_only=True)
    head = nn.Linear(clip.config.projection_dim, 1)
    head.load_state_dict(torch.load(head_path, map_location="cpu", weights_only=True))
    return AestheticScorer(clip, head).to(device).eval().requires_grad_(False)


def load_aesthetic(
    weights: str | os.PathLike | None = None,
    clip_weights: str | os.PathLike | None = None,
    device: str = "cpu",
) -> AestheticScorer:
    """Load the LAION head (``weights``: ``sa_0_4_vit_l_14_linear.pth``) and CLIP ViT-L/14 (``clip_weights``: a
    HF ``openai/clip-vit-large-patch14`` folder), each else from ``$IEADAPT_WEIGHTS_DIR`` or the caches."""
    head = locate_file("aesthetic_quality", AESTHETIC_HEAD, weights)
    clip = locate_hf_model("aesthetic_quality", CLIP_L14, clip_weights)
    return _load_aesthetic_cached(str(Path(clip).resolve()), str(Path(head).resolve()), str(device))


@torch.no_grad()
def aesthetic_quality(
    video: np.ndarray,
    *,
    model: AestheticScorer | None = None,
    weights: str | os.PathLike | None = None,
    clip_weights: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 32,
) -> float:
    """VBench aesthetic quality: LAION aesthetic score / 10, mean over frames (higher = better).

    Source: VBench ``aesthetic_quality.py`` — CLIP ViT-L/14 image embedding of each frame (``clip_transform``:
    bicubic shorter side → 224, centre crop), L2-normalised, through the LAION aesthetic predictor
    ``Linear(768, 1)`` (``sa_0_4_vit_l_14_linear.pth``), divided by 10.

    Args:
        video: uint8 ``(T, H, W, 3)``.
        model: an :class:`AestheticScorer` (else :func:`load_aesthetic` with ``weights`` / ``clip_weights``).

    Returns:
        A float, nominally in [0, 1] (LAION scores are on a 1–10 scale).

    Example:
        >>> aesthetic_quality(video)  # doctest: +SKIP
        0.55
    """
    check_video(video)
    model = model if model is not None else load_aesthetic(weights, clip_weights, device)
    device_ = next(model.parameters()).device
    size = model.clip.config.image_size
    scores = [
        model(clip_pixels(video[i : i + batch_size], size, device_)) for i in range(0, len(video), batch_size)
    ]
    return float((torch.cat(scores) / 10).mean())


# ---------------------------------------------------------------- imaging quality
@functools.lru_cache(maxsize=2)
def _load_musiq_cached(path: str, device: str) -> MUSIQ:
    model = MUSIQ()
    model.load_state_dict(musiq_state_dict(torch.load(path, map_location="cpu", weights_only=True)))
    return model.to(device).eval().requires_grad_(False)


def load_musiq(weights: str | os.PathLike | None = None, device: str = "cpu") -> MUSIQ:
    """Load MUSIQ-SPAQ from ``musiq_spaq_ckpt-358bb6af.pth`` (``weights``, ``$IEADAPT_WEIGHTS_DIR``, torch hub /
    pyiqa / VBench caches). Cached per (path, device); eval mode."""
    path = locate_file("imaging_quality", MUSIQ_SPAQ, weights)
    return _load_musiq_cached(str(Path(path).resolve()), str(device))


def musiq_frames(video: np.ndarray, device: str | torch.device, longer_max: int = 512) -> torch.Tensor:
    """VBench's ``imaging_quality`` preprocessing (mode ``'longer'``): if the longer side exceeds 512, bilinear
    resize (no antialias) so it is 512; scale to [0, 1]. Returns ``(T, 3, H', W')``."""
    frames = to_tensor255(video, device)
    height, width = frames.shape[-2:]
    if max(height, width) > longer_max:
        scale = longer_max / max(height, width)
        frames = resize_as_uint8(frames, (int(scale * height), int(scale * width)), "bilinear")
    return frames / 255.0


@torch.no_grad()
def imaging_quality(
    video: np.ndarray,
    *,
    model: MUSIQ | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 4,
) -> float:
    """VBench imaging quality: MUSIQ (SPAQ) score / 100, mean over frames (higher = fewer artefacts).

    Source: VBench ``imaging_quality.py`` with pyiqa's MUSIQ (Ke et al. 2021) trained on SPAQ
    (``musiq_spaq_ckpt-358bb6af.pth``), frames resized so the longer side is ≤ 512.

    Args:
        video: uint8 ``(T, H, W, 3)``.
        model: a :class:`~.musiq.MUSIQ` (else :func:`load_musiq` with ``weights``).

    Returns:
        A float, nominally in [0, 1].

    Example:
        >>> imaging_quality(video)  # doctest: +SKIP
        0.68
    """
    check_video(video)
    model = model if model is not None else load_musiq(weights, device)
    frames = musiq_frames(video, next(model.parameters()).device)
    scores = [model(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)]
    return float(torch.cat(scores).mean() / 100.0)


# ---------------------------------------------------------------- subject consistency
def consistency_from_features(features: torch.Tensor) -> float:
    """VBench's subject-consistency formula on per-frame features ``(T, D)``, T ≥ 2:
    mean over t ≥ 1 of ``(max(0, cos(f_t, f_{t-1})) + max(0, cos(f_t, f_0))) / 2``."""
    features = F.normalize(features.float(), dim=-1, p=2)
    previous = F.cosine_similarity(features[1:], features[:-1], dim=-1).clamp(min=0)
    first = F.cosine_similarity(features[1:], features[:1], dim=-1).clamp(min=0)
    return float(((previous + first) / 2).mean())


def dino_pixels(video: np.ndarray, device: str | torch.device, size: int = 224) -> torch.Tensor:
    """VBench's ``dino_transform``: bilinear resize of the shorter side to 224 (no antialias), ImageNet norm."""
    frames = resize_shorter(to_tensor255(video, device), size, "bilinear") / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(1, 3, 1, 1)
    return (frames - mean) / std


@torch.no_grad()
def dino_features(model: ViTModel, video: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """DINO CLS features (after the final LayerNorm, as the torch-hub model returns) ``(T, D)``."""
    device = next(model.parameters()).device
    size = model.config.image_size
    chunks = []
    for i in range(0, len(video), batch_size):
        pixels = dino_pixels(video[i : i + batch_size], device, size)
        resize = tuple(pixels.shape[-2:]) != (size, size)
        chunks.append(model(pixel_values=pixels, interpolate_pos_encoding=resize).last_hidden_state[:, 0])
    return torch.cat(chunks)


def subject_consistency(
    video: np.ndarray,
    *,
    model: ViTModel | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
) -> float:
    """VBench subject consistency: DINO-feature similarity of each frame to the previous and the first one.

    Source: VBench ``subject_consistency.py`` — DINO ViT-B/16 (Caron et al. 2021) CLS features of frames resized
    (shorter side 224), L2-normalised; mean over t ≥ 1 of ``(max(0, cos(f_t, f_{t-1})) + max(0, cos(f_t, f_0)))/2``.
    Non-square frames use interpolated position embeddings (transformers' bicubic, as DINO's own up to rounding).

    Args:
        video: uint8 ``(T, H, W, 3)``, T ≥ 2.
        model: a ``transformers.ViTModel`` (else :func:`~.dino.load_dino` with ``weights``).

    Returns:
        A float in [0, 1]; 1 for a static video.

    Example:
        >>> subject_consistency(video)  # doctest: +SKIP
        0.95
    """
    check_video(video, min_frames=2)
    model = model if model is not None else load_dino(weights, device)
    return consistency_from_features(dino_features(model, video))


# ---------------------------------------------------------------- motion smoothness
def motion_smoothness(
    video: np.ndarray,
    *,
    model: object | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
) -> float:
    """VBench motion smoothness (AMT-S frame interpolation) — **not implemented in this package**.

    Source: VBench ``motion_smoothness.py``: drop the odd frames, re-create them with AMT-S (Li et al. 2023,
    ``amt-s.pth``), score ``(255 − mean |original − interpolated|) / 255``. The AMT-S network is not
    re-implemented here, so this always raises :class:`MetricNotImplementedError`; use VBench itself for this
    number, or ``motion_smoothness_flow`` (same formula, Farneback-flow interpolator — a different metric).

    Args:
        video: uint8 ``(T, H, W, 3)``, T ≥ 3.

    Raises:
        MetricNotImplementedError: always (after validating ``video``).
    """
    check_video(video, min_frames=3)
    raise MetricNotImplementedError(
        "motion_smoothness",
        "motion_smoothness (VBench, AMT-S interpolator) is not implemented in ieadapt_interp: the AMT-S "
        "architecture is not bundled. Use VBench for this number, or the metric 'motion_smoothness_flow' "
        "(same VBench formula with an OpenCV Farneback interpolator; its values are not comparable).",
    )
