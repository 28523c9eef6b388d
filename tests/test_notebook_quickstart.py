"""Every notebook is committed clean and thin; the quickstart runs headless (papermill) and shows its figures."""

import ast
import json

import nbformat
import pytest
import xarray as xr
from notebook_checks import (
    LOGIC,
    check_figures_inline,
    check_stats_in_range,
    code_cells,
    default_model,
    notebook_paths,
    png_outputs,
)

from ieadapt_interp.notebook_runner import NOTEBOOK_DIR, run_notebook


def test_notebooks_committed_without_outputs_and_with_parameters():
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path.name
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), path.name


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_is_thin(path):
    """The first code cell holds the papermill parameters (plain assignments, `model = "default"`); the other
    cells hold only imports, calls and assignments of call results — no loops, branches, functions."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = code_cells(nb)
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    assert all(isinstance(node, ast.Assign) for node in ast.parse(code[0].source).body)
    assert default_model(code[0].source), "the notebook must run the embedded model by default (model = None)"
    for cell in code[1:]:
        logic = [type(n).__name__ for n in ast.walk(ast.parse(cell.source)) if isinstance(n, LOGIC)]
        assert not logic, f"logic ({logic}) in {path.name}: {cell.source}"


def test_logic_check_catches_logic():
    """The thin check's node list flags the constructs a notebook must not contain."""
    for source in ("for x in y: f(x)", "a = [f(x) for x in y]", "a = b if c else d", "def f(): pass"):
        assert any(isinstance(n, LOGIC) for n in ast.walk(ast.parse(source))), source
    assert not any(isinstance(n, LOGIC) for n in ast.walk(ast.parse("a = f(b, c=[1, 2])\nb.g()")))


def test_quickstart_runs_headless(tmp_path):
    target = run_notebook(NOTEBOOK_DIR / "00_quickstart.ipynb", tmp_path / "runs", parameters={
        "model": "tiny:animatediff", "num_frames": 4, "num_inference_steps": 2,
        "perturb_index": 16})
    out = target.parent
    counts = check_figures_inline(target)
    assert (out / "entropy_heatmap.png").stat().st_size > 1000
    assert (out / "original_vs_perturbed.gif").stat().st_size > 100
    stats = xr.open_dataset(out / "stats.nc")
    assert stats.sizes["layer"] == 72 and stats.attrs["num_inference_steps"] == 2
    check_stats_in_range(stats)
    executed = nbformat.read(target, as_version=4)
    cells = code_cells(executed)
    # the layer table's kind counts, as the reader sees them: SD 1.5 AnimateDiff has 16 spatial layers
    counts_text = next(c for c in cells if "value_counts" in c.source).outputs[0]["data"]["text/plain"]
    kinds = dict(line.split() for line in counts_text.splitlines()[1:-1])
    assert kinds == {"spatial": "16", "temporal": "40", "cross": "16"}, counts_text
    videos = [c for c in cells if "show_video(" in c.source]
    assert len(videos) == 2 and all("<video" in c.outputs[0]["data"]["text/html"] for c in videos)  # H.264 players
    assert list(counts.values()) == [1] and not png_outputs(cells[0])

