"""Quality tables shaped like the paper's Tables 1, 2 and 4, and the guidance sweep figure.

Rows are the original (the sweep's unperturbed ``baseline``) and each method (a guidance pair, a perturbation);
for every metric the table gives the mean over (prompt, seed) pairs with a percentile-bootstrap interval, the
paired change against the original with its interval, and the **per-prompt average rank** (rank the methods
within each prompt on its seed-mean, 1 = best, ties share the mean rank; then average over prompts).
``avg_rank`` averages those ranks over the metrics.

>>> import pandas as pd
>>> data = pd.DataFrame({"prompt": ["p", "p", "q", "q"], "seed": 0, "method": ["original", "UI"] * 2,
...                      "metric": "shape_match", "value": [1.0, 0.0, 0.0, 1.0]})
>>> quality_table(data, n_boot=200).loc[:, ("shape_match", "rank")].tolist()
[1.5, 1.5]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from ..core.errors import IEAdaptValueError

ORIGINAL = "original"
_COLUMNS = ["prompt", "seed", "method", "metric", "value"]


def long_table(data: xr.Dataset | pd.DataFrame) -> pd.DataFrame:
    """``prompt, seed, method, metric, value`` rows from a sweep Dataset (``baseline`` → ``original``;
    jobs not done are dropped) or from such a DataFrame (returned checked)."""
    if isinstance(data, pd.DataFrame):
        missing = set(_COLUMNS) - set(data.columns)
        if missing:
            raise IEAdaptValueError(f"a quality table needs columns {_COLUMNS}; missing {sorted(missing)}.")
        return data[_COLUMNS].copy()
    value = data["value"].where(data["done"]) if "done" in data else data["value"]
    df = value.to_dataframe(name="value").reset_index()
    df = df.rename(columns={"perturbation": "method"})[_COLUMNS]
    df["method"] = df["method"].replace({"baseline": ORIGINAL})
    return df.dropna(subset=["value"])


def _ranks(df: pd.DataFrame, methods: list[str], lower: bool) -> pd.Series:
    per_prompt = df.groupby(["prompt", "method"])["value"].mean().unstack("method").reindex(columns=methods)
    ranks = per_prompt.rank(axis=1, ascending=lower, method="average")
    return ranks.mean(axis=0)


def quality_table(
    data: xr.Dataset | pd.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    methods: Sequence[str] | None = None,
    lower_is_better: Sequence[str] = (),
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows: ``original`` then each method; columns ``(metric, stat)`` with stat ``mean``, ``ci_low``,
    ``ci_high``, ``delta`` (method − original, paired), ``delta_low``, ``delta_high``, ``rank``; and
    ``("all", "avg_rank")``.

    ``data``: a sweep Dataset (:func:`ieadapt_interp.sweep`) or a long DataFrame (:func:`long_table`).
    Intervals: percentile bootstrap over the (prompt, seed) pairs, ``n_boot`` resamples (the same resamples
    for every method, so the deltas are paired). ``methods``: the rows to keep (``original`` always stays).
    ``lower_is_better``: metrics where smaller wins the rank.
    """
    df = long_table(data)
    if methods is not None:
        unknown = sorted(set(methods) - set(df["method"]))
        if unknown:
            raise IEAdaptValueError(f"methods {unknown} are not in the data; present: {sorted(set(df['method']))}.")
        df = df[df["method"].isin({*methods, ORIGINAL})]
    metrics = list(metrics) if metrics is not None else list(dict.fromkeys(df["metric"]))
    methods = list(dict.fromkeys(df["method"]))
    if ORIGINAL in methods:
        methods = [ORIGINAL] + [m for m in methods if m != ORIGINAL]
    rng = np.random.default_rng(seed)
    alpha = (1.0 - ci) / 2.0
    columns: dict[tuple[str, str], pd.Series] = {}
    for metric in metrics:
        part = df[df["metric"] == metric]
        if part.empty:
            raise IEAdaptValueError(f"metric {metric!r} is not in the data; present: {sorted(set(df['metric']))}.")
        wide = part.pivot_table(index=["prompt", "seed"], columns="method", values="value", aggfunc="mean")
        wide = wide.reindex(columns=methods)
        values = wide.to_numpy(dtype=float).T  # [method, pair]
        idx = rng.integers(0, values.shape[1], size=(int(n_boot), values.shape[1]))
        with np.errstate(all="ignore"), _quiet():
            boot = np.nanmean(values[:, idx], axis=-1)  # [method, n_boot]
            mean = np.nanmean(values, axis=1)
            stats = {"mean": mean, "ci_low": np.nanquantile(boot, alpha, axis=1),
                     "ci_high": np.nanquantile(boot, 1 - alpha, axis=1)}
            if ORIGINAL in methods:
                diff = values - values[0]
                boot_d = np.nanmean(diff[:, idx], axis=-1)
                stats.update(delta=np.nanmean(diff, axis=1), delta_low=np.nanquantile(boot_d, alpha, axis=1),
                             delta_high=np.nanquantile(boot_d, 1 - alpha, axis=1))
        for name, arr in stats.items():
            columns[(metric, name)] = pd.Series(arr, index=methods)
        columns[(metric, "rank")] = _ranks(part, methods, metric in set(lower_is_better))
    table = pd.DataFrame(columns)
    table[("all", "avg_rank")] = table.loc[:, [(m, "rank") for m in metrics]].mean(axis=1)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["metric", "stat"])
    table.index.name = "method"
    return table


class _quiet:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def compact(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """One text cell per metric — ``mean [low, high]`` (rank) — and the average rank: the paper's layout."""
    out = {}
    metrics = [m for m in dict.fromkeys(table.columns.get_level_values(0)) if m != "all"]
    for m in metrics:
        t = table[m]
        out[m] = [f"{a:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] ({r:.2f})"
                  for a, lo, hi, r in zip(t["mean"], t["ci_low"], t["ci_high"], t["rank"])]
    out["avg_rank"] = table[("all", "avg_rank")].round(2).tolist()
    return pd.DataFrame(out, index=table.index)


def split_guidance_name(name: str) -> tuple[str, str, float]:
    """``"UI|l*|s=2"`` (names of :func:`ieadapt_interp.methods.guidance.guidance_grid`) → ``("UI", "l*", 2.0)``."""
    pair, choice, s = name.split("|")
    return pair, choice, float(s.removeprefix("s="))


def guidance_curve(data: xr.Dataset | pd.DataFrame, metric: str, *, figsize: tuple[float, float] | None = None
                   ) -> Figure:
    """Mean ``metric`` against the guidance scale ``s``, one line per (pair, layer choice), one panel per
    layer choice; the original (CFG only) as a dashed line. Rows are named by ``guidance_grid``."""
    df = long_table(data)
    df = df[df["metric"] == metric]
    original = df[df["method"] == ORIGINAL]["value"].mean()
    rows = []
    for method, part in df[df["method"] != ORIGINAL].groupby("method"):
        try:
            pair, choice, s = split_guidance_name(method)
        except ValueError:
            continue
        rows.append({"pair": pair, "choice": choice, "s": s, "value": part["value"].mean()})
    if not rows:
        raise IEAdaptValueError("no guidance rows named 'pair|choice|s=…' (build them with guidance_grid).")
    curve = pd.DataFrame(rows)
    choices = list(dict.fromkeys(curve["choice"]))
    fig = Figure(figsize=figsize or (4.0 * len(choices), 3.2))
    axes = fig.subplots(1, len(choices), squeeze=False, sharey=True)[0]
    for ax, choice in zip(axes, choices):
        for pair, part in curve[curve["choice"] == choice].groupby("pair"):
            part = part.sort_values("s")
            ax.plot(part["s"], part["value"], marker="o", label=pair)
        ax.axhline(original, color="k", linestyle="--", linewidth=1, label="CFG only")
        ax.set_title(f"layer: {choice}", fontsize=9)
        ax.set_xlabel("guidance scale s")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["ORIGINAL", "compact", "guidance_curve", "long_table", "quality_table", "split_guidance_name"]
