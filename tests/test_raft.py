"""RAFT re-implementation and VBench's ``dynamic_degree``: checkpoint layout, strict loading, VBench's threshold
rule on known flows.

The comparison with VBench's own code (its ``RAFT`` class and ``DynamicDegree.infer``, shared random weights) is in
tests/test_official_networks.py. Here, a second independent reference: ``torchvision.models.optical_flow.raft_large``
(BSD-3), onto which our module (official parameter names) is mapped by
:func:`~ieadapt_interp.metrics.raft.to_torchvision`; it must give the same flow with shared random weights.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.optical_flow import raft_large

from ieadapt_interp.metrics import RAFT, MissingWeightsError, compute_metrics, dynamic_degree, load_raft
from ieadapt_interp.metrics.raft import raft_state_dict, to_torchvision
from ieadapt_interp.metrics.vbench import dynamic_thresholds, raft_motion_scores

# Parameter names and shapes of the official RAFT (core/extractor.py BasicEncoder/ResidualBlock,
# core/update.py BasicUpdateBlock/BasicMotionEncoder/SepConvGRU/FlowHead, core/raft.py RAFT with small=False).
OFFICIAL_SHAPES = {
    "fnet.conv1.weight": (64, 3, 7, 7),
    "fnet.layer1.0.conv1.weight": (64, 64, 3, 3),
    "fnet.layer2.0.downsample.0.weight": (96, 64, 1, 1),
    "fnet.layer3.1.conv2.bias": (128,),
    "fnet.conv2.weight": (256, 128, 1, 1),
    "cnet.norm1.running_var": (64,),
    "cnet.layer2.0.norm3.weight": (96,),
    "cnet.layer2.0.downsample.1.weight": (96,),
    "cnet.layer3.0.norm1.running_mean": (128,),
    "cnet.conv2.weight": (256, 128, 1, 1),
    "update_block.encoder.convc1.weight": (256, 324, 1, 1),
    "update_block.encoder.convc2.weight": (192, 256, 3, 3),
    "update_block.encoder.convf1.weight": (128, 2, 7, 7),
    "update_block.encoder.convf2.weight": (64, 128, 3, 3),
    "update_block.encoder.conv.weight": (126, 256, 3, 3),
    "update_block.gru.convz1.weight": (128, 384, 1, 5),
    "update_block.gru.convq2.weight": (128, 384, 5, 1),
    "update_block.flow_head.conv1.weight": (256, 128, 3, 3),
    "update_block.flow_head.conv2.weight": (2, 256, 3, 3),
    "update_block.mask.0.weight": (256, 128, 3, 3),
    "update_block.mask.2.weight": (576, 256, 1, 1),
}


def random_raft(seed: int = 0) -> RAFT:
    """A RAFT with random weights and random batch-norm statistics (so eval-mode batch norm is not the identity)."""
    torch.manual_seed(seed)
    model = RAFT().eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_mean"):
                tensor.normal_(0, 0.2)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif "norm" in name and name.endswith("weight"):
                tensor.uniform_(0.5, 1.5)
    return model


def torchvision_twin(model: RAFT) -> nn.Module:
    twin = raft_large().eval()
    twin.load_state_dict(to_torchvision(model.state_dict()), strict=True)
    return twin


def textured_video(frames: int, height: int, width: int, shift: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width + shift * frames, 3)).astype(np.uint8)
    return np.stack([base[:, shift * t : shift * t + width] for t in range(frames)])


# ------------------------------------------------------------------ architecture
def test_state_dict_has_the_official_layout():
    state = RAFT().state_dict()
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("fnet") and "norm" in k for k in state)  # instance norms: no parameters
    assert len(state) == 179  # 169 torchvision keys + cnet's 2 × 5 norm3 twins of downsample.1
    params = sum(p.numel() for p in RAFT().parameters())
    assert params == 5_257_536  # the paper's "5.3M" (parameters; batch-norm statistics excluded)


def test_flow_equals_torchvision_raft_with_shared_random_weights():
    model = random_raft()
    twin = torchvision_twin(model)
    g = torch.Generator().manual_seed(1)
    image1 = torch.rand(1, 3, 128, 136, generator=g) * 255
    image2 = torch.roll(image1, shifts=(2, 3), dims=(-2, -1))
    with torch.no_grad():
        low, up = model(image1, image2, iters=3)
        reference = twin(2 * image1 / 255 - 1, 2 * image2 / 255 - 1, num_flow_updates=3)[-1]
    assert up.shape == (1, 2, 128, 136) and low.shape == (1, 2, 16, 17)
    assert up.abs().max() > 1  # a non-trivial flow
    torch.testing.assert_close(up, reference, rtol=0, atol=1e-4)


def test_torchvision_mapping_is_strict():
    state = RAFT().state_dict()
    state["cnet.layer2.0.norm3.bias"] = state["cnet.layer2.0.norm3.bias"] + 1  # twins must agree
    with pytest.raises(ValueError, match="must equal"):
        to_torchvision(state)
    with pytest.raises(RuntimeError):
        raft_large().load_state_dict(to_torchvision({**RAFT().state_dict(), "fnet.extra.weight": torch.zeros(1)}))


def test_small_or_unpadded_frames_are_rejected():
    with pytest.raises(ValueError, match="at least 128"):
        RAFT()(torch.zeros(1, 3, 120, 128), torch.zeros(1, 3, 120, 128))
    with pytest.raises(ValueError, match="multiples of 8"):
        RAFT()(torch.zeros(1, 3, 130, 128), torch.zeros(1, 3, 130, 128))


# ------------------------------------------------------------------ loader and metric
@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("IEADAPT_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    return folder


def test_checkpoint_with_dataparallel_prefix_loads_strictly(weights_dir):
    model = random_raft(3)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, weights_dir / "raft-things.pth")
    loaded = load_raft()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(RuntimeError, match="Missing key"):
        RAFT().load_state_dict(raft_state_dict({"module.fnet.conv1.weight": torch.zeros(64, 3, 7, 7)}))


class ConstantFlow(nn.Module):
    """Returns, for the k-th call, a flow whose every pixel has magnitude ``magnitudes[k]`` (3-4-5 triangles)."""

    def __init__(self, magnitudes):
        super().__init__()
        self.magnitudes = list(magnitudes)
        self.calls = 0

    def forward(self, image1, image2, iters=12):
        m = self.magnitudes[self.calls]
        self.calls += 1
        flow = torch.stack([torch.full(image1.shape[-2:], 0.6 * m), torch.full(image1.shape[-2:], 0.8 * m)])[None]
        return None, flow


@pytest.mark.parametrize(
    "magnitudes, expected",
    [
        ([4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.0),  # 8 frames: round(2.0) = 2 pairs needed above 6·128/256 = 3 px
        ([4.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0], 1.0),
        ([3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0], 0.0),  # strictly above the threshold
    ],
)
def test_threshold_rule_on_known_flows(magnitudes, expected):
    video = np.zeros((8, 128, 160, 3), np.uint8)
    model = ConstantFlow(magnitudes)
    assert raft_motion_scores(model, video) == pytest.approx(magnitudes, abs=1e-5)
    assert dynamic_degree(video, model=ConstantFlow(magnitudes)) == expected


def test_vbench_rounding_of_the_pair_count():
    assert dynamic_thresholds(256, 256, 10) == (6.0, 2)  # round(2.5) = 2 (Python rounds halves to even)
    assert dynamic_thresholds(256, 256, 14) == (6.0, 4)  # round(3.5) = 4
    assert dynamic_thresholds(256, 256, 2) == (6.0, 0)  # then any pair makes the video "moving", as in VBench
    assert dynamic_degree(np.zeros((2, 128, 128, 3), np.uint8), model=ConstantFlow([0.0])) == 1.0


def test_missing_weights_name_raft_things(weights_dir):
    video = np.zeros((3, 128, 128, 3), np.uint8)
    with pytest.raises(MissingWeightsError, match="raft-things.pth"):
        dynamic_degree(video)
    reasons: dict = {}
    with pytest.warns(FutureWarning, match="flow_magnitude"):
        out = compute_metrics(["dynamic_degree"], video, on_missing="nan", reasons=reasons)
    assert math.isnan(out["dynamic_degree"]) and "raft-things.pth" in reasons["dynamic_degree"]


def test_bad_input_is_rejected_before_loading(weights_dir):
    with pytest.raises(ValueError, match="at least 121"):
        dynamic_degree(np.zeros((3, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="fps"):
        dynamic_degree(np.zeros((3, 128, 128, 3), np.uint8), fps=2)
