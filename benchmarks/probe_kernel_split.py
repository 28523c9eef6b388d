"""Probe: the fused kernel with head dim 40 split into 32 + 16 slabs (instead of padding to 64), per launch config.

Each config runs in its own subprocess (an illegal memory access poisons the CUDA context) and reports ok / the
error, the max error against PyTorch SDPA and the median ms. Diagnostic for the workaround in
``ieadapt_interp.core.kernels.flash_entropy._split_head_dim``; not used by the package.

    python benchmarks/probe_kernel_split.py --out probe.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys

#: head dim 40 = 32 + 16 with the second slab masked (cols 40..47); 48 = 32 + 16 with no mask at all
SHAPES = [(4, 8, 2000, 2000, 40), (4, 8, 2000, 2000, 48)]  # both big enough for the autotuned launch path


def run_one(shape, da, db, bm, bn, warps, stages) -> dict:
    import os

    import torch
    import torch.nn.functional as F
    from bench_trace import _time

    from ieadapt_interp.core.kernels import flash_entropy as fe

    os.environ["IEADAPT_KERNEL"] = "pointer"  # the probe is about the pointer kernel's slabs, not the TMA path
    cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages}
    fe._split_head_dim = lambda d: (da, db)
    fe._pick_config = lambda *a, **k: dict(cfg)

    class Fixed:  # stands in for the autotuned kernels: one fixed config
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                compiled = fe._fwd_kernel[grid(cfg)](*args, **kwargs,
                                                     **{k: cfg[k] for k in ("BLOCK_M", "BLOCK_N")},
                                                     num_warps=warps, num_stages=stages)
                asm_dir = os.environ.get("PROBE_ASM_DIR")
                if asm_dir and compiled is not None:  # keep the IR of this launch (written before any sync)
                    tag = f"d{shape[4]}_{da}+{db}_m{bm}n{bn}w{warps}s{stages}"
                    for kind in ("ttgir", "ptx"):
                        with open(os.path.join(asm_dir, f"{tag}.{kind}"), "w") as fh:
                            fh.write(compiled.asm.get(kind, ""))
                return compiled
            return launch

    fe._fwd_tuned = fe._fwd_tuned_two_slab = Fixed()
    b, h, nq, nk, d = shape
    gen = torch.Generator("cuda").manual_seed(0)
    q = torch.randn(b, h, nq, d, device="cuda", dtype=torch.float16, generator=gen)
    k = torch.randn(b, h, nk, d, device="cuda", dtype=torch.float16, generator=gen)
    v = torch.randn(b, h, nk, d, device="cuda", dtype=torch.float16, generator=gen)
    out, ent = fe.flash_attention_with_entropy(q, k, v)
    torch.cuda.synchronize()
    ref = F.scaled_dot_product_attention(q, k, v)
    err = float((out.float() - ref.float()).abs().max())
    ms = _time(lambda: fe.flash_attention_with_entropy(q, k, v), 10)[0]
    return {"max_abs_err": err, "entropy_finite": bool(torch.isfinite(ent).all()), "ms": ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    parser.add_argument("--dims", default=None, help="comma-separated head dims to probe (default: all)")
    parser.add_argument("--block-n", type=int, default=None, help="probe only this BLOCK_N")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*json.loads(args.one))))
        return
    rows = []
    grid = [(64, 0, 128, 64, 8, 3)] + [
        (32, 16, bm, bn, w, s)
        for bm, bn, (w, s) in itertools.product((64, 128), (32, 64), ((4, 2), (8, 3)))
    ]
    for shape in SHAPES:
        for da, db, bm, bn, warps, stages in grid:
            if shape[2] <= 64 and bm > 64:
                continue
            if (args.dims and str(shape[4]) not in args.dims.split(",")) or (args.block_n and bn != args.block_n):
                continue
            spec = [list(shape), da, db, bm, bn, warps, stages]
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, check=False,
                                  text=True, timeout=300)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            row = {"shape": shape, "DA": da, "DB": db, "BLOCK_M": bm, "BLOCK_N": bn, "warps": warps,
                   "stages": stages}
            if proc.returncode == 0 and lines:
                row.update(json.loads(lines[-1]), status="ok")
            else:
                tail = [ln for ln in proc.stderr.splitlines() if "illegal" in ln.lower()] or [
                    ln for ln in proc.stderr.splitlines() if "error" in ln.lower()
                ]
                row.update(status="failed", error=(tail[-1] if tail else proc.stderr[-200:])[:200])
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
