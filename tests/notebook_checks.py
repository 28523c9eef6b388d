"""What a reader of a notebook sees, checked on executed notebooks (papermill) and in the browser test.

A *figure cell* is a code cell that calls a figure function of the package (``figures.<name>(``,
``.plot_entropy(``, ``explore(`` or ``static_views(``); each must display at least one image.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import xarray as xr

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


def default_model(parameters_source: str) -> bool:
    """Whether a parameters cell sets ``model`` to the embedded model (``None``, or the older ``"default"``)."""
    values = [ast.literal_eval(node.value) for node in ast.parse(parameters_source).body
              if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "model"]
    return len(values) == 1 and values[0] in (None, "default")


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


def check_stats_in_range(stats: xr.Dataset) -> None:
    """Entropy % in [0, 100], entropy ≥ 0, and for self-attention E(UV) ≤ E(IV) over a layer's whole sequence
    (N‖mean V‖² ≤ ‖V‖², Cauchy–Schwarz; per frame it need not hold for temporal layers)."""
    entropy, pct, n_keys = stats["entropy"], stats["entropy_pct"], stats["n_keys"]
    defined = np.isfinite(entropy) & (n_keys > 1)  # NaN: a head the layer lacks; one key: log N = 0
    assert bool(defined.any()) and bool((np.isfinite(pct) == defined).all())
    assert float(pct.where(defined).min()) >= 0 and float(pct.where(defined).max()) <= 100 + 1e-3
    assert float(entropy.min()) >= -1e-5 and bool((entropy <= np.log(n_keys) + 1e-4).where(defined, True).all())
    np.testing.assert_allclose(pct.where(defined), (100 * entropy / np.log(n_keys)).where(defined), rtol=1e-4)
    self_attention = stats.sel(layer=stats["kind"].isin(["spatial", "temporal"]))
    uniform = self_attention["energy_uniform"].sum("frame")
    identity = self_attention["energy_identity"].sum("frame")
    assert (uniform <= identity * (1 + 1e-4) + 1e-6).all()
    assert math.isfinite(float(stats["energy"].mean()))


#: Ranges of the stored metrics (a NaN is a metric whose weights are absent).
METRIC_RANGES = {"ssim": (-1, 1), "temporal_ssim": (-1, 1), "flow_magnitude": (0, np.inf), "dynamic_degree": (0, 1),
                 "colour_match": (0, 1), "shape_match": (0, 1), "direction_match": (0, 1), "connectedness": (0, 1)}


def check_table_in_range(ds):
    """Every finished job's metrics lie in their range, and the baseline compared with itself has SSIM 1."""
    assert bool(ds["done"].all())
    for metric in ds["metric"].values:
        values = ds["value"].sel(metric=metric).values
        low, high = METRIC_RANGES.get(str(metric), (-np.inf, np.inf))
        finite = values[np.isfinite(values)]
        assert ((finite >= low - 1e-6) & (finite <= high + 1e-6)).all(), (metric, finite)
    if "ssim" in ds["metric"].values:
        baseline = ds["value"].sel(metric="ssim").isel(perturbation=_baseline(ds))
        np.testing.assert_allclose(baseline.values, 1.0, atol=1e-6)
        perturbed = ds["value"].sel(metric="ssim").isel(perturbation=~_baseline(ds)).values
        assert np.isfinite(perturbed).all()


FINDING_IDS = ["1a", "1b", "2", "3a", "3b", "4a", "4b", "4c"]


def check_findings_rows(checks):
    """The findings table has one row per finding of DESIGN.md §2, each with a verdict and what was measured."""
    ids = list(checks["id"])
    assert set(FINDING_IDS) <= set(ids) and len(ids) == len(set(ids)), ids  # one row per finding
    assert set(checks["holds"]) <= {"yes", "no", "n/a"}
    measured = checks.set_index("id")
    for column in ("finding", "measured"):
        if column in checks:
            assert all(str(measured.loc[i, column]).strip() for i in FINDING_IDS), column
    if {"ci_low", "ci_high"} <= set(checks):
        low = pd.to_numeric(checks["ci_low"], errors="coerce")
        high = pd.to_numeric(checks["ci_high"], errors="coerce")
        both = low.notna() & high.notna()
        assert (low[both] <= high[both] + 1e-9).all()


def _baseline(ds) -> np.ndarray:
    from ieadapt_interp.sweeps.tables import baseline_mask

    return baseline_mask(ds)
