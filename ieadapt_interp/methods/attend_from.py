"""Attending from another row: the building block of editing (paper Sec. 4.2, Alg. 1).

In the chosen layers, the ``target`` sample's attention uses the ``source`` sample's tensors:

==========  =====================================  =================================
``what``    target computes                        method
==========  =====================================  =================================
``"qk"``    ``softmax(Q_src K_srcᵀ/√d) · V_tgt``   IE-Adapt (``A_src · V_tgt``)
``"kv"``    ``softmax(Q_tgt K_srcᵀ/√d) · V_src``   MasaCtrl
==========  =====================================  =================================

No map is stored: the source's ``Q, K`` are copied into the target's rows before the attention call.

>>> a = AttendFrom(frozenset({"up_blocks.0.attentions.0.transformer_blocks.0.attn1"}), source=0, target=1)
>>> a.what
'qk'
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.handlers import AttentionHandler, CallContext
from ..core.errors import IEAdaptValueError

WHATS: tuple[str, ...] = ("qk", "kv")


@dataclass(frozen=True)
class AttendFrom:
    """Sample ``target`` attends with sample ``source``'s ``Q, K`` (``Y_tgt = A_src · V_tgt``) in ``layers``.

    ``what="qk"`` is IE-Adapt editing; ``what="kv"`` takes the source's ``K, V`` (MasaCtrl).
    ``steps``: ``(start, stop)`` denoising-step range, stop exclusive; ``None`` = every step.
    """

    layers: frozenset[str]
    source: int
    target: int
    steps: tuple[int, int] | None = None
    what: str = "qk"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", frozenset(self.layers))
        if self.what not in WHATS:
            raise IEAdaptValueError(f"AttendFrom.what must be one of {list(WHATS)}; got {self.what!r}.")

    def active(self, step: int) -> bool:
        return self.steps is None or self.steps[0] <= step < self.steps[1]


class AttendFromHandler(AttentionHandler):
    """Copies the source row's ``Q, K`` (or ``K, V``) into the target row, within every CFG branch."""

    def __init__(self, spec: AttendFrom, name: str = "attend_from") -> None:
        self.spec = spec
        self.name = name
        self.layer_names = set(spec.layers)

    def before(self, ctx: CallContext) -> None:
        a = self.spec
        if not a.active(ctx.step):
            return
        pairs = []
        for branch in {b for b, _ in ctx.rows}:
            lookup = {s: i for i, (b, s) in enumerate(ctx.rows) if b == branch}
            if a.source in lookup and a.target in lookup:
                pairs.append((ctx.elements([lookup[a.source]]), ctx.elements([lookup[a.target]])))
        if not pairs:
            return
        names = ("query", "key") if a.what == "qk" else ("key", "value")
        for name in names:
            x = getattr(ctx, name).clone()
            for src, tgt in pairs:
                x[tgt] = x[src]
            setattr(ctx, name, x)
