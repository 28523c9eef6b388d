"""VBench's quality metrics (Huang et al. 2024, "VBench: Comprehensive Benchmark Suite for Video Generative
Models"): ``aesthetic_quality``, ``imaging_quality``, ``subject_consistency``, ``motion_smoothness``,
``dynamic_degree``.

Each follows VBench's own code path (preprocessing, model, normalisation), with the models loaded from local
files (see :mod:`.weights`).
"""

from __future__ import annotations

import functools
import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import IEAdaptNotImplementedError, IEAdaptValueError
from .amt import AMT_S, load_amt  # noqa: F401  (AMT_S re-exported: the registry names vbench.AMT_S)
from .clip import CLIP_L14, clip_pixels
from .dino import load_dino
from .musiq import MUSIQ, musiq_state_dict
from .raft import MIN_PADDED_SIDE, RAFT_THINGS, load_raft, pad_to_multiple  # noqa: F401  (RAFT_THINGS: registry)
from .video import check_video, resize_shorter, to_tensor255
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
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MetricNotImplementedError(IEAdaptNotImplementedError):
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
    resize (no antialias) of the float frames, unrounded, as torchvision's ``Resize`` does on VBench's float
    video, so it is 512; scale to [0, 1]. Returns ``(T, 3, H', W')``."""
    frames = to_tensor255(video, device)
    height, width = frames.shape[-2:]
    if max(height, width) > longer_max:
        scale = longer_max / max(height, width)
        size = (int(scale * height), int(scale * width))
        frames = torch.nn.functional.interpolate(frames, size=size, mode="bilinear", align_corners=False,
                                                 antialias=False)
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
def vbench_amt_scale(height: int, width: int, vram_bytes: int | None = None) -> float:
    """The resize factor VBench's ``MotionSmoothness`` applies before AMT-S (``motion_score``).

    VBench sizes it from the GPU memory only when its ``device`` equals the *string* ``'cuda'``; with the
    ``torch.device("cuda")`` its command-line tools pass (and on CPU) it takes the "do not resize" constants, so
    the factor is 1 below 8192² pixels. ``vram_bytes`` (total GPU memory) selects the memory-based branch.
    The result is ``1 / floor(16 / sqrt(s)) * 16`` with ``s`` the raw estimate capped at 1.
    """
    if vram_bytes is None:
        anchor_resolution, anchor_memory, memory_bias, vram = 8192 * 8192, 1, 0, 1
    else:
        anchor_resolution, anchor_memory, memory_bias, vram = (
            1024 * 512,
            1500 * 1024**2,
            2500 * 1024**2,
            vram_bytes,
        )
        if vram <= memory_bias:
            raise IEAdaptValueError(f"vram_bytes must exceed VBench's 2500 MiB memory bias, got {vram_bytes}")
    scale = anchor_resolution / (height * width) * np.sqrt((vram - memory_bias) / anchor_memory)
    scale = min(scale, 1.0)
    return float(1 / np.floor(1 / np.sqrt(scale) * 16) * 16)


def _model_device(model: nn.Module, default: str | torch.device) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device(default)


@torch.no_grad()
def interpolate_dropped_frames(
    model: nn.Module,
    video: np.ndarray,
    *,
    scale: float = 1.0,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
) -> np.ndarray:
    """VBench's AMT pass: from the even frames ``video[0::2]``, predict the frame between each consecutive pair
    at t = ½ (``model(img0, img1, embt, scale_factor=scale)``, frames in [0, 1], padded to a multiple of
    ``int(16 / scale)``), converted back as ``tensor2img`` does (×255, clip, truncate to uint8).

    Returns:
        uint8 ``(len(video[0::2]) - 1, H, W, 3)``: the predictions for frames 1, 3, 5, …
    """
    device = _model_device(model, device)
    kept = (to_tensor255(video[0::2], device) / 255.0).contiguous()  # NCHW layout, as VBench
    embt = torch.tensor(0.5, device=device).view(1, 1, 1, 1)
    divisor = int(16 / scale)
    starts, ends = kept[:-1], kept[1:]
    predictions = [
        model(starts[i : i + batch_size], ends[i : i + batch_size], embt, scale_factor=scale, divisor=divisor)
        for i in range(0, len(starts), batch_size)
    ]
    out = (torch.cat(predictions) * 255.0).permute(0, 2, 3, 1).cpu().numpy()
    return out.clip(0, 255).astype(np.uint8)


def smoothness_score(originals: np.ndarray, interpolated: np.ndarray) -> float:
    """``(255 − mean_i mean |original_i − interpolated_i|) / 255`` over the interpolated frames (VBench's
    ``vfi_score``: per-frame ``cv2.absdiff`` mean, then the mean over frames). Extra originals are ignored."""
    errors = [cv2.absdiff(a, b).mean() for a, b in zip(originals, interpolated)]
    return float((255.0 - np.mean(np.array(errors))) / 255.0)


def motion_smoothness(
    video: np.ndarray,
    *,
    model: nn.Module | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    vram_bytes: int | None = None,
    batch_size: int = 1,
) -> float:
    """VBench motion smoothness: how well AMT-S re-creates the odd frames from the even ones (higher = smoother).

    Source: VBench ``motion_smoothness.py`` (``MotionSmoothness.motion_score``) with AMT-S (Li et al. 2023,
    ``amt-s.pth``, :mod:`.amt`): keep frames 0, 2, 4, …; for each consecutive kept pair predict the middle frame
    (t = ½) with AMT-S (frames /255, replicate-padded to a multiple of 16, output ×255 truncated to uint8); then
    ``(255 − mean_i mean|frame_{2i+1} − prediction_i|) / 255`` over the ``⌈T/2⌉ − 1`` predictions (with an even
    T, the last odd frame has no prediction and is not compared, as in VBench).

    Args:
        video: uint8 ``(T, H, W, 3)``, T ≥ 3; after padding to a multiple of 16 each side must be ≥ 128 pixels
            (i.e. H, W > 112), below which AMT-S's coarsest correlation level is degenerate (ValueError).
        model: an AMT-S (:class:`~.amt.AMTS`, else :func:`~.amt.load_amt` with ``weights``), or any module
            called as ``model(img0, img1, embt, scale_factor=..., divisor=...)``.
        device: torch device for the loaded model.
        vram_bytes: ``None`` (default) reproduces VBench's standard runs, which do not resize; the total GPU
            memory in bytes reproduces its memory-based downscaling (see :func:`vbench_amt_scale`).
        batch_size: frame pairs per forward pass. 1 runs one pair per pass, as VBench does; larger batches are
            faster but can move single pixels across a uint8 boundary (score changes of order 1e-7).

    Returns:
        A float in [0, 1]; 1 when every dropped frame is re-created exactly.

    Example:
        >>> motion_smoothness(video)  # doctest: +SKIP
        0.98
    """
    check_video(video, min_frames=3)
    model = model if model is not None else load_amt(weights, device)
    scale = vbench_amt_scale(video.shape[1], video.shape[2], vram_bytes)
    predicted = interpolate_dropped_frames(model, video, scale=scale, device=device, batch_size=batch_size)
    return smoothness_score(video[1::2], predicted)


# ---------------------------------------------------------------- dynamic degree
def vbench_frame_interval(fps: float) -> int:
    """VBench keeps every ``round(fps / 8)``-th decoded frame (Python rounding: halves go to the even integer).

    Example:
        >>> vbench_frame_interval(8), vbench_frame_interval(24), vbench_frame_interval(30)
        (1, 3, 4)
    """
    interval = round(fps / 8)
    if interval < 1:
        raise IEAdaptValueError(
            f"fps={fps} keeps no frame under VBench's rule (every round(fps/8)-th frame); give fps ≥ 4, the rate "
            "the video's frames were generated at."
        )
    return interval


def dynamic_thresholds(height: int, width: int, frames: int) -> tuple[float, int]:
    """VBench's ``set_params``: the flow threshold ``6 · min(H, W) / 256`` pixels and the number of frame pairs
    that must exceed it, ``round(4 · frames / 16)`` (``frames`` after sampling; Python rounding).

    Example:
        >>> dynamic_thresholds(256, 320, 16), dynamic_thresholds(512, 512, 10)
        ((6.0, 4), (12.0, 2))
    """
    return 6.0 * (min(height, width) / 256.0), round(4 * (frames / 16.0))


def top_flow_magnitude(flow: torch.Tensor) -> float:
    """VBench's ``get_score``: mean of the largest 5 % (``int(h·w·0.05)`` pixels) of ``‖flow‖₂`` over a
    ``(2, h, w)`` flow (x, y), in pixels; float32 numpy arithmetic, as VBench.

    Example:
        >>> top_flow_magnitude(torch.stack([torch.full((20, 20), 3.0), torch.full((20, 20), 4.0)]))
        5.0
    """
    u, v = flow.detach().float().cpu().numpy()
    radius = np.sqrt(np.square(u) + np.square(v)).flatten()
    cut = int(u.shape[0] * u.shape[1] * 0.05)
    return float(np.mean(np.abs(np.sort(-radius))[:cut]))


@torch.no_grad()
def raft_motion_scores(
    model: nn.Module, video: np.ndarray, *, fps: float = 8.0, iters: int = 20, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Per consecutive pair of VBench-sampled frames, :func:`top_flow_magnitude` of RAFT's flow.

    Frames ``video[::round(fps/8)]`` as floats in [0, 255], each pair replicate-padded to multiples of 8
    (:func:`~.raft.pad_to_multiple`), one pair per pass, ``model(img1, img2, iters=20)[1]`` (the upsampled flow,
    on the padded frame, as VBench scores it). Returns float64 ``(pairs,)``.
    """
    device = _model_device(model, device)
    frames = to_tensor255(video[:: vbench_frame_interval(fps)], device)
    scores = []
    for a, b in itertools.pairwise(frames):
        image1, image2 = pad_to_multiple(a[None], b[None])
        scores.append(top_flow_magnitude(model(image1, image2, iters=iters)[1][0]))
    return np.array(scores, dtype=np.float64)


def dynamic_degree(
    video: np.ndarray,
    *,
    fps: float = 8.0,
    model: nn.Module | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
) -> float:
    """VBench dynamic degree: 1.0 when the video moves (enough large optical flows), else 0.0.

    Source: VBench ``dynamic_degree.py`` (``DynamicDegree.infer``) with RAFT (Teed & Deng 2020,
    ``raft-things.pth``, :mod:`.raft`): keep every ``round(fps/8)``-th frame; for each consecutive pair, RAFT
    flow (20 iterations, frames replicate-padded to multiples of 8) and the mean of its largest 5 % magnitudes;
    the video moves when at least ``round(4 · frames/16)`` pairs exceed ``6 · min(H, W)/256`` pixels
    (:func:`dynamic_thresholds`). VBench's benchmark score is the mean of this 0/1 value over videos.

    The continuous, weight-free measure this package used to call ``dynamic_degree`` is
    :func:`~.motion.flow_magnitude`.

    Args:
        video: uint8 ``(T, H, W, 3)``, T ≥ 2, both sides ≥ 121 (padded to a multiple of 8, at least 128: RAFT's
            coarsest correlation level needs it; VBench's videos are ≥ 256).
        fps: the rate of ``video``'s frames; VBench samples down to about 8 fps (default 8: every frame kept).
        model: a :class:`~.raft.RAFT` (else :func:`~.raft.load_raft` with ``weights``), or any module called as
            ``model(img1, img2, iters=20)`` returning ``(flow_low, flow_up)``.
        device: torch device for the loaded model.

    Returns:
        1.0 or 0.0.

    Example:
        >>> dynamic_degree(video)  # doctest: +SKIP
        1.0
    """
    check_video(video, min_frames=2)
    interval = vbench_frame_interval(fps)
    if len(video[::interval]) < 2:
        raise IEAdaptValueError(f"dynamic_degree needs 2 frames after VBench's sampling (every {interval}th); got "
                                f"{len(video[::interval])} of {len(video)}.")
    padded = [side + (-side) % 8 for side in video.shape[1:3]]
    if min(padded) < MIN_PADDED_SIDE:
        raise IEAdaptValueError(
            f"dynamic_degree needs frames of at least {MIN_PADDED_SIDE - 7}×{MIN_PADDED_SIDE - 7} pixels (RAFT's "
            f"coarsest correlation level); got {video.shape[1]}×{video.shape[2]}. Use flow_magnitude for small videos."
        )
    model = model if model is not None else load_raft(weights, device)
    scores = raft_motion_scores(model, video, fps=fps, device=device)
    threshold, needed = dynamic_thresholds(video.shape[1], video.shape[2], len(video[::interval]))
    return float(len(scores) > 0 and int((scores > threshold).sum()) >= needed)
