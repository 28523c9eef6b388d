"""Notebooks 00–02 on the default embedded model (``model = None``), with the smallest useful settings.

This runs what a new user runs (``make run``), only with 4 frames, 2 denoising steps and a few perturbed
layers, and checks what the reader sees: every figure cell shows a PNG image, no cell errs, the figure files
are written, and the numbers are in range. (Each notebook executes once in the suite, here; the browser
test runs 00 and 01 again in JupyterLab.)
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
    png_outputs,
)

import ieadapt_interp as ia
from ieadapt_interp.notebook_runner import NOTEBOOK_DIR, run_notebook

#: The embedded model's first and last spatial self-attention layers (its 1st and 7th; SD 1.5 has 16).
FIRST_SPATIAL = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
LAST_SPATIAL = "up_blocks.2.attentions.1.transformer_blocks.0.attn1"
PROMPT = "a red circle moving right on a black background"
SMALL = {"num_frames": 4, "num_inference_steps": 2}
PARAMETERS = {
    "00_quickstart": {"prompt": PROMPT, **SMALL},
    "01_perturbation_analysis": {
        "prompts": [PROMPT], "seeds": [0], "kinds": ["spatial"], "layers": [FIRST_SPATIAL, LAST_SPATIAL],
        "group_kinds": ["temporal"], "metrics": ["ssim", "temporal_ssim", "flow_magnitude"], "height": 32,
        "width": 32, "interactive": False, **SMALL},
    "02_entropy_energy": {
        "prompts": [PROMPT], "seeds": [0], "findings_layers": [FIRST_SPATIAL, LAST_SPATIAL], "map_size": 8,
        "height": 32, "width": 32, "interactive": False, **SMALL},
}
#: The figure files each notebook writes to ``out_dir`` (besides showing them inline).
FILES = {
    "00_quickstart": ["entropy_heatmap.png", "original_vs_perturbed.gif"],
    "01_perturbation_analysis": [
        "fig2_ssim.png", "fig2_temporal_ssim.png", "fig2_flow_magnitude.png", "fig18_ssim.png",
        "fig19_flow_magnitude.png", "effect_flow_magnitude.png", "lambda_flow_magnitude.png", "fig1_video_strip.png",
        "fig1_side_by_side.gif", "explorer_entropy_heatmap.png", "explorer_attention_map.png",
        "explorer_video_strip.png"],
    "02_entropy_energy": [
        "fig6_entropy_by_layer.png", "entropy_heatmap.png", "fig4_energy_bounds.png",
        "attention_map_last_temporal.png", "explorer_video_strip.png", "findings_ssim_by_layer.png", "findings.md",
        "findings.csv"],
}


def _check_quickstart(target, out) -> None:
    stats = xr.open_dataset(out / "stats.nc")
    check_stats_in_range(stats)
    assert int((stats["kind"] == "spatial").sum()) == 7 and LAST_SPATIAL in stats["layer"].values
    assert stats.sizes["step"] == 2 and stats.attrs["num_inference_steps"] == 2
    cells = code_cells(nbformat.read(target, as_version=4))
    # the layer table's kind counts, as the reader sees them
    counts_text = next(c for c in cells if "value_counts" in c.source).outputs[0]["data"]["text/plain"]
    kinds = dict(line.split() for line in counts_text.splitlines()[1:-1])
    assert kinds == {"temporal": "20", "spatial": "7", "cross": "7"}, counts_text
    videos = [c for c in cells if "show_video(" in c.source]
    assert len(videos) == 2 and all("<video" in c.outputs[0]["data"]["text/html"] for c in videos)  # H.264 players
    assert not png_outputs(cells[0])


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(PARAMETERS))
def test_notebook_on_default_model(stem, tmp_path):
    parameters = {**PARAMETERS[stem]}
    if stem != "00_quickstart":
        parameters["store"] = str(tmp_path / "store.zarr")
    target = run_notebook(NOTEBOOK_DIR / f"{stem}.ipynb", tmp_path / "runs", parameters)
    nb = nbformat.read(target, as_version=4)
    assert default_model(code_cells(nb)[0].source) and "model" not in parameters  # the embedded model ran
    counts = check_figures_inline(target)
    out = target.parent
    for name in FILES[stem]:
        assert (out / name).stat().st_size > 100, name
    if stem == "00_quickstart":
        _check_quickstart(target, out)
        assert list(counts.values()) == [1]
    elif stem == "01_perturbation_analysis":
        table = ia.open_sweep(tmp_path / "store.zarr")
        check_table_in_range(table)
        assert set(table["layer"].values) >= {LAST_SPATIAL}
        assert bool(table["done"].all())
        # baseline, 2 layers × {I, U}, all temporal × {I, U}, the notebook's 5 values of λ
        assert table.sizes["perturbation"] == 1 + 2 * 2 + 2 + 5
    else:
        checks = pd.read_csv(out / "findings.csv", dtype={"id": str}, keep_default_na=False)
        check_findings_rows(checks)
        check_table_in_range(ia.open_sweep(tmp_path / "store.zarr"))
