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

>>> a = AttendFrom(frozenset({"up_blocks.0.attentions.0.transformer_blocks.0.attn1"}), source=0, target=1)
>>> a.what, a.tensors
('qk', ('query', 'key'))
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import IEAdaptValueError
from ..core.handlers import AttentionHandler, CallContext

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
    one batch); the tensors are cloned once per call.
    """

    def __init__(self, spec: AttendFrom | list[AttendFrom], name: str = "attend_from") -> None:
        self.specs = [spec] if isinstance(spec, AttendFrom) else list(spec)
        self.spec = self.specs[0]
        self.name = name
        self.layer_names = set().union(*(s.layers for s in self.specs))

    def _pairs(self, ctx: CallContext, a: AttendFrom) -> list[tuple]:
        pairs = []
        for branch in dict.fromkeys(b for b, _ in ctx.rows):
            if a.branches is not None and branch not in a.branches and branch != "all":
                continue
            lookup = {s: i for i, (b, s) in enumerate(ctx.rows) if b == branch}
            if a.source in lookup and a.target in lookup:
                pairs.append((ctx.elements([lookup[a.source]]), ctx.elements([lookup[a.target]])))
        return pairs

    def before(self, ctx: CallContext) -> None:
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
