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
from .kernels.row_energy import row_kernel_available, row_squared_norms
from .layouts import FramesInBatch, Layout, get_layout
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
    """``x`` restricted to the batch elements ``sel`` (:meth:`CallContext.elements`): a view for a slice (``x``
    itself when the slice is the whole batch)."""
    if isinstance(sel, slice):
        return x if sel.start == 0 and sel.stop == x.shape[0] else x[sel]
    return x.index_select(0, sel)


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
_SEGMENTS_CACHE: dict = {}
_ONES_CACHE: dict = {}
_SCALES_CACHE: dict = {}


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
    return histograms([values], edges)[0]


def _segment_offsets(shapes: tuple, bins: int, device: torch.device, swapped: tuple = ()) -> torch.Tensor:
    """``bins ×`` the segment of every value of ``shapes`` laid end to end (one segment = one ``[..., n]`` row),
    built once per structure and device (a host→GPU copy per step would stall the stream). A part flagged in
    ``swapped`` is stored with its last two dims swapped (``[..., n, heads]`` memory for ``[..., heads, n]``: a per-map
    reduction's natural layout, binned without a transposing copy)."""
    key = (shapes, swapped, bins, str(device))
    if key not in _SEGMENTS_CACHE:
        if len(_SEGMENTS_CACHE) >= 8:  # another resolution or layer selection: start over (bounded memory)
            _SEGMENTS_CACHE.clear()
        pieces, base = [], 0
        for i, shape in enumerate(shapes):
            lead, last = math.prod(shape[:-1]), shape[-1]
            if i < len(swapped) and swapped[i]:
                rows, heads = math.prod(shape[:-2]), shape[-2]
                seg = (torch.arange(rows).view(rows, 1, 1) * heads + torch.arange(heads).view(1, 1, heads))
                seg = seg.expand(rows, last, heads).reshape(-1)
            else:
                seg = torch.arange(lead).repeat_interleave(last)
            pieces.append(seg + base)
            base += lead
        _SEGMENTS_CACHE[key] = (torch.cat(pieces) * bins).to(device)
    return _SEGMENTS_CACHE[key]


def _part_scales(scales: tuple, sizes: tuple, device: torch.device) -> torch.Tensor:
    """fp32 ``scales[i]`` repeated ``sizes[i]`` times, on ``device``, built once per structure (like the segments)."""
    key = (scales, sizes, str(device))
    if key not in _SCALES_CACHE:
        if len(_SCALES_CACHE) >= 8:
            _SCALES_CACHE.clear()
        values = torch.tensor(scales, dtype=torch.float32).repeat_interleave(torch.tensor(sizes))
        _SCALES_CACHE[key] = values.to(device)
    return _SCALES_CACHE[key]


def _ones(n: int, device: torch.device) -> torch.Tensor:
    """``n`` fp32 ones on ``device`` (a view of one cached buffer)."""
    key = str(device)
    if key not in _ONES_CACHE or _ONES_CACHE[key].numel() < n:
        _ONES_CACHE[key] = torch.ones(max(n, 1 << 16), dtype=torch.float32, device=device)
    return _ONES_CACHE[key][:n]


def histograms(parts: Sequence[torch.Tensor], edges: Sequence[float]) -> list[torch.Tensor]:
    """:func:`histogram` of each ``part [..., n_i]`` over the same ``edges``, all parts in one pass: one
    ``bucketize`` and one ``scatter_add`` for the lot (the recorder bins every map of a step at once).

    >>> [h.tolist() for h in histograms([torch.tensor([1.0, 6.0]), torch.tensor([[7.0], [8.0]])], (0.0, 5.0, 10.0))]
    [[1.0, 1.0], [[0.0, 1.0], [0.0, 1.0]]]
    """
    if not parts:
        return []
    flat = torch.cat([p.reshape(-1) for p in parts]) if len(parts) > 1 else parts[0].reshape(-1)
    return _histograms_flat(flat, tuple(tuple(p.shape) for p in parts), edges)


def _histograms_flat(flat: torch.Tensor, shapes: tuple, edges: Sequence[float],
                     swapped: tuple = ()) -> list[torch.Tensor]:
    """:func:`histograms` of parts of ``shapes`` laid end to end in ``flat`` (``swapped``: see
    :func:`_segment_offsets`)."""
    device, bins = flat.device, len(edges) - 1
    inner = _bin_edges(tuple(edges[1:-1]), flat.dtype, device)
    idx = torch.bucketize(flat, inner, right=True).add_(_segment_offsets(shapes, bins, device, swapped))
    segments = sum(math.prod(shape[:-1]) for shape in shapes)
    counts = torch.zeros(segments * bins, dtype=torch.float32, device=device)
    counts.scatter_add_(0, idx, _ones(idx.numel(), device))
    out, start = [], 0
    for shape in shapes:
        n = math.prod(shape[:-1]) * bins
        out.append(counts[start:start + n].view(*shape[:-1], bins))
        start += n
    return out


def energy_position(e_av: torch.Tensor, e_iv: torch.Tensor, e_uv: torch.Tensor) -> torch.Tensor:
    """``(E(AV) − E(UV)) / (E(IV) − E(UV))``: 0 on the lower bound, 1 on the upper; 0 where the bounds coincide.

    >>> energy_position(torch.tensor([2.0, 5.0]), torch.tensor([3.0, 5.0]), torch.tensor([1.0, 5.0])).tolist()
    [0.5, 0.0]
    """
    span = e_iv - e_uv
    ok = span.abs() > e_iv.abs().clamp_min(1e-30).mul_(1e-12)
    return torch.where(ok, (e_av - e_uv) / span, 0.0)  # the division's inf/NaN where not ok is never selected


#: The per-row energies, in the order :func:`row_energies` stacks them.
ENERGY_VARS: tuple[str, ...] = ("energy", "energy_identity", "energy_uniform")


def row_energies(out: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, square: bool) -> torch.Tensor:
    """``‖(AV)_i‖²``, ``‖(IV)_i‖² = ‖V_i‖²`` (NaN unless ``square``: no identity map) and ``‖(UV)_i‖²`` of every
    query row, stacked in one fp32 buffer ``[3·B', head, query]`` (``out [B', head, query, dim]``,
    ``v [B', head, key, dim]``) so that each reduction over frames or maps is one launch for all three.

    >>> v = torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]])          # B' = 1, 1 head, 2 keys; A = I so AV = V
    >>> row_energies(v, v, None, True).view(3, 2).tolist()     # ‖AV_i‖², ‖V_i‖², ‖mean V‖² = 1.5² + 2²
    [[25.0, 0.0], [25.0, 0.0], [6.25, 6.25]]
    """
    b, h, n_q = out.shape[:3]
    e = torch.empty(3, b, h, n_q, dtype=torch.float32, device=out.device)
    mean = value_mean(v, mask)  # [B', head, 1 or query, dim] fp32
    if square and row_kernel_available(out) and row_kernel_available(v):  # CUDA: all three in one launch
        # (``mean`` is fp32 of v's rank, device and last dim: available when ``v`` is)
        row_squared_norms([out, v, mean.expand(b, h, n_q, -1)], e)
        return e.view(3 * b, h, n_q)
    squared_norm(out, out=e[0])
    if square:
        squared_norm(v, out=e[1])
    else:
        e[1].fill_(float("nan"))
    e[2].copy_(squared_norm(mean))  # [B', head, 1 or query] broadcast over the rows
    return e.view(3 * b, h, n_q)


class StatsRecorder(AttentionHandler):
    """Records entropy, ``‖AV‖²`` and both closed-form bounds of every call into :attr:`calls`.

    Per frame (``[row, head, frame]``): ``entropy``, ``energy``, ``energy_identity``, ``energy_uniform``.
    Per map (the paper's unit, see :meth:`Layout.per_map`), as histograms ``[row, head, bin]`` — no map is
    stored: ``map_entropy_hist`` (each map's mean row entropy in percent of ``log N``, :data:`ENTROPY_BINS`) and,
    for self-attention, ``map_energy_hist`` (each map's energy position between its bounds, :data:`ENERGY_BINS`).

    ``branches``: the CFG branches whose rows are recorded (rows labelled ``"all"`` always are).
    ``entropy_only``: record the per-frame ``entropy`` (and ``entropy_text``) alone — no energies, no per-map
    histograms (the same entropy values, cheaper: what an edit's layer selection reads).

    >>> StatsRecorder(["a"], entropy_only=True).layers(None)
    {'a'}

    Per call the work stays on the device and costs about ten kernel launches (three energies in one buffer,
    one reduction per frames/maps for all of them); the histograms of a step's maps are binned together when the
    next step starts or when :attr:`calls` is read.
    """

    name = "stats"

    def __init__(self, layers: Iterable[str], branches: tuple[str, ...] = ("cond",),
                 entropy_only: bool = False) -> None:
        self.layer_names = set(layers)
        self.branches = tuple(branches)
        self.entropy_only = bool(entropy_only)
        self.reset()

    @property
    def calls(self) -> list[LayerStats]:
        """One :class:`LayerStats` per recorded call (the pending histograms are binned first)."""
        self._bin_pending()
        return self._calls

    def reset(self):
        self._calls: list[LayerStats] = []
        self._pending: list[tuple[LayerStats, tuple | None, float, tuple | None]] = []

    def wants_entropy(self, ctx):
        return bool(_recorded_rows(ctx, self.branches))

    def after(self, ctx):
        keep = _recorded_rows(ctx, self.branches)
        if not keep:
            return
        sel, n = ctx.elements(keep), len(keep)
        entropy = select(ctx.entropy, sel).float()
        groups = [(("entropy",), entropy, "mean")]
        if not self.entropy_only:
            v = select(ctx.value, sel)  # a view for consecutive rows; both energy bounds derive from it
            mask = ctx.attn_mask if ctx.attn_mask is None or ctx.attn_mask.shape[0] == 1 else select(ctx.attn_mask, sel)
            energies = row_energies(select(ctx.out, sel), v, mask, ctx.square)
            groups.append((ENERGY_VARS, energies, "sum"))
        flat, frames = {}, []
        for names, x, how in groups:
            video, text = ctx.layout.to_frames(x, len(names) * n, ctx.per, ctx.num_frames, ctx.text_len, how)
            frames.append(video)
            flat.update(zip(names, video.view(len(names), n, *video.shape[1:]).unbind(0)) if len(names) > 1
                        else ((names[0], video),))
            if text is not None:
                flat.update(zip((name + "_text" for name in names), text.view(len(names), n, -1).unbind(0)))
        if self._pending and self._pending[-1][0].step != ctx.step:
            self._bin_pending()
        record = LayerStats(ctx.step, ctx.layer.name, [ctx.rows[i] for i in keep], ctx.key.shape[-2], flat)
        self._calls.append(record)
        if not self.entropy_only:
            self._pending.append((record, *self._per_map(ctx, entropy, energies, n, tuple(frames))))

    @staticmethod
    def _per_map(ctx: CallContext, entropy: torch.Tensor, energies: torch.Tensor, n_rows: int,
                 frames: tuple) -> tuple:
        """Per-map values of one call, each as ``(stored tensor, [row, head, map] shape, swapped)`` (see
        :func:`_stored`): the mean row entropy with its factor to percent of ``log N``, ``100 / log N`` (``None, 0``
        for one key; the product is taken for a whole step at binning) and, for self-attention, the three energies'
        sums ``[3·row, head, map]``. ``frames``: the ``to_frames`` results of this call (entropy, energies): where
        one frame is one map (frames in batch), the same reductions, reused."""
        n_k = ctx.key.shape[-2]
        same = isinstance(ctx.layout, FramesInBatch) and type(ctx.layout).per_map is Layout.per_map
        mean, factor = None, 0.0
        if n_k > 1:
            mean = _stored(frames[0] if same else ctx.layout.per_map(entropy, n_rows, ctx.per))
            factor = 100.0 / math.log(n_k)
        sums = None
        if ctx.square:
            sums = _stored(frames[1] if same else ctx.layout.per_map(energies, 3 * n_rows, ctx.per, "sum"))
        return mean, factor, sums

    def _bin_pending(self) -> None:
        """Histograms ``map_entropy_hist`` / ``map_energy_hist`` of the pending calls, binned together."""
        pending, self._pending = self._pending, []
        with_mean = [(record, mean, factor) for record, mean, factor, _ in pending if mean is not None]
        if with_mean:
            shapes = tuple(shape for _, (_, shape, _), _ in with_mean)
            flat = torch.cat([x.reshape(-1) for _, (x, _, _), _ in with_mean])
            # percent of log N: the same fp32 product as ``mean * factor`` per call, one multiplication per step
            flat.mul_(_part_scales(tuple(f for _, _, f in with_mean), tuple(math.prod(s) for s in shapes),
                                   flat.device))
            swapped = tuple(sw for _, (_, _, sw), _ in with_mean)
            for (record, _, _), hist in zip(with_mean, _histograms_flat(flat, shapes, ENTROPY_BINS, swapped)):
                record.stats["map_entropy_hist"] = hist
        with_sums = [(record, sums) for record, _, _, sums in pending if sums is not None]
        if not with_sums:
            return
        # [3, all maps]: E(AV), E(IV), E(UV) (each stored tensor holds the three energies as leading row blocks)
        stacked = torch.cat([x.view(3, -1) for _, (x, _, _) in with_sums], 1)
        positions = energy_position(stacked[0], stacked[1], stacked[2])
        shapes = tuple((shape[0] // 3, *shape[1:]) for _, (_, shape, _) in with_sums)
        swapped = tuple(sw for _, (_, _, sw) in with_sums)
        for (record, _), hist in zip(with_sums, _histograms_flat(positions, shapes, ENERGY_BINS, swapped)):
            record.stats["map_energy_hist"] = hist


def _stored(x: torch.Tensor) -> tuple[torch.Tensor, tuple, bool]:
    """A per-map result ``x [rows, head, map]`` kept for binning without a copy where possible: ``(x.transpose(1, 2),
    shape, True)`` when that is contiguous (the natural layout of a reduction over each map's rows, which
    :meth:`Layout.per_map` returns transposed), else ``(x.contiguous(), shape, False)``."""
    swapped = x.transpose(1, 2)
    if swapped.is_contiguous():
        return swapped, tuple(x.shape), True
    return x.contiguous(), tuple(x.shape), False


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
