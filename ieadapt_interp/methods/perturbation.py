"""Perturbations of attention maps, applied in closed form (paper Sec. 3.1, Supp. 7.2).

A :class:`Perturbation` names layers and a replacement for their map ``A``:

==============  =====================  ===========================================
replacement     map                    output, closed form (no map is built)
==============  =====================  ===========================================
``identity``    ``I``                  ``V``
``uniform``     ``U``                  every row ``mean_keys(V)``
``mix(λ)``      ``λ·I + (1-λ)·U``      ``λ·V + (1-λ)·mean(V)``
``scale(λ)``    ``λ·A + (1-λ)·U``      ``λ·AV + (1-λ)·mean(V)``
==============  =====================  ===========================================

optionally restricted to a step range ``[start, stop)`` and a CFG ``branch``.

>>> p = identity("down_blocks.0.attentions.0.transformer_blocks.0.attn1", steps=(0, 10))
>>> p.replacement, p.lam, p.steps
('identity', 1.0, (0, 10))
>>> Perturbation.from_dict(p.to_dict()) == p
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Mapping, Sequence, Union

import torch

from ..core.entropy import value_mean
from ..core.handlers import AttentionHandler, CallContext, scatter, select
from ..core.layers import KINDS, Layers, LayerSpec, as_layers  # noqa: F401  (re-exported)
from ..core.errors import IEAdaptTypeError, IEAdaptValueError

Replacement = Literal["identity", "uniform", "mix", "scale"]
Branch = Literal["both", "cond", "uncond"]
REPLACEMENTS: tuple[str, ...] = ("identity", "uniform", "mix", "scale")
BRANCHES: tuple[str, ...] = ("both", "cond", "uncond")


@dataclass(frozen=True)
class Perturbation:
    """Replace the attention map of ``layers`` by ``replacement`` (closed form).

    Parameters
    ----------
    layers
        Which layers (see :class:`Layers` / :func:`as_layers`).
    replacement
        ``identity`` | ``uniform`` | ``mix`` (λI+(1-λ)U) | ``scale`` (λA+(1-λ)U).
    lam
        λ ∈ [0, 1] for ``mix`` and ``scale`` (ignored otherwise).
    steps
        ``(start, stop)`` denoising-step range, stop exclusive; ``None`` = every step.
    branch
        CFG branch the replacement applies to: ``both`` (default), ``cond`` or ``uncond``.
    """

    layers: Layers
    replacement: Replacement
    lam: float = 1.0
    steps: tuple[int, int] | None = None
    branch: Branch = "both"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", as_layers(self.layers))
        if self.replacement not in REPLACEMENTS:
            raise IEAdaptValueError(f"Unknown replacement {self.replacement!r}; choose from {list(REPLACEMENTS)}.")
        if not 0.0 <= float(self.lam) <= 1.0:
            raise IEAdaptValueError(f"λ must lie in [0, 1] (λ=1 keeps I for mix / A for scale, λ=0 gives U); got {self.lam}.")
        object.__setattr__(self, "lam", float(self.lam))
        if self.steps is not None:
            start, stop = self.steps
            if not (0 <= int(start) < int(stop)):
                raise IEAdaptValueError(f"steps must be (start, stop) with 0 <= start < stop; got {self.steps}.")
            object.__setattr__(self, "steps", (int(start), int(stop)))
        if self.branch not in BRANCHES:
            raise IEAdaptValueError(f"Unknown branch {self.branch!r}; choose from {list(BRANCHES)}.")

    @property
    def label(self) -> str:
        """Short name, e.g. ``identity``, ``mix(0.25)``."""
        return self.replacement if self.replacement in ("identity", "uniform") else f"{self.replacement}({self.lam:g})"

    def active(self, step: int, branch: str) -> bool:
        in_steps = self.steps is None or self.steps[0] <= step < self.steps[1]
        return in_steps and (self.branch == "both" or self.branch == branch)

    def to_dict(self) -> dict[str, Any]:
        """Serialisable form (a sweep row / a Ray task); predicates cannot be serialised."""
        if self.layers.where is not None:
            raise IEAdaptValueError("A perturbation with a predicate (where=) cannot be serialised; name the layers.")
        layers = {k: list(v) for k, v in asdict(self.layers).items() if k != "where" and v is not None}
        return {"layers": layers, "replacement": self.replacement, "lam": self.lam,
                "steps": list(self.steps) if self.steps else None, "branch": self.branch}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Perturbation":
        layers = Layers(**{k: tuple(v) for k, v in dict(data["layers"]).items()})
        steps = tuple(data["steps"]) if data.get("steps") else None
        return cls(layers, data["replacement"], data.get("lam", 1.0), steps, data.get("branch", "both"))


def identity(layers: LayerSpec, **kwargs) -> Perturbation:
    """``A ← I`` (output ``V``)."""
    return Perturbation(as_layers(layers), "identity", **kwargs)


def uniform(layers: LayerSpec, **kwargs) -> Perturbation:
    """``A ← U`` (every output row is the key-mean of ``V``)."""
    return Perturbation(as_layers(layers), "uniform", **kwargs)


def mix(lam: float, layers: LayerSpec, **kwargs) -> Perturbation:
    """``A ← λI + (1-λ)U``."""
    return Perturbation(as_layers(layers), "mix", lam, **kwargs)


def scale(lam: float, layers: LayerSpec, **kwargs) -> Perturbation:
    """``A ← λA + (1-λ)U``."""
    return Perturbation(as_layers(layers), "scale", lam, **kwargs)


PerturbSpec = Union[None, Perturbation, Mapping[str, str], Sequence[Perturbation]]


def as_perturbations(spec: PerturbSpec) -> tuple[Perturbation, ...]:
    """Normalise ``perturb=``: ``None``, one Perturbation, a list, or ``{layer_name: "identity"|"uniform"}``."""
    if spec is None:
        return ()
    if isinstance(spec, Perturbation):
        return (spec,)
    if isinstance(spec, Mapping):
        out = []
        for name, replacement in spec.items():
            if replacement not in ("identity", "uniform"):
                raise IEAdaptValueError(f"Shorthand {{layer: replacement}} takes 'identity' or 'uniform'; got "
                                 f"{replacement!r} for {name!r}. Use ieadapt_interp.mix/scale for λ.")
            out.append(Perturbation(Layers(names=(name,)), replacement))
        return tuple(out)
    items = tuple(spec)
    for item in items:
        if not isinstance(item, Perturbation):
            raise IEAdaptTypeError(f"perturb= takes Perturbation objects or a {{layer: 'identity'|'uniform'}} dict; "
                            f"got {type(item).__name__}.")
    return items


def replace_output(
    out: torch.Tensor, v: torch.Tensor, mean_v: torch.Tensor, replacement: str, lam: float
) -> torch.Tensor:
    """Closed-form output of a perturbed map, fp32.

    ``out = A·V [n, head, query, dim]``, ``v [n, head, key, dim]``, ``mean_v`` = ``U·V`` rows
    ``[n, head, 1 or query, dim]`` → perturbed output ``[n, head, query, dim]``.
    """
    if replacement == "identity":
        return v.float()
    if replacement == "uniform":
        return mean_v.expand(*out.shape[:-1], mean_v.shape[-1]).float()
    if replacement == "mix":
        return lam * v.float() + (1.0 - lam) * mean_v
    return lam * out.float() + (1.0 - lam) * mean_v


class PerturbationHandler(AttentionHandler):
    """Applies one :class:`Perturbation` at the attention call, in closed form, to the rows it selects.

    Rows: by default those in the perturbation's CFG ``branch`` (rows labelled ``"all"`` count as
    every branch) and, if given, ``samples``. ``rows=`` replaces that rule with a predicate on the
    row label ``(branch, sample)`` — e.g. guidance's extra ``("neg", 0)`` row. The step range always holds.
    Guidance's ``pos`` / ``neg`` rows are copies of the conditional row, so a ``cond`` perturbation acts on
    them too: the guidance term then compares perturbed models of the same (user-perturbed) network.

    >>> from ieadapt_interp import tiny_pipeline, attention_layers
    >>> h = PerturbationHandler(identity("temporal"), name="p0")
    >>> len(h.layers(attention_layers(tiny_pipeline())))
    40
    """

    def __init__(self, perturbation: Perturbation, samples: frozenset[int] | None = None,
                 rows: Callable[[str, int], bool] | None = None, name: str = "perturbation") -> None:
        self.perturbation = perturbation
        self.samples = samples
        self.row_filter = rows
        self.name = name

    def layers(self, table) -> set[str]:
        return set(self.perturbation.layers.resolve(table))

    def applies(self, branch: str, sample: int, step: int) -> bool:
        """Whether the row labelled ``(branch, sample)`` is perturbed at ``step``."""
        p = self.perturbation
        if self.row_filter is not None:
            return p.active(step, "both") and self.row_filter(branch, sample)
        side = "cond" if branch in ("pos", "neg") else branch  # guidance's extra rows are conditional rows
        in_branch = p.active(step, side) or (side == "all" and p.active(step, "both"))
        return in_branch and (self.samples is None or sample in self.samples)

    def after(self, ctx: CallContext) -> None:
        rows = ctx.rows_where(lambda b, s: self.applies(b, s, ctx.step))
        if not rows:
            return
        p = self.perturbation
        if p.replacement in ("identity", "mix") and not ctx.square:
            raise IEAdaptValueError(f"{ctx.layer.name} is cross-attention ({ctx.query.shape[-2]} queries, "
                             f"{ctx.key.shape[-2]} keys): '{p.replacement}' needs a square map; use uniform or scale.")
        sel = ctx.elements(rows)
        v = select(ctx.value, sel)
        mask = ctx.attn_mask
        if mask is not None and mask.shape[0] == ctx.value.shape[0]:
            mask = select(mask, sel)
        new = replace_output(select(ctx.out, sel), v, value_mean(v, mask), p.replacement, p.lam)
        ctx.out = scatter(ctx.out, sel, new.to(ctx.out.dtype))


def perturbation_handlers(specs: Sequence[tuple[Perturbation, ...]], per_sample: bool) -> list[PerturbationHandler]:
    """Handlers for ``generate``'s ``perturb=`` (one spec, every sample) or ``variants=`` (spec ``i`` → sample ``i``)."""
    return [PerturbationHandler(p, frozenset({i}) if per_sample else None, name=f"perturbation[{i}.{j}]")
            for i, spec in enumerate(specs) for j, p in enumerate(spec)]
