"""Findings check (the paper's §3.2–3.5 claims, issues 4 and 13) on a model, appended to benchmarks/RESULTS.md.

Perturbs spatial and temporal layers one at a time (and all temporal layers at once, and along λ) with I and U over
prompts × seeds, reads every baseline run's per-map entropy / energy statistics, tests each registered finding
(``ieadapt_interp.analysis.findings.FINDINGS``) with bootstrap intervals over the (prompt, seed) pairs and appends the
table, with date, machine, versions and settings, under ``## Findings check (issue 4)``.

    python benchmarks/findings.py --prompts 8 --seeds 42 43   # the embedded toy model, its default sampling
    python benchmarks/findings.py --prompts 2 --steps 10      # quicker
    python benchmarks/findings.py --model tiny-animatediff --frames 4 --size 16 --steps 2 --results /tmp/R.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HEADER = "## Findings check (issue 4)"
DEFAULT_PROMPTS = [
    "a red circle moving left on a white background",
    "a blue square moving right on a black background",
    "a green triangle moving up on a white background",
    "a yellow star staying still on a black background",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default="default",
        help="default (embedded toy model), tiny-animatediff, tiny-cogvideox or a local pipeline folder",
    )
    parser.add_argument(
        "--prompts",
        type=int,
        default=4,
        help="how many prompts (the toy's held-out captions when the toy model is used, else a fixed list)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--frames", type=int, default=None, help="default: the toy model's sampling settings")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="height = width in pixels")
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["spatial", "temporal", "joint"],
        help="layer kinds perturbed one layer at a time, among those the model has (all temporal layers are also "
        "perturbed at once)",
    )
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="default: findings.FINDINGS_METRICS (+ connectedness, the quality stand-in for 3e, on "
                        "the embedded model)")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--layers", nargs="+", default=None, help="restrict to these layer names")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    parser.add_argument(
        "--store", default=None, help="the sweep's store (default: runs/findings/<model>-<settings>.zarr); resumed"
    )
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from ieadapt_interp import findings
    from ieadapt_interp.models.specs import resolve_model

    if args.model == "default":
        from ieadapt_interp.models.toy import DEFAULT_SAMPLING, default_model_path, heldout_captions

        if not (default_model_path() / "model_index.json").is_file():
            print(
                f"The embedded toy model is not there yet ({default_model_path()}); nothing measured.",
                file=sys.stderr,
            )
            return 2
        sampling = dict(DEFAULT_SAMPLING)
        prompts = heldout_captions()[: args.prompts]
        metrics = (*findings.FINDINGS_METRICS, "connectedness")
    else:
        sampling = {
            "num_frames": 16,
            "height": 64,
            "width": 64,
            "num_inference_steps": 25,
            "guidance_scale": 5.0,
        }
        prompts = DEFAULT_PROMPTS[: args.prompts]
        metrics = findings.FINDINGS_METRICS
    metrics = tuple(args.metrics or metrics)
    overrides = {
        "num_frames": args.frames,
        "num_inference_steps": args.steps,
        "height": args.size,
        "width": args.size,
        "guidance_scale": args.guidance,
    }
    sampling.update({k: v for k, v in overrides.items() if v is not None})
    pipe = resolve_model(args.model)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe.to(device)
    tag = "-".join(f"{v}" for v in sampling.values())
    store = args.store or f"runs/findings/{Path(args.model).name}-{len(prompts)}p-{tag}.zarr"
    start = time.perf_counter()
    checks, table, _ = findings.run_findings_check(
        pipe,
        prompts,
        store=store,
        seeds=args.seeds,
        kinds=args.kinds,
        layers=args.layers,
        metrics=metrics,
        batch_size=args.batch,
        n_boot=args.n_boot,
        **sampling,
    )
    seconds = time.perf_counter() - start
    context = findings.run_context(
        pipe,
        model_name=args.model,
        prompts=len(prompts),
        seeds=args.seeds,
        kinds=" ".join(args.kinds),
        layers=" ".join(args.layers) if args.layers else "all of those kinds",
        metrics=" ".join(metrics),
        device=device,
        sampling=sampling,
        videos=int(table.sizes["perturbation"] * len(prompts) * len(args.seeds)),
        wall_clock=f"{seconds:.0f} s",
    )
    text = findings.findings_markdown(checks, context=context)
    results = Path(args.results)
    existing = results.read_text() if results.exists() else "# Benchmark results\n"
    section = (
        ""
        if HEADER in existing
        else f"\n{HEADER}\n\n`benchmarks/findings.py`; `holds` is what was measured "
        "on this model, not what the paper reports. Changes are perturbed − baseline, means over prompts × "
        "seeds.\n"
    )
    results.write_text(
        existing.rstrip("\n") + "\n" + section + f"\n### {context['date']} — {args.model}\n\n" + text
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
