"""The quickstart notebook runs headless (papermill) and writes its figures."""

import json
from pathlib import Path

import xarray as xr

from ieadapt_interp.notebook_runner import NOTEBOOK_DIR, run_notebook


def test_notebooks_committed_without_outputs_and_with_parameters():
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path.name
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), path.name


def test_quickstart_runs_headless(tmp_path):
    target = run_notebook(NOTEBOOK_DIR / "00_quickstart.ipynb", tmp_path / "runs", parameters={
        "model": "tiny-animatediff", "num_frames": 4, "num_inference_steps": 2,
        "perturb_index": 16})
    out = target.parent
    assert (out / "entropy_heatmap.png").stat().st_size > 1000
    assert (out / "original_vs_perturbed.gif").stat().st_size > 100
    stats = xr.open_dataset(out / "stats.nc")
    assert stats.sizes["layer"] == 72 and stats.attrs["num_inference_steps"] == 2
    executed = json.loads(Path(target).read_text())
    assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")
