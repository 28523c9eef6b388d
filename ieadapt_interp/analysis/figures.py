"""The paper's figures as library functions; each returns a ``matplotlib.figure.Figure``.

====================  ======================================================  ======================
function              shows                                                   paper
====================  ======================================================  ======================
:func:`layer_effect`  mean metric change per layer for A ← I and A ← U        Fig. 2
:func:`layer_boxplots`  per-layer distribution over prompts × seeds           Figs. 18–19
:func:`perturbation_effect`  mean change per perturbation (any, incl. groups)   Supp. 7.2
:func:`lambda_effect`  metric change along λ for mix / scale interpolations   Supp. 7.2
:func:`entropy_by_layer`  entropy % per layer, coloured by kind; per kind     Fig. 6
:func:`energy_bounds`  E(AV) with its E(UV) / E(IV) bounds + violation counts  Fig. 4
:func:`video_strip`   frames of original vs perturbed videos                  Fig. 1
:func:`entropy_heatmap`  entropy, layer × denoising step                      —
:func:`attention_map`  one pooled attention map                               —
====================  ======================================================  ======================

Inputs: a sweep-shaped Dataset ``value[prompt, seed, perturbation, metric]`` (see
:mod:`ieadapt_interp.analysis.findings`), a traced run's ``stats`` ``(step, layer, head, frame)``, its ``maps``
DataTree, or videos ``[frame, H, W, 3]``. Every figure carries the plotted numbers as ``fig.data`` (a
DataFrame or array) so they can be checked or exported. Figures are built without pyplot (no global
state); Jupyter displays a returned figure as an image (:mod:`.display`), :func:`save_figure` writes it.

>>> import numpy as np
>>> fig = video_strip(np.zeros((2, 4, 16, 16, 3), np.uint8), labels=["A", "A ← I"])
>>> len(fig.axes)
8
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from ..core.accessor import DEFAULT_ROWS, ENERGY_RTOL, SELF_ATTENTION, Rows, register_plotter, select_rows
from ..sweeps.tables import check_sweep, metric_change, perturbation_summary
from ..core.errors import IEAdaptKeyError, IEAdaptValueError
from .display import register_figure_display

register_figure_display()  # figures display as PNG images in Jupyter (see analysis/display.py)

#: Colours per attention kind and per replacement (consistent across figures).
KIND_COLORS = {"spatial": "#1f77b4", "temporal": "#d62728", "cross": "#7f7f7f", "joint": "#9467bd"}
REPLACEMENT_COLORS = {"identity": "#ff7f0e", "uniform": "#2ca02c", "mix": "#8c564b", "scale": "#e377c2"}
REPLACEMENT_LABELS = {"identity": "A ← I", "uniform": "A ← U"}


def short_label(kind: str, index: int) -> str:
    """``("spatial", 16)`` → ``"S16"`` (kind initial + index within the kind)."""
    return f"{kind[:1].upper()}{int(index)}"


def save_figure(fig: Figure, out_dir: str | Path, name: str, dpi: int = 120) -> Figure:
    """Write ``fig`` to ``out_dir/name`` (``.png`` added when no suffix), creating the folder; returns ``fig``."""
    path = Path(out_dir) / name
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


def _kinds_present(kinds_available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    order = [k for k in ("spatial", "temporal", "cross", "joint") if k in set(kinds_available)]
    if wanted is not None:
        order = [k for k in order if k in wanted]
    if not order:
        raise IEAdaptValueError(
            f"No layers of kind {list(wanted) if wanted else 'any'} in the data "
            f"(it has {sorted(set(kinds_available))})."
        )
    return order


def _change_frame(ds: xr.Dataset, metric: str) -> tuple[pd.DataFrame, bool]:
    """Long DataFrame of single-layer rows: prompt, seed, kind, index, layer, replacement, change."""
    change = metric_change(ds, metric)
    relative = bool(change.attrs.get("relative", False))
    change = change.isel(perturbation=np.asarray(change["index"] >= 0))
    df = change.to_dataframe(name="change").reset_index()
    keep = [
        c
        for c in (
            "prompt",
            "seed",
            "perturbation",
            "layer",
            "kind",
            "block",
            "index",
            "replacement",
            "change",
        )
        if c in df.columns
    ]
    return df[keep], relative


def layer_effect(
    ds: xr.Dataset,
    metric: str,
    *,
    kinds: Sequence[str] | None = ("spatial", "temporal"),
    replacements: Sequence[str] = ("identity", "uniform"),
    figsize_per_kind: tuple[float, float] = (9.0, 2.8),
) -> Figure:
    """Per-layer metric change for A ← I and A ← U (paper Fig. 2).

    One panel per kind; x: the layer's index within its kind; one bar per layer and replacement, height
    the mean of ``perturbed − baseline`` over prompts and seeds, whiskers ±1 std. Without a baseline
    in ``ds`` the raw value is shown. ``fig.data``: DataFrame ``kind, index, replacement, mean, std``.
    """
    check_sweep(ds)
    df, relative = _change_frame(ds, metric)
    df = df[df["replacement"].isin(list(replacements))]
    kinds = _kinds_present(df["kind"].unique(), kinds)
    summary = df.groupby(["kind", "index", "replacement"])["change"].agg(["mean", "std"]).reset_index()
    fig = Figure(figsize=(figsize_per_kind[0], figsize_per_kind[1] * len(kinds)), layout="constrained")
    axes = fig.subplots(len(kinds), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(replacements))
    for ax, kind in zip(axes, kinds):
        part = summary[summary["kind"] == kind]
        indices = sorted(part["index"].unique())
        x = np.arange(len(indices))
        for r, rep in enumerate(replacements):
            rows = part[part["replacement"] == rep].set_index("index").reindex(indices)
            ax.bar(
                x + (r - (len(replacements) - 1) / 2) * width,
                rows["mean"].values,
                width,
                yerr=rows["std"].fillna(0).values,
                color=REPLACEMENT_COLORS.get(rep),
                capsize=2,
                label=REPLACEMENT_LABELS.get(rep, rep),
            )
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(x, [str(i) for i in indices], fontsize=7)
        ax.set_xlabel(f"{kind} layer index")
        ax.set_ylabel(f"Δ {metric}" if relative else metric)
        ax.set_title(f"{kind}: {metric} {'change vs baseline' if relative else ''}".strip(), fontsize=10)
        ax.legend(fontsize=8, loc="best")
    fig.data = summary
    return fig


def layer_boxplots(
    ds: xr.Dataset,
    metric: str,
    *,
    kind: str = "spatial",
    replacements: Sequence[str] = ("identity", "uniform"),
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Per-layer box plots of a metric's change over prompts × seeds (paper Figs. 18–19).

    One panel per replacement; one box per ``kind`` layer. ``fig.data``: the long DataFrame plotted.
    """
    check_sweep(ds)
    df, relative = _change_frame(ds, metric)
    df = df[(df["kind"] == kind) & df["replacement"].isin(list(replacements))]
    if df.empty:
        raise IEAdaptValueError(f"No single-layer {list(replacements)} perturbations of kind {kind!r} in the sweep.")
    indices = sorted(df["index"].unique())
    present = [r for r in replacements if (df["replacement"] == r).any()]
    fig = Figure(
        figsize=figsize or (max(6.0, 0.45 * len(indices) + 2), 2.6 * len(present)), layout="constrained"
    )
    axes = fig.subplots(len(present), 1, squeeze=False)[:, 0]
    for ax, rep in zip(axes, present):
        part = df[df["replacement"] == rep]
        groups = [part.loc[part["index"] == i, "change"].dropna().values for i in indices]
        box = ax.boxplot(groups, tick_labels=[str(i) for i in indices], patch_artist=True, widths=0.6)
        for patch in box["boxes"]:
            patch.set_facecolor(REPLACEMENT_COLORS.get(rep, "#cccccc"))
            patch.set_alpha(0.6)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlabel(f"{kind} layer index")
        ax.set_ylabel(f"Δ {metric}" if relative else metric)
        ax.set_title(f"{REPLACEMENT_LABELS.get(rep, rep)} — {kind} layers, over prompts × seeds", fontsize=10)
    fig.data = df
    return fig


def perturbation_effect(ds: xr.Dataset, metric: str, *, figsize: tuple[float, float] | None = None) -> Figure:
    """One bar per perturbation of a sweep (single layers, groups, λ mixes): mean change of ``metric``.

    Bars coloured by replacement, whiskers ±1 std over prompts × seeds. ``fig.data``: DataFrame
    ``perturbation, replacement, lam, mean, std``.
    """
    check_sweep(ds)
    summary, relative = perturbation_summary(ds, metric)
    fig = Figure(figsize=figsize or (max(6.0, 0.2 * len(summary) + 2), 4.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(summary))
    ax.bar(
        x,
        summary["mean"],
        yerr=summary["std"].fillna(0),
        color=[REPLACEMENT_COLORS.get(r, "#7f7f7f") for r in summary["replacement"]],
        capsize=2,
    )
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, summary["perturbation"], rotation=90, fontsize=6)
    ax.set_ylabel(f"Δ {metric}" if relative else metric)
    present = [r for r in REPLACEMENT_COLORS if r in set(summary["replacement"])]
    ax.legend(
        handles=[Patch(color=REPLACEMENT_COLORS[r], label=REPLACEMENT_LABELS.get(r, r)) for r in present],
        fontsize=8,
    )
    ax.set_title(f"{metric}: change per perturbation" if relative else metric, fontsize=10)
    fig.data = summary
    return fig


def lambda_effect(
    ds: xr.Dataset,
    metric: str,
    *,
    replacements: Sequence[str] = ("mix", "scale"),
    figsize: tuple[float, float] = (6.0, 3.6),
) -> Figure:
    """Metric change against λ for the sweep's interpolations (Supp. 7.2): one line per layer set.

    ``mix(λ)`` puts ``λI + (1−λ)U`` in the map (λ = 0 is U, 1 is I); ``scale(λ)`` puts ``λA + (1−λ)U``. A line
    joins the perturbations of one replacement on one set of layers (the perturbation name before its last
    ``:``, as :func:`ieadapt_interp.sweeps.presets.lambda_sweep` names them); markers are means over prompts × seeds,
    bands ±1 std. ``fig.data``: DataFrame ``group, replacement, lam, mean, std``.
    """
    check_sweep(ds)
    summary, relative = perturbation_summary(ds, metric)
    summary = summary[summary["replacement"].isin(list(replacements)) & np.isfinite(summary["lam"])]
    if summary.empty:
        raise IEAdaptValueError(
            f"the sweep has no {list(replacements)} perturbations with a λ; add e.g. "
            "ieadapt_interp.sweeps.presets.lambda_sweep('temporal') to its perturbations."
        )
    summary = summary.assign(group=[p.rsplit(":", 1)[0] for p in summary["perturbation"]])
    summary = summary.sort_values(["group", "replacement", "lam"])[["group", "replacement", "lam", "mean", "std"]]
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    for (group, rep), line in summary.groupby(["group", "replacement"], sort=False):
        ax.plot(line["lam"], line["mean"], marker="o", label=f"{group} ({rep})")
        std = line["std"].fillna(0)
        ax.fill_between(line["lam"], line["mean"] - std, line["mean"] + std, alpha=0.15)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("λ   (mix: 0 = U, 1 = I;  scale: 0 = U, 1 = A)")
    ax.set_ylabel(f"Δ {metric}" if relative else metric)
    ax.set_title(f"{metric} along the interpolation", fontsize=10)
    ax.legend(fontsize=7)
    fig.data = summary.reset_index(drop=True)
    return fig


def entropy_by_layer(
    stats: xr.Dataset,
    *,
    var: str = "entropy_pct",
    kinds: Sequence[str] | None = ("spatial", "temporal"),
    rows: Rows = DEFAULT_ROWS,
    figsize: tuple[float, float] = (11.0, 3.2),
) -> Figure:
    """Entropy (% of the uniform map's) per layer, coloured by kind, and its distribution per kind (Fig. 6).

    Left: one bar per layer in forward order (mean over steps, heads and frames; whiskers ±1 std; a
    layer with a single key, e.g. a 1×1 bottleneck, has no defined percentage and shows no bar);
    right: box per kind over its layers. ``rows``: the CFG branches / samples read (default all, pooled; see
    :mod:`ieadapt_interp.core.accessor`). ``fig.data``: ``stats.ieadapt.layer_means(var, rows=rows)``.
    """
    table = select_rows(stats).ieadapt.layer_means(var, rows=rows)
    kinds = _kinds_present(table["kind"].unique(), kinds)
    table = table[table["kind"].isin(kinds)]
    fig = Figure(figsize=figsize, layout="constrained")
    ax, ax_kind = fig.subplots(1, 2, width_ratios=[4, 1])
    x = np.arange(len(table))
    ax.bar(
        x,
        table["mean"].values,
        yerr=table["std"].fillna(0).values,
        capsize=1.5,
        color=[KIND_COLORS.get(k, "gray") for k in table["kind"]],
    )
    ax.set_xticks(
        x, [short_label(k, i) for k, i in zip(table["kind"], table["index"])], rotation=90, fontsize=6
    )
    ax.set_xlabel("layer (forward order; S = spatial, T = temporal, C = cross, J = joint)")
    ax.set_ylabel("entropy, % of max" if var == "entropy_pct" else var)
    if var == "entropy_pct":
        ax.set_ylim(0, 105)
    ax.set_title("mean entropy per attention layer", fontsize=10)
    ax.legend(
        handles=[Patch(color=KIND_COLORS.get(k, "gray"), label=k) for k in kinds],
        fontsize=8,
        loc="lower right",
    )
    box = ax_kind.boxplot(
        [table.loc[table["kind"] == k, "mean"].dropna().values for k in kinds],
        tick_labels=kinds,
        patch_artist=True,
    )
    for patch, kind in zip(box["boxes"], kinds):
        patch.set_facecolor(KIND_COLORS.get(kind, "gray"))
    ax_kind.set_title("per kind", fontsize=10)
    if var == "entropy_pct":
        ax_kind.set_ylim(0, 105)
    fig.data = table
    return fig


def energy_bounds(
    stats: xr.Dataset,
    *,
    kinds: Sequence[str] | None = ("spatial", "temporal"),
    rtol: float = ENERGY_RTOL,
    rows: Rows = DEFAULT_ROWS,
    figsize_per_kind: tuple[float, float] = (9.0, 2.8),
) -> Figure:
    """Energy ``E(AV)`` per layer between its bounds ``E(UV)`` and ``E(IV)``, with violations counted (Fig. 4).

    Per kind: mean (over steps, heads, frames) of the three energies on a log axis; layers where any
    ``(step, head, frame)`` cell violates ``E(UV) ≤ E(AV) ≤ E(IV)`` are marked with their count, and the
    panel title gives the total. ``fig.data``: ``stats.ieadapt.energy_bound_violations(rows=rows, rtol=rtol)``
    joined with the mean energies (columns ``E_AV, E_IV, E_UV``).
    """
    st = select_rows(stats, rows)
    table = st.ieadapt.energy_bound_violations(rtol=rtol)
    other = [d for d in st["energy"].dims if d != "layer"]
    for col, var in (("E_AV", "energy"), ("E_IV", "energy_identity"), ("E_UV", "energy_uniform")):
        table[col] = st[var].mean(other, skipna=True).values
    kinds = _kinds_present(table["kind"].unique(), kinds)
    table = table[table["kind"].isin(kinds)]
    fig = Figure(figsize=(figsize_per_kind[0], figsize_per_kind[1] * len(kinds)), layout="constrained")
    axes = fig.subplots(len(kinds), 1, squeeze=False)[:, 0]
    for ax, kind in zip(axes, kinds):
        part = table[table["kind"] == kind]
        x = np.arange(len(part))
        ax.fill_between(x, part["E_UV"], part["E_IV"], color="0.85", label="between E(UV) and E(IV)")
        ax.plot(x, part["E_IV"], "^-", color=REPLACEMENT_COLORS["identity"], ms=4, label="E(IV) = ‖V‖²")
        ax.plot(x, part["E_UV"], "v-", color=REPLACEMENT_COLORS["uniform"], ms=4, label="E(UV) = N‖mean V‖²")
        ax.plot(x, part["E_AV"], "o-", color=KIND_COLORS.get(kind, "black"), ms=4, label="E(AV)")
        for xi, (count, value) in enumerate(zip(part["violations"], part["E_AV"])):
            if count:
                ax.annotate(
                    str(int(count)),
                    (xi, value),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                    color="crimson",
                )
        if (part[["E_AV", "E_IV", "E_UV"]].to_numpy() > 0).all():
            ax.set_yscale("log")
        ax.set_xticks(x, [str(i) for i in part["index"]], fontsize=7)
        ax.set_xlabel(f"{kind} layer index")
        ax.set_ylabel("energy ‖·‖²_F")
        total, cells = int(part["violations"].sum()), int(part["n"].sum())
        ax.set_title(
            f"{kind}: {total} of {cells} cells violate E(UV) ≤ E(AV) ≤ E(IV) "
            f"({int(part['below_uniform'].sum())} below, {int(part['above_identity'].sum())} above)",
            fontsize=10,
        )
        ax.legend(fontsize=7, loc="best")
    fig.data = table
    return fig


def video_strip(
    videos: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    *,
    frames: Sequence[int] | None = None,
    max_frames: int = 8,
    cell: float = 1.2,
) -> Figure:
    """Rows of frames: one row per video (original, perturbed, …), one column per frame (Fig. 1).

    ``videos``: ``[sample, frame, H, W, 3]`` or a list of ``[frame, H, W, 3]`` (same frame count);
    ``frames``: which frame indices (default: up to ``max_frames`` evenly spaced). ``fig.data``: the
    frame indices shown.
    """
    from .video import as_uint8_video

    items = [as_uint8_video(v, f"videos[{i}]") for i, v in enumerate(videos)]
    if not items:
        raise IEAdaptValueError("video_strip needs at least one video.")
    n_frames = items[0].shape[0]
    if any(v.shape[0] != n_frames for v in items):
        raise IEAdaptValueError(f"all videos must have the same frame count; got {[v.shape[0] for v in items]}.")
    labels = list(labels) if labels is not None else [f"video {i}" for i in range(len(items))]
    if len(labels) != len(items):
        raise IEAdaptValueError(f"{len(labels)} labels for {len(items)} videos.")
    if frames is None:
        frames = np.unique(
            np.linspace(0, n_frames - 1, min(max_frames, n_frames)).round().astype(int)
        ).tolist()
    bad = [f for f in frames if not 0 <= f < n_frames]
    if bad:
        raise IndexError(f"frame indices {bad} outside 0..{n_frames - 1}.")
    fig = Figure(figsize=(cell * len(frames) + 0.8, cell * len(items)), layout="constrained")
    axes = fig.subplots(len(items), len(frames), squeeze=False)
    for r, (video, label) in enumerate(zip(items, labels)):
        for c, f in enumerate(frames):
            ax = axes[r, c]
            ax.imshow(video[f], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {f}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.data = np.asarray(frames)
    return fig


def _select_stat(
    stats: xr.Dataset, var: str, kinds: Sequence[str] | None, head: int | None, frame: int | None, rows: Rows
) -> xr.DataArray:
    st = select_rows(stats, rows)
    if var not in st:
        raise IEAdaptKeyError(f"stats lacks {var!r}; it has {sorted(st.data_vars)}.")
    da = st[var]
    if kinds is not None:
        da = da.isel(layer=np.asarray(st["kind"].isin(list(kinds))))
        if da.sizes["layer"] == 0:
            raise IEAdaptValueError(f"No layers of kind {list(kinds)} in the stats.")
    if head is not None:
        da = da.sel(head=head)
    if frame is not None and "frame" in da.dims:
        da = da.sel(frame=frame)
    rest = [d for d in da.dims if d not in ("layer", "step")]
    return da.mean(rest, skipna=True).transpose("layer", "step")


def entropy_heatmap(
    stats: xr.Dataset,
    *,
    var: str = "entropy_pct",
    kinds: Sequence[str] | None = SELF_ATTENTION,
    head: int | None = None,
    frame: int | None = None,
    mark: tuple[int, str] | None = None,
    rows: Rows = DEFAULT_ROWS,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Heatmap of ``var``, layer (rows, forward order) × denoising step (columns).

    Layers of ``kinds`` (default: the self-attention kinds present; ``None``: every layer). Averaged over
    heads / frames unless ``head`` / ``frame`` picks one, and over the ``rows`` (CFG branches / samples;
    default all, pooled; see :mod:`ieadapt_interp.core.accessor`). ``mark=(step, layer_name)`` outlines one
    cell (the explorer's selection). ``fig.data``: the ``[layer, step]`` DataArray. Also
    ``stats.ieadapt.plot_entropy(...)``.
    """
    if kinds is not None and "kind" in stats.coords:
        present = [k for k in kinds if k in set(stats["kind"].values)]
        kinds = present or kinds  # none present: _select_stat names the kinds asked for
    da = _select_stat(stats, var, kinds, head, frame, rows)
    n_layers, n_steps = da.shape
    fig = Figure(
        figsize=figsize or (min(12.0, 2.5 + 0.35 * n_steps), min(14.0, 1.5 + 0.14 * n_layers)),
        layout="constrained",
    )
    ax = fig.subplots()
    vmax = 100 if var == "entropy_pct" else None
    image = ax.imshow(
        da.values, aspect="auto", cmap="viridis", vmin=0 if vmax else None, vmax=vmax, interpolation="nearest"
    )
    labels = [short_label(k, i) for k, i in zip(da["kind"].values, da["index"].values)]
    ax.set_yticks(np.arange(n_layers), labels, fontsize=max(4, min(8, 400 // max(1, n_layers))))
    step_ticks = np.arange(n_steps) if n_steps <= 30 else np.linspace(0, n_steps - 1, 10).round().astype(int)
    ax.set_xticks(step_ticks, [str(int(s)) for s in da["step"].values[step_ticks]], fontsize=7)
    ax.set_xlabel("denoising step")
    ax.set_ylabel("layer")
    where = ", ".join(
        x
        for x in (
            f"head {head}" if head is not None else "mean over heads",
            f"frame {frame}" if frame is not None else "mean over frames",
        )
    )
    ax.set_title(f"{var} ({where})", fontsize=10)
    fig.colorbar(image, ax=ax, label="% of max" if var == "entropy_pct" else var)
    if mark is not None:
        step, layer = mark
        names = list(da["layer"].values)
        if layer in names:
            ax.add_patch(
                Rectangle(
                    (list(da["step"].values).index(step) - 0.5, names.index(layer) - 0.5),
                    1,
                    1,
                    fill=False,
                    edgecolor="red",
                    lw=2,
                )
            )
    fig.data = da
    return fig


def attention_map(
    maps: xr.DataTree,
    layer: str,
    *,
    step: int = 0,
    head: int | None = None,
    frame: int | None = None,
    sample: int = 0,
    figsize: tuple[float, float] = (3.6, 3.2),
) -> Figure:
    """One pooled attention map from a traced run's ``maps`` DataTree (``MapRequest``).

    Spatial / cross layers: ``[query_bin, key_bin]`` of one frame (mean over frames when ``frame`` is
    None); temporal: ``[query_frame, key_frame]``; joint: ``[query_bin, key_bin]``. ``head=None``
    averages heads; ``sample`` picks the variant when the run had several (conditional branch first).
    ``fig.data``: the 2-D array shown.
    """
    if maps is None:
        raise IEAdaptValueError(
            "No maps: trace with maps=ieadapt_interp.MapRequest(layers=...) to materialise them."
        )
    if layer not in maps.children:
        raise IEAdaptKeyError(
            f"Layer {layer!r} has no materialised map; layers with maps: {list(maps.children)[:6]}"
            f"{' …' if len(maps.children) > 6 else ''}."
        )
    node = maps[layer]
    da = node["attention"]
    if "row" in da.dims:  # several samples / branches recorded: labels "branch:sample"
        rows = [str(r) for r in da["row"].values]
        pick = (
            f"cond:{sample}"
            if f"cond:{sample}" in rows
            else next((r for r in rows if r.endswith(f":{sample}")), None)
        )
        if pick is None:
            raise IEAdaptKeyError(f"sample {sample} not in the maps' rows {rows}.")
        da = da.sel(row=pick, drop=True)
    elif "sample" in da.dims:
        da = da.isel(sample=sample)
    if step not in da["step"].values:
        raise IEAdaptKeyError(f"step {step} not materialised for {layer}; steps: {list(da['step'].values)}.")
    da = da.sel(step=step)
    da = da.mean("head") if head is None else da.isel(head=head)
    if "frame" in da.dims:
        da = da.mean("frame") if frame is None else da.isel(frame=frame)
    temporal = "query_frame" in da.dims
    qdim, kdim = ("query_frame", "key_frame") if temporal else ("query_bin", "key_bin")
    values = da.transpose(qdim, kdim).values
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="magma", interpolation="nearest", vmin=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(kdim.replace("_", " "))
    ax.set_ylabel(qdim.replace("_", " "))
    kind = node.attrs.get("kind", "")
    head_text = "mean heads" if head is None else f"head {head}"
    frame_text = (
        ""
        if temporal or "frame" not in node["attention"].dims
        else (", mean frames" if frame is None else f", frame {frame}")
    )
    short = (
        layer.replace("transformer_blocks.", "tb.")
        .replace("motion_modules.", "mm.")
        .replace("attentions.", "at.")
    )
    ax.set_title(f"{kind} {short}\nstep {step}, {head_text}{frame_text}", fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.data = values
    return fig


register_plotter("entropy_heatmap", entropy_heatmap)  # ds.ieadapt.plot_entropy draws this figure
