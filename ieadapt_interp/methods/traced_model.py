"""The nnsight-traced wrapper: :func:`traced` exposes every attention layer's hook points and, after
each run, the same xarray results as :func:`~ieadapt_interp.trace`.

>>> import nnsight, ieadapt_interp as ia
>>> pipe = ia.tiny_pipeline()
>>> layer_name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
>>> with ia.traced(pipe, maps=ia.MapRequest(layers=[layer_name], size=(4, 4))) as model:
...     layer = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
...     with model.generate("a red circle", num_frames=4, height=16, width=16, num_inference_steps=2,
...                         seed=0) as tracer:
...         entropies = nnsight.save(list())
...         for step in tracer.iter[:]:
...             entropies.append(layer.hook_entropy.output.mean().save())
...             layer.hook_output.output[:] *= 0.5            # halve A·V at this layer, every step
...             layer.hook_map.output[:] *= 1.0               # maps are readable and settable too
>>> len(entropies), dict(model.stats.entropy.sizes)           # the stats describe the modified run
(2, {'step': 2, 'layer': 72, 'head': 2, 'frame': 4})
>>> model.maps[layer_name].dataset["attention"].dims
('step', 'head', 'frame', 'query_bin', 'key_bin')

Inside ``model.generate`` each attention layer ``L`` of the denoiser has ``L.hook_entropy``
(``[B', head, query]``), ``L.hook_output`` (``[B', head, query, dim]``, settable) and, for the layers and
steps of the ``maps=`` request, ``L.hook_map`` (``[row, head, *map dims]``: the pooled map of the recorded
CFG branch's rows, settable — a write changes what :attr:`TracedPipeline.maps` holds, not the model).
Requests must follow execution order: within a layer read ``hook_entropy``, then ``hook_output``, then
``hook_map``. After the ``with model.generate(...)`` block, :attr:`TracedPipeline.stats` is the statistics
``Dataset`` and :attr:`TracedPipeline.maps` the maps ``DataTree`` of that run — the same objects
:func:`~ieadapt_interp.trace` returns for the same settings, and, when the block wrote to a hook point, those
of the modified run (statistics are recorded after the hook points). The hook points are removed when the
``with`` block (or :meth:`TracedPipeline.close`) ends; the pipeline is then exactly as before.

Every supported pipeline works (Wan 2.1/2.2, HunyuanVideo, LTX-Video, Mochi, Latte, AnimateDiff SDXL and
Lightning): the prompt is encoded here and handed to the pipeline as its embeddings (with the attention masks
and pooled embeddings it needs), so the rows are labelled by the very tensors the denoiser gets; ``num_frames``
is passed on under the pipeline's own name (Latte: ``video_length``). Stable Video Diffusion takes its image as
the input (``model.generate([image], ...)``); its rows are labelled by the image embeddings.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import xarray as xr
from nnsight.modeling.diffusion import DiffusionModel, _PipelineModule

from ..core import hook_points
from ..core.adapters import attention_layers, encode_prompt, get_adapter, layer_records
from ..core.errors import IEAdaptTypeError, IEAdaptValueError
from ..core.interception import Interception
from ..core.maps import MapRequest
from ..core.stats import maps_tree, stats_dataset
from ..core.layers import capture_layers
from .perturbation import LayerSpec
from .tracing import _attrs, _check_frames, _check_prompt

#: the rows each ``branch=`` choice records
_RECORDED = {"cond": ("cond",), "uncond": ("uncond",), "both": ("cond", "uncond")}


def _call_default(pipe, name: str, fallback: Any) -> Any:
    """The pipeline's own default of a ``__call__`` argument (what runs when the user omits it)."""
    param = inspect.signature(type(pipe).__call__).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty or param.default is None:
        return fallback
    return param.default


def _guidance_of(pipe, kwargs: dict) -> float:
    """The CFG weight of a call: ``guidance_scale``, or the largest of a per-frame schedule (SVD's
    ``max_guidance_scale``); the pipeline's default when omitted."""
    for name in ("guidance_scale", "max_guidance_scale"):
        if name in inspect.signature(type(pipe).__call__).parameters:
            return float(kwargs.get(name, _call_default(pipe, name, 1.0)))
    return 1.0


class _InterceptedPipeline(_PipelineModule):
    """nnsight's pipeline module, running each generation inside an :class:`Interception`.

    The text embeddings of each prompt are encoded first (the pipeline's own ``encode_prompt``) so the
    interception labels every batch row with its CFG branch and sample, as :func:`~ieadapt_interp.generate`
    does. :attr:`results` holds the last run's ``stats`` / ``maps``.
    """

    def __init__(self, pipeline, capture: list[str], maps: MapRequest | None, branch: str) -> None:
        super().__init__(pipeline)
        self.capture, self.map_request, self.branch = capture, maps, branch
        self.results: dict[str, Any] = {"stats": None, "maps": None}

    def forward(self, *args: Any, seed: int | None = None, **kwargs: Any) -> Any:
        pipe = self.pipeline
        adapter = get_adapter(pipe)
        params = inspect.signature(type(pipe).__call__).parameters
        if args:  # the first input, positionally: the prompt (SVD: the image)
            kwargs[list(params)[1]], args = args[0], args[1:]
        if "prompt" in kwargs and "prompt" not in params:  # nnsight batches every invoke's input as prompt=
            kwargs[list(params)[1]] = kwargs.pop("prompt")
        frames_kwarg = adapter.frames_kwarg
        if frames_kwarg != "num_frames" and "num_frames" in kwargs:  # Latte: video_length
            kwargs[frames_kwarg] = kwargs.pop("num_frames")
        kwargs = {**adapter.call_defaults(pipe), **kwargs}
        prompt = kwargs.get("prompt")
        prompts = [] if prompt is None else [prompt] if isinstance(prompt, str) else list(prompt)
        for text in prompts:
            _check_prompt(text)
        num_frames = int(kwargs.get(frames_kwarg, _call_default(pipe, frames_kwarg, 16)))
        _check_frames(pipe, num_frames)
        guidance = _guidance_of(pipe, kwargs)
        cfg = guidance > 1.0 and adapter.guidance_is_cfg
        if self.branch != "cond" and not cfg:
            raise IEAdaptValueError(f"branch={self.branch!r} needs classifier-free guidance (guidance_scale > 1).")
        negative = kwargs.get("negative_prompt") or ""
        if not isinstance(negative, str):
            raise IEAdaptTypeError("ia.traced takes one negative_prompt string (shared by every prompt).")
        self.results = {"stats": None, "maps": None}
        embeddings: dict[str, torch.Tensor] = {}
        if prompts and kwargs.get("prompt_embeds") is None:
            # encoded here (the pipeline's own encode_prompt) and passed to the pipeline as its embeddings
            # (+ masks, pooled embeddings), so the rows are labelled by the very tensors the denoiser gets
            with torch.no_grad():
                named = [encode_prompt(pipe, text, negative, cfg) for text in prompts]
            call = {k: torch.cat([n[k] for n in named]) for k in named[0]}
            kwargs = {k: v for k, v in kwargs.items() if k not in ("prompt", "negative_prompt")}
            kwargs.update(call)
            if "negative_prompt" in params:
                kwargs["negative_prompt"] = None  # no pipeline takes both a negative prompt and its embeddings
            embeddings = {"cond": call["prompt_embeds"]}
            if "negative_prompt_embeds" in call:
                embeddings["uncond"] = call["negative_prompt_embeds"]
        elif not prompts and adapter.condition_embeddings is not None:  # image-to-video: image embeddings
            with torch.no_grad():
                embeddings = adapter.condition_embeddings(pipe, kwargs, cfg)
        interception = Interception(pipe, capture=self.capture, record_branches=_RECORDED[self.branch],
                                    maps=self.map_request, embeddings=embeddings, hook_points=True,
                                    keep_hook_points=True)
        with interception:
            output = super().forward(seed=seed, **kwargs)
        self.results = self._results(interception, prompts, negative, seed, num_frames, guidance, kwargs)
        return output

    def _results(self, interception, prompts, negative, seed, num_frames, guidance, kwargs) -> dict:
        pipe = self.pipeline
        size = get_adapter(pipe).default_size(pipe)
        steps = kwargs.get("num_inference_steps", len(interception.state.timesteps))
        attrs = _attrs(pipe, " | ".join(prompts), negative,
                       -1 if seed is None else seed, num_frames, steps, guidance,
                       kwargs.get("height") or size[0], kwargs.get("width") or size[1], self.branch, [()])
        attrs["run"] = "ia.traced (nnsight): statistics after the block's writes to hook points"
        records = layer_records(pipe)
        stats = (stats_dataset(interception.stats_calls, records, interception.state.timesteps, attrs)
                 if self.capture else None)
        tree = maps_tree(interception.maps, records, attrs) if self.map_request is not None else None
        return {"stats": stats, "maps": tree}


class TracedPipeline(DiffusionModel):
    """An nnsight ``DiffusionModel`` over a pipeline object, with attention hook points."""

    def _wrap(self, module, *args, **kwargs):
        self.pipeline = module.pipeline
        return module

    @property
    def stats(self) -> xr.Dataset | None:
        """The statistics ``Dataset`` of the last ``model.generate`` run (``None`` before one, or ``capture=False``).

        Same variables and dims as :func:`ieadapt_interp.trace`'s ``.stats``: ``(step, layer, head, frame)``
        (+ ``branch`` / ``sample`` when several were recorded).
        """
        return self._module.results["stats"]

    @property
    def maps(self) -> xr.DataTree | None:
        """The pooled maps ``DataTree`` of the last run (``None`` before one, or without ``maps=``)."""
        return self._module.results["maps"]

    def close(self) -> None:
        """Remove the hook points from the pipeline (idempotent)."""
        hook_points.remove([r.module for r in layer_records(self.pipeline)])

    def __enter__(self) -> "TracedPipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def traced(pipe, *, capture: LayerSpec | bool = True, maps: MapRequest | None = None,
           branch: str = "cond") -> TracedPipeline:
    """Wrap ``pipe`` (any supported diffusers pipeline) for nnsight; use as a context manager.

    Parameters
    ----------
    capture
        Layers whose statistics :attr:`TracedPipeline.stats` holds after each run: ``True`` (every
        attention layer, as :func:`~ieadapt_interp.trace`), ``False``, or a layer spec.
    maps
        A :class:`~ieadapt_interp.MapRequest`: its layers get ``hook_map`` at its steps, and
        :attr:`TracedPipeline.maps` holds the pooled maps after each run.
    branch
        CFG rows the statistics and maps describe: ``cond`` (default), ``uncond``, ``both``.

    The hook points are attached now (nnsight builds its module tree from them) and removed by
    ``close()`` / the end of the ``with`` block. Bad layer names fail here, before anything is attached.
    """
    if branch not in ("cond", "uncond", "both"):
        raise IEAdaptValueError(f"branch must be 'cond', 'uncond' or 'both'; got {branch!r}.")
    if maps is not None and not isinstance(maps, MapRequest):
        raise IEAdaptTypeError(f"maps= takes an ieadapt_interp.MapRequest; got {type(maps).__name__}.")
    table = attention_layers(pipe)
    records = layer_records(pipe)
    names = capture_layers(capture, table)
    if maps is not None:
        maps.resolved.resolve(table)  # unknown layers raise here
    modules = [r.module for r in records]
    hook_points.install(modules)
    try:
        return TracedPipeline(_InterceptedPipeline(pipe, names, maps, branch))
    except BaseException:
        hook_points.remove(modules)
        raise
