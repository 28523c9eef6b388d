"""Fused flash-attention forward that also returns each query row's attention entropy.

For one head with scaled scores ``s_ij = scale * q_i . k_j`` and ``a_ij = softmax_j(s_ij)`` this computes

    out_i = sum_j a_ij v_j                      # [batch, head, query, dim], in q.dtype
    H_i   = -sum_j a_ij log a_ij                # [batch, head, query], float32, nats

in one pass over the keys, without materialising ``A`` (DESIGN.md §1, Eq. 2). The online form: with a running max
``m``, ``l = sum_j e^{s_j - m}`` and ``t = sum_j e^{s_j - m} (s_j - m)`` (all fp32),

    H = log l - t / l          (= m + log l - sum_j e^{s_j-m} s_j / l).

Keeping ``t`` relative to the running max makes both terms non-negative, so there is no cancellation between large
``m`` and ``sum e^{s-m} s / l`` when the row is peaked. When the max grows from ``m`` to ``m'`` the state is rescaled
with ``alpha = e^{m - m'}``: ``l <- alpha l``, ``t <- alpha (t + l (m - m'))``. Inside the kernel everything is in
base 2 (``exp2``) and converted to nats at the end.

A key mask (``attn_mask`` of shape ``[B|1, H|1, 1, Nk]``, boolean or additive, e.g. HunyuanVideo's text padding)
enters both kernels as a per-key bias added to the scores, so masked keys get exactly zero weight and the entropy is
over the unmasked keys; per-query masks are not fused (:func:`fused_available` says False). The TMA kernel adds the
bias only from the key block that holds each ``(b, h)``'s first biased key on (:func:`_first_biased`): padding at
the end of the keys costs only the last blocks.

Two kernels share that recurrence. On Hopper (compute capability 9), for fp16/bf16 with a head dim that is a multiple
of 8 up to 128, ``_fwd_kernel_tma`` loads Q/K/V tiles through TMA descriptors over the ``[B, H, N, D]`` views: the head dim is
padded to a power of two by the copy engine's out-of-bounds zero fill (no head-dim masks) and the score scale is folded
into one FMA per score. Elsewhere (fp32, other GPUs, odd strides, ``IEADAPT_KERNEL=pointer``, N <= 64) the pointer
kernel ``_fwd_kernel`` runs: head dims that are not a power of two are split into two power-of-two slabs where the
second is >= 32 wide (96 = 64 + 32, 160 = 128 + 32), else padded to one masked slab (40 -> 64, 80 -> 128); see
``_split_head_dim``.

Triton is imported under a guard: importing this module never fails; :func:`fused_available` says whether the
kernel can run on the given tensors.
"""

from __future__ import annotations

import math
import os

import torch

from .compiled import CompiledLaunch, keep, launch_options

__all__ = ["flash_attention_with_entropy", "fused_available", "is_key_mask", "triton_available"]

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


def _interpret_mode() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def _split_head_dim(d: int) -> tuple[int, int]:
    """Split head dim ``d`` into power-of-two slabs ``(DA, DB)`` (DB may be 0), each >= 16 for ``tl.dot``.

    A second slab is used only when it is at least 32 wide (96 = 64 + 32, 160 = 128 + 32); otherwise ``d`` is
    padded to one masked power-of-two slab (40 -> 64, 80 -> 128). A 16-wide second slab with ``BLOCK_N >= 64``
    crashes on an H200 with triton 3.6 (illegal address, or wrong output without an error), so it is avoided and
    two-slab launches use ``BLOCK_N = 32`` only. Cause (benchmarks/RESULTS.md, 2026-12-01;
    results/sass_d40_split_h200_2026-12-01.txt): the faulting instruction is an ``HGMMA.64x16x16`` (the 16-wide
    slab's ``p @ v_b`` in the last, partial key block) whose shared-memory descriptor ptxas (CUDA 12.8, bundled with
    triton 3.6) builds from the wrong uniform register, one that holds ``Nk``: the PTX is correct, the read address
    ``(Nk + 32) * 16`` bytes (0x7f00 for Nk = 2000) is exactly the one compute-sanitizer reports. The crashes with
    Nk = 4096 (no partial block) have the same origin in the main loop (benchmarks/RESULTS.md, 2026-12-02;
    ``benchmarks/sass_d40.py``): in each of the three configs that failed there, the descriptors of the 16-wide
    slab's k-steps after the first are computed from a uniform register pair that no instruction of the kernel
    writes; the three configs that ran correctly have no such read, and ptxas 12.9 (triton 3.8) assembles the same
    PTX without either defect. Every launch config this module gives the pointer kernel is free of both.
    """
    d = int(d)
    da = max(16, 1 << (d.bit_length() - 1))  # largest power of two <= d, at least 16
    rem = d - da
    if rem <= 0:
        return da, 0
    db = _next_pow2(rem)
    if db < 32:
        return _next_pow2(d), 0
    return da, db


try:  # guarded: the module imports (and fused_available answers False) where triton is missing or broken
    import triton
    import triton.language as tl

    _HAS_TRITON = True
except Exception:  # noqa: BLE001 - any failure means "not usable"
    triton = tl = None
    _HAS_TRITON = False
try:  # host-side TMA descriptors (triton >= 3.4)
    from triton.tools.tensor_descriptor import TensorDescriptor as _TensorDescriptor
except Exception:  # noqa: BLE001
    _TensorDescriptor = None

if _HAS_TRITON:

    @triton.jit
    def _load_tile(ptrs, row_mask, col_mask, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
        # row_mask: [R] or None-equivalent, col_mask: [C]; ptrs [R, C]
        if MASK_ROWS:
            if MASK_COLS:
                x = tl.load(ptrs, mask=row_mask[:, None] & col_mask[None, :], other=0.0)
            else:
                x = tl.load(ptrs, mask=row_mask[:, None], other=0.0)
        else:
            if MASK_COLS:
                x = tl.load(ptrs, mask=col_mask[None, :], other=0.0)
            else:
                x = tl.load(ptrs)
        return x

    @triton.jit
    def _load_tile_t(ptrs, col_mask, row_mask, MASK_COLS: tl.constexpr, MASK_ROWS: tl.constexpr):
        # transposed tile [Dslab, BLOCK_N]: row_mask over head dim ([Dslab]), col_mask over keys ([BLOCK_N])
        if MASK_COLS:
            if MASK_ROWS:
                x = tl.load(ptrs, mask=row_mask[:, None] & col_mask[None, :], other=0.0)
            else:
                x = tl.load(ptrs, mask=col_mask[None, :], other=0.0)
        else:
            if MASK_ROWS:
                x = tl.load(ptrs, mask=row_mask[:, None], other=0.0)
            else:
                x = tl.load(ptrs)
        return x

    @triton.jit
    def _block_update(
        acc_a,
        acc_b,
        m_i,
        l_i,
        t_i,
        q_a,
        q_b,
        K,
        V,
        start_n,
        stride_kn,
        stride_vn,
        Nk,
        qk_scale,
        offs_n,
        offs_a,
        offs_b,
        HEAD_DIM: tl.constexpr,
        DA: tl.constexpr,
        DB: tl.constexpr,
        MASK_N: tl.constexpr,
        DOT_PREC: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        KB,
    ):
        MASK_A: tl.constexpr = DA > HEAD_DIM
        MASK_B: tl.constexpr = DA + DB > HEAD_DIM
        cols = start_n + offs_n
        n_mask = cols < Nk
        a_mask = offs_a < HEAD_DIM
        # K^T slabs: [Dslab, BLOCK_N]
        kt_a = _load_tile_t(K + cols[None, :] * stride_kn + offs_a[:, None], n_mask, a_mask, MASK_N, MASK_A)
        qk = tl.dot(q_a, kt_a, input_precision=DOT_PREC)
        if DB > 0:
            b_mask = offs_b < HEAD_DIM
            kt_b = _load_tile_t(
                K + cols[None, :] * stride_kn + offs_b[:, None], n_mask, b_mask, MASK_N, MASK_B
            )
            qk = tl.dot(q_b, kt_b, qk, input_precision=DOT_PREC)
        if HAS_BIAS:  # per-key bias (a key mask), in units of the raw dot product: see _key_bias
            qk = qk + tl.load(KB + cols, mask=n_mask, other=0.0)[None, :]
        qk = qk * qk_scale  # scores in log2 units
        if MASK_N:
            qk = tl.where(n_mask[None, :], qk, -1.0e30)
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        x = qk - m_new[:, None]  # <= 0
        p = tl.math.exp2(x)
        alpha = tl.math.exp2(m_i - m_new)
        t_i = alpha * (t_i + l_i * (m_i - m_new)) + tl.sum(p * x, 1)
        l_i = l_i * alpha + tl.sum(p, 1)
        v_a = _load_tile(V + cols[:, None] * stride_vn + offs_a[None, :], n_mask, a_mask, MASK_N, MASK_A)
        p_lo = p.to(v_a.dtype)
        acc_a = tl.dot(p_lo, v_a, acc_a * alpha[:, None], input_precision=DOT_PREC)
        if DB > 0:
            b_mask2 = offs_b < HEAD_DIM
            v_b = _load_tile(V + cols[:, None] * stride_vn + offs_b[None, :], n_mask, b_mask2, MASK_N, MASK_B)
            acc_b = tl.dot(p_lo, v_b, acc_b * alpha[:, None], input_precision=DOT_PREC)
        return acc_a, acc_b, m_new, l_i, t_i

    @triton.jit
    def _fwd_kernel(
        Q,
        K,
        V,
        O,
        ENT,
        KBIAS,
        stride_kbb,
        stride_kbh,
        qk_scale,
        stride_qb,
        stride_qh,
        stride_qm,
        stride_kb,
        stride_kh,
        stride_kn,
        stride_vb,
        stride_vh,
        stride_vn,
        stride_ob,
        stride_oh,
        stride_om,
        H,
        Nq,
        Nk,
        NQ_BUCKET,
        NK_BUCKET,
        HEAD_DIM: tl.constexpr,
        DA: tl.constexpr,
        DB: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        DOT_PREC: tl.constexpr,
        HAS_BIAS: tl.constexpr,
    ):
        MASK_A: tl.constexpr = DA > HEAD_DIM
        MASK_B: tl.constexpr = DA + DB > HEAD_DIM
        pid = tl.program_id(0)
        num_m = tl.cdiv(Nq, BLOCK_M)
        pid_m = pid % num_m
        pid_bh = pid // num_m
        off_b = (pid_bh // H).to(tl.int64)
        off_h = (pid_bh % H).to(tl.int64)
        Q += off_b * stride_qb + off_h * stride_qh
        K += off_b * stride_kb + off_h * stride_kh
        V += off_b * stride_vb + off_h * stride_vh
        O += off_b * stride_ob + off_h * stride_oh
        KBIAS += off_b * stride_kbb + off_h * stride_kbh

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_a = tl.arange(0, DA)
        m_mask = offs_m < Nq
        a_mask = offs_a < HEAD_DIM
        q_a = _load_tile(Q + offs_m[:, None] * stride_qm + offs_a[None, :], m_mask, a_mask, True, MASK_A)
        acc_a = tl.zeros([BLOCK_M, DA], dtype=tl.float32)
        if DB > 0:
            offs_b = DA + tl.arange(0, DB)
            b_mask = offs_b < HEAD_DIM
            q_b = _load_tile(Q + offs_m[:, None] * stride_qm + offs_b[None, :], m_mask, b_mask, True, MASK_B)
            acc_b = tl.zeros([BLOCK_M, DB], dtype=tl.float32)
        else:
            offs_b = offs_a
            q_b = q_a
            acc_b = acc_a

        m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        t_i = tl.zeros([BLOCK_M], dtype=tl.float32)

        n_full = (Nk // BLOCK_N) * BLOCK_N
        for start_n in range(0, n_full, BLOCK_N):
            acc_a, acc_b, m_i, l_i, t_i = _block_update(
                acc_a,
                acc_b,
                m_i,
                l_i,
                t_i,
                q_a,
                q_b,
                K,
                V,
                start_n,
                stride_kn,
                stride_vn,
                Nk,
                qk_scale,
                offs_n,
                offs_a,
                offs_b,
                HEAD_DIM,
                DA,
                DB,
                False,
                DOT_PREC,
                HAS_BIAS,
                KBIAS,
            )
        if n_full < Nk:
            acc_a, acc_b, m_i, l_i, t_i = _block_update(
                acc_a,
                acc_b,
                m_i,
                l_i,
                t_i,
                q_a,
                q_b,
                K,
                V,
                n_full,
                stride_kn,
                stride_vn,
                Nk,
                qk_scale,
                offs_n,
                offs_a,
                offs_b,
                HEAD_DIM,
                DA,
                DB,
                True,
                DOT_PREC,
                HAS_BIAS,
                KBIAS,
            )

        inv_l = 1.0 / l_i
        ent = (tl.math.log2(l_i) - t_i * inv_l) * 0.6931471805599453  # nats
        tl.store(ENT + pid_bh.to(tl.int64) * Nq + offs_m, ent, mask=m_mask)
        o_a = (acc_a * inv_l[:, None]).to(O.dtype.element_ty)
        o_ptrs = O + offs_m[:, None] * stride_om + offs_a[None, :]
        if MASK_A:
            tl.store(o_ptrs, o_a, mask=m_mask[:, None] & a_mask[None, :])
        else:
            tl.store(o_ptrs, o_a, mask=m_mask[:, None])
        if DB > 0:
            o_b = (acc_b * inv_l[:, None]).to(O.dtype.element_ty)
            o_ptrs_b = O + offs_m[:, None] * stride_om + offs_b[None, :]
            tl.store(o_ptrs_b, o_b, mask=m_mask[:, None] & b_mask[None, :])

    # Hopper-oriented configs, kept few so autotuning stays short; pruned by head dim below.
    configs = [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 32}, num_warps=8, num_stages=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=2),
    ]

    def _prune(configs, named_args, **kwargs):
        a = {**named_args, **kwargs}
        d_tot = a.get("DA", 64) + a.get("DB", 0)
        nq = a.get("Nq", 1 << 16)
        out = []
        for c in configs:
            bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
            if d_tot > 128 and bn > 64:  # too many registers / too much smem for big head dims
                continue
            if nq <= 64 and bm > 64:
                continue
            out.append(c)
        return out or configs[-2:]

    _fwd_tuned_two_slab = triton.autotune(
        configs=[c for c in configs if c.kwargs["BLOCK_N"] == 32],
        key=["HEAD_DIM", "NQ_BUCKET", "NK_BUCKET", "HAS_BIAS"],
    )(_fwd_kernel)

    _fwd_tuned = triton.autotune(
        configs=configs,
        key=["HEAD_DIM", "NQ_BUCKET", "NK_BUCKET", "HAS_BIAS"],
        prune_configs_by={"early_config_prune": _prune},
    )(_fwd_kernel)


    # ------------------------------------------------------------------------------------------------------------
    # Hopper path: K/V/Q tiles through the bulk tensor copy engine (TMA descriptors over the [B, H, N, D] views, any
    # strides that are multiples of 16 bytes). The head dim is padded to a power of two by the copy engine's
    # out-of-bounds zero fill, so there are no head-dim masks; the output store is clipped the same way. The score
    # scale is folded into one FMA per score: x = qk * qk_scale - m (qk_scale > 0).

    @triton.jit
    def _tma_block(acc, m_i, l_i, t_i, q, k_desc, v_desc, off_b, off_h, start_n, Nk, qk_scale,
                   BLOCK_N: tl.constexpr, DP: tl.constexpr, MASK_N: tl.constexpr,
                   HAS_BIAS: tl.constexpr, KB):
        k = k_desc.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, DP)
        qk = tl.dot(q, tl.trans(k))
        if HAS_BIAS:  # per-key bias (a key mask) in units of the raw dot product (see _key_bias)
            cols = start_n + tl.arange(0, BLOCK_N)
            kb = tl.load(KB + cols, mask=cols < Nk, other=-1.0e30)
            qk = qk + kb[None, :]
        elif MASK_N:
            cols = start_n + tl.arange(0, BLOCK_N)
            qk = tl.where((cols < Nk)[None, :], qk, -1.0e30)
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        x = qk * qk_scale - m_new[:, None]  # <= 0 (up to rounding), log2 units
        p = tl.math.exp2(x)
        alpha = tl.math.exp2(m_i - m_new)
        t_i = alpha * (t_i + l_i * (m_i - m_new)) + tl.sum(p * x, 1)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = v_desc.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, DP)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        return acc, m_new, l_i, t_i

    @triton.jit
    def _fwd_kernel_tma(q_desc, k_desc, v_desc, o_desc, ENT, KBIAS, KSTART, stride_kbb, stride_kbh, qk_scale, H, Nq,
                        Nk, NQ_BUCKET, NK_BUCKET,
                        HEAD_DIM: tl.constexpr, DP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        HAS_BIAS: tl.constexpr):
        pid = tl.program_id(0)
        num_m = tl.cdiv(Nq, BLOCK_M)
        pid_m = pid % num_m
        pid_bh = pid // num_m
        off_b = pid_bh // H
        off_h = pid_bh % H
        start_m = pid_m * BLOCK_M
        KB = KBIAS + off_b.to(tl.int64) * stride_kbb + off_h.to(tl.int64) * stride_kbh
        q = q_desc.load([off_b, off_h, start_m, 0]).reshape(BLOCK_M, DP)
        acc = tl.zeros([BLOCK_M, DP], dtype=tl.float32)
        m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        t_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        n_full = (Nk // BLOCK_N) * BLOCK_N
        n_free = n_full  # full key blocks that need no bias
        if HAS_BIAS:
            # key blocks before this (b, h)'s first biased key need no bias: HunyuanVideo's video tokens come before
            # its padded text, so all but the last blocks run the unbiased loop (the bias load is not pipelined)
            n_free = tl.minimum((tl.load(KSTART + pid_bh) // BLOCK_N) * BLOCK_N, n_full)
        for start_n in range(0, n_free, BLOCK_N):
            acc, m_i, l_i, t_i = _tma_block(acc, m_i, l_i, t_i, q, k_desc, v_desc, off_b, off_h, start_n, Nk,
                                            qk_scale, BLOCK_N, DP, False, False, KB)
        if HAS_BIAS:
            for start_n in range(n_free, n_full, BLOCK_N):
                acc, m_i, l_i, t_i = _tma_block(acc, m_i, l_i, t_i, q, k_desc, v_desc, off_b, off_h, start_n, Nk,
                                                qk_scale, BLOCK_N, DP, False, True, KB)
        if n_full < Nk:
            acc, m_i, l_i, t_i = _tma_block(acc, m_i, l_i, t_i, q, k_desc, v_desc, off_b, off_h, n_full, Nk,
                                            qk_scale, BLOCK_N, DP, True, HAS_BIAS, KB)
        inv_l = 1.0 / l_i
        offs_m = start_m + tl.arange(0, BLOCK_M)
        ent = (tl.math.log2(l_i) - t_i * inv_l) * 0.6931471805599453  # nats
        tl.store(ENT + pid_bh.to(tl.int64) * Nq + offs_m, ent, mask=offs_m < Nq)
        o = (acc * inv_l[:, None]).to(q.dtype)
        o_desc.store([off_b, off_h, start_m, 0], o.reshape(1, 1, BLOCK_M, DP))

    def _tma_pre_hook(nargs):
        bm, bn, dp = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["DP"]
        for name, rows in (("q_desc", bm), ("k_desc", bn), ("v_desc", bn), ("o_desc", bm)):
            if not isinstance(nargs[name], torch.Tensor):
                nargs[name].block_shape = [1, 1, rows, dp]

    # (BLOCK_M, BLOCK_N, num_warps, num_stages): Hopper-oriented, one warpgroup pair per 128 query rows
    _TMA_CONFIGS = [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2), (64, 64, 4, 3),
                    (64, 128, 4, 3)]

    def _prune_tma(configs, named_args, **kwargs):
        a = {**named_args, **kwargs}
        dp, nq = a.get("DP", 64), a.get("Nq", 1 << 16)
        out = [c for c in configs
               if not (dp > 128 and (c.kwargs["BLOCK_N"] > 64 or c.kwargs["BLOCK_M"] > 64))
               and not (nq <= 64 and c.kwargs["BLOCK_M"] > 64)]
        return out or configs[-2:]

    _fwd_tuned_tma = triton.autotune(
        configs=[triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s, pre_hook=_tma_pre_hook)
                 for bm, bn, w, s in _TMA_CONFIGS],
        key=["HEAD_DIM", "NQ_BUCKET", "NK_BUCKET", "HAS_BIAS"],
        prune_configs_by={"early_config_prune": _prune_tma},
    )(_fwd_kernel_tma)


def triton_available() -> bool:
    """True when triton imports and the kernels are defined."""
    return _HAS_TRITON


def fused_available(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask=None) -> bool:
    """Whether :func:`flash_attention_with_entropy` can compute this attention call.

    True iff ``q, k, v`` are CUDA tensors on one device with one dtype in {fp16, bf16, fp32}, shapes
    ``(B, H, Nq, D)``, ``(B, H, Nk, D)``, ``(B, H, Nk, D)`` with ``0 < D <= 256`` and non-empty sequences,
    ``attn_mask`` either ``None`` or a key mask (:func:`is_key_mask`: boolean or additive, ``[B|1, H|1, 1, Nk]``;
    per-query masks are not fused), triton importable, and no autograd needed (the kernel has no backward).
    """
    if attn_mask is not None and not is_key_mask(attn_mask, q, k):
        return False
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        return False
    if not (q.is_cuda and k.is_cuda and v.is_cuda) or not (q.device == k.device == v.device):
        return False
    if q.dtype not in _SUPPORTED_DTYPES or not (q.dtype == k.dtype == v.dtype):
        return False
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return False
    b, h, nq, d = q.shape
    if tuple(k.shape) != (b, h, k.shape[2], d) or tuple(v.shape) != tuple(k.shape):
        return False
    if not (0 < d <= _MAX_HEAD_DIM) or nq == 0 or k.shape[2] == 0 or b * h == 0:
        return False
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return False
    return triton_available()


def is_key_mask(attn_mask, q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether ``attn_mask`` is a mask over keys only, which the kernels take as a per-key bias.

    True for a boolean (True = attend) or floating (added to the scores) tensor whose shape, left-padded to 4 dims,
    is ``[B or 1, H or 1, 1, Nk or 1]`` for ``q [B, H, Nq, D]``, ``k [B, H, Nk, D]``, e.g. HunyuanVideo's
    ``[B, 1, 1, N]`` padding mask. A mask with a query dim (``[..., Nq, Nk]``) differs per query row: not fused.

    >>> q = k = torch.zeros(2, 3, 5, 8)
    >>> is_key_mask(torch.ones(2, 1, 1, 5, dtype=torch.bool), q, k), is_key_mask(torch.zeros(5, 5), q, k)
    (True, False)
    """
    if not isinstance(attn_mask, torch.Tensor) or not 1 <= attn_mask.dim() <= 4 or attn_mask.numel() == 0:
        return False
    if not (attn_mask.dtype == torch.bool or attn_mask.is_floating_point()):
        return False
    mb, mh, mq, mk = (1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape)
    B, H, _, _ = q.shape
    return mb in (1, B) and mh in (1, H) and mq == 1 and mk in (1, k.shape[2])


def _key_bias(attn_mask: torch.Tensor, B: int, H: int, Nk: int, scale: float, device) -> torch.Tensor:
    """A key mask (:func:`is_key_mask`) as the kernels' per-key bias: an fp32 ``[B, H, Nk]`` view, unit stride over
    keys, stride 0 where the mask broadcasts.

    Units: the raw dot product ``q . k``, i.e. the natural additive bias divided by ``scale``; ``False`` / ``-inf``
    become ``-1e30`` in the kernel's log2 score units (exactly zero weight, no ``inf - inf``). A row whose keys are
    all masked gets the uniform average instead of SDPA's NaN.
    """
    m = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))[:, :, 0, :].to(device)
    if m.dtype == torch.bool:
        bias = torch.zeros(m.shape, dtype=torch.float64, device=device).masked_fill_(~m, float("-inf"))
    else:
        bias = m.double()
    floor = max(-1.0e30 / (scale * _LOG2E), -1.0e37)
    kb = (bias / scale).clamp_min(floor).float()
    return kb.expand(kb.shape[0], kb.shape[1], Nk).contiguous().expand(B, H, Nk)


def _pick_config(nq: int, nk: int, d_tot: int, two_slab: bool = False) -> dict:
    """A fixed launch config for problems too small to be worth autotuning."""
    if nq <= 64 and nk <= 64:
        bm, bn, warps, stages = min(64, max(16, _next_pow2(nq))), min(64, max(16, _next_pow2(nk))), 4, 2
    else:
        bm = 128 if nq > 64 else 64
        bn, warps, stages = 64, (8 if bm == 128 else 4), 3
    if d_tot > 128 or two_slab:
        bn, stages = min(bn, 32), 2
    return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages}


def flash_attention_with_entropy(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, attn_mask=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output and per-query-row attention entropy in one fused pass.

    Parameters
    ----------
    q : Tensor ``[batch, head, query, dim]`` (CUDA; fp16, bf16 or fp32; any strides)
    k, v : Tensor ``[batch, head, key, dim]``
    scale : float, optional
        Score scale; ``1/sqrt(dim)`` when ``None`` (as :func:`torch.nn.functional.scaled_dot_product_attention`).
    attn_mask : Tensor, optional
        A key mask (:func:`is_key_mask`): boolean ``[B|1, H|1, 1, Nk]`` (True = attend) or an additive bias of
        that shape, as SDPA takes it. Masked keys get zero weight: the entropy is over the unmasked keys only.

    Returns
    -------
    out : Tensor ``[batch, head, query, dim]`` in ``q.dtype`` — equals ``F.scaled_dot_product_attention(q, k, v,
        scale=scale)`` (its memory layout is ``[batch, query, head, dim]`` permuted, as flash SDPA returns).
    entropy : Tensor ``[batch, head, query]`` float32, in nats: ``H_i = -sum_j a_ij log a_ij`` (``0 <= H_i <= log
        Nk``). Divide by ``log(Nk)`` for the paper's normalised entropy.
    """
    if attn_mask is None:
        result = planned(q, k, v, scale)
        if result is not None:
            return result
    if not _HAS_TRITON:
        raise RuntimeError("flash_attention_with_entropy needs triton; check fused_available(q, k, v) first")
    interpret = _interpret_mode()
    if not interpret and not (q.is_cuda and k.is_cuda and v.is_cuda):
        raise ValueError(
            "flash_attention_with_entropy needs CUDA tensors; check fused_available(q, k, v) first"
        )
    if (
        q.dim() != 4
        or k.shape != v.shape
        or k.dim() != 4
        or q.shape[-1] != k.shape[-1]
        or q.shape[:2] != k.shape[:2]
    ):
        raise ValueError(
            f"expected q (B,H,Nq,D), k and v (B,H,Nk,D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.dtype not in _SUPPORTED_DTYPES or not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"dtypes must match and be fp16/bf16/fp32; got {q.dtype}, {k.dtype}, {v.dtype}")
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    if not (0 < D <= _MAX_HEAD_DIM):
        raise ValueError(f"head dim {D} not supported (1..{_MAX_HEAD_DIM})")
    if attn_mask is not None and not is_key_mask(attn_mask, q, k):
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} is not a key mask [B|1, H|1, 1, Nk]; per-query masks "
            "are not fused: use F.scaled_dot_product_attention and core.entropy.row_entropy"
        )
    scale_arg = scale  # the plan's key: what the caller passes
    if scale is None:
        scale = 1.0 / math.sqrt(D)

    # the kernel needs unit stride along the head dim (vector loads); any other strides are passed through
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    # [B, Nq, H, D] memory, viewed as [B, H, Nq, D] (what flash SDPA returns; transpose(1, 2).reshape is free)
    out = torch.empty((B, Nq, H, D), dtype=q.dtype, device=q.device).transpose(1, 2)
    ent = torch.empty((B, H, Nq), dtype=torch.float32, device=q.device)
    if B * H == 0 or Nq == 0:
        return out, ent
    if Nk == 0:
        raise ValueError("attention over zero keys is undefined")

    kbias = None if attn_mask is None else _key_bias(attn_mask, B, H, Nk, float(scale), q.device)
    DA, DB = _split_head_dim(D)
    # fp32: three-pass tf32 on the tensor cores (~fp32 accuracy; plain "ieee" spills heavily in triton on Hopper)
    fp32 = q.dtype == torch.float32
    dot_prec = ("ieee" if interpret else "tf32x3") if fp32 else "tf32"
    args = (
        q,
        k,
        v,
        out,
        ent,
        ent if kbias is None else kbias,
        0 if kbias is None else kbias.stride(0),
        0 if kbias is None else kbias.stride(1),
        float(scale) * _LOG2E,
        q.stride(0),
        q.stride(1),
        q.stride(2),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        H,
        Nq,
        Nk,
        min(_next_pow2(Nq), 1 << 16),
        min(_next_pow2(Nk), 1 << 16),
    )
    small = Nq <= 64 and Nk <= 64  # e.g. AnimateDiff temporal attention (N = 16)
    # autotune only where it pays (and compiles once per key); smaller problems take a fixed, sensible config
    big = B * H * Nq * Nk * (DA + DB) >= (1 << 30)
    if not small and _tma_ok(q, k, v, out, float(scale)):
        blocks = _launch_tma(q, k, v, out, ent, float(scale) * _LOG2E, big and not interpret, kbias=kbias)
        if kbias is None and not interpret:
            _remember(q, k, v, scale_arg, _TMAPlan(out, args[8], Nk, blocks))
        return out, ent
    consts = {"HEAD_DIM": D, "DA": DA, "DB": DB, "DOT_PREC": dot_prec, "HAS_BIAS": kbias is not None}
    if interpret or small or fp32 or not big:
        cfg = _pick_config(Nq, Nk, DA + DB, two_slab=DB > 0)
        # fp32: few registers to spare with three-pass tf32, so small tiles and no autotuning (it is a fallback)
        if fp32:
            cfg.update(
                BLOCK_M=min(cfg["BLOCK_M"], 64), BLOCK_N=min(cfg["BLOCK_N"], 32), num_warps=4, num_stages=2
            )
        grid = (triton_cdiv(Nq, cfg["BLOCK_M"]) * B * H,)
        _fwd_kernel[grid](
            *args,
            **consts,
            BLOCK_M=cfg["BLOCK_M"],
            BLOCK_N=cfg["BLOCK_N"],
            num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"],
        )
        block_m, options = cfg["BLOCK_M"], {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
        consts.update(BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"])
    else:

        def grid(meta):
            return (triton_cdiv(Nq, meta["BLOCK_M"]) * B * H,)

        tuned = _fwd_tuned_two_slab if DB > 0 else _fwd_tuned
        tuned[grid](*args, **consts)
        best = tuned.best_config  # the config this key was tuned to
        block_m = best.kwargs["BLOCK_M"]
        options = launch_options(best)
        consts.update(best.kwargs)
    if kbias is None and not interpret:
        _remember(q, k, v, scale_arg, _PointerPlan(out, args[6:], CompiledLaunch(_fwd_kernel, consts, options),
                                               (triton_cdiv(Nq, block_m) * B * H,)))
    return out, ent


#: Launch plans of the call shapes seen so far (no mask): see :func:`_plan_key`. Bounded: cleared when full.
_PLANS: dict = {}


def planned(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale=None):
    """``flash_attention_with_entropy(q, k, v, scale)`` (no mask) if this call shape ran before (its checks, config
    and compiled kernel are kept, see :func:`_plan_key`), else ``None``.

    >>> planned(torch.zeros(1, 1, 2, 8), torch.zeros(1, 1, 2, 8), torch.zeros(1, 1, 2, 8)) is None   # CPU: never
    True
    """
    if not (type(q) is torch.Tensor and q.is_cuda):  # plain CUDA tensors only (no fake / meta / subclasses)
        return None
    plan = _PLANS.get(_plan_key(q, k, v, scale))
    return None if plan is None else plan(q, k, v)


def _plan_key(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale) -> tuple:
    """Everything the launch of one call depends on except the data: shapes, strides, dtypes, device, 16-byte
    alignment of each base, the scale, autograd and the environment switches. Equal keys → equal checks, config,
    integer arguments and kernel specialisation."""
    return (q.shape, k.shape, v.shape, q.stride(), k.stride(), v.stride(), q.dtype, k.dtype, v.dtype, q.device,
            k.device, v.device, scale, q.data_ptr() % 16, k.data_ptr() % 16, v.data_ptr() % 16,
            q.requires_grad or k.requires_grad or v.requires_grad,
            os.environ.get("IEADAPT_KERNEL", ""), os.environ.get("TRITON_INTERPRET", "0"))


def _remember(q, k, v, scale, plan) -> None:
    if not (type(q) is torch.Tensor and q.is_cuda):
        return
    keep(_PLANS, _plan_key(q, k, v, scale), plan)


class _PointerPlan:
    """A call shape on the pointer kernel: output shapes, grid, integer arguments and the compiled kernel, fixed."""

    def __init__(self, out: torch.Tensor, ints: tuple, launch: CompiledLaunch, grid: tuple) -> None:
        self.out_shape = (out.shape[0], out.shape[2], out.shape[1], out.shape[3])  # [B, Nq, H, D] memory
        self.ints, self.launch, self.grid = tuple(ints), launch, grid

    def __call__(self, q, k, v):
        b, n, h, _ = self.out_shape
        out = torch.empty(self.out_shape, dtype=q.dtype, device=q.device).transpose(1, 2)
        ent = torch.empty((b, h, n), dtype=torch.float32, device=q.device)
        self.launch(self.grid, (q, k, v, out, ent, ent, *self.ints))
        return out, ent


class _TMAPlan:
    """A call shape on the TMA kernel: the tuned block sizes, descriptor shapes and the compiled kernel, fixed."""

    def __init__(self, out: torch.Tensor, qk_scale: float, nk: int, blocks: tuple) -> None:
        b, h, nq, d = out.shape
        self.out_shape = (b, nq, h, d)
        block_m, block_n, dp, consts, options = blocks
        self.rows = (block_m, block_n, block_n, block_m)
        self.dp = dp
        self.ints = (0, 0, qk_scale, h, nq, nk, min(_next_pow2(nq), 1 << 16), min(_next_pow2(nk), 1 << 16))
        self.launch = CompiledLaunch(_fwd_kernel_tma, consts, options)
        self.grid = (triton_cdiv(nq, block_m) * b * h,)

    def __call__(self, q, k, v):
        b, n, h, _ = self.out_shape
        out = torch.empty(self.out_shape, dtype=q.dtype, device=q.device).transpose(1, 2)
        ent = torch.empty((b, h, n), dtype=torch.float32, device=q.device)
        descs = [_TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, self.dp])
                 for t, rows in zip((q, k, v, out), self.rows)]
        self.launch(self.grid, (*descs, ent, ent, ent, *self.ints))
        return out, ent


def _first_biased(kbias: torch.Tensor) -> torch.Tensor:
    """Per ``(b, h)``, the index of the first key with a non-zero bias (``Nk`` if none): int32 ``[B * H]``, on the
    device (no host sync). ``kbias``: the ``[B, H, Nk]`` view from :func:`_key_bias`.

    >>> _first_biased(torch.tensor([[[0.0, 0.0, -1e30], [0.0, 0.0, 0.0]]])).tolist()
    [2, 3]
    """
    nz = kbias != 0
    first = torch.where(nz.any(-1), nz.to(torch.int8).argmax(-1), kbias.shape[-1])
    return first.to(torch.int32).contiguous().view(-1)


def _tma_ok(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, scale: float) -> bool:
    """Whether the TMA (Hopper) kernel applies: fp16/bf16, head dim a multiple of 8 up to 128, 16-byte aligned strides and
    bases, a positive scale, compute capability >= 9 (or triton's interpreter), ``IEADAPT_KERNEL`` not ``pointer``."""
    if _TensorDescriptor is None or os.environ.get("IEADAPT_KERNEL", "") == "pointer":
        return False
    if q.dtype not in (torch.float16, torch.bfloat16) or scale <= 0 or q.shape[-1] % 8 or q.shape[-1] > 128:
        return False  # head dims > 128: the pointer kernel's 128 + 32 slabs were faster (0.17 vs 0.26 ms, d = 160)
    if not _interpret_mode() and torch.cuda.get_device_capability(q.device)[0] < 9:
        return False
    return all(t.data_ptr() % 16 == 0 and all(st % 8 == 0 for st in t.stride()[:-1]) for t in (q, k, v, out))


def _launch_tma(q, k, v, out, ent, qk_scale: float, tune: bool, kbias: torch.Tensor | None = None) -> tuple:
    """Launch :func:`_fwd_kernel_tma` (autotuned when ``tune``) on ``[B, H, N, D]`` views; fills ``out``, ``ent``.
    Returns what ran: ``(BLOCK_M, BLOCK_N, DP, constexprs, launch options)``.

    ``kbias`` (optional): the per-key bias from :func:`_key_bias`, ``[B, H, Nk]`` fp32, unit stride over keys.
    """
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    DP = max(16, _next_pow2(D))

    def desc(t, rows):
        return _TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, DP])

    meta = {"HEAD_DIM": D, "DP": DP, "HAS_BIAS": kbias is not None}
    kb_args = [ent, ent, 0, 0] if kbias is None else [kbias, _first_biased(kbias), kbias.stride(0), kbias.stride(1)]
    args = [None, None, None, None, ent, *kb_args, qk_scale, H, Nq, Nk,
            min(_next_pow2(Nq), 1 << 16), min(_next_pow2(Nk), 1 << 16)]
    if tune:
        args[:4] = [desc(q, 128), desc(k, 64), desc(v, 64), desc(out, 128)]  # block shapes set by the pre-hook
        _fwd_tuned_tma[lambda m: (triton_cdiv(Nq, m["BLOCK_M"]) * B * H,)](*args, **meta)
        best = _fwd_tuned_tma.best_config
        options = launch_options(best)
        return best.kwargs["BLOCK_M"], best.kwargs["BLOCK_N"], DP, {**meta, **best.kwargs}, options
    cfg = _pick_config(Nq, Nk, DP)
    if DP > 128:
        cfg.update(BLOCK_M=64, BLOCK_N=min(cfg["BLOCK_N"], 64), num_warps=4)
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    args[:4] = [desc(q, bm), desc(k, bn), desc(v, bn), desc(out, bm)]
    _fwd_kernel_tma[(triton_cdiv(Nq, bm) * B * H,)](*args, **meta, BLOCK_M=bm, BLOCK_N=bn,
                                                     num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return bm, bn, DP, {**meta, "BLOCK_M": bm, "BLOCK_N": bn}, {"num_warps": cfg["num_warps"],
                                                               "num_stages": cfg["num_stages"]}


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def attention_entropy_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, chunk_elems: int = 1 << 28
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unfused reference in plain torch: SDPA for the output, chunked fp32 logsumexp for the entropy.

    Materialises at most ``chunk_elems`` scores at a time. Used by tests and as the "two-pass" benchmark baseline.
    """
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    ent = torch.empty((B, H, Nq), dtype=torch.float32, device=q.device)
    rows = max(1, chunk_elems // max(1, B * H * Nk))
    kf = k.float()
    for i in range(0, Nq, rows):
        s = torch.matmul(q[:, :, i : i + rows].float(), kf.transpose(-1, -2)) * scale
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        p = torch.exp(s - lse)
        ent[:, :, i : i + rows] = lse.squeeze(-1) - (p * s).sum(-1)
    return out, ent
