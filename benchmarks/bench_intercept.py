"""Host cost of catching SDPA: attribute swap (default) vs TorchFunctionMode (``IEADAPT_INTERCEPT=mode``), CPU.

Times one denoiser forward (one step, CFG batch 2) plain and inside an :class:`Interception` whose only handler
is a no-op on every attention layer, so the difference is the interception itself (hooks, context, the catch).
Per attention call = (intercepted − plain) / SDPA calls per step; entering the ``with`` block is not timed. Median of ``--reps`` after 2 warm-ups; the
three variants are interleaved per rep so load drifts hit them alike.

    python benchmarks/bench_intercept.py --reps 15 --out results/intercept_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch


def _denoiser_inputs(pipe, **kw):
    """``(args, kwargs)`` of the denoiser's first call in one generation of ``pipe``."""
    seen = {}
    den = pipe.unet

    def grab(module, args, kwargs):
        seen.setdefault("call", (args, dict(kwargs)))

    h = den.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            pipe("a red circle", num_inference_steps=1, output_type="latent", **kw)
    finally:
        h.remove()
    return seen["call"]


def measure(pipe, label: str, reps: int, **kw) -> dict:
    from ieadapt_interp import attention_layers
    from ieadapt_interp.core.handlers import AttentionHandler
    from ieadapt_interp.core.interception import Interception

    class Noop(AttentionHandler):
        name = "noop"

    names = list(attention_layers(pipe).name)
    noop = Noop()
    noop.layer_names = set(names)
    args, kwargs = _denoiser_inputs(pipe, **kw)
    den = pipe.unet
    counter = {"n": 0}

    def count(*a, **k):
        counter["n"] += 1

    probe = Interception(pipe, [noop])
    probe._on_sdpa = lambda *a, _o=probe._on_sdpa, **k: (count(), _o(*a, **k))[1]
    with torch.no_grad(), probe:
        den(*args, **kwargs)
    calls = counter["n"]

    def timed() -> float:
        t0 = time.perf_counter()
        den(*args, **kwargs)
        return (time.perf_counter() - t0) * 1e3

    times = {k: [] for k in ("plain", "swap", "mode")}
    with torch.no_grad():
        for rep in range(reps + 2):
            for key, kept in times.items():
                if key == "plain":
                    ms = timed()
                else:  # entering/leaving the interception (once per generation) is not timed
                    os.environ["IEADAPT_INTERCEPT"] = key
                    with Interception(pipe, [noop]):
                        ms = timed()
                if rep >= 2:
                    kept.append(ms)
    os.environ.pop("IEADAPT_INTERCEPT", None)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {"model": label, "sdpa_calls_per_step": calls, "layers": len(names),
           **{f"{k}_ms_per_step": round(v, 3) for k, v in med.items()}}
    for how in ("swap", "mode"):
        over = med[how] - med["plain"]
        row[f"{how}_overhead_ms_per_step"] = round(over, 3)
        row[f"{how}_overhead_us_per_call"] = round(over / calls * 1e3, 1)
        row[f"{how}_over_plain"] = round(med[how] / med["plain"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--out", default=None)
    a = parser.parse_args()
    import diffusers

    import ieadapt_interp as ia

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = []
    embedded = ia.load_pipeline()
    rows.append(measure(embedded, "embedded (load_pipeline()), 4 f × 32²", a.reps, num_frames=4, height=32, width=32))
    tiny = ia.load_pipeline("tiny:animatediff")
    rows.append(measure(tiny, "tiny:animatediff, 4 f × 16²", a.reps, num_frames=4, height=16, width=16))
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "threads": 1, "torch": torch.__version__,
            "diffusers": diffusers.__version__, "load_avg_before": load_before, "reps": a.reps}
    for row in rows:
        print(json.dumps(row))
    meta["load_avg_after"] = os.getloadavg()
    print(json.dumps(meta))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
