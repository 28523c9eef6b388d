"""Notebooks 00–02 on the default embedded model (``model = None``), with the smallest useful settings.

The other notebook tests use the tiny random pipeline; this one runs what a new user runs (``make run``),
only with 4 frames, 2 denoising steps and one perturbed layer, and checks what the reader sees: every figure
cell shows a PNG image, no cell errs, and the numbers are in range.
"""

import nbformat
import pandas as pd
import pytest
import xarray as xr
from notebook_checks import (
    check_figures_inline,
    check_findings_rows,
    check_stats_in_range,
    check_table_in_range,
    code_cells,
    default_model,
)

import ieadapt_interp as ia
from ieadapt_interp.notebook_runner import NOTEBOOK_DIR, run_notebook

#: The embedded model's last spatial self-attention layer (its 7th; SD 1.5 has 16).
LAST_SPATIAL = "up_blocks.2.attentions.1.transformer_blocks.0.attn1"
PROMPT = "a red circle moving right on a black background"
SMALL = {"num_frames": 4, "num_inference_steps": 2}
PARAMETERS = {
    "00_quickstart": {"prompt": PROMPT, **SMALL},
    "01_perturbation_analysis": {
        "prompts": [PROMPT], "seeds": [0], "kinds": ["spatial"], "layers": [LAST_SPATIAL], "group_kinds": [],
        "lams": [0.0, 1.0], "height": 32, "width": 32, "interactive": False, **SMALL},
    "02_entropy_energy": {
        "prompts": [PROMPT], "seeds": [0], "findings_layers": [LAST_SPATIAL], "map_size": 8, "height": 32,
        "width": 32, "interactive": False, **SMALL},
}


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(PARAMETERS))
def test_notebook_on_default_model(stem, tmp_path):
    parameters = {**PARAMETERS[stem]}
    if stem != "00_quickstart":
        parameters["store"] = str(tmp_path / "store.zarr")
    target = run_notebook(NOTEBOOK_DIR / f"{stem}.ipynb", tmp_path / "runs", parameters)
    nb = nbformat.read(target, as_version=4)
    assert default_model(code_cells(nb)[0].source) and "model" not in parameters  # the embedded model ran
    check_figures_inline(target)
    out = target.parent
    if stem == "00_quickstart":
        stats = xr.open_dataset(out / "stats.nc")
        check_stats_in_range(stats)
        assert int((stats["kind"] == "spatial").sum()) == 7 and LAST_SPATIAL in stats["layer"].values
        assert stats.sizes["step"] == 2 and stats.attrs["num_inference_steps"] == 2
    elif stem == "01_perturbation_analysis":
        table = ia.open_sweep(tmp_path / "store.zarr")
        check_table_in_range(table)
        assert set(table["layer"].values) >= {LAST_SPATIAL}
        assert table.sizes["perturbation"] == 1 + 2 + 2  # baseline, the layer ← I / U, λ ∈ {0, 1}
    else:
        checks = pd.read_csv(out / "findings.csv", dtype={"id": str}, keep_default_na=False)
        check_findings_rows(checks)
        check_table_in_range(ia.open_sweep(tmp_path / "store.zarr"))
