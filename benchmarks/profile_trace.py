"""Where the tracing overhead goes (GPU): per-kind attribution, a torch.profiler table, per-shape kernel timings.

Uses the AnimateDiff case of ``bench_trace.py`` (SD 1.5 UNet + motion adapter v1-5-3 config, fp16,
16 × 512², CFG batch 2). Prints JSON lines and a profiler table; ``--out`` writes the JSON.

    python benchmarks/profile_trace.py --reps 10 --out profile.json
"""

from __future__ import annotations

import argparse
import json
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


def attribution(pipe_like, step, reps: int) -> dict:
    """Step time with nothing / spatial only / temporal only / both captured."""
    from ieadapt_interp import attention_layers
    from ieadapt_interp.core.interception import Interception

    table = attention_layers(pipe_like)
    out = {}
    with torch.no_grad():
        out["plain_ms"] = _time(step, reps)[0]
        for label, kinds in (("spatial", {"spatial"}), ("temporal", {"temporal"}), ("both", {"spatial", "temporal"})):
            names = list(table.loc[table["kind"].isin(kinds), "name"])
            ic = Interception(pipe_like, capture=names, record_branches=("all",))
            with ic:
                out[f"{label}_ms"] = _time(step, reps)[0]
            ic.stats_calls.clear()
        ic = Interception(pipe_like, capture=[], record_branches=("all",))
        with ic:
            out["hooks_only_ms"] = _time(step, reps)[0]
    print(json.dumps(out), flush=True)
    return out


def profile(pipe_like, step) -> str:
    from ieadapt_interp import attention_layers
    from ieadapt_interp.core.interception import Interception

    names = [n for n, k in attention_layers(pipe_like)[["name", "kind"]].values if k != "cross"]
    ic = Interception(pipe_like, capture=names, record_branches=("all",))
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.no_grad(), ic:
        step()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=activities) as prof:
            step()
            torch.cuda.synchronize()
    averages = prof.key_averages()
    return "\n".join(
        [
            averages.table(sort_by="self_cuda_time_total", row_limit=25),
            averages.table(sort_by="self_cpu_time_total", row_limit=15),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=["kernels", "profile"])
    args = parser.parse_args()
    with torch.device("cuda"):
        pipe_like, step = animatediff_case("cuda")
    result = {"date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    result["attribution"] = attribution(pipe_like, step, args.reps)
    if "kernels" not in args.skip:
        result["kernels"] = kernel_table(sdpa_shapes(pipe_like, step))
    if "profile" not in args.skip:
        result["profile"] = profile(pipe_like, step)
        print(result["profile"], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
