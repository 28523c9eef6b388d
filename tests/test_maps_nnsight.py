"""Materialised maps (pooled, budgeted, DataTree) and the nnsight hook points."""

import nnsight
import numpy as np
import pytest
import torch
import xarray as xr
from conftest import ANIMATEDIFF_KW
from reference import RecordSDPA, has_leftovers, softmax_map

import ieadapt_interp as ia
from ieadapt_interp.core.adapters import denoiser, layer_records

SPATIAL = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
TEMPORAL = "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1"


def test_maps_are_pooled_softmax_in_a_datatree(animatediff):
    req = ia.MapRequest(layers=[SPATIAL, TEMPORAL], steps=(1,), heads=(1,), size=(8, 4))
    run = ia.trace(animatediff, "a red circle", guidance_scale=1.0, layers="spatial", maps=req, **ANIMATEDIFF_KW)
    assert isinstance(run.maps, xr.DataTree) and set(run.maps.children) == {SPATIAL, TEMPORAL}
    spatial = run.maps[SPATIAL].dataset["attention"]
    assert spatial.dims == ("step", "head", "frame", "query_bin", "key_bin") and spatial.shape == (1, 1, 4, 8, 4)
    temporal = run.maps[TEMPORAL].dataset["attention"]
    assert temporal.dims == ("step", "head", "query_frame", "key_frame") and temporal.shape == (1, 1, 4, 4)
    # reference: record q, k of a plain run and pool the full fp64 map by hand
    records = {r.name: r.module for r in layer_records(animatediff)}
    rec = RecordSDPA(denoiser(animatediff), {SPATIAL: records[SPATIAL], TEMPORAL: records[TEMPORAL]})
    try:
        with rec:
            ia.generate(animatediff, "a red circle", guidance_scale=1.0, **ANIMATEDIFF_KW)
    finally:
        rec.close()
    call = [c for c in rec.calls if c["layer"] == SPATIAL and c["step"] == 1][0]
    a = softmax_map(call["q"], call["k"])[:, 1]  # [frame, query 64, key 64]
    expected = a.reshape(4, 8, 8, 4, 16).mean(dim=(2, 4))
    np.testing.assert_allclose(spatial.values[0, 0], expected.numpy(), rtol=1e-5, atol=1e-7)
    call = [c for c in rec.calls if c["layer"] == TEMPORAL and c["step"] == 1][0]
    expected = softmax_map(call["q"], call["k"])[:, 1].mean(0)
    np.testing.assert_allclose(temporal.values[0, 0], expected.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(temporal.values.sum(-1), 1.0, rtol=1e-5)  # rows stay stochastic


def test_map_budget_fails_before_allocating_and_names_size(animatediff):
    req = ia.MapRequest(layers="spatial", size=(64, 64), budget="1KB")
    with pytest.raises(MemoryError, match=r"needs at least .* MiB.*budget of 0\.0 MiB"):
        ia.trace(animatediff, "a red circle", maps=req, **ANIMATEDIFF_KW)
    assert has_leftovers(animatediff) == []
    with pytest.raises(ValueError, match="budget"):
        ia.MapRequest(layers="spatial", budget="lots")


def _with_half(pipe, layer_name, when, fn):
    """Run ``fn()`` while ``layer_name``'s ``A·V`` is halved at the denoiser calls ``when(call)`` selects (0-based).

    Independent reference of ``hook_output *= 0.5``: a plain torch pre-hook halves the input of the layer's
    output projection ``to_out[0]``, which is linear and receives exactly ``A·V`` (heads merged).
    """
    module = {r.name: r for r in layer_records(pipe)}[layer_name].module
    calls = {"n": -1}

    def count(m, args):
        calls["n"] += 1

    def halve(m, args):
        return (args[0] * 0.5, *args[1:]) if when(calls["n"]) else None

    handles = [denoiser(pipe).register_forward_pre_hook(count), module.to_out[0].register_forward_pre_hook(halve)]
    try:
        return fn()
    finally:
        for h in handles:
            h.remove()


def _plain(pipe, **kw):
    return pipe(prompt="a red circle", guidance_scale=1.0, output_type="np",
                generator=torch.Generator().manual_seed(0), **kw).frames[0]


def _noise_predictions(pipe, fn):
    """``fn()`` and the denoiser's output of every call it made (a plain torch hook)."""
    outs = []
    handle = denoiser(pipe).register_forward_hook(lambda m, a, o: outs.append(o[0].detach().clone()))
    try:
        return fn(), outs
    finally:
        handle.remove()


def test_nnsight_reads_entropy_and_writes_output_by_closed_form(animatediff):
    run = ia.trace(animatediff, "a red circle", layers=[SPATIAL], guidance_scale=1.0, seed=0, **ANIMATEDIFF_KW)
    kw = dict(guidance_scale=1.0, output_type="np", seed=0, **ANIMATEDIFF_KW)
    with ia.traced(animatediff) as model:
        layer = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1

        def read():
            with model.generate("a red circle", **kw) as tracer:
                entropies = nnsight.save(list())
                for _ in tracer.iter[:2]:
                    entropies.append(layer.hook_entropy.output.mean(dim=-1).save())
            return entropies

        def write(steps):
            with model.generate("a red circle", **kw) as tracer:
                for _ in tracer.iter[steps]:
                    layer.hook_output.output[:] *= 0.5
                out = nnsight.save(model.output)
            return out.frames[0]

        entropies = read()
        halved, halved_eps = _noise_predictions(animatediff, lambda: write(slice(0, 2)))
        late, late_eps = _noise_predictions(animatediff, lambda: write(slice(1, 2)))  # second step only
    ours = run.stats.entropy.sel(layer=SPATIAL).values  # [step, head, frame]
    for step, ent in enumerate(entropies):  # [B'=frame, head]
        np.testing.assert_allclose(ent.numpy().T, ours[step], rtol=1e-5)
    plain, plain_eps = _noise_predictions(animatediff, lambda: _plain(animatediff, **ANIMATEDIFF_KW))
    np.testing.assert_array_equal((np.clip(plain, 0, 1) * 255).round().astype(np.uint8), run.video)
    ref, ref_eps = _noise_predictions(animatediff, lambda: _with_half(
        animatediff, SPATIAL, lambda call: True, lambda: _plain(animatediff, **ANIMATEDIFF_KW)))
    ref_late, ref_late_eps = _noise_predictions(animatediff, lambda: _with_half(
        animatediff, SPATIAL, lambda call: call == 1, lambda: _plain(animatediff, **ANIMATEDIFF_KW)))
    np.testing.assert_allclose(halved, ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(late, ref_late, rtol=0, atol=1e-6)
    for ours_eps, ref_eps_ in ((halved_eps, ref_eps), (late_eps, ref_late_eps)):
        assert len(ours_eps) == len(ref_eps_) == 2
        for a, b in zip(ours_eps, ref_eps_):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the references tell the cases apart (differences ≥ 10× the tolerance above): a write at the wrong step
    # (or none) would not pass
    torch.testing.assert_close(late_eps[0], plain_eps[0], rtol=1e-5, atol=1e-6)  # step 0 untouched
    assert (late_eps[1] - plain_eps[1]).abs().max() > 1e-4 and (ref_eps[0] - plain_eps[0]).abs().max() > 1e-4
    assert has_leftovers(animatediff) == []


def test_hook_map_fires_and_its_read_and_write_reach_model_maps(animatediff):
    req = ia.MapRequest(layers=[SPATIAL], size=(8, 4))
    run = ia.trace(animatediff, "a red circle", layers=[SPATIAL], guidance_scale=1.0, seed=0, maps=req,
                   **ANIMATEDIFF_KW)
    expected = run.maps[SPATIAL].dataset["attention"]  # [step, head, frame, 8, 4], checked against fp64 above
    with ia.traced(animatediff, maps=req) as model:
        layer = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
        with model.generate("a red circle", guidance_scale=1.0, output_type="np", seed=0, **ANIMATEDIFF_KW) as tracer:
            read = nnsight.save(list())
            for _ in tracer.iter[:2]:
                read.append(layer.hook_map.output.clone().save())
        plain_maps = model.maps
        with model.generate("a red circle", guidance_scale=1.0, output_type="np", seed=0, **ANIMATEDIFF_KW) as tracer:
            for _ in tracer.iter[1:2]:
                layer.hook_map.output[:] *= 2.0
        written_maps = model.maps
    assert len(read) == 2  # hook_map fired once per step (no CFG: one recorded row)
    for step, pooled in enumerate(read):  # [row, head, frame, query_bin, key_bin]
        np.testing.assert_allclose(pooled.numpy()[0], expected.values[step], rtol=1e-6, atol=1e-8)
    xr.testing.assert_allclose(plain_maps[SPATIAL].dataset["attention"], expected, rtol=1e-6, atol=1e-8)
    written = written_maps[SPATIAL].dataset["attention"]
    np.testing.assert_allclose(written.values[0], expected.values[0], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(written.values[1], 2.0 * expected.values[1], rtol=1e-6, atol=1e-8)
    assert has_leftovers(animatediff) == []


def test_traced_refuses_unknown_map_layer_before_attaching(animatediff):
    with pytest.raises(KeyError, match="Unknown attention layer"):
        ia.traced(animatediff, maps=ia.MapRequest(layers=["down_blocks.0.attentions.0.transformer_blocks.0.attn9"]))
    assert has_leftovers(animatediff) == []


TOY_KW = dict(num_frames=4, height=32, width=32, num_inference_steps=2, guidance_scale=5.0)
TOY_PROMPT = "a red circle moving left"
TOY_SPATIAL, TOY_TEMPORAL = "down_blocks.0.attentions.0.transformer_blocks.0.attn1", \
    "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1"


@pytest.fixture(scope="module")
def toy():
    return ia.load_pipeline()


def test_traced_yields_the_same_xarray_as_trace_on_the_default_model(toy):
    """After ``model.generate``, ``model.stats`` / ``model.maps`` equal ``ia.trace``'s (CFG on: rows labelled
    by their text embeddings); after a write to ``hook_output`` they describe the modified run."""
    req = ia.MapRequest(layers=[TOY_SPATIAL, TOY_TEMPORAL], size=(4, 4))
    run = ia.trace(toy, TOY_PROMPT, seed=3, maps=req, **TOY_KW)
    with ia.traced(toy, maps=req) as model:
        with model.generate(TOY_PROMPT, seed=3, output_type="np", **TOY_KW):
            pass
        plain_stats, plain_maps = model.stats, model.maps
        layer = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
        with model.generate(TOY_PROMPT, seed=3, output_type="np", **TOY_KW) as tracer:
            for _ in tracer.iter[:2]:
                layer.hook_output.output[:] *= 0.5
        halved_stats = model.stats
    assert set(plain_stats.data_vars) == set(run.stats.data_vars)
    xr.testing.assert_allclose(plain_stats, run.stats, rtol=1e-6, atol=0)
    for name in (TOY_SPATIAL, TOY_TEMPORAL):
        xr.testing.assert_allclose(plain_maps[name].dataset, run.maps[name].dataset, rtol=1e-6, atol=0)
    assert plain_stats.attrs["prompt"] == TOY_PROMPT and plain_stats.attrs["seed"] == 3
    # reference of the modified run: the same halving by a plain torch hook, traced by ia.trace
    ref = _with_half(toy, TOY_SPATIAL, lambda call: True, lambda: ia.trace(toy, TOY_PROMPT, seed=3, **TOY_KW)).stats
    others = [n for n in ref.layer.values if n != TOY_SPATIAL]
    xr.testing.assert_allclose(halved_stats.sel(layer=others), ref.sel(layer=others), rtol=1e-5, atol=1e-12)
    at, ref_at = halved_stats.sel(layer=TOY_SPATIAL), ref.sel(layer=TOY_SPATIAL)
    # ia.trace records A·V before the torch hook halves it; the traced run records the written value: ‖½AV‖² = ¼‖AV‖²
    np.testing.assert_allclose(at["energy"].values, 0.25 * ref_at["energy"].values, rtol=1e-5)
    for var in ("entropy", "energy_identity", "energy_uniform"):
        np.testing.assert_allclose(at[var].values, ref_at[var].values, rtol=1e-5)
    assert np.nanmax(np.abs(halved_stats["entropy"].sel(layer=others).values
                            - plain_stats["entropy"].sel(layer=others).values)) > 1e-6  # the write changed the run
    assert has_leftovers(toy) == []
