"""Handlers at the attention call: one small class per behaviour, one contract.

Every ``F.scaled_dot_product_attention`` call inside a chosen attention layer becomes a
:class:`CallContext` (layer, step, row labels, layout, ``q, k, v``, and after the call ``out`` and
the per-row ``entropy``). The :class:`~ieadapt_interp.core.interception.Interception` passes it to
each registered :class:`AttentionHandler`, in order:

1. :meth:`AttentionHandler.before` — may replace ``ctx.query / key / value`` (editing: attend from
   another row);
2. the attention itself (with online entropy when any handler :meth:`~AttentionHandler.wants_entropy`);
3. :meth:`AttentionHandler.after` — may replace ``ctx.out`` (perturbations, hook points) or read it
   (recorders).

Handlers here (the core): :class:`HookPointHandler` (nnsight), :class:`StatsRecorder`
(per-(step, layer, row, head, frame) entropy and energy), :class:`MapRecorder` (pooled maps under a
budget). Methods add theirs (:mod:`ieadapt_interp.methods.perturbation`,
:mod:`ieadapt_interp.methods.attend_from`) — a new behaviour is one new handler.

>>> class CountCalls(AttentionHandler):
...     name = "count"
...     def __init__(self, layers):
...         self.layer_names, self.calls = set(layers), 0
...     def after(self, ctx):
...         self.calls += 1
>>> CountCalls(["a"]).layers(None)
{'a'}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from .adapters import AttentionLayer
from .entropy import squared_norm, value_mean
from .layouts import Layout, get_layout
from .maps import MapRequest, map_bytes

RowLabel = tuple[str, int]  # (CFG branch, sample): ("cond", 0), ("uncond", 1), ("all", 2) …


@dataclass
class CallContext:
    """One attention call as the handlers see it.

    ``query [B', head, n_q, dim]``, ``key / value [B', head, n_k, dim]``; ``B' = len(rows) · per``.
    ``out [B', head, n_q, dim]`` and ``entropy [B', head, n_q]`` (or ``None``) exist in :meth:`after`.
    """

    layer: AttentionLayer
    step: int
    rows: list[RowLabel]
    per: int
    layout: Layout
    num_frames: int
    text_len: int
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    attn_mask: torch.Tensor | None
    scale: float
    out: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    _index_cache: dict = field(default_factory=dict, repr=False)

    def rows_where(self, keep: Callable[[str, int], bool]) -> list[int]:
        """Denoiser rows whose ``(branch, sample)`` label satisfies ``keep``."""
        return [i for i, (b, s) in enumerate(self.rows) if keep(b, s)]

    def elements(self, rows: list[int]) -> slice | torch.Tensor:
        """Attention-batch elements of denoiser ``rows`` (each spans ``per`` consecutive elements).

        Consecutive rows (a CFG half, the whole batch) give a ``slice`` — selecting is a view. Other
        row sets give an index tensor, built once per run and device: moving a host index to the GPU
        would synchronise the stream at every attention call.
        """
        per = self.per
        if rows and rows == list(range(rows[0], rows[-1] + 1)):
            return slice(rows[0] * per, (rows[-1] + 1) * per)
        key = (tuple(rows), per, str(self.query.device))
        if key not in self._index_cache:
            idx = torch.tensor(rows, dtype=torch.long).unsqueeze(1) * per + torch.arange(per).unsqueeze(0)
            self._index_cache[key] = idx.flatten().to(self.query.device)
        return self._index_cache[key]

    @property
    def square(self) -> bool:
        """Self-attention (as many queries as keys): ``I`` and ``mix`` are defined."""
        return self.query.shape[-2] == self.key.shape[-2]


def select(x: torch.Tensor, sel: slice | torch.Tensor) -> torch.Tensor:
    """``x`` restricted to the batch elements ``sel`` (:meth:`CallContext.elements`): a view for a slice."""
    return x[sel] if isinstance(sel, slice) else x.index_select(0, sel)


def scatter(x: torch.Tensor, sel: slice | torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` whose batch elements ``sel`` are ``new`` (``x`` itself is not modified)."""
    if isinstance(sel, slice):
        return x.slice_scatter(new, 0, sel.start, sel.stop)
    return x.index_copy(0, sel, new)


class AttentionHandler:
    """Base class of a behaviour at the attention call (cf. diffusers' ``ModelHook``).

    Subclasses set ``name`` (unique within one interception), say which layers they act on
    (:meth:`layers`) and override :meth:`before` and/or :meth:`after`. Handlers hold their own
    results; :meth:`reset` clears them before a run.
    """

    name: str = "handler"
    layer_names: set[str] | None = None

    def layers(self, table) -> set[str]:
        """Names of the layers this handler needs hooked (``table`` = :func:`attention_layers`)."""
        return set(self.layer_names or ())

    def wants_entropy(self, ctx: CallContext) -> bool:
        """Whether this call must also compute the per-row entropy (``ctx.entropy``)."""
        return False

    def before(self, ctx: CallContext) -> None:
        """Before the attention: may replace ``ctx.query``, ``ctx.key``, ``ctx.value``."""

    def after(self, ctx: CallContext) -> None:
        """After the attention: may replace ``ctx.out`` (never in place) or read it."""

    def reset(self) -> None:
        """Forget results of an earlier run."""


class HookPointHandler(AttentionHandler):
    """Routes ``entropy`` and ``out`` through the layer's identity hook points (nnsight reads/sets them)."""

    name = "hook_points"

    def __init__(self, layers: Iterable[str]) -> None:
        self.layer_names = set(layers)

    def wants_entropy(self, ctx):
        return True

    def after(self, ctx):
        module = ctx.layer.module
        ctx.entropy = module.hook_entropy(ctx.entropy)
        ctx.out = module.hook_output(ctx.out)


def _recorded_rows(ctx: CallContext, branches: tuple[str, ...]) -> list[int]:
    return ctx.rows_where(lambda b, s: b in branches or b == "all")


@dataclass
class LayerStats:
    """Per-row statistics of one attention call, reduced to ``[row, head, frame]`` (+ ``*_text [row, head]``)."""

    step: int
    layer: str
    rows: list[RowLabel]
    n_keys: int
    stats: dict[str, torch.Tensor]


#: Bin edges (percent of log N) of the per-map entropy histogram ``map_entropy_hist``: 20 bins of 5 %.
ENTROPY_BINS: tuple[float, ...] = tuple(float(x) for x in range(0, 105, 5))
#: Bin edges of ``map_energy_hist``, the position of a map's ``E(AV)`` between its bounds,
#: ``r = (E(AV) − E(UV)) / (E(IV) − E(UV))``: below ``−tol`` (under the lower bound), tenths of [0, 1], above
#: ``1 + tol`` (over the upper bound). ``tol`` absorbs rounding of the fp32 reduction.
ENERGY_TOL = 1e-3
ENERGY_BINS: tuple[float, ...] = (-float("inf"), -ENERGY_TOL, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
                                  1.0 + ENERGY_TOL, float("inf"))


_EDGES_CACHE: dict = {}


def _bin_edges(edges: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``edges`` as a tensor on ``device``, made once: a fresh host→GPU copy per call would stall the stream."""
    key = (edges, dtype, str(device))
    if key not in _EDGES_CACHE:
        _EDGES_CACHE[key] = torch.tensor(edges, dtype=dtype, device=device)
    return _EDGES_CACHE[key]


def histogram(values: torch.Tensor, edges: Sequence[float]) -> torch.Tensor:
    """Counts of ``values [..., n]`` in the bins ``[edges[i], edges[i+1])`` (the last bin closed) → ``[..., bins]``.

    >>> histogram(torch.tensor([[0.0, 4.9, 5.0, 100.0]]), (0.0, 5.0, 100.0)).tolist()
    [[2.0, 2.0]]
    """
    inner = _bin_edges(tuple(edges[1:-1]), values.dtype, values.device)
    idx = torch.bucketize(values.contiguous(), inner, right=True)
    counts = torch.zeros(*values.shape[:-1], len(edges) - 1, dtype=torch.float32, device=values.device)
    return counts.scatter_add_(-1, idx, torch.ones_like(idx, dtype=torch.float32))


def energy_position(e_av: torch.Tensor, e_iv: torch.Tensor, e_uv: torch.Tensor) -> torch.Tensor:
    """``(E(AV) − E(UV)) / (E(IV) − E(UV))``: 0 on the lower bound, 1 on the upper; 0 where the bounds coincide."""
    span = e_iv - e_uv
    safe = torch.where(span.abs() > 1e-12 * e_iv.abs().clamp_min(1e-30), span, torch.ones_like(span))
    return torch.where(span.abs() > 1e-12 * e_iv.abs().clamp_min(1e-30), (e_av - e_uv) / safe,
                       torch.zeros_like(span))


class StatsRecorder(AttentionHandler):
    """Records entropy, ``‖AV‖²`` and both closed-form bounds of every call into :attr:`calls`.

    Per frame (``[row, head, frame]``): ``entropy``, ``energy``, ``energy_identity``, ``energy_uniform``.
    Per map (the paper's unit, see :meth:`Layout.per_map`), as histograms ``[row, head, bin]`` — no map is
    stored: ``map_entropy_hist`` (each map's mean row entropy in percent of ``log N``, :data:`ENTROPY_BINS`) and,
    for self-attention, ``map_energy_hist`` (each map's energy position between its bounds, :data:`ENERGY_BINS`).

    ``branches``: the CFG branches whose rows are recorded (rows labelled ``"all"`` always are).
    """

    name = "stats"

    def __init__(self, layers: Iterable[str], branches: tuple[str, ...] = ("cond",)) -> None:
        self.layer_names = set(layers)
        self.branches = tuple(branches)
        self.calls: list[LayerStats] = []

    def reset(self):
        self.calls = []

    def wants_entropy(self, ctx):
        return bool(_recorded_rows(ctx, self.branches))

    def after(self, ctx):
        keep = _recorded_rows(ctx, self.branches)
        if not keep:
            return
        sel = ctx.elements(keep)
        n_q, n_k = ctx.query.shape[-2], ctx.key.shape[-2]
        v = select(ctx.value, sel)  # a view for consecutive rows; both energy bounds derive from it
        mask = ctx.attn_mask if ctx.attn_mask is None or ctx.attn_mask.shape[0] == 1 else select(ctx.attn_mask, sel)
        entropy = select(ctx.entropy, sel).float()
        per_row = {
            "entropy": entropy,
            "energy": squared_norm(select(ctx.out, sel)),
            "energy_identity": squared_norm(v) if n_q == n_k else torch.full_like(entropy, float("nan")),
            "energy_uniform": squared_norm(value_mean(v, mask)).expand(-1, -1, n_q),
        }
        flat = {}
        for name, x in per_row.items():
            video, text = ctx.layout.to_frames(x, len(keep), ctx.per, ctx.num_frames, ctx.text_len,
                                               "mean" if name == "entropy" else "sum")
            flat[name] = video
            if text is not None:
                flat[name + "_text"] = text
        flat.update(self._per_map(ctx, per_row, len(keep), n_k))
        self.calls.append(LayerStats(ctx.step, ctx.layer.name, [ctx.rows[i] for i in keep], n_k, flat))

    @staticmethod
    def _per_map(ctx: CallContext, per_row: dict[str, torch.Tensor], n_rows: int, n_k: int) -> dict:
        """Histograms over the maps of one call: ``map_entropy_hist`` and (self-attention) ``map_energy_hist``."""
        out = {}
        if n_k > 1:
            pct = ctx.layout.per_map(per_row["entropy"], n_rows, ctx.per) * (100.0 / math.log(n_k))
            out["map_entropy_hist"] = histogram(pct, ENTROPY_BINS)
        if ctx.square:
            e_av, e_iv, e_uv = (ctx.layout.per_map(per_row[v], n_rows, ctx.per, "sum")
                                for v in ("energy", "energy_identity", "energy_uniform"))
            out["map_energy_hist"] = histogram(energy_position(e_av, e_iv, e_uv), ENERGY_BINS)
        return out


class MapRecorder(AttentionHandler):
    """Materialises pooled maps of the requested layers and steps, under the request's memory budget.

    :attr:`maps` ``{layer: [(step, rows, tensor [row, *layout.map_dims])]}``. The budget counts every
    kept result plus the largest transient buffer and is checked at a layer's first call;
    ``steps_total()`` gives the run's number of steps then (the scheduler knows it once the run started).
    """

    name = "maps"

    def __init__(self, request: MapRequest, layers: Iterable[str], steps_total: Callable[[], int],
                 branches: tuple[str, ...] = ("cond",), hook_points: bool = False) -> None:
        self.request = request
        self.layer_names = set(layers)
        self.steps_total = steps_total
        self.branches = tuple(branches)
        self.hook_points = hook_points
        self.reset()

    def reset(self):
        self.maps: dict[str, list[tuple[int, list[RowLabel], torch.Tensor]]] = {}
        self._committed = 0
        self._buffer = 0
        self._checked: set[str] = set()

    def _check_budget(self, ctx: CallContext, n_rows: int, q: torch.Tensor, k: torch.Tensor) -> None:
        req = self.request
        steps = len(req.steps) if req.steps is not None else self.steps_total()
        kept = ctx.layout.kept_maps(n_rows, q.shape[0])
        result, buffer = map_bytes(q.shape[0], kept, q.shape[1], q.shape[-2], k.shape[-2], req.size, steps)
        self._committed += result
        self._buffer = max(self._buffer, buffer)
        self._checked.add(ctx.layer.name)
        total = self._committed + self._buffer
        if total > req.budget_bytes:
            raise MemoryError(
                f"Materialising maps for the requested layers needs at least {total / 2**20:.1f} MiB "
                f"(layer {ctx.layer.name}: {result / 2**20:.1f} MiB kept + {buffer / 2**20:.1f} MiB working), over "
                f"the budget of {req.budget_bytes / 2**20:.1f} MiB. Raise MapRequest(budget=...), pool to a smaller "
                f"size, or request fewer layers/steps/heads.")

    def after(self, ctx):
        if not self.request.wants(ctx.step):
            return
        keep = _recorded_rows(ctx, self.branches)
        if not keep:
            return
        heads = list(self.request.heads) if self.request.heads is not None else list(range(ctx.query.shape[1]))
        sel = ctx.elements(keep)
        q, k = select(ctx.query, sel)[:, heads], select(ctx.key, sel)[:, heads]
        mask = None if ctx.attn_mask is None else (ctx.attn_mask if ctx.attn_mask.shape[0] == 1
                                                   else select(ctx.attn_mask, sel))
        if ctx.layer.name not in self._checked:
            self._check_budget(ctx, len(keep), q, k)
        pooled = ctx.layout.pool(q, k, ctx.scale, mask, self.request.size, len(keep), ctx.per)
        if self.hook_points:
            pooled = ctx.layer.module.hook_map(pooled)
        self.maps.setdefault(ctx.layer.name, []).append((ctx.step, [ctx.rows[i] for i in keep], pooled.cpu()))


__all__ = ["AttentionHandler", "CallContext", "HookPointHandler", "LayerStats", "MapRecorder", "RowLabel",
           "StatsRecorder", "get_layout", "scatter", "select"]
