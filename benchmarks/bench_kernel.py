"""Microbenchmark: plain SDPA vs the fused flash-attention + entropy kernel vs a naive two-pass
(SDPA + chunked fp32 logsumexp entropy), at the shapes AnimateDiff and CogVideoX-5B produce.

    python benchmarks/bench_kernel.py --out kernel.json

Each time is the median of >= --reps CUDA-event-timed calls after warm-up. Inputs are diffusers-style permuted
views ([B, N, H, D] memory seen as [B, H, N, D]) for all three methods.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from ieadapt_interp.core.kernels import attention_entropy_reference, flash_attention_with_entropy, fused_available

SHAPES = [
    # name, B, H, N, D, dtype
    ("animatediff_spatial_64x64", 32, 8, 4096, 40, torch.float16),
    ("animatediff_spatial_32x32", 32, 8, 1024, 80, torch.float16),
    ("animatediff_spatial_16x16", 32, 8, 256, 160, torch.float16),
    ("animatediff_spatial_8x8", 32, 8, 64, 160, torch.float16),
    ("animatediff_temporal", 2 * 64 * 64, 8, 16, 40, torch.float16),
    ("cogvideox5b_joint", 2, 48, 17776, 64, torch.bfloat16),
]


def time_ms(fn, reps: int, min_total_ms: float = 200.0) -> float:
    """Median of >= reps CUDA-event-timed calls (more for fast calls, up to ~min_total_ms)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    est = (time.perf_counter() - t0) * 1e3
    n = max(reps, min(1000, int(min_total_ms / max(est, 1e-3))))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def sdpa_backend_ms(q, k, v, backend, reps):
    from torch.nn.attention import sdpa_kernel

    try:
        with sdpa_kernel([backend]):
            F.scaled_dot_product_attention(q, k, v)
            return time_ms(lambda: F.scaled_dot_product_attention(q, k, v), reps)
    except Exception:  # noqa: BLE001 - backend not usable for this shape/dtype
        return None


def bench_shape(name, B, H, N, D, dtype, reps, backends=True) -> dict:
    from torch.nn.attention import SDPBackend

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    qkv = torch.randn(B, N, 3, H, D, device=dev, dtype=dtype, generator=g)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # [B, H, N, D] views, as diffusers passes
    assert fused_available(q, k, v)
    t_first = time.perf_counter()
    out_f, ent_f = flash_attention_with_entropy(q, k, v)  # autotune / compile
    torch.cuda.synchronize()
    t_first = time.perf_counter() - t_first
    out_n, ent_n = attention_entropy_reference(q, k, v)
    err_out = (out_f.float() - out_n.float()).abs().max().item()
    err_ent = ((ent_f - ent_n).abs() / ent_n.abs().clamp_min(1e-3)).max().item()
    del out_f, ent_f, out_n, ent_n

    t_sdpa = time_ms(lambda: F.scaled_dot_product_attention(q, k, v), reps)
    t_fused = time_ms(lambda: flash_attention_with_entropy(q, k, v), reps)
    t_naive = time_ms(lambda: attention_entropy_reference(q, k, v), reps, min_total_ms=0)
    flops = 4 * B * H * N * N * D
    row = {
        "name": name,
        "B": B,
        "H": H,
        "N": N,
        "D": D,
        "dtype": str(dtype).replace("torch.", ""),
        "sdpa_ms": t_sdpa,
        "fused_ms": t_fused,
        "two_pass_ms": t_naive,
        "fused_over_sdpa": t_fused / t_sdpa,
        "two_pass_over_sdpa": t_naive / t_sdpa,
        "fused_tflops": flops / (t_fused * 1e-3) / 1e12,
        "sdpa_tflops": flops / (t_sdpa * 1e-3) / 1e12,
        "first_call_s": t_first,
        "max_abs_err_out": err_out,
        "max_rel_err_entropy": err_ent,
    }
    if backends:
        for label, be in (
            ("flash", SDPBackend.FLASH_ATTENTION),
            ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION),
        ):
            row[f"sdpa_{label}_ms"] = sdpa_backend_ms(q, k, v, be, reps)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write results as JSON here")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", default=None, help="comma-separated shape names")
    ap.add_argument(
        "--no-backends", action="store_true", help="skip timing SDPA's flash/cuDNN backends separately"
    )
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to benchmark", file=sys.stderr)
        return 1
    rows = []
    for name, B, H, N, D, dtype in SHAPES:
        if args.only and name not in args.only.split(","):
            continue
        row = bench_shape(name, B, H, N, D, dtype, args.reps, backends=not args.no_backends)
        rows.append(row)
        torch.cuda.empty_cache()
        print(
            f"{name:28s} B={B:5d} H={H:2d} N={N:5d} D={D:3d} {row['dtype']:8s} sdpa {row['sdpa_ms']:8.3f} ms  "
            f"fused {row['fused_ms']:8.3f} ms ({row['fused_over_sdpa']:.2f}x)  two-pass {row['two_pass_ms']:8.3f} ms "
            f"({row['two_pass_over_sdpa']:.2f}x)  [flash {row.get('sdpa_flash_ms')}, cudnn {row.get('sdpa_cudnn_ms')}, "
            f"eff {row.get('sdpa_efficient_ms')}]  err out {row['max_abs_err_out']:.1e} "
            f"ent {row['max_rel_err_entropy']:.1e}  first call {row['first_call_s']:.1f}s",
            flush=True,
        )

    meta = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "timing": f"median of >= {args.reps} CUDA-event-timed calls after 4 warm-ups",
    }
    print(f"\n{'shape':28s} {'sdpa ms':>9s} {'fused ms':>9s} {'ratio':>6s} {'2pass ms':>9s} {'ratio':>6s}")
    for r in rows:
        print(
            f"{r['name']:28s} {r['sdpa_ms']:9.3f} {r['fused_ms']:9.3f} {r['fused_over_sdpa']:6.2f} "
            f"{r['two_pass_ms']:9.3f} {r['two_pass_over_sdpa']:6.2f}"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
