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


def test_nnsight_reads_entropy_and_sets_output(animatediff):
    run = ia.trace(animatediff, "a red circle", layers=[SPATIAL], guidance_scale=1.0, seed=0, **ANIMATEDIFF_KW)
    with ia.traced(animatediff) as model:
        layer = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
        with model.generate("a red circle", guidance_scale=1.0, output_type="np", seed=0, **ANIMATEDIFF_KW) as tracer:
            entropies = nnsight.save(list())
            for _ in tracer.iter[:2]:
                entropies.append(layer.hook_entropy.output.mean(dim=-1).save())
        with model.generate("a red circle", guidance_scale=1.0, output_type="np", seed=0, **ANIMATEDIFF_KW) as tracer:
            for _ in tracer.iter[:2]:
                layer.hook_output.output[:] = 0
            zeroed = nnsight.save(model.output)
    ours = run.stats.entropy.sel(layer=SPATIAL).values  # [step, head, frame]
    for step, ent in enumerate(entropies):  # [B'=frame, head]
        np.testing.assert_allclose(ent.numpy().T, ours[step], rtol=1e-5)
    plain = animatediff(prompt="a red circle", guidance_scale=1.0, output_type="np",
                        generator=torch.Generator().manual_seed(0), **ANIMATEDIFF_KW).frames[0]
    assert np.abs(zeroed.frames[0] - plain).max() > 1e-4  # the write reached the model
    np.testing.assert_array_equal((np.clip(plain, 0, 1) * 255).round().astype(np.uint8), run.video)
    assert has_leftovers(animatediff) == []
