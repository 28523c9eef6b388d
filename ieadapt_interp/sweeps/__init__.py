"""Perturbation sweeps: baseline + every (prompt, seed, perturbation) → metrics in a resumable zarr store.

Modules, one concept each:

* :mod:`.config` — :class:`SweepConfig`: the checked, hashed description of what is computed;
* :mod:`.models` — model specs a worker (or Ray actor) builds its pipeline from;
* :mod:`.worker` — :class:`Task` / :class:`Worker`: one batched forward pass + metrics;
* :mod:`.engines` — ``local`` and ``ray`` execution, fed by a :class:`Schedule`;
* :mod:`.store` — the zarr layout and its SIGKILL-safe write protocol;
* :mod:`.media` — optional per-job mp4 / GIF;
* :mod:`.tables` — reading a sweep table: the baseline, metric changes, per-layer / per-perturbation summaries;
* :mod:`.run` — :func:`sweep` and :func:`open_sweep`.

>>> import ieadapt_interp as ia
>>> from ieadapt_interp.sweeps import presets
>>> from ieadapt_interp.sweeps import sweep
>>> pipe = ia.tiny_pipeline("animatediff")
>>> ds = sweep(pipe, ["a red circle"], presets.single_layer(pipe, kinds=("spatial",)),
...            metrics=["ssim", "temporal_ssim"], store="runs/spatial.zarr",
...            generation=dict(num_frames=4, height=16, width=16, num_inference_steps=2))  # doctest: +SKIP
"""

from .config import BASELINE, SweepConfig
from .engines import LocalEngine, RayEngine, Schedule
from .models import build_pipeline, model_key
from .run import open_sweep, sweep
from .store import StoreMismatchError, SweepStore
from .worker import JobResult, Task, Worker

__all__ = [
    "BASELINE",
    "JobResult",
    "LocalEngine",
    "RayEngine",
    "Schedule",
    "StoreMismatchError",
    "SweepConfig",
    "SweepStore",
    "Task",
    "Worker",
    "build_pipeline",
    "model_key",
    "open_sweep",
    "sweep",
]
