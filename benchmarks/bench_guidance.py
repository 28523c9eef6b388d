"""IE-Adapt quality guidance: speed and memory, the embedded model's registry, and the held-out check.

Three sub-commands (not timed tests; results go to benchmarks/RESULTS.md and benchmarks/results/):

``speed``
    ms per denoising step and peak memory of plain CFG (batch 2) vs guided ``(A, I)`` (3 rows) and
    ``(U, I)`` (4 rows), through :class:`~ieadapt_interp.methods.guidance.GuidedDenoiser` on the denoiser
    alone. On CUDA: the real-scale random-weight configs of ``bench_trace.py`` (AnimateDiff 16×512² fp16,
    CogVideoX-5B 49×480×720 bf16); on CPU: the embedded model at its default size (fp32, 16×64²).
    Transformers whose blocks run in sequence (CogVideoX) share the blocks before the perturbed one
    (prefix sharing), so the cost depends on where the perturbed layer is: ``--positions first middle last``
    times the guidance with the perturbed layer in the first, the middle and the last self-attention block
    (``first`` = no saving), ``--no-share`` the full extra rows. UNets are timed at their last self-attention
    layer only (no sharing).
``calibrate-toy``
    The embedded model's registry (``ieadapt_interp/models/toy/registry.json``): :func:`ia.calibrate` over
    :data:`TOY_CALIBRATION_PROMPTS` (training captions, none held out), seeds 0 and 1, DEFAULT_SAMPLING.
``heldout``
    Does any pair improve the held-out attribute accuracy over CFG alone? All 65 held-out captions × seeds,
    DEFAULT_SAMPLING, guidance on the registry's l*; one CSV row per (config, seed, caption).

    python benchmarks/bench_guidance.py speed --models animatediff cogvideox --out speed.json
    python benchmarks/bench_guidance.py calibrate-toy --device cuda --out registry.json
    python benchmarks/bench_guidance.py heldout --device cuda --registry registry.json --out heldout.csv
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Training captions of the embedded model (none is held out) used to calibrate its shipped registry.
TOY_CALIBRATION_PROMPTS = (
    "a red circle moving left on a white background",
    "a green square moving right on a white background",
    "a blue triangle moving up on a gray background",
    "a yellow square moving down on a white background",
    "a purple circle staying still on a white background",
    "a orange triangle moving right on a black background",
    "a red square moving up on a black background",
    "a green triangle staying still on a gray background",
)


# -- speed ------------------------------------------------------------------------------------------------
def _time(fn, reps: int, cuda: bool, warmup: int = 2) -> tuple[float, float]:
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    for _ in range(warmup):
        fn()
    sync()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return statistics.median(times), peak


def _toy_case(device: str):
    from types import SimpleNamespace

    from ieadapt_interp.models.toy import load_toy_pipeline

    pipe = load_toy_pipeline(device=device)
    frames = 16
    sample = torch.randn(2, 4, frames, 16, 16, device=device)
    text = torch.randn(2, 16, pipe.unet.config.cross_attention_dim, device=device).repeat_interleave(frames, 0)
    t = torch.tensor(500, device=device)
    return SimpleNamespace(unet=pipe.unet), lambda: pipe.unet(sample, t, encoder_hidden_states=text).sample


def _repeat_rows(factor: int):
    """A denoiser forward pre-hook that runs every batched tensor argument ``factor`` times (batch × factor)."""
    def hook(module, args, kwargs):
        batch = next(x for x in (*args, *kwargs.values()) if isinstance(x, torch.Tensor) and x.ndim >= 4).shape[0]
        grow = lambda x: x.repeat(factor, *([1] * (x.ndim - 1))) if (  # noqa: E731
            isinstance(x, torch.Tensor) and x.ndim >= 1 and x.shape[0] % batch == 0) else x
        return tuple(grow(a) for a in args), {k: grow(v) for k, v in kwargs.items()}
    return hook


def perturbed_positions(pipe_like, positions=("first", "middle", "last")) -> dict[str, str]:
    """``{"first": layer, …}``: the self-attention layer of the first / middle / last block that holds one
    (the adapter's ordered blocks); a UNet (no ordered blocks) gets only ``"last"``: its last self-attention layer.

    >>> import ieadapt_interp as ia
    >>> perturbed_positions(ia.tiny_pipeline("cogvideox"))
    {'first': 'transformer_blocks.0.attn1', 'middle': 'transformer_blocks.1.attn1', 'last': 'transformer_blocks.1.attn1'}
    """
    from ieadapt_interp import attention_layers
    from ieadapt_interp.core.adapters import denoiser, get_adapter

    table = attention_layers(pipe_like)
    names = list(table[table.kind != "cross"].name)
    blocks = [path for path, _ in get_adapter(pipe_like).block_list(denoiser(pipe_like))]
    if not blocks:
        return {"last": names[-1]}
    holding = [[n for n in names if n.startswith(b + ".")] for b in blocks]
    holding = [h[0] for h in holding if h]
    picks = {"first": holding[0], "middle": holding[len(holding) // 2], "last": holding[-1]}
    return {p: picks[p] for p in positions}


def bench_speed(name: str, reps: int, device: str, factors=(), guidance: bool = True,
                positions=("first", "middle", "last"), share: bool = True, warmup: int = 2) -> dict:
    from ieadapt_interp import Guidance, attention_layers
    from ieadapt_interp.core.interception import Interception
    from ieadapt_interp.methods.calibration import Registry, TOY_REGISTRY
    from ieadapt_interp.core.adapters import denoiser, get_adapter
    from ieadapt_interp.methods.guidance import GuidedDenoiser

    if name == "toy":
        pipe_like, step = _toy_case(device)
    else:
        from bench_trace import animatediff_case, cogvideox_case

        with torch.device(device):
            pipe_like, step = {"animatediff": animatediff_case, "cogvideox": cogvideox_case}[name](device)
    table = attention_layers(pipe_like)
    if name == "toy" and TOY_REGISTRY.is_file():
        layers = {"l*": Registry.load(TOY_REGISTRY).l_star}
    else:  # random weights: the layer's position (which block holds it) is what changes the cost
        layers = perturbed_positions(pipe_like, positions)
    blocks = [path for path, _ in get_adapter(pipe_like).block_list(denoiser(pipe_like))]
    cuda = device.startswith("cuda")
    result = {"model": name, "device": device, "reps": reps, "warmup": warmup, "share_prefix": share,
              "blocks": len(blocks), "self_attention_layers": int((table.kind != "cross").sum())}
    with torch.no_grad():
        result["plain_ms"], result["plain_peak_gib"] = _time(step, reps, cuda, warmup)
        for factor in factors:  # the plain denoiser at batch 2 × factor (rows repeated)
            model = next(m for m in vars(pipe_like).values() if isinstance(m, torch.nn.Module))
            handle = model.register_forward_pre_hook(_repeat_rows(factor), with_kwargs=True)
            try:
                ms, peak = _time(step, reps, cuda, warmup)
            finally:
                handle.remove()
            result[f"batch{2 * factor}_ms"], result[f"batch{2 * factor}_peak_gib"] = ms, peak
            result[f"batch{2 * factor}_over_batch2"] = ms / result["plain_ms"]
        result["positions"] = []
        for where, layer in layers.items() if guidance else ():
            block = next((i for i, b in enumerate(blocks) if layer.startswith(b + ".")), None)
            row = {"position": where, "layer": layer, "block": block}
            for pos, neg in (("A", "I"), ("U", "I")):
                g = Guidance(pos, neg, scale=2.0, layers=layer, share_prefix=share)
                key = f"{pos}{neg}"
                with Interception(pipe_like, g.handlers([layer])) as ic, \
                        GuidedDenoiser(pipe_like, g, ic, cfg=True, layers=[layer]) as run:
                    row[f"{key}_ms"], row[f"{key}_peak_gib"] = _time(step, reps, cuda, warmup)
                row[f"{key}_rows"] = run.batches[-1][1]
                row["shared_blocks"] = sum(run.shared_blocks.values())
                row[f"{key}_time_ratio"] = row[f"{key}_ms"] / result["plain_ms"]
                row[f"{key}_memory_ratio"] = row[f"{key}_peak_gib"] / result["plain_peak_gib"]
            print(json.dumps({"model": name, **row}), flush=True)
            result["positions"].append(row)
    print(json.dumps(result), flush=True)
    del pipe_like, step
    if cuda:
        torch.cuda.empty_cache()
    return result


# -- the embedded model ------------------------------------------------------------------------------------
def calibrate_toy(device: str, out: str | None, sampling: dict | None = None) -> None:
    import ieadapt_interp as ia
    from ieadapt_interp.methods.calibration import TOY_REGISTRY
    from ieadapt_interp.models.toy import DEFAULT_SAMPLING, heldout_captions, load_toy_pipeline

    assert not set(TOY_CALIBRATION_PROMPTS) & set(heldout_captions()), "calibration prompts must be training captions"
    pipe = load_toy_pipeline(device=device)
    start = time.perf_counter()
    registry = ia.calibrate(pipe, TOY_CALIBRATION_PROMPTS, seeds=(0, 1), **{**DEFAULT_SAMPLING, **(sampling or {})})
    path = registry.save(out or TOY_REGISTRY)
    print(json.dumps({"l_star": registry.l_star, "seconds": time.perf_counter() - start, "path": str(path)}))
    print(registry.table().to_string())


def heldout_configs(registry, scales=(1.0, 3.0)) -> dict:
    """``{"CFG": None, "(A,I) s=1": Guidance, …}``: the pairs on the registry's l* at each scale."""
    from ieadapt_interp import Guidance

    configs = {"CFG": None}
    for s in scales:
        for name in ("PAG", "UA", "UI"):
            g = Guidance.pair(name, scale=s, layers=registry)
            configs[g.label] = g
    return configs


def heldout(device: str, registry_path: str | None, seeds: list[int], scales: list[float], out: str,
            sampling: dict | None = None, limit: int | None = None) -> None:
    import pandas as pd

    from ieadapt_interp.methods.calibration import TOY_REGISTRY, Registry
    from ieadapt_interp.methods.guidance import guiding
    from ieadapt_interp.models.toy import DEFAULT_SAMPLING, heldout_captions, load_toy_pipeline
    from ieadapt_interp.models.toy.attributes import check_clip

    pipe = load_toy_pipeline(device=device)
    pipe.set_progress_bar_config(disable=True)
    registry = Registry.load(registry_path or TOY_REGISTRY)
    registry.check(pipe)
    captions = heldout_captions()[:limit]
    sampling = {**DEFAULT_SAMPLING, **(sampling or {})}
    rows = []
    for label, g in heldout_configs(registry, scales).items():
        for seed in seeds:
            start = time.perf_counter()
            gens = [torch.Generator("cpu").manual_seed(seed) for _ in captions]
            with torch.no_grad():
                if g is None:
                    clips = pipe(captions, generator=gens, output_type="np", **sampling).frames
                else:
                    with guiding(pipe, g):
                        clips = pipe(captions, generator=gens, output_type="np", **sampling).frames
            seconds = time.perf_counter() - start
            for caption, clip in zip(captions, clips):
                rows.append({"config": label, "seed": seed, "caption": caption, **check_clip(clip, caption)})
            print(f"{label} seed {seed}: {seconds:.1f} s", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out, index=False)
    summary = df.groupby("config", sort=False)[["colour_ok", "shape_ok", "motion_ok", "one_blob_frac"]].mean()
    print((100 * summary).round(1).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--models", nargs="*", default=["animatediff", "cogvideox"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", default=None)
    p.add_argument("--batch-factors", type=int, nargs="*", default=[],
                   help="also time the plain denoiser at batch 2 × each factor (e.g. 2 → batch 4)")
    p.add_argument("--no-guidance", action="store_true", help="skip the (A,I) / (U,I) timings")
    p.add_argument("--positions", nargs="*", default=["first", "middle", "last"],
                   help="where the perturbed layer is (transformers with ordered blocks): first / middle / last block")
    p.add_argument("--no-share", action="store_true", help="turn prefix sharing off (Guidance(share_prefix=False))")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before each timed configuration")
    p = sub.add_parser("calibrate-toy")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None)
    p.add_argument("--sampling", default="{}", help="JSON overrides of DEFAULT_SAMPLING (a smoke test)")
    p = sub.add_parser("heldout")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--registry", default=None)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    p.add_argument("--scales", type=float, nargs="*", default=[1.0, 3.0])
    p.add_argument("--out", default="heldout.csv")
    p.add_argument("--limit", type=int, default=None, help="only the first N captions (a smoke test)")
    p.add_argument("--sampling", default="{}", help="JSON overrides of DEFAULT_SAMPLING (a smoke test)")
    args = parser.parse_args()
    if args.command == "speed":
        import diffusers

        info = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(0) if args.device.startswith(
            "cuda") else f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__,
            "diffusers": diffusers.__version__}
        print(json.dumps(info), flush=True)
        results = [bench_speed(name, args.reps, args.device, args.batch_factors, not args.no_guidance,
                               args.positions, not args.no_share, args.warmup) for name in args.models]
        if args.out:
            Path(args.out).write_text(json.dumps({"info": info, "results": results}, indent=1))
    elif args.command == "calibrate-toy":
        calibrate_toy(args.device, args.out, json.loads(args.sampling))
    else:
        heldout(args.device, args.registry, args.seeds, args.scales, args.out, json.loads(args.sampling), args.limit)


if __name__ == "__main__":
    main()
