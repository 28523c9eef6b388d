"""The recorder's per-call work: per-row energies (one Triton pass on CUDA), and per-map histograms binned once per
step for all calls together — each checked against an fp64 computation from the materialised softmax."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from reference import row_stats

from ieadapt_interp.core.adapters import AttentionLayer
from ieadapt_interp.core.entropy import sdpa_with_entropy, squared_norm
from ieadapt_interp.core.handlers import ENERGY_BINS, ENTROPY_BINS, CallContext, StatsRecorder, histograms
from ieadapt_interp.core.kernels.row_energy import (
    _HAS_TRITON,
    row_kernel_available,
    row_squared_norm,
    row_squared_norms,
)
from ieadapt_interp.core.layouts import get_layout

CUDA = torch.cuda.is_available()


def _strided(b, h, n, d, dtype, device="cpu", seed=0):
    """``[b, h, n, d]`` viewed over ``[b, n, h, d]`` memory, as diffusers' processors hand ``v`` to SDPA."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, h, d, generator=g) * 3).to(device, dtype).transpose(1, 2)


def test_squared_norm_out_matches_fp64():
    x = _strided(2, 3, 5, 40, torch.float16)
    out = torch.empty(2, 2, 3, 5)
    got = squared_norm(x, out=out[1])
    assert got.data_ptr() == out[1].data_ptr()
    torch.testing.assert_close(out[1].double(), (x.double() ** 2).sum(-1), rtol=1e-6, atol=0)


_INTERP = """
import torch
from ieadapt_interp.core.kernels import row_energy as r
for (b, h, n, d), dt in [((2, 3, 5, 40), torch.float16), ((1, 2, 33, 128), torch.bfloat16), ((2, 2, 3, 72), torch.float32)]:
    x = (torch.randn(b, n, h, d) * 3).to(dt).transpose(1, 2)             # [b, h, n, d] over [b, n, h, d] memory
    y = (torch.randn(b, h, n, d) * 3).to(dt)
    m = torch.randn(b, h, 1, d).expand(b, h, n, d)                       # fp32, stride 0 over n
    out = torch.empty(3, b, h, n)
    bd = max(16, 1 << (d - 1).bit_length()); bm = max(16, r._TILE // bd)
    strides = [s for t in (x, y, m) for s in t.stride()[:3]]
    r._row_sumsq_kernel[(3 * -(-(b * h * n) // bm),)](x, y, m, out, b * h * n, h, n, *strides, D=d, BLOCK_M=bm,
                                                      BLOCK_D=bd, ALIGN=8)  # every stride here is a multiple of 8
    for i, t in enumerate((x, y, m)):
        ref = (t.double() ** 2).sum(-1)
        assert float(((out[i].double() - ref).abs() / ref).max()) < 1e-6, (b, h, n, d, dt, i)
print("OK")
"""


@pytest.mark.skipif(not _HAS_TRITON, reason="triton not importable")
def test_row_kernel_under_triton_interpreter_cpu():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _INTERP], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    if proc.returncode != 0 and "only 0-dimensional arrays" in proc.stderr:
        pytest.skip("triton's interpreter does not run beside this numpy: " + proc.stderr[-200:])
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and _HAS_TRITON), reason="needs a CUDA device and triton")
@pytest.mark.parametrize("d", [40, 80, 128, 160])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_row_kernel_matches_fp64_on_gpu(d, dtype):
    x = _strided(3, 8, 1000, d, dtype, "cuda")
    assert row_kernel_available(x)
    ref = (x.double() ** 2).sum(-1)
    torch.testing.assert_close(row_squared_norm(x).double(), ref, rtol=2e-6, atol=0)
    out = torch.empty(2, 3, 8, 1000, device="cuda")
    row_squared_norm(x.contiguous(), out=out[1])
    torch.testing.assert_close(out[1].double(), ref, rtol=2e-6, atol=0)
    mean = x.mean(-2, keepdim=True, dtype=torch.float32)  # the recorder's third input: fp32, broadcast over rows
    three = row_squared_norms([x, x.contiguous(), mean.expand_as(x)], torch.empty(3, 3, 8, 1000, device="cuda"))
    torch.testing.assert_close(three[:2].double(), ref.expand(2, -1, -1, -1), rtol=2e-6, atol=0)
    torch.testing.assert_close(three[2].double(), (mean.double() ** 2).sum(-1).expand_as(ref), rtol=2e-6, atol=0)


def _call(layout, per, frames, rows, n_q, n_k, step, layer, seed):
    g = torch.Generator().manual_seed(seed)
    b = per * len(rows)
    q, k, v = (torch.randn(b, 2, n, 8, generator=g) * s for n, s in ((n_q, 2.0), (n_k, 1.0), (n_k, 1.0)))
    out, ent = sdpa_with_entropy(q, k, v, None, 8 ** -0.5)
    ctx = CallContext(AttentionLayer(layer, "x", "up.0", 1, 1, None), step, rows, per, get_layout(layout), frames,
                      0, q, k, v, None, 8 ** -0.5, out=out, entropy=ent)
    return ctx, row_stats(q, k, v, 8 ** -0.5)


def _bins(values: np.ndarray, edges) -> np.ndarray:
    idx = np.clip(np.searchsorted(np.asarray(edges[1:-1]), values, side="right"), 0, len(edges) - 2)
    return np.stack([np.bincount(r, minlength=len(edges) - 1) for r in idx.reshape(-1, idx.shape[-1])])


def test_step_histograms_binned_together_match_fp64_per_map():
    """Two steps × three calls of different layouts and sizes: every call's map histograms (binned in one batch per
    step) equal the bins of its fp64 per-map entropy and energy position; the per-frame values match fp64 too."""
    rows = [("uncond", 0), ("cond", 0)]
    specs = [("frames_in_batch", 3, 3, 16, 16, "s"), ("frames_in_sequence", 12, 4, 4, 4, "t"),
             ("frames_in_batch", 3, 3, 16, 5, "x")]  # the last is cross-attention: no energy histogram
    rec, refs = StatsRecorder(["s", "t", "x"]), []
    for step in (0, 1):
        for i, (layout, per, frames, n_q, n_k, name) in enumerate(specs):
            ctx, ref = _call(layout, per, frames, rows, n_q, n_k, step, name, seed=10 * step + i)
            rec.after(ctx)
            refs.append((ctx, ref))
        assert len(rec._pending) == 3  # the previous step was binned when this one started
    calls = rec.calls
    assert not rec._pending and len(calls) == 6
    for call, (ctx, ref) in zip(calls, refs):
        cond = slice(ctx.per, 2 * ctx.per)  # the recorded row's attention elements
        # one map per attention element (a frame's map, a position's F × F map): sum over its query rows
        per_map = {k: ref[k][cond].sum(-1).T.unsqueeze(0) for k in ref}  # [row, head, map]
        pct = (per_map["entropy"] / ctx.query.shape[-2] * 100 / math.log(ctx.key.shape[-2])).numpy()
        np.testing.assert_array_equal(call.stats["map_entropy_hist"].numpy(), _bins(pct, ENTROPY_BINS).reshape(
            call.stats["map_entropy_hist"].shape))
        if ctx.square:
            pos = ((per_map["energy"] - per_map["energy_uniform"])
                   / (per_map["energy_identity"] - per_map["energy_uniform"])).numpy()
            np.testing.assert_array_equal(call.stats["map_energy_hist"].numpy(), _bins(pos, ENERGY_BINS).reshape(
                call.stats["map_energy_hist"].shape))
        else:
            assert "map_energy_hist" not in call.stats and torch.isnan(call.stats["energy_identity"]).all()
        np.testing.assert_allclose(call.stats["energy_uniform"].numpy(),
                                   ctx.layout.to_frames(ref["energy_uniform"][cond], 1, ctx.per, ctx.num_frames,
                                                        0, "sum")[0].numpy(), rtol=1e-5)


def test_histograms_of_several_parts_equal_one_at_a_time():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(2, 3, 7, generator=g) * 60 + 50, torch.rand(4, 1, generator=g) * 100,
             torch.tensor([[float("nan"), -1.0, 100.0, 101.0]])]
    together = histograms(parts, ENTROPY_BINS)
    for part, hist in zip(parts, together):
        assert torch.equal(hist, histograms([part], ENTROPY_BINS)[0])
        assert hist.shape == (*part.shape[:-1], len(ENTROPY_BINS) - 1) and hist.sum(-1).eq(part.shape[-1]).all()


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and _HAS_TRITON), reason="needs a CUDA device and triton")
def test_row_energies_on_gpu_match_fp64():
    """The recorder's one-launch path: ‖AV_i‖², ‖V_i‖², ‖mean V‖² of a temporal-like call against fp64."""
    from ieadapt_interp.core.handlers import row_energies

    q, k, v = (_strided(64, 8, 16, 40, torch.float16, "cuda", seed=s) for s in (1, 2, 3))
    out, _ = sdpa_with_entropy(q, k, v, None, 40 ** -0.5)
    got = row_energies(out, v, None, True).view(3, 64, 8, 16).double()
    ref = [(out.double() ** 2).sum(-1), (v.double() ** 2).sum(-1),
           (v.double().mean(-2, keepdim=True) ** 2).sum(-1).expand(-1, -1, 16)]
    for i in range(3):
        torch.testing.assert_close(got[i], ref[i], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and _HAS_TRITON), reason="needs a CUDA device and triton")
def test_repeated_row_norm_calls_launch_the_kept_kernel():
    """A repeated argument signature launches the compiled kernel kept from its first call: every call, with new
    data, still matches fp64 (the third call is the direct launch)."""
    from ieadapt_interp.core.kernels import row_energy

    row_energy._PLANS.clear()
    for seed in range(3):
        x = _strided(5, 8, 77, 40, torch.float16, "cuda", seed=seed)
        mean = x.mean(-2, keepdim=True, dtype=torch.float32).expand_as(x)
        got = row_squared_norms([x, mean], torch.empty(2, 5, 8, 77, device="cuda")).double()
        torch.testing.assert_close(got[0], (x.double() ** 2).sum(-1), rtol=2e-6, atol=0)
        torch.testing.assert_close(got[1], (mean.double() ** 2).sum(-1), rtol=2e-6, atol=0)
    (plan,) = row_energy._PLANS.values()
    assert plan[-1].kernel is not None
