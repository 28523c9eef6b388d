"""Video metrics for attention-perturbation and editing studies, behind one registry.

Videos are uint8 numpy arrays ``frames × H × W × 3``. Weight-free: ``ssim``, ``temporal_ssim``,
``flow_magnitude``, ``motion_smoothness_flow``, ``subject_consistency_hist`` (a stand-in, not VBench's); on the embedded toy model's captions ``colour_match``,
``shape_match``, ``direction_match`` and ``connectedness`` (:mod:`.attributes`). Learned (local weights only, see :mod:`.weights`): ``lpips``,
``aesthetic_quality``, ``imaging_quality``, ``subject_consistency``, ``motion_smoothness`` (VBench, with the AMT-S
interpolator of :mod:`.amt`), ``dynamic_degree`` (VBench, with the RAFT of :mod:`.raft`), ``clip_score``, ``clip_directional_similarity``.

Example:
    >>> from ieadapt_interp.metrics import compute_metrics
    >>> compute_metrics(["ssim", "flow_magnitude"], video, reference=baseline)  # doctest: +SKIP
    {'ssim': 0.81, 'flow_magnitude': 1.7}
"""

from .amt import AMTS, load_amt
from .attributes import colour_match, connectedness, direction_match, shape_match
from .clip import ClipBundle, clip_directional_similarity, clip_score, load_clip
from .dino import load_dino
from .motion import flow_magnitude, motion_smoothness_flow, subject_consistency_hist
from .musiq import MUSIQ
from .raft import RAFT, load_raft
from .registry import METRICS, Metric, compute_metrics, get_metric
from .structure import load_lpips, lpips, ssim, temporal_ssim
from .vbench import (
    AestheticScorer,
    MetricNotImplementedError,
    aesthetic_quality,
    dynamic_degree,
    imaging_quality,
    load_aesthetic,
    load_musiq,
    motion_smoothness,
    subject_consistency,
)
from .weights import WEIGHTS_ENV, MissingWeightsError

__all__ = [
    "AMTS",
    "METRICS",
    "MUSIQ",
    "RAFT",
    "WEIGHTS_ENV",
    "AestheticScorer",
    "ClipBundle",
    "Metric",
    "MetricNotImplementedError",
    "MissingWeightsError",
    "aesthetic_quality",
    "clip_directional_similarity",
    "clip_score",
    "colour_match",
    "compute_metrics",
    "connectedness",
    "direction_match",
    "dynamic_degree",
    "flow_magnitude",
    "get_metric",
    "imaging_quality",
    "load_aesthetic",
    "load_amt",
    "load_clip",
    "load_dino",
    "load_lpips",
    "load_musiq",
    "load_raft",
    "lpips",
    "motion_smoothness",
    "motion_smoothness_flow",
    "shape_match",
    "ssim",
    "subject_consistency",
    "subject_consistency_hist",
    "temporal_ssim",
]
