"""Turning intercepted call records into labelled xarray results.

* :func:`stats_dataset` — ``xr.Dataset`` over ``(step, layer, head, frame)`` (+ ``branch`` / ``sample``
  when more than one was recorded) with ``entropy``, ``entropy_pct``, ``energy``,
  ``energy_identity``, ``energy_uniform`` (and ``*_text`` for joint layers' text-token rows);
* :func:`maps_tree` — ``xr.DataTree``, one node per layer, of pooled maps.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import numpy as np
import torch
import xarray as xr

from .adapters import AttentionLayer
from .handlers import ENERGY_BINS, ENTROPY_BINS, LayerStats
from .layouts import get_layout
from .errors import IEAdaptValueError

STAT_VARS = ("entropy", "energy", "energy_identity", "energy_uniform")
_DOCS = {
    "entropy": "mean over the frame's query rows of H_i = -sum_j a_ij log a_ij (nats)",
    "entropy_pct": "100 * entropy / log(n_keys): percent of the uniform map's entropy",
    "energy": "||A V||_F^2 over the frame's query rows (output actually used)",
    "energy_identity": "||I V||_F^2 = ||V||^2 over the frame's rows (upper bound of the paper's Eq. 2)",
    "energy_uniform": "||U V||_F^2 = rows * ||mean V||^2 (lower bound)",
    "entropy_text": "joint layers: mean entropy of the text-token query rows (nats)",
    "energy_text": "joint layers: ||A V||^2 over the text-token query rows",
    "energy_identity_text": "joint layers: ||V||^2 over the text-token rows",
    "energy_uniform_text": "joint layers: rows * ||mean V||^2 over the text-token rows",
    "map_entropy_hist": "per map (one attention element: a frame's, a position's or the whole sequence's map), "
                        "count of maps whose mean row entropy (percent of log N) falls in each entropy_bin",
    "map_energy_hist": "per map, count of maps whose energy position (E(AV)-E(UV))/(E(IV)-E(UV)) falls in each "
                       "energy_bin (first bin: below the lower bound, last: above the upper bound)",
}


def _last_dim(var: str) -> str | None:
    """The dim after ``head`` of a stats variable: ``frame``, a histogram's bin dim, or none (``*_text``)."""
    if var.endswith("_text"):
        return None
    return {"map_entropy_hist": "entropy_bin", "map_energy_hist": "energy_bin"}.get(var, "frame")


def to_host(records: list[LayerStats]) -> list[LayerStats]:
    """``records`` with every recorded tensor on the CPU (float64), moved in **one** device→host copy instead of one
    per tensor and row (each a synchronising copy: thousands per traced run); new records, same values.

    >>> rec = LayerStats(0, "a", [("cond", 0)], 4, {"entropy": torch.ones(1, 2, 3)})
    >>> to_host([rec])[0].stats["entropy"].dtype
    torch.float64
    """
    tensors = [t for rec in records for t in rec.stats.values()]
    if not tensors:
        return records
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]).cpu()
    parts = iter(flat.split([t.numel() for t in tensors]))
    return [replace(rec, stats={name: next(parts).view(t.shape) for name, t in rec.stats.items()})
            for rec in records]


def stats_dataset(
    records: Iterable[LayerStats], layers: list[AttentionLayer], timesteps: list[float], attrs: dict
) -> xr.Dataset:
    """Assemble call records into a Dataset ``[step, layer, (branch, sample,) head, frame]`` (the recorded tensors
    come to the host in one copy, :func:`to_host`)."""
    records = to_host(list(records))
    if not records:
        raise IEAdaptValueError("No attention calls were recorded: check the layer selection and the branch recorded.")
    names = [r.name for r in layers if any(rec.layer == r.name for rec in records)]
    by_name = {r.name: r for r in layers}
    steps = sorted({rec.step for rec in records})
    row_labels = sorted({row for rec in records for row in rec.rows})
    branches = sorted({b for b, _ in row_labels})
    samples = sorted({s for _, s in row_labels})
    heads = max(rec.stats["entropy"].shape[1] for rec in records)
    frames = max(rec.stats["entropy"].shape[2] for rec in records)
    var_names = sorted({v for rec in records for v in rec.stats}, key=lambda v: (_last_dim(v) != "frame", v))
    lead = (len(steps), len(names), len(branches), len(samples), heads)
    sizes = {"frame": frames, "entropy_bin": len(ENTROPY_BINS) - 1, "energy_bin": len(ENERGY_BINS) - 1, None: None}
    data = {v: np.full(lead + ((sizes[_last_dim(v)],) if _last_dim(v) else ()), np.nan) for v in var_names}
    n_keys = np.zeros(len(names), dtype=np.int64)
    s_idx, l_idx = {s: i for i, s in enumerate(steps)}, {n: i for i, n in enumerate(names)}
    for rec in records:
        li = l_idx[rec.layer]
        n_keys[li] = rec.n_keys
        for r, (branch, sample) in enumerate(rec.rows):
            where = (s_idx[rec.step], li, branches.index(branch), samples.index(sample))
            for v, tensor in rec.stats.items():
                value = tensor[r].numpy()
                data[v][where][tuple(slice(0, n) for n in value.shape)] = value
    dims = ("step", "layer", "branch", "sample", "head")
    ds = xr.Dataset(
        {v: (dims + ((_last_dim(v),) if _last_dim(v) else ()), arr) for v, arr in data.items()},
        coords={
            "step": np.asarray(steps),
            "timestep": ("step", np.asarray([timesteps[s] for s in steps], dtype=float)),
            "layer": names,
            "kind": ("layer", [by_name[n].kind for n in names]),
            "block": ("layer", [by_name[n].block for n in names]),
            "index": ("layer", np.asarray([by_name[n].index for n in names])),
            "n_keys": ("layer", n_keys),
            "branch": branches,
            "sample": np.asarray(samples),
            "head": np.arange(heads),
            "frame": np.arange(frames),
        },
        attrs=attrs,
    )
    if any(r.expert for r in layers):  # several denoisers take turns (Wan 2.2): which one ran at each step
        ran = {rec.step: by_name[rec.layer].expert for rec in records}
        ds = ds.assign_coords(expert=("step", [ran[s] for s in steps]))
    for var, dim, edges in (("map_entropy_hist", "entropy_bin", ENTROPY_BINS),
                            ("map_energy_hist", "energy_bin", ENERGY_BINS)):
        if var in ds:
            ds = ds.assign_coords({dim: np.asarray(edges[:-1]), f"{dim}_upper": (dim, np.asarray(edges[1:]))})
    # a single key (1×1 latent at the bottleneck of a tiny video) has no entropy to normalise: NaN
    max_h = xr.DataArray(np.where(n_keys > 1, np.log(np.maximum(n_keys, 1)), np.nan), dims="layer")
    ds["entropy_pct"] = 100.0 * ds["entropy"] / max_h
    if "entropy_text" in ds:
        ds["entropy_text_pct"] = 100.0 * ds["entropy_text"] / max_h
    for v in ds.data_vars:
        ds[v].attrs["description"] = _DOCS.get(v, "")
    if len(branches) == 1:
        ds = ds.squeeze("branch")
    if len(samples) == 1:
        ds = ds.squeeze("sample")
    return ds


def maps_tree(map_records: dict, layers: list[AttentionLayer], attrs: dict) -> xr.DataTree:
    """One DataTree node per layer; ``attention`` dims depend on the layer's layout (see :mod:`.maps`)."""
    by_name = {r.name: r for r in layers}
    children = {}
    for name, entries in map_records.items():
        layout = by_name[name].layout
        steps = [step for step, _, _ in entries]
        rows = entries[0][1]
        arrays = np.stack([t.numpy() for _, _, t in entries])  # [step, row, ...]
        dims = ("step", "row", *get_layout(layout).map_dims)
        da = xr.DataArray(arrays, dims=dims, coords={"step": steps, "row": [f"{b}:{s}" for b, s in rows]})
        if len(rows) == 1:
            da = da.isel(row=0, drop=True)
        ds = xr.Dataset({"attention": da}, attrs={"layer": name, "kind": by_name[name].kind, "layout": layout})
        children[name] = xr.DataTree(ds)
    return xr.DataTree(xr.Dataset(attrs=attrs), children=children)
