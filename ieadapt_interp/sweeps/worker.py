"""The unit of sweep work: a :class:`Task` (one baseline, or a batch of perturbation variants of one
(prompt, seed)) run by a :class:`Worker` that holds the pipeline. Both engines use it unchanged, so the
local and Ray engines compute the same numbers for the same tasks.

A batch task runs its variants in **one** batched forward pass (``generate(variants=...)``), sharing the
prompt and the initial noise; metrics compare each variant with the baseline video of its (prompt, seed).

>>> worker = Worker("tiny:animatediff", {"num_frames": 4, "height": 16, "width": 16,
...                 "num_inference_steps": 2}, ("temporal_ssim",))          # doctest: +SKIP
>>> [r.key for r in worker.run(Task(0, 0, "a red circle", 0, (0,), ((),)))]  # doctest: +SKIP
[(0, 0, 0)]
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .models import build_pipeline, is_spec
from ..core.errors import IEAdaptValueError


@dataclass(frozen=True)
class Task:
    """Jobs of one (prompt, seed) run together.

    ``perturbations``: indices on the sweep's perturbation axis (``(0,)`` = the baseline, run alone with
    attention capture); ``variants``: their serialised perturbations (``Perturbation.to_dict()`` lists);
    ``reference``: the baseline video ``uint8 [frame, H, W, 3]`` (``None`` for the baseline task).
    """

    prompt_index: int
    seed_index: int
    prompt: str
    seed: int
    perturbations: tuple[int, ...]
    variants: tuple[tuple[dict, ...], ...]
    reference: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def is_baseline(self) -> bool:
        return self.perturbations == (0,)


@dataclass
class JobResult:
    """One finished job: ``key = (prompt_index, seed_index, perturbation_index)``.

    ``values[m]`` is metric ``m`` (NaN when missing, with ``reasons[m]`` saying why, else ``""``);
    ``video`` uint8 ``[frame, H, W, 3]``; ``stats`` the baseline's attention statistics
    (``xr.Dataset`` over step, layer, head, frame) for the baseline job only; ``seconds`` the wall time of
    the task divided by its number of jobs.
    """

    key: tuple[int, int, int]
    values: list[float]
    reasons: list[str]
    video: np.ndarray
    seconds: float
    stats: Any = None


SCHEDULERS = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "pndm": "PNDMScheduler",
}


def set_scheduler(pipe, name: str | None) -> None:
    """Replace ``pipe.scheduler`` by the named diffusers scheduler built from its config (``None``: keep)."""
    if name is None:
        return
    key = str(name).lower().replace("-", "_").replace(" ", "_")
    if key not in SCHEDULERS:
        raise IEAdaptValueError(
            f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)} (or leave it out to keep "
            "the pipeline's own)."
        )
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[key])
    if type(pipe.scheduler) is not cls:
        pipe.scheduler = cls.from_config(pipe.scheduler.config)


def _lam(perts) -> float:
    """λ on the I↔U (mix) or A↔U (scale) axis: identity = 1, uniform = 0; NaN when variants disagree."""
    lams = {
        1.0 if p.replacement == "identity" else 0.0 if p.replacement == "uniform" else p.lam for p in perts
    }
    return lams.pop() if len(lams) == 1 else math.nan


def _is_edit(variant) -> bool:
    """Whether a serialised variant is an :class:`~ieadapt_interp.Edit` row (``[{"edit": …}]``)."""
    return len(variant) == 1 and isinstance(variant[0], Mapping) and "edit" in variant[0]


def _is_guidance(variant) -> bool:
    """Whether a serialised variant is a :class:`~ieadapt_interp.Guidance` row (``[{"guidance": …}]``)."""
    return len(variant) == 1 and isinstance(variant[0], Mapping) and "guidance" in variant[0]


class Worker:
    """Holds a pipeline and runs :class:`Task` objects.

    Parameters
    ----------
    model
        A pipeline object, or a spec (see :mod:`.models`) built here — in a Ray actor, on its GPU.
    generation
        Settings for :func:`ieadapt_interp.generate` (``num_frames``, ``num_inference_steps``,
        ``guidance_scale``, ``height``, ``width``, ``negative_prompt``, ``branch``, ``scheduler``).
    metrics
        Registry names, computed per job with the baseline video as reference.
    prompts
        The sweep's prompts (already checked by :class:`~.config.SweepConfig`); the first is the dry run's prompt, so that
        metrics scoring only some prompts (toy attribute checks) accept it.
    """

    def __init__(
        self,
        model: Any,
        generation: Mapping[str, Any],
        metrics: Sequence[str],
        device: str | None = None,
        prompts: Sequence[str] = (),
    ):
        if is_spec(model):
            self.pipe = build_pipeline(model, device)
        else:  # a pipeline object (in a Ray actor: a copy); ``device`` moves it onto the actor's GPU
            self.pipe = model if device is None else model.to(device)
        generation = dict(generation)
        set_scheduler(self.pipe, generation.pop("scheduler", None))
        self.generation = generation
        self.metrics = tuple(metrics)
        self.prompts = tuple(prompts) or ("a test",)
        self.device = str(getattr(self.pipe, "_execution_device", "cpu"))

    def placement(self) -> dict[str, str]:
        """Where this worker runs: ``{"device": "cuda:0", "visible_gpus": "1"}`` (``CUDA_VISIBLE_DEVICES`` as Ray
        sets it for an actor's GPU; empty when unset)."""
        import os

        return {"device": self.device, "visible_gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

    def attention_layers(self):
        """:func:`ieadapt_interp.attention_layers` of the held pipeline (a DataFrame)."""
        from ..core.adapters import attention_layers

        return attention_layers(self.pipe)

    def layer_table(self):
        """Deprecated alias (one release) of :meth:`attention_layers`."""
        import warnings

        warnings.warn("Worker.layer_table is deprecated; use Worker.attention_layers.", DeprecationWarning, stacklevel=2)
        return self.attention_layers()

    def describe(self, variants: Sequence[Sequence[dict]]) -> list[dict]:
        """Check the metrics (:meth:`check_metrics`) and resolve every variant's layers (KeyError /
        ValueError for unknown ones) → one dict of perturbation coordinates per variant."""
        from ..methods.perturbation import Perturbation

        self.check_metrics()
        variants = list(variants)
        guided = {i: self._describe_guidance(v[0]) for i, v in enumerate(variants) if _is_guidance(v)}
        guided.update({i: self._describe_edit(v[0]) for i, v in enumerate(variants) if _is_edit(v)})
        variants = [() if i in guided else v for i, v in enumerate(variants)]

        table = self.attention_layers().set_index("name", drop=False)
        out = []
        for i, variant in enumerate(variants):
            if i in guided:
                out.append(guided[i])
                continue
            perts = [Perturbation.from_dict(d) for d in variant]
            names = list(
                dict.fromkeys(n for p in perts for n in p.layers.resolve(table.reset_index(drop=True)))
            )
            rows = table.loc[names]
            labels = sorted({p.label for p in perts})
            out.append(
                {
                    "layer": names[0] if len(names) == 1 else ";".join(names),
                    "kind": "+".join(dict.fromkeys(rows["kind"])),
                    "block": "+".join(dict.fromkeys(rows["block"])),
                    "index": int(rows["index"].iloc[0]) if len(names) == 1 else -1,
                    "n_layers": len(names),
                    "replacement": "+".join(sorted({p.replacement for p in perts})),
                    "lam": _lam(perts),
                    "label": "+".join(labels),
                }
            )
        return out

    def _describe_edit(self, data: dict) -> dict:
        """Coordinates of an edit row (fixed / overriding layers checked on the held pipeline)."""
        from ..methods.editing import Edit, _check_layers

        edit = Edit.from_dict(data)
        _check_layers(self.pipe, edit)
        names = list(edit.layers or ())
        return {"layer": ";".join(names), "kind": "edit", "block": "", "index": -1, "n_layers": len(names),
                "replacement": f"edit:{edit.method}", "lam": edit.ratio, "label": f"{edit.label} → {edit.target}"}

    def _describe_guidance(self, data: dict) -> dict:
        """Coordinates of a guidance row (its layers resolved on the held pipeline; bad input raises)."""
        from ..methods.guidance import Guidance

        guidance = Guidance.from_dict(data)
        names = guidance.resolve(self.pipe)
        rows = self.attention_layers().set_index("name", drop=False).loc[names]
        return {
            "layer": ";".join(names),
            "kind": "+".join(dict.fromkeys(rows["kind"])),
            "block": "+".join(dict.fromkeys(rows["block"])),
            "index": int(rows["index"].iloc[0]) if len(names) == 1 else -1,
            "n_layers": len(names),
            "replacement": "guidance",
            "lam": guidance.scale if isinstance(guidance.scale, float) else math.nan,
            "label": guidance.label,
        }

    def check_metrics(self) -> None:
        """Compute every metric once on a black video of the sweep's size; raise (before any work) if one
        cannot take such videos (e.g. ``lpips`` needs ≥ 32×32 px). Missing weights are fine (recorded later)."""
        from ..core.adapters import get_adapter
        from ..metrics import compute_metrics

        default_h, default_w = get_adapter(self.pipe).default_size(self.pipe)
        shape = (
            int(self.generation.get("num_frames", 16)),
            int(self.generation.get("height") or default_h),
            int(self.generation.get("width") or default_w),
            3,
        )
        video = np.zeros(shape, np.uint8)
        try:
            compute_metrics(
                self.metrics,
                video,
                reference=video,
                prompt=self.prompts[0],
                source_prompt=self.prompts[0],
                target_prompt=self.prompts[0],
                on_missing="nan",
                reasons={},
                device=self.device,
            )
        except ValueError as error:
            raise IEAdaptValueError(
                f"metrics {list(self.metrics)} cannot be computed on {shape[0]}-frame {shape[1]}×{shape[2]} "
                f"videos: {error}. Drop that metric or change the generation size."
            ) from error

    def run(self, task: Task) -> list[JobResult]:
        """Run one task → one :class:`JobResult` per job, in ``task.perturbations`` order."""
        from ..metrics import compute_metrics
        from ..methods.perturbation import Perturbation
        from ..methods.tracing import generate

        start = time.perf_counter()
        kwargs = dict(self.generation, seed=task.seed)
        if task.is_baseline:
            result = generate(self.pipe, task.prompt, capture=True, **kwargs)
            videos, stats = result.videos, result.stats
        else:
            from ..methods.guidance import Guidance

            plain = [i for i, v in enumerate(task.variants) if not _is_guidance(v) and not _is_edit(v)]
            edited = [i for i, v in enumerate(task.variants) if _is_edit(v)]
            videos, stats = [None] * len(task.variants), None
            if plain:  # perturbation variants: one batched forward
                specs = [[Perturbation.from_dict(d) for d in task.variants[i]] for i in plain]
                for i, video in zip(plain, generate(self.pipe, task.prompt, variants=specs, **kwargs).videos):
                    videos[i] = video
            if edited:  # edit rows: the generated source and every target in one batch
                from ..methods.editing import Edit, edit_many

                edits = [Edit.from_dict(task.variants[i][0]) for i in edited]
                done = edit_many(self.pipe, task.seed, task.prompt, edits,
                                 **{k: v for k, v in kwargs.items() if k not in ("seed", "branch")})
                for i, result in zip(edited, done):
                    videos[i] = result.video
            for i, variant in enumerate(task.variants):  # guidance rows: one run each
                if _is_guidance(variant):
                    videos[i] = generate(self.pipe, task.prompt, guidance=Guidance.from_dict(variant[0]),
                                         **kwargs).video
        seconds = (time.perf_counter() - start) / len(task.perturbations)
        results = []
        for j, (k, video) in enumerate(zip(task.perturbations, videos)):
            reference = video if task.is_baseline else task.reference
            # an edit row is scored against its target prompt (source_prompt: the sweep's prompt)
            target = task.variants[j][0]["edit"]["target"] if _is_edit(task.variants[j]) else task.prompt
            reasons: dict[str, str] = {}
            values = compute_metrics(
                self.metrics,
                video,
                reference=reference,
                prompt=target,
                source_prompt=task.prompt,
                target_prompt=target,
                on_missing="nan",
                reasons=reasons,
                device=self.device,
            )
            results.append(
                JobResult(
                    key=(task.prompt_index, task.seed_index, k),
                    values=[float(values[m]) for m in self.metrics],
                    reasons=[reasons.get(m, "") for m in self.metrics],
                    video=np.ascontiguousarray(video),
                    seconds=seconds,
                    stats=stats,
                )
            )
        return results
