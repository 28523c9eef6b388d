"""Shared fixtures: tiny random-initialised pipelines built from configs (no downloads)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import ieadapt_interp as ia  # noqa: E402

ANIMATEDIFF_KW = dict(num_frames=4, height=16, width=16, num_inference_steps=2)
COGVIDEOX_KW = dict(num_frames=9, height=32, width=32, num_inference_steps=2)


@pytest.fixture(scope="session")
def animatediff():
    return ia.tiny_pipeline("animatediff", seed=0)


@pytest.fixture(scope="session")
def cogvideox():
    return ia.tiny_pipeline("cogvideox", seed=0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
