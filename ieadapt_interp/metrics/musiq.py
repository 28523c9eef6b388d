"""MUSIQ (multi-scale image quality transformer), the architecture behind VBench's ``imaging_quality``.

Ke et al. 2021, "MUSIQ: Multi-scale Image Quality Transformer" (ICCV). A faithful PyTorch re-implementation of
pyiqa's ``MUSIQ`` (itself a port of google-research/musiq): same modules, same parameter names, so pyiqa's
checkpoints (e.g. ``musiq_spaq_ckpt-358bb6af.pth``) load with ``strict=True``. Inference only. With shared random
weights it equals pyiqa 0.1.16's ``pyiqa/archs/musiq_arch.py`` ``MUSIQ`` exactly (tests/test_official_networks.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' zero padding for a square kernel."""
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class StdConv(nn.Conv2d):
    """Weight-standardised convolution with TF 'SAME' padding (Qiao et al. 2019)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = same_padding(x, self.kernel_size[0], self.stride[0])
        weight = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        weight = weight / (weight.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride)


class Bottleneck(nn.Module):
    """ResNet v2-style bottleneck with GroupNorm(32) and a projection shortcut."""

    def __init__(self, inplanes: int, outplanes: int):
        super().__init__()
        self.conv1 = StdConv(inplanes, inplanes, 1, 1, bias=False)
        self.gn1 = nn.GroupNorm(32, inplanes, eps=1e-4)
        self.conv2 = StdConv(inplanes, inplanes, 3, 1, bias=False)
        self.gn2 = nn.GroupNorm(32, inplanes, eps=1e-4)
        self.conv3 = StdConv(inplanes, outplanes, 1, 1, bias=False)
        self.gn3 = nn.GroupNorm(32, outplanes, eps=1e-4)
        self.conv_proj = StdConv(inplanes, outplanes, 1, 1, bias=False)
        self.gn_proj = nn.GroupNorm(32, outplanes, eps=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.gn_proj(self.conv_proj(x))
        x = F.relu(self.gn1(self.conv1(x)))
        x = F.relu(self.gn2(self.conv2(x)))
        return F.relu(self.gn3(self.conv3(x)) + identity)


class MultiHeadAttention(nn.Module):
    """Self-attention over patch tokens; padded tokens are masked with a −1000 logit (as upstream)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        return x.reshape(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        logits = (q @ k.transpose(-2, -1)) * (dim // self.num_heads) ** -0.5
        pair_mask = mask.reshape(batch, 1, tokens, 1) * mask.reshape(batch, 1, 1, tokens)
        attn = logits.masked_fill(pair_mask == 0, -1e3).softmax(dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attention = MultiHeadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class AddHashSpatialPositionEmbs(nn.Module):
    def __init__(self, grid_size: int, dim: int):
        super().__init__()
        self.position_emb = nn.Parameter(torch.randn(1, grid_size * grid_size, dim) * 0.02)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x + self.position_emb.squeeze(0)[positions.long()]


class AddScaleEmbs(nn.Module):
    def __init__(self, num_scales: int, dim: int):
        super().__init__()
        self.scale_emb = nn.Parameter(torch.randn(num_scales, dim) * 0.02)

    def forward(self, x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return x + self.scale_emb[scales.long()]


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, num_heads: int, num_layers: int, num_scales: int, grid: int):
        super().__init__()
        self.posembed_input = AddHashSpatialPositionEmbs(grid, dim)
        self.scaleembed_input = AddScaleEmbs(num_scales, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.transformer = nn.ModuleDict(
            {f"encoderblock_{i}": TransformerBlock(dim, mlp_dim, num_heads) for i in range(num_layers)}
        )

    def forward(self, x: torch.Tensor, positions: torch.Tensor, scales: torch.Tensor, mask: torch.Tensor):
        x = self.scaleembed_input(self.posembed_input(x, positions), scales)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        for block in self.transformer.values():
            x = block(x, mask)
        return self.encoder_norm(x)


def hashed_positions(grid: int, count_h: int, count_w: int) -> torch.Tensor:
    """Hash a ``count_h × count_w`` patch grid onto ``grid × grid`` embedding slots (nearest), flat ``(H·W,)``."""
    slots = torch.arange(grid).float().reshape(1, 1, grid)
    along_w = F.interpolate(slots, count_w, mode="nearest").reshape(1, count_w).expand(count_h, count_w)
    along_h = F.interpolate(slots, count_h, mode="nearest").reshape(count_h, 1).expand(count_h, count_w)
    return (along_h * grid + along_w).reshape(-1)


def _patches_with_positions(image: torch.Tensor, patch: int, grid: int, scale_id: int, max_len: int):
    """``(N, 3·p·p + 3, L)``: patches (TF SAME padding), hashed position, scale id, mask; padded/cut to max_len."""
    n, _, height, width = image.shape
    patches = F.unfold(same_padding(image, patch, patch), patch, stride=patch)
    positions = hashed_positions(grid, math.ceil(height / patch), math.ceil(width / patch)).to(image)
    extra = torch.stack([positions, torch.full_like(positions, scale_id), torch.ones_like(positions)])
    out = torch.cat([patches, extra.unsqueeze(0).expand(n, -1, -1)], dim=1)
    if max_len >= 0:
        out = F.pad(out, (0, max(max_len - out.shape[-1], 0)))[..., :max_len]
    return out


def multiscale_patches(image: torch.Tensor, patch: int, grid: int, longer_sides: list[int]) -> torch.Tensor:
    """MUSIQ's multi-scale input: aspect-preserving bicubic resizes (longer side in ``longer_sides``, padded to
    ``ceil(L/patch)²`` tokens) plus all patches of the original resolution. Returns ``(N, tokens, 3·p·p + 3)``."""
    height, width = image.shape[-2:]
    outputs = []
    for scale_id, longer in enumerate(sorted(longer_sides)):
        ratio = longer / max(height, width)
        size = (round(height * ratio), round(width * ratio))
        resized = F.interpolate(image, size, mode="bicubic", align_corners=False)
        outputs.append(
            _patches_with_positions(resized, patch, grid, scale_id, math.ceil(longer / patch) ** 2)
        )
    outputs.append(_patches_with_positions(image, patch, grid, len(longer_sides), -1))
    return torch.cat(outputs, dim=-1).transpose(1, 2)


class MUSIQ(nn.Module):
    """MUSIQ with pyiqa's defaults (ViT 14 layers, 384 wide, 6 heads, patch 32, scales 224/384/original).

    ``forward`` takes RGB images ``(N, 3, H, W)`` in [0, 1] and returns the score ``(N,)`` (the mean opinion
    score for 1-class heads such as SPAQ/KonIQ; the expected score for 10-class AVA heads).
    """

    def __init__(
        self,
        num_class: int = 1,
        hidden_size: int = 384,
        mlp_dim: int = 1152,
        num_heads: int = 6,
        num_layers: int = 14,
        patch_size: int = 32,
        grid_size: int = 10,
        longer_side_lengths: tuple[int, ...] = (224, 384),
    ):
        super().__init__()
        self.patch_size, self.grid_size = patch_size, grid_size
        self.longer_side_lengths = list(longer_side_lengths)
        token_dim = 64
        self.conv_root = StdConv(3, token_dim, 7, 2, bias=False)
        self.gn_root = nn.GroupNorm(32, token_dim, eps=1e-6)
        self.block1 = Bottleneck(token_dim, token_dim * 4)
        self.embedding = nn.Linear(token_dim * 4 * (patch_size // 4) ** 2, hidden_size)
        num_scales = len(longer_side_lengths) + 1
        self.transformer_encoder = TransformerEncoder(
            hidden_size, mlp_dim, num_heads, num_layers, num_scales, grid_size
        )
        linear = nn.Linear(hidden_size, num_class)
        self.head = linear if num_class == 1 else nn.Sequential(linear, nn.Softmax(dim=-1))

    def _stem(self, patches: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.gn_root(self.conv_root(patches)))
        x = F.max_pool2d(same_padding(x, 3, 2), 3, 2)
        return self.block1(x).permute(0, 2, 3, 1)  # channels last, as the TF original

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = multiscale_patches(
            (images - 0.5) * 2, self.patch_size, self.grid_size, self.longer_side_lengths
        )
        batch, length, _ = tokens.shape
        positions, scales, mask = tokens[..., -3], tokens[..., -2], tokens[..., -1]
        patches = tokens[..., :-3].reshape(-1, 3, self.patch_size, self.patch_size)
        x = self.embedding(self._stem(patches).reshape(batch, length, -1))
        x = self.transformer_encoder(x, positions, scales, mask)
        q = self.head(x[:, 0])
        return (q * torch.arange(1, q.shape[-1] + 1).to(q)).sum(dim=-1)


def musiq_state_dict(checkpoint: dict) -> dict:
    """Unwrap a pyiqa checkpoint (``params``/``state_dict`` wrappers, ``module.`` prefixes)."""
    for key in ("params", "state_dict"):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            checkpoint = checkpoint[key]
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}
