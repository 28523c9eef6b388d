"""ieadapt_interp — understand and steer attention in text-to-video diffusion models.

Entropy and energy of every spatial, temporal and joint attention layer as xarray, closed-form
identity / uniform perturbations, IE-Adapt guidance and editing (Understanding Attention Mechanism in
Video Diffusion Models).

>>> import ieadapt_interp as ia
>>> pipe = ia.tiny_pipeline("animatediff")
>>> int((ia.attention_layers(pipe).kind == "spatial").sum())
16
"""

from . import accessor as _accessor  # noqa: F401  (registers ds.ieadapt)
from .adapters import ADAPTERS, Adapter, attention_layers, get_adapter
from .interception import AttendFrom, Interception
from .maps import MapRequest
from .models import resolve_model
from .perturbation import Layers, Perturbation, identity, mix, scale, uniform
from . import explorer, figures, findings, metrics, presets, video
from .pipelines import load_pipeline, tiny_pipeline
from .sweeps import open_sweep, sweep
from .tracing import Result, generate, trace
from .versions import show_versions

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "traced":  # imports nnsight only when asked for
        from .traced_model import traced

        return traced
    raise AttributeError(f"module 'ieadapt_interp' has no attribute {name!r}")

__all__ = [
    "ADAPTERS", "Adapter", "AttendFrom", "Interception", "Layers", "MapRequest", "Perturbation", "Result",
    "attention_layers", "generate", "get_adapter", "identity", "load_pipeline", "mix", "scale",
    "explorer", "figures", "findings", "metrics", "open_sweep", "presets", "resolve_model", "video", "show_versions", "sweep", "tiny_pipeline", "trace", "traced", "uniform",
]
