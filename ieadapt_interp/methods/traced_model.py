"""The nnsight-traced wrapper: :func:`traced` exposes every attention layer's hook points.

>>> import ieadapt_interp as ia
>>> pipe = ia.tiny_pipeline()
>>> with ia.traced(pipe) as model:                                        # doctest: +SKIP
...     layer = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
...     with model.generate("a red circle", num_frames=4, height=16, width=16, num_inference_steps=2):
...         entropies = nnsight.list().save()
...         for step in model.iter[:]:
...             entropies.append(layer.hook_entropy.output.mean().save())

Inside ``model.generate`` each attention layer ``L`` of the denoiser has ``L.hook_entropy``
(``[B', head, query]``), ``L.hook_output`` (``[B', head, query, dim]``, settable) and
``L.hook_map`` (only when maps are requested). Requests must follow execution order: within a layer
read ``hook_entropy`` before ``hook_output``. The hook points are removed when the ``with`` block
(or :meth:`TracedPipeline.close`) ends; the pipeline is then exactly as before.
"""

from __future__ import annotations

from typing import Any

from nnsight.modeling.diffusion import DiffusionModel, _PipelineModule

from ..core import hook_points
from ..core.adapters import layer_records
from ..core.interception import Interception
from .tracing import _check_frames, _check_prompt


class _InterceptedPipeline(_PipelineModule):
    """nnsight's pipeline module, running each generation inside an :class:`Interception`."""

    def forward(self, *args: Any, seed: int | None = None, **kwargs: Any) -> Any:
        prompt = kwargs.get("prompt", args[0] if args else None)
        if prompt is not None and kwargs.get("prompt_embeds") is None:
            for text in [prompt] if isinstance(prompt, str) else prompt:
                _check_prompt(text)
        if "num_frames" in kwargs:
            _check_frames(self.pipeline, int(kwargs["num_frames"]))
        with Interception(self.pipeline, hook_points=True, keep_hook_points=True):
            return super().forward(*args, seed=seed, **kwargs)


class TracedPipeline(DiffusionModel):
    """An nnsight ``DiffusionModel`` over a pipeline object, with attention hook points."""

    def _wrap(self, module, *args, **kwargs):
        self.pipeline = module.pipeline
        return module

    def close(self) -> None:
        """Remove the hook points from the pipeline (idempotent)."""
        hook_points.remove([r.module for r in layer_records(self.pipeline)])

    def __enter__(self) -> "TracedPipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def traced(pipe) -> TracedPipeline:
    """Wrap ``pipe`` (any supported diffusers pipeline) for nnsight; use as a context manager.

    The hook points are attached now (nnsight builds its module tree from them) and removed by
    ``close()`` / the end of the ``with`` block.
    """
    modules = [r.module for r in layer_records(pipe)]
    hook_points.install(modules)
    try:
        return TracedPipeline(_InterceptedPipeline(pipe))
    except BaseException:
        hook_points.remove(modules)
        raise
