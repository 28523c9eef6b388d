"""Probe: where a traced Wan-14B-width forward loses time outside the GPU kernels (idle gaps on the GPU timeline).

Builds the Wan 2.1-14B configuration with ``--layers`` blocks (720p, 81 frames: 75 600 tokens, bf16), then
  1. times plain and traced forwards interleaved (``--reps`` rounds; CUDA events around each forward);
  2. profiles one plain and one traced forward and reports, from the kernel timeline, the summed kernel time, the
     wall span and every idle gap above 50 µs with the kernels around it;
  3. runs one traced forward under ``torch.cuda.set_sync_debug_mode("warn")`` and keeps each synchronising call's
     stack (the host waiting on the GPU, which leaves the GPU idle while the host catches up).

    python benchmarks/probe_gaps.py --layers 2 --out gaps.json       # H200
    python benchmarks/probe_gaps.py --tiny                           # CPU: the plumbing
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


def _forward_ms(fn) -> float:
    if not torch.cuda.is_available():
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b)


def _timeline(fn) -> dict:
    """Kernel time, span and idle gaps (> 50 µs) of one call of ``fn`` on the GPU."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = sorted(((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                      if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start),
                     key=lambda x: x[0])
    if not kernels:
        return {}
    busy, gaps, end = 0.0, [], kernels[0][0]
    prev = None
    for start, stop, name in kernels:
        if start - end > 50:
            gaps.append({"gap_us": round(start - end, 1), "after": (prev or "")[:80], "before": name[:80]})
        busy += stop - max(start, end) if stop > end else 0.0
        if stop > end:
            end, prev = stop, name
    span = kernels[-1][1] - kernels[0][0]
    return {"kernels": len(kernels), "busy_ms": round(busy / 1e3, 3), "span_ms": round(span / 1e3, 3),
            "idle_ms": round((span - busy) / 1e3, 3), "gaps": sorted(gaps, key=lambda g: -g["gap_us"])[:25]}


def _kernel_totals(fn) -> dict:
    """GPU ms per kernel name of one call of ``fn``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    totals = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start:
            totals[e.name[:70]] = totals.get(e.name[:70], 0.0) + (e.time_range.end - e.time_range.start) / 1e3
    return totals


def kernel_diff(plain, traced, rounds: int) -> list[dict]:
    """Per kernel name: median over ``rounds`` alternated profiled forwards of its summed GPU ms, plain vs traced;
    the names whose medians differ by more than 0.05 ms, largest difference first."""
    runs = {"plain": [], "traced": []}
    for _ in range(rounds):
        runs["plain"].append(_kernel_totals(plain))
        runs["traced"].append(_kernel_totals(traced))
    names = set().union(*runs["plain"], *runs["traced"])
    med = {kind: {n: statistics.median(r.get(n, 0.0) for r in rs) for n in names} for kind, rs in runs.items()}
    rows = [{"kernel": n, "plain_ms": round(med["plain"][n], 3), "traced_ms": round(med["traced"][n], 3),
             "diff_ms": round(med["traced"][n] - med["plain"][n], 3)} for n in names]
    rows = [r for r in rows if abs(r["diff_ms"]) > 0.05]
    total = {kind: round(statistics.median(sum(r.values()) for r in rs), 3) for kind, rs in runs.items()}
    return [{"total_busy_ms": total}] + sorted(rows, key=lambda r: -abs(r["diff_ms"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--out", default=None)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--kernels", type=int, default=0, help="rounds of per-kernel profiles (0: none)")
    parser.add_argument("--no-timeline", action="store_true", help="skip the timeline and sync parts")
    args = parser.parse_args()
    from bench_trace import _wan_case

    from ieadapt_interp import attention_layers
    from ieadapt_interp.core.interception import Interception

    dev = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    with torch.device(dev):
        pipe_like, step = (_wan_case(dev, 2, 64, args.layers, 32, 48, forwards=1, head_dim=16) if args.tiny
                           else _wan_case(dev, 40, 13824, args.layers, 720, 1280, forwards=1))
    names = [n for n, kd in attention_layers(pipe_like)[["name", "kind"]].values if kd != "cross"]
    ic = Interception(pipe_like, capture=names, record_branches=("all",))

    def traced():
        with ic:
            step()

    res = {"layers": args.layers, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with torch.no_grad():
        for _ in range(2):  # warm-ups (autotuning, plans)
            step()
            traced()
        plain_ms, traced_ms = [], []
        for _ in range(args.reps):
            plain_ms.append(_forward_ms(step))
            traced_ms.append(_forward_ms(traced))
        res.update(plain_ms=plain_ms, traced_ms=traced_ms, ratio=statistics.median(traced_ms) /
                   statistics.median(plain_ms))
        print(json.dumps(res), flush=True)
        if dev == "cuda" and args.kernels:
            res["kernel_diff"] = kernel_diff(step, traced, args.kernels)
            print(json.dumps(res["kernel_diff"]), flush=True)
        if dev == "cuda" and not args.no_timeline:
            res["timeline_plain"] = _timeline(step)
            res["timeline_traced"] = _timeline(traced)
            print(json.dumps({k: res[k] for k in ("timeline_plain", "timeline_traced")}), flush=True)
            syncs = []
            original = warnings.showwarning

            def keep(message, category, filename, lineno, file=None, line=None):
                frames = [f for f in traceback.extract_stack()[:-1] if "warnings" not in f.filename]
                where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in frames[::-1][:7])
                syncs.append(f"{str(message)[:80]} @ {where}")

            warnings.showwarning = keep
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                traced()
            finally:
                torch.cuda.set_sync_debug_mode(0)
                warnings.showwarning = original
            res["sync_count"] = len(syncs)
            res["syncs"] = syncs[:30]
            print(json.dumps({k: res.get(k) for k in ("sync_count", "syncs")}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
