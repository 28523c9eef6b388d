"""Every notebook is committed clean and thin; (execution: ``test_notebooks_default_model.py``)."""

import ast
import json

import nbformat
import pytest
from notebook_checks import (
    LOGIC,
    code_cells,
    default_model,
    notebook_paths,
)

from ieadapt_interp.notebook_runner import NOTEBOOK_DIR


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
