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
* ``video`` — ``B' = row``; the query sequence is ``[frame 0 tokens, frame 1 tokens, …]`` with no text
  in it (Wan / LTX-Video 3-D self-attention over video tokens, and their cross-attention to text).
* ``joint_video_text`` — ``B' = row``; the sequence is ``[frame 0 tokens, …, text tokens]`` (HunyuanVideo
  dual- and single-stream blocks, Mochi — whose processor calls the attention once per row with only
  that row's unpadded text tokens; the interception labels each such call with its row).

A :class:`Rule` may name its layout; otherwise the kind's default applies (spatial/cross →
``frames_in_batch``, temporal → ``frames_in_sequence``, joint → ``joint``).

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
Layout = Literal["frames_in_batch", "frames_in_sequence", "joint", "video", "joint_video_text"]

_LAYOUT_OF_KIND: dict[str, Layout] = {
    "spatial": "frames_in_batch",
    "cross": "frames_in_batch",
    "temporal": "frames_in_sequence",
    "joint": "joint",
}


@dataclass(frozen=True)
class Rule:
    """One module-path pattern, the attention kind it denotes and (optionally) its token layout."""

    pattern: str
    kind: Kind
    layout: Layout | None = None


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
    latent_shape, default_size, call_defaults
        Latent shape of one sample, the default ``(height, width)``, extra pipeline-call arguments.
    temporal_patch
        Latent frames per token frame.
    experts
        Further pipeline attributes holding denoisers of the same class that take turns with the
        first (Wan 2.2's ``transformer_2``). When one is present every layer name starts with its
        denoiser's attribute (``transformer.blocks.0.attn1``, ``transformer_2.blocks.0.attn1``).
    frames_arg
        Denoiser ``forward`` parameter that gives the latent frames when ``sample`` is already packed
        into tokens (LTX-Video: ``num_frames``); ``None`` reads ``sample.shape[frame_axis]``.
    prompt_outputs
        Names of what the pipeline's ``encode_prompt`` returns, in order (pipeline-call argument
        names); ``prompt_embeds`` / ``negative_prompt_embeds`` label the CFG rows.
    frames_kwarg
        The pipeline-call argument taking the number of frames (Latte: ``video_length``).
    guidance_is_cfg
        ``guidance_scale > 1`` runs an unconditional branch (``False`` for HunyuanVideo, whose
        ``guidance_scale`` is the distilled guidance embedded in the transformer).
    cfg_forwards
        ``()``: the CFG branches run as one batched forward ``[uncond, cond]``; otherwise one forward per
        branch, in this order (Wan: ``("cond", "uncond")``).
    row_args
        Further denoiser ``forward`` arguments holding one entry per batch row (pooled text embeddings,
        distilled guidance, SVD's ``added_time_ids``) — guidance copies them with the rows it adds.
    size_multiple
        ``fn(pipe) -> int``: the pixel multiple height and width must be (VAE factor × patch size);
        ``None``: the UNet rule (VAE factor × its downsampling).
    attention_per_row
        The processor calls the attention once per batch row, in row order (Mochi: each row over its video
        tokens and its own valid text tokens, chosen by the layer's ``attention_mask`` ``[row, text]``). Editing
        then runs a target row over its source row's text mask and hands it the source call's tensors
        (:class:`~ieadapt_interp.methods.attend_from.PerRowSource`).
    condition_embeddings
        ``fn(pipe, call_kwargs, cfg) -> {"cond": …, "uncond": …}``: the embeddings that label the CFG rows
        of a pipeline not conditioned on text (SVD: the image embeddings; zeros for the unconditional row).
    decode
        ``fn(pipe, latents, num_frames, height, width) -> video [B, C, F, H, W]`` in ``[-1, 1]``: the
        pipeline's own VAE decode of its final latents (what its ``__call__`` does inline); ``None``: the
        pipeline's ``decode_latents(latents)``.
    blocks
        Attributes of the denoiser holding its transformer blocks (``ModuleList``), in the order its ``forward``
        runs them one after the other, each block's output the next one's input (CogVideoX:
        ``("transformer_blocks",)``; HunyuanVideo: double-stream then single-stream). ``()``: the blocks do not
        run in sequence (UNets with skip connections; Latte reshapes by batch between blocks). Guidance shares
        the blocks before the first perturbed one between the conditional row and its copies (prefix sharing).
    block_row_args
        The block ``forward`` parameters holding one entry per batch row (hidden states, text states, ``temb``,
        per-row masks or rotary tables); the rest (e.g. a rotary table shared by all rows) are left as they are.
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
    experts: tuple[str, ...] = ()
    frames_arg: str | None = None
    prompt_outputs: tuple[str, ...] | Callable[[object], tuple[str, ...]] = ("prompt_embeds",
                                                                              "negative_prompt_embeds")
    frames_kwarg: str = "num_frames"
    guidance_is_cfg: bool = True
    cfg_forwards: tuple[str, ...] = ()
    row_args: tuple[str, ...] = ()
    size_multiple: Callable[[object], int] | None = None
    attention_per_row: bool = False
    condition_embeddings: Callable[[object, dict, bool], dict] | None = None
    decode: Callable[[object, torch.Tensor, int, int, int], torch.Tensor] | None = None
    blocks: tuple[str, ...] = ()
    block_row_args: tuple[str, ...] = ()

    def block_list(self, denoiser: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """``[(path, block)]`` of the blocks run in sequence (:attr:`blocks`), in forward order; ``[]`` if none.

        >>> from ieadapt_interp import tiny_pipeline
        >>> pipe = tiny_pipeline("cogvideox")
        >>> [path for path, _ in get_adapter(pipe).block_list(pipe.transformer)]
        ['transformer_blocks.0', 'transformer_blocks.1']
        """
        return [(f"{attr}.{i}", block) for attr in self.blocks
                for i, block in enumerate(getattr(denoiser, attr, None) or ())]

    def latent_frames(self, bound: dict) -> int:
        """Latent frames of one denoiser call, from its bound ``forward`` arguments."""
        if self.frames_arg is not None and bound.get(self.frames_arg) is not None:
            return int(bound[self.frames_arg])
        return int(bound[self.sample_arg].shape[self.frame_axis])

    def token_frames(self, denoiser: torch.nn.Module, latent_frames: int) -> int:
        """Token frames of ``latent_frames`` latent frames (one token frame per ``temporal_patch`` latents)."""
        patch = max(1, int(self.temporal_patch(denoiser) or 1))
        return -(-int(latent_frames) // patch)

    def kind_of(self, path: str) -> Kind | None:
        rule = self.rule_of(path)
        return rule.kind if rule is not None else None

    def rule_of(self, path: str) -> Rule | None:
        """The first rule matching ``path`` (a module path inside one denoiser)."""
        for rule in self.rules:
            if re.fullmatch(rule.pattern, path):
                return rule
        return None

    def denoisers(self, pipe) -> dict[str, torch.nn.Module]:
        """``{pipeline attribute: denoiser}`` of every denoiser present, first expert first."""
        found = {a: getattr(pipe, a, None) for a in (self.denoiser_attr, *self.experts)}
        return {a: m for a, m in found.items() if m is not None}


_UNET_RANK = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def _unet_block(path: str) -> str:
    part = path.split(".")
    if part[0] == "mid_block":
        return "mid"
    return f"{part[0].split('_')[0]}.{part[1]}"


def _unet_order(path: str) -> tuple:
    """Forward order: block, layer ``i``; within it the attentions (every transformer block) before the motion module."""
    nums = [int(p) for p in path.split(".") if p.isdigit()]
    if path.startswith("mid_block"):
        nums = [0] + nums
    return (_UNET_RANK[path.split(".")[0]], nums[0], nums[1], ".motion_modules." in path, *nums[2:],
            path.endswith("attn2"))


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


_SDXL_PROMPT = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")

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
    prompt_outputs=lambda pipe: (_SDXL_PROMPT if getattr(pipe, "text_encoder_2", None) is not None
                                 else ("prompt_embeds", "negative_prompt_embeds")),
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
    blocks=("transformer_blocks",),
    block_row_args=("hidden_states", "encoder_hidden_states", "temb"),
)

def _cap_text(default: int) -> Callable[[object], dict]:
    """``max_sequence_length``: the pipeline default, capped by the tokenizer's own limit (tiny tokenizers)."""
    def defaults(pipe) -> dict:
        limit = getattr(getattr(pipe, "tokenizer", None), "model_max_length", None) or default
        return {"max_sequence_length": int(min(default, limit))}
    return defaults


def _depth_block(path: str) -> str:
    return f"depth.{path.split('.')[1]}"


def _video_latents(pipe, frames: int, height: int, width: int) -> tuple[int, ...]:
    """``[C, latent frames, h, w]`` of a video VAE with temporal compression (Wan, HunyuanVideo)."""
    f, t = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
    return (pipe.transformer.config.in_channels, (frames - 1) // t + 1, height // f, width // f)


def _wan_latents(pipe, frames: int, height: int, width: int) -> tuple[int, ...]:
    first = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
    f, t = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
    return (first.config.in_channels, (frames - 1) // t + 1, height // f, width // f)


def _wan_decode(pipe, latents, num_frames, height, width):
    cfg = pipe.vae.config
    latents = latents.to(pipe.vae.dtype)
    mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    std = torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    return pipe.vae.decode(latents * std + mean, return_dict=False)[0]


def _scaled_decode(pipe, latents, num_frames, height, width):
    """HunyuanVideo: latents / scaling_factor through the video VAE."""
    return pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor, return_dict=False)[0]


def _mochi_decode(pipe, latents, num_frames, height, width):
    cfg = pipe.vae.config
    if getattr(cfg, "latents_mean", None) is not None and getattr(cfg, "latents_std", None) is not None:
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
        std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std / cfg.scaling_factor + mean
    else:
        latents = latents / cfg.scaling_factor
    return pipe.vae.decode(latents.to(pipe.vae.dtype), return_dict=False)[0]


def _ltx_decode(pipe, latents, num_frames, height, width):
    """Unpack the tokens, denormalise, decode (decode timestep 0, no decode noise: the pipeline's defaults)."""
    f, t = pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio
    latents = pipe._unpack_latents(latents, (num_frames - 1) // t + 1, height // f, width // f,
                                   pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)
    latents = pipe._denormalize_latents(latents, pipe.vae.latents_mean, pipe.vae.latents_std,
                                        pipe.vae.config.scaling_factor).to(pipe.vae.dtype)
    timestep = None
    if pipe.vae.config.timestep_conditioning:
        timestep = torch.zeros(latents.shape[0], device=latents.device, dtype=latents.dtype)
    return pipe.vae.decode(latents, timestep, return_dict=False)[0]


WAN = Adapter(
    name="wan",
    denoiser_classes=("WanTransformer3DModel",),
    denoiser_attr="transformer",
    rules=(Rule(r"blocks\.\d+\.attn1", "joint", "video"), Rule(r"blocks\.\d+\.attn2", "cross", "video")),
    sample_arg="hidden_states",
    timestep_arg="timestep",
    text_arg="encoder_hidden_states",
    frame_axis=2,
    max_frames=lambda transformer: None,
    block_of=_depth_block,
    order_key=lambda path: (int(path.split(".")[1]), path.endswith("attn2")),
    latent_shape=_wan_latents,
    default_size=lambda pipe: (480, 832),
    call_defaults=_cap_text(512),
    temporal_patch=lambda transformer: int(transformer.config.patch_size[0]),
    experts=("transformer_2",),
    cfg_forwards=("cond", "uncond"),
    size_multiple=lambda pipe: int(pipe.vae_scale_factor_spatial) * int(
        (pipe.transformer if pipe.transformer is not None else pipe.transformer_2).config.patch_size[1]),
    decode=_wan_decode,
    blocks=("blocks",),
    block_row_args=("hidden_states", "encoder_hidden_states", "temb"),
)

LATTE = Adapter(
    name="latte",
    denoiser_classes=("LatteTransformer3DModel",),
    denoiser_attr="transformer",
    rules=(
        Rule(r"transformer_blocks\.\d+\.attn1", "spatial"),
        Rule(r"transformer_blocks\.\d+\.attn2", "cross"),
        Rule(r"temporal_transformer_blocks\.\d+\.attn1", "temporal"),
    ),
    sample_arg="hidden_states",
    timestep_arg="timestep",
    text_arg="encoder_hidden_states",
    frame_axis=2,
    max_frames=lambda transformer: int(transformer.config.video_length),
    block_of=_depth_block,
    order_key=lambda path: (int(path.split(".")[1]), path.startswith("temporal"), path.endswith("attn2")),
    latent_shape=lambda pipe, f, h, w: (pipe.transformer.config.in_channels, f, h // pipe.vae_scale_factor,
                                        w // pipe.vae_scale_factor),
    default_size=lambda pipe: (pipe.transformer.config.sample_size * pipe.vae_scale_factor,) * 2,
    call_defaults=lambda pipe: {"clean_caption": False, "negative_prompt": None},
    frames_kwarg="video_length",
    size_multiple=lambda pipe: int(pipe.vae_scale_factor) * int(pipe.transformer.config.patch_size),
    decode=lambda pipe, latents, f, h, w: pipe.decode_latents(latents, video_length=latents.shape[2]),
)


def _ltx_latents(pipe, frames: int, height: int, width: int) -> tuple[int, ...]:
    """LTX-Video takes latents already packed into tokens: ``[tokens, C]``."""
    cfg = pipe.transformer.config
    f, t = pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio
    tokens = ((frames - 1) // t + 1) // cfg.patch_size_t * (height // f // cfg.patch_size) * (width // f // cfg.patch_size)
    return (tokens, cfg.in_channels * cfg.patch_size_t * cfg.patch_size ** 2)


LTX = Adapter(
    name="ltx",
    denoiser_classes=("LTXVideoTransformer3DModel",),
    denoiser_attr="transformer",
    rules=(Rule(r"transformer_blocks\.\d+\.attn1", "joint", "video"),
           Rule(r"transformer_blocks\.\d+\.attn2", "cross", "video")),
    sample_arg="hidden_states",
    timestep_arg="timestep",
    text_arg="encoder_hidden_states",
    frame_axis=1,
    max_frames=lambda transformer: None,
    block_of=_depth_block,
    order_key=lambda path: (int(path.split(".")[1]), path.endswith("attn2")),
    latent_shape=_ltx_latents,
    default_size=lambda pipe: (512, 704),
    call_defaults=_cap_text(128),
    frames_arg="num_frames",
    prompt_outputs=("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                    "negative_prompt_attention_mask"),
    size_multiple=lambda pipe: int(pipe.vae_spatial_compression_ratio) * int(pipe.transformer.config.patch_size),
    decode=_ltx_decode,
    blocks=("transformer_blocks",),
    block_row_args=("hidden_states", "encoder_hidden_states", "temb", "image_rotary_emb",
                    "encoder_attention_mask"),
)

HUNYUANVIDEO = Adapter(
    name="hunyuanvideo",
    denoiser_classes=("HunyuanVideoTransformer3DModel",),
    denoiser_attr="transformer",
    rules=(Rule(r"transformer_blocks\.\d+\.attn", "joint", "joint_video_text"),
           Rule(r"single_transformer_blocks\.\d+\.attn", "joint", "joint_video_text")),
    sample_arg="hidden_states",
    timestep_arg="timestep",
    text_arg="encoder_hidden_states",
    frame_axis=2,
    max_frames=lambda transformer: None,
    block_of=lambda path: f"{'single' if path.startswith('single') else 'double'}.{path.split('.')[1]}",
    order_key=lambda path: (path.startswith("single"), int(path.split(".")[1])),
    latent_shape=_video_latents,
    default_size=lambda pipe: (720, 1280),
    call_defaults=_cap_text(256),
    temporal_patch=lambda transformer: int(transformer.config.patch_size_t),
    prompt_outputs=("prompt_embeds", "pooled_prompt_embeds", "prompt_attention_mask"),
    guidance_is_cfg=False,
    row_args=("pooled_projections", "guidance"),
    size_multiple=lambda pipe: int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size),
    decode=_scaled_decode,
    blocks=("transformer_blocks", "single_transformer_blocks"),
    block_row_args=("hidden_states", "encoder_hidden_states", "temb", "attention_mask", "token_replace_emb"),
)


MOCHI = Adapter(
    name="mochi",
    denoiser_classes=("MochiTransformer3DModel",),
    denoiser_attr="transformer",
    rules=(Rule(r"transformer_blocks\.\d+\.attn1", "joint", "joint_video_text"),),
    sample_arg="hidden_states",
    timestep_arg="timestep",
    text_arg="encoder_hidden_states",
    frame_axis=2,
    max_frames=lambda transformer: None,
    block_of=_depth_block,
    order_key=lambda path: (int(path.split(".")[1]),),
    latent_shape=lambda pipe, f, h, w: (pipe.transformer.config.in_channels, (f - 1) // pipe.vae_temporal_scale_factor
                                        + 1, h // pipe.vae_spatial_scale_factor, w // pipe.vae_spatial_scale_factor),
    default_size=lambda pipe: (480, 848),
    call_defaults=_cap_text(256),
    prompt_outputs=("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                    "negative_prompt_attention_mask"),
    size_multiple=lambda pipe: int(pipe.vae_spatial_scale_factor) * int(pipe.transformer.config.patch_size),
    attention_per_row=True,
    decode=_mochi_decode,
    blocks=("transformer_blocks",),
    block_row_args=("hidden_states", "encoder_hidden_states", "temb", "encoder_attention_mask"),
)


def _svd_image_embeddings(pipe, call: dict, cfg: bool) -> dict:
    """SVD's CFG rows: the CLIP image embedding of ``call["image"]`` (cond) and zeros (uncond), ``[1, 1, C]``."""
    emb = pipe._encode_image(call["image"], pipe._execution_device, 1, do_classifier_free_guidance=cfg)
    return {"uncond": emb[:1], "cond": emb[1:]} if cfg else {"cond": emb}


def _svd_order(path: str) -> tuple:
    return (*_unet_order(path)[:-1], "temporal_transformer_blocks" in path, path.endswith("attn2"))


_SVD_BLOCK = r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+\."

SVD = Adapter(
    name="svd",
    denoiser_classes=("UNetSpatioTemporalConditionModel",),
    denoiser_attr="unet",
    rules=(
        Rule(_SVD_BLOCK + r"transformer_blocks\.\d+\.attn1", "spatial"),
        Rule(_SVD_BLOCK + r"transformer_blocks\.\d+\.attn2", "cross"),
        Rule(_SVD_BLOCK + r"temporal_transformer_blocks\.\d+\.attn1", "temporal"),
        Rule(_SVD_BLOCK + r"temporal_transformer_blocks\.\d+\.attn2", "cross", "frames_in_sequence"),
    ),
    sample_arg="sample",
    timestep_arg="timestep",
    text_arg="encoder_hidden_states",
    frame_axis=1,
    max_frames=lambda unet: None,
    block_of=_unet_block,
    order_key=_svd_order,
    latent_shape=lambda pipe, f, h, w: (f, pipe.unet.config.in_channels // 2, h // pipe.vae_scale_factor,
                                        w // pipe.vae_scale_factor),
    default_size=lambda pipe: (576, 1024),
    prompt_outputs=(),
    row_args=("added_time_ids",),
    condition_embeddings=_svd_image_embeddings,
)

ADAPTERS: tuple[Adapter, ...] = (ANIMATEDIFF, COGVIDEOX, WAN, LATTE, LTX, HUNYUANVIDEO, MOCHI, SVD)


def get_adapter(pipe) -> Adapter:
    """The adapter for ``pipe``'s denoiser; a clear error for unsupported architectures.

    >>> from ieadapt_interp import tiny_pipeline
    >>> get_adapter(tiny_pipeline("animatediff")).name
    'animatediff'
    """
    for adapter in ADAPTERS:
        found = adapter.denoisers(pipe)
        if found and type(next(iter(found.values()))).__name__ in adapter.denoiser_classes:
            return adapter
    found = {a: type(getattr(pipe, a)).__name__ for a in ("unet", "transformer") if getattr(pipe, a, None) is not None}
    supported = ", ".join(f"{a.name} ({'/'.join(a.denoiser_classes)})" for a in ADAPTERS)
    raise IEAdaptTypeError(
        f"Unsupported architecture: {type(pipe).__name__} with denoiser {found or 'none'}. "
        f"Supported: {supported}. A new architecture needs one Adapter entry in ieadapt_interp/core/adapters.py."
    )


def denoiser(pipe) -> torch.nn.Module:
    """The pipeline's (first) denoiser module (UNet or transformer)."""
    return next(iter(get_adapter(pipe).denoisers(pipe).values()))


def encode_prompt(pipe, prompt: str, negative_prompt: str, cfg: bool) -> dict[str, torch.Tensor]:
    """The pipeline's own ``encode_prompt`` for one prompt, named as pipeline-call arguments.

    Returns e.g. ``{"prompt_embeds": [1, T, C], "negative_prompt_embeds": [1, T, C]}`` (plus masks or
    pooled embeddings where the pipeline has them; no ``negative_*`` entry without CFG).

    >>> from ieadapt_interp import tiny_pipeline
    >>> sorted(encode_prompt(tiny_pipeline("ltx"), "a red circle", "", cfg=False))
    ['prompt_attention_mask', 'prompt_embeds']
    """
    import inspect

    adapter = get_adapter(pipe)
    names = adapter.prompt_outputs(pipe) if callable(adapter.prompt_outputs) else adapter.prompt_outputs
    if not names:
        raise IEAdaptTypeError(f"{type(pipe).__name__} is not conditioned on a text prompt; call the pipeline "
                               "inside ieadapt_interp.Interception(pipe, embeddings=...) instead.")
    params = inspect.signature(pipe.encode_prompt).parameters
    kwargs = {**adapter.call_defaults(pipe), "prompt": prompt, "negative_prompt": negative_prompt,
              "do_classifier_free_guidance": cfg, "device": pipe._execution_device, "num_images_per_prompt": 1,
              "num_videos_per_prompt": 1}
    outputs = pipe.encode_prompt(**{k: v for k, v in kwargs.items() if k in params})
    named = {k: v for k, v in zip(names, outputs) if v is not None}
    return {k: v for k, v in named.items() if cfg or not k.startswith("negative_")}


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer: ``name`` is its module path inside the denoiser."""

    name: str
    kind: Kind
    block: str
    index: int
    heads: int
    module: torch.nn.Module
    layout_name: Layout | None = None
    expert: str = ""  # the pipeline attribute of its denoiser when there are several (Wan 2.2)

    @property
    def layout(self) -> Layout:
        return self.layout_name or _LAYOUT_OF_KIND[self.kind]


def layer_records(pipe) -> list[AttentionLayer]:
    """Every attention layer of ``pipe`` in forward order (``index`` counts within a kind, from 1)."""
    adapter = get_adapter(pipe)
    denoisers = adapter.denoisers(pipe)
    several = len(denoisers) > 1
    records = []
    counts: dict[str, int] = {}
    for attr, model in denoisers.items():
        found = []
        for path, module in model.named_modules():
            rule = adapter.rule_of(path)
            if rule is not None:
                found.append((path, rule, module))
        found.sort(key=lambda item: adapter.order_key(item[0]))
        prefix = f"{attr}." if several else ""
        for path, rule, module in found:
            counts[rule.kind] = counts.get(rule.kind, 0) + 1
            records.append(AttentionLayer(prefix + path, rule.kind, prefix + adapter.block_of(path),
                                          counts[rule.kind], int(module.heads), module, rule.layout,
                                          attr if several else ""))
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
