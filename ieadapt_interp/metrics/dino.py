"""DINO ViT-B/16 (Caron et al. 2021) as a ``transformers.ViTModel``, for VBench's ``subject_consistency``.

Two local checkpoint layouts load: a Hugging Face folder of ``facebook/dino-vitb16`` (``config.json`` +
weights), or the original torch-hub file ``dino_vitbase16_pretrain.pth`` (what VBench's ``torch.hub.load``
of ``facebookresearch/dino`` uses), converted here key by key.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers is imported lazily: it takes seconds
    from transformers import ViTConfig, ViTModel

from .weights import HFModel, MissingWeightsError, WeightFile, locate_file, locate_hf_model

DINO_HF = HFModel("facebook/dino-vitb16", "DINO ViT-B/16, Hugging Face facebook/dino-vitb16")
DINO_HUB = WeightFile(
    "dino_vitbase16_pretrain.pth",
    "DINO ViT-B/16 backbone, https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/"
    "dino_vitbase16_pretrain.pth",
)


def dino_vitb16_config(**overrides: object) -> ViTConfig:
    """ViT-B/16 as in the DINO release: 12 layers, width 768, 12 heads, MLP 3072, LayerNorm eps 1e-6."""
    from transformers import ViTConfig

    base = {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "patch_size": 16,
        "image_size": 224,
        "qkv_bias": True,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
    }
    return ViTConfig(**{**base, **overrides})


def _block_map(i: int, new_layout: bool) -> dict[str, str]:
    src = f"blocks.{i}."
    if new_layout:  # transformers ≥ 5
        dst = f"layers.{i}."
        names = {
            "norm1": "layernorm_before",
            "norm2": "layernorm_after",
            "attn.proj": "attention.o_proj",
            "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2",
        }
    else:  # transformers 4.x
        dst = f"encoder.layer.{i}."
        names = {
            "norm1": "layernorm_before",
            "norm2": "layernorm_after",
            "attn.proj": "attention.output.dense",
            "mlp.fc1": "intermediate.dense",
            "mlp.fc2": "output.dense",
        }
    return {src + k: dst + v for k, v in names.items()}


def _qkv_names(i: int, new_layout: bool) -> list[str]:
    if new_layout:
        return [f"layers.{i}.attention.{p}_proj" for p in "qkv"]
    return [f"encoder.layer.{i}.attention.attention.{p}" for p in ("query", "key", "value")]


def convert_dino_hub_state_dict(hub_state: dict, model: ViTModel) -> dict:
    """Map a ``facebookresearch/dino`` ViT state dict onto ``model``'s (a ``ViTModel``) parameter names."""
    new_layout = any(k.startswith("layers.") for k in model.state_dict())
    out = {
        "embeddings.cls_token": hub_state["cls_token"],
        "embeddings.position_embeddings": hub_state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": hub_state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": hub_state["patch_embed.proj.bias"],
        "layernorm.weight": hub_state["norm.weight"],
        "layernorm.bias": hub_state["norm.bias"],
    }
    for i in range(model.config.num_hidden_layers):
        for src, dst in _block_map(i, new_layout).items():
            for param in ("weight", "bias"):
                out[f"{dst}.{param}"] = hub_state[f"{src}.{param}"]
        for param in ("weight", "bias"):
            chunks = hub_state[f"blocks.{i}.attn.qkv.{param}"].chunk(3, dim=0)
            for name, chunk in zip(_qkv_names(i, new_layout), chunks):
                out[f"{name}.{param}"] = chunk
    return out


def config_from_hub_state(hub_state: dict) -> ViTConfig:
    """Read a DINO ViT's dimensions off its state dict (DINO ViTs all use 64-dim heads)."""
    hidden = hub_state["cls_token"].shape[-1]
    patch = hub_state["patch_embed.proj.weight"].shape[-1]
    grid = round((hub_state["pos_embed"].shape[1] - 1) ** 0.5)
    depth = len({k.split(".")[1] for k in hub_state if k.startswith("blocks.")})
    return dino_vitb16_config(
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=max(hidden // 64, 1),
        intermediate_size=hub_state["blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=patch,
        image_size=grid * patch,
    )


def _from_hub_file(path: Path) -> ViTModel:
    from transformers import ViTModel

    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("teacher", state) if isinstance(state, dict) else state
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    model = ViTModel(config_from_hub_state(state), add_pooling_layer=False)
    model.load_state_dict(convert_dino_hub_state_dict(state, model))
    return model


@functools.lru_cache(maxsize=2)
def _load_dino_cached(path: str, device: str) -> ViTModel:
    from transformers import ViTModel

    source = Path(path)
    if source.is_dir():
        model = ViTModel.from_pretrained(source, add_pooling_layer=False, local_files_only=True)
    else:
        model = _from_hub_file(source)
    return model.to(device).eval().requires_grad_(False)


def _locate_dino(weights: str | os.PathLike | None) -> Path:
    if weights is not None:
        return locate_hf_model("subject_consistency", DINO_HF, weights)
    try:
        return locate_hf_model("subject_consistency", DINO_HF)
    except MissingWeightsError as hf_missing:
        try:
            return locate_file("subject_consistency", DINO_HUB)
        except MissingWeightsError as hub_missing:
            message = f"{hub_missing}\nAlternatively: {hf_missing}"
            raise MissingWeightsError("subject_consistency", DINO_HUB.filename, message) from None


def load_dino(weights: str | os.PathLike | None = None, device: str = "cpu") -> ViTModel:
    """Load DINO ViT-B/16 from a HF folder or a torch-hub ``.pth`` (``weights``), else from
    ``$IEADAPT_WEIGHTS_DIR/dino-vitb16/`` or ``$IEADAPT_WEIGHTS_DIR/dino_vitbase16_pretrain.pth``, the HF cache,
    or the torch hub cache. Cached per (path, device); eval mode."""
    return _load_dino_cached(str(_locate_dino(weights).resolve()), str(device))
