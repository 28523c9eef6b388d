"""Model specs: the one spelling of "which model", taken by :func:`ieadapt_interp.load_pipeline`.

=======================  ===================================================================
spec                     pipeline
=======================  ===================================================================
``None``                 the embedded model, shipped inside the package (runs on a laptop CPU)
``"tiny:<arch>"``        :func:`ieadapt_interp.tiny_pipeline` ``(arch)``: random weights, e.g.
                         ``"tiny:animatediff"``, ``"tiny:cogvideox"`` (tests, benchmarks)
a folder                 a saved pipeline (``model_index.json``) or an AnimateDiff base model
                         with ``motion_adapter=``
a hub id                 the same, from the local Hugging Face cache (nothing is downloaded)
=======================  ===================================================================

Older spellings keep working for one release with a ``DeprecationWarning``: ``"default"`` (= ``None``),
``"tiny-animatediff"`` (= ``"tiny:animatediff"``) and the tuple ``("tiny", "animatediff")``.

>>> canonical_spec("tiny:cogvideox"), canonical_spec(None)
('tiny:cogvideox', None)
>>> tiny_arch("tiny:animatediff")
'animatediff'
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from ..core.errors import IEAdaptTypeError, IEAdaptValueError

#: The prefix of a tiny random-initialised model's spec (``"tiny:animatediff"``).
TINY = "tiny:"
#: Deprecated names (one release) of the specs above.
MODEL_NAMES: tuple[str, ...] = ("default", "tiny-animatediff", "tiny-cogvideox")


def _deprecated(old: Any, new: str | None) -> None:
    warnings.warn(f"model spec {old!r} is deprecated; write {new!r} (see ieadapt_interp.models.specs).",
                  DeprecationWarning, stacklevel=4)


def canonical_spec(spec: Any) -> str | None:
    """``spec`` in its one spelling: ``None``, ``"tiny:<arch>"``, or a folder / hub id as text.

    Deprecated spellings are translated with a ``DeprecationWarning``; anything that is not a spec raises.
    """
    if spec is None:
        return None
    if isinstance(spec, (tuple, list)):
        if len(spec) == 2 and spec[0] == "tiny":
            new = f"{TINY}{spec[1]}"
            _deprecated(tuple(spec), new)
            return new
        raise IEAdaptValueError(f"a model spec tuple must be ('tiny', arch); got {spec!r}. Write 'tiny:<arch>'.")
    if not isinstance(spec, (str, os.PathLike)):
        raise IEAdaptTypeError(
            f"a model spec is None, 'tiny:<arch>', a folder or a hub id; got {type(spec).__name__}. "
            "(A pipeline object is used as it is where functions accept one.)"
        )
    text = os.fspath(spec)
    if text == "default":
        _deprecated(text, None)
        return None
    if text.startswith("tiny-") and not os.path.exists(text):
        new = TINY + text[len("tiny-"):]
        _deprecated(text, new)
        return new
    if text.startswith(TINY) and not text[len(TINY):]:
        raise IEAdaptValueError("'tiny:' needs an architecture, e.g. 'tiny:animatediff' or 'tiny:cogvideox'.")
    return text


def tiny_arch(spec: Any) -> str | None:
    """The architecture of a tiny-model spec (any spelling), else ``None``."""
    text = canonical_spec(spec) if not isinstance(spec, str) or not spec.startswith(TINY) else spec
    if isinstance(text, str) and text.startswith(TINY):
        return text[len(TINY):]
    return None


def resolve_model(name: str | os.PathLike | None = "default", **load_kwargs):
    """Deprecated alias (one release) of :func:`ieadapt_interp.load_pipeline`, which takes every spec."""
    from .pipelines import load_pipeline

    warnings.warn("resolve_model is deprecated; use ieadapt_interp.load_pipeline(spec).", DeprecationWarning,
                  stacklevel=2)
    with warnings.catch_warnings():  # one warning is enough: the name "default" is this function's default
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = canonical_spec(name)
    return load_pipeline(spec, **load_kwargs)
