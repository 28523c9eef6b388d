"""What a sweep computes: prompts × seeds × perturbations × metrics, checked, named and hashed.

A :class:`SweepConfig` is the normalised, validated description of a sweep. Its :attr:`~SweepConfig.hash`
identifies a store's contents: a store written under one hash refuses to be resumed under another.
Engine, batch size, progress bar and video saving are *not* part of it (they do not change what is
computed, only how).

Perturbation entries are *variants*: a tuple of :class:`~ieadapt_interp.Perturbation` applied together to
one sample (a single-layer perturbation is a 1-tuple). Entry 0 of the ``perturbation`` axis is always the
unperturbed ``baseline``. A :class:`~ieadapt_interp.Guidance` may stand where a perturbation does: its row
is the same prompt and seed generated with that quality guidance (run on its own, not batched).
An :class:`~ieadapt_interp.Edit` (method, ratio, step range, target prompt) may too: its row is the edit of the
generated source (the baseline of the same prompt and seed) to the edit's target; the edit rows of one (prompt, seed)
run in one batch with the source.

>>> import ieadapt_interp as ia
>>> cfg = SweepConfig.build(["a red circle"], {"t1:U": ia.uniform("temporal")}, seeds=[0, 1],
...                         metrics=["temporal_ssim"], generation={"num_frames": 4}, model="tiny:animatediff")
>>> cfg.shape, cfg.perturbation_names
((1, 2, 2, 1), ['baseline', 't1:U'])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..methods.guidance import Guidance
from ..methods.editing import Edit
from ..methods.perturbation import Perturbation
from .models import ModelSpec, model_key
from ..core.errors import IEAdaptTypeError, IEAdaptValueError

BASELINE = "baseline"

#: keys of ``generation=`` passed to :func:`ieadapt_interp.generate` (plus ``scheduler``, applied to the pipe).
GENERATION_KEYS = (
    "num_frames",
    "num_inference_steps",
    "guidance_scale",
    "height",
    "width",
    "negative_prompt",
    "branch",
    "scheduler",
)

PerturbationEntry = Perturbation | Guidance | Edit | Sequence[Perturbation]
PerturbationsArg = Sequence[PerturbationEntry] | Mapping[str, PerturbationEntry]


def _as_variant(entry: PerturbationEntry, where: str) -> tuple[Perturbation, ...]:
    if isinstance(entry, Guidance):  # a guidance row (IE-Adapt / PAG) next to the perturbations
        return (entry,)
    if isinstance(entry, Edit):  # an edit row (IE-Adapt editing or a baseline) of the generated source
        if entry.target is None:
            raise IEAdaptValueError(f"{where}: an Edit in a sweep needs its target prompt, Edit(target=...).")
        return (entry,)
    items = (entry,) if isinstance(entry, Perturbation) else tuple(entry)
    if not items or not all(isinstance(p, Perturbation) for p in items):
        raise IEAdaptTypeError(
            f"{where}: each perturbation must be an ieadapt_interp.Perturbation (or a non-empty list of "
            f"them applied together), e.g. ia.identity('spatial') or presets.single_layer(pipe); "
            f"got {entry!r}."
        )
    for p in items:
        p.to_dict()  # raises a clear error for predicates (where=), which cannot be stored or sent to Ray
    return items


def _check_metrics(metrics: Sequence[str], prompts: Sequence[str] = (), targets: Sequence[str] = ()) -> tuple[str, ...]:
    """Known, sweep-able metrics; a metric that scores only some prompts (``check_prompt``) sees every prompt.

    ``targets``: the target prompts of the sweep's edit rows; with any, editing metrics (``source_prompt``,
    ``target_prompt``) are allowed, and prompt-limited metrics see the targets too."""
    from ..metrics import get_metric

    if isinstance(metrics, str):
        metrics = [metrics]
    names = tuple(dict.fromkeys(metrics))
    if not names:
        raise IEAdaptValueError(
            "metrics is empty: name at least one, e.g. metrics=['ssim', 'temporal_ssim', "
            "'flow_magnitude'] (see ieadapt_interp.metrics.METRICS)."
        )
    for name in names:
        metric = get_metric(name)  # ValueError naming the closest valid metric
        unsupported = set(metric.needs) - {"video", "reference", "prompt"}
        if targets:
            unsupported -= {"source_prompt", "target_prompt"}
        if unsupported:
            raise IEAdaptValueError(
                f"metric {name!r} needs {sorted(unsupported)}, which a perturbation sweep does not have "
                "(it is an editing metric); drop it from metrics=."
            )
        for prompt in (*prompts, *targets) if metric.check_prompt else ():  # e.g. the toy attribute checks
            metric.check_prompt(prompt)
    return names


def _check_prompts(prompts: Sequence[str]) -> tuple[str, ...]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = tuple(prompts)
    if not prompts:
        raise IEAdaptValueError(
            "prompts is empty: give at least one text prompt, e.g. prompts=['a red circle moving left']."
        )
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise IEAdaptValueError(f"prompt #{i} is {p!r}: every prompt must be a non-empty string.")
    dup = sorted({p for p in prompts if prompts.count(p) > 1})
    if dup:
        raise IEAdaptValueError(
            f"duplicate prompts {dup}: each prompt labels one row of the results; list it once "
            "(use more seeds for repeats)."
        )
    return prompts


def _check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, int):
        seeds = [seeds]
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise IEAdaptValueError("seeds is empty: give at least one integer seed, e.g. seeds=[42].")
    if len(set(seeds)) != len(seeds):
        raise IEAdaptValueError(f"duplicate seeds in {list(seeds)}: list each seed once.")
    return seeds


def _check_generation(generation: Mapping[str, Any] | None) -> dict[str, Any]:
    generation = dict(generation or {})
    generation.pop("seed", None)  # a preset's seed is a default for seeds=, handled by the caller
    unknown = sorted(set(generation) - set(GENERATION_KEYS))
    if unknown:
        raise IEAdaptValueError(
            f"unknown generation setting(s) {unknown}; allowed: {list(GENERATION_KEYS)} (seeds go in seeds=)."
        )
    return generation


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep description (see module docstring). Build it with :meth:`build`."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    names: tuple[str | None, ...]  # user-given perturbation names (None = derive from the resolved layers)
    variants: tuple[tuple[Perturbation, ...], ...]
    metrics: tuple[str, ...]
    generation: dict[str, Any] = field(hash=False)
    model: str = "in-memory"
    resolved_names: tuple[str, ...] | None = field(default=None, compare=False)

    @classmethod
    def build(
        cls,
        prompts: Sequence[str],
        perturbations: PerturbationsArg,
        *,
        seeds: Sequence[int] | None = None,
        metrics: Sequence[str] = ("ssim", "temporal_ssim", "flow_magnitude"),
        generation: Mapping[str, Any] | None = None,
        model: ModelSpec | Any = None,
    ) -> SweepConfig:
        """Check every argument (no model needed) and return the config; errors say what to change."""
        if seeds is None:
            seeds = [int((generation or {}).get("seed", 0))]
        if isinstance(perturbations, Mapping):
            names: tuple[str | None, ...] = tuple(str(k) for k in perturbations)
            entries = list(perturbations.values())
        elif isinstance(perturbations, (Perturbation, Guidance, Edit)):
            names, entries = (None,), [perturbations]
        else:
            entries = list(perturbations)
            names = (None,) * len(entries)
        variants = tuple(_as_variant(e, f"perturbation #{i}") for i, e in enumerate(entries))
        if BASELINE in names:
            raise IEAdaptValueError(f"{BASELINE!r} is reserved for the unperturbed run; rename that perturbation.")
        prompts = _check_prompts(prompts)
        return cls(
            prompts,
            _check_seeds(seeds),
            names,
            variants,
            _check_metrics(metrics, prompts, tuple(v[0].target for v in variants if isinstance(v[0], Edit))),
            _check_generation(generation),
            model_key(model),
        )

    # -- identity -------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Everything that determines the results, as JSON-able data (hashed into :attr:`hash`)."""
        return {
            "model": self.model,
            "prompts": list(self.prompts),
            "seeds": list(self.seeds),
            "perturbations": [
                {"name": n, "variant": [p.to_dict() for p in v]} for n, v in zip(self.names, self.variants)
            ],
            "metrics": list(self.metrics),
            "generation": {k: self.generation[k] for k in sorted(self.generation)},
        }

    @property
    def hash(self) -> str:
        """sha256 (16 hex digits) of :meth:`to_json`."""
        blob = json.dumps(self.to_json(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # -- shape ----------------------------------------------------------------------------------------------
    @property
    def perturbation_names(self) -> list[str]:
        """Labels of the ``perturbation`` axis, ``baseline`` first (auto-names need :meth:`with_names`)."""
        names = self.resolved_names or tuple(n or f"#{i}" for i, n in enumerate(self.names))
        return [BASELINE, *names]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(prompt, seed, perturbation incl. baseline, metric)``."""
        return (len(self.prompts), len(self.seeds), len(self.variants) + 1, len(self.metrics))

    def with_names(self, names: Sequence[str]) -> SweepConfig:
        from dataclasses import replace

        names = tuple(names)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise IEAdaptValueError(
                f"perturbation names {dup} occur more than once; pass a dict {{name: perturbation}} "
                "with unique names."
            )
        return replace(self, resolved_names=names)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`ieadapt_interp.generate` (without prompt / seed / scheduler)."""
        return {k: v for k, v in self.generation.items() if k != "scheduler"}
