"""Versions of the packages a result depends on (``show_versions()`` for bug reports, as xarray has).

>>> "torch=" in versions_string()
True
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

PACKAGES = ("ieadapt_interp", "torch", "diffusers", "transformers", "nnsight", "xarray", "numpy", "zarr")


def versions() -> dict[str, str]:
    """``{package: version}`` for the packages results depend on (``"not installed"`` if absent)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def versions_string() -> str:
    """One line, e.g. ``ieadapt_interp=0.1.0 torch=2.14.1 …`` (stored in result attrs)."""
    return " ".join(f"{k}={v}" for k, v in versions().items())


def show_versions() -> None:
    """Print Python, platform, CUDA and package versions — paste this into a bug report."""
    import torch

    print(f"python: {sys.version.split()[0]}  platform: {platform.platform()}")
    print(f"cuda available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    for name, version in versions().items():
        print(f"{name}: {version}")
