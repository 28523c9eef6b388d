"""``ds.ieadapt``: the one home of the paper's per-layer summaries of a stats Dataset (an xarray accessor).

Every per-layer summary of a :func:`ieadapt_interp.trace` ``stats`` Dataset is computed here, and every
other module (findings, presets, figures, explorer, calibration) calls it:

=================================  =================================================================
method                             gives
=================================  =================================================================
:meth:`~IEAdaptAccessor.select_rows`     the stats restricted to the batch rows a summary reads
:meth:`~IEAdaptAccessor.layer_means`     per layer: kind, block, index, mean and std of a variable
:meth:`~IEAdaptAccessor.layer_entropy`   mean normalised entropy ``H̄(A_l)`` (%) per layer
:meth:`~IEAdaptAccessor.registry`        ``l* = argmax_l H̄(A_l)`` (paper Eq. 3)
:meth:`~IEAdaptAccessor.low_entropy_layers`  the lowest-entropy fraction (IE-Adapt editing's ``L_edit``)
:meth:`~IEAdaptAccessor.energy_bound_violations`  counts of cells breaking ``E(UV) ≤ E(AV) ≤ E(IV)``
:meth:`~IEAdaptAccessor.layer_summary`   one row per layer: mean entropy and violation rate
=================================  =================================================================

**Which batch rows.** A traced run's stats may carry a ``branch`` dim (classifier-free guidance: ``cond``,
``uncond``) and a ``sample`` dim (variants of one batch). Every summary takes ``rows=``:

* ``"all"`` (the default, :data:`DEFAULT_ROWS`): every sample and both branches, pooled — a mean is taken
  over all of their cells at once, a count counts all of them;
* ``"cond"`` / ``"uncond"``: one CFG branch, every sample;
* a mapping such as ``{"branch": "cond", "sample": 0}``: one branch (by name) and/or one sample (by position).

**Candidates.** :meth:`~IEAdaptAccessor.registry` and :meth:`~IEAdaptAccessor.low_entropy_layers` choose
among self-attention layers only (:data:`SELF_ATTENTION`: spatial, temporal, joint) unless ``kind=`` says
otherwise; cross-attention is never a candidate by default.

**Energy bounds.** One tolerance, :data:`ENERGY_RTOL`, absorbs float rounding in every bound check.

>>> import ieadapt_interp as ia
>>> pipe = ia.tiny_pipeline()
>>> ds = ia.trace(pipe, "a red circle", num_frames=4, height=16, width=16, num_inference_steps=2).stats
>>> ds.ieadapt.layer_entropy().dims
('layer',)
>>> str(ds.kind.sel(layer=ds.ieadapt.registry()).values) in ia.core.accessor.SELF_ATTENTION
True
>>> ds.ieadapt.registry(kind="spatial") in set(ds.layer.values)
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .errors import IEAdaptKeyError, IEAdaptTypeError, IEAdaptValueError

#: How summaries treat the CFG branches and samples of a run by default: all of them, pooled.
DEFAULT_ROWS = "all"
#: The layer kinds that are candidates of the registry and of ``L_edit`` by default (never cross-attention).
SELF_ATTENTION: tuple[str, ...] = ("spatial", "temporal", "joint")
#: Relative tolerance of every energy bound check: ``E(AV) < E(UV)·(1−rtol)`` or ``E(AV) > E(IV)·(1+rtol)``.
ENERGY_RTOL = 1e-5

Rows = str | Mapping[str, int | str]
Kinds = str | Sequence[str] | None


def select_rows(stats: xr.Dataset, rows: Rows = DEFAULT_ROWS) -> xr.Dataset:
    """``stats`` restricted to the batch rows a summary reads (module docstring, "Which batch rows").

    A selected dim is dropped (``{"sample": 0}`` removes ``sample``); ``"all"`` returns ``stats`` as is.
    Raises for a branch or sample the stats do not have.

    >>> ds = xr.Dataset({"entropy_pct": (("layer", "branch"), [[10.0, 30.0]])},
    ...                 coords={"layer": ["a"], "branch": ["cond", "uncond"]})
    >>> float(select_rows(ds, "cond")["entropy_pct"].item())
    10.0
    """
    if not isinstance(stats, xr.Dataset):
        raise IEAdaptTypeError(
            f"expected the stats Dataset of a traced run (Result.stats); got {type(stats).__name__}."
        )
    if isinstance(rows, str):
        if rows == "all":
            return stats
        if rows not in ("cond", "uncond"):
            raise IEAdaptValueError(f"rows must be 'all', 'cond', 'uncond' or a mapping; got {rows!r}.")
        rows = {"branch": rows}
    if not isinstance(rows, Mapping) or set(rows) - {"branch", "sample"}:
        raise IEAdaptValueError(
            f"rows must be 'all', 'cond', 'uncond' or a mapping with keys 'branch' and/or 'sample'; got {rows!r}."
        )
    if "branch" in rows and "branch" in stats.dims:
        present = [str(b) for b in stats["branch"].values]
        if rows["branch"] not in present:
            raise IEAdaptValueError(f"branch {rows['branch']!r} not in these stats; branches present: {present}.")
        stats = stats.sel(branch=rows["branch"])
    if "sample" in rows and "sample" in stats.dims:
        n = stats.sizes["sample"]
        if not -n <= int(rows["sample"]) < n:
            raise IEAdaptValueError(f"sample {rows['sample']} out of range: these stats have {n} sample(s).")
        stats = stats.isel(sample=int(rows["sample"]))
    return stats


def _layer_frame(ds: xr.Dataset) -> pd.DataFrame:
    """The layer coordinates (kind, block, index) as a DataFrame indexed by layer name, in the stats' order."""
    return pd.DataFrame(
        {c: ds[c].values for c in ("kind", "block", "index") if c in ds.coords},
        index=pd.Index([str(x) for x in ds["layer"].values], name="layer"),
    )


def _kinds(kind: Kinds, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if kind is None:
        return default
    return (kind,) if isinstance(kind, str) else tuple(kind)


@xr.register_dataset_accessor("ieadapt")
class IEAdaptAccessor:
    """Per-layer summaries of a :func:`ieadapt_interp.trace` stats Dataset (module docstring)."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def select_rows(self, rows: Rows = DEFAULT_ROWS) -> xr.Dataset:
        """The stats restricted to ``rows`` (see :func:`select_rows`)."""
        return select_rows(self._ds, rows)

    def _layers(self, kind: Kinds, default: tuple[str, ...] | None = None, strict: bool = True) -> xr.Dataset:
        ds = self._ds
        kinds = _kinds(kind, default)
        if kinds is None:
            return ds
        if "kind" not in ds.coords:
            raise IEAdaptKeyError("stats has no 'kind' coordinate on layer; use ieadapt_interp.trace(...).stats.")
        keep = np.asarray(ds["kind"].isin(list(kinds)))
        if strict and not keep.any():
            raise IEAdaptValueError(
                f"No {list(kinds)} layers in these stats; kinds present: {sorted(set(ds['kind'].values))}."
            )
        return ds.isel(layer=keep)

    def _var(self, ds: xr.Dataset, var: str) -> xr.DataArray:
        if var not in ds:
            raise IEAdaptKeyError(
                f"stats lacks variable {var!r}; it has {sorted(ds.data_vars)}. "
                "Use the Dataset returned by ieadapt_interp.trace(...).stats."
            )
        return ds[var]

    def layer_means(
        self, var: str = "entropy_pct", *, kind: Kinds = None, rows: Rows = DEFAULT_ROWS
    ) -> pd.DataFrame:
        """Per layer: mean and std of ``var`` over every other dim of the chosen ``rows`` (NaN skipped).

        Returns a DataFrame indexed by layer (forward order) with columns ``kind, block, index, mean, std``;
        ``kind`` (a kind or several) keeps those layers only (none present: an empty table), ``None`` keeps
        every layer.

        >>> ds = xr.Dataset({"entropy_pct": (("layer", "sample"), [[10.0, 30.0], [50.0, 70.0]])},
        ...                 coords={"layer": ["a", "b"], "kind": ("layer", ["spatial", "cross"])})
        >>> ds.ieadapt.layer_means()["mean"].tolist()
        [20.0, 60.0]
        """
        ds = IEAdaptAccessor(select_rows(self._ds, rows))._layers(kind, strict=False)
        da = self._var(ds, var)
        other = [d for d in da.dims if d != "layer"]
        table = _layer_frame(ds)
        table["mean"] = da.mean(other, skipna=True).values.astype(float)
        table["std"] = da.std(other, skipna=True).values.astype(float)
        return table

    def layer_entropy(self, kind: Kinds = None, *, rows: Rows = DEFAULT_ROWS) -> xr.DataArray:
        """Mean normalised entropy ``H̄(A_l)`` (percent) per layer: :meth:`layer_means` of ``entropy_pct``.

        Dims ``(layer,)``, with the layer coordinates; ``kind=None`` keeps every layer.
        """
        ds = IEAdaptAccessor(select_rows(self._ds, rows))._layers(kind)
        pct = self._var(ds, "entropy_pct")
        return pct.mean([d for d in pct.dims if d != "layer"], skipna=True)

    def registry(self, kind: Kinds = None, *, rows: Rows = DEFAULT_ROWS) -> str:
        """``l* = argmax_l H̄(A_l)`` (paper Eq. 3): the name of the highest-entropy layer.

        Candidates: the layers of ``kind`` (default: :data:`SELF_ATTENTION`, never cross-attention).
        """
        mean = self.layer_entropy(_kinds(kind, SELF_ATTENTION), rows=rows)
        if not np.isfinite(mean.values).any():
            raise IEAdaptValueError("No candidate layer has a defined entropy (every one has a single key).")
        return str(mean["layer"].values[int(np.nanargmax(mean.values))])

    def low_entropy_layers(self, ratio: float = 0.5, kind: Kinds = None, *, rows: Rows = DEFAULT_ROWS) -> list[str]:
        """Layers whose mean entropy is among the lowest ``ratio`` fraction (IE-Adapt editing's ``L_edit``).

        Candidates: the layers of ``kind`` (default: :data:`SELF_ATTENTION`, never cross-attention) with a
        defined entropy; ``round(ratio · n)`` of them (at least one), lowest first.
        """
        if not 0.0 < ratio <= 1.0:
            raise IEAdaptValueError(f"ratio must lie in (0, 1]; got {ratio}.")
        mean = self.layer_entropy(_kinds(kind, SELF_ATTENTION), rows=rows).dropna("layer")
        count = max(1, int(round(ratio * mean.sizes["layer"])))
        order = np.argsort(mean.values, kind="stable")[:count]
        return [str(mean["layer"].values[i]) for i in order]

    def energy_bound_violations(
        self, *, rows: Rows = DEFAULT_ROWS, rtol: float = ENERGY_RTOL, kind: Kinds = None
    ) -> pd.DataFrame:
        """Count, per layer, the cells violating ``E(UV) ≤ E(AV) ≤ E(IV)`` (paper Fig. 4 / Eq. 2).

        A cell is one ``(step, head, frame)`` entry of one of the chosen ``rows``, counted where all three
        energies are defined. ``below_uniform`` counts ``E(AV) < E(UV)·(1−rtol)``, ``above_identity``
        ``E(AV) > E(IV)·(1+rtol)``. Returns columns ``kind, block, index, n, below_uniform, above_identity,
        violations, rate`` (``rate`` NaN for a layer without defined cells).
        """
        ds = IEAdaptAccessor(select_rows(self._ds, rows))._layers(kind)
        e, ei, eu = (self._var(ds, v) for v in ("energy", "energy_identity", "energy_uniform"))
        valid = e.notnull() & ei.notnull() & eu.notnull()
        other = [d for d in e.dims if d != "layer"]
        table = _layer_frame(ds)
        table["n"] = valid.sum(other).values.astype(int)
        table["below_uniform"] = ((e < eu * (1 - rtol)) & valid).sum(other).values.astype(int)
        table["above_identity"] = ((e > ei * (1 + rtol)) & valid).sum(other).values.astype(int)
        table["violations"] = table["below_uniform"] + table["above_identity"]
        table["rate"] = table["violations"] / table["n"].where(table["n"] > 0)
        return table

    def energy_violations(self, *, rows: Rows = DEFAULT_ROWS, rtol: float = ENERGY_RTOL) -> xr.DataArray:
        """Per layer, the fraction of cells violating the bounds: :meth:`energy_bound_violations`' ``rate``."""
        rate = self.energy_bound_violations(rows=rows, rtol=rtol)["rate"]
        return xr.DataArray(rate.values, coords={"layer": self._ds["layer"].values}, dims="layer")

    def layer_summary(self, *, rows: Rows = DEFAULT_ROWS) -> pd.DataFrame:
        """One row per layer: kind, block, index, mean entropy %, energy-bound violation rate."""
        table = self.layer_means("entropy_pct", rows=rows).rename(columns={"mean": "entropy_pct"})
        table = table.drop(columns="std")
        table["energy_violation_rate"] = self.energy_bound_violations(rows=rows)["rate"].values
        return table

    def plot_entropy(self, **options):
        """The entropy heatmap (layer × denoising step): :func:`ieadapt_interp.analysis.figures.entropy_heatmap`.

        ``options`` go to that function (``kinds``, ``rows``, ``head``, ``frame``, ``mark``). Returns the Figure.
        """
        if _PLOTTERS.get("entropy_heatmap") is None:  # the analysis layer registers itself when imported
            raise IEAdaptValueError("import ieadapt_interp (or ieadapt_interp.analysis.figures) to draw figures.")
        return _PLOTTERS["entropy_heatmap"](self._ds, **options)


#: Figure functions of the analysis layer, registered by it on import (core never imports analysis).
_PLOTTERS: dict[str, object] = {}


def register_plotter(name: str, function) -> None:
    """Let ``ds.ieadapt.plot_<...>`` call a figure function of a later layer (``analysis.figures``)."""
    _PLOTTERS[name] = function
