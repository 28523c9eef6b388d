"""Materialised attention maps — only on request, pooled, under a memory budget.

The default path never builds a map (:mod:`ieadapt_interp.core.entropy`). A :class:`MapRequest` names
layers, steps and heads; their softmax maps are built one block of query rows at a time, average-
pooled along keys as they stream and then along queries, so only ``[query, key_bin]`` per element
ever exists. Results come back as an ``xr.DataTree`` with one node per layer:

* spatial / cross layers: ``attention [step, head, frame, query_bin, key_bin]``;
* temporal layers: ``attention [step, head, query_frame, key_frame]`` (mean over positions);
* joint layers: ``attention [step, head, query_bin, key_bin]`` over ``[text, video]`` tokens.

>>> req = MapRequest(layers="temporal", size=(8, 8), budget="64MB")
>>> req.budget_bytes
67108864
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .entropy import _mask_rows, _scores
from .layers import LayerSpec, Layers, as_layers
from .errors import IEAdaptValueError

_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}


def parse_bytes(budget: int | str) -> int:
    """``"512MB"`` → 536870912; ints pass through."""
    if isinstance(budget, int):
        return budget
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMG]?B)\s*", str(budget).upper())
    if not match:
        raise IEAdaptValueError(f"Memory budget {budget!r} not understood; write e.g. '512MB', '2GB' or an int of bytes.")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class MapRequest:
    """Which maps to materialise, pooled to ``size = (query_bins, key_bins)``, under ``budget``."""

    layers: LayerSpec
    steps: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    size: tuple[int, int] = (16, 16)
    budget: int | str = "512MB"
    resolved: Layers = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolved", as_layers(self.layers))
        if len(self.size) != 2 or min(self.size) < 1:
            raise IEAdaptValueError(f"size must be (query_bins, key_bins) ≥ 1; got {self.size}.")
        parse_bytes(self.budget)

    @property
    def budget_bytes(self) -> int:
        return parse_bytes(self.budget)

    def wants(self, step: int) -> bool:
        return self.steps is None or step in self.steps


def pooled_map(
    q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None, size: tuple[int, int],
    chunk_rows: int = 1024,
) -> torch.Tensor:
    """Softmax map pooled to ``size``: ``[n, head, query, dim]`` → ``[n, head, query_bins, key_bins]``.

    Key pooling happens per block of query rows; the full ``query × key`` map never exists.
    """
    n, heads, n_q, _ = q.shape
    key_bins = min(size[1], k.shape[-2])
    rows = torch.empty(n, heads, n_q, key_bins, dtype=torch.float32, device=q.device)
    for start in range(0, n_q, chunk_rows):
        stop = min(n_q, start + chunk_rows)
        a = torch.softmax(_scores(q[..., start:stop, :], k, scale, _mask_rows(attn_mask, start, stop)), dim=-1)
        rows[..., start:stop, :] = F.adaptive_avg_pool1d(a.flatten(0, 2), key_bins).view(n, heads, stop - start, -1)
    query_bins = min(size[0], n_q)
    pooled = F.adaptive_avg_pool1d(rows.flatten(0, 1).transpose(1, 2), query_bins)
    return pooled.transpose(1, 2).reshape(n, heads, query_bins, key_bins)


def map_bytes(
    n_elements: int, n_kept: int, heads: int, n_q: int, n_k: int, size: tuple[int, int], steps: int
) -> tuple[int, int]:
    """Bytes one layer's request needs: ``(kept result over all steps, transient working buffer)``.

    ``n_elements`` attention elements are computed per call, ``n_kept`` pooled maps kept per step.
    """
    q_bins, k_bins = min(size[0], n_q), min(size[1], n_k)
    result = n_kept * heads * q_bins * k_bins * 4 * steps
    buffer = n_elements * heads * n_q * max(k_bins, n_k if n_q * n_k <= 4096 else k_bins) * 4
    return result, buffer
