"""Running a pipeline with attention capture and/or perturbation: :func:`trace` and :func:`generate`.

>>> from ieadapt_interp import tiny_pipeline, trace
>>> pipe = tiny_pipeline()
>>> run = trace(pipe, "a red circle", num_frames=4, num_inference_steps=2, height=16, width=16)
>>> run.video.shape, dict(run.stats.entropy.sizes)
((4, 16, 16, 3), {'step': 2, 'layer': 72, 'head': 2, 'frame': 4})
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import xarray as xr

from ..core.adapters import attention_layers, encode_prompt, get_adapter, layer_records
from ..core.stats import maps_tree, stats_dataset
from ..core.interception import Interception
from ..core.maps import MapRequest
from .attend_from import AttendFrom, AttendFromHandler
from ..core.layers import capture_layers
from .perturbation import LayerSpec, PerturbSpec, as_perturbations, perturbation_handlers
from .guidance import Guidance, guiding
from ..core.versions import versions_string
from ..core.errors import IEAdaptTypeError, IEAdaptValueError

BranchChoice = Literal["cond", "uncond", "both", "all"]
#: rows each ``branch=`` choice records; ``all`` adds guidance's ``pos`` / ``neg`` rows
_RECORDED = {"cond": ("cond",), "uncond": ("uncond",), "both": ("cond", "uncond"),
             "all": ("cond", "uncond", "pos", "neg")}


@dataclass
class Result:
    """What a run returns.

    ``videos``: uint8 ``[sample, frame, H, W, 3]``; ``video`` is the first sample. ``stats``: the
    per-(step, layer, head, frame) Dataset when capture was on. ``maps``: a DataTree of pooled maps
    when requested.
    """

    videos: np.ndarray
    stats: xr.Dataset | None = None
    maps: xr.DataTree | None = None

    @property
    def video(self) -> np.ndarray:
        return self.videos[0]


def _check_prompt(prompt) -> str:
    if not isinstance(prompt, str):
        raise IEAdaptTypeError(f"prompt must be one string; got {type(prompt).__name__}. Run one prompt per call "
                        "(use ieadapt_interp.sweep for many).")
    if not prompt.strip():
        raise IEAdaptValueError("The prompt is empty: give the text the video should show, e.g. 'a red circle moving left'.")
    return prompt


def _check_frames(pipe, num_frames: int) -> None:
    adapter = get_adapter(pipe)
    limit = adapter.max_frames(getattr(pipe, adapter.denoiser_attr))
    if num_frames < 1:
        raise IEAdaptValueError(f"num_frames must be ≥ 1; got {num_frames}.")
    if limit is not None and num_frames > limit:
        raise IEAdaptValueError(f"num_frames={num_frames} exceeds the motion module's maximum sequence length {limit} "
                         f"(motion_max_seq_length); generate at most {limit} frames.")


def _encode(pipe, prompt: str, negative_prompt: str, cfg: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The pipeline's own ``encode_prompt`` for one prompt → ``(cond [1,T,C], uncond [1,T,C] | None)``."""
    named = encode_prompt(pipe, prompt, negative_prompt, cfg)
    return named["prompt_embeds"], named.get("negative_prompt_embeds")


def _noise(pipe, seed: int, num_frames: int, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    shape = (1, *get_adapter(pipe).latent_shape(pipe, num_frames, height, width))
    generator = torch.Generator("cpu").manual_seed(seed)
    return randn_tensor(shape, generator=generator, device=pipe._execution_device, dtype=dtype)


def _to_uint8(frames) -> np.ndarray:
    arr = frames if isinstance(frames, np.ndarray) else np.asarray(frames)
    return (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def generate(
    pipe,
    prompt: str,
    *,
    num_frames: int = 16,
    num_inference_steps: int = 25,
    guidance_scale: float = 7.5,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str = "",
    perturb: PerturbSpec = None,
    variants: Sequence[PerturbSpec] | None = None,
    capture: LayerSpec | bool = False,
    branch: BranchChoice = "cond",
    maps: MapRequest | None = None,
    attend_from: Sequence[AttendFrom] = (),
    guidance: Guidance | None = None,
    progress: bool = False,
    **pipeline_kwargs,
) -> Result:
    """Generate a video, optionally perturbing attention and capturing its statistics.

    Parameters
    ----------
    perturb
        Applied to every sample: a :class:`~ieadapt_interp.Perturbation`, a list of them, or the
        shorthand ``{layer_name: "identity" | "uniform"}``. By default in every CFG branch.
    variants
        One perturbation spec per sample; all samples share the prompt and the initial noise and
        run in **one** batched forward pass (``None`` in the list = unperturbed).
    capture
        ``False``; ``True`` (every attention layer); or a layer spec (name, kind, list, Layers).
    branch
        Which CFG branch the statistics describe: ``cond`` (default), ``uncond``, ``both``, or ``all``
        (also guidance's ``pos`` / ``neg`` rows; the Dataset's ``branch`` coordinate says which is which).
    maps
        A :class:`~ieadapt_interp.MapRequest` to materialise pooled maps (returned as a DataTree).
    guidance
        A :class:`~ieadapt_interp.Guidance`: IE-Adapt / PAG quality guidance in the same batched forward
        (see :mod:`ieadapt_interp.methods.guidance`).

    Returns a :class:`Result` (``.video`` uint8 ``[frame, H, W, 3]``, ``.videos`` with a sample axis,
    ``.stats``, ``.maps``). The pipeline is left exactly as it was, also on errors.

    >>> from ieadapt_interp import tiny_pipeline, identity
    >>> pipe = tiny_pipeline()
    >>> out = generate(pipe, "a red circle", num_frames=4, num_inference_steps=1, height=16, width=16,
    ...                perturb={"down_blocks.0.attentions.0.transformer_blocks.0.attn1": "identity"})
    >>> out.video.dtype
    dtype('uint8')
    """
    _check_prompt(prompt)
    _check_frames(pipe, num_frames)
    if branch not in _RECORDED:
        raise IEAdaptValueError(f"branch must be 'cond', 'uncond', 'both' or 'all'; got {branch!r}.")
    if guidance is not None and not isinstance(guidance, Guidance):
        raise IEAdaptTypeError(f"guidance= takes an ieadapt_interp.Guidance; got {type(guidance).__name__}.")
    if isinstance(guidance, Guidance) and not isinstance(guidance.scale, float) and \
            len(guidance.scale) != num_inference_steps:
        raise IEAdaptValueError(f"The guidance scale schedule has {len(guidance.scale)} values for "
                                f"{num_inference_steps} steps; give one value per step.")
    guidance_layers = guidance.resolve(pipe) if guidance is not None else []
    if variants is not None and perturb is not None:
        raise IEAdaptValueError("Give either perturb= (same for every sample) or variants= (one per sample), not both.")
    specs = [as_perturbations(v) for v in variants] if variants is not None else [as_perturbations(perturb)]
    if not specs:
        raise IEAdaptValueError("variants= is empty: give at least one perturbation spec (None = unperturbed).")
    if attend_from and get_adapter(pipe).attention_per_row:
        raise IEAdaptValueError(f"{type(pipe).__name__} runs its attention once per batch row, so attend_from= "
                                "needs each target row's text rewritten to its source's before the layer runs; "
                                "ia.edit does that (use it), generate(attend_from=...) does not.")
    handlers = [*[AttendFromHandler(a, name=f"attend_from[{i}]") for i, a in enumerate(attend_from)],
                *perturbation_handlers(specs, per_sample=variants is not None),
                *(guidance.handlers(guidance_layers) if guidance is not None else [])]
    records, table = layer_records(pipe), attention_layers(pipe)
    capture_names = capture_layers(capture, table)
    cfg = guidance_scale > 1.0 and get_adapter(pipe).guidance_is_cfg
    if branch != "cond" and not cfg:
        raise IEAdaptValueError(f"branch={branch!r} needs classifier-free guidance (guidance_scale > 1).")
    record_branches = _RECORDED[branch]
    adapter = get_adapter(pipe)
    height, width = (height or adapter.default_size(pipe)[0]), (width or adapter.default_size(pipe)[1])
    n = len(specs)
    for handler in handlers:  # bad layer selections fail here, before any work
        handler.layers(table)
    progress_config = dict(getattr(pipe, "_progress_bar_config", {}))
    try:
        pipe.set_progress_bar_config(**{**progress_config, "disable": not progress})
        with torch.no_grad():
            named = encode_prompt(pipe, prompt, negative_prompt, cfg)  # embeddings (+ masks, pooled)
            cond, uncond = named["prompt_embeds"], named.get("negative_prompt_embeds")
            interception = Interception(
                pipe, handlers, capture=capture_names, record_branches=record_branches, maps=maps,
                embeddings={"cond": cond, **({"uncond": uncond} if uncond is not None else {})})
            noise = _noise(pipe, seed, num_frames, height, width, cond.dtype)
            latents = noise.repeat(n, *([1] * (noise.ndim - 1)))
            call = dict({k: v.repeat(n, *([1] * (v.ndim - 1))) for k, v in named.items()}, height=height,
                        width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                        latents=latents, output_type="np", **{adapter.frames_kwarg: num_frames},
                        **adapter.call_defaults(pipe), **pipeline_kwargs)
            with interception:
                if guidance is None:
                    output = pipe(**call)
                else:
                    with guiding(pipe, guidance, cfg=cfg, interception=interception):
                        output = pipe(**call)
    finally:
        pipe._progress_bar_config = progress_config
    videos = _to_uint8(output.frames)
    attrs = _attrs(pipe, prompt, negative_prompt, seed, num_frames, num_inference_steps, guidance_scale,
                   height, width, branch, specs)
    if guidance is not None:
        attrs["guidance"] = json.dumps({**guidance.to_dict()["guidance"], "resolved_layers": guidance_layers})
    stats = (stats_dataset(interception.stats_calls, records, interception.state.timesteps, attrs)
             if capture_names else None)
    tree = maps_tree(interception.maps, records, attrs) if maps is not None else None
    return Result(videos=videos, stats=stats, maps=tree)


def trace(
    pipe,
    prompt: str,
    *,
    num_frames: int = 16,
    num_inference_steps: int = 25,
    guidance_scale: float = 7.5,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    layers: LayerSpec | None = None,
    branch: BranchChoice = "cond",
    maps: MapRequest | None = None,
    **kwargs,
) -> Result:
    """Generate and capture per-(step, layer, head, frame) attention statistics.

    ``layers`` selects what is captured (default: every attention layer). Same arguments as
    :func:`generate`; ``perturb=`` is accepted too. Returns a :class:`Result` whose ``.stats`` is an
    ``xr.Dataset`` with ``entropy``, ``entropy_pct``, ``energy``, ``energy_identity``,
    ``energy_uniform`` over ``(step, layer, head, frame)``.
    """
    return generate(pipe, prompt, num_frames=num_frames, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, seed=seed, height=height, width=width,
                    capture=True if layers is None else layers, branch=branch, maps=maps, **kwargs)


def _attrs(pipe, prompt, negative_prompt, seed, num_frames, steps, guidance, height, width, branch, specs) -> dict:
    adapter = get_adapter(pipe)
    denoiser = getattr(pipe, adapter.denoiser_attr)
    source = getattr(pipe, "name_or_path", None) or getattr(denoiser.config, "_name_or_path", "") or "in-memory"
    perturbations = [[p.to_dict() if p.layers.where is None else p.label for p in spec] for spec in specs]
    return {
        "model": f"{type(pipe).__name__}/{type(denoiser).__name__} ({source})",
        "architecture": adapter.name,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "seed": int(seed),
        "num_inference_steps": int(steps),
        "guidance_scale": float(guidance),
        "num_frames": int(num_frames),
        "height": int(height),
        "width": int(width),
        "branch": branch,
        "perturbations": json.dumps(perturbations),
        "versions": versions_string(),
    }
