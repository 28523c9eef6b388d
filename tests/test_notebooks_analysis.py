"""Notebooks 01 and 02: committed clean and thin, and executed headless by papermill with small parameters."""

import ast
import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from notebook_checks import check_figures_inline, check_findings_rows, check_table_in_range, default_model

import ieadapt_interp as ia

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "01": ROOT / "notebooks" / "01_perturbation_analysis.ipynb",
    "02": ROOT / "notebooks" / "02_entropy_energy.ipynb",
}
SMALL = {
    "model": "tiny-animatediff",
    "prompts": ["a red circle"],
    "seeds": [0],
    "num_frames": 4,
    "num_inference_steps": 2,
    "height": 16,
    "width": 16,
    "interactive": False,
}
SPATIAL = [
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1",
    "mid_block.attentions.0.transformer_blocks.0.attn1",
    "up_blocks.3.attentions.2.transformer_blocks.0.attn1",
]


@pytest.mark.parametrize("key", sorted(NOTEBOOKS))
def test_notebook_committed_clean_and_thin(key):
    nb = nbformat.read(NOTEBOOKS[key], as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    assert all(c.outputs == [] and c.execution_count is None for c in code), (
        "commit notebooks without outputs"
    )
    params = ast.parse(code[0].source)
    assert all(isinstance(node, ast.Assign) for node in params.body)
    assert {"model", "prompts", "num_frames", "num_inference_steps", "store", "out_dir"} <= {
        node.targets[0].id for node in params.body
    }
    assert default_model(code[0].source)  # the embedded model (model = None)
    for cell in code[1:]:  # no logic in cells: only imports, calls and assignments of call results
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(
                node,
                (
                    ast.For,
                    ast.While,
                    ast.If,
                    ast.FunctionDef,
                    ast.Lambda,
                    ast.ListComp,
                    ast.DictComp,
                    ast.Try,
                    ast.With,
                ),
            ), f"logic in notebook {key}: {cell.source}"


def _execute(key, tmp_path, **parameters):
    papermill = pytest.importorskip("papermill")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = tmp_path / "figures"
    papermill.execute_notebook(
        str(NOTEBOOKS[key]),
        str(tmp_path / f"{key}.ipynb"),
        kernel_name="python3",
        parameters={**SMALL, "out_dir": str(out_dir), **parameters},
        cwd=str(tmp_path),
        execution_timeout=600,
        progress_bar=False,
    )
    return out_dir


def test_notebook_01_runs(tmp_path):
    out = _execute(
        "01",
        tmp_path,
        layers=[SPATIAL[0], SPATIAL[-1]],
        metrics=["ssim", "temporal_ssim", "flow_magnitude"],
        store=str(tmp_path / "table.zarr"),
    )
    expected = [
        "fig2_ssim.png",
        "fig2_temporal_ssim.png",
        "fig2_flow_magnitude.png",
        "fig18_ssim.png",
        "fig19_flow_magnitude.png",
        "effect_flow_magnitude.png",
        "lambda_flow_magnitude.png",
        "fig1_video_strip.png",
        "fig1_side_by_side.gif",
        "explorer_entropy_heatmap.png",
        "explorer_attention_map.png",
        "explorer_video_strip.png",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert all((out / name).stat().st_size > 1000 for name in expected)
    ds = ia.open_sweep(tmp_path / "table.zarr")
    assert bool(ds["done"].all())
    assert ds.sizes["perturbation"] == 1 + 2 * 2 + 2 + 5  # baseline, 2 layers × {I, U}, all temporal × {I, U}, 5 λ
    check_table_in_range(ds)
    assert check_figures_inline(tmp_path / "01.ipynb")


def test_notebook_02_runs(tmp_path):
    out = _execute("02", tmp_path, map_size=8, findings_layers=SPATIAL, store=str(tmp_path / "findings.zarr"))
    for name in (
        "fig6_entropy_by_layer.png",
        "entropy_heatmap.png",
        "fig4_energy_bounds.png",
        "attention_map_last_temporal.png",
        "explorer_video_strip.png",
        "findings_ssim_by_layer.png",
        "findings.md",
        "findings.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    checks = pd.read_csv(out / "findings.csv", dtype={"id": str}, keep_default_na=False)
    assert {"1a", "1b", "2", "3a", "3b", "4a", "4b", "4c"} <= set(checks["id"])
    assert set(checks["holds"]) <= {"yes", "no", "n/a"}
    ds = ia.open_sweep(tmp_path / "findings.zarr")  # the findings ran as an ia.sweep: a resumable store
    assert bool(ds["done"].all()) and "temporal.all:uniform" in ds.perturbation.values
    check_findings_rows(checks)
    check_table_in_range(ds)
    assert check_figures_inline(tmp_path / "02.ipynb")
