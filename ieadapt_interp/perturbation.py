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

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence, Union

import pandas as pd
import torch

Replacement = Literal["identity", "uniform", "mix", "scale"]
Branch = Literal["both", "cond", "uncond"]
REPLACEMENTS: tuple[str, ...] = ("identity", "uniform", "mix", "scale")
BRANCHES: tuple[str, ...] = ("both", "cond", "uncond")
KINDS: tuple[str, ...] = ("spatial", "temporal", "cross", "joint")


@dataclass(frozen=True)
class Layers:
    """A selection of attention layers, resolved against :func:`attention_layers`.

    Every given criterion must hold (``names`` OR-ed within, criteria AND-ed across). ``indices``
    count from 1 within each kind; negative ones from the end (``-1`` = the last layer of its kind).

    >>> Layers(kinds=("temporal",), indices=(1, 2)).describe()
    'kinds=temporal indices=1,2'
    """

    names: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | None = None
    blocks: tuple[str, ...] | None = None
    indices: tuple[int, ...] | None = None
    where: Callable[[pd.Series], bool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for attr in ("names", "kinds", "blocks", "indices"):
            value = getattr(self, attr)
            if isinstance(value, (str, int)):
                object.__setattr__(self, attr, (value,))
            elif value is not None:
                object.__setattr__(self, attr, tuple(value))
        bad = set(self.kinds or ()) - set(KINDS)
        if bad:
            raise ValueError(f"Unknown layer kind(s) {sorted(bad)}; choose from {list(KINDS)}.")

    def describe(self) -> str:
        parts = [f"{a}={','.join(map(str, getattr(self, a)))}" for a in ("names", "kinds", "blocks", "indices")
                 if getattr(self, a) is not None]
        return " ".join(parts + (["where=<predicate>"] if self.where else [])) or "all"

    def resolve(self, table: pd.DataFrame) -> list[str]:
        """Layer names selected in ``table`` (an :func:`attention_layers` frame); errors if none."""
        if self.names is not None:
            _check_names(self.names, list(table["name"]))
        keep = pd.Series(True, index=table.index)
        for column, values in (("name", self.names), ("kind", self.kinds), ("block", self.blocks)):
            if values is not None:
                keep &= table[column].isin(values)
        if self.indices is not None:  # negative indices count from the last layer of each kind
            count = table.groupby("kind")["index"].transform("max")
            keep &= table["index"].isin(self.indices) | (table["index"] - count - 1).isin(self.indices)
        if self.where is not None:
            keep &= table.apply(self.where, axis=1).astype(bool)
        if not keep.any():
            raise ValueError(f"Layer selection [{self.describe()}] matches no attention layer of this model; "
                             f"see ieadapt_interp.attention_layers(pipe) for names, kinds, blocks and indices.")
        return list(table.loc[keep, "name"])


def _check_names(names: Sequence[str], valid: list[str]) -> None:
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.4)
            hint = f" Closest valid names: {close}." if close else ""
            raise KeyError(f"Unknown attention layer {name!r}.{hint} "
                           f"List them with ieadapt_interp.attention_layers(pipe).")


LayerSpec = Union[str, Sequence[str], Layers, Callable[[pd.Series], bool]]


def as_layers(spec: LayerSpec) -> Layers:
    """Normalise a layer spec: a name, a kind (``"temporal"``), a list of names, a predicate, or Layers."""
    if isinstance(spec, Layers):
        return spec
    if isinstance(spec, str):
        return Layers(kinds=(spec,)) if spec in KINDS else Layers(names=(spec,))
    if callable(spec):
        return Layers(where=spec)
    return Layers(names=tuple(spec))


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
            raise ValueError(f"Unknown replacement {self.replacement!r}; choose from {list(REPLACEMENTS)}.")
        if not 0.0 <= float(self.lam) <= 1.0:
            raise ValueError(f"λ must lie in [0, 1] (λ=1 keeps I for mix / A for scale, λ=0 gives U); got {self.lam}.")
        object.__setattr__(self, "lam", float(self.lam))
        if self.steps is not None:
            start, stop = self.steps
            if not (0 <= int(start) < int(stop)):
                raise ValueError(f"steps must be (start, stop) with 0 <= start < stop; got {self.steps}.")
            object.__setattr__(self, "steps", (int(start), int(stop)))
        if self.branch not in BRANCHES:
            raise ValueError(f"Unknown branch {self.branch!r}; choose from {list(BRANCHES)}.")

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
            raise ValueError("A perturbation with a predicate (where=) cannot be serialised; name the layers.")
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
                raise ValueError(f"Shorthand {{layer: replacement}} takes 'identity' or 'uniform'; got "
                                 f"{replacement!r} for {name!r}. Use ieadapt_interp.mix/scale for λ.")
            out.append(Perturbation(Layers(names=(name,)), replacement))
        return tuple(out)
    items = tuple(spec)
    for item in items:
        if not isinstance(item, Perturbation):
            raise TypeError(f"perturb= takes Perturbation objects or a {{layer: 'identity'|'uniform'}} dict; "
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
