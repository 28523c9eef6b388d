"""Quality tables (paper Tables 1/2/4): means, paired deltas, bootstrap intervals, per-prompt average ranks."""

import numpy as np
import pandas as pd
import pytest

from ieadapt_interp.analysis.quality import compact, guidance_curve, long_table, quality_table


def _data():
    rows = []
    # 3 prompts × 2 seeds; method "up" is original + 0.1 everywhere, "down" original − 0.2; metric b: lower wins
    for p, base in zip("xyz", (0.2, 0.5, 0.9)):
        for seed in (0, 1):
            for method, shift in (("original", 0.0), ("up", 0.1), ("down", -0.2)):
                rows.append((p, seed, method, "a", base + 0.01 * seed + shift))
                rows.append((p, seed, method, "b", base + shift))
    return pd.DataFrame(rows, columns=["prompt", "seed", "method", "metric", "value"])


def test_means_deltas_ranks_against_hand_computed():
    table = quality_table(_data(), lower_is_better=["b"], n_boot=500)
    assert list(table.index) == ["original", "up", "down"]
    a = table["a"]
    base = (0.2 + 0.5 + 0.9) / 3 + 0.005  # prompt bases, seed offsets 0 and 0.01
    np.testing.assert_allclose(a["mean"], [base, base + 0.1, base - 0.2])
    np.testing.assert_allclose(a["delta"], [0.0, 0.1, -0.2], atol=1e-12)
    # a constant paired difference has a zero-width interval; means have a real one that covers the mean
    np.testing.assert_allclose(a["delta_low"], a["delta"], atol=1e-12)
    np.testing.assert_allclose(a["delta_high"], a["delta"], atol=1e-12)
    assert ((a["ci_low"] < a["mean"]) & (a["mean"] < a["ci_high"])).all()
    assert a["rank"].tolist() == [2.0, 1.0, 3.0]            # higher is better
    assert table[("b", "rank")].tolist() == [2.0, 3.0, 1.0]  # lower is better
    assert table[("all", "avg_rank")].tolist() == [2.0, 2.0, 2.0]


def test_bootstrap_interval_matches_a_naive_loop():
    data = _data()
    table = quality_table(data, ["a"], n_boot=300, seed=7)
    wide = data[data.metric == "a"].pivot_table(index=["prompt", "seed"], columns="method", values="value")
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(wide), size=(300, len(wide)))
    means = [wide["up"].to_numpy()[i].mean() for i in idx]  # one resample at a time
    assert table.loc["up", ("a", "ci_low")] == pytest.approx(np.quantile(means, 0.025))
    assert table.loc["up", ("a", "ci_high")] == pytest.approx(np.quantile(means, 0.975))


def test_sweep_dataset_and_compact_and_curve():
    import xarray as xr

    values = np.arange(2 * 1 * 3 * 1, dtype=float).reshape(2, 1, 3, 1)
    ds = xr.Dataset({"value": (("prompt", "seed", "perturbation", "metric"), values),
                     "done": (("prompt", "seed", "perturbation"), np.ones((2, 1, 3), bool))},
                    coords={"prompt": ["p", "q"], "seed": [0], "perturbation": ["baseline", "UI|l*|s=1", "UI|l*|s=2"],
                            "metric": ["shape_match"]})
    df = long_table(ds)
    assert set(df.method) == {"original", "UI|l*|s=1", "UI|l*|s=2"} and len(df) == 6
    assert "[" in compact(quality_table(ds, n_boot=50)).iloc[0, 0]
    assert len(guidance_curve(ds, "shape_match").axes) == 1
    with pytest.raises(ValueError, match="missing"):
        long_table(pd.DataFrame({"prompt": []}))
