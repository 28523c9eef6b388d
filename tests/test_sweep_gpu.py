"""The Ray engine on a multi-GPU machine: one actor per GPU, each holding its own pipeline, same numbers as local.

Skips without two CUDA GPUs (CI has none); run on a GPU host with ``pytest tests/test_sweep_gpu.py``.
"""

import numpy as np
import pytest
import torch

import ieadapt_interp as ia
from ieadapt_interp.sweeps import SweepConfig, open_sweep, sweep
from ieadapt_interp.sweeps.engines import make_engine
from ieadapt_interp.models.toy import heldout_captions

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")

GEN = {"num_frames": 16, "height": 64, "width": 64, "num_inference_steps": 10, "guidance_scale": 5.0}
METRICS = ["ssim", "temporal_ssim", "flow_magnitude", "direction_match"]


def perturbations():
    return {
        "temporal.all:U": ia.uniform("temporal"),
        "temporal.all:I": ia.identity("temporal"),
        "temporal.all:mix(0.5)": ia.mix(0.5, "temporal"),
        "spatial.last:I": ia.identity(ia.Layers(kinds=("spatial",), indices=(-1,))),
    }


def test_ray_one_actor_per_gpu_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    prompts, seeds = heldout_captions()[:3], [0, 1]
    ray.init(num_gpus=torch.cuda.device_count(), include_dashboard=False, log_to_driver=False)
    try:
        config = SweepConfig.build(prompts, perturbations(), seeds=seeds, metrics=METRICS, generation=GEN, model=None)
        engine = make_engine("ray", None, config)  # the embedded model, built by each actor on its GPU
        try:
            places = [ray.get(actor.placement.remote()) for actor in engine.actors]
        finally:
            engine.close()
        assert len(places) == torch.cuda.device_count()
        assert all(p["device"].startswith("cuda") for p in places)
        assert len({p["visible_gpus"] for p in places}) == len(places)  # each actor owns a different GPU
        kw = dict(seeds=seeds, metrics=METRICS, generation=GEN, progress=False, batch_size=2)
        on_ray = sweep(None, prompts, perturbations(), store=tmp_path / "ray.zarr", engine="ray", **kw)
    finally:
        ray.shutdown()
    local = sweep(ia.load_pipeline(device="cuda"), prompts, perturbations(), store=tmp_path / "local.zarr", **kw)
    assert bool(on_ray["done"].all()) and bool(local["done"].all())
    np.testing.assert_array_equal(on_ray["perturbation"].values, local["perturbation"].values)
    np.testing.assert_allclose(on_ray["value"].values, local["value"].values, atol=2e-3)
    reopened = open_sweep(tmp_path / "ray.zarr")
    np.testing.assert_array_equal(reopened["value"].values, on_ray["value"].values)
