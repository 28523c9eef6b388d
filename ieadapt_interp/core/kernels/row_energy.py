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

import math
import os

import torch

from .compiled import CompiledLaunch, keep

__all__ = ["row_kernel_available", "row_squared_norm", "row_squared_norms"]

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
    def _rows(X, rows, row_ok, H, N, stride_b, stride_h, stride_n, cols, D: tl.constexpr, ALIGN: tl.constexpr):
        """Σ_d x² of the flat ``(b, h, n)`` rows ``rows`` of ``X`` (fp32). ``ALIGN`` divides every row offset: Triton
        knows a runtime stride's divisibility only when it is a multiple of 16, so diffusers' ``[B, N, H, 40]``
        views (head stride 40) would otherwise be read element by element instead of in 16-byte vectors."""
        n = rows % N
        bh = rows // N
        base = (bh // H).to(tl.int64) * stride_b + (bh % H).to(tl.int64) * stride_h + n.to(tl.int64) * stride_n
        base = tl.multiple_of(base, ALIGN)
        x = tl.load(X + base[:, None] + cols[None, :], mask=row_ok[:, None] & (cols[None, :] < D), other=0.0)
        x = x.to(tl.float32)
        return tl.sum(x * x, axis=1)

    @triton.jit
    def _row_sumsq_kernel(X0, X1, X2, OUT, M, H, N, s0b, s0h, s0n, s1b, s1h, s1n, s2b, s2h, s2n, D: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, ALIGN: tl.constexpr = 1):
        """Up to three inputs of one ``[B, H, N, D]`` shape, laid end to end: ``OUT[i]`` = row sums of ``X_i``."""
        blocks = tl.cdiv(M, BLOCK_M)
        seg = tl.program_id(0) // blocks
        rows = (tl.program_id(0) - seg * blocks) * BLOCK_M + tl.arange(0, BLOCK_M)  # flat (b, h, n): OUT's order
        row_ok = rows < M
        cols = tl.arange(0, BLOCK_D)
        if seg == 0:
            acc = _rows(X0, rows, row_ok, H, N, s0b, s0h, s0n, cols, D, ALIGN)
        elif seg == 1:
            acc = _rows(X1, rows, row_ok, H, N, s1b, s1h, s1n, cols, D, ALIGN)
        else:
            acc = _rows(X2, rows, row_ok, H, N, s2b, s2h, s2n, cols, D, ALIGN)
        tl.store(OUT + seg * M + rows, acc, mask=row_ok)


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
    target = torch.empty(x.shape[:3], dtype=torch.float32, device=x.device) if out is None else out
    row_squared_norms([x], target.unsqueeze(0))
    return target


def row_squared_norms(xs: list[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """:func:`row_squared_norm` of up to three tensors of one ``[b, h, n, dim]`` shape (dtypes may differ; a
    broadcast view such as ``mean.expand(b, h, n, dim)`` is read in place) into ``out [len(xs), b, h, n]``, in ONE
    launch: per attention call the recorder's ``‖AV_i‖²``, ``‖V_i‖²`` and ``‖mean V‖²``.

    The checks, launch config and compiled kernel of each argument signature (shapes, strides, dtypes, 16-byte
    alignment) are kept after its first call, so a repeated call costs little host time."""
    key = _launch_key(xs, out)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _plan(xs, out)
        if plan is None:
            return out
        keep(_PLANS, key, plan)
    copy, grid, ints, launch = plan
    if copy:
        xs = [x if x.stride(-1) == 1 else x.contiguous() for x in xs]
    launch(grid, (*xs, *[xs[0]] * (3 - len(xs)), out, *ints))
    return out


_PLANS: dict = {}


def _launch_key(xs: list[torch.Tensor], out: torch.Tensor) -> tuple:
    """What a launch depends on besides the data (see :func:`row_squared_norms`)."""
    return (*[(x.shape, x.stride(), x.dtype, x.device, x.data_ptr() % 16, x.requires_grad) for x in xs],
            out.shape, out.stride(), out.dtype, out.device, out.data_ptr() % 16, torch.is_grad_enabled(),
            os.environ.get("IEADAPT_ROW_KERNEL", "1"), os.environ.get("TRITON_INTERPRET", "0"))


def _plan(xs: list[torch.Tensor], out: torch.Tensor):
    """Check one argument signature and fix its launch: ``(copy, grid, integer args, CompiledLaunch)`` (``None``: no
    rows)."""
    if not (1 <= len(xs) <= 3 and all(row_kernel_available(x) and x.shape == xs[0].shape for x in xs)):
        raise ValueError("row_squared_norms needs one to three 4-D CUDA fp16/bf16/fp32 tensors of one shape with "
                         "dim <= 512 and triton; check row_kernel_available first")
    copy = any(x.stride(-1) != 1 for x in xs)
    xs = [x if x.stride(-1) == 1 else x.contiguous() for x in xs]
    b, h, n, d = xs[0].shape
    if out.shape != (len(xs), b, h, n) or out.dtype != torch.float32 or not out.is_contiguous() \
            or out.device != xs[0].device:
        raise ValueError(f"out must be a contiguous float32 tensor of shape {(len(xs), b, h, n)} on {xs[0].device}")
    rows = b * h * n
    if rows == 0:
        return None
    block_d = max(16, 1 << (d - 1).bit_length())
    block_m = max(16, _TILE // block_d)
    padded = xs + [xs[0]] * (3 - len(xs))
    strides = [s for x in padded for s in x.stride()[:3]]
    grid = (len(xs) * -(-rows // block_m),)
    align = 0
    for stride in strides:
        align = math.gcd(align, stride)
    align = min(8, align & -align) if align else 8  # the largest power of two (<= 8) dividing every row offset
    launch = CompiledLaunch(_row_sumsq_kernel, {"D": d, "BLOCK_M": block_m, "BLOCK_D": block_d, "ALIGN": align},
                            {"num_warps": 4})
    return copy, grid, (rows, h, n, *strides), launch
