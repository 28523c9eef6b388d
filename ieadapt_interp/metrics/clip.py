"""CLIP text–video alignment: ``clip_score`` and ``clip_directional_similarity`` (transformers ``CLIPModel``)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from ..core.errors import IEAdaptValueError

if TYPE_CHECKING:  # transformers is imported lazily: it takes seconds
    from transformers import CLIPModel

from .video import center_crop, check_pair, check_video, resize_shorter, to_tensor255
from .weights import HFModel, locate_hf_model

CLIP_L14 = HFModel(
    "openai/clip-vit-large-patch14", "OpenAI CLIP ViT-L/14, Hugging Face openai/clip-vit-large-patch14"
)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipBundle:
    """A CLIP model with its tokenizer (anything callable like a Hugging Face tokenizer)."""

    model: CLIPModel
    tokenizer: object


def clip_pixels(video: np.ndarray, size: int, device: str | torch.device) -> torch.Tensor:
    """VBench's ``clip_transform``: bicubic resize of the shorter side to ``size``, centre crop, CLIP
    normalisation. uint8 ``(T, H, W, 3)`` → float ``(T, 3, size, size)``."""
    frames = center_crop(resize_shorter(to_tensor255(video, device), size, "bicubic"), size) / 255.0
    mean = torch.tensor(CLIP_MEAN, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=frames.device).view(1, 3, 1, 1)
    return (frames - mean) / std


def _pooled(output: object) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def image_embeddings(model: CLIPModel, video: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """Projected CLIP image embeddings ``(T, D)`` (not normalised) of every frame."""
    device = next(model.parameters()).device
    size = model.config.vision_config.image_size
    chunks = [
        _pooled(model.get_image_features(pixel_values=clip_pixels(video[i : i + batch_size], size, device)))
        for i in range(0, len(video), batch_size)
    ]
    return torch.cat(chunks).float()


def text_embeddings(bundle: ClipBundle, prompts: list[str]) -> torch.Tensor:
    """Projected CLIP text embeddings ``(P, D)`` (not normalised); prompts truncated to CLIP's context."""
    device = next(bundle.model.parameters()).device
    max_length = bundle.model.config.text_config.max_position_embeddings
    tokens = bundle.tokenizer(
        prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return _pooled(bundle.model.get_text_features(**{k: v.to(device) for k, v in tokens.items()})).float()


@functools.lru_cache(maxsize=2)
def _load_clip_cached(path: str, device: str) -> ClipBundle:
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval().requires_grad_(False)
    return ClipBundle(model, AutoTokenizer.from_pretrained(path, local_files_only=True))


def load_clip(
    weights: str | os.PathLike | None = None, device: str = "cpu", metric: str = "clip_score"
) -> ClipBundle:
    """Load a CLIP model + tokenizer from a Hugging Face folder (default ``openai/clip-vit-large-patch14``:
    ``weights``, else ``$IEADAPT_WEIGHTS_DIR/clip-vit-large-patch14/``, else the HF cache). Cached; eval mode."""
    path = locate_hf_model(metric, CLIP_L14, weights)
    return _load_clip_cached(str(Path(path).resolve()), str(device))


def _check_prompt(prompt: object, name: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise IEAdaptValueError(f"{name} must be a non-empty string, got {prompt!r}")
    return prompt


@torch.no_grad()
def clip_score(
    video: np.ndarray,
    prompt: str,
    *,
    model: ClipBundle | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
) -> float:
    """CLIP score: ``100 · max(cos(E_img(frame), E_txt(prompt)), 0)``, mean over frames (higher = better aligned).

    Source: Hessel et al. 2021, "CLIPScore" (with weight 100 instead of 2.5, as torchmetrics'
    ``CLIPScore``; clipped per frame); default backbone CLIP ViT-L/14 (Radford et al. 2021), VBench's
    ``clip_transform`` preprocessing (bicubic shorter side → 224, centre crop).

    Args:
        video: uint8 ``(T, H, W, 3)``.
        prompt: the text the video should show.
        model: a :class:`ClipBundle` (else :func:`load_clip` with ``weights``).

    Returns:
        A float in [0, 100].

    Example:
        >>> clip_score(video, "a red ball rolling", model=load_clip("~/w/clip-vit-large-patch14"))  # doctest: +SKIP
        27.1
    """
    check_video(video)
    _check_prompt(prompt, "prompt")
    bundle = model if model is not None else load_clip(weights, device)
    image = F.normalize(image_embeddings(bundle.model, video), dim=-1)
    text = F.normalize(text_embeddings(bundle, [prompt]), dim=-1)
    return float((100.0 * (image @ text.T).squeeze(-1).clamp(min=0)).mean())


@torch.no_grad()
def clip_directional_similarity(
    video: np.ndarray,
    reference: np.ndarray,
    source_prompt: str,
    target_prompt: str,
    *,
    model: ClipBundle | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
) -> float:
    """CLIP directional similarity of an edit (higher = the edit moves the video the way the text moves).

    Source: Gal et al. 2022, "StyleGAN-NADA" (directional CLIP loss), as used for editing by InstructPix2Pix
    and diffusers: ``cos(E_img(edit) − E_img(source), E_txt(target) − E_txt(source))`` with L2-normalised
    embeddings, computed per frame pair and averaged over frames.

    Args:
        video: the edited video, uint8 ``(T, H, W, 3)``.
        reference: the source video, same shape.
        source_prompt, target_prompt: the source and target descriptions.
        model: a :class:`ClipBundle` (else :func:`load_clip` with ``weights``).

    Returns:
        A float in [-1, 1] (0 when the edit leaves the video unchanged).

    Example:
        >>> clip_directional_similarity(edit, src, "a cat", "a dog", model=bundle)  # doctest: +SKIP
        0.21
    """
    check_video(video)
    check_pair(video, reference)
    texts = [_check_prompt(source_prompt, "source_prompt"), _check_prompt(target_prompt, "target_prompt")]
    bundle = model if model is not None else load_clip(weights, device, metric="clip_directional_similarity")
    edit = F.normalize(image_embeddings(bundle.model, video), dim=-1)
    source = F.normalize(image_embeddings(bundle.model, reference), dim=-1)
    text = F.normalize(text_embeddings(bundle, texts), dim=-1)
    return float(F.cosine_similarity(edit - source, (text[1] - text[0]).unsqueeze(0), dim=-1).mean())
