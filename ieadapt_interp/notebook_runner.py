"""The main job: execute every notebook headless with papermill on the embedded default model.

``python -m ieadapt_interp.notebook_runner --out runs`` writes each executed notebook and its figures
under ``runs/<notebook name>/``.

>>> [p.name for p in notebook_paths()][:1]
['00_quickstart.ipynb']
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .core.errors import IEAdaptFileNotFoundError

#: The notebooks: ``ieadapt_interp/notebooks`` — in a clone a link to the repository's ``notebooks/``, in an
#: installed wheel (``pip install .``) the files themselves (package data).
NOTEBOOK_DIR = Path(__file__).resolve().parent / "notebooks"

#: Overrides for the headless main job: static figures instead of widgets (papermill cannot run widget
#: event loops reliably), one prompt, 8 frames and 6 denoising steps for the per-layer sweeps, which cover the
#: spatial layers one at a time (the temporal ones all at once and along λ), so that all notebooks finish within
#: 15 minutes on a 2-core CPU. Open the notebooks for the full settings (16 frames, every layer, 25 steps).
HEADLESS: dict[str, dict] = {
    "01_perturbation_analysis": {"interactive": False, "num_inference_steps": 6, "num_frames": 8, "kinds": ["spatial"],
                                 "prompts": ["a red circle moving left on a white background"]},
    "02_entropy_energy": {"interactive": False, "num_inference_steps": 6, "num_frames": 8,
                          "prompts": ["a blue square moving right on a black background"]},
    "03_quality_guidance": {"prompts": ["a red circle moving left on a white background"], "scales": [3.0],
                            "curve_pairs": ["UI"], "layer_choices": ["l*", "lowest"], "num_inference_steps": 4,
                            "n_boot": 200},
    "04_video_editing": {"num_inference_steps": 6, "ratios": [0.25, 0.5, 1.0]},
}


def notebook_paths(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The repository's notebooks in order (``00_…``, ``01_…``)."""
    if not folder.is_dir():
        raise IEAdaptFileNotFoundError(
            f"No notebooks folder at {folder}; reinstall the package (`pip install .` ships the notebooks) or "
            "run from a clone of the repository."
        )
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path: Path, out_root: Path, parameters: dict | None = None) -> Path:
    """Execute one notebook into ``out_root/<name>/<name>.ipynb`` with ``out_dir`` pointing there."""
    import papermill

    out_dir = out_root / path.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    papermill.execute_notebook(str(path), str(target), parameters={"out_dir": str(out_dir), **(parameters or {})},
                               kernel_name="python3", progress_bar=False, cwd=str(out_root.parent))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute every notebook headless (papermill) on the default model.")
    parser.add_argument("--out", default="runs", help="folder for executed notebooks and figures (default: runs)")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 00 01")
    args = parser.parse_args(argv)
    out_root = Path(args.out).resolve()
    for path in notebook_paths():
        if args.only and not any(path.name.startswith(p) for p in args.only):
            continue
        start = time.perf_counter()
        target = run_notebook(path, out_root, HEADLESS.get(path.stem))
        print(f"{path.name}: {time.perf_counter() - start:.0f} s -> {target}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
