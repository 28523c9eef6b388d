"""Notebooks 01 and 02 are committed clean and thin (their execution on the embedded model:
``test_notebooks_default_model.py``)."""

import ast
from pathlib import Path

import nbformat
import pytest
from notebook_checks import default_model

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "01": ROOT / "notebooks" / "01_perturbation_analysis.ipynb",
    "02": ROOT / "notebooks" / "02_entropy_energy.ipynb",
}


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
