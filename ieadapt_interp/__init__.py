"""ieadapt_interp — understand and steer attention in text-to-video diffusion models.

Entropy and energy of every spatial, temporal and joint attention layer as xarray, closed-form
identity / uniform perturbations of attention maps, and the handler contract at the attention call that
the paper's steering methods (IE-Adapt, Understanding Attention Mechanism in Video Diffusion Models) are
built on; :mod:`ieadapt_interp.methods` holds the methods this version ships.

One loader takes every model spec: ``ia.load_pipeline()`` (the embedded model), ``"tiny:animatediff"``,
a folder, or a hub id in the local cache. User errors derive from :class:`IEAdaptError`.

>>> import ieadapt_interp as ia
>>> pipe = ia.load_pipeline("tiny:animatediff")
>>> int((ia.attention_layers(pipe).kind == "spatial").sum())
16
"""

# core: the attention call, its handlers, results
from .core import accessor as _accessor  # noqa: F401  (registers ds.ieadapt)
from .core.adapters import ADAPTERS, Adapter, attention_layers, get_adapter
from .core.errors import IEAdaptError
from .core.handlers import AttentionHandler, CallContext, HookPointHandler, LayerStats, MapRecorder, StatsRecorder
from .core.interception import Interception
from .core.maps import MapRequest
from .core.versions import show_versions

# models: one loader for every model spec (tiny_pipeline: the builder behind "tiny:<arch>")
from .models.pipelines import load_pipeline, tiny_pipeline
from .models.specs import resolve_model

# methods: perturbation, attending from another row, runs
from .methods.attend_from import AttendFrom, AttendFromHandler
from .methods.perturbation import Layers, Perturbation, PerturbationHandler, identity, mix, scale, uniform
from .methods.tracing import Result, generate, trace
from .methods.editing import Edit, EditResult, edit
from .methods.inversion import Inversion, invert
from .methods.calibration import Registry, calibrate
from .methods.guidance import PAIRS, Guidance, guide, guiding, linear_schedule

# metrics, sweeps, analysis
from . import metrics
from .sweeps import open_sweep, presets, sweep
from .analysis import explorer, figures, findings, video

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "traced":  # imports nnsight only when asked for
        from .methods.traced_model import traced

        return traced
    if name == "IEAdaptGuidance":  # imports diffusers.guiders only when asked for
        from .methods.guider import IEAdaptGuidance

        return IEAdaptGuidance
    raise AttributeError(f"module 'ieadapt_interp' has no attribute {name!r}")

__all__ = [
    "ADAPTERS", "Adapter", "AttendFrom", "AttendFromHandler", "AttentionHandler", "CallContext", "HookPointHandler",
    "IEAdaptError", "Interception", "LayerStats", "Layers", "MapRecorder", "MapRequest", "PerturbationHandler",
    "StatsRecorder",
    "Perturbation", "Result", "attention_layers", "explorer", "figures", "findings", "generate", "get_adapter",
    "identity", "load_pipeline", "metrics", "mix", "open_sweep", "presets", "resolve_model", "scale",
    "show_versions", "sweep", "tiny_pipeline", "trace", "traced", "uniform", "video",
]
__all__ += ["Guidance", "PAIRS", "Registry", "calibrate", "guide", "guiding", "linear_schedule"]
__all__ += ["IEAdaptGuidance"]
__all__ += ["Edit", "EditResult", "Inversion", "edit", "invert"]
