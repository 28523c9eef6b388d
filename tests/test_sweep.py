"""Sweeps: SIGKILL-resume, local vs. Ray equality, bad input (each raised before work, store left readable)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import ieadapt_interp as ia
from ieadapt_interp.metrics import MissingWeightsError, get_metric
from ieadapt_interp.sweeps import StoreMismatchError, SweepStore, open_sweep, sweep

GEN = {
    "num_frames": 4,
    "height": 16,
    "width": 16,
    "num_inference_steps": 2,
    "guidance_scale": 1.0,
}  # no CFG: half the cost
PROMPTS = ["a red circle moving left"]
SEEDS = [0, 1]
METRICS = ["ssim", "temporal_ssim", "flow_magnitude"]
BATCH = 2


def perturbations(pipe):
    """3 single-layer perturbations + a multi-layer λ-mix → 5 jobs per (prompt, seed) with the baseline."""
    table = ia.attention_layers(pipe)
    spatial = list(table.loc[table.kind == "spatial", "name"])
    return [
        ia.identity(spatial[0]),
        ia.uniform(spatial[0]),
        ia.identity(spatial[-1]),
        ia.mix(0.5, "temporal"),
    ]


@pytest.fixture(scope="module")
def reference(animatediff, tmp_path_factory):
    """An uninterrupted local sweep (the numbers the other runs must reproduce)."""
    store = tmp_path_factory.mktemp("sweep") / "reference.zarr"
    ds = sweep(
        animatediff,
        PROMPTS,
        perturbations(animatediff),
        SEEDS,
        METRICS,
        store=store,
        batch_size=BATCH,
        generation=GEN,
        progress=False,
    )
    return store, ds


def test_reference_sweep_layout(reference):
    store, ds = reference
    assert ds["value"].dims == ("prompt", "seed", "perturbation", "metric")
    assert ds.sizes == {"prompt": 1, "seed": 2, "perturbation": 5, "metric": 3}
    assert bool(ds["done"].all())
    assert list(ds.perturbation.values[:3]) == ["baseline", "spatial.1:identity", "spatial.1:uniform"]
    assert list(ds["replacement"].values) == ["none", "identity", "uniform", "identity", "mix"]
    assert ds["kind"].values[-1] == "temporal" and int(ds["n_layers"].values[-1]) == 40
    assert ds["lam"].values[-1] == 0.5 and ds["index"].values[3] == 16
    np.testing.assert_allclose(ds["value"].sel(perturbation="baseline", metric="ssim"), 1.0)
    assert np.isfinite(ds["value"].values).all()
    stats = SweepStore(store).baseline_stats(0, 1)
    assert stats["entropy_pct"].dims == ("step", "layer", "head", "frame") and stats.attrs["seed"] == 1


def _child_script(store: str) -> str:
    return textwrap.dedent(f"""
        import torch; torch.set_num_threads(2)
        import ieadapt_interp as ia
        from ieadapt_interp.sweeps import sweep
        from tests.test_sweep import GEN, PROMPTS, SEEDS, METRICS, BATCH, perturbations
        pipe = ia.tiny_pipeline("animatediff", seed=0)
        print("READY", flush=True)
        sweep(pipe, PROMPTS, perturbations(pipe), SEEDS, METRICS, store={store!r}, batch_size=BATCH,
              generation=GEN, progress=False)
        print("FINISHED", flush=True)
    """)


def _done_count(store) -> int:
    try:
        return int(SweepStore(store).done().sum())
    except (FileNotFoundError, OSError, KeyError):  # not created yet / being renamed into place
        return 0


def test_sigkill_then_resume(animatediff, reference, tmp_path):
    """Kill a sweep subprocess with SIGKILL after its first jobs; re-running finishes it, recomputing nothing."""
    store = tmp_path / "killed.zarr"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen(
        [sys.executable, "-c", _child_script(str(store))],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while _done_count(store) < 3:  # poll the store until the baseline and a batch are committed
            assert child.poll() is None, "the sweep subprocess exited before it could be killed"
            assert time.time() < deadline, "the sweep subprocess made no progress"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    killed = open_sweep(store)  # the killed store is readable
    done_at_kill = killed["done"].values.copy()
    total = done_at_kill.size
    assert 3 <= done_at_kill.sum() < total, f"kill came too late ({done_at_kill.sum()}/{total} done)"
    old_session = killed["session"].values[done_at_kill]
    assert len(set(old_session)) == 1
    # finished jobs are complete: every metric present
    assert np.isfinite(killed["value"].values[done_at_kill]).all()

    resumed = sweep(
        animatediff,
        PROMPTS,
        perturbations(animatediff),
        SEEDS,
        METRICS,
        store=store,
        batch_size=BATCH,
        generation=GEN,
        progress=False,
    )
    assert bool(resumed["done"].all())
    # jobs finished before the kill were not recomputed (same session, same timestamps) …
    np.testing.assert_array_equal(resumed["session"].values[done_at_kill], old_session)
    np.testing.assert_array_equal(
        resumed["finished_at"].values[done_at_kill], killed["finished_at"].values[done_at_kill]
    )
    # … and every other job was computed exactly once, by the resuming run
    assert len(set(resumed["session"].values[~done_at_kill])) == 1
    assert set(resumed["session"].values[~done_at_kill]).isdisjoint(old_session)
    # the values equal an uninterrupted run (fixed batches ⇒ same forward passes ⇒ exact on CPU)
    _, ref = reference
    np.testing.assert_allclose(resumed["value"].values, ref["value"].values, rtol=0, atol=1e-12)
    assert resumed.attrs["config_hash"] == ref.attrs["config_hash"]
    assert not list(store.glob("**/*.partial"))


def test_ray_engine_matches_local(animatediff, reference, tmp_path):
    """Ray (one CPU actor building the tiny model from its spec) gives the same numbers as local."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spec = ("tiny", "animatediff")  # what an actor on a cluster receives instead of the pipeline
        ds = sweep(
            spec,
            PROMPTS,
            perturbations(animatediff),
            SEEDS,
            METRICS,
            store=tmp_path / "ray.zarr",
            engine="ray",
            batch_size=BATCH,
            generation=GEN,
            progress=False,
        )
    finally:
        ray.shutdown()
    _, ref = reference
    assert bool(ds["done"].all())
    # identical batching (fixed chunks of BATCH) and thread count ⇒ bit-identical on CPU
    np.testing.assert_array_equal(ds["value"].values, ref["value"].values)
    np.testing.assert_array_equal(ds["perturbation"].values, ref["perturbation"].values)


# -- bad input: each a clear error before any work; an existing store stays readable --------------------------
def _small(pipe, store, **overrides):
    kwargs = {
        "prompts": PROMPTS,
        "perturbations": perturbations(pipe)[:1],
        "seeds": [0],
        "metrics": ["temporal_ssim"],
        "store": store,
        "generation": GEN,
        "progress": False,
    }
    kwargs.update(overrides)
    return sweep(pipe, **kwargs)


def test_unknown_metric(animatediff, tmp_path):
    with pytest.raises(ValueError, match="unknown metric 'ssimm'.*Did you mean 'ssim'"):
        _small(animatediff, tmp_path / "s.zarr", metrics=["ssimm"])
    assert not (tmp_path / "s.zarr").exists()


def test_unknown_layer(animatediff, tmp_path):
    with pytest.raises(KeyError, match="Unknown attention layer.*Closest valid names"):
        _small(
            animatediff,
            tmp_path / "s.zarr",
            perturbations=[ia.identity("down_blocks.0.attentions.0.transformer_blocks.0.attn9")],
        )
    assert not (tmp_path / "s.zarr").exists()


def test_empty_prompts_and_bad_settings(animatediff, tmp_path):
    with pytest.raises(ValueError, match="prompts is empty"):
        _small(animatediff, tmp_path / "s.zarr", prompts=[])
    with pytest.raises(ValueError, match="non-empty string"):
        _small(animatediff, tmp_path / "s.zarr", prompts=["  "])
    with pytest.raises(ValueError, match="unknown generation setting"):
        _small(animatediff, tmp_path / "s.zarr", generation={**GEN, "num_frame": 4})
    with pytest.raises(ValueError, match="at least 32×32"):
        _small(animatediff, tmp_path / "s.zarr", metrics=["lpips"])
    with pytest.raises(ValueError, match="'an astronaut' is outside the embedded model's caption grammar"):
        _small(animatediff, tmp_path / "s.zarr", metrics=["colour_match"],
               prompts=["a red circle moving left on a white background", "an astronaut"])
    assert not (tmp_path / "s.zarr").exists()


def test_store_of_another_config(animatediff, reference):
    store, ref = reference
    before = sorted(p.name for p in store.rglob("*"))
    with pytest.raises(StoreMismatchError, match=r"different sweep configuration(.|\n)*seeds"):
        sweep(
            animatediff,
            PROMPTS,
            perturbations(animatediff),
            [7],
            METRICS,
            store=store,
            batch_size=BATCH,
            generation=GEN,
            progress=False,
        )
    assert sorted(p.name for p in store.rglob("*")) == before
    again = open_sweep(store)
    np.testing.assert_array_equal(again["value"].values, ref["value"].values)


def test_missing_weights_recorded_not_raised(animatediff, tmp_path, monkeypatch):
    monkeypatch.setenv("IEADAPT_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    try:
        get_metric("aesthetic_quality").fn(np.zeros((2, 32, 32, 3), np.uint8))
        pytest.skip("aesthetic weights are installed on this machine")
    except MissingWeightsError:
        pass
    ds = _small(
        animatediff, tmp_path / "s.zarr", metrics=["temporal_ssim", "aesthetic_quality"], save_videos=True
    )
    assert bool(ds["done"].all())
    assert np.isnan(ds["value"].sel(metric="aesthetic_quality")).all()
    assert np.isfinite(ds["value"].sel(metric="temporal_ssim")).all()
    reasons = ds["missing_reason"].sel(metric="aesthetic_quality").values.ravel()
    assert all("sa_0_4_vit_l_14_linear.pth" in str(r) for r in reasons)
    assert all(str(r) == "" for r in ds["missing_reason"].sel(metric="temporal_ssim").values.ravel())
    videos = sorted(p.name for p in (tmp_path / "s.zarr-files" / "videos").iterdir())  # beside the zarr group
    assert len(videos) == 2 and videos[0].startswith("p0000_s0000_k00000_baseline.")
    assert json.loads(ds.attrs["config"])["metrics"] == ["temporal_ssim", "aesthetic_quality"]


def test_sweep_values_equal_direct_generate_and_compute_metrics(animatediff, tmp_path):
    """One job of every perturbation kind (identity, uniform, mix, scale; one layer, a whole kind, λ) against
    ``ia.generate`` + ``compute_metrics`` of the same settings, outside the sweep machinery."""
    from ieadapt_interp.metrics import compute_metrics

    table = ia.attention_layers(animatediff)
    spatial = list(table.loc[table.kind == "spatial", "name"])
    kinds = {
        "identity one layer": ia.identity(spatial[0]),
        "uniform all temporal": ia.uniform("temporal"),
        "mix(0.25) one layer": ia.mix(0.25, spatial[-1]),
        "scale(0.5) all spatial": ia.scale(0.5, "spatial"),
    }
    metrics = ["ssim", "temporal_ssim"]
    ds = sweep(animatediff, PROMPTS, kinds, [1], metrics, store=tmp_path / "kinds.zarr", batch_size=1,
               generation=GEN, progress=False)
    assert list(ds["replacement"].values) == ["none", "identity", "uniform", "mix", "scale"]
    baseline = ia.generate(animatediff, PROMPTS[0], seed=1, **GEN).video
    np.testing.assert_array_equal(SweepStore(tmp_path / "kinds.zarr").baseline_video(0, 0), baseline)
    for k, (name, perturbation) in enumerate(kinds.items(), start=1):
        video = ia.generate(animatediff, PROMPTS[0], perturb=perturbation, seed=1, **GEN).video
        direct = compute_metrics(metrics, video, reference=baseline, prompt=PROMPTS[0])
        stored = ds["value"].isel(prompt=0, seed=0, perturbation=k)
        for metric in metrics:
            np.testing.assert_allclose(float(stored.sel(metric=metric)), direct[metric], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{name}: {metric}")
        assert direct["ssim"] < 1.0  # every kind changed the video (so a no-op sweep would not pass)
