"""Which model a sweep runs: a pipeline object, or a picklable *spec* each worker builds it from.

A spec is what a Ray actor receives instead of a multi-GB pipeline:

============================  ==========================================================
spec                          builds
============================  ==========================================================
``None``                      the embedded toy model (:func:`ieadapt_interp.load_pipeline`)
``"tiny:animatediff"``        a random-initialised tiny pipeline (also ``"tiny:cogvideox"``)
``"/path/to/model"``          :func:`ieadapt_interp.load_pipeline` of a local folder
``{"model": p, "motion_adapter": q, "dtype": "float16"}``  the same with keyword arguments
============================  ==========================================================

Every spec is one :func:`ieadapt_interp.load_pipeline` takes (:mod:`ieadapt_interp.models.specs`; the older
``("tiny", "animatediff")`` and ``"tiny-animatediff"`` still work for one release, with a warning, and hash
like ``"tiny:animatediff"``).

>>> model_key("tiny:animatediff")
'tiny:animatediff'
>>> type(build_pipeline("tiny:animatediff")).__name__
'AnimateDiffPipeline'
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from ..models.specs import canonical_spec, tiny_arch

ModelSpec = None | str | tuple | Mapping[str, Any]


def is_spec(model: Any) -> bool:
    """True for a picklable model spec (see module docstring), False for a pipeline object."""
    return model is None or isinstance(model, (str, os.PathLike, tuple, list, Mapping))


def model_key(model: Any) -> str:
    """A stable text identifying the model (part of a sweep's config hash).

    Specs give their own text; a pipeline object gives its class, source path and a fingerprint of the
    denoiser weights, so two differently-initialised in-memory models never share a store.
    """
    if not is_spec(model):
        return pipeline_fingerprint(model)
    if isinstance(model, Mapping):
        return json.dumps({k: str(v) for k, v in sorted(model.items())})
    model = canonical_spec(model)
    if model is None:
        return "embedded-toy"
    if tiny_arch(model) is not None:
        return model
    return os.path.abspath(os.path.expanduser(model))


def pipeline_fingerprint(pipe) -> str:
    """``Class (source) #hash`` where ``hash`` digests the denoiser's parameter shapes and a few values."""
    import torch

    from ..core.adapters import denoiser

    net = denoiser(pipe)
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in net.named_parameters():
            flat = param.detach().reshape(-1)
            digest.update(f"{name}{tuple(param.shape)}".encode())
            digest.update(flat[:: max(1, flat.numel() // 16)][:16].float().cpu().numpy().round(5).tobytes())
    source = getattr(pipe, "name_or_path", None) or getattr(net.config, "_name_or_path", "") or "in-memory"
    return f"{type(pipe).__name__} ({source}) #{digest.hexdigest()[:12]}"


_BUILT: dict[tuple[str, str | None], Any] = {}


def build_pipeline(model: ModelSpec, device: str | None = None, cache: bool = True):
    """Build the pipeline a spec names (runs inside each worker / Ray actor).

    With ``cache`` the last pipeline built in this process is reused for the same spec and device
    (so the CLI, which needs the model to expand presets, and a local sweep share one copy).
    """
    key = (model_key(model), device)
    if cache and key in _BUILT:
        return _BUILT[key]
    pipe = _build(model, device)
    if cache:
        _BUILT.clear()
        _BUILT[key] = pipe
    return pipe


def _build(model: ModelSpec, device: str | None):
    from ..models import pipelines

    if isinstance(model, Mapping):
        kwargs = dict(model)
        if isinstance(kwargs.get("dtype"), str):
            import torch

            kwargs["dtype"] = getattr(torch, kwargs["dtype"])
        kwargs.setdefault("device", device)
        return pipelines.load_pipeline(kwargs.pop("model"), **kwargs)
    return pipelines.load_pipeline(model, device=device)
