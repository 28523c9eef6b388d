"""Calibration (paper Eq. 3): each self-attention layer's mean entropy over a prompt set, and ``l*``.

:func:`calibrate` traces ``pipe`` on every (prompt, seed), reduces each run's statistics to one mean
normalised entropy per layer with the stats accessor (``ds.ieadapt.layer_entropy()``: mean over steps,
heads and frames, in percent of the maximum ``log N``), and averages the runs. The result is a small,
serialisable :class:`Registry`: the model's identity and fingerprint, per-layer entropy, and
``l* = argmax_l H̄(A_l)`` with top-k, lowest-k and per-kind variants. Cross-attention layers are never
candidates. It saves as JSON next to results and reloads; the embedded model's registry ships with the
package (:func:`default_registry`).

>>> import ieadapt_interp as ia
>>> pipe = ia.tiny_pipeline()
>>> reg = calibrate(pipe, ["a red circle"], num_frames=2, height=16, width=16, num_inference_steps=1,
...                 progress=False)
>>> reg.l_star == reg.top(1)[0], sorted(set(reg.kinds))
(True, ['spatial', 'temporal'])
>>> Registry.from_dict(reg.to_dict()) == reg
True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..core.adapters import attention_layers, get_adapter
from ..core.errors import IEAdaptFileNotFoundError, IEAdaptValueError
from ..core.layers import Layers

SELF_ATTENTION = ("spatial", "temporal", "joint")
TOY_REGISTRY = Path(__file__).resolve().parents[1] / "models" / "toy" / "registry.json"


def fingerprint(pipe) -> str:
    """16 hex digits identifying ``pipe``'s architecture: its layer table and denoiser config.

    Weights are not hashed: a fine-tune of the same architecture has the same fingerprint.

    >>> import ieadapt_interp as ia
    >>> fingerprint(ia.tiny_pipeline()) == fingerprint(ia.tiny_pipeline(seed=1))
    True
    """
    adapter = get_adapter(pipe)
    denoiser = getattr(pipe, adapter.denoiser_attr)
    table = attention_layers(pipe)[["name", "kind", "heads"]].values.tolist()
    config = {k: v for k, v in dict(denoiser.config).items() if not str(k).startswith("_")}
    blob = json.dumps([adapter.name, type(denoiser).__name__, table, config], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_name(pipe) -> str:
    """``Pipeline/Denoiser (source folder name)``: a readable model identity."""
    adapter = get_adapter(pipe)
    denoiser = getattr(pipe, adapter.denoiser_attr)
    source = getattr(pipe, "name_or_path", None) or getattr(denoiser.config, "_name_or_path", "") or "in-memory"
    return f"{type(pipe).__name__}/{type(denoiser).__name__} ({Path(str(source)).name or source})"


@dataclass(frozen=True)
class Registry:
    """Per-layer mean entropy of one model's self-attention layers and the choices derived from it.

    ``layers``, ``kinds``, ``indices``, ``entropy_pct`` are parallel, in forward order; ``entropy_pct`` is
    ``H̄(A_l)`` in percent of the maximum (NaN where undefined, e.g. a single key).
    """

    model: str
    fingerprint: str
    layers: tuple[str, ...]
    kinds: tuple[str, ...]
    indices: tuple[int, ...]
    entropy_pct: tuple[float, ...]
    prompts: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    settings: dict = field(default_factory=dict, compare=False)
    versions: str = field(default="", compare=False)

    def __eq__(self, other) -> bool:  # NaN-aware (NaN entropies of single-key layers)
        if not isinstance(other, Registry):
            return NotImplemented
        same = (self.model, self.fingerprint, self.layers, self.kinds, self.indices, self.prompts, self.seeds) == (
            other.model, other.fingerprint, other.layers, other.kinds, other.indices, other.prompts, other.seeds)
        return same and np.allclose(self.entropy_pct, other.entropy_pct, rtol=0, atol=0, equal_nan=True)

    __hash__ = None  # type: ignore[assignment]

    # -- choices ------------------------------------------------------------------------------------
    def _order(self, kind: str | None, descending: bool) -> list[str]:
        if kind is not None and kind not in self.kinds:
            raise IEAdaptValueError(f"No {kind!r} layers in this registry; kinds present: {sorted(set(self.kinds))}.")
        items = [(e, i) for i, (e, k) in enumerate(zip(self.entropy_pct, self.kinds))
                 if (kind is None or k == kind) and math.isfinite(e)]
        items.sort(key=lambda item: (-item[0] if descending else item[0], item[1]))
        return [self.layers[i] for _, i in items]

    def top(self, k: int = 1, kind: str | None = None) -> list[str]:
        """The ``k`` highest-entropy layers (of ``kind``), highest first."""
        return self._order(kind, True)[: int(k)]

    def lowest(self, k: int = 1, kind: str | None = None) -> list[str]:
        """The ``k`` lowest-entropy layers (of ``kind``), lowest first."""
        return self._order(kind, False)[: int(k)]

    def best(self, kind: str | None = None) -> str:
        """``l*`` among the layers of ``kind`` (all self-attention layers when ``None``)."""
        return self.top(1, kind)[0]

    @property
    def l_star(self) -> str:
        """``l* = argmax_l H̄(A_l)`` over every self-attention layer (paper Eq. 3)."""
        return self.best()

    def random_layer(self, seed: int = 0, kind: str | None = None, exclude: Sequence[str] = ()) -> str:
        """A layer drawn uniformly (seeded) among those of ``kind``, other than ``exclude`` — a control."""
        pool = [n for n in self._order(kind, True) if n not in set(exclude)]
        return pool[int(np.random.default_rng(seed).integers(len(pool)))]

    def as_layers(self, which: str = "l*", kind: str | None = None) -> Layers:
        """A :class:`~ieadapt_interp.Layers` for ``"l*"`` or ``"lowest"``."""
        name = {"l*": self.best, "lowest": lambda kind: self.lowest(1, kind)[0]}[which](kind)
        return Layers(names=(name,))

    def table(self) -> pd.DataFrame:
        """One row per layer: kind, index, entropy_pct, rank (1 = highest entropy), is_l_star."""
        df = pd.DataFrame({"kind": self.kinds, "index": self.indices, "entropy_pct": self.entropy_pct},
                          index=pd.Index(self.layers, name="layer"))
        df["rank"] = df["entropy_pct"].rank(ascending=False, method="first").astype("Int64")
        df["is_l_star"] = df.index == self.l_star
        return df

    def check(self, pipe) -> None:
        """Raise unless this registry was calibrated on ``pipe``'s architecture."""
        table = attention_layers(pipe)
        missing = [n for n in self.layers if n not in set(table["name"])]
        if missing or self.fingerprint != fingerprint(pipe):
            what = f"layer {missing[0]!r} is not a layer of this pipeline" if missing else "the fingerprints differ"
            raise IEAdaptValueError(
                f"This registry was calibrated on another model ({self.model}, fingerprint {self.fingerprint}): "
                f"{what}. Run ia.calibrate(pipe, prompts) on this pipeline.")

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "fingerprint": self.fingerprint, "l_star": self.l_star,
                "layers": [{"name": n, "kind": k, "index": i, "entropy_pct": None if not math.isfinite(e) else e}
                           for n, k, i, e in zip(self.layers, self.kinds, self.indices, self.entropy_pct)],
                "prompts": list(self.prompts), "seeds": list(self.seeds), "settings": dict(self.settings),
                "versions": self.versions}

    @classmethod
    def from_dict(cls, data: dict) -> "Registry":
        rows = data["layers"]
        return cls(data["model"], data["fingerprint"], tuple(r["name"] for r in rows), tuple(r["kind"] for r in rows),
                   tuple(int(r["index"]) for r in rows),
                   tuple(float("nan") if r["entropy_pct"] is None else float(r["entropy_pct"]) for r in rows),
                   tuple(data.get("prompts", ())), tuple(int(s) for s in data.get("seeds", ())),
                   dict(data.get("settings", {})), data.get("versions", ""))

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON to ``path`` (a folder, or a name without suffix, gets ``registry.json``); returns the file."""
        path = Path(path)
        if path.is_dir() or not path.suffix:  # a folder (made if needed) gets registry.json
            path = path / "registry.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Registry":
        """Read a registry written by :meth:`save` (a file, or a folder holding ``registry.json``)."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / "registry.json"
        if not path.is_file():
            raise IEAdaptFileNotFoundError(f"No registry at {path}; create one with ia.calibrate(pipe, prompts)"
                                           ".save(path).")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as error:
            raise IEAdaptValueError(f"{path} is not a registry written by Registry.save ({error}).") from None

    # -- figure -------------------------------------------------------------------------------------
    def plot(self, figsize: tuple[float, float] | None = None):
        """Bar chart of mean entropy % per layer, one panel per kind, ``l*`` of each kind marked. A Figure."""
        from matplotlib.figure import Figure

        table = self.table()
        kinds = [k for k in SELF_ATTENTION if k in set(self.kinds)]
        fig = Figure(figsize=figsize or (4.5 * len(kinds), 3.2))
        axes = fig.subplots(1, len(kinds), squeeze=False)
        for ax, kind in zip(axes[0], kinds):
            part = table[table["kind"] == kind]
            best = self.best(kind)
            colours = ["tab:red" if n == best else "tab:blue" for n in part.index]
            ax.bar(part["index"].astype(str), part["entropy_pct"], color=colours)
            ax.set_title(f"{kind}: mean entropy (red = l* of {kind})", fontsize=9)
            ax.set_xlabel(f"{kind} layer index")
            ax.set_ylabel("H̄ (% of max)")
            ax.set_ylim(0, 100)
        fig.suptitle(f"Calibration over {len(self.prompts)} prompt(s) × {len(self.seeds)} seed(s); "
                     f"overall l* = {self.kinds[self.layers.index(self.l_star)]} "
                     f"{self.indices[self.layers.index(self.l_star)]}", fontsize=9)
        fig.tight_layout()
        return fig


def calibrate(pipe, prompts: Sequence[str], *, seeds: Sequence[int] = (0,), kinds: Sequence[str] = SELF_ATTENTION,
              progress: bool = True, **generation) -> Registry:
    """Mean entropy of every self-attention layer of ``pipe`` over ``prompts`` × ``seeds`` → :class:`Registry`.

    ``generation``: :func:`~ieadapt_interp.generate` settings (``num_frames``, ``num_inference_steps``,
    ``guidance_scale``, ``height``, ``width``…). Each run's statistics are reduced by
    ``ds.ieadapt.layer_entropy()`` (mean over steps, heads, frames), then the runs are averaged with equal
    weight. ``kinds`` restricts the candidates; ``cross`` is refused (the paper never uses it).
    """
    from tqdm.auto import tqdm

    from ..core.versions import versions_string
    from .tracing import trace

    if isinstance(prompts, str):
        prompts = [prompts]
    prompts, seeds = tuple(prompts), tuple(int(s) for s in seeds)
    if not prompts or not seeds:
        raise IEAdaptValueError("calibrate needs at least one prompt and one seed.")
    kinds = tuple(kinds)
    if "cross" in kinds or not set(kinds) <= set(SELF_ATTENTION):
        raise IEAdaptValueError(f"Calibration covers self-attention only; kinds must be among {SELF_ATTENTION}, "
                                f"got {list(kinds)}.")
    table = attention_layers(pipe)
    candidates = table[table["kind"].isin(kinds)]
    if candidates.empty:
        raise IEAdaptValueError(f"This model has no attention layers of kinds {list(kinds)}.")
    layers = Layers(names=tuple(candidates["name"]))
    runs = []
    jobs = [(p, s) for p in prompts for s in seeds]
    for prompt, seed in tqdm(jobs, desc="calibrate", disable=not progress):
        stats = trace(pipe, prompt, seed=seed, layers=layers, **generation).stats
        runs.append(stats.ieadapt.layer_entropy().reindex(layer=list(candidates["name"])).values)
    with warnings.catch_warnings():  # a layer NaN in every run (a single key) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(np.stack(runs), axis=0)
    return Registry(model_name(pipe), fingerprint(pipe), tuple(candidates["name"]), tuple(candidates["kind"]),
                    tuple(int(i) for i in candidates["index"]), tuple(float(v) for v in mean), prompts, seeds,
                    {k: v for k, v in generation.items() if isinstance(v, (int, float, str, bool))},
                    versions_string())


def default_registry(pipe) -> Registry:
    """The shipped registry of ``pipe``'s model (the embedded toy model); an error for other models."""
    if TOY_REGISTRY.is_file():
        registry = Registry.load(TOY_REGISTRY)
        if registry.fingerprint == fingerprint(pipe):
            return registry
    raise IEAdaptValueError(
        "layers=None uses the model's registry l*, and only the embedded model ships one. Calibrate this model "
        "first: registry = ia.calibrate(pipe, prompts); then Guidance(..., layers=registry) (or name the layers).")


__all__ = ["Registry", "SELF_ATTENTION", "calibrate", "default_registry", "fingerprint", "model_name"]
