"""Where the tracing overhead goes (GPU): per-kind attribution, a torch.profiler table, per-shape kernel timings.

Uses the AnimateDiff case of ``bench_trace.py`` (SD 1.5 UNet + motion adapter v1-5-3 config, fp16,
16 × 512², CFG batch 2). Prints JSON lines and a profiler table; ``--out`` writes the JSON.

``--baseline-handlers FILE`` (an earlier ``core/handlers.py``, e.g. ``git show REV:ieadapt_interp/core/handlers.py``)
adds that version's StatsRecorder (with PyTorch's row reduction, as it ran) to the attribution, timed in the same
process; ``both_torch_norms`` is the current
recorder with PyTorch's row reduction instead of the Triton one (``IEADAPT_ROW_KERNEL=0``). The profile compares a
plain and a traced step: kernel launches per step and the ops whose GPU time grew most.

    python benchmarks/profile_trace.py --reps 10 --out profile.json [--baseline-handlers old_handlers.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_trace import _time, animatediff_case  # noqa: E402


def _median_ms(fn, reps: int = 20) -> float:
    """Median wall ms of ``fn`` on the GPU (``bench_trace._time``: warm-ups, synchronised)."""
    return _time(fn, reps)[0]


def sdpa_shapes(pipe_like, step) -> dict[tuple, int]:
    """Distinct ``(B, H, Nq, Nk, D)`` of the self-attention SDPA calls of one step, with their counts."""
    from ieadapt_interp import attention_layers
    from ieadapt_interp.core.interception import Interception

    names = [n for n, k in attention_layers(pipe_like)[["name", "kind"]].values if k != "cross"]
    ic = Interception(pipe_like, capture=names, record_branches=("all",))
    shapes: dict[tuple, int] = {}
    original = ic._on_sdpa

    def spy(query, key, value, *args, **kwargs):
        shape = (*query.shape[:3], key.shape[2], query.shape[3])
        shapes[shape] = shapes.get(shape, 0) + 1
        return original(query, key, value, *args, **kwargs)

    ic._on_sdpa = spy
    with torch.no_grad(), ic:
        step()
    return shapes


def kernel_table(shapes: dict[tuple, int]) -> list[dict]:
    """Per shape: native SDPA, fused kernel, SDPA + PyTorch row entropy (ms, medians)."""
    from ieadapt_interp.core.entropy import row_entropy
    from ieadapt_interp.core.kernels import flash_attention_with_entropy

    rows = []
    for (b, h, nq, nk, d), count in shapes.items():
        q = torch.randn(b, h, nq, d, device="cuda", dtype=torch.float16)
        k = torch.randn(b, h, nk, d, device="cuda", dtype=torch.float16)
        v = torch.randn_like(k)
        row = {"shape": [b, h, nq, nk, d], "calls_per_step": count}
        row["sdpa_ms"] = _median_ms(lambda: F.scaled_dot_product_attention(q, k, v))
        row["fused_ms"] = _median_ms(lambda: flash_attention_with_entropy(q, k, v))
        row["sdpa_plus_row_entropy_ms"] = _median_ms(
            lambda: (F.scaled_dot_product_attention(q, k, v), row_entropy(q, k))
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def load_recorder(path: str):
    """The ``StatsRecorder`` class of another ``core/handlers.py`` (loaded inside the package: same imports)."""
    spec = importlib.util.spec_from_file_location("ieadapt_interp.core._baseline_handlers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.StatsRecorder


def attribution(pipe_like, step, reps: int, warmup: int = 6, baseline=None) -> dict:
    """Step time with nothing / spatial only / temporal only / both captured (+ variants of the recorder for both)."""
    from ieadapt_interp import attention_layers
    from ieadapt_interp.core import interception
    from ieadapt_interp.core.interception import Interception

    table = attention_layers(pipe_like)
    both = list(table.loc[table["kind"] != "cross", "name"])
    out = {}

    def timed(label: str, names: list[str]) -> None:
        ic = Interception(pipe_like, capture=names, record_branches=("all",))
        with ic:
            out[f"{label}_ms"] = _time(step, reps, warmup)[0]
        ic.stats_calls.clear()

    with torch.no_grad():
        out["plain_ms"] = _time(step, reps, warmup)[0]
        for label, kinds in (("spatial", {"spatial"}), ("temporal", {"temporal"}), ("both", {"spatial", "temporal"})):
            timed(label, list(table.loc[table["kind"].isin(kinds), "name"]))
        timed("hooks_only", [])
        os.environ["IEADAPT_ROW_KERNEL"] = "0"
        try:
            timed("both_torch_norms", both)
        finally:
            os.environ.pop("IEADAPT_ROW_KERNEL")
        if baseline is not None:  # the earlier recorder as it ran: PyTorch's row reduction too
            current, interception.StatsRecorder = interception.StatsRecorder, baseline
            os.environ["IEADAPT_ROW_KERNEL"] = "0"
            try:
                timed("both_baseline_recorder", both)
            finally:
                interception.StatsRecorder = current
                os.environ.pop("IEADAPT_ROW_KERNEL")
    print(json.dumps(out), flush=True)
    return out


class _Clock:
    """Host (CPU) time spent inside wrapped callables: ``{label: [calls, seconds]}`` (inclusive; nesting counts twice)."""

    def __init__(self) -> None:
        self.totals: dict[str, list] = {}
        self.undo: list = []

    def wrap(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        entry = self.totals.setdefault(label, [0, 0.0])
        clock = time.perf_counter

        def timed(*args, **kwargs):
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                entry[0] += 1
                entry[1] += clock() - start

        own = vars(owner) if isinstance(owner, type) else getattr(owner, "__dict__", {})
        raw = own.get(attr)
        setattr(owner, attr, staticmethod(timed) if isinstance(raw, staticmethod) else timed)
        self.undo.append((owner, attr, raw))

    def restore(self) -> None:
        for owner, attr, original in reversed(self.undo):
            if original is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)
        self.undo.clear()

    def reset(self) -> None:
        for entry in self.totals.values():
            entry[0], entry[1] = 0, 0.0


def host_breakdown(pipe_like, step, reps: int = 5, warmup: int = 6) -> dict:
    """Host (CPU) µs per traced step and per attention call in each part of the per-call path, and the host time to
    enqueue a plain / traced step (``step()`` returns before the GPU finishes) against its wall time.

    Parts are timed by wrapping functions with ``time.perf_counter`` (inclusive: ``sdpa_hook`` contains the kernel
    wrapper and the recorder). Medians over ``reps`` steps after ``warmup``.
    """
    import statistics

    from ieadapt_interp import attention_layers
    from ieadapt_interp.core import handlers, interception, layouts
    from ieadapt_interp.core import kernels as kernels_pkg
    from ieadapt_interp.core.kernels import flash_entropy as fe
    from ieadapt_interp.core.kernels import row_energy as re_mod

    names = [n for n, k in attention_layers(pipe_like)[["name", "kind"]].values if k != "cross"]

    def enqueue_and_wall() -> tuple[float, float]:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        return (t1 - t0) * 1e3, (time.perf_counter() - t0) * 1e3

    out: dict = {}
    with torch.no_grad():
        for _ in range(warmup):
            step()
        plain = [enqueue_and_wall() for _ in range(reps)]
        out["plain_enqueue_ms"] = statistics.median(p[0] for p in plain)
        out["plain_wall_ms"] = statistics.median(p[1] for p in plain)
        ic = Interception_(pipe_like, names)
        with ic:
            for _ in range(warmup):
                step()
            traced = [enqueue_and_wall() for _ in range(reps)]
            out["traced_enqueue_ms"] = statistics.median(p[0] for p in traced)
            out["traced_wall_ms"] = statistics.median(p[1] for p in traced)
        ic.stats_calls.clear()
        # interleaved rounds (one plain step, one traced step with its histograms binned) against drift of the
        # machine; the interception's entry and exit are outside the timed steps
        rounds = {"plain": [], "traced": []}
        for _ in range(2 * reps):
            rounds["plain"].append(enqueue_and_wall()[1])
            with ic:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                ic.stats_calls  # noqa: B018 - bins the step's per-map histograms, as the next step would
                torch.cuda.synchronize()
                rounds["traced"].append((time.perf_counter() - t0) * 1e3)
        out["interleaved_ms"] = {k: statistics.median(v) for k, v in rounds.items()}
        out["interleaved_ratio"] = out["interleaved_ms"]["traced"] / out["interleaved_ms"]["plain"]
        out["interleaved_steps"] = rounds
        clock = _Clock()
        ic = Interception_(pipe_like, names)
        for attr in ("_on_enter", "_on_exit", "_on_sdpa", "_on_denoiser"):
            clock.wrap(ic, attr, attr.strip("_"))
        clock.wrap(interception, "_bind", "bind")
        clock.wrap(interception, "CallContext", "CallContext()")
        clock.wrap(interception._SDPASwap, "__enter__", "swap_enter")
        clock.wrap(interception._SDPASwap, "__exit__", "swap_exit")
        clock.wrap(interception, "sdpa_with_entropy", "sdpa_with_entropy")
        clock.wrap(kernels_pkg, "flash_attention_with_entropy", "flash_attention_with_entropy")
        clock.wrap(kernels_pkg, "fused_available", "fused_available")
        clock.wrap(fe, "_tma_ok", "tma_ok")
        clock.wrap(fe, "_launch_tma", "launch_tma")
        if hasattr(fe, "planned"):
            clock.wrap(fe, "planned", "kept_plan (flash)")
        if hasattr(fe, "CompiledLaunch"):
            clock.wrap(fe.CompiledLaunch, "__call__", "CompiledLaunch (flash + row)")
        clock.wrap(fe, "_key_bias", "key_bias")
        if fe._TensorDescriptor is not None:
            clock.wrap(fe, "_TensorDescriptor", "TensorDescriptor()")
        for label, jit in (("tma_autotuner.run", getattr(fe, "_fwd_tuned_tma", None)),
                           ("tma_jit.run", getattr(fe, "_fwd_kernel_tma", None)),
                           ("pointer_jit.run", getattr(fe, "_fwd_kernel", None)),
                           ("row_kernel_jit.run", getattr(re_mod, "_row_sumsq_kernel", None))):
            if jit is not None:
                clock.wrap(jit, "run", label)
        clock.wrap(handlers.StatsRecorder, "after", "recorder.after")
        clock.wrap(handlers.StatsRecorder, "_per_map", "recorder._per_map")
        clock.wrap(handlers.StatsRecorder, "_bin_pending", "recorder._bin_pending")
        clock.wrap(handlers, "row_energies", "row_energies")
        clock.wrap(handlers, "value_mean", "value_mean")
        clock.wrap(handlers, "row_squared_norms", "row_squared_norms")
        for cls in {type(layout) for layout in layouts.LAYOUTS.values()}:
            if "to_frames" in vars(cls):
                clock.wrap(cls, "to_frames", "layout.to_frames")
        clock.wrap(layouts.Layout, "per_map", "layout.per_map")
        try:
            with ic:
                for _ in range(2):
                    step()
                torch.cuda.synchronize()
                clock.reset()
                n_steps = reps
                t0 = time.perf_counter()
                for _ in range(n_steps):
                    step()
                host = (time.perf_counter() - t0) * 1e3 / n_steps
                torch.cuda.synchronize()
        finally:
            clock.restore()
        sdpa_calls = max(1, clock.totals["on_sdpa"][0] // n_steps)
        out["instrumented_enqueue_ms_per_step"] = host
        out["attention_calls_per_step"] = sdpa_calls
        out["parts"] = {label: {"calls_per_step": calls / n_steps, "us_per_step": sec * 1e6 / n_steps,
                                "us_per_attention_call": sec * 1e6 / n_steps / sdpa_calls}
                        for label, (calls, sec) in clock.totals.items()}
    print(json.dumps(out, indent=1), flush=True)
    return out


def Interception_(pipe_like, names):
    """The traced configuration of ``bench_trace.py``: stats on ``names``, every row recorded."""
    from ieadapt_interp.core.interception import Interception

    return Interception(pipe_like, capture=names, record_branches=("all",))


def _device_us(event) -> float:
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)


def _profile_step(step, ic=None):
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.no_grad():
        if ic is not None:
            ic.__enter__()
        try:
            step()
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=activities) as prof:
                step()
                torch.cuda.synchronize()
        finally:
            if ic is not None:
                ic.__exit__(None, None, None)
    return prof.key_averages()


LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC", "cuLaunchKernel")


def profile(pipe_like, step) -> dict:
    """Profiler tables of a traced step; launches per step and the aten ops whose GPU time grew, plain → traced."""
    from ieadapt_interp import attention_layers
    from ieadapt_interp.core.interception import Interception

    names = [n for n, k in attention_layers(pipe_like)[["name", "kind"]].values if k != "cross"]
    plain = _profile_step(step)
    traced = _profile_step(step, Interception(pipe_like, capture=names, record_branches=("all",)))
    launches = {label: sum(e.count for e in avg if e.key in LAUNCHES) for label, avg in (("plain", plain),
                                                                                          ("traced", traced))}
    before = {e.key: (e.count, _device_us(e)) for e in plain}
    grew = sorted(((e.key, e.count - before.get(e.key, (0, 0))[0], (_device_us(e) - before.get(e.key, (0, 0))[1]) / 1e3)
                   for e in traced if e.key.startswith("aten::")), key=lambda r: -r[2])[:20]
    table = "\n".join([traced.table(sort_by="self_cuda_time_total", row_limit=25),
                       traced.table(sort_by="self_cpu_time_total", row_limit=15)])
    return {"launches_per_step": launches,
            "device_ms_per_step": {"plain": sum(_device_us(e) for e in plain) / 1e3,
                                   "traced": sum(_device_us(e) for e in traced) / 1e3},
            "aten_ops_grown": [{"op": k, "extra_calls": c, "extra_device_ms": round(ms, 3)} for k, c, ms in grew],
            "table": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default=None)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--baseline-handlers", default=None, help="an earlier core/handlers.py to time alongside")
    parser.add_argument("--skip", nargs="*", default=[], choices=["attribution", "host", "kernels", "profile"])
    args = parser.parse_args()
    with torch.device("cuda"):
        pipe_like, step = animatediff_case("cuda")
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "gpu": torch.cuda.get_device_name(0),
              "torch": torch.__version__}

    def save() -> None:  # after every part: a run stopped at its limit keeps what finished
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))

    baseline = load_recorder(args.baseline_handlers) if args.baseline_handlers else None
    if "attribution" not in args.skip:
        result["attribution"] = attribution(pipe_like, step, args.reps, args.warmup, baseline)
        save()
    if "host" not in args.skip:
        result["host"] = host_breakdown(pipe_like, step, min(args.reps, 5), args.warmup)
        save()
    if "profile" not in args.skip:
        result["profile"] = profile(pipe_like, step)
        print(json.dumps({k: v for k, v in result["profile"].items() if k != "table"}, indent=1))
        print(result["profile"]["table"], flush=True)
        save()
    if "kernels" not in args.skip:
        result["kernels"] = kernel_table(sdpa_shapes(pipe_like, step))
        save()


if __name__ == "__main__":
    main()
