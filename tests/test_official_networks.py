"""The re-implemented VBench networks against their official code, with shared random weights.

Official code, installed from PyPI by ``make setup`` (``requirements/official.txt``, ``pip install --no-deps``),
never copied into this repository:

- ``vbench==0.1.5`` (Vchitect/VBench, Apache-2.0): ``vbench/third_party/amt/networks/AMT-S.py`` (``Model``;
  vendored from MCG-NKU/AMT, reported as CC BY-NC 4.0 upstream — not verified here; the wheel ships no separate
  licence file for it),
  ``vbench/third_party/RAFT/core/raft.py`` (``RAFT``; vendored from princeton-vl/RAFT, BSD-3-Clause),
  and VBench's metric code paths ``vbench/dynamic_degree.py`` (``DynamicDegree``),
  ``vbench/motion_smoothness.py`` (``MotionSmoothness``), ``vbench/imaging_quality.py`` (``technical_quality``).
- ``pyiqa==0.1.16`` (chaofengc/IQA-PyTorch, PolyForm Noncommercial 1.0.0 plus the S-Lab License 1.0, both
  non-commercial): ``pyiqa/archs/musiq_arch.py`` (``MUSIQ``, a port of google-research/musiq).

The licences allow using the packages in this non-commercial research test environment (whoever runs the suite
commercially must check them); the non-commercial AMT and pyiqa licences would not allow transcribing their code
into this Apache-2.0 repository, so nothing is copied.

How they are imported (:func:`official_modules`): the top-level ``__init__`` files of ``vbench``, ``pyiqa``,
``pyiqa.archs``, ``pyiqa.utils`` and ``pyiqa.data`` import the whole toolkits (decord, CLIP, timm, …) and are
skipped: those packages are registered bare (their folder only), so only the network modules and what they import
themselves run. Three packages that the imported modules name at import time but never call on the paths tested
here are stubbed (each stub raises if called): ``decord`` (``vbench.utils.load_video`` uses it for ``.mp4`` only;
the tests hand it ``.gif`` files), ``easydict`` (``compute_dynamic_degree`` only) and ``omegaconf``
(``MotionSmoothness.load_model`` only, bypassed: the tests give it the model). Everything is removed from
``sys.modules`` afterwards.

Tolerance: none for the networks and the per-pair / per-frame scores: every comparison is exact (``torch.equal`` /
``==``) on CPU in float32, as the re-implementations run the same operations in the same order. The one exception
is ``imaging_quality``'s mean over frames (float32 here, Python floats in VBench): relative 1e-6 (measured 1.2e-7).
The frame resizing before MUSIQ (:func:`test_musiq_preprocessing_equals_vbench_transform`) once rounded to
uint8 where VBench does not; this test found it, and it now matches exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import sys
import types

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ieadapt_interp.metrics import AMTS, MUSIQ, RAFT, dynamic_degree, imaging_quality, motion_smoothness
from ieadapt_interp.metrics.vbench import musiq_frames, raft_motion_scores
from tests.test_raft import random_raft, textured_video

BARE_PACKAGES = ("vbench", "pyiqa", "pyiqa.archs", "pyiqa.utils", "pyiqa.data")
MODULES = {
    "amt": "vbench.third_party.amt.networks.AMT-S",
    "raft": "vbench.third_party.RAFT.core.raft",
    "dynamic_degree": "vbench.dynamic_degree",
    "motion_smoothness": "vbench.motion_smoothness",
    "imaging_quality": "vbench.imaging_quality",
    "musiq": "pyiqa.archs.musiq_arch",
}


def _unused(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} is stubbed in tests/test_official_networks.py and must not be called")

    return fail


STUBS = {
    "decord": {"VideoReader": _unused("decord.VideoReader"), "cpu": _unused("decord.cpu"), "bridge": None},
    "easydict": {"EasyDict": _unused("easydict.EasyDict")},
    "omegaconf": {"OmegaConf": None},
}


@contextlib.contextmanager
def _bare_imports():
    """Register :data:`BARE_PACKAGES` without running their ``__init__`` and :data:`STUBS`; afterwards remove every
    ``vbench``/``pyiqa`` module and the stubs from ``sys.modules`` and restore the root logger (``vbench.utils``
    calls ``logging.basicConfig``)."""
    before, root = set(sys.modules), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        for name in BARE_PACKAGES:
            parent, _, leaf = name.rpartition(".")
            if parent:
                path = [f"{folder}/{leaf}" for folder in sys.modules[parent].__path__]
            else:
                spec = importlib.util.find_spec(name)
                assert spec is not None, f"{name} is not installed: run make setup (requirements/official.txt)"
                path = list(spec.submodule_search_locations)
            sys.modules[name] = types.ModuleType(name)
            sys.modules[name].__path__ = path
        for name, attributes in STUBS.items():
            sys.modules[name] = types.ModuleType(name)
            sys.modules[name].__dict__.update(attributes)
        yield
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("vbench", "pyiqa") or name in STUBS:
                del sys.modules[name]
        root.handlers[:], root.level = handlers, level


def official_modules() -> types.SimpleNamespace:
    """The official modules of :data:`MODULES`, imported as described in this module's docstring."""
    with _bare_imports():
        return types.SimpleNamespace(**{key: importlib.import_module(name) for key, name in MODULES.items()})


@pytest.fixture(scope="module")
def official():
    return official_modules()


def official_raft(official, model: RAFT) -> nn.Module:
    """VBench's RAFT (``args`` as ``compute_dynamic_degree`` sets them) with ``model``'s weights, strict."""
    net = official.raft.RAFT(argparse.Namespace(small=False, mixed_precision=False, alternate_corr=False))
    net.load_state_dict(model.state_dict(), strict=True)
    return net.eval()


def random_amt(seed: int) -> AMTS:
    torch.manual_seed(seed)
    return AMTS().eval()


def random_musiq(seed: int, **config) -> MUSIQ:
    """MUSIQ (``config``: constructor arguments) with random weights; the class token (zeros at initialisation)
    too."""
    torch.manual_seed(seed)
    model = MUSIQ(**config).eval()
    with torch.no_grad():
        model.transformer_encoder.cls.normal_()
    return model


def save_frames(folder, video: np.ndarray, suffix: str = ".png") -> str:
    folder.mkdir()
    for i, frame in enumerate(video):
        cv2.imwrite(str(folder / f"{i:03d}{suffix}"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return str(folder)


# ------------------------------------------------------------------ AMT-S (motion_smoothness)
def test_amt_s_equals_vbench_model(official):
    ours = random_amt(0)
    theirs = official.amt.Model().eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    img0, img1 = torch.rand(2, 1, 3, 128, 144, generator=torch.Generator().manual_seed(1))
    embt = torch.full((1, 1, 1, 1), 0.25)  # not ½: the t → 0 and t → 1 flows are scaled differently
    with torch.no_grad():
        mine = ours.interpolate_padded(img0, img1, embt)
        reference = theirs(img0, img1, embt, scale_factor=1.0, eval=True)["imgt_pred"]
    assert 0.05 < mine.std() and torch.equal(mine, reference)


def test_motion_smoothness_equals_vbench_motion_score(official, tmp_path):
    # 4 frames of 120 × 136 (padded to 128 × 144): frames 0 and 2 predict frame 1; frame 3 is never compared
    video = textured_video(4, 120, 136, shift=2, seed=3)
    ours = random_amt(2)
    scorer = official.motion_smoothness.MotionSmoothness.__new__(official.motion_smoothness.MotionSmoothness)
    scorer.device, scorer.niters = "cpu", 1
    scorer.initialization()  # CPU: no resizing, as VBench's standard runs (vram_bytes=None here)
    scorer.model = official.amt.Model().eval()
    scorer.model.load_state_dict(ours.state_dict(), strict=True)
    reference = scorer.motion_score(save_frames(tmp_path / "frames", video))
    assert 0 < reference < 1 and motion_smoothness(video, model=ours) == reference


# ------------------------------------------------------------------ RAFT (dynamic_degree)
def test_raft_equals_vbench_raft(official):
    ours = random_raft(0)
    theirs = official_raft(official, ours)
    image1 = torch.rand(1, 3, 128, 136, generator=torch.Generator().manual_seed(1)) * 255
    image2 = torch.roll(image1, shifts=(2, 3), dims=(-2, -1))
    with torch.no_grad():
        low, up = ours(image1, image2, iters=3)
        low_ref, up_ref = theirs(image1, image2, iters=3, test_mode=True)
    assert up.abs().max() > 1 and torch.equal(low, low_ref) and torch.equal(up, up_ref)


class Memo(nn.Module):
    """Runs ``net`` once per distinct (frame pair, iterations) and answers repeated calls from memory (``hits``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.seen, self.hits = net, [], 0

    def forward(self, image1, image2, iters=12, test_mode=False):
        for a, b, n, out in self.seen:
            if n == iters and torch.equal(a, image1) and torch.equal(b, image2):
                self.hits += 1
                return out
        with torch.no_grad():
            out = self.net(image1, image2, iters=iters, test_mode=True)
        self.seen.append((image1.clone(), image2.clone(), iters, out))
        return out


@pytest.mark.slow
def test_dynamic_degree_equals_vbench_infer(official, tmp_path):
    # An .mp4 at 24 fps: VBench's get_frames keeps every round(24/8) = 3rd frame (0, 3, 6) → 2 pairs, each
    # 122 × 126 → 128 × 128 by its InputPadder, 20 RAFT iterations. VBench's network (its RAFT class with our
    # random weights, equal to ours above) runs VBench's pairs; our path must hand it exactly the same pairs
    # (every call answered from memory) and turn the flows into the same scores and verdict.
    path = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 24, (126, 122))
    for frame in textured_video(7, 122, 126, shift=3, seed=4):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    capture, decoded = cv2.VideoCapture(path), []  # the frames VBench decodes (its get_frames reads with cv2)
    while (read := capture.read())[0]:
        decoded.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    video = np.stack(decoded)
    assert video.shape == (7, 122, 126, 3) and fps == 24

    weights = tmp_path / "raft-things.pth"
    torch.save({f"module.{k}": v for k, v in random_raft(1).state_dict().items()}, weights)
    args = argparse.Namespace(model=str(weights), small=False, mixed_precision=False, alternate_corr=False)
    scorer = official.dynamic_degree.DynamicDegree(args, "cpu")  # VBench's loader: strips module., strict load
    scorer.model = model = Memo(scorer.model)
    scores: list[float] = []
    check_move = scorer.check_move

    def recording_check_move(score_list):  # VBench's check_move, recording the per-pair scores it judges
        scores.extend(score_list)
        return check_move(score_list)

    scorer.check_move = recording_check_move
    moving = scorer.infer(path)
    assert len(model.seen) == 2 and len(scores) == 2

    assert raft_motion_scores(model, video, fps=fps).tolist() == scores and model.hits == 2
    assert dynamic_degree(video, fps=fps, model=model) == float(moving) and model.hits == 4
    assert scorer.params == {"thres": 6.0 * 122 / 256, "count_num": 1}


# ------------------------------------------------------------------ MUSIQ (imaging_quality)
def test_musiq_equals_pyiqa_musiq(official):
    ours = random_musiq(0)
    theirs = official.musiq.MUSIQ(pretrained=False).eval()  # pyiqa's defaults: 1 class, scales 224/384/original
    theirs.load_state_dict(ours.state_dict(), strict=True)
    images = torch.rand(2, 3, 70, 100, generator=torch.Generator().manual_seed(1))  # not multiples of 32
    with torch.no_grad():
        mine, reference = ours(images), theirs(images)
    assert mine.shape == (2,) and mine[0] != mine[1] and torch.equal(mine, reference.flatten())


def gif_video(path, frames: int, height: int, width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:])


def test_musiq_preprocessing_equals_vbench_transform(official, tmp_path):
    # 2 frames of 40 × 600: VBench's 'longer' preprocessing resizes them to 34 × 512 before MUSIQ
    path = str(tmp_path / "clip.gif")
    gif_video(path, 2, 40, 600, seed=5)
    decoded = official.imaging_quality.load_video(path)  # VBench's own GIF reader: float (T, 3, H, W)
    video = decoded.permute(0, 2, 3, 1).numpy().astype(np.uint8)
    transformed = official.imaging_quality.transform(decoded, "longer")
    assert transformed.shape == (2, 3, 34, 512)
    assert torch.equal(musiq_frames(video, "cpu"), transformed)


def test_imaging_quality_equals_vbench_technical_quality(official, tmp_path):
    # 2 frames of 40 × 100 (no resizing), read by VBench's load_video, scored one frame per pass; the network is
    # the one compared above, made small here (2 layers, scales 64 / 96) to keep the test fast
    path = str(tmp_path / "clip.gif")
    gif_video(path, 2, 40, 100, seed=6)
    video = official.imaging_quality.load_video(path).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    config = {"num_layers": 2, "longer_side_lengths": [64, 96]}
    ours = random_musiq(1, **config)
    theirs = official.musiq.MUSIQ(pretrained=False, **config).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        reference, _ = official.imaging_quality.technical_quality(theirs, [path], "cpu")
    # the per-frame scores are equal; VBench averages them as Python floats (float64), we in float32
    assert imaging_quality(video, model=ours) == pytest.approx(reference, rel=1e-6)
