"""What a reader of a notebook sees, checked on executed notebooks (papermill) and in the browser test.

A *figure cell* is a code cell that calls a figure function of the package (``figures.<name>(``,
``.plot_entropy(``, ``explore(`` or ``static_views(``); each must display at least one image.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
FIGURE_CALL = re.compile(r"(\bfigures\.\w+|\.plot_entropy|\bexplore|\bstatic_views)\(")
#: Statements with logic, which a thin notebook's code cells (after the parameters cell) must not contain.
LOGIC = (ast.For, ast.While, ast.If, ast.FunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.DictComp,
         ast.SetComp, ast.GeneratorExp, ast.Try, ast.With, ast.IfExp)


def notebook_paths() -> list[Path]:
    """Every committed notebook (``notebooks/NN_*.ipynb``), also ones added later."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def code_cells(nb) -> list:
    """The code cells of a notebook node, papermill's injected-parameters cell left out."""
    return [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


def is_figure_cell(source: str) -> bool:
    """Whether a cell's source calls one of the package's figure functions."""
    return bool(FIGURE_CALL.search(source))


def png_outputs(cell) -> list[bytes]:
    """The decoded ``image/png`` outputs of an executed cell."""
    import base64

    return [base64.b64decode(o["data"]["image/png"]) for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]


def errors(nb) -> list[str]:
    """``ename: evalue`` of every error output in an executed notebook."""
    return [f"{o['ename']}: {o['evalue']}" for c in code_cells(nb) for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def check_figures_inline(path: Path) -> dict[int, int]:
    """Assert that an executed notebook has no error and that every figure cell displays a PNG image.

    Returns ``{code cell index: number of PNG outputs}`` for the figure cells (at least one).
    """
    nb = nbformat.read(path, as_version=4)
    assert not errors(nb), errors(nb)
    cells = code_cells(nb)
    counts = {i: len(png_outputs(c)) for i, c in enumerate(cells) if is_figure_cell(c.source)}
    assert counts, f"{path.name}: no figure cell found"
    missing = {i: cells[i].source[:80] for i, n in counts.items() if n == 0}
    assert not missing, f"{path.name}: figure cells without an image/png output: {missing}"
    for i in counts:
        for png in png_outputs(cells[i]):
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000, (path.name, i)
    return counts
