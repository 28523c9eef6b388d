"""Reading a sweep table: the baseline, metric changes, per-layer and per-perturbation summaries.

A *sweep table* is the Dataset :func:`ieadapt_interp.sweep` / :func:`ieadapt_interp.open_sweep` return (or
one built by hand in the same shape): variable ``value[prompt, seed, perturbation, metric]``; along
``perturbation`` the coordinates ``layer`` (module path; a group's members joined by ``;``), ``kind``,
``block``, ``index`` (−1 for the baseline and groups), ``replacement`` and ``lam``.

**The baseline** is found one way everywhere (:func:`baseline_mask`): the entry whose ``replacement`` is
``"none"`` — the unperturbed run a sweep stores first (its label is :data:`~ieadapt_interp.sweeps.BASELINE`).
Every perturbation has a real replacement (identity, uniform, mix, scale), so no other entry matches.

Figures, the explorer, the findings and the ``ieadapt report`` command all read sweeps through these.

>>> import numpy as np, xarray as xr
>>> ds = xr.Dataset({"value": (("prompt", "seed", "perturbation", "metric"), [[[[1.0], [0.75]]]])},
...                 coords={"perturbation": ["baseline", "t:U"], "metric": ["ssim"],
...                         "replacement": ("perturbation", ["none", "uniform"]),
...                         "layer": ("perturbation", ["", "t"]), "kind": ("perturbation", ["", "temporal"])})
>>> baseline_mask(ds).tolist()
[True, False]
>>> float(metric_change(ds, "ssim").squeeze())
-0.25
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ..core.errors import IEAdaptKeyError, IEAdaptTypeError, IEAdaptValueError

#: The ``replacement`` coordinate of the unperturbed baseline entry.
BASELINE_REPLACEMENT = "none"


def check_sweep(ds: xr.Dataset) -> None:
    """Raise a clear error unless ``ds`` is a sweep table (module docstring)."""
    if not isinstance(ds, xr.Dataset) or "value" not in ds:
        raise IEAdaptTypeError(
            "expected a sweep Dataset with a 'value' variable over (prompt, seed, perturbation, metric)."
        )
    missing = [c for c in ("replacement", "layer", "kind") if c not in ds.coords]
    if missing or "perturbation" not in ds["value"].dims or "metric" not in ds["value"].dims:
        raise IEAdaptValueError(
            f"sweep Dataset lacks {missing or 'dims perturbation/metric'}; perturbation coordinates "
            "must carry layer, kind, index, replacement (and 'none' for the baseline)."
        )


def baseline_mask(ds: xr.Dataset) -> np.ndarray:
    """Boolean per ``perturbation`` entry: True for the unperturbed baseline (``replacement == "none"``)."""
    if "replacement" not in ds.coords:
        raise IEAdaptKeyError("the sweep has no 'replacement' coordinate on perturbation; use ia.open_sweep(...).")
    return np.asarray(ds["replacement"] == BASELINE_REPLACEMENT)


def baseline_values(ds: xr.Dataset, var: str = "value") -> xr.DataArray | None:
    """``ds[var]`` of the baseline entry (the ``perturbation`` dim dropped), or ``None`` without a baseline."""
    mask = baseline_mask(ds)
    if not mask.any():
        return None
    return ds[var].isel(perturbation=int(np.argmax(mask)), drop=True)


def metric_change(ds: xr.Dataset, metric: str) -> xr.DataArray:
    """``value − baseline value`` of ``metric`` per ``(prompt, seed, perturbation)``, baseline dropped.

    Without a baseline the raw values are returned (attr ``relative=False``).
    """
    check_sweep(ds)
    if metric not in ds["metric"].values:
        raise IEAdaptKeyError(f"metric {metric!r} not in the sweep; it has {list(ds['metric'].values)}.")
    value = ds["value"].sel(metric=metric, drop=True)
    mask = baseline_mask(ds)
    if not mask.any():
        out = value.copy()
        out.attrs["relative"] = False
        return out
    base = value.isel(perturbation=int(np.argmax(mask)), drop=True)
    out = (value - base).isel(perturbation=~mask)
    out.attrs["relative"] = True
    return out


def mean_change(ds: xr.Dataset, metric: str, perturbation: str) -> float:
    """Mean change of ``metric`` under the perturbation named ``perturbation`` (NaN if the sweep lacks it)."""
    change = metric_change(ds, metric)
    if perturbation not in change["perturbation"].values:
        return float("nan")
    return float(change.sel(perturbation=perturbation).mean(skipna=True))


def per_layer_change(ds: xr.Dataset, metric: str, kind: str, replacement: str) -> pd.Series:
    """Mean change per layer of ``kind`` (index → value), single-layer ``replacement`` perturbations only."""
    change = metric_change(ds, metric)
    keep = (change["kind"] == kind) & (change["replacement"] == replacement) & (change["index"] >= 0)
    sel = change.isel(perturbation=np.asarray(keep))
    means = sel.mean([d for d in sel.dims if d != "perturbation"], skipna=True)
    return pd.Series(
        means.values, index=pd.Index(sel["index"].values, name="index"), name=f"{metric}:{replacement}"
    ).sort_index()


def perturbation_summary(ds: xr.Dataset, metric: str) -> tuple[pd.DataFrame, bool]:
    """Per perturbation (baseline dropped): the mean and std of :func:`metric_change` over prompts × seeds.

    Returns ``(DataFrame perturbation, replacement, lam, mean, std; relative)`` — ``relative`` is False when the
    sweep has no baseline and the values are raw.
    """
    change = metric_change(ds, metric)
    other = [d for d in change.dims if d != "perturbation"]
    summary = pd.DataFrame(
        {
            "perturbation": [str(p) for p in change["perturbation"].values],
            "replacement": [str(r) for r in change["replacement"].values],
            "lam": change["lam"].values.astype(float) if "lam" in change.coords else np.nan,
            "mean": change.mean(other, skipna=True).values,
            "std": change.std(other, skipna=True).values,
        }
    )
    return summary, bool(change.attrs.get("relative", False))


def lambda_curve(ds: xr.Dataset, metric: str, group: str) -> pd.Series:
    """Mean change of ``metric`` against λ for the I↔U axis of one layer group: ``{λ: Δ}``, sorted by λ.

    Points are the perturbations named ``<group>:…`` whose replacement is ``uniform`` (λ = 0), ``mix`` (its λ)
    or ``identity`` (λ = 1). Empty when the sweep has none.
    """
    summary, _ = perturbation_summary(ds, metric)
    keep = summary["perturbation"].str.startswith(f"{group}:") & summary["replacement"].isin(
        ["uniform", "mix", "identity"]
    )
    points = summary[keep]
    return pd.Series(
        points["mean"].values, index=pd.Index(points["lam"].values, name="lam"), name=metric, dtype=float
    ).groupby(level=0).mean()


def summary_table(ds: xr.Dataset) -> pd.DataFrame:
    """Long table of finished jobs: prompt, seed, perturbation (+ its coordinates), metric, value, missing_reason."""
    frame = ds[["value", "missing_reason", "done"]].to_dataframe().reset_index()
    frame = frame[frame["done"].astype(bool)].drop(columns="done")
    return frame.assign(missing_reason=frame["missing_reason"].fillna("").astype(str))


def effect_table(ds: xr.Dataset) -> pd.DataFrame:
    """Per perturbation × metric: mean over finished (prompt, seed), the baseline's mean, and the change."""
    value = ds["value"].where(ds["done"])
    mean = value.mean(("prompt", "seed"), skipna=True)
    mask = baseline_mask(ds)
    if not mask.any():
        raise IEAdaptValueError("the sweep has no baseline entry (replacement 'none'); effects need one.")
    base = mean.isel(perturbation=int(np.argmax(mask)), drop=True)
    frame = mean.to_dataframe(name="mean").reset_index()
    frame["baseline"] = base.sel(metric=frame["metric"].to_numpy()).to_numpy()
    frame["change"] = frame["mean"] - frame["baseline"]
    frame["n"] = value.count(("prompt", "seed")).to_numpy().reshape(-1)
    return frame
