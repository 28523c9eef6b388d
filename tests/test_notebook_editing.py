"""Notebook 04 (video editing) executes headless on the embedded model it names (small settings): no errors,
videos inline, tables, exports."""

import nbformat
import pytest
from notebook_checks import errors

from ieadapt_interp.notebook_runner import NOTEBOOK_DIR, run_notebook

SMALL = dict(num_frames=4, num_inference_steps=2, ratios=[0.5, 1.0])


def test_notebook_04_runs(tmp_path):
    pytest.importorskip("papermill")
    out_dir = tmp_path / "edit_outputs"
    target = run_notebook(NOTEBOOK_DIR / "04_video_editing.ipynb", tmp_path / "runs",
                          {**SMALL, "out_dir": str(out_dir)})
    nb = nbformat.read(target, as_version=4)
    assert not errors(nb)
    html = [o.get("data", {}).get("text/html", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert sum("<video" in h for h in html) >= 3  # generated edit, source file, the baselines side by side
    tables = [h for h in html if "<table" in h]
    assert any("masactrl" in h and "p2p" in h and "ieadapt" in h for h in tables)  # Table 3's rows
    assert (out_dir / "source_and_edit.mp4").stat().st_size > 0
    assert (out_dir / "source_and_edit.gif").stat().st_size > 0
