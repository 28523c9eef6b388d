"""Findings checks and stats summaries on constructed datasets (hand-counted), plus one tiny-pipeline table."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import ieadapt_interp as ia
from ieadapt_interp import findings as fd

KW = {"num_frames": 4, "height": 16, "width": 16, "num_inference_steps": 2}


def make_stats(energy, identity, uniform, entropy_pct=None, kinds=("spatial", "temporal", "cross")):
    """Stats Dataset (step, layer, head, frame) from arrays of that shape."""
    energy = np.asarray(energy, float)
    dims = ("step", "layer", "head", "frame")
    s, n_layers, h, f = energy.shape
    if entropy_pct is None:
        entropy_pct = np.full(energy.shape, 50.0)
    return xr.Dataset(
        {
            "energy": (dims, energy),
            "energy_identity": (dims, np.asarray(identity, float)),
            "energy_uniform": (dims, np.asarray(uniform, float)),
            "entropy_pct": (dims, np.asarray(entropy_pct, float)),
            "entropy": (dims, np.asarray(entropy_pct, float) / 100),
        },
        coords={
            "step": np.arange(s),
            "layer": [f"layer{i}" for i in range(n_layers)],
            "kind": ("layer", list(kinds)[:n_layers]),
            "block": ("layer", ["down.0"] * n_layers),
            "index": ("layer", [1] * n_layers),
            "head": np.arange(h),
            "frame": np.arange(f),
        },
    )


def make_table(
    values: dict,
    metrics=("ssim", "temporal_ssim", "dynamic_degree"),
    prompts=("p0", "p1"),
    seeds=(0,),
    kinds=None,
):
    """Sweep-shaped table. ``values``: ``{(layer, kind, block, index, replacement): {metric: value}}``;
    the baseline (all metrics) is ``{"ssim": 1, "temporal_ssim": 0.9, "dynamic_degree": 1.0}``."""
    base = {"ssim": 1.0, "temporal_ssim": 0.9, "dynamic_degree": 1.0}
    rows = [("", "", "", -1, "none", base)] + [(*key, val) for key, val in values.items()]
    data = np.array(
        [[[[row[5].get(m, base[m]) for m in metrics] for row in rows] for _ in seeds] for _ in prompts]
    )
    return xr.Dataset(
        {"value": (("prompt", "seed", "perturbation", "metric"), data)},
        coords={
            "prompt": list(prompts),
            "seed": list(seeds),
            "metric": list(metrics),
            "perturbation": ["baseline"] + [f"{r[0]}:{r[4]}" for r in rows[1:]],
            "layer": ("perturbation", [r[0] for r in rows]),
            "kind": ("perturbation", [r[1] for r in rows]),
            "block": ("perturbation", [r[2] for r in rows]),
            "index": ("perturbation", [r[3] for r in rows]),
            "replacement": ("perturbation", [r[4].split("(")[0] for r in rows]),
            "lam": ("perturbation", [np.nan] + [_lam(r[4]) for r in rows[1:]]),
        },
    )


def _lam(rep: str) -> float:
    """λ of a replacement label: identity 1, uniform 0, ``mix(x)`` x."""
    return {"identity": 1.0, "uniform": 0.0}.get(rep) if "(" not in rep else float(rep[4:-1])


def paper_like_table():
    """Spatial layers 1..4 (3 = mid) and an 'all temporal' group behaving as the paper says."""
    v = {}
    ssim = {1: (-0.2, -0.05), 2: (-0.02, -0.01), 3: (-0.01, -0.1), 4: (-0.5, -0.02)}  # (I, U)
    for i, (d_i, d_u) in ssim.items():
        block = "mid" if i == 3 else ("down.0" if i < 3 else "up.3")
        v[(f"s{i}", "spatial", block, i, "identity")] = {
            "ssim": 1 + d_i,
            "temporal_ssim": 0.9 - (0.3 if i == 4 else 0.01),
        }
        v[(f"s{i}", "spatial", block, i, "uniform")] = {"ssim": 1 + d_u}
    v[("temporal.all", "temporal", "", -1, "uniform")] = {"dynamic_degree": 0.2}
    v[("temporal.all", "temporal", "", -1, "identity")] = {"dynamic_degree": 3.0, "temporal_ssim": 0.5}
    for lam, dd in ((0.25, 0.6), (0.5, 1.1), (0.75, 2.0)):  # motion grows with λ
        v[("temporal.all", "temporal", "", -1, f"mix({lam:g})")] = {"dynamic_degree": dd}
    return make_table(v)


def test_energy_violations_hand_count():
    # 1 step, 2 layers, 1 head, 3 frames: bounds U=1, I=4; energies chosen per cell
    energy = [[[[2.0, 0.5, 4.0]], [[5.0, 0.9, 1.0]]]]
    stats = make_stats(energy, np.full((1, 2, 1, 3), 4.0), np.full((1, 2, 1, 3), 1.0))
    table = fd.energy_bound_violations(stats)
    # layer0: 0.5 < 1 (below); 4.0 == I is not a violation. layer1: 5 > 4 (above), 0.9 < 1 (below); 1.0 == U fine
    assert table["below_uniform"].tolist() == [1, 1]
    assert table["above_identity"].tolist() == [0, 1]
    assert table["violations"].tolist() == [1, 2]
    assert table["n"].tolist() == [3, 3]
    assert table["rate"].tolist() == pytest.approx([1 / 3, 2 / 3])
    summary = fd.violation_summary(stats)
    assert summary.loc["spatial", "violations"] == 1 and summary.loc["temporal", "violations"] == 2


def test_energy_violation_tolerance_and_nan():
    stats = make_stats([[[[1.0 - 1e-9, np.nan]]]], [[[[2.0, 2.0]]]], [[[[1.0, 1.0]]]], kinds=("spatial",))
    table = fd.energy_bound_violations(stats)
    assert table["violations"].tolist() == [0]  # rounding-size undershoot is not a violation
    assert table["n"].tolist() == [1]  # the NaN cell is not counted


def test_energy_position_and_missing_var():
    stats = make_stats([[[[2.0]]]], [[[[5.0]]]], [[[[1.0]]]], kinds=("spatial",))
    assert fd.energy_position(stats).item() == pytest.approx(0.25)
    with pytest.raises(KeyError, match="energy_identity"):
        fd.energy_bound_violations(stats.drop_vars("energy_identity"))


def test_entropy_share_hand_count():
    # temporal layer: 2 steps × 2 heads = 4 maps, frame means 95, 95, 80, 91 → 3 of 4 ≥ 90
    pct = np.zeros((2, 2, 2, 2))
    pct[:, 1] = [[[90, 100], [95, 95]], [[70, 90], [91, 91]]]
    stats = make_stats(
        np.ones_like(pct), np.ones_like(pct) * 2, np.ones_like(pct) * 0.5, pct, kinds=("spatial", "temporal")
    )
    assert fd.entropy_share(stats, "temporal", 90) == pytest.approx(0.75)
    assert np.isnan(fd.entropy_share(stats, "joint"))


def test_metric_change_subtracts_baseline():
    table = make_table({("s1", "spatial", "down.0", 1, "identity"): {"ssim": 0.7}})
    change = fd.metric_change(table, "ssim")
    assert list(change["perturbation"].values) == ["s1:identity"]
    np.testing.assert_allclose(change.values, -0.3)
    with pytest.raises(KeyError, match="lpips"):
        fd.metric_change(table, "lpips")
    with pytest.raises(TypeError, match="value"):
        fd.metric_change(table.rename({"value": "x"}), "ssim")


def test_check_findings_paper_like_table_holds():
    pct = np.full((2, 2, 1, 2), 95.0)
    stats = make_stats(
        np.full((2, 2, 1, 2), 1.1),
        np.full((2, 2, 1, 2), 3.0),
        np.ones((2, 2, 1, 2)),
        pct,
        kinds=("spatial", "temporal"),
    )
    checks = fd.check_findings(paper_like_table(), stats).set_index("id")
    assert checks.loc["1a", "effect"] == pytest.approx(-0.5 - -0.02)
    expected = {
        "1a": "yes",
        "1b": "yes",
        "1c": "yes",
        "1d": "yes",
        "2": "yes",
        "3a": "yes",
        "3b": "yes",
        "3c": "yes",
        "3d": "yes",
        "4a": "yes",
        "4b": "yes",
        "4c": "yes",
    }
    assert checks["holds"].to_dict() == expected
    assert checks.loc["3a", "effect"] == pytest.approx(-0.8)
    assert checks.loc["3d", "effect"] == pytest.approx(1.0)  # ranks of λ and of Δ agree exactly
    curve = fd.lambda_curve(paper_like_table(), "dynamic_degree")
    assert list(curve.index) == [0.0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(curve.values, [-0.8, -0.4, 0.1, 1.0, 2.0])
    assert checks.loc["4b", "effect"] == pytest.approx(0.05)


def test_lambda_check_fails_when_motion_is_not_monotonic():
    table = paper_like_table()
    table["value"].loc[dict(perturbation="temporal.all:mix(0.5)", metric="dynamic_degree")] = 0.1  # dip
    checks = fd.check_findings(table, None).set_index("id")
    assert checks.loc["3d", "holds"] == "no" and checks.loc["3d", "effect"] < 1.0


def test_check_findings_detects_failures():
    # last spatial layer: U hurts more than I; temporal U adds motion; energies above E(IV)
    v = {
        ("s1", "spatial", "down.0", 1, "identity"): {"ssim": 0.99},
        ("s1", "spatial", "down.0", 1, "uniform"): {"ssim": 0.98},
        ("s2", "spatial", "up.3", 2, "identity"): {"ssim": 0.95},
        ("s2", "spatial", "up.3", 2, "uniform"): {"ssim": 0.5},
        ("temporal.all", "temporal", "", -1, "uniform"): {"dynamic_degree": 2.0},
    }
    stats = make_stats(
        np.full((1, 1, 1, 2), 5.0), np.full((1, 1, 1, 2), 3.0), np.ones((1, 1, 1, 2)), kinds=("spatial",)
    )
    checks = fd.check_findings(make_table(v), stats).set_index("id")
    assert checks.loc["1a", "holds"] == "no"
    assert checks.loc["1c", "holds"] == "n/a"  # only first and last layers: nothing to compare with
    assert checks.loc["3a", "holds"] == "no"
    assert checks.loc["3b", "holds"] == "n/a"  # no identity row for the temporal group
    assert checks.loc["4a", "holds"] == "n/a"  # no temporal layer in the stats
    assert checks.loc["4c", "holds"] == "no" and checks.loc["4c", "effect"] == 1.0


def test_check_findings_without_inputs_and_markdown():
    checks = fd.check_findings(None, None)
    assert set(checks["holds"]) == {"n/a"}
    text = fd.findings_markdown(checks, "Findings", {"model": "x"})
    assert text.startswith("## Findings") and "- model: x" in text
    assert text.count("\n| ") == len(checks) + 1


def test_findings_perturbations_and_run_on_a_tiny_model(animatediff, tmp_path):
    table = ia.attention_layers(animatediff)
    last = table[table.kind == "spatial"].name.iloc[-1]
    made = fd.findings_perturbations(animatediff, kinds=("spatial",))
    assert len(made) == 2 * (16 + 1) + 3 and {"spatial.16:identity", "temporal.all:mix(0.5)"} <= set(made)
    assert made["temporal.all:uniform"].layers.resolve(table) == list(table[table.kind == "temporal"].name)
    store = tmp_path / "findings.zarr"
    kw = dict(store=store, layers=[last], progress=False, guidance_scale=1.0, seeds=[3], **KW)
    checks, ds, stats = fd.run_findings_check(animatediff, ["a red circle"], **kw)
    assert list(ds.perturbation.values) == [
        "baseline", "spatial.16:identity", "spatial.16:uniform", "temporal.all:identity", "temporal.all:uniform",
        "temporal.all:mix(0.25)", "temporal.all:mix(0.5)", "temporal.all:mix(0.75)",
    ]
    assert bool(ds["done"].all()) and list(ds.metric.values) == list(fd.FINDINGS_METRICS)
    # the stats are the sweep's stored baseline trace: equal to a fresh trace of the same prompt and seed
    fresh = ia.trace(animatediff, "a red circle", seed=3, guidance_scale=1.0, **KW).stats
    np.testing.assert_allclose(stats["entropy"].values, fresh["entropy"].values, rtol=1e-6)
    value = ds["value"].sel(prompt="a red circle", seed=3, metric="ssim")
    expected = float(value.sel(perturbation="spatial.16:identity") - value.sel(perturbation="spatial.16:uniform"))
    checks = checks.set_index("id")
    assert checks.loc["1a", "effect"] == pytest.approx(expected)
    assert checks.loc["1a", "holds"] == ("yes" if expected < 0 else "no")
    dd = ds["value"].sel(prompt="a red circle", seed=3, metric="dynamic_degree")
    assert checks.loc["3a", "effect"] == pytest.approx(
        float(dd.sel(perturbation="temporal.all:uniform") - dd.sel(perturbation="baseline"))
    )
    session = ds["session"].values.copy()
    again = fd.run_findings_check(animatediff, ["a red circle"], **kw)[1]  # resumed: nothing recomputed
    np.testing.assert_array_equal(again["session"].values, session)
    with pytest.raises(ValueError, match="different|another|config"):
        fd.run_findings_check(animatediff, ["a blue square"], **kw)


def test_findings_frame_columns():
    checks = fd.check_findings(paper_like_table(), None)
    assert list(checks.columns) == ["id", "finding", "measure", "effect", "holds", "detail"]
    assert isinstance(checks, pd.DataFrame)


def test_bootstrap_intervals_cover_the_spread_of_pairs():
    # 3a: Δ dynamic_degree of temporal.all ← U is −0.8 for p0 and −0.2 for p1, so resampled means lie in [−0.8, −0.2]
    table = paper_like_table()
    table["value"].loc[dict(prompt="p1", perturbation="temporal.all:uniform", metric="dynamic_degree")] = 0.8
    intervals = fd.bootstrap_intervals(table, n_boot=300, seed=1)
    low, high = intervals.loc["3a", ["ci_low", "ci_high"]]
    assert -0.8 - 1e-9 <= low < -0.5 < high <= -0.2 + 1e-9
    assert intervals.loc["3a", "n_pairs"] == 2
    assert "4a" not in intervals.index  # stats-based: no interval
    # 1a: identical across the two prompts → a zero-width interval at the point estimate
    point = fd.check_findings(table, None).set_index("id").loc["1a", "effect"]
    assert intervals.loc["1a", "ci_low"] == pytest.approx(point) and intervals.loc["1a", "ci_high"] == pytest.approx(point)
    checks = fd.with_intervals(fd.check_findings(table, None), intervals)
    text = fd.findings_markdown(checks)
    assert "95 % interval" in text and "bootstrap over the 2 (prompt, seed) pairs" in text
    with pytest.raises(ValueError, match="level"):
        fd.bootstrap_intervals(table, level=1.5)
