"""Re-checking the paper's findings (DESIGN.md §2) on a model: measurements, not assumptions.

Three layers of functions:

* summaries of one traced run's ``stats`` (Dataset from :func:`ieadapt_interp.trace`):
  :func:`layer_means`, :func:`energy_bound_violations` (both the ``ds.ieadapt`` accessor's, which is their one
  implementation), :func:`entropy_share`, :func:`energy_position`; ``rows=`` picks the CFG branches and samples
  read (default: all of them, pooled);
* :func:`findings_perturbations` — the per-layer and all-temporal I / U perturbations the checks read, run by
  :func:`ieadapt_interp.sweep` into a sweep Dataset ``value[prompt, seed, perturbation, metric]``;
* :func:`check_findings` (pure, on those two) and :func:`run_findings_check` (generates them) →
  a DataFrame ``(id, finding, measure, effect, holds, detail)``; :func:`findings_markdown` renders it.

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
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..methods.perturbation import Layers, Perturbation
from ..core.adapters import attention_layers
from ..core.accessor import DEFAULT_ROWS, ENERGY_RTOL, Rows, select_rows
from ..sweeps import tables as _tables
from ..sweeps.tables import (  # noqa: F401  (sweep-table helpers, re-exported where they used to live)
    baseline_mask,
    check_sweep,
    mean_change,
    metric_change,
    per_layer_change,
    perturbation_summary,
)
from ..core.errors import IEAdaptKeyError, IEAdaptTypeError, IEAdaptValueError

#: Metrics the findings check reads (all weight-free).
FINDINGS_METRICS: tuple[str, ...] = ("ssim", "temporal_ssim", "dynamic_degree")
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
    """Fraction of ``kind`` maps whose entropy is ≥ ``threshold`` % of the maximum.

    A map is one ``(step, layer, head)`` of a ``kind`` layer in one of the chosen ``rows``, its entropy the
    mean over frames (``entropy_pct``). NaN when the stats hold no layer of that kind.
    """
    stats = select_rows(stats, rows)
    _need(stats, "entropy_pct")
    if "kind" not in stats.coords:
        raise IEAdaptKeyError("stats has no 'kind' coordinate on layer; use ieadapt_interp.trace(...).stats.")
    sel = stats["entropy_pct"].isel(layer=np.asarray(stats["kind"] == kind))
    if sel.sizes["layer"] == 0:
        return float("nan")
    maps = sel.mean("frame", skipna=True) if "frame" in sel.dims else sel
    values = maps.values[np.isfinite(maps.values)]
    return float((values >= threshold).mean()) if values.size else float("nan")


def _need(stats: xr.Dataset, *names: str) -> None:
    missing = [n for n in names if n not in stats]
    if missing:
        raise IEAdaptKeyError(
            f"stats lacks variable(s) {missing}; it has {sorted(stats.data_vars)}. "
            "Use the Dataset returned by ieadapt_interp.trace(...).stats."
        )


# --------------------------------------------------------------------------- the findings


def lambda_curve(ds: xr.Dataset, metric: str, group: str = TEMPORAL_GROUP) -> pd.Series:
    """:func:`ieadapt_interp.sweeps.tables.lambda_curve` for the findings' temporal group by default."""
    return _tables.lambda_curve(ds, metric, group)


def _row(fid: str, finding: str, measure: str, effect: float, holds: bool | None, detail: str = "") -> dict:
    verdict = (
        "n/a"
        if holds is None or (isinstance(effect, float) and np.isnan(effect))
        else ("yes" if holds else "no")
    )
    return {
        "id": fid,
        "finding": finding,
        "measure": measure,
        "effect": effect,
        "holds": verdict,
        "detail": detail,
    }


def _has_metric(ds: xr.Dataset | None, metric: str) -> bool:
    return ds is not None and metric in ds["metric"].values


def check_findings(
    table: xr.Dataset | None,
    stats: xr.Dataset | None,
    *,
    temporal_group: str = TEMPORAL_GROUP,
    entropy_threshold: float = 90.0,
    share_needed: float = 0.70,
    near_uniform: float = 0.25,
    rtol: float = ENERGY_RTOL,
) -> pd.DataFrame:
    """Test DESIGN.md §2's findings on a perturbation table and a traced run's stats.

    ``table``: a sweep-shaped Dataset with ``ssim``, ``temporal_ssim``, ``dynamic_degree`` (see
    :func:`run_findings_check`); ``stats``: :func:`ieadapt_interp.trace`'s ``.stats``. Either may be
    ``None`` (its rows become ``n/a``). Effects are means over prompts and seeds; changes are
    ``perturbed − baseline``.

    Returns a DataFrame with one row per check: ``id, finding, measure, effect, holds`` (yes / no / n/a),
    ``detail``.
    """
    rows: list[dict] = []
    has_spatial = table is not None and bool((table["kind"] == "spatial").any())
    if has_spatial and _has_metric(table, "ssim"):
        ssim_i, ssim_u = (
            per_layer_change(table, "ssim", "spatial", "identity"),
            per_layer_change(table, "ssim", "spatial", "uniform"),
        )
        first, last = int(ssim_i.index.min()), int(ssim_i.index.max())
        spatial = table.isel(perturbation=np.asarray((table["kind"] == "spatial") & (table["index"] >= 0)))
        mid = sorted({int(i) for i, b in zip(spatial["index"].values, spatial["block"].values) if b == "mid"})
        mid = mid or [int(np.median(ssim_i.index))]
        effect = float(ssim_i[last] - ssim_u[last])
        rows.append(
            _row(
                "1a",
                "Spatial I at the last spatial layer breaks structure more than U",
                f"ΔSSIM(I) − ΔSSIM(U), spatial layer {last}",
                effect,
                effect < 0,
                f"ΔSSIM I={ssim_i[last]:+.4f}, U={ssim_u[last]:+.4f}",
            )
        )
        effect = float(ssim_u[mid].mean() - ssim_i[mid].mean())
        no_effect = bool(ssim_u[mid].abs().max() == 0 and ssim_i[mid].abs().max() == 0)
        rows.append(
            _row(
                "1b",
                "Near the bottleneck U breaks structure more than I",
                f"ΔSSIM(U) − ΔSSIM(I), spatial layer(s) {mid}",
                effect,
                None if no_effect else effect < 0,
                f"ΔSSIM I={ssim_i[mid].mean():+.4f}, U={ssim_u[mid].mean():+.4f}"
                + (" (neither changes the video: untestable)" if no_effect else ""),
            )
        )
        drop = -(ssim_i + ssim_u) / 2
        ends, middle = drop[[first, last]].mean(), drop.drop([first, last]).mean()
        if len(drop) <= 2 or np.isnan(middle):
            ratio = float("nan")  # needs layers besides the first and the last
        else:
            ratio = float(ends / middle) if middle > 0 else (float("inf") if ends > 0 else float("nan"))
        rows.append(
            _row(
                "1c",
                "First and last spatial layers matter most (SSIM drop, mean of I and U)",
                "mean drop at first+last / mean drop elsewhere",
                ratio,
                ratio > 1,
                f"ends {ends:.4f}, others {middle:.4f}",
            )
        )
        rank = int((drop > drop[last]).sum()) + 1
        rows.append(
            _row(
                "1d",
                "The last spatial layer matters most of all",
                f"rank of layer {last} by SSIM drop (1 = largest)",
                float(rank),
                rank == 1,
                f"largest drop at spatial layer {int(drop.idxmax())}",
            )
        )
    else:
        rows += [
            _row(i, t, "needs spatial layers and ssim", float("nan"), None)
            for i, t in (
                ("1a", "Spatial I at the last spatial layer breaks structure more than U"),
                ("1b", "Near the bottleneck U breaks structure more than I"),
                ("1c", "First and last spatial layers matter most"),
                ("1d", "The last spatial layer matters most of all"),
            )
        ]
    if has_spatial and _has_metric(table, "temporal_ssim"):
        ts_i = per_layer_change(table, "temporal_ssim", "spatial", "identity")
        last = int(ts_i.index.max())
        effect = float(ts_i[last])
        rows.append(
            _row(
                "2",
                "Spatial I in the last spatial layer lowers inter-frame consistency",
                f"Δ temporal_ssim, I at spatial layer {last}",
                effect,
                bool(effect < 0 and effect <= ts_i.median()),
                f"median over spatial I layers {ts_i.median():+.4f}",
            )
        )
    else:
        rows.append(
            _row(
                "2",
                "Spatial I in the last spatial layer lowers inter-frame consistency",
                "needs spatial layers and temporal_ssim",
                float("nan"),
                None,
            )
        )
    has_temporal = table is not None and bool((table["kind"] == "temporal").any())
    if has_temporal and _has_metric(table, "dynamic_degree"):
        in_group = any(str(p).startswith(f"{temporal_group}:") for p in table["perturbation"].values)
        where = f"'{temporal_group}' perturbed at once" if in_group else "mean over single temporal layers"

        def temporal_change(metric: str, rep: str) -> float:
            if in_group:
                return mean_change(table, metric, f"{temporal_group}:{rep}")
            return float(per_layer_change(table, metric, "temporal", rep).mean())

        for fid, rep, finding, sign in (
            ("3a", "uniform", "Temporal maps ← U give a more static video", -1),
            ("3b", "identity", "Temporal maps ← I give more motion", 1),
        ):
            effect = temporal_change("dynamic_degree", rep)
            rows.append(_row(fid, finding, f"Δ dynamic_degree ({where})", effect, bool(sign * effect > 0)))
        if _has_metric(table, "temporal_ssim"):
            effect = temporal_change("temporal_ssim", "identity")
            rows.append(
                _row(
                    "3c",
                    "Temporal maps ← I lower inter-frame consistency",
                    f"Δ temporal_ssim ({where})",
                    effect,
                    bool(effect < 0),
                )
            )
        curve = lambda_curve(table, "dynamic_degree", temporal_group)
        if len(curve) >= 3:
            rho = float(pd.Series(curve.index, dtype=float).corr(pd.Series(curve.values), method="spearman"))
            rows.append(
                _row(
                    "3d",
                    "Temporal maps set motion amplitude: motion grows from U to I (A ← λI + (1−λ)U)",
                    f"Spearman ρ(λ, Δ dynamic_degree), '{temporal_group}', {len(curve)} λ values",
                    rho,
                    bool(np.all(np.diff(curve.values) > 0)),
                    "; ".join(f"λ={lam:g}: {value:+.3f}" for lam, value in curve.items())
                    + " (yes = strictly increasing)",
                )
            )
    else:
        rows += [
            _row(i, t, "needs temporal layers and dynamic_degree", float("nan"), None)
            for i, t in (
                ("3a", "Temporal maps ← U give a more static video"),
                ("3b", "Temporal maps ← I give more motion"),
            )
        ]
    if stats is not None:
        share = entropy_share(stats, "temporal", entropy_threshold)
        rows.append(
            _row(
                "4a",
                f"Over {share_needed:.0%} of temporal maps have entropy near 100 %",
                f"share of temporal (step, layer, head) maps with entropy ≥ {entropy_threshold:g} %",
                share,
                None if np.isnan(share) else share > share_needed,
            )
        )
        position = energy_position(stats.isel(layer=np.asarray(stats["kind"] == "spatial")))
        median = float(position.median(skipna=True)) if position.size else float("nan")
        rows.append(
            _row(
                "4b",
                "Spatial maps' energy sits near the E(UV) bound",
                "median (E(AV)−E(UV))/(E(IV)−E(UV)), spatial",
                median,
                None if np.isnan(median) else median < near_uniform,
                f"'near' = below {near_uniform:g}",
            )
        )
        viol = energy_bound_violations(stats, rtol)
        viol = viol[viol["kind"] != "cross"]
        rate = float(viol["violations"].sum() / max(1, viol["n"].sum()))
        rows.append(
            _row(
                "4c",
                "E(UV) ≤ E(AV) ≤ E(IV) holds (self-attention)",
                "violation rate over (step, layer, head, frame) cells",
                rate,
                rate == 0,
                f"{int(viol['below_uniform'].sum())} below E(UV), {int(viol['above_identity'].sum())} above "
                f"E(IV) of {int(viol['n'].sum())}",
            )
        )
        joint = layer_means(stats, "entropy_pct", kinds=["joint"])
        if len(joint):
            inside = bool(joint["mean"].between(15, 45).all())
            rows.append(
                _row(
                    "5a",
                    "Joint (CogVideoX) layers: entropy 15–45 % everywhere",
                    "min / max layer-mean entropy %",
                    float(joint["mean"].min()),
                    inside,
                    f"max {joint['mean'].max():.1f} %",
                )
            )
            ends = float(joint["mean"].iloc[[0, -1]].mean())
            rows.append(
                _row(
                    "5b",
                    "Joint layers: entropy higher at the first and last layers",
                    "mean entropy % of first+last − median",
                    ends - float(joint["mean"].median()),
                    ends > float(joint["mean"].median()),
                )
            )
    return pd.DataFrame(rows, columns=["id", "finding", "measure", "effect", "holds", "detail"])


def findings_perturbations(
    pipe,
    kinds: Sequence[str] = ("spatial",),
    replacements: Sequence[str] = ("identity", "uniform"),
    layers: Sequence[str] | None = None,
    lams: Sequence[float] = (0.25, 0.5, 0.75),
) -> dict[str, Perturbation]:
    """What :func:`check_findings` needs: every layer of ``kinds`` alone and all temporal layers at once, × I, U,
    plus all temporal layers ← ``mix(λ)`` for ``lams`` (the I↔U curve of finding 3d).

    :func:`ieadapt_interp.sweeps.presets.single_layer` (restricted to the module paths ``layers`` when given),
    :func:`ieadapt_interp.sweeps.presets.all_layers` and :func:`ieadapt_interp.sweeps.presets.lambda_sweep` for the temporal
    kind (when the model has one); names ``spatial.16:identity``, ``temporal.all:uniform``,
    ``temporal.all:mix(0.5)``, …
    """
    from ..sweeps.presets import all_layers, lambda_sweep, single_layer

    table = attention_layers(pipe) if not isinstance(pipe, pd.DataFrame) else pipe
    perturbations = single_layer(table, kinds, replacements, names=layers)
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
    table: xr.Dataset, *, n_boot: int = 200, level: float = 0.95, seed: int = 0, **check_options
) -> pd.DataFrame:
    """Percentile bootstrap intervals of the table-based findings' effects, resampling (prompt, seed) pairs.

    Each of ``n_boot`` resamples draws the sweep's (prompt, seed) pairs with replacement and re-runs
    :func:`check_findings` on them (stats-based checks have no interval). Returns a DataFrame indexed by ``id``
    with ``ci_low``, ``ci_high`` and ``n_pairs``; with one pair the interval is the point itself.

    >>> intervals = bootstrap_intervals(table, n_boot=100)          # doctest: +SKIP
    >>> intervals.loc["3a", ["ci_low", "ci_high"]]                  # doctest: +SKIP
    """
    if not 0 < level < 1:
        raise IEAdaptValueError(f"level must be in (0, 1); got {level}.")
    if n_boot < 1:
        raise IEAdaptValueError(f"n_boot must be ≥ 1; got {n_boot}.")
    check_sweep(table)
    pairs = _pairs(table)
    n_pairs = pairs.sizes["prompt"]
    rng = np.random.default_rng(seed)
    draws = [
        check_findings(
            pairs.isel(prompt=rng.integers(0, n_pairs, n_pairs)).assign_coords(prompt=np.arange(n_pairs)),
            None,
            **check_options,
        )
        .set_index("id")["effect"]
        for _ in range(n_boot)
    ]
    samples = pd.concat(draws, axis=1)
    alpha = (1 - level) / 2
    return pd.DataFrame(
        {
            "ci_low": samples.quantile(alpha, axis=1),
            "ci_high": samples.quantile(1 - alpha, axis=1),
            "n_pairs": n_pairs,
        }
    ).dropna(subset=["ci_low"])


def with_intervals(findings: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """``findings`` with ``ci_low``, ``ci_high``, ``n_pairs`` columns (NaN where a check has no interval)."""
    return findings.join(intervals, on="id")


def run_findings_check(
    pipe,
    prompts: Sequence[str],
    *,
    store: str | Path,
    seeds: Sequence[int] = (0,),
    kinds: Sequence[str] = ("spatial",),
    layers: Sequence[str] | None = None,
    batch_size: int = 8,
    engine: str = "local",
    progress: bool = True,
    n_boot: int = 200,
    **generation,
) -> tuple[pd.DataFrame, xr.Dataset, xr.Dataset]:
    """Run the findings sweep and check it → ``(findings, table, stats)``.

    ``table``: :func:`ieadapt_interp.sweep` of :func:`findings_perturbations` (``kinds``, ``layers``) over
    ``prompts`` × ``seeds`` with
    :data:`FINDINGS_METRICS`, written to (and resumed from) ``store``; ``stats``: the attention statistics of
    the first prompt and seed's baseline, which the sweep stores beside the metrics. ``findings`` carries
    :func:`bootstrap_intervals` (``n_boot`` resamples of the (prompt, seed) pairs) as ``ci_low``, ``ci_high``,
    ``n_pairs``. ``generation``:
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
        metrics=FINDINGS_METRICS,
        store=store,
        engine=engine,
        batch_size=batch_size,
        generation=generation,
        progress=progress,
    )
    stats = SweepStore(store).baseline_stats(0, 0)
    checks = with_intervals(check_findings(table, stats), bootstrap_intervals(table, n_boot=n_boot))
    return checks, table, stats


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
    """A Markdown table of :func:`check_findings`' output, with optional heading and context lines."""
    lines = [f"## {title}", ""] if title else []
    for key, value in (context or {}).items():
        lines.append(f"- {key}: {value}")
    if context:
        lines.append("")
    has_ci = "ci_low" in findings.columns
    ci_head = " 95 % interval |" if has_ci else ""
    lines += [
        f"| id | finding | measure | effect |{ci_head} holds | detail |",
        "|---|---|---|---|" + ("---|" if has_ci else "") + "---|---|",
    ]
    for row in findings.itertuples():
        effect = "n/a" if isinstance(row.effect, float) and np.isnan(row.effect) else f"{row.effect:.4g}"
        ci = ""
        if has_ci:
            ci = " – |" if np.isnan(row.ci_low) else f" [{row.ci_low:.4g}, {row.ci_high:.4g}] |"
        lines.append(f"| {row.id} | {row.finding} | {row.measure} | {effect} |{ci} {row.holds} | {row.detail} |")
    if has_ci and findings["n_pairs"].notna().any():
        lines += ["", f"Intervals: percentile bootstrap over the {int(findings['n_pairs'].max())} (prompt, seed) "
                  "pairs of the sweep; the stats-based checks (4x) have none. `holds` judges the point estimate: where the "
                  "interval crosses the check's threshold (0 for a change), the verdict is not significant."]
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
