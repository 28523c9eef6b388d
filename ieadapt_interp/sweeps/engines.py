"""Where sweep tasks run: in this process (``local``) or on Ray actors (``ray``), one per GPU.

Both engines take tasks from the same :class:`Schedule` and run them with the same
:class:`~.worker.Worker` code, so for the same batch size they compute identical numbers. Results always
come back to the driver (this process), which alone writes the store.

* ``LocalEngine`` — one :class:`Worker` in this process; perturbation variants of one (prompt, seed) are
  batched ``batch_size`` at a time into one forward pass.
* ``RayEngine`` — ``actors`` Ray actors (default: one per GPU of the cluster, one on a CPU-only cluster),
  each building its own pipeline from a picklable model spec (or receiving a small in-memory pipeline
  through the object store); up to ``max_in_flight`` tasks queued per actor.

>>> engine = make_engine("local", ("tiny", "animatediff"), config, batch_size=4)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .config import SweepConfig
from .models import is_spec
from .worker import JobResult, Task, Worker
from ..core.errors import IEAdaptTypeError, IEAdaptValueError

Commit = Callable[[Task, list[JobResult]], None]


class Schedule:
    """The pending tasks of a sweep, given which jobs are already ``done``.

    Baselines come first; when a (prompt, seed)'s baseline is known, its perturbations are queued in
    fixed chunks of ``batch_size`` (positions on the perturbation axis, so the same jobs are batched
    together on every run and engine); jobs already done are left out of their chunk.
    """

    def __init__(
        self,
        config: SweepConfig,
        done: np.ndarray,
        batch_size: int,
        baseline_video: Callable[[int, int], np.ndarray],
    ):
        if batch_size < 1:
            raise IEAdaptValueError(f"batch_size must be ≥ 1 (variants per forward pass); got {batch_size}.")
        self.config, self.done, self.batch_size = config, done.copy(), int(batch_size)
        self.variants = [()] + [tuple(p.to_dict() for p in v) for v in config.variants]
        self.queue: deque[Task] = deque()
        for p, prompt in enumerate(config.prompts):
            for s, seed in enumerate(config.seeds):
                if not self.done[p, s, 0]:
                    self.queue.append(Task(p, s, prompt, seed, (0,), ((),)))
                elif not self.done[p, s, 1:].all():
                    self._add_chunks(p, s, baseline_video(p, s))

    @property
    def total(self) -> int:
        return int(self.done.size)

    @property
    def finished(self) -> int:
        return int(self.done.sum())

    def _add_chunks(self, p: int, s: int, reference: np.ndarray) -> None:
        K = self.done.shape[2]
        chunks = []
        for start in range(1, K, self.batch_size):
            pending = tuple(
                k for k in range(start, min(start + self.batch_size, K)) if not self.done[p, s, k]
            )
            if pending:
                chunks.append(
                    Task(
                        p,
                        s,
                        self.config.prompts[p],
                        self.config.seeds[s],
                        pending,
                        tuple(self.variants[k] for k in pending),
                        reference,
                    )
                )
        self.queue.extendleft(reversed(chunks))  # depth first: finish a (prompt, seed) before the next

    def next(self) -> Task | None:
        return self.queue.popleft() if self.queue else None

    def completed(self, task: Task, results: list[JobResult]) -> None:
        for r in results:
            self.done[r.key] = True
        if task.is_baseline:
            self._add_chunks(task.prompt_index, task.seed_index, results[0].video)


class LocalEngine:
    """Runs every task in this process, one batched forward pass per task."""

    name = "local"

    def __init__(self, model: Any, config: SweepConfig):
        self.worker = Worker(model, config.generation, config.metrics, prompts=config.prompts)

    def describe(self, variants: Sequence[Sequence[dict]]) -> list[dict]:
        return self.worker.describe(variants)

    def run(self, schedule: Schedule, commit: Commit) -> None:
        while (task := schedule.next()) is not None:
            results = self.worker.run(task)
            commit(task, results)
            schedule.completed(task, results)

    def close(self) -> None:
        pass


class RayEngine:
    """Runs tasks on Ray actors, each holding one pipeline (see module docstring).

    Parameters
    ----------
    address
        Ray cluster address (``"auto"`` to join a running cluster); default: an already initialised
        Ray, else ``$RAY_ADDRESS``, else a new local instance.
    actors
        Number of actors; default one per GPU in the cluster (one on a CPU-only cluster).
    max_in_flight
        Tasks queued per actor (2 keeps each GPU busy while the driver writes results).
    """

    name = "ray"

    def __init__(
        self,
        model: Any,
        config: SweepConfig,
        *,
        address: str | None = None,
        actors: int | None = None,
        max_in_flight: int = 2,
    ):
        try:
            import ray
        except ImportError as error:  # pragma: no cover - ray is a dependency
            raise ImportError("engine='ray' needs Ray: pip install 'ray[default]'.") from error
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            ray.init(
                address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False
            )
            self._started = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        n = int(actors or max(gpus, 1))
        if gpus:
            options = {"num_gpus": 1, "num_cpus": 1}
            device, threads = "cuda", None
        else:
            threads = max(1, int(resources.get("CPU", 1)) // n)
            options = {"num_gpus": 0, "num_cpus": threads}
            device = None
        model_ref = model if is_spec(model) else ray.put(model)
        remote = ray.remote(_RayWorker)
        self.actors = [
            remote.options(**options).remote(
                model_ref, config.generation, config.metrics, device, threads, config.prompts
            )
            for _ in range(n)
        ]
        self.max_in_flight = max(1, int(max_in_flight))

    def describe(self, variants: Sequence[Sequence[dict]]) -> list[dict]:
        return self.ray.get(self.actors[0].describe.remote(list(variants)))

    def run(self, schedule: Schedule, commit: Commit) -> None:
        ray = self.ray
        in_flight: dict[Any, tuple[int, Task]] = {}
        load = [0] * len(self.actors)
        while True:
            while min(load) < self.max_in_flight and schedule.queue:
                a = int(np.argmin(load))
                task = schedule.next()
                in_flight[self.actors[a].run.remote(task)] = (a, task)
                load[a] += 1
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            a, task = in_flight.pop(ready[0])
            load[a] -= 1
            results = ray.get(ready[0])
            commit(task, results)
            schedule.completed(task, results)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self._started:
            self.ray.shutdown()


class _RayWorker(Worker):
    """A :class:`Worker` living in a Ray actor (limits torch's CPU threads to the actor's CPUs)."""

    def __init__(self, model, generation, metrics, device=None, threads=None, prompts=()):
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        super().__init__(model, generation, metrics, device=device, prompts=prompts)


def make_engine(engine: str, model: Any, config: SweepConfig, **options):
    """``"local"`` → :class:`LocalEngine`; ``"ray"`` → :class:`RayEngine` (``options``: address, actors, …)."""
    if engine == "local":
        if options:
            raise IEAdaptTypeError(f"engine='local' takes no engine options; got {sorted(options)}.")
        return LocalEngine(model, config)
    if engine == "ray":
        return RayEngine(model, config, **options)
    raise IEAdaptValueError(f"unknown engine {engine!r}; choose 'local' (this process) or 'ray' (a Ray cluster).")
