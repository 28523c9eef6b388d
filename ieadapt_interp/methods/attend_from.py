"""Attending from another row: the building block of editing (paper Sec. 4.2, Alg. 1).

In the chosen layers, the ``target`` sample's attention uses the ``source`` sample's tensors:

==========  =====================================  ==============================================
``what``    target computes                        method
==========  =====================================  ==============================================
``"qk"``    ``softmax(Q_src K_srcᵀ/√d) · V_tgt``   IE-Adapt, all / fixed layers (``A_src · V_tgt``);
                                                   on cross-attention layers: Prompt-to-Prompt
``"kv"``    ``softmax(Q_tgt K_srcᵀ/√d) · V_src``   MasaCtrl (mutual self-attention)
``"v"``     ``softmax(Q_tgt K_tgtᵀ/√d) · V_src``   value only
==========  =====================================  ==============================================

No map is stored: the source's tensors are copied into the target's rows before the attention call,
so the fused kernel computes the result. ``branches`` limits the copy to some CFG branches
(Prompt-to-Prompt replaces only the conditional maps).

Per-row attention (an adapter with ``attention_per_row``: Mochi calls the attention once per batch row, each
row over ``[video tokens, its own valid text tokens]``): :class:`PerRowSource` rewrites, before the layer runs,
each target row's text mask to its source row's, so the target row's call holds **the source's token set** —
every video token (aligned by position) and the text positions valid in the source's prompt, with the target's
own tensors there (computed from its padded text states, as HunyuanVideo's padded layout has them). The source
row's call (earlier in the layer: rows run in order) keeps its ``Q, K, V``; the target row's call takes the
copied ones. So ``"qk"`` gives ``softmax(Q_src K_srcᵀ/√d) · V_tgt`` over exactly the source's keys, ``V_tgt`` at
the same positions; where the target's prompt is longer, its text tokens past the source's length are outside
that set and get a zero attention output, as the processor gives padded tokens.

>>> a = AttendFrom(frozenset({"up_blocks.0.attentions.0.transformer_blocks.0.attn1"}), source=0, target=1)
>>> a.what, a.tensors
('qk', ('query', 'key'))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import IEAdaptValueError
from ..core.handlers import AttentionHandler, CallContext
from ..core.interception import HookHandles, get_arg, parameter_positions, set_arg

#: which of the call's tensors each ``what`` copies from the source row into the target row
TENSORS: dict[str, tuple[str, ...]] = {"qk": ("query", "key"), "kv": ("key", "value"), "v": ("value",)}
WHATS: tuple[str, ...] = tuple(TENSORS)


@dataclass(frozen=True)
class AttendFrom:
    """Sample ``target`` attends with sample ``source``'s tensors in ``layers`` (see the module table).

    ``steps``: ``(start, stop)`` denoising-step range, stop exclusive; ``None`` = every step.
    ``branches``: CFG branches in which the copy happens (``None`` = every branch, each within itself).
    """

    layers: frozenset[str]
    source: int
    target: int
    steps: tuple[int, int] | None = None
    what: str = "qk"
    branches: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", frozenset(self.layers))
        if self.what not in WHATS:
            raise IEAdaptValueError(f"AttendFrom.what must be one of {list(WHATS)}; got {self.what!r}.")
        if self.source == self.target:
            raise IEAdaptValueError(f"AttendFrom: source and target are both sample {self.source}.")
        if self.steps is not None:
            start, stop = (int(s) for s in self.steps)
            if not 0 <= start < stop:
                raise IEAdaptValueError(f"AttendFrom.steps must be (start, stop) with 0 ≤ start < stop; "
                                        f"got {self.steps}.")
            object.__setattr__(self, "steps", (start, stop))
        if self.branches is not None:
            object.__setattr__(self, "branches", tuple(self.branches))

    @property
    def tensors(self) -> tuple[str, ...]:
        """Names of the :class:`~ieadapt_interp.core.handlers.CallContext` tensors copied."""
        return TENSORS[self.what]

    def active(self, step: int) -> bool:
        return self.steps is None or self.steps[0] <= step < self.steps[1]


class AttendFromHandler(AttentionHandler):
    """Copies the source row's tensors (:attr:`AttendFrom.tensors`) into the target row, per CFG branch.

    Several specs may share one handler (one source, many targets: the variants of an edit sweep run in
    one batch); the tensors are cloned once per call. Per-row attention (Mochi) needs :class:`PerRowSource`
    around the run (see the module docstring).
    """

    def __init__(self, spec: AttendFrom | list[AttendFrom], name: str = "attend_from") -> None:
        self.specs = [spec] if isinstance(spec, AttendFrom) else list(spec)
        self.spec = self.specs[0]
        self.name = name
        self.layer_names = set().union(*(s.layers for s in self.specs))
        self.reset()

    def reset(self) -> None:
        self._plan: dict = {}  # per-row layer: {target row label: (source row label, tensor names)}
        self._kept: dict = {}  # per-row layer: {source row label: {tensor name: tensor}}
        self._plan_layer: str | None = None

    def source_of(self, rows: list, i: int, a: AttendFrom) -> int | None:
        """The denoiser row that row ``i`` (a target of ``a``) attends from: the source in its own branch."""
        return next((j for j, (b, s) in enumerate(rows) if b == rows[i][0] and s == a.source), None)

    def row_pairs(self, rows: list, a: AttendFrom) -> list[tuple[int, int]]:
        """``[(source row, target row)]`` of ``a`` among the denoiser rows ``rows`` (``[(branch, sample)]``)."""
        pairs = []
        for i, (branch, sample) in enumerate(rows):
            if sample != a.target or (a.branches is not None and branch not in a.branches and branch != "all"):
                continue
            j = self.source_of(rows, i, a)
            if j is not None:
                pairs.append((j, i))
        return pairs

    def _pairs(self, ctx: CallContext, a: AttendFrom) -> list[tuple]:
        return [(ctx.elements([s]), ctx.elements([t])) for s, t in self.row_pairs(ctx.rows, a)]

    def enter_layer(self, layer: str, step: int, rows: list, mask: torch.Tensor) -> torch.Tensor:
        """Per-row attention: plan ``layer`` at ``step`` over the denoiser rows ``rows`` and return its text mask
        ``[row, text]`` with each target row's replaced by its source row's (``mask`` itself if none is)."""
        self._plan, self._kept, self._plan_layer = {}, {}, layer
        new = mask
        for a in self.specs:
            if layer not in a.layers or not a.active(step):
                continue
            for s, t in self.row_pairs(rows, a):
                if s > t:
                    raise IEAdaptValueError(f"{layer}: the attention runs once per row, in order, and target row "
                                            f"{rows[t]} comes before its source row {rows[s]}.")
                self._plan.setdefault(rows[t], (rows[s], set()))[1].update(a.tensors)
                new = mask.clone() if new is mask else new
                new[t] = mask[s]
        return new

    def _before_row(self, ctx: CallContext) -> None:
        """One row's call of a planned per-row layer: keep a source row's tensors, give a target row its source's."""
        label = ctx.rows[0]
        if any(src == label for src, _ in self._plan.values()):
            self._kept[label] = {"query": ctx.query, "key": ctx.key, "value": ctx.value}
        if label in self._plan:
            src, names = self._plan[label]
            for name in sorted(names):
                x = self._kept[src][name]
                if x.shape != getattr(ctx, name).shape:
                    raise RuntimeError(f"{ctx.layer.name}: the source row's {name} {tuple(x.shape)} does not fit "
                                       f"the target row's {tuple(getattr(ctx, name).shape)}.")
                setattr(ctx, name, x)

    def before(self, ctx: CallContext) -> None:
        if self._plan_layer == ctx.layer.name and len(ctx.rows) == 1:
            self._before_row(ctx)
            return
        if ctx.query.shape[0] == 1 and any(ctx.rows[0][1] == a.target and ctx.layer.name in a.layers
                                           and a.active(ctx.step) for a in self.specs):
            raise RuntimeError(f"{ctx.layer.name}: a target row's attention runs alone (one call per row, Mochi), "
                               "so it cannot take the source row's tensors here; run it inside "
                               "PerRowSource(interception, handler) (ia.edit does).")
        copies: dict[str, list[tuple]] = {}
        for a in self.specs:
            if ctx.layer.name not in a.layers or not a.active(ctx.step):
                continue
            pairs = self._pairs(ctx, a)
            for name in a.tensors:
                copies.setdefault(name, []).extend(pairs)
        for name, pairs in copies.items():
            original = getattr(ctx, name)
            x = original.clone()
            for src, tgt in pairs:
                x[tgt] = original[src]
            setattr(ctx, name, x)
        mask = ctx.attn_mask
        if copies.get("key") and mask is not None and mask.ndim == 4 and mask.shape[0] == ctx.query.shape[0]:
            m = mask.clone()  # the keys are the source's: so is their mask (HunyuanVideo's padded text tokens)
            for src, tgt in copies["key"]:
                m[tgt] = mask[src]
            ctx.attn_mask = m


class PerRowSource:
    """For a ``with`` block inside ``interception`` (entered): ``handler`` on a model whose attention runs once
    per batch row (adapter ``attention_per_row``, Mochi). A forward pre-hook on each of the handler's layers,
    run before the interception's (so its row text lengths are the rewritten ones), passes the layer the text
    mask (its ``attention_mask`` argument, ``[row, text]``) of :meth:`AttendFromHandler.enter_layer`: each target
    row runs over its source row's token set. The hooks are removed on exit, also on errors.
    """

    def __init__(self, interception, handler: AttendFromHandler) -> None:
        self.interception, self.handler, self._hooks = interception, handler, HookHandles()

    def __enter__(self) -> "PerRowSource":
        with self._hooks.registering():
            for record in self.interception.layers:
                if record.name in self.handler.layer_names:
                    self._hooks.add(record.module.register_forward_pre_hook(
                        self._hook(record.name), with_kwargs=True, prepend=True))
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.remove_all()

    def _hook(self, name: str):
        def before(module, args, kwargs):
            position, args, kwargs = parameter_positions(type(module)), list(args), dict(kwargs)
            mask = get_arg(position, args, kwargs, "attention_mask")
            if mask is None or mask.ndim != 2:
                raise RuntimeError(f"{name}: a per-row attention layer without a [row, text] attention_mask.")
            state = self.interception.state
            new = self.handler.enter_layer(name, state.step, state.rows, mask)
            if new is mask:
                return None
            set_arg(position, args, kwargs, "attention_mask", new)
            return tuple(args), kwargs
        return before
