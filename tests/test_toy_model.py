"""The embedded toy text-to-video model: build, tiny training end to end, and the shipped weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ieadapt_interp.models.toy import DEFAULT_SAMPLING, build_toy_pipeline, default_model_path, load_toy_pipeline
from ieadapt_interp.models.toy.dataset import heldout_captions
from ieadapt_interp.models.toy.model import TINY_CONFIG, build_tokenizer

REPO = Path(__file__).resolve().parents[1]


def test_tokenizer_is_word_level_and_offline():
    tok = build_tokenizer()
    ids = tok("a red circle moving left on a black background")["input_ids"]
    assert len(ids) == 9 + 2  # one token a word, plus start and end
    assert tok.model_max_length == 16


def test_build_pipeline_classes():
    from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, UNetMotionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = build_toy_pipeline(TINY_CONFIG, seed=0)
    assert isinstance(pipe, AnimateDiffPipeline)
    assert isinstance(pipe.unet, UNetMotionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr
    assert not pipe.unet.training and not pipe.vae.training and not pipe.text_encoder.training


def test_missing_model_error_says_how_to_retrain(tmp_path):
    with pytest.raises(FileNotFoundError, match="ieadapt_interp.models.toy.train"):
        load_toy_pipeline(tmp_path / "nope")


def test_train_tiny_end_to_end(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ieadapt_interp.models.toy.train", "--out", str(out), "--tiny", "--device", "cpu",
           "--samples", "1"]
    r = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 4 and state["vae_step"] == 4
    assert any(l.get("phase") == "unet" for l in state["log"])
    assert list(out.glob("samples_*.png"))
    # resume for two more steps
    out2 = tmp_path / "run2"
    r = subprocess.run(cmd[:4] + [str(out2), "--tiny", "--device", "cpu", "--samples", "0", "--no-export",
                                  "--resume", str(out), "--steps", "6"], check=False, env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out2 / "state.json").read_text())["step"] == 6
    # the exported pipeline loads and generates
    pipe = load_toy_pipeline(out / "pipeline")
    frames = pipe("a red circle moving left on a black background", num_frames=4, height=64, width=64,
                  num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 4, 64, 64, 3)


SHIPPED = default_model_path()
needs_shipped = pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="no shipped toy model")


@needs_shipped
def test_shipped_model_size_and_offline_load():
    total = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert total <= 40 * 1024 * 1024
    code = ("import torch; from ieadapt_interp.models.toy import load_toy_pipeline; p = load_toy_pipeline(); "
            "assert p.unet.dtype == torch.float32 and not p.unet.training; print('ok')")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


@needs_shipped
def test_shipped_model_follows_heldout_captions():
    from ieadapt_interp.models.toy.evaluate import evaluate_toy_model

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    pipe = load_toy_pipeline()
    caps = heldout_captions()
    # one caption per motion (left, right, up, down, still), seed 0, DEFAULT_SAMPLING but 10 steps instead of 25
    # (a third of the suite's longest test; the 25-step held-out accuracies are in data/toy_t2v/README.md)
    picks = [next(c for c in caps if m in c) for m in ("moving left", "moving right", "moving up", "moving down",
                                                        "staying still")]
    df = evaluate_toy_model(pipe, picks, seed=0, batch_size=len(picks), num_inference_steps=10)
    assert df.colour_ok.mean() >= 0.8, df
    assert df.motion_ok.mean() >= 0.6, df
    assert df.one_blob_frac.mean() >= 0.8, df
    assert set(DEFAULT_SAMPLING) >= {"num_frames", "height", "width", "num_inference_steps", "guidance_scale"}
