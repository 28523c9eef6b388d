"""Re-checking the paper's findings on a model: measurements, not assumptions.

The claims are those of the paper's perturbation analysis (§3.2 spatial layers, §3.3 temporal layers, §3.4 the
information-theoretic view, §3.1 and Fig. 4 the energy bounds, §3.5 CogVideoX). Each is a :class:`Finding` record
in :data:`FINDINGS` (id, claim, paper section, what it needs, how it is measured), as metrics are records in
:data:`ieadapt_interp.metrics.METRICS`; every table lists every finding, ``n/a`` with the reason where it does not
apply.

Layers of functions:

* summaries of one traced run's ``stats`` (Dataset from :func:`ieadapt_interp.trace`):
  :func:`layer_means`, :func:`energy_bound_violations` (both the ``ds.ieadapt`` accessor's, which is their one
  implementation), :func:`entropy_share` and :func:`map_share` (per map, the paper's unit: a frame's spatial map,
  a position's F×F temporal map, a joint layer's whole map), :func:`energy_position`; ``rows=`` picks the CFG
  branches and samples read (default: all of them, pooled); :func:`stats_evidence` / :func:`pool_evidence`: what
  the stats-based findings read, pooled over runs;
* :func:`findings_perturbations` — the per-layer (spatial, temporal, joint) and all-temporal I / U / mix(λ)
  perturbations the checks read, run by
  :func:`ieadapt_interp.sweep` into a sweep Dataset ``value[prompt, seed, perturbation, metric]``;
* :func:`check_findings` (pure, on those two; with bootstrap intervals over the (prompt, seed) pairs) and
  :func:`run_findings_check` (generates them) → a DataFrame ``(id, finding, paper, measure, effect, holds,
  detail, …)``; :func:`findings_markdown` renders it.

The sweep Dataset and the helpers that read it (baseline, metric changes): :mod:`ieadapt_interp.sweeps.tables`.

>>> import numpy as np, xarray as xr
>>> ds = xr.Dataset({"energy": (("step", "layer", "head", "frame"), np.full((1, 1, 1, 2), 2.0)),
...                  "energy_identity": (("step", "layer", "head", "frame"), np.full((1, 1, 1, 2), 3.0)),
...                  "energy_uniform": (("step", "layer", "head", "frame"), np.array([[[[1.0, 2.5]]]]))},
...                 coords={"layer": ["a"], "kind": ("layer", ["spatial"]), "index": ("layer", [1])})
>>> int(energy_bound_violations(ds).violations.sum())
1
"""

from __future__ import annotations

import datetime as _dt
import platform
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..core.accessor import DEFAULT_ROWS, ENERGY_RTOL, Rows, select_rows
from ..core.adapters import attention_layers
from ..core.errors import IEAdaptKeyError, IEAdaptTypeError, IEAdaptValueError
from ..core.handlers import ENERGY_BINS, ENERGY_TOL, ENTROPY_BINS
from ..methods.perturbation import Layers, Perturbation
from ..sweeps import tables as _tables
from ..sweeps.tables import (  # noqa: F401  (sweep-table helpers, re-exported where they used to live)
    baseline_mask,
    check_sweep,
    mean_change,
    metric_change,
    per_layer_change,
    perturbation_summary,
)

#: Metrics the findings check reads (all weight-free): structure (ssim), motion amplitude (flow_magnitude),
#: inter-frame consistency (motion_smoothness_flow; temporal_ssim and the subject-consistency stand-in as detail).
FINDINGS_METRICS: tuple[str, ...] = (
    "ssim", "temporal_ssim", "flow_magnitude", "motion_smoothness_flow", "subject_consistency_hist",
)
#: Layer kinds perturbed one layer at a time (those the model has).
FINDINGS_KINDS: tuple[str, ...] = ("spatial", "temporal", "joint")
#: Name of the "all temporal layers at once" perturbations (``temporal.all:identity`` …).
TEMPORAL_GROUP = "temporal.all"


# --------------------------------------------------------------------------- summaries of stats
# Per-layer summaries live in the ``ds.ieadapt`` accessor (core/accessor.py); these call it. ``rows`` says
# which CFG branches and samples are read (default ``"all"``: every one, pooled; see the accessor).


def video_stats(stats: xr.Dataset, sample: int = 0, branch: str | None = None) -> xr.Dataset:
    """``stats`` reduced to ``(step, layer, head, frame)``: one ``sample`` and one ``branch`` (default: the first).

    The explicit single-row view; summaries take ``rows=`` instead (:func:`ieadapt_interp.core.accessor.select_rows`).
    """
    if not isinstance(stats, xr.Dataset):
        raise IEAdaptTypeError(
            f"expected the stats Dataset of a traced run (Result.stats); got {type(stats).__name__}."
        )
    rows: dict = {"sample": sample}
    if "branch" in stats.dims:
        rows["branch"] = branch if branch is not None else str(stats["branch"].values[0])
    stats = select_rows(stats, rows)
    missing = {"step", "layer"} - set(stats.dims)
    if missing:
        raise IEAdaptValueError(f"stats lacks dims {sorted(missing)}; expected (step, layer, head, frame).")
    return stats


def layer_means(
    stats: xr.Dataset, var: str = "entropy_pct", kinds: Sequence[str] | None = None, *, rows: Rows = DEFAULT_ROWS
) -> pd.DataFrame:
    """Per layer: mean and std of ``var`` over all other dims → DataFrame indexed by layer.

    Columns ``kind, block, index, mean, std``; in the stats' (forward) order, filtered to ``kinds``.
    The accessor's :meth:`~ieadapt_interp.core.accessor.IEAdaptAccessor.layer_means`.
    """
    return select_rows(stats).ieadapt.layer_means(var, kind=kinds, rows=rows)


def energy_bound_violations(stats: xr.Dataset, rtol: float = ENERGY_RTOL, *, rows: Rows = DEFAULT_ROWS) -> pd.DataFrame:
    """Count, per layer, entries violating ``E(UV) ≤ E(AV) ≤ E(IV)`` (paper Fig. 4 / Eq. 2).

    The accessor's :meth:`~ieadapt_interp.core.accessor.IEAdaptAccessor.energy_bound_violations`: columns
    ``kind, block, index, n, below_uniform, above_identity, violations, rate``.
    """
    return select_rows(stats).ieadapt.energy_bound_violations(rows=rows, rtol=rtol)


def violation_summary(stats: xr.Dataset, rtol: float = ENERGY_RTOL, *, rows: Rows = DEFAULT_ROWS) -> pd.DataFrame:
    """:func:`energy_bound_violations` summed per kind: ``n, below_uniform, above_identity, violations, rate``."""
    table = energy_bound_violations(stats, rtol, rows=rows)
    summary = table.groupby("kind")[["n", "below_uniform", "above_identity", "violations"]].sum()
    summary["rate"] = summary["violations"] / summary["n"].where(summary["n"] > 0)
    return summary


def energy_position(stats: xr.Dataset, *, rows: Rows = DEFAULT_ROWS) -> xr.DataArray:
    """Where ``E(AV)`` sits between its bounds: ``(E(AV) − E(UV)) / (E(IV) − E(UV))`` (0 = at U, 1 = at I).

    Same dims as ``stats.energy`` of the chosen ``rows``; NaN where the bounds coincide.
    """
    stats = select_rows(stats, rows)
    _need(stats, "energy", "energy_identity", "energy_uniform")
    span = stats["energy_identity"] - stats["energy_uniform"]
    return ((stats["energy"] - stats["energy_uniform"]) / span.where(span > 0)).rename("energy_position")


def entropy_share(
    stats: xr.Dataset, kind: str = "temporal", threshold: float = 90.0, *, rows: Rows = DEFAULT_ROWS
) -> float:
    """Fraction of ``kind`` maps whose entropy is ≥ ``threshold`` % of the maximum (``log N``).

    A map is one attention element (a frame's map in a spatial layer, one position's F×F map in a temporal layer,
    the whole map of a joint layer) at one step, head and row; its entropy the mean over its rows. Read from the
    per-map histogram ``map_entropy_hist`` (5 % bins: ``threshold`` must be a multiple of 5). NaN when the stats
    hold no map of that kind.

    >>> import numpy as np, xarray as xr
    >>> hist = np.zeros((1, 1, 1, 20)); hist[..., 19] = 3; hist[..., 10] = 1   # 3 maps ≥ 95 %, 1 at 50–55 %
    >>> ds = xr.Dataset({"map_entropy_hist": (("step", "layer", "head", "entropy_bin"), hist)},
    ...                 coords={"layer": ["t"], "kind": ("layer", ["temporal"])})
    >>> entropy_share(ds, "temporal", 90)
    0.75
    """
    if threshold not in ENTROPY_BINS:
        raise IEAdaptValueError(f"threshold must be a bin edge of map_entropy_hist (multiples of 5); got {threshold}.")
    if "kind" not in stats.coords:
        raise IEAdaptKeyError("stats has no 'kind' coordinate on layer; use ieadapt_interp.trace(...).stats.")
    chosen, total = map_share(stats, "map_entropy_hist", kind, np.asarray(ENTROPY_BINS[:-1]) >= threshold, rows=rows)
    return chosen / total if total else float("nan")


def _need(stats: xr.Dataset, *names: str) -> None:
    missing = [n for n in names if n not in stats]
    if missing:
        raise IEAdaptKeyError(
            f"stats lacks variable(s) {missing}; it has {sorted(stats.data_vars)}. "
            "Use the Dataset returned by ieadapt_interp.trace(...).stats."
        )


# --------------------------------------------------------------------------- evidence from stats
def map_share(stats: xr.Dataset, var: str, kind: str, bins: Sequence[bool], *, rows: Rows = DEFAULT_ROWS) -> tuple[float, float]:
    """``(maps in the chosen bins, all maps)`` of a per-map histogram ``var`` over the ``kind`` layers.

    ``var``: ``map_entropy_hist`` or ``map_energy_hist`` (counts of maps per bin, see
    :class:`ieadapt_interp.core.handlers.StatsRecorder`); summed over steps, layers, heads and the chosen ``rows``.
    ``(0, 0)`` when the stats hold no layer of that kind.
    """
    stats = select_rows(stats, rows)
    _need(stats, var)
    hist = stats[var].isel(layer=np.asarray(stats["kind"] == kind))
    counts = hist.sum([d for d in hist.dims if not d.endswith("_bin")], skipna=True).values.astype(float)
    return float(counts[np.asarray(bins, bool)].sum()), float(counts.sum())


def stats_evidence(stats: xr.Dataset, *, rows: Rows = DEFAULT_ROWS) -> dict:
    """What the stats-based findings read from one traced run, as sums that pool across runs.

    ``entropy_hist`` / ``energy_hist``: ``{kind: counts per bin}`` of the per-map histograms (absent when the stats
    predate them); ``layers``: per layer ``kind, av, iv, uv`` (energy totals) and ``entropy`` (mean ``entropy_pct``);
    ``cells``: per kind ``n, below_uniform, above_identity`` over ``(step, layer, head, frame)`` cells.
    """
    stats = select_rows(stats, rows)
    _need(stats, "energy", "energy_identity", "energy_uniform", "entropy_pct")
    kinds = np.array([str(k) for k in stats["kind"].values])  # zarr may give numpy StringDType
    out: dict = {}
    for var, key in (("map_entropy_hist", "entropy_hist"), ("map_energy_hist", "energy_hist")):
        if var in stats:
            hist = stats[var]
            other = [d for d in hist.dims if d not in ("layer",) and not d.endswith("_bin")]
            per_layer = hist.sum(other, skipna=True).values.astype(float)
            out[key] = {k: per_layer[kinds == k].sum(0) for k in set(kinds)}
    sums = {}
    for var, name in (("energy", "av"), ("energy_identity", "iv"), ("energy_uniform", "uv")):
        da = stats[var]
        sums[name] = da.sum([d for d in da.dims if d != "layer"], skipna=True).values
    entropy = stats["entropy_pct"]
    sums["entropy"] = entropy.mean([d for d in entropy.dims if d != "layer"], skipna=True).values
    out["layers"] = pd.DataFrame({"kind": kinds, "index": stats["index"].values, **sums},
                                 index=pd.Index(stats["layer"].values, name="layer"))
    cells = energy_bound_violations(stats)
    out["cells"] = cells.groupby("kind")[["n", "below_uniform", "above_identity"]].sum()
    return out


def pool_evidence(parts: Sequence[dict]) -> dict:
    """Sum :func:`stats_evidence` of several runs (histograms, energy totals, cell counts; entropy: the mean)."""
    out: dict = {}
    for key in ("entropy_hist", "energy_hist"):
        if all(key in p for p in parts):
            out[key] = {k: sum(p[key].get(k, 0) for p in parts) for k in set().union(*(p[key] for p in parts))}
    layers = [p["layers"] for p in parts]
    pooled = layers[0].copy()
    for col in ("av", "iv", "uv"):
        pooled[col] = sum(t[col].to_numpy() for t in layers)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer without entropy (one key) stays NaN
        pooled["entropy"] = np.nanmean(np.stack([t["entropy"].to_numpy() for t in layers]), axis=0)
    out["layers"] = pooled
    out["cells"] = sum((p["cells"] for p in parts[1:]), parts[0]["cells"])
    return out


# --------------------------------------------------------------------------- the findings registry
def lambda_curve(ds: xr.Dataset, metric: str, group: str = TEMPORAL_GROUP) -> pd.Series:
    """:func:`ieadapt_interp.sweeps.tables.lambda_curve` for the findings' temporal group by default."""
    return _tables.lambda_curve(ds, metric, group)


@dataclass(frozen=True)
class Outcome:
    """One measurement: ``effect`` (NaN when not measurable), ``holds`` (None: n/a), ``detail``; ``missing`` says
    why the finding does not apply (then effect is NaN and holds None)."""

    effect: float = float("nan")
    holds: bool | None = None
    detail: str = ""
    missing: str = ""


@dataclass(frozen=True)
class Evidence:
    """What the checks read: the findings sweep ``table`` (:func:`ieadapt_interp.sweep` Dataset) and the pooled
    :func:`stats_evidence` of the baseline runs (``stats``); either may be ``None``; ``n_stats``: runs pooled."""

    table: xr.Dataset | None
    stats: dict | None
    n_stats: int = 0


@dataclass(frozen=True)
class Finding:
    """One claim of the paper and how it is checked.

    Attributes:
        id: short id (``"1a"`` …), the order of the tables.
        claim: the claim, in the paper's words where it has them.
        paper: where the paper makes it (section, figure).
        needs: what the check needs (layers perturbed, metrics, stats).
        measure: how it is measured and when it holds.
        check: ``check(evidence, options) -> Outcome``.
        null: the value a bootstrap interval of the effect must exclude for the effect to be significant
            (``None``: no such test).
        needs_significance: the verdict is "yes" only when the interval excludes ``null``.
    """

    id: str
    claim: str
    paper: str
    needs: str
    measure: str
    check: Callable[[Evidence, dict], Outcome]
    null: float | None = 0.0
    needs_significance: bool = False


def _has_metric(table: xr.Dataset | None, metric: str) -> bool:
    return table is not None and metric in table["metric"].values and bool(
        np.isfinite(table["value"].sel(metric=metric).values).any()
    )


def _single(table: xr.Dataset | None, kind: str) -> bool:
    """Whether ``table`` has single-layer perturbations of ``kind``."""
    return table is not None and bool(((table["kind"] == kind) & (table["index"] >= 0)).any())


def _needs_table(ev: Evidence, kind: str, *metrics: str) -> str:
    """The reason a table-based check cannot run, or ``""``."""
    if ev.table is None:
        return "no perturbation sweep given"
    if not _single(ev.table, kind):
        have = sorted({str(k) for k in ev.table["kind"].values if k})
        return f"no single-layer {kind} perturbations in the sweep (kinds perturbed: {have or 'none'})"
    lacking = [m for m in metrics if not _has_metric(ev.table, m)]
    return f"the sweep lacks metric(s) {lacking}" if lacking else ""


def _middle_layers(table: xr.Dataset, kind: str, indices: pd.Index) -> list[int] | str:
    """Perturbed layers of ``kind`` in the ``mid`` block (the U-Net bottleneck), else the middle one of ≥ 3
    perturbed layers; a reason (str) when the sweep has no such layer."""
    sel = table.isel(perturbation=np.asarray((table["kind"] == kind) & (table["index"] >= 0)))
    mid = sorted({int(i) for i, b in zip(sel["index"].values, sel["block"].values) if b == "mid"})
    if mid:
        return [i for i in mid if i in indices] or f"the mid-block {kind} layer(s) {mid} were not perturbed"
    if len(indices) < 3:
        return f"only {len(indices)} {kind} layer(s) perturbed: no middle one (perturb ≥ 3)"
    return [int(sorted(indices)[len(indices) // 2])]


def _drop(table: xr.Dataset, metric: str, kind: str) -> pd.Series:
    """Per layer of ``kind``: −(ΔI + ΔU)/2, the mean drop of ``metric`` under the two replacements."""
    return -(per_layer_change(table, metric, kind, "identity") + per_layer_change(table, metric, kind, "uniform")) / 2


def _check_1a(ev: Evidence, o: dict) -> Outcome:
    if missing := _needs_table(ev, "spatial", "ssim"):
        return Outcome(missing=missing)
    ssim_i = per_layer_change(ev.table, "ssim", "spatial", "identity")
    ssim_u = per_layer_change(ev.table, "ssim", "spatial", "uniform")
    last = int(ssim_i.index.max())
    effect = float(ssim_i[last] - ssim_u[last])
    return Outcome(effect, effect < 0, f"spatial layer {last}: ΔSSIM I={ssim_i[last]:+.4f}, U={ssim_u[last]:+.4f}")


def _mid_u_minus_i(ev: Evidence, kind: str) -> Outcome:
    """ΔSSIM(U) − ΔSSIM(I) averaged over the mid-block ``kind`` layer(s), each perturbed alone (checks 1b, 3f);
    holds if < 0; n/a when neither I nor U there changes the video."""
    if missing := _needs_table(ev, kind, "ssim"):
        return Outcome(missing=missing)
    ssim_i = per_layer_change(ev.table, "ssim", kind, "identity")
    ssim_u = per_layer_change(ev.table, "ssim", kind, "uniform")
    mid = _middle_layers(ev.table, kind, ssim_i.index)
    if isinstance(mid, str):
        return Outcome(missing=mid)
    if ssim_u[mid].abs().max() == 0 and ssim_i[mid].abs().max() == 0:
        return Outcome(missing=f"neither I nor U at {kind} layer(s) {mid} changes the video")
    effect = float(ssim_u[mid].mean() - ssim_i[mid].mean())
    return Outcome(effect, effect < 0, f"{kind} layer(s) {mid}: ΔSSIM I={ssim_i[mid].mean():+.4f}, "
                                       f"U={ssim_u[mid].mean():+.4f}")


def _check_1b(ev: Evidence, o: dict) -> Outcome:
    return _mid_u_minus_i(ev, "spatial")


def _check_1c(ev: Evidence, o: dict) -> Outcome:
    if missing := _needs_table(ev, "spatial", "ssim"):
        return Outcome(missing=missing)
    drop = _drop(ev.table, "ssim", "spatial")
    first, last = int(drop.index.min()), int(drop.index.max())
    if len(drop) <= 2:
        return Outcome(missing="needs spatial layers besides the first and the last")
    ends, middle = float(drop[[first, last]].mean()), float(drop.drop([first, last]).mean())
    ratio = ends / middle if middle > 0 else (float("inf") if ends > 0 else float("nan"))
    return Outcome(ratio, ratio > 1, f"mean drop: layers {first}+{last} {ends:.4f}, others {middle:.4f}")


def _check_1d(ev: Evidence, o: dict) -> Outcome:
    if missing := _needs_table(ev, "spatial", "ssim"):
        return Outcome(missing=missing)
    drop = _drop(ev.table, "ssim", "spatial")
    last = int(drop.index.max())
    rank = int((drop > drop[last]).sum()) + 1
    return Outcome(float(rank), rank == 1, f"largest drop at spatial layer {int(drop.idxmax())}")


def _check_2(ev: Evidence, o: dict) -> Outcome:
    metric = o["consistency_metric"]
    if missing := _needs_table(ev, "spatial", metric):
        return Outcome(missing=missing)
    change = per_layer_change(ev.table, metric, "spatial", "identity")
    last = int(change.index.max())
    effect = float(change[last])
    rank = int((change < change[last]).sum()) + 1  # 1 = the largest decline
    detail = [f"rank of layer {last} by decline {rank} of {len(change)} (largest at {int(change.idxmin())})"]
    for other in ("temporal_ssim", "subject_consistency_hist"):
        if other != metric and _has_metric(ev.table, other):
            detail.append(f"Δ{other} {per_layer_change(ev.table, other, 'spatial', 'identity')[last]:+.4f}")
    return Outcome(effect, bool(effect < 0 and rank == 1), "; ".join(detail))


def _temporal_change(ev: Evidence, metric: str, rep: str, group: str) -> tuple[float, str]:
    """Change of ``metric`` with all temporal layers ← ``rep`` (the ``group`` perturbation), else the mean of the
    single temporal layers; and a phrase saying which."""
    in_group = any(str(p) == f"{group}:{rep}" for p in ev.table["perturbation"].values)
    if in_group:
        return mean_change(ev.table, metric, f"{group}:{rep}"), f"'{group}' perturbed at once"
    return float(per_layer_change(ev.table, metric, "temporal", rep).mean()), "mean over single temporal layers"


def _needs_temporal(ev: Evidence, rep: str, group: str, *metrics: str) -> str:
    if ev.table is None:
        return "no perturbation sweep given"
    names = {str(p) for p in ev.table["perturbation"].values}
    if f"{group}:{rep}" not in names and not (
        _single(ev.table, "temporal") and (ev.table["replacement"] == rep).any()
    ):
        return f"no temporal ← {rep} perturbation in the sweep (the model has no temporal layers, or they were not perturbed)"
    lacking = [m for m in metrics if not _has_metric(ev.table, m)]
    return f"the sweep lacks metric(s) {lacking}" if lacking else ""


def _motion_check(rep: str, sign: int) -> Callable[[Evidence, dict], Outcome]:
    def check(ev: Evidence, o: dict) -> Outcome:
        metric = o["motion_metric"]
        if missing := _needs_temporal(ev, rep, o["temporal_group"], metric):
            return Outcome(missing=missing)
        effect, where = _temporal_change(ev, metric, rep, o["temporal_group"])
        return Outcome(effect, bool(sign * effect > 0), f"Δ{metric}, {where}")

    return check


def _check_3c(ev: Evidence, o: dict) -> Outcome:
    metric = o["consistency_metric"]
    if missing := _needs_temporal(ev, "identity", o["temporal_group"], metric):
        return Outcome(missing=missing)
    effect, where = _temporal_change(ev, metric, "identity", o["temporal_group"])
    detail = [where]
    for other in ("temporal_ssim", "subject_consistency_hist"):
        if other != metric and _has_metric(ev.table, other):
            detail.append(f"Δ{other} {_temporal_change(ev, other, 'identity', o['temporal_group'])[0]:+.4f}")
    return Outcome(effect, bool(effect < 0), "; ".join(detail))


def _check_3d(ev: Evidence, o: dict) -> Outcome:
    metric, group = o["motion_metric"], o["temporal_group"]
    if missing := _needs_temporal(ev, "identity", group, metric):
        return Outcome(missing=missing)
    curve = lambda_curve(ev.table, metric, group)
    if len(curve) < 3:
        return Outcome(missing=f"needs '{group}' ← mix(λ) for at least 3 λ values (I, U and one mix)")
    rho = float(pd.Series(curve.index, dtype=float).corr(pd.Series(curve.values), method="spearman"))
    text = "; ".join(f"λ={lam:g}: {value:+.3f}" for lam, value in curve.items())
    return Outcome(rho, bool(np.all(np.diff(curve.values) > 0)), f"Δ{metric}: {text} (yes = strictly increasing)")


def _quality_metric(table: xr.Dataset | None, candidates: Sequence[str]) -> str | None:
    return next((m for m in candidates if _has_metric(table, m)), None)


def _check_3e(ev: Evidence, o: dict) -> Outcome:
    if ev.table is None:
        return Outcome(missing="no perturbation sweep given")
    metric = _quality_metric(ev.table, o["quality_metrics"])
    if metric is None:
        return Outcome(missing=f"no quality metric in the sweep (one of {list(o['quality_metrics'])})")
    if missing := _needs_table(ev, "temporal", metric):
        return Outcome(missing=missing)
    drop = -per_layer_change(ev.table, metric, "temporal", "identity")
    if len(drop) <= 2:
        return Outcome(missing="needs temporal layers besides the first and the last")
    first, last = int(drop.index.min()), int(drop.index.max())
    others = drop.drop([first, last])
    effect = float(min(drop[first], drop[last]) - others.max())
    return Outcome(effect, effect > 0, f"{metric} drop under I: layer {first} {drop[first]:+.4f}, layer {last} "
                                       f"{drop[last]:+.4f}, largest elsewhere {others.max():+.4f} (layer "
                                       f"{int(others.idxmax())})")


def _check_3f(ev: Evidence, o: dict) -> Outcome:
    return _mid_u_minus_i(ev, "temporal")


def _needs_stats(ev: Evidence, key: str, kind: str | None = None) -> str:
    if ev.stats is None:
        return "no attention statistics given"
    if key not in ev.stats:
        return f"the stats lack the per-map histograms ({key}); trace again with this version"
    if kind is not None and not float(np.sum(ev.stats[key].get(kind, 0))):
        return f"no {kind} maps in the stats (the model has no {kind} layers)"
    return ""


def _check_4a(ev: Evidence, o: dict) -> Outcome:
    if missing := _needs_stats(ev, "entropy_hist", "temporal"):
        return Outcome(missing=missing)
    counts = np.asarray(ev.stats["entropy_hist"]["temporal"], float)
    lower = np.asarray(ENTROPY_BINS[:-1])
    share = float(counts[lower >= o["entropy_threshold"]].sum() / counts.sum())
    return Outcome(share, share > o["share_needed"],
                   f"{int(counts.sum())} temporal maps over {ev.n_stats} run(s); each map one position's F×F map")


def _check_4b(ev: Evidence, o: dict) -> Outcome:
    if missing := _needs_stats(ev, "energy_hist", "spatial"):
        return Outcome(missing=missing)
    counts = np.asarray(ev.stats["energy_hist"]["spatial"], float)
    upper = np.asarray(ENERGY_BINS[1:])
    share = float(counts[upper <= o["near_uniform"]].sum() / counts.sum())
    below = int(counts[0])
    return Outcome(share, share > 0.5, f"{int(counts.sum())} spatial maps; {below} below E(UV) (counted as near)")


def _check_4c(ev: Evidence, o: dict) -> Outcome:
    if missing := _needs_stats(ev, "energy_hist"):
        return Outcome(missing=missing)
    kinds = [k for k in ev.stats["energy_hist"] if k != "cross"]
    counts = sum(np.asarray(ev.stats["energy_hist"][k], float) for k in kinds)
    total = counts.sum()
    if not total:
        return Outcome(missing="no self-attention maps in the stats")
    below, above = int(counts[0]), int(counts[-1])
    share = float((below + above) / total)
    layers = ev.stats["layers"]
    layers = layers[layers["kind"] != "cross"]
    span = (layers["iv"] - layers["uv"]).where(lambda x: x > 0)
    position = (layers["av"] - layers["uv"]) / span
    outside = layers.index[(position < -ENERGY_TOL) | (position > 1 + ENERGY_TOL)].tolist()
    cells = ev.stats["cells"].drop(index="cross", errors="ignore").sum()
    holds = share <= o["map_tolerance"] and not outside
    detail = (f"maps: {below} below E(UV), {above} above E(IV) of {int(total)} (tolerance {o['map_tolerance']:.0%}); "
              f"layer totals outside the bounds (±{ENERGY_TOL:g} of the span): {len(outside)} of {len(layers)}"
              + (f" {outside}" if outside else "")
              + f"; per (step, layer, head, frame) cell: {int(cells['below_uniform'])} below, "
              f"{int(cells['above_identity'])} above of {int(cells['n'])}")
    return Outcome(share, holds, detail)


def _joint_entropy(ev: Evidence) -> tuple[pd.Series, str]:
    if ev.stats is None:
        return pd.Series(dtype=float), "no attention statistics given"
    layers = ev.stats["layers"]
    joint = layers[layers["kind"] == "joint"]["entropy"]
    return joint, "" if len(joint) else "no joint (3D full-attention) layers: the model is not a CogVideoX-style DiT"


def _check_5a(ev: Evidence, o: dict) -> Outcome:
    joint, missing = _joint_entropy(ev)
    if missing:
        return Outcome(missing=missing)
    low, high = o["joint_range"]
    return Outcome(float(joint.min()), bool(joint.between(low, high).all()),
                   f"layer means {joint.min():.1f}–{joint.max():.1f} %")


def _check_5b(ev: Evidence, o: dict) -> Outcome:
    joint, missing = _joint_entropy(ev)
    if missing:
        return Outcome(missing=missing)
    ends, median = float(joint.iloc[[0, -1]].mean()), float(joint.median())
    return Outcome(ends - median, ends > median, f"first+last {ends:.1f} %, median {median:.1f} %")


def _check_5c(ev: Evidence, o: dict) -> Outcome:
    if missing := _needs_table(ev, "joint", "ssim"):
        return Outcome(missing=missing)
    drop = _drop(ev.table, "ssim", "joint")
    if len(drop) < 3:
        return Outcome(missing="needs at least 3 joint layers perturbed one at a time")
    rho = float(pd.Series(drop.index, dtype=float).corr(pd.Series(drop.values), method="spearman"))
    return Outcome(rho, rho < 0, f"SSIM drop: first layer {drop.iloc[0]:.4f}, last {drop.iloc[-1]:.4f}")


FINDINGS: dict[str, Finding] = {
    f.id: f
    for f in (
        Finding("1a", "Spatial I at the last spatial layer changes intra-frame structure; U barely does", "§3.2",
                "spatial layers perturbed one at a time; ssim",
                "ΔSSIM(I) − ΔSSIM(U) at the last spatial layer; holds if < 0", _check_1a),
        Finding("1b", "Near the bottleneck it is the other way round: U changes structure more than I", "§3.2, §3.4",
                "spatial layers perturbed one at a time; ssim",
                "ΔSSIM(U) − ΔSSIM(I) at the mid-block spatial layer(s); holds if < 0", _check_1b),
        Finding("1c", "Spatial layers at the beginning and end of the U-Net have the largest impact", "§3.2",
                "spatial layers perturbed one at a time; ssim",
                "mean SSIM drop (I and U) at first+last / mean drop elsewhere; holds if > 1", _check_1c, null=1.0),
        Finding("1d", "The final spatial layer is the most affected", "§3.2",
                "spatial layers perturbed one at a time; ssim",
                "rank of the last spatial layer by SSIM drop (1 = largest); holds if 1", _check_1d, null=None),
        Finding("2", "Spatial I in the final (16th) layer causes a sharp decline in inter-frame consistency",
                "§3.2", "spatial layers perturbed one at a time; motion_smoothness_flow",
                "Δ motion_smoothness_flow, I at the last spatial layer; holds if < 0, the largest decline of all "
                "spatial layers, and significant (interval excludes 0)", _check_2, needs_significance=True),
        Finding("3a", "Temporal maps near U give a static video", "§3.3, §3.4",
                "all temporal layers ← U; flow_magnitude", "Δ flow_magnitude; holds if < 0", _motion_check("uniform", -1)),
        Finding("3b", "Temporal maps near I give more motion", "§3.3, §3.4",
                "all temporal layers ← I; flow_magnitude", "Δ flow_magnitude; holds if > 0", _motion_check("identity", 1)),
        Finding("3c", "Temporal maps near I lower inter-frame consistency", "§3.3",
                "all temporal layers ← I; motion_smoothness_flow",
                "Δ motion_smoothness_flow (not temporal SSIM, which falls with any motion); holds if < 0", _check_3c),
        Finding("3d", "Temporal maps set the amplitude of motion: it grows from U to I", "§3.3",
                "all temporal layers ← λI + (1−λ)U for λ = 0, ¼, ½, ¾, 1; flow_magnitude",
                "Spearman ρ(λ, Δ flow_magnitude); holds if Δ strictly increases with λ", _check_3d, null=None),
        Finding("3e", "Temporal I lowers quality, most at the first and last temporal layers", "§3.3",
                "temporal layers perturbed one at a time; a quality metric (imaging_quality, aesthetic_quality; "
                "on the embedded model connectedness)",
                "drop of quality under I: min(first, last) − max(others); holds if > 0", _check_3e),
        Finding("3f", "Near the bottleneck, temporal U changes structure more than I", "§3.3",
                "temporal layers perturbed one at a time; ssim",
                "ΔSSIM(U) − ΔSSIM(I) at the mid-block temporal layer(s); holds if < 0", _check_3f),
        Finding("4a", "Over 70 % of temporal maps have entropy close to 100 %", "§3.4",
                "per-map entropy histograms (map_entropy_hist) of the baseline runs",
                "share of temporal maps (one F×F map per spatial position, step, head, run) with mean row entropy "
                "≥ 90 % of log F; holds if > 0.70", _check_4a, null=0.70),
        Finding("4b", "Spatial maps' energy sits close to the E(UV) bound", "§3.4, Fig. 4",
                "per-map energy histograms (map_energy_hist) of the baseline runs",
                "share of spatial maps (one frame's map) with (E(AV)−E(UV))/(E(IV)−E(UV)) < 0.2; holds if > 0.5",
                _check_4b, null=0.5),
        Finding("4c", "E(UV) ≤ E(AV) ≤ E(IV) with high probability, bounded in every layer", "§3.1, Fig. 4",
                "per-map energy histograms and per-layer energy totals of the baseline runs",
                "share of self-attention maps outside the bounds (±0.1 % of the span); holds if ≤ 5 % and no layer "
                "total is outside", _check_4c, null=None),
        Finding("5a", "CogVideoX: entropy 15–45 % in all layers", "§3.5, Fig. 5",
                "joint-attention layers in the stats", "min layer-mean entropy %; holds if every layer is in "
                "[15, 45] %", _check_5a, null=None),
        Finding("5b", "CogVideoX: higher entropy at the first and last layers than in the middle", "§3.5",
                "joint-attention layers in the stats", "mean entropy % of first+last − median; holds if > 0",
                _check_5b),
        Finding("5c", "CogVideoX: shallow layers are sensitive to perturbation, the final layers robust", "§3.5",
                "joint layers perturbed one at a time; ssim",
                "Spearman ρ(layer index, SSIM drop); holds if < 0", _check_5c),
    )
}

CHECK_OPTIONS = {
    "temporal_group": TEMPORAL_GROUP,
    "motion_metric": "flow_magnitude",
    "consistency_metric": "motion_smoothness_flow",
    "quality_metrics": ("imaging_quality", "aesthetic_quality", "connectedness"),
    "entropy_threshold": 90.0,
    "share_needed": 0.70,
    "near_uniform": 0.2,
    "map_tolerance": 0.05,
    "joint_range": (15.0, 45.0),
}


def _evidence(table: xr.Dataset | None, stats) -> Evidence:
    if stats is None:
        return Evidence(table, None, 0)
    parts = [stats_evidence(s) for s in ([stats] if isinstance(stats, xr.Dataset) else list(stats))]
    return Evidence(table, pool_evidence(parts) if parts else None, len(parts))


def measure_findings(evidence: Evidence, **options) -> pd.DataFrame:
    """Each registered :class:`Finding` measured on ``evidence`` (point estimates, no intervals).

    Returns one row per finding of :data:`FINDINGS`, in order: ``id, finding, paper, measure, effect, holds``
    (yes / no / n/a), ``detail`` (for n/a: why it does not apply).
    """
    unknown = set(options) - set(CHECK_OPTIONS)
    if unknown:
        raise IEAdaptValueError(f"unknown findings option(s) {sorted(unknown)}; valid: {sorted(CHECK_OPTIONS)}.")
    opts = {**CHECK_OPTIONS, **options}
    if opts["near_uniform"] not in ENERGY_BINS or opts["entropy_threshold"] not in ENTROPY_BINS:
        raise IEAdaptValueError("near_uniform and entropy_threshold must be bin edges of the per-map histograms "
                                f"(energy {ENERGY_BINS[1:-1]}, entropy {ENTROPY_BINS}).")
    rows = []
    for finding in FINDINGS.values():
        out = finding.check(evidence, opts)
        na = bool(out.missing) or out.holds is None or (isinstance(out.effect, float) and np.isnan(out.effect))
        rows.append({
            "id": finding.id,
            "finding": finding.claim,
            "paper": finding.paper,
            "measure": finding.measure,
            "effect": float("nan") if out.missing else float(out.effect),
            "holds": "n/a" if na else ("yes" if out.holds else "no"),
            "detail": f"n/a: {out.missing}" if out.missing else out.detail,
        })
    return pd.DataFrame(rows, columns=["id", "finding", "paper", "measure", "effect", "holds", "detail"])


def check_findings(
    table: xr.Dataset | None,
    stats: xr.Dataset | Sequence[xr.Dataset] | None,
    *,
    n_boot: int = 0,
    level: float = 0.95,
    seed: int = 0,
    **options,
) -> pd.DataFrame:
    """Test the paper's findings (:data:`FINDINGS`) on a findings sweep and the baseline runs' stats.

    ``table``: a sweep Dataset of :func:`findings_perturbations` (see :func:`run_findings_check`); ``stats``: one
    traced run's ``.stats`` or one per (prompt, seed) pair, in the sweep's order (prompt-major); either may be
    ``None``. Effects are means over prompts and seeds (changes: perturbed − baseline); stats-based effects pool all
    runs. ``n_boot > 0`` adds percentile-bootstrap intervals over the (prompt, seed) pairs
    (:func:`bootstrap_intervals`) and a ``significant`` column; a finding with ``needs_significance`` then holds only
    when its interval excludes its null value. ``options``: :data:`CHECK_OPTIONS`.

    Returns one row per registered finding, always all of them: ``id, finding, paper, measure, effect, holds``
    (yes / no / n/a), ``detail`` (+ ``ci_low, ci_high, n_pairs, significant`` with ``n_boot``).
    """
    checks = measure_findings(_evidence(table, stats), **options)
    if n_boot:
        checks = with_intervals(checks, bootstrap_intervals(table, stats, n_boot=n_boot, level=level, seed=seed,
                                                            **options))
    return checks


def findings_perturbations(
    pipe,
    kinds: Sequence[str] = FINDINGS_KINDS,
    replacements: Sequence[str] = ("identity", "uniform"),
    layers: Sequence[str] | None = None,
    lams: Sequence[float] = (0.25, 0.5, 0.75),
) -> dict[str, Perturbation]:
    """What :func:`check_findings` needs: every layer of ``kinds`` alone (those the model has; spatial and temporal
    layers one at a time for findings 1, 2, 3e, 3f; joint for 5c) and all temporal layers at once, × I, U, plus all
    temporal layers ← ``mix(λ)`` for ``lams`` (the I↔U curve of finding 3d).

    :func:`ieadapt_interp.sweeps.presets.single_layer` (restricted to the module paths ``layers`` when given),
    :func:`ieadapt_interp.sweeps.presets.all_layers` and :func:`ieadapt_interp.sweeps.presets.lambda_sweep` for the temporal
    kind (when the model has one); names ``spatial.16:identity``, ``temporal.all:uniform``,
    ``temporal.all:mix(0.5)``, …
    """
    from ..sweeps.presets import all_layers, lambda_sweep, single_layer

    table = attention_layers(pipe) if not isinstance(pipe, pd.DataFrame) else pipe
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    present = [k for k in kinds if (table["kind"] == k).any()]
    if not present:
        raise IEAdaptValueError(f"this model has none of the kinds {kinds}; it has {sorted(set(table['kind']))}.")
    perturbations = single_layer(table, present, replacements, names=layers)
    if (table["kind"] == "temporal").any():
        perturbations.update(all_layers(table, ("temporal",), replacements))
        perturbations.update(lambda_sweep(Layers(kinds=("temporal",)), lams, name=TEMPORAL_GROUP))
    return perturbations


def _pairs(table: xr.Dataset) -> xr.Dataset:
    """``table`` with its (prompt, seed) pairs flattened onto ``prompt`` (``seed`` of length 1)."""
    value = table["value"].transpose("prompt", "seed", "perturbation", "metric")
    n_pairs = value.sizes["prompt"] * value.sizes["seed"]
    flat = value.values.reshape(n_pairs, 1, value.sizes["perturbation"], value.sizes["metric"])
    coords = {name: coord for name, coord in table["value"].coords.items() if "perturbation" in coord.dims}
    return xr.Dataset(
        {"value": (("prompt", "seed", "perturbation", "metric"), flat)},
        coords={**coords, "prompt": np.arange(n_pairs), "seed": [0], "metric": table["metric"].values},
    )


def bootstrap_intervals(
    table: xr.Dataset | None,
    stats: xr.Dataset | Sequence[xr.Dataset] | None = None,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    **check_options,
) -> pd.DataFrame:
    """Percentile bootstrap intervals of every finding's effect, resampling (prompt, seed) pairs.

    Each of ``n_boot`` resamples draws the sweep's pairs with replacement and re-measures every finding on them;
    ``stats`` (one Dataset per pair, in the sweep's prompt-major order) are drawn with the same pairs, so the
    stats-based findings get intervals too (drawn on their own when their number differs from the sweep's). Returns
    a DataFrame indexed by ``id`` with ``ci_low``, ``ci_high``, ``n_pairs`` (findings without a measurable effect
    are left out); with one pair the interval is the point itself.

    >>> intervals = bootstrap_intervals(table, stats, n_boot=100)   # doctest: +SKIP
    >>> intervals.loc["3a", ["ci_low", "ci_high"]]                  # doctest: +SKIP
    """
    if not 0 < level < 1:
        raise IEAdaptValueError(f"level must be in (0, 1); got {level}.")
    if n_boot < 1:
        raise IEAdaptValueError(f"n_boot must be ≥ 1; got {n_boot}.")
    pairs = None
    if table is not None:
        check_sweep(table)
        pairs = _pairs(table)
    parts = None
    if stats is not None:
        parts = [stats_evidence(s) for s in ([stats] if isinstance(stats, xr.Dataset) else list(stats))]
    n_table = pairs.sizes["prompt"] if pairs is not None else 0
    n_stats = len(parts) if parts else 0
    rng = np.random.default_rng(seed)
    draws, measured = [], {}  # measured: effects per drawn (table pairs, stats pairs), each measured once
    for _ in range(n_boot):
        idx = rng.integers(0, max(n_table, n_stats, 1), max(n_table, n_stats, 1))
        take_table = take_stats = None
        if pairs is not None:
            take_table = idx if n_table == len(idx) else rng.integers(0, n_table, n_table)
        if parts:
            take_stats = idx if n_stats == len(idx) else rng.integers(0, n_stats, n_stats)
        key = (None if take_table is None else tuple(take_table), None if take_stats is None else tuple(take_stats))
        if key not in measured:  # few pairs repeat draws: 1 pair has one, 2 pairs four
            measured[key] = _measure_draw(pairs, parts, take_table, take_stats, n_stats, check_options)
        draws.append(measured[key])
    samples = pd.concat(draws, axis=1)
    alpha = (1 - level) / 2
    return pd.DataFrame(
        {
            "ci_low": samples.quantile(alpha, axis=1),
            "ci_high": samples.quantile(1 - alpha, axis=1),
            "n_pairs": max(n_table, n_stats),
        }
    ).dropna(subset=["ci_low"])


def _measure_draw(pairs, parts, take_table, take_stats, n_stats: int, check_options) -> pd.Series:
    """Every finding's effect (indexed by ``id``) on one bootstrap draw: the sweep's pairs ``take_table`` and the
    stats' pairs ``take_stats`` (index arrays, or ``None`` when that evidence is absent)."""
    sub_table = sub_stats = None
    if take_table is not None:
        sub_table = pairs.isel(prompt=take_table).assign_coords(prompt=np.arange(len(take_table)))
    if take_stats is not None:
        sub_stats = pool_evidence([parts[i] for i in take_stats])
    return measure_findings(Evidence(sub_table, sub_stats, n_stats), **check_options).set_index("id")["effect"]


def with_intervals(findings: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """``findings`` with ``ci_low``, ``ci_high``, ``n_pairs`` and ``significant`` (yes: the interval excludes the
    finding's null value; no; – without an interval or null); a finding with ``needs_significance`` holds only when
    significant."""
    out = findings.join(intervals, on="id")
    significant, holds = [], []
    for row in out.itertuples():
        finding = FINDINGS.get(row.id)
        null = finding.null if finding is not None else None
        if null is None or np.isnan(row.ci_low):
            significant.append("–")
        else:
            significant.append("yes" if (row.ci_low > null or row.ci_high < null) else "no")
        verdict = row.holds
        if finding is not None and finding.needs_significance and verdict == "yes" and significant[-1] != "yes":
            verdict = "no"
        holds.append(verdict)
    return out.assign(significant=significant, holds=holds)


def run_findings_check(
    pipe,
    prompts: Sequence[str],
    *,
    store: str | Path,
    seeds: Sequence[int] = (0,),
    kinds: Sequence[str] = FINDINGS_KINDS,
    layers: Sequence[str] | None = None,
    metrics: Sequence[str] = FINDINGS_METRICS,
    batch_size: int = 8,
    engine: str = "local",
    progress: bool = True,
    n_boot: int = 200,
    **generation,
) -> tuple[pd.DataFrame, xr.Dataset, list[xr.Dataset]]:
    """Run the findings sweep and check it → ``(findings, table, stats)``.

    ``table``: :func:`ieadapt_interp.sweep` of :func:`findings_perturbations` (``kinds`` the model has, ``layers``)
    over ``prompts`` × ``seeds`` with ``metrics`` (default :data:`FINDINGS_METRICS`; add a quality metric such as
    ``imaging_quality`` for finding 3e), written to (and resumed from) ``store``; ``stats``: the attention
    statistics of every (prompt, seed) baseline, which the sweep stores beside the metrics (prompt-major order).
    ``findings``: :func:`check_findings` on both with ``n_boot`` bootstrap resamples of the pairs. ``generation``:
    ``num_frames``, ``num_inference_steps``, ``guidance_scale``, ``height``, ``width``, ``scheduler`` …

    >>> checks, table, stats = run_findings_check(pipe, ["a red circle moving left"],
    ...                                           store="runs/findings.zarr", num_inference_steps=10)  # doctest: +SKIP
    """
    from ..sweeps import sweep
    from ..sweeps.store import SweepStore

    table = sweep(
        pipe,
        prompts,
        findings_perturbations(pipe, kinds, layers=layers),
        seeds=seeds,
        metrics=tuple(dict.fromkeys(metrics)),
        store=store,
        engine=engine,
        batch_size=batch_size,
        generation=generation,
        progress=progress,
    )
    saved = SweepStore(store)
    stats = [saved.baseline_stats(p, s) for p in range(len(prompts)) for s in range(len(seeds))]
    return check_findings(table, stats, n_boot=n_boot), table, stats


def save_findings(findings: pd.DataFrame, out_dir: str | Path, name: str = "findings") -> Path:
    """Write ``findings`` as ``out_dir/name.csv`` and ``out_dir/name.md``; returns the Markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    findings.to_csv(out / f"{name}.csv", index=False)
    path = out / f"{name}.md"
    path.write_text(findings_markdown(findings))
    return path


def findings_markdown(
    findings: pd.DataFrame, title: str | None = None, context: Mapping[str, str] | None = None
) -> str:
    """A Markdown table of :func:`check_findings`' output (every finding, n/a with its reason), with optional
    heading and context lines."""
    lines = [f"## {title}", ""] if title else []
    for key, value in (context or {}).items():
        lines.append(f"- {key}: {value}")
    if context:
        lines.append("")
    has_ci = "ci_low" in findings.columns
    ci_head = " 95 % interval | significant |" if has_ci else ""
    lines += [
        f"| id | finding (paper) | measure | effect |{ci_head} holds | detail |",
        "|---|---|---|---|" + ("---|---|" if has_ci else "") + "---|---|",
    ]
    for row in findings.itertuples():
        effect = "n/a" if isinstance(row.effect, float) and np.isnan(row.effect) else f"{row.effect:.4g}"
        ci = ""
        if has_ci:
            interval = "–" if np.isnan(row.ci_low) else f"[{row.ci_low:.4g}, {row.ci_high:.4g}]"
            ci = f" {interval} | {row.significant} |"
        paper = f" ({row.paper})" if "paper" in findings.columns and row.paper else ""
        lines.append(f"| {row.id} | {row.finding}{paper} | {row.measure} | {effect} |{ci} {row.holds} | {row.detail} |")
    if has_ci and findings["n_pairs"].notna().any():
        lines += ["", (f"Intervals: percentile bootstrap over the {int(findings['n_pairs'].max())} (prompt, seed) "
                  "pairs (the stats-based findings resample the same pairs' baseline runs). `significant`: the "
                  "interval excludes the finding's null value (0 for a change; 1 for 1c's ratio; 0.70 for 4a; 0.5 "
                  "for 4b). `holds` judges the point estimate, except where a finding requires significance (2).")]
    return "\n".join(lines) + "\n"


def run_context(pipe=None, **settings) -> dict[str, str]:
    """Date, machine and versions (for benchmark tables)."""
    from ..core.versions import versions_string

    context = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.node()} ({platform.machine()}, {platform.processor() or 'cpu'})",
        "versions": versions_string(),
    }
    if pipe is not None:
        context["model"] = type(pipe).__name__
    context.update({k: str(v) for k, v in settings.items()})
    return context
