"""RAFT optical flow, re-implemented for VBench's ``dynamic_degree``.

Teed and Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow", ECCV 2020
(https://github.com/princeton-vl/RAFT, BSD-3-Clause). This is the full-size model VBench runs
(``small=False, mixed_precision=False, alternate_corr=False``: 4 correlation levels, radius 4, hidden and context
dims 128), written from the paper and the public source. Module names (``fnet``, ``cnet``, ``update_block
.{encoder, gru, flow_head, mask}``) and the sub-module layout are those of the official code, so the official
checkpoint ``raft-things.pth`` (saved from ``nn.DataParallel``: keys prefixed ``module.``) loads with
``load_state_dict(strict=True)`` once the prefix is stripped (:func:`raft_state_dict`). As in the official
residual blocks, ``norm3`` and ``downsample.1`` are one module, so the state dict names it twice.

Pipeline (images ``(N, 3, H, W)`` with values in [0, 255], H and W multiples of 8):

1. scale to [−1, 1]; a feature encoder (instance norm) maps both frames to 1/8 resolution, 256 channels; a
   context encoder (batch norm) maps the first frame to a hidden state (tanh) and a context (ReLU), 128 each;
2. the all-pairs correlation volume ``⟨f1, f2⟩ / √256`` is average-pooled into a 4-level pyramid;
3. ``iters`` times: sample each level in a 9 × 9 window around the current correspondence, encode it with the
   flow, update the hidden state with a separable conv-GRU, add the predicted flow update;
4. upsample the 1/8 flow ×8 with a learned convex combination of 3 × 3 neighbours (mask scaled by 0.25).

With shared random weights it equals VBench's own ``vbench/third_party/RAFT`` (exactly, tests/
test_official_networks.py). :func:`to_torchvision` maps the official state dict onto
``torchvision.models.optical_flow.raft_large`` (BSD), an independent implementation the tests use as a second
reference. Loading: :func:`load_raft` (strict, :func:`~.weights.load_strict`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import IEAdaptValueError
from .weights import WeightFile, load_strict, locate_file

RAFT_THINGS = WeightFile(
    "raft-things.pth",
    "RAFT trained on FlyingChairs + FlyingThings3D, the official models.zip of https://github.com/princeton-vl/RAFT "
    "(VBench downloads it to ~/.cache/vbench/raft_model/models)",
    extra_dirs=("~/.cache/vbench/raft_model/models",),
)
#: Smallest padded side: the coarsest correlation level (side / 64) must keep at least 2 pixels.
MIN_PADDED_SIDE = 128


# ---------------------------------------------------------------- encoders
class ResidualBlock(nn.Module):
    """Two 3 × 3 convs with norms and ReLUs plus a (strided 1 × 1 conv + norm) shortcut when ``stride > 1``."""

    def __init__(self, c_in: int, c_out: int, norm: str, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1, self.norm2 = _norm(norm, c_out), _norm(norm, c_out)
        self.downsample = None
        if stride != 1:
            self.norm3 = _norm(norm, c_out)
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + y)


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels)


class BasicEncoder(nn.Module):
    """``(N, 3, H, W)`` → ``(N, out_dim, H/8, W/8)``: 7 × 7 stride-2 conv, residual stages 64 / 96 / 128
    (strides 1, 2, 2), 1 × 1 output conv. ``norm``: ``"instance"`` (feature encoder) or ``"batch"`` (context)."""

    def __init__(self, out_dim: int, norm: str):
        super().__init__()
        self.norm1 = _norm(norm, 64)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        stages, c_in = [], 64
        for width, stride in ((64, 1), (96, 2), (128, 2)):
            stages.append(nn.Sequential(ResidualBlock(c_in, width, norm, stride), ResidualBlock(width, width, norm)))
            c_in = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(128, out_dim, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


# ---------------------------------------------------------------- update block
class MotionEncoder(nn.Module):
    """Correlation features (324 channels) and flow (2) → 126 motion channels + the flow itself."""

    def __init__(self, corr_channels: int):
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], 1))), flow], 1)


class SepConvGRU(nn.Module):
    """A conv-GRU applied twice: with 1 × 5 kernels (horizontal), then with 5 × 1 kernels (vertical)."""

    def __init__(self, hidden: int = 128, inputs: int = 256):
        super().__init__()
        for suffix, kernel, pad in (("1", (1, 5), (0, 2)), ("2", (5, 1), (2, 0))):
            for gate in "zrq":
                setattr(self, f"conv{gate}{suffix}", nn.Conv2d(hidden + inputs, hidden, kernel, padding=pad))

    def _step(self, h: torch.Tensor, x: torch.Tensor, suffix: str) -> torch.Tensor:
        hx = torch.cat([h, x], 1)
        z = torch.sigmoid(getattr(self, f"convz{suffix}")(hx))
        r = torch.sigmoid(getattr(self, f"convr{suffix}")(hx))
        q = torch.tanh(getattr(self, f"convq{suffix}")(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._step(self._step(h, x, "1"), x, "2")


class FlowHead(nn.Module):
    """Hidden state → flow update ``(N, 2, h, w)``: 3 × 3 conv, ReLU, 3 × 3 conv."""

    def __init__(self, c_in: int = 128, hidden: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    """One refinement: motion encoding, GRU update, flow update and the 0.25-scaled upsampling mask."""

    def __init__(self, corr_channels: int, hidden: int = 128):
        super().__init__()
        self.encoder = MotionEncoder(corr_channels)
        self.gru = SepConvGRU(hidden, 128 + hidden)
        self.flow_head = FlowHead(hidden, 256)
        self.mask = nn.Sequential(nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(256, 64 * 9, 1))

    def forward(self, net, inp, corr, flow):
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], 1))
        return net, 0.25 * self.mask(net), self.flow_head(net)


# ---------------------------------------------------------------- correlation and geometry
def coords_grid(n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Pixel coordinates ``(n, 2, height, width)``: channel 0 is x (column), channel 1 is y (row)."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([cols, rows]).float()[None].repeat(n, 1, 1, 1)


def correlation_pyramid(fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int = 4) -> list[torch.Tensor]:
    """All-pairs correlation ``⟨f1(p), f2(q)⟩ / √C`` as ``(N·h·w, 1, h, w)``, then ``levels − 1`` 2 × 2 average
    poolings over ``q``."""
    n, channels, height, width = fmap1.shape
    corr = torch.matmul(fmap1.view(n, channels, -1).transpose(1, 2), fmap2.view(n, channels, -1))
    corr = corr.reshape(n * height * width, 1, height, width) / torch.sqrt(torch.tensor(channels).float())
    pyramid = [corr]
    for _ in range(levels - 1):
        pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))
    return pyramid


def sample_pixels(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` at pixel coordinates ``coords (..., 2)`` (x, y); bilinear, zeros outside, corners aligned."""
    height, width = image.shape[-2:]
    x, y = coords.split([1, 1], dim=-1)
    grid = torch.cat([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)
    return F.grid_sample(image, grid, align_corners=True)


def lookup(pyramid: list[torch.Tensor], coords: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Correlation features ``(N, levels·(2r+1)², h, w)`` around ``coords (N, 2, h, w)``.

    As in the official code the window offsets are built as ``stack(meshgrid(dy, dx))`` and added to (x, y), so
    channel ``i·(2r+1) + j`` holds the offset (x + dᵢ, y + dⱼ); the trained weights expect this order."""
    n, _, height, width = coords.shape
    offsets = torch.linspace(-radius, radius, 2 * radius + 1, device=coords.device)
    delta = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1).view(1, 2 * radius + 1, 2 * radius + 1, 2)
    centres = coords.permute(0, 2, 3, 1).reshape(n * height * width, 1, 1, 2)
    features = [
        sample_pixels(level, centres / 2**i + delta).view(n, height, width, -1) for i, level in enumerate(pyramid)
    ]
    return torch.cat(features, dim=-1).permute(0, 3, 1, 2).contiguous().float()


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(N, 2, h, w)`` → ``(N, 2, 8h, 8w)``: each fine pixel is a softmax(mask)-weighted mean of the 3 × 3
    coarse neighbours of ``8 · flow``."""
    n, _, height, width = flow.shape
    weights = torch.softmax(mask.view(n, 1, 9, 8, 8, height, width), dim=2)
    neighbours = F.unfold(8 * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, height, width)
    up = torch.sum(weights * neighbours, dim=2).permute(0, 1, 4, 2, 5, 3)
    return up.reshape(n, 2, 8 * height, 8 * width)


# ---------------------------------------------------------------- the network
class RAFT(nn.Module):
    """RAFT (full size), official parameter names; 5,257,536 parameters (the paper's "5.3M").

    ``forward(image1, image2, iters=12)`` takes ``(N, 3, H, W)`` frames with values in [0, 255], H and W multiples
    of 8 and at least 128, and returns ``(flow_low, flow_up)``: the 1/8-resolution flow and the upsampled flow
    ``(N, 2, H, W)`` (x then y, in pixels, from ``image1`` to ``image2``) after ``iters`` refinements — the
    official ``test_mode=True`` output.

    Example:
        >>> model = RAFT().eval()
        >>> with torch.no_grad():
        ...     low, up = model(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 128), iters=1)
        >>> tuple(low.shape), tuple(up.shape)
        ((1, 2, 16, 16), (1, 2, 128, 128))
    """

    hidden_dim = context_dim = 128
    corr_levels, corr_radius = 4, 4

    def __init__(self):
        super().__init__()
        self.fnet = BasicEncoder(256, "instance")
        self.cnet = BasicEncoder(self.hidden_dim + self.context_dim, "batch")
        self.update_block = UpdateBlock(self.corr_levels * (2 * self.corr_radius + 1) ** 2, self.hidden_dim)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = 12):
        height, width = image1.shape[-2:]
        if height % 8 or width % 8 or min(height, width) < MIN_PADDED_SIDE:
            raise IEAdaptValueError(
                f"RAFT needs frames whose sides are multiples of 8 and at least {MIN_PADDED_SIDE} pixels (its coarsest "
                f"correlation level is side/64 and needs 2 pixels); got {height}×{width}. Pad (pad_to_multiple) or "
                "use larger frames."
            )
        image1, image2 = ((2 * (image / 255.0) - 1.0).contiguous() for image in (image1, image2))
        fmap1, fmap2 = self.fnet(torch.cat([image1, image2], 0)).float().chunk(2, 0)
        pyramid = correlation_pyramid(fmap1, fmap2, self.corr_levels)
        net, inp = torch.split(self.cnet(image1), [self.hidden_dim, self.context_dim], dim=1)
        net, inp = torch.tanh(net), torch.relu(inp)
        coords0 = coords_grid(image1.shape[0], height // 8, width // 8, image1.device)
        coords1 = coords0.clone()
        for _ in range(iters):
            corr = lookup(pyramid, coords1, self.corr_radius)
            net, mask, delta = self.update_block(net, inp, corr, coords1 - coords0)
            coords1 = coords1 + delta
        return coords1 - coords0, convex_upsample(coords1 - coords0, mask)


def pad_to_multiple(*images: torch.Tensor, divisor: int = 8) -> list[torch.Tensor]:
    """Replicate-pad ``(N, C, H, W)`` images to multiples of ``divisor``, split as RAFT's ``InputPadder`` in its
    default ``'sintel'`` mode (left/top get the smaller half).

    Example:
        >>> pad_to_multiple(torch.zeros(1, 3, 13, 16))[0].shape
        torch.Size([1, 3, 16, 16])
    """
    height, width = images[0].shape[-2:]
    pad_h, pad_w = (-height) % divisor, (-width) % divisor
    pads = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
    return [F.pad(image, pads, mode="replicate") for image in images]


# ---------------------------------------------------------------- checkpoints
def raft_state_dict(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official checkpoint's state dict with the ``nn.DataParallel`` prefix ``module.`` removed (VBench's
    ``k.replace('module.', '')``), ready for a strict load into :class:`RAFT`."""
    if not isinstance(checkpoint, Mapping):
        raise IEAdaptValueError(f"expected a RAFT state dict (a mapping of tensors); got {type(checkpoint).__name__}.")
    return {key.replace("module.", ""): value for key, value in checkpoint.items()}


_TORCHVISION_RULES = (
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"_encoder\.conv1\.", "_encoder.convnormrelu.0."),
    (r"_encoder\.norm1\.", "_encoder.convnormrelu.1."),
    (r"_encoder\.conv2\.", "_encoder.conv."),
    (r"(layer\d\.\d)\.conv([12])\.", r"\1.convnormrelu\2.0."),
    (r"(layer\d\.\d)\.norm([12])\.", r"\1.convnormrelu\2.1."),
    (r"^update_block\.encoder\.convc(\d)\.", r"update_block.motion_encoder.convcorr\1.0."),
    (r"^update_block\.encoder\.convf(\d)\.", r"update_block.motion_encoder.convflow\1.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])(\d)\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
)


def to_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official-layout RAFT state dict onto ``torchvision.models.optical_flow.raft_large``'s names.

    Every key is renamed by a fixed rule; ``norm3`` (the same module as ``downsample.1``) is dropped after checking
    it equals its twin. The result loads into ``raft_large()`` with ``strict=True``.

    Example:
        >>> sorted(to_torchvision(RAFT().state_dict()))[:1]
        ['context_encoder.conv.bias']
    """
    state, out = raft_state_dict(state), {}
    for key, value in state.items():
        if ".norm3." in key:
            twin = key.replace(".norm3.", ".downsample.1.")
            if twin not in state or not torch.equal(state[twin], value):
                raise IEAdaptValueError(f"{key} must equal {twin} (one module in RAFT); the state dict is inconsistent.")
            continue
        new = key
        for pattern, replacement in _TORCHVISION_RULES:
            new = re.sub(pattern, replacement, new)
        out[new] = value
    return out


def load_raft(weights: str | os.PathLike | None = None, device: str = "cpu") -> RAFT:
    """Load RAFT from ``raft-things.pth`` (``weights``, else ``$IEADAPT_WEIGHTS_DIR``, the torch hub cache,
    ``~/.cache/vbench/raft_model/models``): ``module.`` prefix stripped, strict load, eval mode, no gradients;
    cached per (path, device).

    Raises:
        MissingWeightsError: the file is not found.
    """
    path = locate_file("dynamic_degree", RAFT_THINGS, weights)
    return load_strict(RAFT, str(Path(path).resolve()), str(device), raft_state_dict)
