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
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import xarray as xr
from nnsight.modeling.diffusion import DiffusionModel, _PipelineModule

from ..core import hook_points
from ..core.adapters import attention_layers, get_adapter, layer_records
from ..core.errors import IEAdaptTypeError, IEAdaptValueError
from ..core.interception import Interception
from ..core.maps import MapRequest
from ..core.stats import maps_tree, stats_dataset
from .perturbation import LayerSpec, as_layers
from .tracing import _attrs, _check_frames, _check_prompt, _encode

#: the rows each ``branch=`` choice records
_RECORDED = {"cond": ("cond",), "uncond": ("uncond",), "both": ("cond", "uncond")}


def _call_default(pipe, name: str, fallback: Any) -> Any:
    """The pipeline's own default of a ``__call__`` argument (what runs when the user omits it)."""
    param = inspect.signature(type(pipe).__call__).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty or param.default is None:
        return fallback
    return param.default


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
        prompt = kwargs.get("prompt", args[0] if args else None)
        prompts = [] if prompt is None else [prompt] if isinstance(prompt, str) else list(prompt)
        for text in prompts:
            _check_prompt(text)
        num_frames = int(kwargs.get("num_frames", _call_default(pipe, "num_frames", 16)))
        _check_frames(pipe, num_frames)
        guidance = float(kwargs.get("guidance_scale", _call_default(pipe, "guidance_scale", 1.0)))
        if self.branch != "cond" and guidance <= 1.0:
            raise IEAdaptValueError(f"branch={self.branch!r} needs classifier-free guidance (guidance_scale > 1).")
        negative = kwargs.get("negative_prompt") or ""
        if not isinstance(negative, str):
            raise IEAdaptTypeError("ia.traced takes one negative_prompt string (shared by every prompt).")
        self.results = {"stats": None, "maps": None}
        embeddings = {}
        if prompts and kwargs.get("prompt_embeds") is None:
            with torch.no_grad():
                encoded = [_encode(pipe, text, negative, guidance > 1.0) for text in prompts]
            embeddings["cond"] = torch.cat([c for c, _ in encoded])
            if guidance > 1.0:
                embeddings["uncond"] = torch.cat([u for _, u in encoded])
        interception = Interception(pipe, capture=self.capture, record_branches=_RECORDED[self.branch],
                                    maps=self.map_request, embeddings=embeddings, hook_points=True,
                                    keep_hook_points=True)
        with interception:
            output = super().forward(*args, seed=seed, **kwargs)
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
    if capture is True:
        names = [r.name for r in records]
    elif capture is False or capture is None:
        names = []
    else:
        names = as_layers(capture).resolve(table)
    if maps is not None:
        maps.resolved.resolve(table)  # unknown layers raise here
    modules = [r.module for r in records]
    hook_points.install(modules)
    try:
        return TracedPipeline(_InterceptedPipeline(pipe, names, maps, branch))
    except BaseException:
        hook_points.remove(modules)
        raise
