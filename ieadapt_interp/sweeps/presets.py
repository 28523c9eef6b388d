"""The paper's perturbation sets and generation settings, ready for :func:`ieadapt_interp.sweeps.sweep`.

Perturbation presets return ``{name: Perturbation}`` dicts (names become the sweep's ``perturbation``
labels). ``pipe`` may be a pipeline or its :func:`ieadapt_interp.attention_layers` table.

* :func:`single_layer` — every spatial and temporal layer × {I, U} (paper Sec. 3, Figs. 2, 18–19);
* :func:`all_layers` — every layer of a kind at once (e.g. all temporal maps ← U);
* :func:`entropy_split`, :func:`up_down`, :func:`per_block` — the multi-layer combinations of
  Supplementary 7.2 (all three: :func:`multi_layer`);
* :func:`lambda_sweep` — ``mix(λ) = λI + (1-λ)U`` over a λ grid (Supp. 7.2 interpolation);
* ``PAPER_ANIMATEDIFF``, ``PAPER_COGVIDEOX``, ``TOY`` — generation settings (:data:`GENERATION`).

>>> import ieadapt_interp as ia
>>> pipe = ia.tiny_pipeline("animatediff")
>>> len(single_layer(pipe))          # (16 spatial + 40 temporal) × {I, U}
112
>>> sorted(lambda_sweep("temporal", lams=(0, 0.5, 1)))
['temporal:mix(0)', 'temporal:mix(0.5)', 'temporal:mix(1)']
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..core.accessor import DEFAULT_ROWS, Rows
from ..core.adapters import attention_layers
from ..methods.perturbation import Layers, LayerSpec, Perturbation, as_layers, identity, mix, uniform
from ..core.errors import IEAdaptValueError

#: AnimateDiff (Realistic Vision 5.1 + motion adapter v1-5-3), paper Sec. 5: fp16, Euler, 512².
PAPER_ANIMATEDIFF: dict[str, Any] = {
    "seed": 42,
    "guidance_scale": 9.0,
    "num_inference_steps": 25,
    "scheduler": "euler",
    "num_frames": 16,
    "height": 512,
    "width": 512,
}
#: CogVideoX-5B, paper Sec. 5 (resolution: the pipeline's default, 480×720).
PAPER_COGVIDEOX: dict[str, Any] = {
    "seed": 42,
    "guidance_scale": 6.0,
    "num_inference_steps": 25,
    "num_frames": 25,
}
#: The embedded toy model (``ieadapt_interp.load_pipeline()``), its default sampler settings.
TOY: dict[str, Any] = {
    "seed": 42,
    "guidance_scale": 5.0,
    "num_inference_steps": 25,
    "num_frames": 16,
    "height": 64,
    "width": 64,
}
#: Named generation settings (the CLI's ``generation: toy`` etc.).
GENERATION: dict[str, dict[str, Any]] = {
    "paper_animatediff": PAPER_ANIMATEDIFF,
    "paper_cogvideox": PAPER_COGVIDEOX,
    "toy": TOY,
}

_REPLACEMENTS = {"identity": identity, "i": identity, "uniform": uniform, "u": uniform}


def generation(name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of the named generation settings with ``overrides`` applied.

    >>> generation("toy", num_inference_steps=4)["num_inference_steps"]
    4
    """
    key = name.lower()
    if key not in GENERATION:
        raise IEAdaptValueError(f"unknown generation preset {name!r}; choose one of {sorted(GENERATION)}.")
    return {**GENERATION[key], **overrides}


def _attention_layers(pipe_or_table) -> pd.DataFrame:
    """:func:`ieadapt_interp.attention_layers` of a pipeline; a table given instead is returned as is."""
    if isinstance(pipe_or_table, pd.DataFrame):
        return pipe_or_table
    return attention_layers(pipe_or_table)


def layer_table(pipe_or_table) -> pd.DataFrame:
    """Deprecated alias (one release) of :func:`ieadapt_interp.attention_layers` (a table passes through)."""
    warnings.warn("presets.layer_table is deprecated; use ieadapt_interp.attention_layers(pipe).",
                  DeprecationWarning, stacklevel=2)
    return _attention_layers(pipe_or_table)


def _replacer(name: str):
    try:
        return _REPLACEMENTS[name.lower()]
    except KeyError:
        raise IEAdaptValueError(
            f"unknown replacement {name!r}; presets take 'identity' (I) or 'uniform' (U) "
            "(use lambda_sweep for λ mixes)."
        ) from None


def _label(name: str) -> str:
    return _replacer(name).__name__


def _kinds(table: pd.DataFrame, kinds: Sequence[str]) -> list[str]:
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    present = sorted(set(table["kind"]))
    missing = [k for k in kinds if k not in present]
    if missing:
        raise IEAdaptValueError(
            f"this model has no {missing} attention layers (it has {present}); choose kinds among those."
        )
    return kinds


def _group(name: str, layers: list[str], replacements: Sequence[str]) -> dict[str, Perturbation]:
    return {f"{name}:{_label(r)}": _replacer(r)(Layers(names=tuple(layers))) for r in replacements}


def single_layer(
    pipe,
    kinds: Sequence[str] = ("spatial", "temporal"),
    replacements: Sequence[str] = ("identity", "uniform"),
    names: Sequence[str] | None = None,
) -> dict[str, Perturbation]:
    """Every layer of ``kinds`` alone × each replacement: ``{"spatial.16:identity": ..., ...}``.

    Names are ``<kind>.<index>:<replacement>`` (``index`` counts from 1 in forward order within a kind,
    so ``spatial.16`` is AnimateDiff's last spatial layer). Ordered by replacement, then layer.
    ``names`` (module paths) restricts the layers further; an unknown name raises ``KeyError``.
    """
    table = _attention_layers(pipe)
    if names is not None:
        table = table[table["name"].isin(Layers(names=tuple(names)).resolve(table))]
        kinds = [k for k in ([kinds] if isinstance(kinds, str) else kinds) if k in set(table["kind"])]
        if not kinds:
            raise IEAdaptValueError(
                f"none of the named layers is of the kinds asked for; their kinds: {sorted(set(table['kind']))}."
            )
    out: dict[str, Perturbation] = {}
    for r in replacements:
        for kind in _kinds(table, kinds):
            for row in table[table["kind"] == kind].itertuples():
                out[f"{kind}.{row.index}:{_label(r)}"] = _replacer(r)(Layers(names=(row.name,)))
    return out


def all_layers(
    pipe,
    kinds: Sequence[str] = ("temporal",),
    replacements: Sequence[str] = ("identity", "uniform"),
) -> dict[str, Perturbation]:
    """Every layer of a kind at once × each replacement: ``{"temporal.all:identity": ..., ...}``.

    >>> import ieadapt_interp as ia
    >>> sorted(all_layers(ia.tiny_pipeline("animatediff")))
    ['temporal.all:identity', 'temporal.all:uniform']
    """
    table = _attention_layers(pipe)
    out: dict[str, Perturbation] = {}
    for kind in _kinds(table, kinds):
        out.update(_group(f"{kind}.all", list(table.loc[table["kind"] == kind, "name"]), replacements))
    return out


def layer_entropy(stats, rows: Rows = DEFAULT_ROWS) -> pd.Series:
    """Mean normalised entropy (%) per layer of a calibration trace's ``stats``: ``stats.ieadapt.layer_entropy``.

    ``stats``: the ``xr.Dataset`` of :func:`ieadapt_interp.trace`; ``rows``: the CFG branches / samples read
    (default all, pooled; see :mod:`ieadapt_interp.core.accessor`).
    """
    if "entropy_pct" not in getattr(stats, "data_vars", {}):
        raise IEAdaptValueError(
            "stats must be the .stats Dataset of ieadapt_interp.trace(...) (with entropy_pct); "
            "run calibration_stats(pipe, prompt) to get one."
        )
    mean = stats.ieadapt.layer_entropy(rows=rows)
    return pd.Series(np.asarray(mean.values, dtype=float), index=[str(x) for x in mean["layer"].values])


def calibration_stats(pipe, prompt: str, **generation: Any):
    """Attention statistics of one unperturbed run (for :func:`entropy_split`); ``generation`` → ``trace``."""
    from ..methods.tracing import trace

    generation = dict(generation)
    generation.pop("scheduler", None)
    return trace(pipe, prompt, **generation).stats


def entropy_split(
    pipe,
    stats,
    kinds: Sequence[str] = ("spatial", "temporal"),
    fraction: float = 0.5,
    replacements: Sequence[str] = ("identity", "uniform"),
) -> dict[str, Perturbation]:
    """Top / bottom ``fraction`` of each kind's layers by mean entropy % (Supp. 7.2).

    Names: ``spatial.top50%entropy:identity``, ``spatial.bottom50%entropy:uniform``, …; the count of each
    group is ``ceil(fraction · n_layers_of_kind)``. ``stats``: a calibration trace (:func:`calibration_stats`).
    A layer whose entropy % is undefined (one key, e.g. a 1×1 bottleneck of a tiny model) ranks lowest.
    """
    if not 0.0 < fraction <= 1.0:
        raise IEAdaptValueError(f"fraction must be in (0, 1]; got {fraction}.")
    table, entropy = _attention_layers(pipe), layer_entropy(stats)
    out: dict[str, Perturbation] = {}
    pct = f"{fraction * 100:g}%"
    for kind in _kinds(table, kinds):
        names = list(table.loc[table["kind"] == kind, "name"])
        absent = [n for n in names if n not in entropy.index]
        if absent:
            raise IEAdaptValueError(
                f"the calibration stats lack {len(absent)} {kind} layer(s) (e.g. {absent[0]!r}); "
                "trace every layer (capture=True), e.g. calibration_stats(pipe, prompt)."
            )
        ranked = entropy[names].sort_values(ascending=False, kind="stable", na_position="last")
        n = math.ceil(fraction * len(ranked))
        out.update(_group(f"{kind}.top{pct}entropy", list(ranked.index[:n]), replacements))
        out.update(_group(f"{kind}.bottom{pct}entropy", list(ranked.index[::-1][:n]), replacements))
    return out


def up_down(
    pipe,
    kinds: Sequence[str] = ("spatial", "temporal"),
    replacements: Sequence[str] = ("identity", "uniform"),
) -> dict[str, Perturbation]:
    """All layers of a kind in the down blocks vs. in the up blocks: ``spatial.down:uniform``, …

    Models without down/up blocks (CogVideoX) raise: use :func:`per_block` there.
    """
    table = _attention_layers(pipe)
    out: dict[str, Perturbation] = {}
    for kind in _kinds(table, kinds):
        rows = table[table["kind"] == kind]
        for side in ("down", "up"):
            names = list(rows.loc[rows["block"].str.startswith(side + "."), "name"])
            if not names:
                raise IEAdaptValueError(
                    f"no {kind} layers in {side} blocks (blocks: {sorted(set(rows['block']))}); "
                    "up_down is for U-Nets, use per_block for transformers."
                )
            out.update(_group(f"{kind}.{side}", names, replacements))
    return out


def per_block(
    pipe,
    kinds: Sequence[str] = ("spatial", "temporal"),
    replacements: Sequence[str] = ("identity", "uniform"),
) -> dict[str, Perturbation]:
    """All layers of a kind within one block, block by block: ``temporal@down.1:identity``, …"""
    table = _attention_layers(pipe)
    out: dict[str, Perturbation] = {}
    for kind in _kinds(table, kinds):
        rows = table[table["kind"] == kind]
        for block in dict.fromkeys(rows["block"]):
            out.update(
                _group(f"{kind}@{block}", list(rows.loc[rows["block"] == block, "name"]), replacements)
            )
    return out


def multi_layer(
    pipe,
    stats,
    kinds: Sequence[str] = ("spatial", "temporal"),
    replacements: Sequence[str] = ("identity", "uniform"),
    fraction: float = 0.5,
) -> dict[str, Perturbation]:
    """Every Supp. 7.2 combination: :func:`entropy_split` + :func:`up_down` + :func:`per_block`."""
    return {
        **entropy_split(pipe, stats, kinds, fraction, replacements),
        **up_down(pipe, kinds, replacements),
        **per_block(pipe, kinds, replacements),
    }


def lambda_sweep(
    layers: LayerSpec, lams: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), name: str | None = None
) -> dict[str, Perturbation]:
    """``mix(λ)`` (``A ← λI + (1-λ)U``) on ``layers`` for each λ: λ=0 is U, λ=1 is I.

    ``layers``: a kind (``"temporal"``), a layer name, a list of names, or :class:`~ieadapt_interp.Layers`.
    ``name`` prefixes the labels (default: the kind or the layer's name).
    """
    spec = as_layers(layers)
    prefix = name or (
        spec.kinds[0]
        if spec.kinds and len(spec.kinds) == 1 and not spec.names
        else spec.names[0]
        if spec.names and len(spec.names) == 1
        else spec.describe()
    )
    out = {}
    for lam in lams:
        p = mix(float(lam), spec)
        out[f"{prefix}:{p.label}"] = p
    return out


PRESETS = {
    "single_layer": single_layer,
    "all_layers": all_layers,
    "entropy_split": entropy_split,
    "up_down": up_down,
    "per_block": per_block,
    "multi_layer": multi_layer,
    "lambda_sweep": lambda_sweep,
}
