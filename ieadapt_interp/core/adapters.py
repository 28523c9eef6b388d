"""Architecture adapters: the only place that knows module paths.

An adapter says, for one denoiser class, which modules are attention layers, what kind each is
(``spatial`` | ``temporal`` | ``cross`` | ``joint``), which block it sits in, how its
scaled-dot-product call lays tokens out (so per-frame statistics can be formed), and how the
denoiser's forward receives the latents, the timestep and the text embeddings.

Token layouts of the ``F.scaled_dot_product_attention`` call (``q: [B', head, query, dim]``):

* ``frames_in_batch`` — ``B' = row · F + frame``; every query token of an element is in one frame
  (AnimateDiff spatial self- and cross-attention).
* ``frames_in_sequence`` — ``B' = row · P + position``; the query index is the frame
  (AnimateDiff motion modules).
* ``joint`` — ``B' = row``; the sequence is ``[text tokens, frame 0 tokens, frame 1 tokens, …]``
  (CogVideoX 3-D full attention).

``row`` is the denoiser's batch row (sample × CFG branch). Everything above this module is
architecture-free: a new model (Wan, LTX-Video, …) needs only one more :class:`Adapter`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal

import pandas as pd
import torch
from .errors import IEAdaptTypeError

Kind = Literal["spatial", "temporal", "cross", "joint"]
Layout = Literal["frames_in_batch", "frames_in_sequence", "joint"]

_LAYOUT_OF_KIND: dict[str, Layout] = {
    "spatial": "frames_in_batch",
    "cross": "frames_in_batch",
    "temporal": "frames_in_sequence",
    "joint": "joint",
}


@dataclass(frozen=True)
class Rule:
    """One module-path pattern and the attention kind it denotes."""

    pattern: str
    kind: Kind


@dataclass(frozen=True)
class Adapter:
    """Facts about one denoiser architecture (data, not code paths).

    Parameters
    ----------
    name
        Short architecture name (``"animatediff"``).
    denoiser_classes
        Class names of the denoiser module this adapter handles.
    denoiser_attr
        Attribute of the pipeline holding the denoiser (``"unet"``, ``"transformer"``).
    rules
        Module-path regexes (relative to the denoiser) → kind.
    sample_arg, timestep_arg, text_arg
        Names of the denoiser ``forward`` parameters carrying latents, timestep and text embeddings.
    frame_axis
        Axis of the latent ``sample`` that indexes frames.
    max_frames
        ``fn(denoiser) -> int | None``: the most frames the model accepts (motion module positional
        table), or ``None`` for no limit.
    block_of
        ``fn(path) -> str``: the block label (``down.0``, ``mid``, ``up.3``, ``depth.12``).
    order_key
        ``fn(path) -> tuple``: sort key giving forward order.
    """

    name: str
    denoiser_classes: tuple[str, ...]
    denoiser_attr: str
    rules: tuple[Rule, ...]
    sample_arg: str
    timestep_arg: str
    text_arg: str
    frame_axis: int
    max_frames: Callable[[torch.nn.Module], int | None]
    block_of: Callable[[str], str]
    order_key: Callable[[str], tuple]
    latent_shape: Callable[[object, int, int, int], tuple[int, ...]] = lambda pipe, f, h, w: ()
    default_size: Callable[[object], tuple[int, int]] = lambda pipe: (512, 512)
    call_defaults: Callable[[object], dict] = lambda pipe: {}
    temporal_patch: Callable[[torch.nn.Module], int] = lambda denoiser: 1

    def token_frames(self, denoiser: torch.nn.Module, latent_frames: int) -> int:
        """Token frames of ``latent_frames`` latent frames (one token frame per ``temporal_patch`` latents)."""
        patch = max(1, int(self.temporal_patch(denoiser) or 1))
        return -(-int(latent_frames) // patch)

    def kind_of(self, path: str) -> Kind | None:
        for rule in self.rules:
            if re.fullmatch(rule.pattern, path):
                return rule.kind
        return None


_UNET_RANK = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def _unet_block(path: str) -> str:
    part = path.split(".")
    if part[0] == "mid_block":
        return "mid"
    return f"{part[0].split('_')[0]}.{part[1]}"


def _unet_order(path: str) -> tuple:
    nums = [int(p) for p in path.split(".") if p.isdigit()]
    if path.startswith("mid_block"):
        nums = [0] + nums
    return (_UNET_RANK[path.split(".")[0]], *nums, path.endswith("attn2"))


def _motion_max_frames(unet: torch.nn.Module) -> int | None:
    for module in unet.modules():
        table = getattr(module, "pos_embed", None)
        if table is not None and hasattr(table, "pe"):
            return int(table.pe.shape[1])
    return None


def _unet_latents(pipe, frames: int, height: int, width: int) -> tuple[int, ...]:
    f = pipe.vae_scale_factor
    return (pipe.unet.config.in_channels, frames, height // f, width // f)


def _unet_size(pipe) -> tuple[int, int]:
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return (side, side)


ANIMATEDIFF = Adapter(
    name="animatediff",
    denoiser_classes=("UNetMotionModel",),
    denoiser_attr="unet",
    rules=(
        Rule(r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+\.transformer_blocks\.\d+\.attn1",
             "spatial"),
        Rule(r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+\.transformer_blocks\.\d+\.attn2",
             "cross"),
        Rule(r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.motion_modules\.\d+\.transformer_blocks\.\d+\.attn[12]",
             "temporal"),
    ),
    sample_arg="sample",
    timestep_arg="timestep",
    text_arg="encoder_hidden_states",
    frame_axis=2,
    max_frames=_motion_max_frames,
    block_of=_unet_block,
    order_key=_unet_order,
    latent_shape=_unet_latents,
    default_size=_unet_size,
)


def _cog_latents(pipe, frames: int, height: int, width: int) -> tuple[int, ...]:
    f, t = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
    return ((frames - 1) // t + 1, pipe.transformer.config.in_channels, height // f, width // f)


def _cog_size(pipe) -> tuple[int, int]:
    cfg, f = pipe.transformer.config, pipe.vae_scale_factor_spatial
    return (cfg.sample_height * f, cfg.sample_width * f)


def _cog_defaults(pipe) -> dict:
    return {"max_sequence_length": int(pipe.transformer.config.max_text_seq_length)}


COGVIDEOX = Adapter(
    name="cogvideox",
    denoiser_classes=("CogVideoXTransformer3DModel",),
    denoiser_attr="transformer",
    rules=(Rule(r"transformer_blocks\.\d+\.attn1", "joint"),),
    sample_arg="hidden_states",
    timestep_arg="timestep",
    text_arg="encoder_hidden_states",
    frame_axis=1,
    max_frames=lambda transformer: None,
    block_of=lambda path: f"depth.{path.split('.')[1]}",
    order_key=lambda path: (int(path.split(".")[1]),),
    latent_shape=_cog_latents,
    default_size=_cog_size,
    call_defaults=_cog_defaults,
    temporal_patch=lambda transformer: getattr(transformer.config, "patch_size_t", None) or 1,
)

ADAPTERS: tuple[Adapter, ...] = (ANIMATEDIFF, COGVIDEOX)


def get_adapter(pipe) -> Adapter:
    """The adapter for ``pipe``'s denoiser; a clear error for unsupported architectures.

    >>> from ieadapt_interp import tiny_pipeline
    >>> get_adapter(tiny_pipeline("animatediff")).name
    'animatediff'
    """
    for adapter in ADAPTERS:
        denoiser = getattr(pipe, adapter.denoiser_attr, None)
        if denoiser is not None and type(denoiser).__name__ in adapter.denoiser_classes:
            return adapter
    found = {a: type(getattr(pipe, a)).__name__ for a in ("unet", "transformer") if getattr(pipe, a, None) is not None}
    supported = ", ".join(f"{a.name} ({'/'.join(a.denoiser_classes)})" for a in ADAPTERS)
    raise IEAdaptTypeError(
        f"Unsupported architecture: {type(pipe).__name__} with denoiser {found or 'none'}. "
        f"Supported: {supported}. A new architecture needs one Adapter entry in ieadapt_interp/core/adapters.py."
    )


def denoiser(pipe) -> torch.nn.Module:
    """The pipeline's denoiser module (UNet or transformer)."""
    return getattr(pipe, get_adapter(pipe).denoiser_attr)


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer: ``name`` is its module path inside the denoiser."""

    name: str
    kind: Kind
    block: str
    index: int
    heads: int
    module: torch.nn.Module

    @property
    def layout(self) -> Layout:
        return _LAYOUT_OF_KIND[self.kind]


def layer_records(pipe) -> list[AttentionLayer]:
    """Every attention layer of ``pipe`` in forward order (``index`` counts within a kind, from 1)."""
    adapter = get_adapter(pipe)
    found = []
    for path, module in getattr(pipe, adapter.denoiser_attr).named_modules():
        kind = adapter.kind_of(path)
        if kind is not None:
            found.append((path, kind, module))
    found.sort(key=lambda item: adapter.order_key(item[0]))
    counts: dict[str, int] = {}
    records = []
    for path, kind, module in found:
        counts[kind] = counts.get(kind, 0) + 1
        records.append(AttentionLayer(path, kind, adapter.block_of(path), counts[kind], int(module.heads), module))
    return records


def attention_layers(pipe) -> pd.DataFrame:
    """One row per attention layer of ``pipe``, in forward order.

    Columns: ``name`` (module path in the denoiser), ``kind`` (spatial | temporal | cross | joint),
    ``block`` (``down.0`` … ``mid`` … ``up.3`` or ``depth.N``), ``index`` (forward order within its
    kind, from 1), ``heads``, ``layout``.

    >>> from ieadapt_interp import tiny_pipeline
    >>> df = attention_layers(tiny_pipeline("animatediff"))
    >>> int((df.kind == "spatial").sum())
    16
    """
    rows = [
        {"name": r.name, "kind": r.kind, "block": r.block, "index": r.index, "heads": r.heads, "layout": r.layout}
        for r in layer_records(pipe)
    ]
    return pd.DataFrame(rows, columns=["name", "kind", "block", "index", "heads", "layout"])
