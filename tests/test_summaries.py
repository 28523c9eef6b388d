"""One implementation per summary: every consumer of per-layer summaries (accessor, findings, presets,
figures, explorer) gives the same numbers on stats with two samples and both CFG branches, equal to a naive
numpy reference; the registry and L_edit choose among self-attention layers only by default."""

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import ieadapt_interp as ia
from ieadapt_interp.analysis import explorer, figures, findings
from ieadapt_interp.core.accessor import ENERGY_RTOL, SELF_ATTENTION
from ieadapt_interp.sweeps import presets


@pytest.fixture(scope="module")
def run():
    """Two samples (unperturbed, temporal ← U) × both CFG branches, every layer recorded."""
    pipe = ia.tiny_pipeline("animatediff")
    return ia.trace(pipe, "a red circle", variants=[None, ia.uniform("temporal")], branch="both",
                    guidance_scale=3.0, num_frames=2, height=16, width=16, num_inference_steps=1)


def _naive_layer_means(stats: xr.Dataset, var: str = "entropy_pct") -> np.ndarray:
    """fp64 numpy: per layer, the mean over every other axis (every sample, branch, step, head, frame)."""
    da = stats[var].transpose("layer", ...)
    values = da.values.astype(np.float64).reshape(da.sizes["layer"], -1)
    with warnings.catch_warnings():  # a layer with one key has no defined entropy: all-NaN → NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=1)


def test_the_fixture_has_two_samples_and_both_branches(run):
    stats = run.stats
    assert stats.sizes["sample"] == 2 and list(stats["branch"].values) == ["cond", "uncond"]
    # the rows differ, so "sample 0 of the first branch" and "all rows pooled" are different answers
    first = stats["entropy_pct"].isel(sample=0).sel(branch="cond").mean(["step", "head", "frame"]).values
    assert not np.allclose(first, _naive_layer_means(stats), equal_nan=True)


def test_every_consumer_gives_the_same_layer_means(run):
    stats = run.stats
    reference = _naive_layer_means(stats)
    layers = [str(x) for x in stats["layer"].values]
    got = {
        "accessor.layer_means": stats.ieadapt.layer_means()["mean"].to_numpy(),
        "accessor.layer_entropy": stats.ieadapt.layer_entropy().values,
        "accessor.layer_summary": stats.ieadapt.layer_summary()["entropy_pct"].to_numpy(),
        "findings.layer_means": findings.layer_means(stats)["mean"].to_numpy(),
        "presets.layer_entropy": presets.layer_entropy(stats)[layers].to_numpy(),
        "figures.entropy_by_layer": figures.entropy_by_layer(stats, kinds=None).data["mean"].to_numpy(),
        # one denoising step: the heatmap's (layer × step) cells are the per-layer means
        "figures.entropy_heatmap": figures.entropy_heatmap(stats, kinds=None).data.sel(step=0).values,
        "accessor.plot_entropy": stats.ieadapt.plot_entropy(kinds=None).data.sel(step=0).values,
        "explorer.static_views": explorer.static_views(run, kinds=None)["entropy_heatmap"].data.sel(step=0).values,
    }
    for name, values in got.items():
        np.testing.assert_allclose(values, reference, rtol=1e-6, equal_nan=True, err_msg=name)


def test_rows_select_one_branch_or_sample(run):
    stats = run.stats
    cond0 = stats["entropy_pct"].sel(branch="cond").isel(sample=0)
    reference = cond0.mean(["step", "head", "frame"]).values
    rows = {"branch": "cond", "sample": 0}
    np.testing.assert_allclose(stats.ieadapt.layer_means(rows=rows)["mean"], reference, equal_nan=True)
    np.testing.assert_allclose(findings.layer_means(stats, rows=rows)["mean"], reference, equal_nan=True)
    np.testing.assert_allclose(presets.layer_entropy(stats, rows=rows).values, reference, equal_nan=True)
    uncond = stats["entropy_pct"].sel(branch="uncond").mean(["sample", "step", "head", "frame"]).values
    np.testing.assert_allclose(stats.ieadapt.layer_entropy(rows="uncond").values, uncond, equal_nan=True)
    with pytest.raises(ia.IEAdaptError, match="rows must be"):
        stats.ieadapt.layer_means(rows="both")
    with pytest.raises(ia.IEAdaptError, match="out of range"):
        stats.ieadapt.layer_means(rows={"sample": 2})


def test_energy_bound_checks_agree_and_count_every_row(run):
    stats = run.stats
    e, ei, eu = (stats[v].transpose("layer", ...).values.astype(np.float64).reshape(stats.sizes["layer"], -1)
                 for v in ("energy", "energy_identity", "energy_uniform"))
    valid = np.isfinite(e) & np.isfinite(ei) & np.isfinite(eu)
    below = ((e < eu * (1 - ENERGY_RTOL)) & valid).sum(1)
    above = ((e > ei * (1 + ENERGY_RTOL)) & valid).sum(1)
    for table in (stats.ieadapt.energy_bound_violations(), findings.energy_bound_violations(stats),
                  figures.energy_bounds(stats, kinds=("spatial", "temporal", "cross")).data):
        table = table.reindex([str(x) for x in stats["layer"].values])
        np.testing.assert_array_equal(table["n"], valid.sum(1))
        np.testing.assert_array_equal(table["below_uniform"], below)
        np.testing.assert_array_equal(table["above_identity"], above)
    assert int(valid.sum(1).max()) == 2 * 2 * stats.sizes["head"] * stats.sizes["frame"]  # samples × branches


def _synthetic(entropy: dict[str, tuple[str, float]]) -> xr.Dataset:
    names = list(entropy)
    return xr.Dataset(
        {"entropy_pct": (("step", "layer"), [[entropy[n][1] for n in names]])},
        coords={"layer": names, "kind": ("layer", [entropy[n][0] for n in names]),
                "index": ("layer", list(range(1, len(names) + 1)))},
    )


def test_registry_and_low_entropy_layers_skip_cross_attention_by_default():
    ds = _synthetic({"s1": ("spatial", 40.0), "c1": ("cross", 5.0), "t1": ("temporal", 90.0),
                     "c2": ("cross", 99.0), "s2": ("spatial", 20.0), "t2": ("temporal", 60.0)})
    assert ds.ieadapt.registry() == "t1"  # c2 has the highest entropy but is cross-attention
    assert ds.ieadapt.low_entropy_layers(0.5) == ["s2", "s1"]  # round(0.5 · 4 self-attention layers)
    assert ds.ieadapt.low_entropy_layers(1.0) == ["s2", "s1", "t2", "t1"]
    assert ds.ieadapt.registry(kind="cross") == "c2"
    assert ds.ieadapt.low_entropy_layers(0.5, kind=("spatial", "cross")) == ["c1", "s2"]
    assert ds.ieadapt.registry(kind="spatial") == "s1"
    with pytest.raises(ia.IEAdaptError, match=r"\(0, 1\]"):
        ds.ieadapt.low_entropy_layers(0.0)


def test_low_entropy_layers_on_a_traced_run_are_self_attention(run):
    stats = run.stats
    kinds = dict(zip(stats["layer"].values, stats["kind"].values))
    chosen = stats.ieadapt.low_entropy_layers(0.5)
    assert chosen and {kinds[n] for n in chosen} <= set(SELF_ATTENTION)
    assert kinds[stats.ieadapt.registry()] in SELF_ATTENTION
    candidates = stats.ieadapt.layer_entropy(kind=SELF_ATTENTION).dropna("layer")
    assert len(chosen) == max(1, round(0.5 * candidates.sizes["layer"]))
    assert float(candidates.sel(layer=chosen).max()) <= float(candidates.drop_sel(layer=chosen).min())


def test_baseline_is_found_one_way():
    from ieadapt_interp.sweeps.tables import baseline_mask, effect_table

    value = np.array([[[[1.0], [0.5], [0.25]]]])
    ds = xr.Dataset(
        {"value": (("prompt", "seed", "perturbation", "metric"), value),
         "done": (("prompt", "seed", "perturbation", "metric"), np.ones_like(value, bool))},
        coords={"perturbation": ["t:I", "baseline", "t:U"], "metric": ["ssim"],
                "replacement": ("perturbation", ["identity", "none", "uniform"]),
                "layer": ("perturbation", ["t", "", "t"]), "kind": ("perturbation", ["temporal", "", "temporal"])},
    )
    assert baseline_mask(ds).tolist() == [False, True, False]
    assert findings.metric_change(ds, "ssim").squeeze().values.tolist() == [0.5, -0.25]
    effect = effect_table(ds).set_index("perturbation")
    assert effect["change"].to_dict() == {"t:I": 0.5, "baseline": 0.0, "t:U": -0.25}
    assert isinstance(effect, pd.DataFrame)
