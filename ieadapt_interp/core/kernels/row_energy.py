"""Per-row squared norms ``‖x_i‖²`` of a ``[batch, head, n, dim]`` tensor, accumulated in fp32, in one pass (Triton).

The stats recorder needs ``‖(AV)_i‖²`` and ``‖V_i‖²`` for every query row of every recorded attention call
(DESIGN.md §1, Eq. 2). ``torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32)`` over a head dim of 40-128 runs
PyTorch's generic inner-dim reduction, which leaves most threads of a block idle on such short rows: on an H200 it
averaged 112 µs per AnimateDiff call where reading the tensor once takes about 25 µs
(``benchmarks/results/profile_h200_2026-12-01.json``). :func:`row_squared_norm` loads ``[BLOCK_M, dim]`` tiles
(any strides with a unit last stride), squares in fp32 and sums each row: no fp32 copy of ``x``, one launch.

Triton is imported under a guard: importing this module never fails; :func:`row_kernel_available` says whether
the kernel can run on a tensor.
"""

from __future__ import annotations

import os

import torch

__all__ = ["row_kernel_available", "row_squared_norm"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_DIM = 512
_TILE = 8192  # elements per program (BLOCK_M · BLOCK_D)

try:  # guarded, as in flash_entropy: the module imports where triton is missing or broken
    import triton
    import triton.language as tl

    _HAS_TRITON = True
except Exception:  # noqa: BLE001 - any failure means "not usable"
    _HAS_TRITON = False


if _HAS_TRITON:

    @triton.jit
    def _row_sumsq_kernel(X, OUT, M, H, N, stride_b, stride_h, stride_n, D: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # flat (b, h, n) index, the output's order
        row_ok = rows < M
        n = rows % N
        bh = rows // N
        base = (bh // H).to(tl.int64) * stride_b + (bh % H).to(tl.int64) * stride_h + n.to(tl.int64) * stride_n
        cols = tl.arange(0, BLOCK_D)
        x = tl.load(X + base[:, None] + cols[None, :], mask=row_ok[:, None] & (cols[None, :] < D), other=0.0)
        x = x.to(tl.float32)
        tl.store(OUT + rows, tl.sum(x * x, axis=1), mask=row_ok)


def row_kernel_available(x: torch.Tensor) -> bool:
    """Whether :func:`row_squared_norm` runs on ``x``: a CUDA fp16/bf16/fp32 tensor of 4 dims with a last dim of at
    most 512, triton importable, no autograd, and ``IEADAPT_ROW_KERNEL`` not ``0`` (the PyTorch reduction then runs).

    >>> row_kernel_available(torch.zeros(1, 1, 2, 8))   # a CPU tensor: PyTorch's reduction
    False
    """
    return (_HAS_TRITON and x.is_cuda and x.dtype in _DTYPES and x.dim() == 4 and 0 < x.shape[-1] <= _MAX_DIM
            and not (torch.is_grad_enabled() and x.requires_grad)
            and os.environ.get("IEADAPT_ROW_KERNEL", "1") != "0")


def row_squared_norm(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ_d x[b, h, n, d]²`` in fp32 → ``[b, h, n]`` (written into ``out`` when given: contiguous fp32 of that shape).

    ``x`` may have any strides (a non-unit last stride costs one copy). Check :func:`row_kernel_available` first.
    """
    if not row_kernel_available(x):
        raise ValueError("row_squared_norm needs a 4-D CUDA fp16/bf16/fp32 tensor with dim <= 512 and triton; "
                         "check row_kernel_available(x) first")
    if x.stride(-1) != 1:
        x = x.contiguous()
    b, h, n, d = x.shape
    if out is None:
        out = torch.empty(b, h, n, dtype=torch.float32, device=x.device)
    elif out.shape != (b, h, n) or out.dtype != torch.float32 or not out.is_contiguous() or out.device != x.device:
        raise ValueError(f"out must be a contiguous float32 tensor of shape {(b, h, n)} on {x.device}")
    rows = b * h * n
    if rows == 0:
        return out
    block_d = max(16, 1 << (d - 1).bit_length())
    block_m = max(16, _TILE // block_d)
    _row_sumsq_kernel[(-(-rows // block_m),)](x, out, rows, h, n, x.stride(0), x.stride(1), x.stride(2), D=d,
                                              BLOCK_M=block_m, BLOCK_D=block_d, num_warps=4)
    return out
