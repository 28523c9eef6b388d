"""Locating local weight files for learned metrics (nothing is ever downloaded).

Search order for a metric's weights:

1. an explicit ``path`` argument (a file, or a Hugging Face model folder);
2. the folder named by the environment variable ``IEADAPT_WEIGHTS_DIR``;
3. the Hugging Face hub cache (``huggingface_hub.try_to_load_from_cache``, no network) for HF models,
   and the torch hub cache (``torch.hub.get_dir()/checkpoints``) plus the caches VBench and pyiqa use
   for single files.

When nothing is found, :class:`MissingWeightsError` names the file to obtain and where to put it.
:func:`load_strict` then builds the network and loads the file with ``strict=True`` (one cached loader for every
re-implemented network).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import IEAdaptFileNotFoundError

WEIGHTS_ENV = "IEADAPT_WEIGHTS_DIR"
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class MissingWeightsError(IEAdaptFileNotFoundError):
    """A learned metric's weight file is not available locally.

    Attributes:
        metric: the metric that needs the file (e.g. ``"aesthetic_quality"``).
        filename: the file (or Hugging Face repo folder) to obtain.
    """

    def __init__(self, metric: str, filename: str, message: str):
        super().__init__(message)
        self.metric = metric
        self.filename = filename
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class WeightFile:
    """One weight file a metric needs: its name, where it comes from, extra cache folders to search."""

    filename: str
    origin: str
    extra_dirs: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class HFModel:
    """A Hugging Face model folder (``config.json`` + weights) a metric needs."""

    repo_id: str
    origin: str = ""

    @property
    def folder_name(self) -> str:
        return self.repo_id.split("/")[-1]


def weights_dir() -> Path | None:
    """The folder named by ``IEADAPT_WEIGHTS_DIR``, or None when unset."""
    value = os.environ.get(WEIGHTS_ENV)
    return Path(value).expanduser() if value else None


def _where_to_put(name: str) -> str:
    folder = weights_dir()
    if folder is None:
        return f"${WEIGHTS_ENV}/{name} (set {WEIGHTS_ENV} to a folder of your choice)"
    return str(folder / name)


def _missing(metric: str, name: str, origin: str, searched: list[Path]) -> MissingWeightsError:
    tried = "\n  ".join(str(p) for p in searched) or "(nothing)"
    message = (
        f"metric {metric!r} needs the weight file {name!r} ({origin}), which was not found.\n"
        f"Obtain it and put it at {_where_to_put(name)}, or pass its path explicitly.\n"
        f"Searched:\n  {tried}"
    )
    return MissingWeightsError(metric, name, message)


def _explicit(metric: str, name: str, origin: str, path: str | os.PathLike) -> Path:
    candidate = Path(path).expanduser()
    if not candidate.exists():
        raise _missing(metric, name, origin, [candidate])
    return candidate


def locate_file(metric: str, spec: WeightFile, path: str | os.PathLike | None = None) -> Path:
    """Return the local path of a single weight file, or raise :class:`MissingWeightsError`.

    Example:
        >>> spec = WeightFile("sa_0_4_vit_l_14_linear.pth", "LAION aesthetic predictor")
        >>> locate_file("aesthetic_quality", spec)  # doctest: +SKIP
    """
    if path is not None:
        return _explicit(metric, spec.filename, spec.origin, path)
    searched = []
    folder = weights_dir()
    if folder is not None:
        searched.append(folder / spec.filename)
    searched.append(Path(torch.hub.get_dir()) / "checkpoints" / spec.filename)
    searched += [Path(d).expanduser() / spec.filename for d in spec.extra_dirs]
    for candidate in searched:
        if candidate.is_file():
            return candidate
    raise _missing(metric, spec.filename, spec.origin, searched)


def _is_hf_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in _HF_WEIGHT_FILES)


def _hf_cache_folder(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if _is_hf_folder(folder) else None


def locate_hf_model(metric: str, spec: HFModel, path: str | os.PathLike | None = None) -> Path:
    """Return a local Hugging Face model folder for ``spec.repo_id``, or raise :class:`MissingWeightsError`.

    Searched: ``path``; ``$IEADAPT_WEIGHTS_DIR/<repo name>``; the HF hub cache (offline lookup).
    """
    origin = spec.origin or f"Hugging Face model {spec.repo_id}"
    if path is not None:
        return _explicit(metric, spec.folder_name, origin, path)
    searched = []
    folder = weights_dir()
    if folder is not None:
        searched.append(folder / spec.folder_name)
        if _is_hf_folder(searched[-1]):
            return searched[-1]
    cached = _hf_cache_folder(spec.repo_id)
    if cached is not None:
        return cached
    searched.append(Path(f"<HF cache>/models--{spec.repo_id.replace('/', '--')}"))
    raise _missing(metric, spec.folder_name, origin + " (folder with config.json and weights)", searched)


def _identity(checkpoint: Any) -> Any:
    return checkpoint


@functools.lru_cache(maxsize=8)
def load_strict(
    build: Callable[[], nn.Module],
    path: str,
    device: str = "cpu",
    unwrap: Callable[[Any], Mapping[str, torch.Tensor]] = _identity,
) -> nn.Module:
    """``build()``, then the checkpoint at ``path`` (``torch.load(weights_only=True)``, passed through ``unwrap``)
    loaded with ``strict=True``; moved to ``device``, eval mode, no gradients. Cached per
    (build, path, device, unwrap): give a resolved path and module-level functions.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = str(Path(folder) / "linear.pth")
        ...     torch.save({"state_dict": nn.Linear(2, 1).state_dict()}, path)
        ...     model = load_strict(functools.partial(nn.Linear, 2, 1), path, unwrap=lambda c: c["state_dict"])
        >>> model.training, model.weight.requires_grad
        (False, False)
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build()
    model.load_state_dict(unwrap(checkpoint), strict=True)
    return model.to(device).eval().requires_grad_(False)
