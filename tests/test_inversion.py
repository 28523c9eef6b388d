"""DDIM inversion: diffusers' inverse scheduler matched to the pipeline's, the trajectory, the reconstruction of a
rendered clip on the embedded model (PSNR held), and clean failure."""

import numpy as np
import pandas as pd
import pytest
import torch

import ieadapt_interp as ia
from ieadapt_interp.core.errors import IEAdaptError
from ieadapt_interp.methods.inversion import inverse_scheduler, psnr, self_attention_names, video_ssim
from ieadapt_interp.methods.sources import DEFAULT_SOURCE_PROMPT, encode_video, render_toy_clip

from conftest import ANIMATEDIFF_KW, COGVIDEOX_KW

#: PSNR (dB) reached by inverting and regenerating the shipped rendered clip on the embedded model
#: (16 frames, 64 px, 10 DDIM steps, guidance 1, skip="auto"): 16.96 dB, SSIM 0.802, on CPU on 2026-12-01
#: (diffusers' DDIMInverseScheduler as is: 0.25 dB; see benchmarks/RESULTS.md "Video editing")
TOY_PSNR = 16.0


@pytest.mark.parametrize("arch", ["animatediff", "cogvideox"])
def test_inverse_scheduler_shares_the_forward_schedule(animatediff, cogvideox, arch):
    pipe = animatediff if arch == "animatediff" else cogvideox
    inverse = inverse_scheduler(pipe.scheduler)
    from diffusers import DDIMInverseScheduler
    assert isinstance(inverse, DDIMInverseScheduler)
    torch.testing.assert_close(inverse.alphas_cumprod, pipe.scheduler.alphas_cumprod)  # CogVideoX: SNR-shifted
    inverse.set_timesteps(5)
    pipe.scheduler.set_timesteps(5)
    assert sorted(inverse.targets.tolist()) == sorted(pipe.scheduler.timesteps.tolist())   # same levels
    assert inverse.timesteps.tolist() == [0, *inverse.targets[:-1].tolist()]   # the model sees the current level


def test_embedded_scheduler_is_zero_terminal_snr_and_inverts_to_it():
    pipe = ia.load_pipeline()
    inverse = inverse_scheduler(pipe.scheduler)
    assert float(inverse.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-9)    # ᾱ_T = 0: z_T is pure noise
    inverse.set_timesteps(10)
    assert int(inverse.targets[-1]) == 999


@pytest.mark.parametrize("arch, kw", [("animatediff", ANIMATEDIFF_KW), ("cogvideox", COGVIDEOX_KW)])
def test_invert_returns_the_trajectory_and_leaves_the_pipeline(animatediff, cogvideox, arch, kw):
    pipe = animatediff if arch == "animatediff" else cogvideox
    scheduler = pipe.scheduler
    video = np.random.default_rng(0).integers(0, 256, (kw["num_frames"], kw["height"], kw["width"], 3), np.uint8)
    inv = ia.invert(pipe, video, "a red circle", num_inference_steps=kw["num_inference_steps"], capture=True)
    assert pipe.scheduler is scheduler
    assert inv.latents.shape[0] == kw["num_inference_steps"] + 1
    torch.testing.assert_close(inv.latents[0], encode_video(pipe, video).float())       # z_0 = VAE encoding
    assert not torch.equal(inv.latents[-1], inv.latents[0])
    assert set(inv.stats.layer.values) == set(self_attention_names(pipe))
    assert inv.reconstruction.shape == video.shape
    assert inv.psnr == pytest.approx(psnr(inv.reconstruction, video))
    assert inv.ssim == pytest.approx(video_ssim(inv.reconstruction, video))


def test_embedded_model_reconstructs_a_rendered_clip():
    pipe = ia.load_pipeline()
    clip = render_toy_clip(DEFAULT_SOURCE_PROMPT, seed=1, off_path=14.0)
    inv = ia.invert(pipe, clip, DEFAULT_SOURCE_PROMPT, num_inference_steps=10)
    assert inv.vae_psnr > inv.psnr >= TOY_PSNR


def test_a_scheduler_without_inverse_fails_cleanly(animatediff):
    from diffusers import EulerDiscreteScheduler

    pipe = ia.tiny_pipeline("animatediff")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    video = np.zeros((4, 16, 16, 3), np.uint8)
    with pytest.raises(IEAdaptError, match="DDIM"):
        ia.invert(pipe, video, "a red circle", num_inference_steps=2)
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert not [m for m in pipe.unet.modules() if m._forward_pre_hooks or m._forward_hooks]


@pytest.mark.parametrize("arch, kw", [("animatediff", ANIMATEDIFF_KW), ("cogvideox", COGVIDEOX_KW)])
def test_entropy_only_capture_equals_the_full_one_and_the_edit_is_unchanged(animatediff, cogvideox, arch, kw):
    """``capture="entropy"`` (what an edit's inversion records) gives the core StatsRecorder's entropy bit for bit,
    the same ``L_edit`` and the same edited video as an edit from a fully captured inversion."""
    from ieadapt_interp.methods.editing import Edit, edit_many

    pipe = animatediff if arch == "animatediff" else cogvideox
    video = np.random.default_rng(2).integers(0, 256, (kw["num_frames"], kw["height"], kw["width"], 3), np.uint8)
    args = dict(num_inference_steps=kw["num_inference_steps"], reconstruct=False)
    full = ia.invert(pipe, video, "a red circle", capture=True, **args)
    cheap = ia.invert(pipe, video, "a red circle", capture="entropy", **args)
    assert {"energy", "map_entropy_hist"} <= set(full.stats.data_vars)
    assert set(cheap.stats.data_vars) <= {"entropy", "entropy_pct", "entropy_text", "entropy_text_pct"}
    for var in cheap.stats.data_vars:
        np.testing.assert_array_equal(cheap.stats[var].values, full.stats[var].values)
    torch.testing.assert_close(cheap.latents, full.latents, rtol=0, atol=0)
    assert cheap.stats.ieadapt.low_entropy_layers(0.5) == full.stats.ieadapt.low_entropy_layers(0.5)
    edits = [Edit("a blue circle"), Edit("a blue circle", "value")]
    kw = {**kw, "guidance_scale": 7.5}
    reference = edit_many(pipe, video, "a red circle", edits, inversion=full, **kw)
    default = edit_many(pipe, video, "a red circle", edits, **kw)     # inverts inside with capture="entropy"
    assert set(default[0].inversion.stats.data_vars) <= set(cheap.stats.data_vars)
    for a, b in zip(reference, default):
        np.testing.assert_array_equal(a.video, b.video)
        np.testing.assert_array_equal(a.source_video, b.source_video)
        pd.testing.assert_frame_equal(a.layers, b.layers)
    with pytest.raises(IEAdaptError, match="capture"):
        ia.invert(pipe, video, "a red circle", capture="maps", **args)
