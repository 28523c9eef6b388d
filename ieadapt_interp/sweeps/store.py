"""The sweep's zarr store: preallocated arrays, one chunk per job, resumable after SIGKILL.

Layout of ``STORE`` (itself a zarr v3 group, so ``xr.open_zarr(STORE)`` works)::

    value           float64 [prompt, seed, perturbation, metric]  NaN until written / when missing
    missing_reason  str     [prompt, seed, perturbation, metric]  why a value is NaN ("" otherwise)
    done            bool    [prompt, seed, perturbation]          written LAST for each job
    seconds         float64 [prompt, seed, perturbation]          compute time of the job
    finished_at     float64 [prompt, seed, perturbation]          unix time the job was written
    session         int64   [prompt, seed, perturbation]          id of the run (process) that computed it
    baseline/p0000_s0000.npy                                      baseline video (reference for metrics)
    baseline_stats/p0000_s0000.zarr                               baseline attention stats (step, layer, head, frame)
    videos/p0000_s0000_k00003_<label>.mp4|.gif                    optional, ``save_videos=True``

Why it survives SIGKILL: the store is created in a temporary folder and renamed into place; every array
is chunked one job per chunk and zarr writes each chunk file atomically (temp file + rename); a job's
files and values are written before its ``done`` flag. A job is either ``done`` with every value present,
or not done and recomputed on the next run — never half-written, never duplicated.

>>> store = SweepStore("runs/sweep.zarr")           # doctest: +SKIP
>>> store.done().sum(), store.dataset().value.dims  # doctest: +SKIP
(12, ('prompt', 'seed', 'perturbation', 'metric'))
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

from .config import SweepConfig
from .worker import JobResult
from ..core.errors import IEAdaptFileNotFoundError, IEAdaptValueError

JOB_ARRAYS = ("done", "seconds", "finished_at", "session")


class StoreMismatchError(IEAdaptValueError):
    """The store at this path was written by a different sweep configuration."""


@contextmanager
def _quiet():
    """Silence zarr's notes about string dtypes lacking a v3 spec (the store is read by this package)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy.*")
        warnings.filterwarnings("ignore", category=FutureWarning, module="zarr")
        yield


def _strings(values) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


def _diff(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    parts = []
    for k in keys:
        a, b = json.dumps(old.get(k))[:120], json.dumps(new.get(k))[:120]
        parts.append(f"  {k}: store has {a}; this run has {b}")
    return "\n".join(parts)


class SweepStore:
    """A sweep store on disk (see module docstring). Construct with :meth:`open_or_create` or on a path."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise IEAdaptFileNotFoundError(
                f"No sweep store at {str(self.path)!r}. Run ieadapt_interp.sweep(..., store=PATH) "
                "or `ieadapt sweep CONFIG.yaml` first."
            )
        self._group = None

    # -- creation / checking -------------------------------------------------------------------------------
    @staticmethod
    def check(path: str | os.PathLike, config: SweepConfig) -> SweepStore | None:
        """The existing store at ``path`` if it was written by ``config``; ``None`` if there is none.

        Raises :class:`StoreMismatchError` (touching nothing) when the store holds another sweep.
        """
        path = Path(path)
        if not path.exists():
            return None
        if not (path / "zarr.json").exists():
            raise StoreMismatchError(
                f"{str(path)!r} exists but is not a sweep store; choose another store path."
            )
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        if "config_hash" not in attrs:
            raise StoreMismatchError(
                f"{str(path)!r} is a zarr store but not one written by ieadapt_interp.sweep; "
                "choose another store path."
            )
        if attrs["config_hash"] != config.hash:
            raise StoreMismatchError(
                f"The store {str(path)!r} was written by a different sweep configuration (hash {attrs['config_hash']}, "
                f"this run {config.hash}):\n{_diff(json.loads(attrs.get('config', '{}')), config.to_json())}\n"
                "Nothing was changed. Use a new store path for the new configuration, or delete the old store "
                "to start over; to resume it, run exactly its configuration again."
            )
        return SweepStore(path)

    @classmethod
    def create(cls, path: str | os.PathLike, config: SweepConfig, coords: Sequence[dict]) -> SweepStore:
        """Create an empty store for ``config``; ``coords``: one record per perturbation incl. baseline."""
        path = Path(path)
        P, S, K, M = config.shape
        per = {key: [c[key] for c in coords] for key in coords[0]}
        coord_vars = {
            "prompt": ("prompt", _strings(config.prompts)),
            "seed": ("seed", np.array(config.seeds, dtype=np.int64)),
            "perturbation": ("perturbation", _strings(config.perturbation_names)),
            "metric": ("metric", _strings(config.metrics)),
        }
        for key, values in per.items():
            if key in ("index", "n_layers"):
                coord_vars[key] = ("perturbation", np.array(values, dtype=np.int64))
            elif key == "lam":
                coord_vars[key] = ("perturbation", np.array(values, dtype=np.float64))
            else:
                coord_vars[key] = ("perturbation", _strings(values))
        cube, jobs = ("prompt", "seed", "perturbation", "metric"), ("prompt", "seed", "perturbation")
        ds = xr.Dataset(
            {
                "value": (cube, np.full((P, S, K, M), np.nan)),
                "missing_reason": (cube, np.full((P, S, K, M), "", dtype=object)),
                "done": (jobs, np.zeros((P, S, K), bool)),
                "seconds": (jobs, np.full((P, S, K), np.nan)),
                "finished_at": (jobs, np.full((P, S, K), np.nan)),
                "session": (jobs, np.zeros((P, S, K), np.int64)),
            },
            coords=coord_vars,
            attrs={
                "config_hash": config.hash,
                "config": json.dumps(config.to_json()),
                "description": "ieadapt_interp perturbation sweep; value[prompt, seed, perturbation, metric], "
                "valid where done; NaN values carry missing_reason.",
            },
        )
        ds["value"].attrs["description"] = (
            "metric of the perturbed video (reference metrics vs. the baseline)"
        )
        encoding = {
            name: {"chunks": (1, 1, 1, M) if ds[name].ndim == 4 else (1, 1, 1)} for name in ds.data_vars
        }
        tmp = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with _quiet():
            ds.to_zarr(tmp, mode="w-", encoding=encoding, consolidated=False, zarr_format=3)
        os.rename(tmp, path)  # atomic: a killed creation leaves only a hidden temp folder
        return cls(path)

    # -- reading ---------------------------------------------------------------------------------------------
    @property
    def group(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
        return self._group

    def done(self) -> np.ndarray:
        """bool ``[prompt, seed, perturbation]``: which jobs are finished."""
        return np.asarray(self.group["done"][...], dtype=bool)

    def dataset(self, load: bool = True) -> xr.Dataset:
        """The results as an ``xr.Dataset`` (see module docstring)."""
        with _quiet():
            ds = xr.open_zarr(self.path, consolidated=False, zarr_format=3)
            return ds.load() if load else ds

    def baseline_path(self, p: int, s: int) -> Path:
        return self.path / "baseline" / f"p{p:04d}_s{s:04d}.npy"

    def baseline_video(self, p: int, s: int) -> np.ndarray:
        """The stored baseline video uint8 ``[frame, H, W, 3]`` of prompt ``p``, seed ``s`` (indices)."""
        return np.load(self.baseline_path(p, s))

    def baseline_stats(self, p: int, s: int) -> xr.Dataset:
        """Attention statistics of the baseline run (``step, layer, head, frame``)."""
        with _quiet():
            return xr.open_zarr(
                self.path / "baseline_stats" / f"p{p:04d}_s{s:04d}.zarr", consolidated=False
            ).load()

    # -- writing ----------------------------------------------------------------------------------------------
    def write(self, result: JobResult, session: int, label: str = "", save_video: bool = False) -> None:
        """Commit one finished job: its files, then its values, then its ``done`` flag (see module docstring)."""
        p, s, k = result.key
        if save_video:
            from .media import write_video

            safe = re.sub(r"[^A-Za-z0-9_.()+-]+", "_", label)[:80]
            write_video(self.path / "videos" / f"p{p:04d}_s{s:04d}_k{k:05d}_{safe}", result.video)
        if k == 0:
            self._write_baseline(p, s, result)
        g = self.group
        g["value"][p, s, k, :] = np.asarray(result.values, dtype=np.float64)
        g["missing_reason"][p, s, k, :] = np.array(result.reasons, dtype=object)
        g["seconds"][p, s, k] = result.seconds
        g["finished_at"][p, s, k] = time.time()
        g["session"][p, s, k] = session
        g["done"][p, s, k] = True

    def _write_baseline(self, p: int, s: int, result: JobResult) -> None:
        target = self.baseline_path(p, s)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        with open(tmp, "wb") as f:
            np.save(f, result.video)
        os.replace(tmp, target)
        if result.stats is None:
            return
        folder = self.path / "baseline_stats"
        folder.mkdir(exist_ok=True)
        final = folder / f"p{p:04d}_s{s:04d}.zarr"
        tmp_dir = folder / f".tmp-{uuid.uuid4().hex[:8]}"
        stats = result.stats.copy()
        for name in list(stats.coords):
            if stats[name].dtype.kind == "U":
                stats = stats.assign_coords({name: stats[name].astype(object)})
        with _quiet():
            stats.to_zarr(tmp_dir, mode="w-", consolidated=False, zarr_format=3)
        if final.exists():  # left by a run killed before this job's done flag: not trusted, replaced
            shutil.rmtree(final)
        os.rename(tmp_dir, final)

    def clean_temporaries(self) -> None:
        """Remove temp files a killed run may have left (zarr ``*.partial``, ``.tmp-*``)."""
        for pattern in ("**/*.partial", "baseline_stats/.tmp-*", "baseline/.*.npy.*", "videos/.*"):
            for leftover in self.path.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(
                    missing_ok=True
                )
