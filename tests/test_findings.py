"""Findings checks and stats summaries on constructed datasets (hand-counted), on stats recorded from hand-built
attention calls whose maps are known, plus one tiny-pipeline table."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import ieadapt_interp as ia
from ieadapt_interp import findings as fd

KW = {"num_frames": 4, "height": 16, "width": 16, "num_inference_steps": 2}


ENTROPY_BINS_N, ENERGY_BINS_N = 20, 12


def make_stats(energy, identity, uniform, entropy_pct=None, kinds=("spatial", "temporal", "cross"),
               entropy_hist=None, energy_hist=None):
    """Stats Dataset (step, layer, head, frame) from arrays of that shape; the per-map histograms
    ``entropy_hist`` / ``energy_hist`` are ``{layer position: counts}`` put at step 0, head 0 (default: none)."""
    energy = np.asarray(energy, float)
    dims = ("step", "layer", "head", "frame")
    s, n_layers, h, f = energy.shape
    if entropy_pct is None:
        entropy_pct = np.full(energy.shape, 50.0)
    data = {
        "energy": (dims, energy),
        "energy_identity": (dims, np.asarray(identity, float)),
        "energy_uniform": (dims, np.asarray(uniform, float)),
        "entropy_pct": (dims, np.asarray(entropy_pct, float)),
        "entropy": (dims, np.asarray(entropy_pct, float) / 100),
    }
    for var, dim, n, given in (("map_entropy_hist", "entropy_bin", ENTROPY_BINS_N, entropy_hist),
                               ("map_energy_hist", "energy_bin", ENERGY_BINS_N, energy_hist)):
        hist = np.zeros((s, n_layers, h, n))
        for layer, counts in (given or {}).items():
            hist[0, layer, 0] = counts
        data[var] = (("step", "layer", "head", dim), hist)
    return xr.Dataset(
        data,
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


def bins(n: int, **counts) -> np.ndarray:
    """Histogram counts: ``bins(20, b19=3)`` puts 3 maps in bin 19."""
    out = np.zeros(n)
    for key, value in counts.items():
        out[int(key[1:])] = value
    return out


# ------------------------------------------------------------------ stats recorded from hand-built attention calls
F_, P_, D_ = 4, 6, 8  # frames, spatial positions, head dim


def _call(layer, identity: set[int], n_batch: int, n_tokens: int, step: int = 0):
    """One attention call through the real StatsRecorder: batch elements in ``identity`` have map I, the rest U."""
    from ieadapt_interp.core.entropy import sdpa_with_entropy
    from ieadapt_interp.core.handlers import CallContext, StatsRecorder
    from ieadapt_interp.core.layouts import get_layout

    q, k = torch.zeros(n_batch, 1, n_tokens, D_), torch.zeros(n_batch, 1, n_tokens, D_)
    for b in identity:
        q[b, 0, :, :n_tokens] = 1e4 * torch.eye(n_tokens)  # scores 1e8 on the diagonal: softmax = I exactly
        k[b, 0, :, :n_tokens] = torch.eye(n_tokens)
    v = torch.randn(n_batch, 1, n_tokens, D_, generator=torch.Generator().manual_seed(step))
    out, ent = sdpa_with_entropy(q, k, v, None, D_**-0.5, sdpa=torch.nn.functional.scaled_dot_product_attention)
    ctx = CallContext(layer, step, [("cond", 0)], n_batch, get_layout(layer.layout), F_, 0, q, k, v, None, D_**-0.5,
                      out=out, entropy=ent)
    recorder = StatsRecorder([layer.name])
    recorder.after(ctx)
    return recorder.calls[0]


def recorded_stats(temporal_identity: set[int], spatial_identity: set[int] = frozenset()) -> xr.Dataset:
    """A stats Dataset of one spatial layer (one map per frame) and one temporal layer (one F×F map per
    position) whose maps are I at the given frames / positions and U elsewhere (one step, one head)."""
    from ieadapt_interp.core.adapters import AttentionLayer
    from ieadapt_interp.core.stats import stats_dataset

    spatial = AttentionLayer("s", "spatial", "down.0", 1, 1, None)
    temporal = AttentionLayer("t", "temporal", "up.0", 1, 1, None)
    calls = [_call(spatial, spatial_identity, F_, P_), _call(temporal, temporal_identity, P_, F_)]
    return stats_dataset(calls, [spatial, temporal], [999.0], {})


METRICS = ("ssim", "temporal_ssim", "flow_magnitude", "motion_smoothness_flow", "connectedness")
BASE = {"ssim": 1.0, "temporal_ssim": 0.9, "flow_magnitude": 1.0, "motion_smoothness_flow": 0.99, "connectedness": 1.0}


def make_table(values: dict, metrics=METRICS, prompts=("p0", "p1"), seeds=(0,)):
    """Sweep-shaped table. ``values``: ``{(layer, kind, block, index, replacement): {metric: value}}``;
    the baseline (all metrics) is :data:`BASE`."""
    rows = [("", "", "", -1, "none", BASE)] + [(*key, val) for key, val in values.items()]
    data = np.array(
        [[[[row[5].get(m, BASE[m]) for m in metrics] for row in rows] for _ in seeds] for _ in prompts]
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
    """Spatial and temporal layers 1..4 (3 = mid) and an 'all temporal' group behaving as the paper says."""
    v = {}
    ssim = {1: (-0.2, -0.05), 2: (-0.02, -0.01), 3: (-0.01, -0.1), 4: (-0.5, -0.02)}  # (I, U)
    for i, (d_i, d_u) in ssim.items():
        block = "mid" if i == 3 else ("down.0" if i < 3 else "up.3")
        v[(f"s{i}", "spatial", block, i, "identity")] = {
            "ssim": 1 + d_i,
            "temporal_ssim": 0.9 - (0.3 if i == 4 else 0.01),
            "motion_smoothness_flow": 0.99 - (0.05 if i == 4 else 0.001 * i),
        }
        v[(f"s{i}", "spatial", block, i, "uniform")] = {"ssim": 1 + d_u}
    quality = {1: -0.4, 2: -0.1, 3: -0.05, 4: -0.3}  # connectedness under temporal I: worst at the ends
    for i, d_q in quality.items():
        block = "mid" if i == 3 else ("down.0" if i < 3 else "up.3")
        v[(f"t{i}", "temporal", block, i, "identity")] = {"connectedness": 1 + d_q, "ssim": 0.99}
        v[(f"t{i}", "temporal", block, i, "uniform")] = {"ssim": 0.9 if i == 3 else 0.995}
    v[("temporal.all", "temporal", "", -1, "uniform")] = {"flow_magnitude": 0.2}
    v[("temporal.all", "temporal", "", -1, "identity")] = {
        "flow_magnitude": 3.0, "temporal_ssim": 0.5, "motion_smoothness_flow": 0.9,
    }
    for lam, dd in ((0.25, 0.6), (0.5, 1.1), (0.75, 2.0)):  # motion grows with λ
        v[("temporal.all", "temporal", "", -1, f"mix({lam:g})")] = {"flow_magnitude": dd}
    return make_table(v)


IDS = ["1a", "1b", "1c", "1d", "2", "3a", "3b", "3c", "3d", "3e", "3f", "4a", "4b", "4c", "5a", "5b", "5c"]


def test_registry_lists_every_finding_with_its_paper_section():
    assert list(fd.FINDINGS) == IDS
    for finding in fd.FINDINGS.values():
        assert finding.claim and finding.paper.startswith("§") and finding.needs and finding.measure
    assert fd.FINDINGS["2"].needs_significance


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


def test_entropy_share_counts_maps_from_the_histogram():
    # temporal layer: 5 maps at 95–100 %, 1 at 90–95 %, 4 at 50–55 % → 6 of 10 are ≥ 90 %, 5 of 10 ≥ 95 %
    ones = np.ones((1, 2, 1, 2))
    stats = make_stats(ones, 2 * ones, 0.5 * ones, kinds=("spatial", "temporal"),
                       entropy_hist={0: bins(20, b0=7), 1: bins(20, b19=5, b18=1, b10=4)})
    assert fd.entropy_share(stats, "temporal", 90) == pytest.approx(0.6)
    assert fd.entropy_share(stats, "temporal", 95) == pytest.approx(0.5)
    assert fd.entropy_share(stats, "spatial", 90) == 0.0
    assert np.isnan(fd.entropy_share(stats, "joint"))
    with pytest.raises(ValueError, match="bin edge"):
        fd.entropy_share(stats, "temporal", 92)
    with pytest.raises(KeyError, match="map_entropy_hist"):
        fd.entropy_share(stats.drop_vars("map_entropy_hist"), "temporal")


def test_temporal_maps_with_known_per_position_maps():
    # 6 positions; I at 2 of them (entropy 0 %), U at 4 (100 %): 4/6 of the temporal maps are ≥ 90 %
    stats = recorded_stats({0, 3})
    assert fd.entropy_share(stats, "temporal", 90) == pytest.approx(4 / 6)
    checks = fd.check_findings(None, stats).set_index("id")
    assert checks.loc["4a", "effect"] == pytest.approx(4 / 6) and checks.loc["4a", "holds"] == "no"
    # pooled over two runs (the second all U): (4 + 6) / 12 maps; the bootstrap resamples the runs
    both = [stats, recorded_stats(set())]
    checks = fd.check_findings(None, both, n_boot=60).set_index("id")
    assert checks.loc["4a", "effect"] == pytest.approx(10 / 12) and checks.loc["4a", "holds"] == "yes"
    assert checks.loc["4a", "ci_low"] == pytest.approx(4 / 6) and checks.loc["4a", "ci_high"] == pytest.approx(1.0)
    assert checks.loc["4a", "significant"] == "no"  # the interval reaches below 0.70


def test_identity_maps_sit_on_the_upper_bound_without_violating_it():
    # temporal maps I at 3 positions and U at 3; spatial maps I at 2 frames: no map leaves [E(UV), E(IV)]
    stats = recorded_stats({0, 1, 2}, spatial_identity={1, 2})
    checks = fd.check_findings(None, stats).set_index("id")
    assert checks.loc["4c", "effect"] == 0.0 and checks.loc["4c", "holds"] == "yes"
    assert "0 below E(UV), 0 above E(IV) of 10" in checks.loc["4c", "detail"]
    assert "outside the bounds (±0.001 of the span): 0 of 2" in checks.loc["4c", "detail"]
    # spatial: 2 of 4 frame maps at U (position 0 → near E(UV)), 2 at I (position 1): share 0.5 is not > 0.5
    assert checks.loc["4b", "effect"] == pytest.approx(0.5) and checks.loc["4b", "holds"] == "no"


def test_energy_check_judges_whole_maps_with_a_tolerance():
    # spatial layer: 97 maps inside, 3 above E(IV) (3 % ≤ 5 %); layer totals inside → holds; the per-cell count
    # (the old unit) is kept as detail
    one = np.ones((1, 1, 1, 2))
    inside = make_stats(2 * one, 3 * one, one, kinds=("spatial",), energy_hist={0: bins(12, b1=80, b2=10, b5=7, b11=3)})
    checks = fd.check_findings(None, inside).set_index("id")
    assert checks.loc["4c", "effect"] == pytest.approx(0.03) and checks.loc["4c", "holds"] == "yes"
    assert checks.loc["4b", "effect"] == pytest.approx(0.90)  # bins [-tol, 0.1) and [0.1, 0.2): 90 of 100
    # 10 % of the maps below E(UV) → fails; so does a layer whose total energy exceeds E(IV)
    many = make_stats(2 * one, 3 * one, one, kinds=("spatial",), energy_hist={0: bins(12, b0=10, b5=90)})
    assert fd.check_findings(None, many).set_index("id").loc["4c", "holds"] == "no"
    over = make_stats(4 * one, 3 * one, one, kinds=("spatial",), energy_hist={0: bins(12, b5=100)})
    row = fd.check_findings(None, over).set_index("id").loc["4c"]
    assert row["holds"] == "no" and "1 of 1 ['layer0']" in row["detail"] and "0 below, 2 above of 2" in row["detail"]


def test_metric_change_subtracts_baseline():
    table = make_table({("s1", "spatial", "down.0", 1, "identity"): {"ssim": 0.7}})
    change = fd.metric_change(table, "ssim")
    assert list(change["perturbation"].values) == ["s1:identity"]
    np.testing.assert_allclose(change.values, -0.3)
    with pytest.raises(KeyError, match="lpips"):
        fd.metric_change(table, "lpips")
    with pytest.raises(TypeError, match="value"):
        fd.metric_change(table.rename({"value": "x"}), "ssim")


def paper_like_stats():
    one = np.ones((2, 2, 1, 2))
    return make_stats(1.1 * one, 3.0 * one, one, np.full((2, 2, 1, 2), 95.0), kinds=("spatial", "temporal"),
                      entropy_hist={0: bins(20, b10=8), 1: bins(20, b19=8, b5=2)},
                      energy_hist={0: bins(12, b1=8), 1: bins(12, b1=4, b10=4)})


def test_check_findings_paper_like_table_holds():
    checks = fd.check_findings(paper_like_table(), paper_like_stats()).set_index("id")
    assert list(checks.index) == IDS
    assert checks.loc["1a", "effect"] == pytest.approx(-0.5 - -0.02)
    expected = {i: "yes" for i in IDS[:14]} | {"5a": "n/a", "5b": "n/a", "5c": "n/a"}
    assert checks["holds"].to_dict() == expected
    assert checks.loc["2", "effect"] == pytest.approx(-0.05)
    assert checks.loc["3a", "effect"] == pytest.approx(-0.8)
    assert checks.loc["3c", "effect"] == pytest.approx(-0.09)  # motion smoothness, not temporal SSIM
    assert "Δtemporal_ssim -0.4000" in checks.loc["3c", "detail"]
    assert checks.loc["3d", "effect"] == pytest.approx(1.0)  # ranks of λ and of Δ agree exactly
    assert checks.loc["3e", "effect"] == pytest.approx(0.3 - 0.1)  # min(first, last) − max(others)
    assert checks.loc["3f", "effect"] == pytest.approx(-0.1 - -0.01)
    assert checks.loc["4a", "effect"] == pytest.approx(0.8)
    assert checks.loc["4b", "effect"] == pytest.approx(1.0)
    assert "joint" in checks.loc["5a", "detail"]
    curve = fd.lambda_curve(paper_like_table(), "flow_magnitude")
    assert list(curve.index) == [0.0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(curve.values, [-0.8, -0.4, 0.1, 1.0, 2.0])


def test_check_2_needs_the_last_layer_first_and_significant():
    table = paper_like_table()
    # another spatial layer declines more: the last is not first
    table["value"].loc[dict(perturbation="s2:identity", metric="motion_smoothness_flow")] = 0.5
    row = fd.check_findings(table, None).set_index("id").loc["2"]
    assert row["holds"] == "no" and "rank of layer 4 by decline 2 of 4" in row["detail"]
    # the last layer declines most on average, but one prompt rises: the interval includes 0 → not significant
    table = paper_like_table()
    table["value"].loc[dict(prompt="p1", perturbation="s4:identity", metric="motion_smoothness_flow")] = 1.0
    point = fd.check_findings(table, None).set_index("id").loc["2"]
    assert point["effect"] < 0 and point["holds"] == "yes"  # point estimate alone
    row = fd.check_findings(table, None, n_boot=60).set_index("id").loc["2"]
    assert row["ci_low"] < 0 < row["ci_high"] and row["significant"] == "no" and row["holds"] == "no"
    row = fd.check_findings(paper_like_table(), None, n_boot=20).set_index("id").loc["2"]
    assert row["significant"] == "yes" and row["holds"] == "yes"


def test_lambda_check_fails_when_motion_is_not_monotonic():
    table = paper_like_table()
    table["value"].loc[dict(perturbation="temporal.all:mix(0.5)", metric="flow_magnitude")] = 0.1  # dip
    checks = fd.check_findings(table, None).set_index("id")
    assert checks.loc["3d", "holds"] == "no" and checks.loc["3d", "effect"] < 1.0


def test_check_findings_detects_failures():
    # last spatial layer: U hurts more than I; temporal U adds motion; energies above E(IV)
    v = {
        ("s1", "spatial", "down.0", 1, "identity"): {"ssim": 0.99},
        ("s1", "spatial", "down.0", 1, "uniform"): {"ssim": 0.98},
        ("s2", "spatial", "up.3", 2, "identity"): {"ssim": 0.95},
        ("s2", "spatial", "up.3", 2, "uniform"): {"ssim": 0.5},
        ("temporal.all", "temporal", "", -1, "uniform"): {"flow_magnitude": 2.0},
    }
    one = np.ones((1, 1, 1, 2))
    stats = make_stats(5 * one, 3 * one, one, kinds=("spatial",), energy_hist={0: bins(12, b11=2)})
    checks = fd.check_findings(make_table(v), stats).set_index("id")
    assert checks.loc["1a", "holds"] == "no"
    assert checks.loc["1c", "holds"] == "n/a"  # only first and last layers: nothing to compare with
    assert checks.loc["3a", "holds"] == "no"
    assert checks.loc["3b", "holds"] == "n/a"  # no identity row for the temporal group
    assert "no temporal ← identity" in checks.loc["3b", "detail"]
    assert checks.loc["3e", "holds"] == "n/a" and "single-layer temporal" in checks.loc["3e", "detail"]
    assert checks.loc["4a", "holds"] == "n/a"  # no temporal layer in the stats
    assert checks.loc["4c", "holds"] == "no" and checks.loc["4c", "effect"] == 1.0


def test_every_table_lists_every_finding_with_reasons():
    without = fd.check_findings(None, None)
    assert list(without["id"]) == IDS and set(without["holds"]) == {"n/a"}
    assert all(d.startswith("n/a: ") for d in without["detail"])
    no_metric = paper_like_table().sel(metric=["ssim", "flow_magnitude"])
    checks = fd.check_findings(no_metric, None).set_index("id")
    assert list(checks.index) == IDS
    assert checks.loc["3c", "holds"] == "n/a" and "motion_smoothness_flow" in checks.loc["3c", "detail"]
    assert checks.loc["2", "holds"] == "n/a"
    text = fd.findings_markdown(fd.check_findings(no_metric, None, n_boot=5), "Findings", {"model": "x"})
    assert text.startswith("## Findings") and "- model: x" in text
    assert all(f"| {i} |" in text for i in IDS)
    assert "(§3.2)" in text and "significant" in text


def test_findings_perturbations_and_run_on_a_tiny_model(animatediff, tmp_path):
    table = ia.attention_layers(animatediff)
    last = table[table.kind == "spatial"].name.iloc[-1]
    n_temporal = int((table.kind == "temporal").sum())
    made = fd.findings_perturbations(animatediff)
    assert len(made) == 2 * (16 + n_temporal + 1) + 3
    assert {"spatial.16:identity", f"temporal.{n_temporal}:uniform", "temporal.all:mix(0.5)"} <= set(made)
    assert made["temporal.all:uniform"].layers.resolve(table) == list(table[table.kind == "temporal"].name)
    store = tmp_path / "findings.zarr"
    kw = dict(store=store, layers=[last], progress=False, guidance_scale=1.0, seeds=[3], n_boot=20, **KW)
    checks, ds, stats = fd.run_findings_check(animatediff, ["a red circle"], **kw)
    assert list(ds.perturbation.values) == [
        "baseline", "spatial.16:identity", "spatial.16:uniform", "temporal.all:identity", "temporal.all:uniform",
        "temporal.all:mix(0.25)", "temporal.all:mix(0.5)", "temporal.all:mix(0.75)",
    ]
    assert bool(ds["done"].all()) and list(ds.metric.values) == list(fd.FINDINGS_METRICS)
    # the stats are the sweep's stored baseline traces: equal to a fresh trace of the same prompt and seed
    assert len(stats) == 1
    fresh = ia.trace(animatediff, "a red circle", seed=3, guidance_scale=1.0, **KW).stats
    np.testing.assert_allclose(stats[0]["entropy"].values, fresh["entropy"].values, rtol=1e-6)
    value = ds["value"].sel(prompt="a red circle", seed=3, metric="ssim")
    expected = float(value.sel(perturbation="spatial.16:identity") - value.sel(perturbation="spatial.16:uniform"))
    checks = checks.set_index("id")
    assert list(checks.index) == IDS
    assert checks.loc["1a", "effect"] == pytest.approx(expected)
    assert checks.loc["1a", "holds"] == ("yes" if expected < 0 else "no")
    dd = ds["value"].sel(prompt="a red circle", seed=3, metric="flow_magnitude")
    assert checks.loc["3a", "effect"] == pytest.approx(
        float(dd.sel(perturbation="temporal.all:uniform") - dd.sel(perturbation="baseline"))
    )
    assert checks.loc["4a", "effect"] == pytest.approx(fd.entropy_share(fresh, "temporal", 90))
    assert checks.loc["5a", "holds"] == "n/a"  # a UNet has no joint layers
    session = ds["session"].values.copy()
    again = fd.run_findings_check(animatediff, ["a red circle"], **kw)[1]  # resumed: nothing recomputed
    np.testing.assert_array_equal(again["session"].values, session)
    with pytest.raises(ValueError, match="different|another|config"):
        fd.run_findings_check(animatediff, ["a blue square"], **kw)


def test_findings_frame_columns():
    checks = fd.check_findings(paper_like_table(), None)
    assert list(checks.columns) == ["id", "finding", "paper", "measure", "effect", "holds", "detail"]
    assert isinstance(checks, pd.DataFrame)


def test_bootstrap_intervals_cover_the_spread_of_pairs():
    # 3a: Δ flow_magnitude of temporal.all ← U is −0.8 for p0 and −0.2 for p1, so resampled means lie in [−0.8, −0.2]
    table = paper_like_table()
    table["value"].loc[dict(prompt="p1", perturbation="temporal.all:uniform", metric="flow_magnitude")] = 0.8
    intervals = fd.bootstrap_intervals(table, n_boot=60, seed=1)
    low, high = intervals.loc["3a", ["ci_low", "ci_high"]]
    assert -0.8 - 1e-9 <= low < -0.5 < high <= -0.2 + 1e-9
    assert intervals.loc["3a", "n_pairs"] == 2
    assert "4a" not in intervals.index  # no stats given: no effect, no interval
    # 1a: identical across the two prompts → a zero-width interval at the point estimate
    point = fd.check_findings(table, None).set_index("id").loc["1a", "effect"]
    assert intervals.loc["1a", "ci_low"] == pytest.approx(point) and intervals.loc["1a", "ci_high"] == pytest.approx(point)
    checks = fd.with_intervals(fd.check_findings(table, None), intervals)
    text = fd.findings_markdown(checks)
    assert "95 % interval" in text and "bootstrap over the 2 (prompt, seed) pairs" in text
    with pytest.raises(ValueError, match="level"):
        fd.bootstrap_intervals(table, level=1.5)


def test_bootstrap_intervals_equal_a_naive_loop_over_draws():
    # each draw measured afresh (no reuse of repeated draws), with the same generator: the same quantiles exactly
    table = paper_like_table()
    table["value"].loc[dict(prompt="p1", perturbation="temporal.all:uniform", metric="flow_magnitude")] = 0.8
    rng, pairs, draws = np.random.default_rng(3), fd._pairs(table), []
    for _ in range(12):
        take = rng.integers(0, 2, 2)
        sub = pairs.isel(prompt=take).assign_coords(prompt=np.arange(2))
        draws.append(fd.measure_findings(fd.Evidence(sub, None, 0)).set_index("id")["effect"])
    samples = pd.concat(draws, axis=1)
    intervals = fd.bootstrap_intervals(table, n_boot=12, seed=3)
    expected = samples.quantile(0.025, axis=1).dropna()
    pd.testing.assert_series_equal(intervals["ci_low"], expected, check_names=False)
    pd.testing.assert_series_equal(intervals["ci_high"], samples.quantile(0.975, axis=1).dropna(), check_names=False)
