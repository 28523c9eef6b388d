"""VBench ``motion_smoothness`` with the AMT-S re-implementation: checkpoint layout, padding, the real loader
with a random-initialised AMT-S saved as ``amt-s.pth``, and VBench's frame pairing / uint8 / score formula."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ieadapt_interp.metrics import AMTS, MissingWeightsError, compute_metrics, load_amt, motion_smoothness
from ieadapt_interp.metrics.vbench import vbench_amt_scale

# Parameter names and shapes of the official checkpoint, read off VBench's third_party/amt sources
# (networks/AMT-S.py; blocks/feat_enc.py SmallEncoder(84, 'instance'), blocks/ifrnet.py Encoder/InitDecoder/
# IntermediateDecoder/ResBlock, blocks/multi_flow.py MultiFlowDecoder, blocks/raft.py SmallUpdateBlock).
OFFICIAL_SHAPES = {
    "feat_encoder.conv1.weight": (32, 3, 7, 7),
    "feat_encoder.layer1.0.conv1.weight": (8, 32, 1, 1),
    "feat_encoder.layer2.0.downsample.0.weight": (64, 32, 1, 1),
    "feat_encoder.layer3.1.conv3.bias": (96,),
    "feat_encoder.conv2.weight": (84, 96, 1, 1),
    "encoder.pyramid1.0.0.weight": (20, 3, 3, 3),
    "encoder.pyramid1.0.1.weight": (20,),
    "encoder.pyramid4.1.0.weight": (56, 56, 3, 3),
    "decoder4.convblock.0.0.weight": (112, 113, 3, 3),
    "decoder4.convblock.1.conv2.0.weight": (20, 20, 3, 3),
    "decoder4.convblock.1.prelu.weight": (112,),
    "decoder4.convblock.2.weight": (112, 48, 4, 4),
    "decoder3.convblock.0.0.weight": (132, 136, 3, 3),
    "decoder1.convblock.1.conv5.weight": (60, 60, 3, 3),
    "decoder1.convblock.2.weight": (60, 24, 4, 4),
    "update4.convc1.weight": (64, 392, 1, 1),
    "update4.convf1.weight": (40, 4, 7, 7),
    "update4.gru.0.weight": (76, 116, 3, 3),
    "update3.feat_head.2.weight": (32, 76, 3, 3),
    "update2.flow_head.2.weight": (4, 76, 3, 3),
    "comb_block.0.weight": (18, 9, 3, 3),
    "comb_block.1.weight": (18,),
    "comb_block.2.weight": (3, 18, 3, 3),
}


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty ``$IEADAPT_WEIGHTS_DIR``, with the other caches pointed at empty folders (as in
    test_metrics_learned.py)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("IEADAPT_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    return folder


def smooth_video(frames: int = 5, height: int = 120, width: int = 136, seed: int = 0) -> np.ndarray:
    """A textured pattern drifting right by 2 px per frame plus a little noise."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (height, width + 4 * frames, 3)).astype(np.uint8), (7, 7), 2)
    video = np.stack([base[:, 2 * t : 2 * t + width] for t in range(frames)])
    return np.clip(video.astype(int) + rng.integers(-3, 4, video.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def amt_file(weights_dir):
    """A random-initialised AMT-S saved as the official ``{"state_dict": ...}`` in ``$IEADAPT_WEIGHTS_DIR``."""
    torch.manual_seed(0)
    state = AMTS().state_dict()
    torch.save({"state_dict": state}, weights_dir / "amt-s.pth")
    return state


# ------------------------------------------------------------------ architecture
def test_state_dict_matches_official_layout():
    state = AMTS().state_dict()
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert len(state) == 213
    assert not any("running" in key or "norm" in key for key in state)  # instance norms: no params, no stats
    assert sum(v.numel() for v in state.values()) == 2_990_543  # the paper's "AMT-S, 3.0M"


def test_output_keeps_any_input_size():
    torch.manual_seed(0)
    model = AMTS().eval()
    img0, img1 = torch.rand(2, 1, 3, 115, 130)
    with torch.no_grad():
        out = model(img0, img1, 0.5)
        half = model(torch.rand(1, 3, 250, 260), torch.rand(1, 3, 250, 260), 0.5, scale_factor=0.5)
    assert out.shape == img0.shape and half.shape == (1, 3, 250, 260)
    assert 0 <= out.min() and out.max() <= 1 and torch.isfinite(out).all()


def test_too_small_frames_are_rejected():
    # 100 pads to 112: the 4th correlation level would be 1 pixel wide (NaN in the official code)
    with pytest.raises(ValueError, match="at least 128"):
        AMTS()(torch.rand(1, 3, 100, 140), torch.rand(1, 3, 100, 140), 0.5)


# ------------------------------------------------------------------ real loader, hand-computed score
def test_motion_smoothness_real_loader_matches_hand_computation(amt_file):
    video = smooth_video()
    value = motion_smoothness(video)

    model = AMTS()
    model.load_state_dict(amt_file)
    model.eval()
    embt = torch.full((1, 1, 1, 1), 0.5)
    errors = []
    for i in (0, 2):  # kept frames 0, 2, 4 → predictions of frames 1, 3
        pair = torch.from_numpy(video[[i, i + 2]]).permute(0, 3, 1, 2).contiguous().float() / 255.0
        padded = F.pad(pair, (4, 4, 4, 4), mode="replicate")  # 120×136 → 128×144
        with torch.no_grad():
            pred = model.interpolate_padded(padded[:1], padded[1:], embt)[0, :, 4:-4, 4:-4]
        pred_uint8 = (pred * 255.0).permute(1, 2, 0).numpy().clip(0, 255).astype(np.uint8)  # truncation
        errors.append(np.abs(pred_uint8.astype(int) - video[i + 1].astype(int)).mean())
    assert value == pytest.approx((255.0 - np.mean(errors)) / 255.0, abs=1e-9)
    assert 0.0 < value < 1.0

    assert load_amt() is load_amt()  # cached
    loaded = load_amt()
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert compute_metrics(["motion_smoothness"], video)["motion_smoothness"] == value
    assert motion_smoothness(video, batch_size=2) == pytest.approx(value, abs=1e-6)  # both pairs in one pass


# ------------------------------------------------------------------ missing weights
def test_missing_weights_name_amt_s(weights_dir):
    video = smooth_video(frames=3, height=16, width=16)
    with pytest.raises(MissingWeightsError) as info:
        motion_smoothness(video)
    assert info.value.metric == "motion_smoothness" and info.value.filename == "amt-s.pth"
    assert str(weights_dir / "amt-s.pth") in str(info.value)
    reasons: dict[str, str] = {}
    out = compute_metrics(["motion_smoothness"], video, on_missing="nan", reasons=reasons)
    assert math.isnan(out["motion_smoothness"]) and "amt-s.pth" in reasons["motion_smoothness"]


def test_video_is_validated_before_loading(weights_dir):
    with pytest.raises(ValueError, match="at least 3 frame"):
        motion_smoothness(np.zeros((2, 16, 16, 3), np.uint8))


# ------------------------------------------------------------------ VBench's pairing, uint8 conversion, formula
class MidpointStub(nn.Module):
    """Returns the average of its two frames plus ``offset`` / 255; records its calls."""

    def __init__(self, offset: float):
        super().__init__()
        self.offset, self.calls = offset, []

    def forward(self, img0, img1, embt, scale_factor=1.0, divisor=16):
        self.calls.append((img0.shape, float(embt.flatten()[0]), scale_factor, divisor))
        return (img0 + img1) / 2 + self.offset / 255.0


def midpoint_video(frames: int, size: int = 8) -> np.ndarray:
    """Even frames hold even values, odd frames the exact average of their neighbours."""
    rng = np.random.default_rng(1)
    video = np.zeros((frames, size, size + 2, 3), np.uint8)
    video[0::2] = 2 * rng.integers(0, 128, video[0::2].shape)
    for t in range(1, frames - 1, 2):
        video[t] = (video[t - 1].astype(int) + video[t + 1]) // 2
    return video


def test_exact_midpoints_score_one_and_the_last_odd_frame_of_an_even_video_is_ignored():
    video = midpoint_video(6)
    video[5] = 255 - video[4]  # frame 5 has no right neighbour: VBench never compares it
    stub = MidpointStub(offset=0.9)  # ×255 then truncation (not rounding) gives back the midpoint
    assert motion_smoothness(video, model=stub, batch_size=1) == 1.0
    assert [c[0][0] for c in stub.calls] == [1, 1] and {c[1:] for c in stub.calls} == {(0.5, 1.0, 16)}


def test_one_grey_level_off_everywhere():
    # prediction = midpoint + 1.1/255 → truncated to midpoint + 1 → score (255 − 1) / 255
    assert motion_smoothness(midpoint_video(7), model=MidpointStub(offset=1.1)) == pytest.approx(254 / 255)


def test_vbench_scale():
    assert vbench_amt_scale(1080, 1920) == 1.0  # VBench's standard runs: no resizing
    assert vbench_amt_scale(1080, 1920, vram_bytes=140 * 1024**3) == 1.0
    # 8 GiB: 524288 / (1080·1920) · sqrt((8192 − 2500) / 1500) = 0.4925 → 1 / floor(16 / sqrt(0.4925)) · 16
    assert vbench_amt_scale(1080, 1920, vram_bytes=8 * 1024**3) == pytest.approx(16 / 22)
    with pytest.raises(ValueError, match="vram_bytes"):
        vbench_amt_scale(1080, 1920, vram_bytes=2 * 1024**3)  # below VBench's 2500 MiB bias: NaN there
    stub = MidpointStub(offset=0.5)
    motion_smoothness(midpoint_video(3, size=720), model=stub, vram_bytes=3 * 1024**3)
    # 524288 / (720·722) · sqrt(572 / 1500) = 0.622 → 1 / floor(16 / sqrt(0.622)) · 16 = 16 / 20
    assert stub.calls[0][2:] == (pytest.approx(0.8), 20)
