"""Every Python block of README.md runs, in order, in one namespace, on the model it names.

Settings are made small the way README.md says: ``num_frames=4`` and ``num_inference_steps=2`` (and
``tracer.iter[:2]``) replace the values shown and step ranges are clipped to those 2 steps
(``steps=(2, 10)`` → ``steps=(1, 2)``); nothing else changes. A block that loads a local checkpoint
folder (``~/…``) is checked statement by statement for the error it gives without the folder: an
``IEAdaptError`` that is a ``FileNotFoundError`` naming the folder and saying what to do.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest

import ieadapt_interp as ia

README = Path(__file__).resolve().parents[1] / "README.md"
#: (pattern, replacement) applied to every block: the documented small settings.
SMALL = [
    (re.compile(r"\bnum_frames=\d+"), "num_frames=4"),
    (re.compile(r"\bnum_inference_steps=\d+"), "num_inference_steps=2"),
    (re.compile(r"\btracer\.iter\[:\d+\]"), "tracer.iter[:2]"),
    (re.compile(r"\bsteps=\(\s*(\d+)\s*,\s*(\d+)\s*\)"),
     lambda m: f"steps=({min(int(m[1]), 1)}, {max(min(int(m[2]), 2), min(int(m[1]), 1) + 1)})"),
]

#: Functions that run the model, whose settings a README block must give (explicitly, ``**settings`` or
#: ``generation=``) so that the test can make them small.
RUNS = {"trace", "generate", "sweep", "run_findings_check"}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, source)`` of each fenced ``python`` block."""
    return [(text[: m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)]


def small(code: str) -> str:
    """The block with the documented small settings substituted (step ranges clipped to the 2 steps)."""
    for pattern, replacement in SMALL:
        code = pattern.sub(replacement, code)
    return code


def needs_checkpoint(code: str) -> bool:
    """Whether a block loads a local model folder (a ``~/`` path)."""
    return bool(re.search(r"""["']~/""", code))


def test_blocks_found_and_made_small():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4, "README.md's python blocks were not found"
    for line, code in blocks:
        ast.parse(code, filename=f"README.md:{line}")
        text = small(code)
        big = [m for m in re.findall(r"num_(?:inference_steps|frames)=(\d+)", text) if int(m) > 4]
        assert not big, f"README.md:{line}: settings not made small: {big}"
        for call in (n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)):
            name = getattr(call.func, "attr", getattr(call.func, "id", ""))
            given = {k.arg for k in call.keywords}
            if name in RUNS and not needs_checkpoint(code):  # settings given, so the test can make them small
                assert None in given or "generation" in given or {"num_frames", "num_inference_steps"} <= given, (
                    f"README.md:{line}: {ast.unparse(call)[:80]} runs with default settings")
    assert small("f(num_frames=16, num_inference_steps=25)\nfor s in tracer.iter[:25]:") == (
        "f(num_frames=4, num_inference_steps=2)\nfor s in tracer.iter[:2]:")
    assert small("f(num_inference_steps=25, steps=(2, 10), x=g(steps=(0, 10)))") == (
        "f(num_inference_steps=2, steps=(1, 2), x=g(steps=(0, 2)))")


def _check_missing_checkpoint(line: int, code: str, namespace: dict) -> None:
    for statement in ast.parse(code).body:
        source = ast.unparse(statement)
        with pytest.raises(ia.IEAdaptError) as error:
            exec(compile(ast.Module([statement], []), f"README.md:{line}", "exec"), dict(namespace))  # noqa: S102
        assert isinstance(error.value, FileNotFoundError), (source, error.value)
        folder = re.search(r"""["']~/([^"']+)["']""", source).group(1).split("/")[-1]
        assert folder in str(error.value) and "local folder" in str(error.value), str(error.value)


@pytest.mark.slow
def test_readme_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks write runs/… here
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~/models/… does not exist
    namespace: dict = {}
    ran = []
    for line, code in python_blocks(README.read_text()):
        if needs_checkpoint(code):
            _check_missing_checkpoint(line, code, namespace)
            continue
        source = tmp_path / f"README_md_line_{line}.py"  # a real file: nnsight reads the traced block's source
        source.write_text(small(code))
        try:
            exec(compile(source.read_text(), str(source), "exec"), namespace)  # noqa: S102
        except Exception as error:  # name the block in the failure
            raise AssertionError(f"README.md block at line {line} failed: {error!r}") from error
        ran.append(line)
    assert len(ran) >= 3

    # quick tour: a 4-frame video of the embedded model, stats over both steps, three variants
    run = namespace["run"]
    assert run.video.dtype == np.uint8 and run.video.shape[0] == 4 and run.video.shape[-1] == 3
    assert run.stats.sizes["step"] == 2
    pct = run.stats["entropy_pct"].values
    pct = pct[np.isfinite(pct)]  # NaN: heads a layer lacks (the head axis is the widest layer's)
    assert pct.size and 0 <= pct.min() and pct.max() <= 100 + 1e-3
    assert namespace["variants"].videos.shape[0] == 3
    # nnsight: one mean entropy per step of the last spatial layer, each within [0, log N]
    entropy = [float(e) for e in namespace["entropy"]]
    tokens = int(run.stats["n_keys"].sel(layer="up_blocks.2.attentions.1.transformer_blocks.0.attn1"))
    assert len(entropy) == 2 and all(0 <= e <= math.log(tokens) + 1e-4 for e in entropy), entropy
    # sweeps: every job finished, the baseline's SSIM with itself is 1, every finding has a row
    ds = namespace["ds"]
    assert bool(ds["done"].all()) and ds.sizes["perturbation"] == len(namespace["perturbations"]) + 1
    baseline = ds["value"].sel(metric="ssim").isel(perturbation=ds["replacement"].values == "none")
    np.testing.assert_allclose(baseline.values, 1.0, atol=1e-6)
    assert {"1a", "1b", "2", "3a", "3b", "4a", "4b", "4c"} <= set(namespace["checks"]["id"])
