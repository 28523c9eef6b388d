"""Install, from a folder of wheels, only those whose distribution this Python does not have (offline, no deps).

The GPU machine has torch and transformers but not nnsight; ``.whl/nnsight/`` holds nnsight and every dependency it
imports. Installing all of them over the machine's own packages could shadow versions its torch needs, so only the
missing ones go into ``--target`` (put that folder on ``PYTHONPATH``). Then ``--check`` modules are imported.

    python benchmarks/install_missing_wheels.py .whl/nnsight --target /tmp/site --check nnsight.modeling.diffusion
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def missing_wheels(folder: Path) -> list[Path]:
    """The wheels in ``folder`` whose distribution is not installed (``name-version-...whl``)."""
    out = []
    for wheel in sorted(folder.glob("*.whl")):
        try:
            metadata.version(wheel.name.split("-")[0])
        except metadata.PackageNotFoundError:
            out.append(wheel)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--target", required=True)
    parser.add_argument("--check", nargs="*", default=[])
    args = parser.parse_args()
    wheels = missing_wheels(args.folder)
    print("installing:", " ".join(w.name.split("-")[0] for w in wheels) or "nothing", flush=True)
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                        args.target, *map(str, wheels)], check=True)
    sys.path.insert(0, args.target)
    for module in args.check:
        importlib.import_module(module)
        print("imports:", module, flush=True)


if __name__ == "__main__":
    main()
