"""Notebook 03 (quality guidance) executes headless on the embedded model it names, with small settings;
figures and tables reach the reader."""

import nbformat
import pytest

import ieadapt_interp as ia
from ieadapt_interp.notebook_runner import NOTEBOOK_DIR, run_notebook

SMALL = dict(prompts=["a red circle moving left on a white background"],
             calibration_prompts=["a red circle"], num_frames=2, num_inference_steps=1, height=32, width=32,
             metrics=["temporal_ssim", "colour_match"], curve_metric="temporal_ssim", scales=[1.0, 2.0],
             curve_pairs=["UI"], n_boot=50)


def test_notebook_03_runs(tmp_path):
    pytest.importorskip("papermill")
    target = run_notebook(NOTEBOOK_DIR / "03_quality_guidance.ipynb", tmp_path / "runs",
                          {**SMALL, "store": str(tmp_path / "sweep.zarr")})
    nb = nbformat.read(target, as_version=4)
    outputs = {c.source.splitlines()[0]: c.outputs for c in nb.cells if c.cell_type == "code"}
    assert not any(o.output_type == "error" for outs in outputs.values() for o in outs)
    images = [k for k, outs in outputs.items() if any("image/png" in o.get("data", {}) for o in outs)]
    assert len(images) == 3  # calibration plot, video strip, guidance curve
    assert (target.parent / "registry.json").is_file()
    ds = ia.open_sweep(tmp_path / "sweep.zarr")
    # original + 3 pairs on l* at s=3 + UI over 2 scales × 3 layer choices
    assert bool(ds["done"].all()) and ds.sizes["perturbation"] == 1 + 3 + 6
