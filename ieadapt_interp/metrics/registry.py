"""The metric registry: names → :class:`Metric` records, lookup, and :func:`compute_metrics`."""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import attributes
from . import clip
from . import editing
from . import motion
from . import structure
from . import vbench
from .video import check_pair, check_video
from .weights import MissingWeightsError
from ..core.errors import IEAdaptValueError

INPUTS = ("video", "reference", "prompt", "source_prompt", "target_prompt")


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes:
        name: registry name.
        fn: ``fn(video, <needs...>, **options) -> float``.
        needs: inputs it takes, among ``video``, ``reference``, ``prompt``, ``source_prompt``, ``target_prompt``.
        higher_is_better: direction of "better".
        source: the paper / library definition it follows.
        needs_weights: weight files (or HF folders) it loads; empty for weight-free metrics.
        implemented: False for a registered name this package cannot compute (it raises, with the reason).
        check_prompt: raises ``ValueError`` for a prompt the metric cannot score (checked before a sweep runs).
    """

    name: str
    fn: Callable[..., float]
    needs: tuple[str, ...]
    higher_is_better: bool
    source: str
    needs_weights: tuple[str, ...] = ()
    implemented: bool = True
    check_prompt: Callable[[str], None] | None = None


def _entries() -> list[Metric]:
    return [
        Metric(
            "ssim",
            structure.ssim,
            ("video", "reference"),
            True,
            "Wang et al. 2004 SSIM; skimage structural_similarity, data_range=255, per-frame mean",
        ),
        Metric(
            "lpips",
            structure.lpips,
            ("video", "reference"),
            False,
            "Zhang et al. 2018 LPIPS v0.1 (lpips package), AlexNet backbone, per-frame mean",
            (structure.ALEXNET.filename,),
        ),
        Metric(
            "temporal_ssim",
            structure.temporal_ssim,
            ("video",),
            True,
            "SSIM (skimage, data_range=255) of consecutive frames, mean",
        ),
        Metric(
            "aesthetic_quality",
            vbench.aesthetic_quality,
            ("video",),
            True,
            "VBench aesthetic_quality: LAION aesthetic head on L2-normalised CLIP ViT-L/14 embeddings, /10",
            (vbench.AESTHETIC_HEAD.filename, clip.CLIP_L14.repo_id),
        ),
        Metric(
            "imaging_quality",
            vbench.imaging_quality,
            ("video",),
            True,
            "VBench imaging_quality: MUSIQ (Ke et al. 2021, pyiqa) trained on SPAQ, /100",
            (vbench.MUSIQ_SPAQ.filename,),
        ),
        Metric(
            "subject_consistency",
            vbench.subject_consistency,
            ("video",),
            True,
            "VBench subject_consistency: DINO ViT-B/16 CLS cosine to previous and first frame",
            ("facebook/dino-vitb16 or dino_vitbase16_pretrain.pth",),
        ),
        Metric(
            "motion_smoothness",
            vbench.motion_smoothness,
            ("video",),
            True,
            "VBench motion_smoothness: AMT-S (Li et al. 2023) re-creates the odd frames from the even ones, "
            "(255 - mean abs error)/255",
            (vbench.AMT_S.filename,),
        ),
        Metric(
            "motion_smoothness_flow",
            motion.motion_smoothness_flow,
            ("video",),
            True,
            "VBench motion_smoothness formula with an OpenCV Farneback midpoint interpolator (not AMT)",
        ),
        Metric(
            "flow_magnitude",
            motion.flow_magnitude,
            ("video",),
            True,
            "mean OpenCV Farneback optical-flow magnitude, pixels/frame (continuous; called dynamic_degree before)",
        ),
        Metric(
            "dynamic_degree",
            vbench.dynamic_degree,
            ("video",),
            True,
            "VBench dynamic_degree: RAFT (Teed & Deng 2020) flow of frames sampled to ~8 fps; 1 when at least "
            "round(4·frames/16) pairs have a top-5 % flow magnitude above 6·min(H,W)/256 px, else 0",
            (vbench.RAFT_THINGS.filename,),
        ),
        Metric(
            "subject_consistency_hist",
            motion.subject_consistency_hist,
            ("video",),
            True,
            "weight-free stand-in for VBench subject_consistency: its formula on square-rooted RGB histograms "
            "(Bhattacharyya coefficients), not DINO",
        ),
        *[
            Metric(
                name,
                fn,
                ("video", "prompt"),
                True,
                f"embedded toy model: {what} matches the caption (1) or not (0); ieadapt_interp.models.toy.attributes",
                check_prompt=attributes.check_caption,
            )
            for name, fn, what in (
                ("colour_match", attributes.colour_match, "dominant foreground colour"),
                ("shape_match", attributes.shape_match, "majority contour shape"),
                ("direction_match", attributes.direction_match, "net centroid motion direction"),
            )
        ],
        Metric(
            "connectedness",
            attributes.connectedness,
            ("video",),
            True,
            "embedded toy model: fraction of frames with exactly one foreground blob; ieadapt_interp.models.toy.attributes",
        ),
        Metric(
            "clip_score",
            clip.clip_score,
            ("video", "prompt"),
            True,
            "Hessel et al. 2021 CLIPScore ×100 (torchmetrics scale), CLIP ViT-L/14, per-frame mean",
            (clip.CLIP_L14.repo_id,),
        ),
        Metric(
            "clip_directional_similarity",
            clip.clip_directional_similarity,
            ("video", "reference", "source_prompt", "target_prompt"),
            True,
            "Gal et al. 2022 directional CLIP similarity (InstructPix2Pix/diffusers), CLIP ViT-L/14",
            (clip.CLIP_L14.repo_id,),
        ),
        *[
            Metric(
                name,
                fn,
                ("video", "reference", "source_prompt", "target_prompt"),
                better,
                f"embedded toy model, editing: {what}; ieadapt_interp.metrics.editing",
            )
            for name, fn, better, what in (
                ("edit_success", editing.edit_success, True,
                 "every attribute the captions change is the target's (1) or not (0)"),
                ("attributes_kept", editing.attributes_kept, True,
                 "shared colour/shape/background measure as in the source video (1) or not (0)"),
                ("trajectory_distance", editing.trajectory_distance, False,
                 "mean centroid distance to the source video, px"),
                ("edit_preservation", editing.edit_preservation, True,
                 "attributes kept and centroid trajectory within 4 px (at 64 px) of the source (1) or not (0)"),
            )
        ],
    ]


METRICS: dict[str, Metric] = {m.name: m for m in _entries()}
#: Names whose meaning changed in this release, with the notice :func:`get_metric` gives (removed next release).
RENAMED: dict[str, str] = {
    "dynamic_degree": "'dynamic_degree' is now VBench's binary RAFT score (needs raft-things.pth); the continuous "
    "Farneback measure it named before is 'flow_magnitude'. This notice is removed in the next release.",
}


def get_metric(name: str) -> Metric:
    """The registered :class:`Metric` called ``name``; ValueError naming the closest valid name otherwise.

    Example:
        >>> get_metric("ssim").higher_is_better
        True
    """
    if name in METRICS:
        if name in RENAMED:
            warnings.warn(RENAMED[name], FutureWarning, stacklevel=2)
        return METRICS[name]
    close = difflib.get_close_matches(str(name), list(METRICS), n=1, cutoff=0.0)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise IEAdaptValueError(f"unknown metric {name!r}.{hint} Valid metrics: {', '.join(sorted(METRICS))}")


def _check_keys(kind: str, mapping: Mapping[str, object] | None, names: list[str]) -> dict:
    mapping = dict(mapping or {})
    extra = sorted(set(mapping) - set(names))
    if extra:
        raise IEAdaptValueError(f"{kind} given for metrics not requested: {extra} (requested: {names})")
    return mapping


def _check_inputs(metrics: list[Metric], inputs: dict[str, object]) -> None:
    needed = {need for metric in metrics for need in metric.needs}
    for metric in metrics:
        missing = [need for need in metric.needs if inputs.get(need) is None]
        if missing:
            raise IEAdaptValueError(f"metric {metric.name!r} needs {', '.join(missing)}=...; it was not given")
    if "reference" in needed:
        check_pair(inputs["video"], inputs["reference"])
    for text in needed & {"prompt", "source_prompt", "target_prompt"}:
        if not isinstance(inputs[text], str) or not inputs[text].strip():
            raise IEAdaptValueError(f"{text} must be a non-empty string, got {inputs[text]!r}")
    for metric in metrics:
        if metric.check_prompt is not None:
            metric.check_prompt(inputs["prompt"])


def _call(metric: Metric, inputs: dict[str, object], options: dict) -> float:
    args = [inputs[need] for need in metric.needs]
    return float(metric.fn(*args, **options))


def compute_metrics(
    names: Iterable[str],
    video: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    prompt: str | None = None,
    source_prompt: str | None = None,
    target_prompt: str | None = None,
    models: Mapping[str, object] | None = None,
    weights: Mapping[str, str] | None = None,
    options: Mapping[str, Mapping[str, object]] | None = None,
    device: str = "cpu",
    on_missing: Literal["raise", "nan"] = "raise",
    reasons: dict[str, str] | None = None,
) -> dict[str, float]:
    """Compute several metrics of one video; names, inputs and options are all checked before any work.

    Args:
        names: registry names (see ``METRICS``).
        video: uint8 ``(T, H, W, 3)``.
        reference: the unperturbed / source video (``ssim``, ``lpips``, ``clip_directional_similarity``).
        prompt, source_prompt, target_prompt: texts for the CLIP metrics.
        models: per metric, an already-built model object (passed as ``model=``).
        weights: per metric, a weight path (passed as ``weights=``).
        options: per metric, extra keyword arguments (e.g. ``{"aesthetic_quality": {"clip_weights": p}}``).
        device: torch device for learned metrics that load their own model.
        on_missing: ``"nan"`` records a metric whose weights are missing (or that is not implemented) as NaN,
            with the reason put in ``reasons``; ``"raise"`` lets the error propagate.
        reasons: optional dict filled with ``{name: reason}`` for metrics recorded as NaN.

    Returns:
        ``{name: value}`` in the order of ``names``.

    Example:
        >>> v = np.zeros((4, 32, 32, 3), np.uint8)
        >>> compute_metrics(["temporal_ssim", "flow_magnitude"], v)
        {'temporal_ssim': 1.0, 'flow_magnitude': 0.0}
    """
    if on_missing not in ("raise", "nan"):
        raise IEAdaptValueError(f"on_missing must be 'raise' or 'nan', got {on_missing!r}")
    names = list(dict.fromkeys([names] if isinstance(names, str) else names))
    metrics = [get_metric(n) for n in names]
    check_video(video)
    inputs = {
        "video": video,
        "reference": reference,
        "prompt": prompt,
        "source_prompt": source_prompt,
        "target_prompt": target_prompt,
    }
    _check_inputs(metrics, inputs)
    models, weights = _check_keys("models", models, names), _check_keys("weights", weights, names)
    options = _check_keys("options", options, names)
    results = {}
    for metric in metrics:
        kwargs = dict(options.get(metric.name, {}))
        if metric.needs_weights:
            kwargs.setdefault("device", device)
            if metric.name in models:
                kwargs["model"] = models[metric.name]
            if metric.name in weights:
                kwargs["weights"] = weights[metric.name]
        try:
            results[metric.name] = _call(metric, inputs, kwargs)
        except (MissingWeightsError, vbench.MetricNotImplementedError) as error:
            if on_missing == "raise":
                raise
            results[metric.name] = math.nan
            if reasons is not None:
                reasons[metric.name] = str(error)
    return results
