"""The sweep itself: :func:`sweep` runs baseline + every (prompt, seed, perturbation) into a store;
:func:`open_sweep` reads a store back.

>>> import ieadapt_interp as ia
>>> from ieadapt_interp.sweeps import sweep
>>> pipe = ia.tiny_pipeline("animatediff")
>>> ds = sweep(pipe, ["a red circle"], {"temporal:U": ia.uniform("temporal")}, metrics=["temporal_ssim"],
...            store="/tmp/demo.zarr", generation=dict(num_frames=4, height=16, width=16,
...            num_inference_steps=2), progress=False)                        # doctest: +SKIP
>>> ds.value.sel(metric="temporal_ssim").dims                                 # doctest: +SKIP
('prompt', 'seed', 'perturbation')
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr

from .config import PerturbationsArg, SweepConfig
from .engines import Schedule, make_engine
from .store import SweepStore
from .worker import JobResult, Task
from ..core.errors import IEAdaptValueError


def _auto_name(given: str | None, coord: dict) -> str:
    if given:
        return given
    if coord["n_layers"] == 1:
        return f"{coord['kind']}.{coord['index']}:{coord['label']}"
    return f"{coord['kind']}[{coord['n_layers']}]:{coord['label']}"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def sweep(
    pipe: Any,
    prompts: Sequence[str],
    perturbations: PerturbationsArg,
    seeds: Sequence[int] | None = None,
    metrics: Sequence[str] = ("ssim", "temporal_ssim", "flow_magnitude"),
    *,
    store: str | os.PathLike,
    engine: str = "local",
    batch_size: int = 4,
    save_videos: bool = False,
    generation: Mapping[str, Any] | None = None,
    progress: bool = True,
    engine_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Run the unperturbed baseline and every (prompt, seed, perturbation); write each job to ``store``.

    Parameters
    ----------
    pipe
        A pipeline object, or a model spec each worker builds (``None`` = the embedded toy model,
        ``("tiny", "animatediff")``, a local model folder; see :mod:`ieadapt_interp.sweeps.models`).
        For ``engine="ray"`` on a real model pass a spec, so every actor loads it on its own GPU.
    prompts
        Non-empty list of distinct prompts.
    perturbations
        A list of :class:`~ieadapt_interp.Perturbation` (or of lists applied together), or a dict
        ``{name: perturbation}``; :mod:`ieadapt_interp.sweeps.presets` builds the paper's sets.
    seeds
        Default: ``generation["seed"]`` if present, else ``(0,)``.
    metrics
        Registry names (:data:`ieadapt_interp.metrics.METRICS`); reference metrics (``ssim``, ``lpips``)
        compare with the baseline video of the same (prompt, seed). Learned metrics without local
        weights are stored as NaN with ``missing_reason``; the run continues.
    store
        A folder (zarr v3 group; its non-array files go to the sibling ``STORE-files``). Re-running the same
        call resumes it: finished jobs are kept, the rest computed. A store written by a different
        configuration, or one that cannot be read (:class:`~ieadapt_interp.sweeps.store.StoreCorruptError`),
        raises before any work and is left as it was.
    engine
        ``"local"`` (this process) or ``"ray"`` (``engine_options``: ``address``, ``actors``,
        ``max_in_flight``).
    batch_size
        Perturbation variants of one (prompt, seed) per forward pass.
    save_videos
        Also write every job's video to ``store/videos/`` (mp4 with imageio-ffmpeg, else GIF).
    generation
        :func:`ieadapt_interp.generate` settings: ``num_frames``, ``num_inference_steps``,
        ``guidance_scale``, ``height``, ``width``, ``negative_prompt``, ``branch``, and ``scheduler``
        (e.g. ``"euler"``); :data:`ieadapt_interp.sweeps.presets.PAPER_ANIMATEDIFF` and friends.
    progress
        Show a tqdm progress bar with ETA.

    Returns
    -------
    xr.Dataset
        ``value [prompt, seed, perturbation, metric]`` (+ ``missing_reason``, ``done``, ``seconds``,
        ``finished_at``, ``session``); ``perturbation`` (``baseline`` first) carries the coordinates
        ``layer``, ``kind``, ``block``, ``index``, ``n_layers``, ``replacement``, ``lam``, ``label``.
    """
    config = SweepConfig.build(
        prompts, perturbations, seeds=seeds, metrics=metrics, generation=generation, model=pipe
    )
    existing = SweepStore.check(store, config)  # StoreMismatchError before any work
    if engine not in ("local", "ray"):
        raise IEAdaptValueError(
            f"unknown engine {engine!r}; choose 'local' (this process) or 'ray' (a Ray cluster)."
        )
    if int(batch_size) < 1:
        raise IEAdaptValueError(f"batch_size must be ≥ 1 (variants per forward pass); got {batch_size}.")
    runner = make_engine(engine, pipe, config, **dict(engine_options or {}))
    try:
        coords = runner.describe(
            [[p.to_dict() for p in v] for v in config.variants]
        )  # unknown layers raise here
        config = config.with_names(_unique([_auto_name(n, c) for n, c in zip(config.names, coords)]))
        baseline = {
            "layer": "",
            "kind": "",
            "block": "",
            "index": -1,
            "n_layers": 0,
            "replacement": "none",
            "lam": float("nan"),
            "label": "baseline",
        }
        target = existing or SweepStore.create(store, config, [baseline, *coords])
        target.clean_temporaries()
        schedule = Schedule(config, target.done(), batch_size, target.baseline_video)
        labels = config.perturbation_names
        session = time.time_ns()

        from tqdm.auto import tqdm

        with tqdm(
            total=schedule.total,
            initial=schedule.finished,
            disable=not progress,
            unit="job",
            desc=f"sweep ({engine})",
            dynamic_ncols=True,
        ) as bar:

            def commit(task: Task, results: list[JobResult]) -> None:
                for result in results:
                    target.write(result, session, labels[result.key[2]], save_videos)
                    bar.update(1)

            runner.run(schedule, commit)
    finally:
        runner.close()
    return target.dataset()


def open_sweep(store: str | os.PathLike, *, load: bool = True) -> xr.Dataset:
    """Read a sweep store (finished or not) as an ``xr.Dataset``; ``done`` says which jobs are valid.

    The store is checked first: a damaged one raises :class:`~ieadapt_interp.sweeps.store.StoreCorruptError`
    naming the store and what to do.

    >>> ds = open_sweep("runs/sweep.zarr")                      # doctest: +SKIP
    >>> ds.value.where(ds.done).sel(metric="ssim").mean("seed")  # doctest: +SKIP
    """
    return SweepStore(store).dataset(load=load)
