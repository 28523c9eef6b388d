"""Benchmark: one denoising step with CFG, plain vs traced (entropy on every self-attention layer).

Real-scale random weights (no downloads): AnimateDiff = SD 1.5 UNet config + motion adapter v1-5-3
config (no mid-block motion module), fp16, 512×512, 16 frames; CogVideoX-5B config, bf16, 49 frames,
480×720 (sequence 17 776 with text); Wan 2.1-1.3B config, bf16, 81 frames 480×832 (32 760 tokens, two batch-1
forwards per CFG step), Wan 2.1-14B config, 720p (75 600 tokens, one forward) and HunyuanVideo (13B config, 720p
129 frames: 119 056 tokens with a boolean text-padding key mask, one forward). Prints and writes JSON: ms/step (median), traced/plain ratio,
peak memory.

    python benchmarks/bench_trace.py --out results.json [--models animatediff cogvideox wan13b wan14b] [--reps 10]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from types import SimpleNamespace

import torch


def animatediff_case(device: str):
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
        attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    adapter = MotionAdapter(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                            motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32,
                            use_motion_mid_block=False)
    model = UNetMotionModel.from_unet2d(unet, adapter).to(device, torch.float16).eval().requires_grad_(False)
    frames = 16
    sample = torch.randn(2, 4, frames, 64, 64, device=device, dtype=torch.float16)
    text = torch.randn(2, 77, 768, device=device, dtype=torch.float16).repeat_interleave(frames, 0)
    # a new timestep each call, as in a run: the interception counts a new step, so the recorder bins the previous
    # step's per-map histograms (with one fixed timestep every call was "step 0" and binning never ran)
    timesteps = itertools.cycle([torch.tensor(981 - 20 * i, device=device) for i in range(50)])
    return SimpleNamespace(unet=model), lambda: model(sample, next(timesteps), encoder_hidden_states=text).sample


def cogvideox_case(device: str):
    from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

    model = CogVideoXTransformer3DModel(
        num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=512,
        text_embed_dim=4096, num_layers=42, sample_width=90, sample_height=60, sample_frames=49, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=226, use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False, norm_eps=1e-5, activation_fn="gelu-approximate",
        timestep_activation_fn="silu", flip_sin_to_cos=True, freq_shift=0, attention_bias=True,
        spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0,
    ).to(device, torch.bfloat16).eval().requires_grad_(False)
    fake = SimpleNamespace(transformer=model, vae_scale_factor_spatial=8)
    rope = CogVideoXPipeline._prepare_rotary_positional_embeddings(fake, 480, 720, 13, torch.device(device))
    sample = torch.randn(2, 13, 16, 60, 90, device=device, dtype=torch.bfloat16)
    text = torch.randn(2, 226, 4096, device=device, dtype=torch.bfloat16)
    t = torch.tensor([500, 500], device=device)
    run = lambda: model(hidden_states=sample, encoder_hidden_states=text, timestep=t,
                        image_rotary_emb=rope).sample
    return SimpleNamespace(transformer=model), run


def _new_timesteps(device: str):
    """A new timestep ``[1]`` for every step, as in a run: the interception then counts steps, so the recorder bins
    each step's per-map histograms inside the timed steps (one fixed timestep would leave all binning to the end)."""
    return itertools.cycle([torch.tensor([981 - 20 * i], device=device) for i in range(50)])


def _wan_case(device: str, heads: int, ffn: int, layers: int, height: int, width: int, forwards: int,
              head_dim: int = 128):
    """Wan 2.1 T2V transformer at real size, bf16, 81 frames (21 latent frames); one CFG step = ``forwards``
    batch-1 forwards (WanPipeline runs the conditional and unconditional branches as separate calls)."""
    from diffusers import WanTransformer3DModel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build the weights in bf16 directly (no fp32 copy of a 14B model)
    try:
        model = WanTransformer3DModel(num_attention_heads=heads, attention_head_dim=head_dim, ffn_dim=ffn,
                                      num_layers=layers).to(device, torch.bfloat16).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(previous)
    sample = torch.randn(1, 16, 21, height // 8, width // 8, device=device, dtype=torch.bfloat16)
    texts = [torch.randn(1, 512, 4096, device=device, dtype=torch.bfloat16) for _ in range(forwards)]
    timesteps = _new_timesteps(device)

    def run():
        t = next(timesteps)  # one step: its forwards share the timestep
        return [model(hidden_states=sample, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
                for text in texts]

    return SimpleNamespace(transformer=model, transformer_2=None), run


def wan13b_case(device: str):
    """Wan 2.1-1.3B: 12 heads × 128, 30 layers, 480×832 → 32 760 video tokens; one CFG step (2 forwards)."""
    return _wan_case(device, 12, 8960, 30, 480, 832, forwards=2)


def wan14b_case(device: str):
    """Wan 2.1-14B: 40 heads × 128, 40 layers, 720×1280 → 75 600 video tokens; ONE forward (half a CFG step:
    the other forward is the same computation, so the traced/plain ratio is the step's)."""
    return _wan_case(device, 40, 13824, 40, 720, 1280, forwards=1)


def _hunyuan_case(device: str, frames: int, height: int, width: int, text_valid: int = 64, **config):
    """HunyuanVideo transformer (diffusers' defaults = the released 13B config: 20 dual-stream + 40 single-stream
    blocks, 24 heads x 128), bf16, built in bf16 directly; ONE batch-1 forward per step (the pipeline's guidance is
    distilled into the transformer: no CFG rows). 256 text tokens of which ``text_valid`` are real, so every
    attention call gets the boolean key mask ``[1, 1, 1, N]`` that the fused kernel now takes."""
    from diffusers import HunyuanVideoTransformer3DModel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = HunyuanVideoTransformer3DModel(**config).to(device, torch.bfloat16).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(previous)
    cfg = model.config
    latent_frames = (frames - 1) // 4 + 1
    sample = torch.randn(1, cfg.in_channels, latent_frames, height // 8, width // 8, device=device,
                         dtype=torch.bfloat16)
    text = torch.randn(1, 256, cfg.text_embed_dim, device=device, dtype=torch.bfloat16)
    text_mask = torch.zeros(1, 256, device=device, dtype=torch.bool)
    text_mask[:, :text_valid] = True
    pooled = torch.randn(1, cfg.pooled_projection_dim, device=device, dtype=torch.bfloat16)
    timesteps = _new_timesteps(device)
    guidance = torch.tensor([6000.0], device=device, dtype=torch.bfloat16)

    def run():
        return model(hidden_states=sample, timestep=next(timesteps), encoder_hidden_states=text, encoder_attention_mask=text_mask,
                     pooled_projections=pooled, guidance=guidance, return_dict=False)[0]

    return SimpleNamespace(transformer=model), run


def hunyuan_case(device: str):
    """HunyuanVideo 720×1280, 129 frames → 33 latent frames × 45 × 80 = 118 800 video + 256 text tokens."""
    return _hunyuan_case(device, 129, 720, 1280)


def hunyuan65_case(device: str):
    """HunyuanVideo 720×1280, 65 frames (17 latent frames: 61 200 video + 256 text tokens): the fallback when 129
    frames do not fit the time budget."""
    return _hunyuan_case(device, 65, 720, 1280)


#: ``--tiny``: the big cases at toy size (CPU), to check the plumbing before a GPU call; the numbers mean nothing.
_HY_TINY = {"num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 2, "num_single_layers": 2,
            "num_refiner_layers": 1, "text_embed_dim": 32, "pooled_projection_dim": 16, "rope_axes_dim": (4, 6, 6)}
TINY = {"wan14b": lambda device: _wan_case(device, 2, 64, 2, 32, 48, forwards=1, head_dim=16),
        "hunyuan": lambda device: _hunyuan_case(device, 9, 32, 48, **_HY_TINY),
        "hunyuan65": lambda device: _hunyuan_case(device, 5, 32, 48, **_HY_TINY)}

CASES = {"animatediff": animatediff_case, "cogvideox": cogvideox_case, "wan13b": wan13b_case,
         "wan14b": wan14b_case, "hunyuan": hunyuan_case, "hunyuan65": hunyuan65_case}
#: Cases whose one step takes seconds: --reps-big reps after one warm-up step.
BIG = ("wan14b", "hunyuan", "hunyuan65")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time(fn, reps: int, warmup: int = 2, log: str | None = None) -> tuple[float, float]:
    """Median ms of ``reps`` steps after ``warmup`` and the peak GiB over the timed steps. ``log``: print every step's
    seconds (warm-ups too) as it ends, labelled so, for steps that take tens of seconds (a run stopped at its
    limit keeps them)."""
    _sync()
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        _sync()
        if log:
            print(f"  {log} warm-up {i + 1}/{warmup}: {time.perf_counter() - start:.2f} s", flush=True)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(reps):
        start = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - start) * 1e3)
        if log:
            print(f"  {log} step {i + 1}/{reps}: {times[-1] / 1e3:.2f} s", flush=True)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return statistics.median(times), peak


def _time_interleaved(plain, traced, rounds: int, log: str | None = None) -> dict:
    """Plain and traced steps alternated (``rounds`` pairs after one warm-up pair), each step timed on its own, and
    the peak GiB of each kind. For the big cases: a forward of seconds at full power heats the GPU and its clocks
    drift over a run, so timing all plain steps first and all traced steps after would bias the ratio; alternating
    gives both kinds the same conditions, and each round's own ratio shows the spread."""
    times = {"plain": [], "traced": []}
    peaks = {"plain": 0.0, "traced": 0.0} if torch.cuda.is_available() else {"plain": math.nan, "traced": math.nan}
    for i in range(rounds + 1):
        for kind, fn in (("plain", plain), ("traced", traced)):
            _sync()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            fn()
            _sync()
            seconds = time.perf_counter() - start
            if torch.cuda.is_available():
                peaks[kind] = max(peaks[kind], torch.cuda.max_memory_allocated() / 2**30)
            if i:
                times[kind].append(seconds * 1e3)
            if log:
                print(f"  {log} {'warm-up' if not i else f'round {i}/{rounds}'} {kind}: {seconds:.2f} s", flush=True)
    return {"plain_ms": statistics.median(times["plain"]), "traced_ms": statistics.median(times["traced"]),
            "round_ratios": [t / p for p, t in zip(times["plain"], times["traced"])],
            "plain_peak_gib": peaks["plain"], "traced_peak_gib": peaks["traced"]}


def bench(name: str, reps: int, warmup: int = 2, fold_count: bool = False, log: bool = False,
          tiny: bool = False, interleave: bool = False) -> dict:
    """One model's plain and traced ms/step and peak memory. ``fold_count``: count the recorded calls per step
    from the timed traced steps (all of them record the same calls) instead of one more traced step; ``log``: print
    each step as it ends; ``tiny``: the toy-size case on the CPU (:data:`TINY`); ``interleave``: alternate plain and
    traced steps (``reps`` rounds after one warm-up round, :func:`_time_interleaved`) instead of timing all plain
    steps, then all traced steps."""
    from ieadapt_interp import attention_layers
    from ieadapt_interp.core.interception import Interception

    device = "cpu" if tiny else "cuda"
    t0 = time.perf_counter()
    with torch.device(device):  # initialise the random weights on the GPU (fast)
        pipe_like, step = (TINY[name] if tiny else CASES[name])(device)
    if log:
        print(f"  {name} built in {time.perf_counter() - t0:.1f} s", flush=True)
    self_attention = [n for n, k in attention_layers(pipe_like)[["name", "kind"]].values if k != "cross"]
    with torch.no_grad():
        ic = Interception(pipe_like, capture=self_attention, record_branches=("all",))
        extra = {}
        if interleave:
            def traced():
                with ic:
                    step()

            extra = _time_interleaved(step, traced, reps, log=log and name)
            plain_ms, traced_ms = extra.pop("plain_ms"), extra.pop("traced_ms")
            plain_gib, traced_gib = extra.pop("plain_peak_gib"), extra.pop("traced_peak_gib")
            n_steps = 1  # entering the interception starts its records over: the last traced step's
        else:
            plain_ms, plain_gib = _time(step, reps, warmup, log=log and f"{name} plain")
            with ic:
                traced_ms, traced_gib = _time(step, reps, warmup, log=log and f"{name} traced")
            n_steps = warmup + reps
        if fold_count:
            n_calls = len(ic.stats_calls) / n_steps
        else:
            ic.stats_calls.clear()
            with ic:
                step()
            n_calls = len(ic.stats_calls)
    result = {"model": name, "plain_ms": plain_ms, "traced_ms": traced_ms, "ratio": traced_ms / plain_ms,
              "plain_peak_gib": plain_gib, "traced_peak_gib": traced_gib, "memory_ratio": traced_gib / plain_gib,
              "layers_captured": len(self_attention), "calls_recorded_per_step": n_calls, "reps": reps,
              "warmup": 1 if interleave else warmup, "interleaved": interleave, **extra}
    print(json.dumps(result), flush=True)
    del pipe_like, step
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["animatediff", "cogvideox", "wan13b", "wan14b"],
                        choices=sorted(CASES))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=6, help="warm-up steps; ≥ 6 so the TMA kernel has autotuned every shape")
    parser.add_argument("--reps-big", type=int, default=3, help="reps for wan14b (one forward takes seconds)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--sequential", action="store_true",
                        help="big cases: all plain steps, then all traced steps (as before 2026-12-02) instead of "
                             "alternating them")
    parser.add_argument("--tiny", action="store_true",
                        help="the big cases at toy size on the CPU (checks the plumbing; numbers mean nothing)")
    args = parser.parse_args()
    import diffusers
    import triton

    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "gpu": "cpu (--tiny)" if args.tiny else torch.cuda.get_device_name(0), "torch": torch.__version__,
            "triton": triton.__version__, "diffusers": diffusers.__version__,
            "big_cases": f"{BIG}: --reps-big timed steps after 1 warm-up, each step logged; recorded calls per step "
                         "counted from the timed traced steps; plain and traced steps alternated unless --sequential"}
    print(json.dumps(info), flush=True)
    results = []
    for name in args.models:
        big = name in BIG
        try:
            results.append(bench(name, args.reps_big if big else args.reps, 1 if big else args.warmup,
                                 fold_count=big, log=big, tiny=args.tiny,
                                 interleave=big and not args.sequential))
        except Exception as exc:  # noqa: BLE001 - record and go on to the next model
            results.append({"model": name, "error": repr(exc)[:500]})
            print(json.dumps(results[-1]), flush=True)
            torch.cuda.empty_cache()
        if args.out:  # written after every model: a run stopped at its limit keeps what finished
            with open(args.out, "w") as fh:
                json.dump({"info": info, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
