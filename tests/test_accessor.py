"""``ds.ieadapt`` (the per-layer summaries) against hand-computed values, and ``entropy_pct = 100·H/log N`` pinned."""

import math

import numpy as np
import pytest
import xarray as xr
from conftest import ANIMATEDIFF_KW
from reference import RecordSDPA, per_frame, row_stats

import ieadapt_interp as ia
from ieadapt_interp.core.adapters import denoiser, layer_records

LAYERS = ["s0", "s1", "t0", "c0"]
KINDS = ["spatial", "spatial", "temporal", "cross"]


def _stats() -> xr.Dataset:
    """A hand-built stats Dataset (step 2 × layer 4 × head 2 × frame 3) with known means and violations."""
    rng = np.random.default_rng(0)
    pct = np.empty((2, 4, 2, 3))
    for i, mean in enumerate([40.0, 70.0, 20.0, 90.0]):  # zero-mean noise around each layer's mean
        noise = rng.normal(size=(2, 2, 3))
        pct[:, i] = mean + noise - noise.mean()
    energy_uniform = np.full(pct.shape, 1.0)
    energy_identity = np.full(pct.shape, 10.0)
    energy_identity[:, 3] = np.nan  # cross-attention: no identity map
    energy = np.full(pct.shape, 5.0)
    energy[0, 0, 0, 0] = 0.5  # below the lower bound
    energy[1, 0, 1, 2] = 11.0  # above the upper bound
    energy[0, 2, 0, :] = 0.9  # three cells below, temporal
    n_keys = np.array([16, 16, 4, 77])
    dims = ("step", "layer", "head", "frame")
    return xr.Dataset(
        {"entropy_pct": (dims, pct), "entropy": (dims, pct / 100 * np.log(n_keys)[None, :, None, None]),
         "energy": (dims, energy), "energy_identity": (dims, energy_identity),
         "energy_uniform": (dims, energy_uniform)},
        coords={"step": [0, 1], "layer": LAYERS, "kind": ("layer", KINDS), "block": ("layer", ["down"] * 4),
                "index": ("layer", [1, 2, 1, 1]), "n_keys": ("layer", n_keys), "head": [0, 1], "frame": [0, 1, 2]},
    )


def test_layer_entropy_registry_and_low_entropy_layers():
    ds = _stats()
    mean = ds.ieadapt.layer_entropy()
    assert mean.dims == ("layer",)
    np.testing.assert_allclose(mean.values, [40.0, 70.0, 20.0, 90.0], rtol=1e-12)
    np.testing.assert_allclose(ds.ieadapt.layer_entropy(kind="spatial").values, [40.0, 70.0], rtol=1e-12)
    assert ds.ieadapt.registry(kind="spatial") == "s1"  # argmax of the mean (paper Eq. 3)
    assert ds.ieadapt.registry(kind="temporal") == "t0"
    assert ds.ieadapt.low_entropy_layers(0.5, kind="spatial") == ["s0"]
    assert ds.ieadapt.low_entropy_layers(1.0, kind="spatial") == ["s0", "s1"]  # lowest first
    with pytest.raises(ValueError, match="ratio must lie in"):
        ds.ieadapt.low_entropy_layers(0.0, kind="spatial")
    with pytest.raises(ValueError, match="No .*joint.* layers"):
        ds.ieadapt.layer_entropy(kind="joint")


def test_energy_violations_and_layer_summary():
    ds = _stats()
    rate = ds.ieadapt.energy_violations()
    assert rate.dims == ("layer",)
    # 12 cells per layer (2 steps × 2 heads × 3 frames); cross has no upper bound but keeps its lower one
    np.testing.assert_allclose(rate.values[:3], [2 / 12, 0.0, 3 / 12], rtol=1e-12)
    summary = ds.ieadapt.layer_summary()
    assert list(summary.index) == LAYERS
    assert list(summary["kind"]) == KINDS
    np.testing.assert_allclose(summary["entropy_pct"].values, [40.0, 70.0, 20.0, 90.0], rtol=1e-12)
    np.testing.assert_allclose(summary["energy_violation_rate"].values[:3], [2 / 12, 0.0, 3 / 12], rtol=1e-12)


def test_plot_entropy_draws_the_mean_over_heads_and_frames():
    ds = _stats()
    fig = ds.ieadapt.plot_entropy()
    image = np.asarray(fig.axes[0].images[0].get_array())  # [self-attention layer, step]
    expected = ds.entropy_pct.mean(["head", "frame"]).transpose("layer", "step").values[:3]
    np.testing.assert_allclose(image, expected, rtol=1e-12)


def test_entropy_pct_is_100_H_over_log_N(animatediff):
    """Pinned: ``entropy_pct = 100 · H / log N`` with ``N`` the layer's key count and ``H`` the mean row entropy,
    both taken from the recorded attention calls (fp64), not from the library."""
    run = ia.trace(animatediff, "a red circle", guidance_scale=1.0, **ANIMATEDIFF_KW)
    ds = run.stats
    records = {r.name: r for r in layer_records(animatediff)}
    recorder = RecordSDPA(denoiser(animatediff), {r.name: r.module for r in records.values()})
    try:
        with recorder:
            ia.generate(animatediff, "a red circle", guidance_scale=1.0, **ANIMATEDIFF_KW)
    finally:
        recorder.close()
    checked = set()
    for call in recorder.calls:
        n = call["k"].shape[-2]
        assert int(ds.n_keys.sel(layer=call["layer"])) == n
        got = ds.entropy_pct.sel(step=call["step"], layer=call["layer"]).values  # [head, frame]
        if n == 1:
            assert np.isnan(got).all()  # a single key has no entropy to normalise
            continue
        h = per_frame(row_stats(call["q"], call["k"], call["v"], call["scale"])["entropy"],
                      records[call["layer"]].layout, 1, ds.sizes["frame"], 0, "mean")[0]
        np.testing.assert_allclose(got, 100.0 * h.numpy() / math.log(n), rtol=1e-4, atol=1e-6)
        checked.add(ds.kind.sel(layer=call["layer"]).item())
    assert checked == {"spatial", "temporal", "cross"}
    # and the relation itself holds exactly within the Dataset
    finite = ds.n_keys > 1
    np.testing.assert_array_equal(ds.entropy_pct.where(finite).values,
                                  (100.0 * ds.entropy / np.log(ds.n_keys)).where(finite).values)
