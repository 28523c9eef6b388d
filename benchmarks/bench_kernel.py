"""Microbenchmark: flash SDPA (output only) vs the fused flash-attention + entropy kernel, per call, at the shapes
the supported video models produce (issue 11's table first).

    python benchmarks/bench_kernel.py --baseline old_flash_entropy.py --out kernel.json [--only a,b] [--reps 10]

Variants timed in one run: ``before`` (a frozen copy of the previous kernel module, if ``--baseline`` names one),
``pointer`` (this module forced onto its pointer kernel, ``IEADAPT_KERNEL=pointer``) and ``fused`` (this module's
default: the TMA kernel on Hopper). Each time is the median of >= --reps CUDA-event-timed calls after warm-up.
Inputs are diffusers-style permuted views ([B, N, H, D] memory seen as [B, H, N, D]). Each variant's output is
compared with SDPA and its entropy with a chunked fp32-softmax reference on the first CHECK_ROWS query rows.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ieadapt_interp.core.kernels import (
    attention_entropy_reference,
    flash_attention_with_entropy,
    fused_available,
)

SHAPES = [
    # name, B, H, N, D, dtype  (issue 11's per-call table first; B = the batch one attention call sees)
    ("animatediff_spatial_64x64", 32, 8, 4096, 40, torch.float16),
    ("cogvideox5b_joint", 2, 48, 17776, 64, torch.bfloat16),
    ("wan13b_480p_81f", 1, 12, 32760, 128, torch.bfloat16),
    ("wan14b_720p_81f", 1, 40, 75600, 128, torch.bfloat16),
    ("hunyuan_720p_129f", 1, 24, 119056, 128, torch.bfloat16),
    ("ltx_768x512_121f", 2, 32, 6144, 64, torch.bfloat16),
    ("animatediff_spatial_32x32", 32, 8, 1024, 80, torch.float16),
    ("animatediff_spatial_16x16", 32, 8, 256, 160, torch.float16),
    ("animatediff_spatial_8x8", 32, 8, 64, 160, torch.float16),
    ("animatediff_temporal", 2 * 64 * 64, 8, 16, 40, torch.float16),
    ("d72_8k", 2, 16, 8192, 72, torch.bfloat16),
    ("d96_8k", 2, 16, 8192, 96, torch.bfloat16),
    ("hunyuan_720p_129f_masked", 1, 24, 119056, 128, torch.bfloat16),
]

#: Shapes timed with a boolean key mask ``[B, 1, 1, N]``: name -> masked trailing keys (HunyuanVideo: 256 text
#: tokens, 64 real, 192 padding). SDPA then takes the mask too (no flash backend), and a ``two_pass`` variant
#: (SDPA + the chunked entropy: what a trace ran before the kernel took masks) replaces ``before``.
MASKED = {"hunyuan_720p_129f_masked": 192}

#: Query rows checked against the fp32 reference entropy (all rows on small shapes).
CHECK_ROWS = 512


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


def load_baseline(path: str):
    """The kernel module as it was before (a frozen copy of ``flash_entropy.py``), for before/after in one run."""
    import importlib.util

    source = Path(path).read_text()  # a copy of the package module: its relative imports made absolute
    source = source.replace("from .compiled import", "from ieadapt_interp.core.kernels.compiled import")
    path = Path(tempfile.mkdtemp()) / "flash_entropy_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("flash_entropy_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.flash_attention_with_entropy


def two_pass(q, k, v, mask):
    """The non-fused path (``IEADAPT_FUSED=0``): SDPA for the output, the chunked fp32 entropy."""
    from ieadapt_interp.core.entropy import sdpa_with_entropy

    os.environ["IEADAPT_FUSED"] = "0"
    try:
        return sdpa_with_entropy(q, k, v, mask)
    finally:
        os.environ.pop("IEADAPT_FUSED", None)


def fused_variants(baseline: str | None) -> dict:
    """name -> callable(q, k, v): the kernel before (if given), this one forced onto the pointer path, this one."""
    variants = {}
    if baseline:
        variants["before"] = load_baseline(baseline)

    def pointer(q, k, v, **kw):
        os.environ["IEADAPT_KERNEL"] = "pointer"
        try:
            return flash_attention_with_entropy(q, k, v, **kw)
        finally:
            os.environ.pop("IEADAPT_KERNEL", None)

    variants["pointer"] = pointer
    variants["fused"] = flash_attention_with_entropy
    return variants


def check_errors(fn, q, k, v, mask=None) -> dict:
    """Output vs SDPA (max abs), entropy vs the chunked fp32-softmax reference (max relative) on the first
    CHECK_ROWS query rows (every key); with the key mask ``mask`` if given."""
    out, ent = fn(q, k, v)
    torch.cuda.synchronize()
    rows = min(CHECK_ROWS, q.shape[2])
    if mask is None:
        ref_out, ref_ent = attention_entropy_reference(q[:, :, :rows], k, v)
    else:
        from ieadapt_interp.core.entropy import row_entropy

        ref_out = F.scaled_dot_product_attention(q[:, :, :rows], k, v, attn_mask=mask)
        ref_ent = row_entropy(q[:, :, :rows], k, attn_mask=mask)
    return {"max_abs_err_out": (out[:, :, :rows].float() - ref_out.float()).abs().max().item(),
            "max_rel_err_entropy": ((ent[:, :, :rows] - ref_ent).abs() / ref_ent.abs().clamp_min(1e-3)).max().item(),
            "finite": bool(torch.isfinite(out).all() and torch.isfinite(ent).all())}


def bench_shape(name, B, H, N, D, dtype, reps, variants, backends=True, skip=()) -> dict:
    from torch.nn.attention import SDPBackend

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    qkv = torch.randn(B, N, 3, H, D, device=dev, dtype=dtype, generator=g)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # [B, H, N, D] views, as diffusers passes
    mask = None
    if name in MASKED:  # boolean key mask: the last MASKED[name] keys are padding
        mask = torch.ones(B, 1, 1, N, dtype=torch.bool, device=dev)
        mask[..., N - MASKED[name]:] = False
        variants = {label: (lambda q, k, v, fn=fn: fn(q, k, v, attn_mask=mask))  # a baseline from before key
                    for label, fn in variants.items()                        # masks (no attn_mask) is left out
                    if label != "before" or "attn_mask" in inspect.signature(fn).parameters}
        if "two_pass" not in skip:  # tens of seconds per call at 119 k tokens
            variants = {"two_pass": lambda q, k, v: two_pass(q, k, v, mask), **variants}
    assert fused_available(q, k, v, mask)
    flops = 4 * B * H * N * N * D
    row = {"name": name, "B": B, "H": H, "N": N, "D": D, "dtype": str(dtype).replace("torch.", ""),
           "masked_keys": MASKED.get(name, 0)}
    try:  # with a mask SDPA has no flash backend; if it falls back to materialising the scores, it runs out
        row["sdpa_ms"] = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), reps)
    except torch.OutOfMemoryError as exc:  # of memory at DiT sizes: the fused variants are still timed
        row["sdpa_ms"], row["sdpa_error"] = float("nan"), repr(exc)[:200]
        torch.cuda.empty_cache()
    row["sdpa_tflops"] = flops / (row["sdpa_ms"] * 1e-3) / 1e12
    if mask is not None:  # what SDPA takes at this size when it may use flash: the same call without the mask
        row["sdpa_nomask_ms"] = time_ms(lambda: F.scaled_dot_product_attention(q, k, v), reps)
        try:  # the backend SDPA picks for the masked call (its bool mask becomes an additive one first)
            additive = torch.zeros(mask.shape, dtype=dtype, device=dev).masked_fill_(~mask, float("-inf"))
            row["sdpa_backend"] = SDPBackend(torch._fused_sdp_choice(q, k, v, additive, 0.0, False)).name
        except Exception as exc:  # noqa: BLE001 - private API: informative only
            row["sdpa_backend"] = repr(exc)[:100]
    print(f"  {name}: sdpa {row['sdpa_ms']:.3f} ms", flush=True)
    for label, fn in variants.items():
        try:
            t_first = time.perf_counter()
            errs = check_errors(fn, q, k, v, mask)  # first call: compile / autotune
            row[f"{label}_first_call_s"] = time.perf_counter() - t_first
            row.update({f"{label}_{key}": val for key, val in errs.items()})
            if label == "two_pass":  # seconds per call at DiT sizes (thousands of chunks): the first call's time
                row["two_pass_ms"] = row["two_pass_first_call_s"] * 1e3  # (incl. the CHECK_ROWS reference)
            else:
                row[f"{label}_ms"] = time_ms(lambda fn=fn: fn(q, k, v), reps)
            row[f"{label}_over_sdpa"] = row[f"{label}_ms"] / row["sdpa_ms"]
            if "sdpa_nomask_ms" in row:
                row[f"{label}_over_sdpa_nomask"] = row[f"{label}_ms"] / row["sdpa_nomask_ms"]
            print(f"  {name}: {label} {row[f'{label}_ms']:.3f} ms (first call {row[f'{label}_first_call_s']:.1f} s)",
                  flush=True)
            row[f"{label}_tflops"] = flops / (row[f"{label}_ms"] * 1e-3) / 1e12
        except Exception as exc:  # noqa: BLE001 - one failing variant must not stop the table
            row[f"{label}_error"] = repr(exc)[:300]
        torch.cuda.empty_cache()
    if backends and mask is None:
        for label, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            row[f"sdpa_{label}_ms"] = sdpa_backend_ms(q, k, v, be, reps)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write results as JSON here")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", default=None, help="comma-separated shape names")
    ap.add_argument("--baseline", default=None, help="a frozen copy of the previous flash_entropy.py to time too")
    ap.add_argument("--skip", default="", help="comma-separated variants not to time (pointer, two_pass)")
    ap.add_argument(
        "--no-backends", action="store_true", help="skip timing SDPA's flash/cuDNN backends separately"
    )
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to benchmark", file=sys.stderr)
        return 1
    variants = {k: f for k, f in fused_variants(args.baseline).items() if k not in args.skip.split(",")}
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "timing": f"median of >= {args.reps} CUDA-event-timed calls after 4 warm-ups",
        "variants": list(variants),
    }
    rows = []
    for name, B, H, N, D, dtype in SHAPES:
        if args.only and name not in args.only.split(","):
            continue
        row = bench_shape(name, B, H, N, D, dtype, args.reps, variants, backends=not args.no_backends,
                          skip=args.skip.split(","))
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"meta": meta, "results": rows}, f, indent=2)
    head = f"{'shape':28s} {'sdpa ms':>9s}" + "".join(f" {v + ' ms':>11s} {'ratio':>6s}" for v in variants)
    print("\n" + head)
    for r in rows:
        cells = "".join(f" {r.get(v + '_ms', float('nan')):11.3f} {r.get(v + '_over_sdpa', float('nan')):6.2f}"
                        for v in variants)
        print(f"{r['name']:28s} {r['sdpa_ms']:9.3f}" + cells)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
