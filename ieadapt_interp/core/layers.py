"""Which attention layers: :class:`Layers`, a selection resolved against :func:`attention_layers`.

>>> Layers(kinds=("temporal",), indices=(1, 2)).describe()
'kinds=temporal indices=1,2'
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import pandas as pd
from .errors import IEAdaptKeyError, IEAdaptValueError

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
            raise IEAdaptValueError(f"Unknown layer kind(s) {sorted(bad)}; choose from {list(KINDS)}.")

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
            raise IEAdaptValueError(f"Layer selection [{self.describe()}] matches no attention layer of this model; "
                             f"see ieadapt_interp.attention_layers(pipe) for names, kinds, blocks and indices.")
        return list(table.loc[keep, "name"])


def _check_names(names: Sequence[str], valid: list[str]) -> None:
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.4)
            hint = f" Closest valid names: {close}." if close else ""
            raise IEAdaptKeyError(f"Unknown attention layer {name!r}.{hint} "
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


def capture_layers(capture: LayerSpec | bool | None, table: pd.DataFrame) -> list[str]:
    """The layer names a ``capture=`` argument selects in ``table`` (an :func:`attention_layers` frame, in
    forward order): ``True`` every layer, ``False`` / ``None`` none, else a :data:`LayerSpec` resolved
    (errors if it selects nothing).

    >>> table = pd.DataFrame({"name": ["a", "b"], "kind": ["spatial", "temporal"], "block": ["mid", "mid"],
    ...                       "index": [1, 1]})
    >>> capture_layers(True, table), capture_layers(None, table), capture_layers("temporal", table)
    (['a', 'b'], [], ['b'])
    """
    if capture is True:
        return list(table["name"])
    if capture is False or capture is None:
        return []
    return as_layers(capture).resolve(table)
