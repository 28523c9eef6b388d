"""DDIM inversion of a video: its VAE latents walked back to noise, and the reconstruction from there.

:func:`invert` runs the pipeline's own denoising loop (its conditioning, CFG, rotary embeddings…) with its
scheduler swapped, for the duration of the call, for diffusers' inverse scheduler built from the same config
(:class:`~diffusers.DDIMInverseScheduler`, subclassed; the forward scheduler's ``alphas_cumprod`` are copied in,
so CogVideoX's SNR-shifted schedule and zero-terminal-SNR schedules are matched exactly). Each step maps
``z_{t-Δ} → z_t`` with the model evaluated at ``(z_{t-Δ}, t-Δ)``, the level the latent is at — not at
``(z_{t-Δ}, t)`` as ``DDIMInverseScheduler`` (Pix2Pix-Zero, Null-text inversion) does, which breaks
v-prediction models (see ``LevelDDIMInverseScheduler``). The latents after every step are the trajectory; the
reconstruction denoises ``z_T`` again with the forward scheduler.

Zero-terminal SNR (the embedded model: v-prediction, ``rescale_betas_zero_snr``, trailing spacing): the last
inverse step lands on ``ᾱ_T = 0``, where ``z_T`` equals the predicted noise; the first denoising step then
predicts ``x̂₀ = -v(z_T)`` with no signal left, so that step's error is only damped by ``√ᾱ`` of the next
level. Measured on the embedded model with diffusers' target-timestep inverse step (before the level fix
below): inverting all the way to ``ᾱ_T = 0`` and regenerating gave 0.3 dB PSNR at 10 steps and 0.6 dB at 25,
19.8 dB at 50; with the level fix and the skip, 23.7 dB median at 25 steps over 52 rendered clips
(benchmarks/RESULTS.md, "Video editing"; the fix without the skip was not measured). So ``skip="auto"`` stops
the inversion one step short of ``T`` when ``ᾱ_T = 0``: ``z_T``
is then the latent at the last nonzero-SNR level and the reconstruction (and an edit) runs the remaining
``num_inference_steps - 1`` steps from it, through the same scheduler with its first timestep dropped.

>>> import ieadapt_interp as ia, numpy as np
>>> pipe = ia.tiny_pipeline()
>>> video = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
>>> inv = invert(pipe, video, "a red circle", num_inference_steps=2)
>>> inv.latents.shape, inv.reconstruction.shape
(torch.Size([3, 1, 4, 4, 8, 8]), (4, 16, 16, 3))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from ..core.adapters import attention_layers, get_adapter, layer_records
from ..core.errors import IEAdaptTypeError, IEAdaptValueError
from ..core.handlers import StatsRecorder
from ..core.interception import Interception
from ..core.stats import stats_dataset
from .sources import as_source, check_size, encode_video

#: self-attention kinds: the layers whose entropy selects L_edit (never cross-attention)
SELF_ATTENTION = ("spatial", "temporal", "joint")


@dataclass
class Inversion:
    """What :func:`invert` returns.

    ``latents [step + 1, *latent_shape]``: ``z_0`` (the VAE encoding) … ``z_T`` (CPU, float32);
    ``timesteps``: the inverse scheduler's timesteps (``latents[k + 1]`` is at ``timesteps[k]``);
    ``video``: the input fitted to the model (uint8 ``[f, H, W, 3]``); ``reconstruction``: the video
    denoised from ``z_T`` (``None`` with ``reconstruct=False``); ``psnr`` / ``ssim`` of it against
    ``video``; ``vae_psnr``: PSNR of the VAE alone (decode of ``z_0``), the ceiling; ``stats``: attention
    statistics of the self-attention layers over the inversion pass (``capture=True``).
    """

    latents: torch.Tensor
    timesteps: list[int]
    video: np.ndarray
    prompt: str
    guidance_scale: float
    reconstruction: np.ndarray | None = None
    psnr: float = float("nan")
    ssim: float = float("nan")
    vae_psnr: float = float("nan")
    stats: xr.Dataset | None = field(default=None, repr=False)
    skip: int = 0

    @property
    def noise(self) -> torch.Tensor:
        """``z_T``: the latent the reconstruction (and an edit) starts from."""
        return self.latents[-1]

    @property
    def num_inference_steps(self) -> int:
        return len(self.timesteps) + self.skip

    def summary(self) -> dict:
        """``{"psnr", "ssim", "vae_psnr", "steps", "guidance_scale"}`` — one table row."""
        return {"psnr": self.psnr, "ssim": self.ssim, "vae_psnr": self.vae_psnr, "steps": self.num_inference_steps,
                "skip": self.skip, "guidance_scale": self.guidance_scale}


def psnr(video: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over the whole uint8 video (``inf`` when identical).

    >>> a = np.zeros((1, 4, 4, 3), np.uint8); b = a.copy(); b[0, 0, 0, 0] = 255
    >>> round(psnr(a, b), 2)
    16.81
    """
    mse = float(np.mean((video.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def video_ssim(video: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-frame SSIM (skimage, ``data_range=255``, 7×7 window; the registry's ``ssim`` definition)."""
    from skimage.metrics import structural_similarity

    return float(np.mean([structural_similarity(a, b, channel_axis=-1, data_range=255)
                          for a, b in zip(video, reference)]))


def _level_inverse_class():
    from diffusers import DDIMInverseScheduler
    from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput

    class LevelDDIMInverseScheduler(DDIMInverseScheduler):
        """diffusers' DDIM inverse step, with the model evaluated at the level the latent is at.

        ``DDIMInverseScheduler`` hands the pipeline the *target* timesteps, so the model sees ``(z_{t-Δ}, t)``.
        For v-prediction that mismatch is not benign: ``v`` means ``√ᾱ_t ε − √(1-ᾱ_t) x₀`` at the timestep it was
        asked for, and the step reads it with the coefficients of ``t − Δ`` — the embedded model's reconstructions
        lost their background (0.3–6 dB PSNR on black and gray backgrounds at 25 steps). Here the pipeline gets
        the *current* levels ``[0, t₁, …, t_{N-1}]`` and each step goes from there to the next target ``t_{k+1}``.
        """

        def set_timesteps(self, num_inference_steps, device=None):
            super().set_timesteps(num_inference_steps, device)
            self.targets = self.timesteps.clone()
            self.timesteps = torch.cat([self.targets.new_zeros(1), self.targets[:-1]])
            self.index = 0

        def step(self, model_output, timestep, sample, return_dict=True):
            i, self.index = self.index, self.index + 1
            alpha_t = self.alphas_cumprod[int(self.targets[i - 1])] if i else self.initial_alpha_cumprod
            alpha_next = self.alphas_cumprod[int(self.targets[i])]
            beta_t = 1 - alpha_t
            if self.config.prediction_type == "epsilon":
                x0 = (sample - beta_t ** 0.5 * model_output) / alpha_t ** 0.5
                eps = model_output
            elif self.config.prediction_type == "v_prediction":
                x0 = alpha_t ** 0.5 * sample - beta_t ** 0.5 * model_output
                eps = alpha_t ** 0.5 * model_output + beta_t ** 0.5 * sample
            else:
                raise IEAdaptValueError(f"DDIM inversion supports epsilon and v_prediction models; this one predicts "
                                        f"{self.config.prediction_type!r}.")
            prev = alpha_next ** 0.5 * x0 + (1 - alpha_next) ** 0.5 * eps
            return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0) if return_dict else (prev, x0)

    return LevelDDIMInverseScheduler


def inverse_scheduler(scheduler):
    """diffusers' inverse scheduler matching ``scheduler`` (DDIM family), with its ``alphas_cumprod``.

    Raises one clear error for schedulers without a deterministic inverse here (Euler, DPM-Solver …).
    """
    name = type(scheduler).__name__
    if "FlowMatch" in name:
        raise IEAdaptTypeError(
            f"DDIM inversion needs a DDIM scheduler; this pipeline uses {name}: a flow-matching model (Wan, LTX-Video, "
            "HunyuanVideo, Mochi), whose velocity a DDIM scheduler cannot invert. Edit a generated source instead "
            "(a seed or a traced Result).")
    if name not in ("DDIMScheduler", "CogVideoXDDIMScheduler", "DDIMInverseScheduler"):
        raise IEAdaptTypeError(
            f"DDIM inversion needs a DDIM scheduler; this pipeline uses {name}. Set "
            "pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config) (or "
            "CogVideoXDDIMScheduler for CogVideoX) before inverting and editing.")
    config = dict(scheduler.config)
    if config.get("timestep_spacing") not in ("leading", "trailing"):
        raise IEAdaptValueError(f"DDIM inversion supports timestep_spacing 'leading' or 'trailing'; the scheduler uses "
                                f"{config.get('timestep_spacing')!r}.")
    config.pop("snr_shift_scale", None)
    inverse = _level_inverse_class().from_config(config, clip_sample=False)
    inverse.alphas_cumprod = scheduler.alphas_cumprod.clone()  # SNR shift / zero-terminal-SNR rescale included
    inverse.initial_alpha_cumprod = scheduler.final_alpha_cumprod.clone()
    return inverse


def resolve_skip(scheduler, skip: int | str) -> int:
    """``"auto"`` → 1 when the schedule ends at zero SNR (``ᾱ_T = 0``), else 0; an int is checked."""
    if skip == "auto":
        return int(float(scheduler.alphas_cumprod[-1]) < 1e-8)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise IEAdaptValueError(f"skip must be 'auto' or an int ≥ 0; got {skip!r}.")
    return skip


class _SkipFirst:
    """Mixin for a scheduler copy whose ``set_timesteps`` drops the first ``skip`` timesteps (the loop then
    starts from an intermediate latent); everything else is the wrapped scheduler's."""

    skip = 0

    def set_timesteps(self, num_inference_steps, device=None, **kwargs):
        super().set_timesteps(num_inference_steps, device=device, **kwargs)
        self.timesteps = self.timesteps[self.skip:]


def skipping(scheduler, skip: int):
    """``scheduler`` itself (``skip=0``) or a copy of it that starts ``skip`` timesteps late."""
    if not skip:
        return scheduler
    cls = type(f"SkipFirst{type(scheduler).__name__}", (_SkipFirst, type(scheduler)), {"skip": int(skip)})
    copy = cls.from_config(scheduler.config)
    copy.alphas_cumprod = scheduler.alphas_cumprod.clone()
    return copy


def encode_prompts(pipe, prompts: list[str], cfg: bool, negative_prompt: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
    """The pipeline's ``encode_prompt`` for several prompts → ``(cond [n, T, C], uncond [n, T, C] | None)``.

    ``uncond`` is ``None`` without CFG, also when the model's ``guidance_scale`` is not CFG (HunyuanVideo).
    """
    named = encode_named(pipe, prompts, cfg, negative_prompt)
    return named["prompt_embeds"], named.get("negative_prompt_embeds")


def encode_named(pipe, prompts: list[str], cfg: bool, negative_prompt: str = "") -> dict[str, torch.Tensor]:
    """Every pipeline-call argument ``encode_prompt`` gives for ``prompts``, rows in prompt order:
    ``prompt_embeds`` (+ ``negative_prompt_embeds`` with CFG) and, where the pipeline has them, attention
    masks and pooled embeddings (LTX-Video, Mochi, HunyuanVideo, SDXL) — pass the rest to :func:`denoise`."""
    from ..core.adapters import encode_prompt

    cfg = bool(cfg) and get_adapter(pipe).guidance_is_cfg
    named = [encode_prompt(pipe, prompt, negative_prompt, cfg) for prompt in prompts]
    return {k: torch.cat([n[k] for n in named]) for k in named[0]}


def prompt_extras(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What :func:`encode_named` gives besides the embeddings (masks, pooled embeddings): call arguments."""
    return {k: v for k, v in named.items() if k not in ("prompt_embeds", "negative_prompt_embeds")}


def self_attention_names(pipe) -> list[str]:
    """Names of the self-attention layers (spatial, temporal, joint) in forward order."""
    return [r.name for r in layer_records(pipe) if r.kind in SELF_ATTENTION]


def denoise(pipe, cond: torch.Tensor, uncond: torch.Tensor | None, latents: torch.Tensor, *, num_frames: int,
            height: int, width: int, num_inference_steps: int, guidance_scale: float, output_type: str = "np",
            callback=None, progress: bool = False, **pipeline_kwargs):
    """One call of the pipeline's own loop with given embeddings and initial latents → its output."""
    adapter = get_adapter(pipe)
    call = dict(prompt_embeds=cond, height=height, width=width, **{adapter.frames_kwarg: num_frames},
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, latents=latents,
                output_type=output_type, **adapter.call_defaults(pipe), **pipeline_kwargs)
    if uncond is not None:
        call["negative_prompt_embeds"] = uncond
    if callback is not None:
        call["callback_on_step_end"] = callback
        call["callback_on_step_end_tensor_inputs"] = ["latents"]
    config = dict(getattr(pipe, "_progress_bar_config", {}))
    try:
        pipe.set_progress_bar_config(**{**config, "disable": not progress})
        return pipe(**call)
    finally:
        pipe._progress_bar_config = config


def to_uint8(frames) -> np.ndarray:
    arr = frames if isinstance(frames, np.ndarray) else np.asarray(frames)
    return (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)


@torch.no_grad()
def decode(pipe, latents: torch.Tensor, size: tuple[int, int, int] | None = None, device=None) -> np.ndarray:
    """The pipeline's own VAE decode of ``[n, *latent_shape]`` → uint8 ``[n, f, H, W, 3]``.

    ``size = (num_frames, height, width)`` of the video: needed where the latents are packed into tokens
    (LTX-Video); the adapter's ``decode`` is used where the pipeline has no ``decode_latents(latents)``.
    ``device``: the pipeline's execution device where the caller knows it (``pipe._execution_device`` walks
    every module of every component in diffusers 0.42, ~30 ms on AnimateDiff).
    """
    latents = latents.to(pipe._execution_device if device is None else device, pipe.vae.dtype)
    adapter = get_adapter(pipe)
    if adapter.decode is not None:
        video = adapter.decode(pipe, latents, *(size or (None, None, None)))
    else:
        video = pipe.decode_latents(latents)
    return to_uint8(pipe.video_processor.postprocess_video(video=video, output_type="np"))


@torch.no_grad()
def invert(
    pipe,
    video,
    prompt: str,
    *,
    num_inference_steps: int = 25,
    guidance_scale: float = 1.0,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    skip: int | str = "auto",
    reconstruct: bool = True,
    capture: bool | str = False,
    negative_prompt: str = "",
    progress: bool = False,
) -> Inversion:
    """DDIM-invert ``video`` under ``prompt`` and (by default) reconstruct it.

    Parameters
    ----------
    video
        uint8 ``[frame, H, W, 3]``, a video file / frame folder (see :mod:`.sources`), or a Result.
        Resized and centre-cropped to ``height × width`` (default: the model's size); the first
        ``num_frames`` frames (default: all) are used.
    guidance_scale
        CFG weight of the inversion and the reconstruction (``1.0``: none, the exact DDIM setting).
    skip
        Stop the inversion this many steps before ``T`` (``"auto"``: 1 for a zero-terminal-SNR schedule, see
        the module docstring); the reconstruction runs the remaining steps.
    capture
        Record the self-attention layers' statistics over the inversion pass (``Inversion.stats``; IE-Adapt
        selects ``L_edit`` from their entropy): ``True`` (every variable of the core ``StatsRecorder``) or
        ``"entropy"`` (``StatsRecorder(entropy_only=True)``: the entropy only, the same values, cheaper — what an edit needs).

    Returns an :class:`Inversion`; the pipeline (its scheduler included) is left as it was.
    """
    from .tracing import _check_prompt

    _check_prompt(prompt)
    adapter = get_adapter(pipe)
    height = height or adapter.default_size(pipe)[0]
    width = width or adapter.default_size(pipe)[1]
    source, num_frames = as_source(video, num_frames=num_frames, height=height, width=width)
    if source.kind != "video":
        raise IEAdaptTypeError("invert() needs a video (array, file or Result), not a seed.")
    check_size(pipe, height, width, num_frames)
    steps = int(num_inference_steps)
    if steps < 1:
        raise IEAdaptValueError(f"num_inference_steps must be ≥ 1; got {steps}.")
    if capture not in (False, True, "entropy"):
        raise IEAdaptValueError(f"capture must be False, True or 'entropy'; got {capture!r}.")
    inverse = inverse_scheduler(pipe.scheduler)
    skip = resolve_skip(pipe.scheduler, skip)
    if skip >= steps:
        raise IEAdaptValueError(f"skip={skip} leaves no denoising step of {steps}; use more steps.")
    cfg = guidance_scale > 1.0
    named = encode_named(pipe, [prompt], cfg, negative_prompt)
    cond, uncond, extras = named["prompt_embeds"], named.get("negative_prompt_embeds"), prompt_extras(named)
    z0 = encode_video(pipe, source.video).to(cond.dtype)
    trajectory = [z0.float().cpu()]

    def collect(pipeline, i, t, kwargs):
        trajectory.append(kwargs["latents"].float().cpu())
        return {}

    capture_names = self_attention_names(pipe) if capture else []
    recorder = StatsRecorder(capture_names, entropy_only=True) if capture == "entropy" else None
    interception = Interception(pipe, [recorder] if recorder is not None else [],
                                capture=capture_names if recorder is None else [],
                                embeddings={"cond": cond, **({"uncond": uncond} if cfg else {})})
    forward = pipe.scheduler
    try:
        pipe.scheduler = inverse
        with interception:
            denoise(pipe, cond, uncond, z0, num_frames=num_frames, height=height, width=width,
                    num_inference_steps=steps, guidance_scale=guidance_scale, output_type="latent",
                    callback=collect, progress=progress, **extras)
        timesteps = [int(t) for t in inverse.timesteps]
    finally:
        pipe.scheduler = forward
    latents = torch.stack(trajectory[:steps - skip + 1])
    stats = None
    if capture:
        attrs = {"prompt": prompt, "source": "inversion", "num_inference_steps": steps,
                 "guidance_scale": float(guidance_scale), "num_frames": num_frames, "height": height, "width": width}
        calls = recorder.calls if recorder is not None else interception.stats_calls
        stats = stats_dataset(calls, layer_records(pipe), interception.state.timesteps, attrs)
    result = Inversion(latents, timesteps[:steps - skip], source.video, prompt, float(guidance_scale),
                       stats=stats, skip=skip)
    if reconstruct:
        result.vae_psnr = psnr(decode(pipe, z0)[0], source.video)
        try:
            pipe.scheduler = skipping(forward, skip)
            out = denoise(pipe, cond, uncond, latents[-1].to(pipe._execution_device, cond.dtype),
                          num_frames=num_frames, height=height, width=width, num_inference_steps=steps,
                          guidance_scale=guidance_scale, progress=progress, **extras)
        finally:
            pipe.scheduler = forward
        result.reconstruction = to_uint8(out.frames)[0]
        result.psnr = psnr(result.reconstruction, source.video)
        result.ssim = video_ssim(result.reconstruction, source.video)
    return result


def layer_kinds(pipe) -> dict[str, str]:
    """``{layer name: kind}`` of every attention layer."""
    table = attention_layers(pipe)
    return dict(zip(table.name, table.kind))


__all__ = ["Inversion", "SELF_ATTENTION", "decode", "denoise", "encode_named", "encode_prompts",
           "invert",
           "prompt_extras", "inverse_scheduler", "psnr",
           "resolve_skip", "self_attention_names", "skipping", "video_ssim"]
