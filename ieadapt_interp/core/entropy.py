"""Attention entropy and energy, per query row, without building the attention map.

Entropy (paper Eq. 2) of a softmax row ``a = softmax(s)`` is computed in the online form used by
flash attention: with ``m = max_j s_j``, ``l = Σ_j e^{s_j - m}``, ``t = Σ_j e^{s_j - m} s_j``,

    H = m + log l - t / l           (nats; H(I) = 0, H(U) = log N)

in fp32, streaming over blocks of query rows so that at most ``chunk_bytes`` of scores exist at
once. On CUDA, the fused Triton kernel (:mod:`ieadapt_interp.core.kernels`) returns the attention output
and the entropy in one pass.

Energy (paper Eq. 2) is ``E(X) = ‖X‖²_F``; per query row ``i`` we keep ``‖(AV)_i‖²`` (``energy``),
``‖V_i‖²`` (``energy_identity``: ``IV = V``) and ``‖mean(V)‖²`` (``energy_uniform``: every row of
``UV`` is the key-mean of ``V``) — the two bounds are closed-form.

Shapes follow ``F.scaled_dot_product_attention``: ``q: [B, head, query, dim]``,
``k, v: [B, head, key, dim]``.

>>> import torch
>>> q = k = torch.zeros(1, 1, 4, 8)
>>> float(row_entropy(q, k)[0, 0, 0])    # all scores equal → uniform row → log 4
1.3862943649291992
"""

from __future__ import annotations

import math
import os

import torch

from .kernels.row_energy import row_kernel_available, row_squared_norm

#: Bytes of fp32 scores one block of query rows may occupy on the non-fused path.
DEFAULT_CHUNK_BYTES = 64 * 2**20


def _scores(q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None) -> torch.Tensor:
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = s.masked_fill(~attn_mask, float("-inf"))
        else:
            s = s + attn_mask.float()
    return s


def _mask_rows(attn_mask: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    if attn_mask is None or attn_mask.shape[-2] == 1:
        return attn_mask
    return attn_mask[..., start:stop, :]


def row_entropy(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float | None = None,
    attn_mask: torch.Tensor | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """Entropy (nats, fp32) of every softmax row of ``q kᵀ · scale``: ``[B, head, query]``.

    Streams over blocks of query rows; never holds more than ``chunk_bytes`` of scores.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    batch, heads, n_q, _ = q.shape
    rows_per_chunk = max(1, chunk_bytes // max(1, 4 * batch * heads * k.shape[-2]))
    out = torch.empty(batch, heads, n_q, dtype=torch.float32, device=q.device)
    for start in range(0, n_q, rows_per_chunk):
        stop = min(n_q, start + rows_per_chunk)
        s = _scores(q[..., start:stop, :], k, scale, _mask_rows(attn_mask, start, stop))
        m = s.amax(-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        e = torch.exp(s - m)
        l = e.sum(-1)
        t = torch.nan_to_num(e * s, nan=0.0, posinf=0.0, neginf=0.0).sum(-1)
        out[..., start:stop] = m.squeeze(-1) + torch.log(l) - t / l
    return out


def key_weights_uniform(k: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
    """Rows of ``U`` under a mask: uniform over the allowed keys, ``[B, head, 1 or query, key]``."""
    bias = attn_mask.float() if attn_mask.dtype != torch.bool else torch.where(attn_mask, 0.0, float("-inf"))
    bias = bias - bias.amax(-1, keepdim=True).clamp_min(-1e30)
    allowed = torch.isfinite(bias) & (bias > -1e4)
    weights = allowed.float()
    return (weights / weights.sum(-1, keepdim=True)).expand(*k.shape[:-2], *weights.shape[-2:])


def value_mean(v: torch.Tensor, attn_mask: torch.Tensor | None = None,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """``U·V`` row: the (allowed-)key mean of ``v`` in fp32, ``[B, head, 1 or query, dim]``.

    Under a mask, ``v`` is cast to fp32 ``chunk_bytes`` of keys at a time, not whole (HunyuanVideo 720p 129 frames:
    1.5 GB per call otherwise).
    """
    if attn_mask is None:
        return v.mean(-2, keepdim=True, dtype=torch.float32)  # fp32 accumulation, no fp32 copy of v
    weights = key_weights_uniform(v, attn_mask)
    n_k = v.shape[-2]
    step = max(1, chunk_bytes // max(1, 4 * v[..., :1, :].numel()))
    out = torch.matmul(weights[..., :step], v[..., :step, :].float())
    for start in range(step, n_k, step):
        out += torch.matmul(weights[..., start:start + step], v[..., start:start + step, :].float())
    return out


def squared_norm(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``‖x_i‖²`` over the last dim, accumulated in fp32 without an fp32 copy of ``x``: ``[..., dim] → [...]``.

    On CUDA (4-D ``x``) one Triton pass (:mod:`~ieadapt_interp.core.kernels.row_energy`); elsewhere PyTorch's
    reduction. ``out`` (optional, contiguous fp32 ``[...]``) receives the result.

    >>> float(squared_norm(torch.tensor([[3.0, 4.0]]))[0])
    25.0
    """
    if row_kernel_available(x):
        return row_squared_norm(x, out)
    if out is None:
        return torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32).square()
    return torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32, out=out).square_()


def sdpa_with_entropy(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
    sdpa=None,
    **sdpa_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output and per-row entropy.

    On CUDA, where the fused Triton kernel applies (no mask, or a mask over keys only such as HunyuanVideo's
    ``[B, 1, 1, N]`` padding mask), one pass returns both; otherwise (per-query masks, CPU) the model's
    own ``sdpa`` call gives the output (bit-identical to an untouched run) and :func:`row_entropy`
    the entropy.

    Returns ``(out [B, head, query, dim] in q.dtype, entropy [B, head, query] fp32)``.
    """
    from .kernels import flash_attention_with_entropy, fused_available
    from .kernels.flash_entropy import planned

    use_fused = os.environ.get("IEADAPT_FUSED", "1") != "0"  # IEADAPT_FUSED=0 forces the two-pass path
    if use_fused and attn_mask is None and not sdpa_kwargs.get("is_causal") and not sdpa_kwargs.get("dropout_p") \
            and not (q.requires_grad or k.requires_grad or v.requires_grad):
        result = planned(q, k, v, scale)  # a call shape that ran before: no checks again
        if result is not None:
            return result
    if use_fused and not sdpa_kwargs.get("is_causal") and not sdpa_kwargs.get("dropout_p") \
            and fused_available(q, k, v, attn_mask):
        return flash_attention_with_entropy(q, k, v, scale=scale, attn_mask=attn_mask)  # None or a key mask
    sdpa = sdpa or torch.nn.functional.scaled_dot_product_attention
    out = sdpa(q, k, v, attn_mask=attn_mask, scale=scale, **sdpa_kwargs)
    return out, row_entropy(q, k, scale, attn_mask)


def max_entropy(n_keys: int) -> float:
    """``H(U) = log N``: the entropy of a uniform row over ``n_keys`` keys."""
    return math.log(n_keys)
