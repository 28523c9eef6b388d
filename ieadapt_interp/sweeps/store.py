"""The sweep's zarr store: preallocated arrays, one chunk per job, resumable after SIGKILL.

A sweep at ``STORE`` (e.g. ``runs/sweep.zarr``) is two sibling folders:

``STORE`` — a clean zarr v3 group with consolidated metadata (``xr.open_zarr(STORE)`` and zarr's own tools
open it without warnings; it holds arrays only)::

    value           float64 [prompt, seed, perturbation, metric]  NaN until written / when missing
    missing_reason  str     [prompt, seed, perturbation, metric]  why a value is NaN ("" otherwise)
    done            bool    [prompt, seed, perturbation]          written LAST for each job
    seconds         float64 [prompt, seed, perturbation]          compute time of the job
    finished_at     float64 [prompt, seed, perturbation]          unix time the job was written
    session         int64   [prompt, seed, perturbation]          id of the run (process) that computed it

``STORE-files`` — what is not an array of that group (:func:`files_path`)::

    baseline/p0000_s0000.npy                 baseline video (reference for metrics of resumed runs)
    baseline_stats/p0000_s0000.zarr          baseline attention stats (step, layer, head, frame), a zarr group
    videos/p0000_s0000_k00003_<label>.mp4    optional, ``save_videos=True`` (or .gif)

Why it survives SIGKILL: the group is created in a temporary folder and renamed into place, and its
metadata never changes afterwards; every array is chunked one job per chunk and zarr writes each chunk file
atomically (temp file + rename); a job's files and values are written before its ``done`` flag. A job is
either ``done`` with every value present, or not done and recomputed on the next run — never half-written,
never duplicated.

A damaged store (a metadata file cut off, a chunk or baseline file of a finished job missing or unreadable)
raises :class:`StoreCorruptError` naming the store and what to do, before anything is written to it.
Stores of the first layout (files inside the group, no ``store_format`` attribute) raise the same error;
:func:`migrate` moves them to this layout.

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
CUBE_ARRAYS = ("value", "missing_reason")
#: version of the on-disk layout (root attribute ``store_format``); 1 = files inside the group (no attribute)
STORE_FORMAT = 2
_FILE_DIRS = ("baseline", "baseline_stats", "videos")


class StoreMismatchError(IEAdaptValueError):
    """The store at this path was written by a different sweep configuration."""


class StoreCorruptError(IEAdaptValueError):
    """The store at this path cannot be read as a sweep store (damaged, or an older layout); nothing was changed."""


def files_path(path: str | os.PathLike) -> Path:
    """The folder beside the zarr group holding the store's non-array files: ``STORE-files``.

    >>> files_path("runs/sweep.zarr").as_posix()
    'runs/sweep.zarr-files'
    """
    path = Path(path)
    return path.with_name(path.name + "-files")


@contextmanager
def _quiet():
    """Silence zarr's notes about string dtypes lacking a v3 spec (the store is read by this package)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        warnings.filterwarnings("ignore", message=".*Consolidated metadata is currently not part.*")
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


def _corrupt(path: Path, problem: str) -> StoreCorruptError:
    return StoreCorruptError(
        f"The sweep store {str(path)!r} cannot be read: {problem}. Nothing was changed. The store was damaged "
        "(a copy cut short, a full disk, files deleted by hand): restore it (with its sibling "
        f"{files_path(path).name!r} folder) from a complete copy, or start over with a new store path (or delete "
        "this one) and run the sweep again."
    )


def _read_json(path: Path, store: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise _corrupt(store, f"{path.relative_to(store.parent)} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _corrupt(store, f"{path.relative_to(store.parent)} is not valid JSON ({error})") from None


def _root_attrs(path: Path) -> dict:
    """The root group's attributes, checked to belong to a sweep store of the current layout."""
    meta = _read_json(path / "zarr.json", path)
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    if not isinstance(attrs, dict) or meta.get("node_type") != "group":
        raise _corrupt(path, "zarr.json does not describe a zarr group")
    if "config_hash" not in attrs:
        raise StoreMismatchError(
            f"{str(path)!r} is a zarr store but not one written by ieadapt_interp.sweep; choose another store path."
        )
    if attrs.get("store_format") != STORE_FORMAT:
        raise StoreCorruptError(
            f"The sweep store {str(path)!r} has an older layout (store format {attrs.get('store_format', 1)}: "
            f"baseline files inside the zarr group); this version reads format {STORE_FORMAT}. Nothing was changed. "
            f"Convert it once with ieadapt_interp.sweeps.store.migrate({str(path)!r}), or run the sweep again "
            "into a new store path."
        )
    if not meta.get("consolidated_metadata"):
        raise _corrupt(path, "its consolidated metadata is missing from zarr.json")
    return attrs


class SweepStore:
    """A sweep store on disk (see module docstring). Construct with :meth:`create` or on a path.

    Opening a path checks the whole store (:meth:`verify`): a damaged one raises :class:`StoreCorruptError`.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True):
        self.path = Path(path)
        self.files = files_path(self.path)
        if not (self.path / "zarr.json").exists():
            raise IEAdaptFileNotFoundError(
                f"No sweep store at {str(self.path)!r}. Run ieadapt_interp.sweep(..., store=PATH) "
                "or `ieadapt sweep CONFIG.yaml` first."
            )
        self._group = None
        self._dataset: xr.Dataset | None = None
        if verify:
            self.verify()

    # -- checking --------------------------------------------------------------------------------------------
    def verify(self) -> None:
        """Check that every part of the store a reader or a resumed run uses is present and readable.

        Metadata (root and every array's ``zarr.json``), every array's values, the chunk of each array for
        every finished job, and each finished baseline's video and statistics. Raises
        :class:`StoreCorruptError` naming the first problem; reads only.
        """
        path = self.path
        _root_attrs(path)
        for name in (*CUBE_ARRAYS, *JOB_ARRAYS):
            meta = _read_json(path / name / "zarr.json", path)
            if meta.get("node_type") != "array":
                raise _corrupt(path, f"{name}/zarr.json does not describe a zarr array")
        try:
            with _quiet():
                ds = xr.open_zarr(path, consolidated=True, zarr_format=3).load()
        except Exception as error:  # noqa: BLE001 — any failure to decode is damage; say so in one line
            raise _corrupt(path, f"its arrays cannot be decoded ({type(error).__name__}: {error})") from None
        missing = [v for v in (*CUBE_ARRAYS, *JOB_ARRAYS) if v not in ds]
        if missing:
            raise _corrupt(path, f"the arrays {missing} are missing")
        for name in ds.variables:  # coordinates: one chunk each, written at creation
            if ds[name].ndim == 1 and name not in (*CUBE_ARRAYS, *JOB_ARRAYS) and ds[name].size:
                if not (path / str(name) / "c" / "0").exists():
                    raise _corrupt(path, f"the chunk file {name}/c/0 is missing")
        done = np.asarray(ds["done"].values, dtype=bool)
        for p, s, k in zip(*np.nonzero(done)):  # a finished job has all its chunks (zarr reads absent ones as fill)
            for name in (*CUBE_ARRAYS, *JOB_ARRAYS):
                chunk = path / name / "c" / str(p) / str(s) / str(k)
                chunk = chunk / "0" if name in CUBE_ARRAYS else chunk
                if not chunk.exists():
                    raise _corrupt(path, f"the chunk file {chunk.relative_to(path.parent)} of finished job "
                                         f"(prompt {p}, seed {s}, perturbation {k}) is missing")
        for p, s in zip(*np.nonzero(done[:, :, 0])):
            self._check_baseline(int(p), int(s))
        self._dataset = ds

    def _check_baseline(self, p: int, s: int) -> None:
        video = self.baseline_path(p, s)
        try:
            np.load(video, mmap_mode="r")  # header and length; the pixels are read when needed
        except FileNotFoundError:
            raise _corrupt(self.path, f"the baseline video {video} of (prompt {p}, seed {s}) is missing") from None
        except Exception as error:  # noqa: BLE001
            raise _corrupt(self.path, f"the baseline video {video} of (prompt {p}, seed {s}) is unreadable "
                                      f"({type(error).__name__}: {error})") from None
        stats = self.files / "baseline_stats" / f"p{p:04d}_s{s:04d}.zarr"
        meta = _read_json(stats / "zarr.json", self.path)
        if meta.get("node_type") != "group":
            raise _corrupt(self.path, f"{stats}/zarr.json does not describe a zarr group")

    # -- creation / checking -------------------------------------------------------------------------------
    @staticmethod
    def check(path: str | os.PathLike, config: SweepConfig) -> SweepStore | None:
        """The existing store at ``path`` if it was written by ``config``; ``None`` if there is none.

        Raises, touching nothing: :class:`StoreMismatchError` when the store holds another sweep,
        :class:`StoreCorruptError` when it cannot be read.
        """
        path = Path(path)
        if not path.exists():
            if files_path(path).exists():
                raise StoreMismatchError(
                    f"{str(files_path(path))!r} exists but its store {str(path)!r} does not (deleted?). Delete "
                    f"{str(files_path(path))!r} too, or choose another store path."
                )
            return None
        if not (path / "zarr.json").exists():
            if path.is_dir() and not any(path.iterdir()):
                raise StoreMismatchError(f"{str(path)!r} is an empty folder, not a sweep store; remove it or "
                                         "choose another store path.")
            raise StoreMismatchError(
                f"{str(path)!r} exists but is not a sweep store; choose another store path."
            )
        attrs = _root_attrs(path)
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
                "store_format": STORE_FORMAT,
                "files": f"baseline videos, baseline statistics and saved videos: ../{files_path(path).name}/",
                "description": "ieadapt_interp perturbation sweep; value[prompt, seed, perturbation, metric], "
                "valid where done; NaN values carry missing_reason.",
            },
        )
        ds["value"].attrs["description"] = (
            "metric of the perturbed video (reference metrics vs. the baseline)"
        )
        # data: one chunk per job, written by the job; coordinates: one chunk, always written (even all-NaN)
        encoding = {
            name: {"chunks": (1, 1, 1, M) if ds[name].ndim == 4 else (1, 1, 1)} for name in ds.data_vars
        }
        encoding.update({name: {"write_empty_chunks": True} for name in ds.coords})
        tmp = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with _quiet():
            ds.to_zarr(tmp, mode="w-", encoding=encoding, consolidated=True, zarr_format=3)
        os.rename(tmp, path)  # atomic: a killed creation leaves only a hidden temp folder
        return cls(path)

    # -- reading ---------------------------------------------------------------------------------------------
    @property
    def group(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(str(self.path), mode="r+", zarr_format=3, use_consolidated=True)
        return self._group

    def done(self) -> np.ndarray:
        """bool ``[prompt, seed, perturbation]``: which jobs are finished."""
        return np.asarray(self.group["done"][...], dtype=bool)

    def dataset(self, load: bool = True) -> xr.Dataset:
        """The results as an ``xr.Dataset`` (see module docstring)."""
        if load and self._dataset is not None and self._group is None:  # read by verify(), nothing written since
            return self._dataset
        with _quiet():
            ds = xr.open_zarr(self.path, consolidated=True, zarr_format=3)
            return ds.load() if load else ds

    def baseline_path(self, p: int, s: int) -> Path:
        return self.files / "baseline" / f"p{p:04d}_s{s:04d}.npy"

    def baseline_video(self, p: int, s: int) -> np.ndarray:
        """The stored baseline video uint8 ``[frame, H, W, 3]`` of prompt ``p``, seed ``s`` (indices)."""
        try:
            return np.load(self.baseline_path(p, s))
        except Exception as error:  # noqa: BLE001
            raise _corrupt(self.path, f"the baseline video {self.baseline_path(p, s)} is unreadable "
                                      f"({type(error).__name__}: {error})") from None

    def baseline_stats(self, p: int, s: int) -> xr.Dataset:
        """Attention statistics of the baseline run (``step, layer, head, frame``)."""
        folder = self.files / "baseline_stats" / f"p{p:04d}_s{s:04d}.zarr"
        try:
            with _quiet():
                return xr.open_zarr(folder, consolidated=True, zarr_format=3).load()
        except Exception as error:  # noqa: BLE001
            raise _corrupt(self.path, f"the baseline statistics {folder} are unreadable "
                                      f"({type(error).__name__}: {error})") from None

    # -- writing ----------------------------------------------------------------------------------------------
    def write(self, result: JobResult, session: int, label: str = "", save_video: bool = False) -> None:
        """Commit one finished job: its files, then its values, then its ``done`` flag (see module docstring).

        Every chunk is written even when it equals the fill value, so a finished job's chunks all exist.
        """
        import zarr

        p, s, k = result.key
        if save_video:
            from .media import write_video

            safe = re.sub(r"[^A-Za-z0-9_.()+-]+", "_", label)[:80]
            write_video(self.files / "videos" / f"p{p:04d}_s{s:04d}_k{k:05d}_{safe}", result.video)
        if k == 0:
            self._write_baseline(p, s, result)
        g = self.group
        with zarr.config.set({"array.write_empty_chunks": True}):
            arrays = {name: zarr.open_array(g.store, path=name, mode="r+", zarr_format=3)
                      for name in (*CUBE_ARRAYS, *JOB_ARRAYS)}
            arrays["value"][p, s, k, :] = np.asarray(result.values, dtype=np.float64)
            arrays["missing_reason"][p, s, k, :] = np.array(result.reasons, dtype=object)
            arrays["seconds"][p, s, k] = result.seconds
            arrays["finished_at"][p, s, k] = time.time()
            arrays["session"][p, s, k] = session
            arrays["done"][p, s, k] = True

    def _write_baseline(self, p: int, s: int, result: JobResult) -> None:
        target = self.baseline_path(p, s)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        with open(tmp, "wb") as f:
            np.save(f, result.video)
        os.replace(tmp, target)
        if result.stats is None:
            return
        folder = self.files / "baseline_stats"
        folder.mkdir(exist_ok=True)
        final = folder / f"p{p:04d}_s{s:04d}.zarr"
        tmp_dir = folder / f".tmp-{uuid.uuid4().hex[:8]}"
        stats = result.stats.copy()
        for name in list(stats.coords):
            if stats[name].dtype.kind == "U":
                stats = stats.assign_coords({name: stats[name].astype(object)})
        with _quiet():
            stats.to_zarr(tmp_dir, mode="w-", consolidated=True, zarr_format=3)
        if final.exists():  # left by a run killed before this job's done flag: not trusted, replaced
            shutil.rmtree(final)
        os.rename(tmp_dir, final)

    def clean_temporaries(self) -> None:
        """Remove temp files a killed run may have left (zarr ``*.partial``, ``.tmp-*``)."""
        for root, pattern in ((self.path, "**/*.partial"), (self.files, "baseline_stats/.tmp-*"),
                              (self.files, "baseline/.*.npy.*"), (self.files, "videos/.*")):
            for leftover in root.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(
                    missing_ok=True
                )


def migrate(path: str | os.PathLike) -> Path:
    """Convert a store of the first layout (files inside the zarr group) to the current one, in place.

    Moves ``baseline/``, ``baseline_stats/`` and ``videos/`` to :func:`files_path` and writes the group's
    consolidated metadata with ``store_format`` set; the arrays are not rewritten. Returns the files folder.
    The result is then checked like any store (:class:`StoreCorruptError` if it is damaged).
    """
    import zarr

    path = Path(path)
    meta = _read_json(path / "zarr.json", path)
    attrs = meta.get("attributes", {}) if isinstance(meta, dict) else {}
    if "config_hash" not in attrs:
        raise StoreMismatchError(f"{str(path)!r} is not a store written by ieadapt_interp.sweep; nothing to migrate.")
    if attrs.get("store_format") == STORE_FORMAT:
        return files_path(path)
    files = files_path(path)
    files.mkdir(exist_ok=True)
    for name in _FILE_DIRS:
        if (path / name).exists():
            if (files / name).exists():
                raise StoreMismatchError(f"Both {path / name} and {files / name} exist; merge them by hand first.")
            os.rename(path / name, files / name)
    with _quiet():
        group = zarr.open_group(str(path), mode="r+", zarr_format=3, use_consolidated=False)
        group.attrs.update({"store_format": STORE_FORMAT,
                            "files": f"baseline videos, baseline statistics and saved videos: ../{files.name}/"})
        zarr.consolidate_metadata(str(path), zarr_format=3)
        for stats in (files / "baseline_stats").glob("p*_s*.zarr"):
            zarr.consolidate_metadata(str(stats), zarr_format=3)
    SweepStore(path)
    return files
