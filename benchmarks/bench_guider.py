"""IEAdaptGuidance on CPU: conditions batched into one forward vs one forward per condition (diffusers' way).

One denoising step of diffusers' own ``WanLoopDenoiser`` block (the loop body of the Wan modular pipeline:
``set_state`` → ``prepare_inputs_from_block_state`` → per condition ``prepare_models`` / transformer /
``cleanup_models`` → ``guider(states)``), timed for each guider, in ms per step. Reps are interleaved (one
rep of every guider, then the next) so that load from other processes spreads over all of them; medians of
one run. Random weights; two Wan configurations:

``tiny``   ``ia.tiny_pipeline("wan")``'s transformer (2 blocks, 2 heads × 8), latents 4 × 2 × 4 × 4 (8 tokens)
``small``  a WanTransformer3DModel with 4 blocks, 4 heads × 32 (dim 128), FFN 512, latents 16 × 5 × 16 × 16
           (320 tokens)

    python benchmarks/bench_guider.py --reps 20 --threads 2 --out benchmarks/results/guider_cpu.json

``--prefix``: instead, prefix sharing (``share_prefix``): batched, the perturbed layer in the first or the last
block; separate forwards, the last block; sharing on / off; against the CFG step (s = 0) of each mode:

    python benchmarks/bench_guider.py --prefix --cases small --reps 12 --threads 1 --out results/guider_prefix.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from types import SimpleNamespace

import torch


def _small_wan():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=16,
                                 out_channels=16, text_dim=64, freq_dim=64, ffn_dim=512, num_layers=4,
                                 rope_max_seq_len=64).eval()


def _case(name: str):
    """``(transformer, latents, prompt_embeds, negative_prompt_embeds)`` of one configuration."""
    import ieadapt_interp as ia

    if name == "tiny":
        pipe = ia.tiny_pipeline("wan", seed=0)
        pe, ne = pipe.encode_prompt("a red circle", "", do_classifier_free_guidance=True, max_sequence_length=16)
        return pipe.transformer, torch.randn(1, 4, 2, 4, 4), pe, ne
    tr = _small_wan()
    return tr, torch.randn(1, 16, 5, 16, 16), torch.randn(1, 32, 64), torch.randn(1, 32, 64)


def _guiders(layer: str) -> dict:
    from diffusers.guiders import ClassifierFreeGuidance, PerturbedAttentionGuidance

    from ieadapt_interp.methods.guider import IEAdaptGuidance

    common = dict(layers=layer, guidance_scale=5.0, perturbed_guidance_scale=2.0)
    return {
        "diffusers CFG (2 forwards)": ClassifierFreeGuidance(guidance_scale=5.0),
        "ours, s=0 = CFG, batched (1 × 2 rows)": IEAdaptGuidance(pos="A", neg="I", layers=layer, guidance_scale=5.0,
                                                                  perturbed_guidance_scale=0.0),
        "diffusers PAG (3 forwards)": PerturbedAttentionGuidance(guidance_scale=5.0, perturbed_guidance_scale=2.0,
                                                                 perturbed_guidance_layers=[0],
                                                                 perturbed_guidance_start=0.0,
                                                                 perturbed_guidance_stop=1.0),
        "ours (A,I), separate (3 forwards)": IEAdaptGuidance(pos="A", neg="I", batched=False, **common),
        "ours (A,I), batched (1 × 3 rows)": IEAdaptGuidance(pos="A", neg="I", **common),
        "ours (U,I), separate (4 forwards)": IEAdaptGuidance(pos="U", neg="I", batched=False, **common),
        "ours (U,I), batched (1 × 4 rows)": IEAdaptGuidance(pos="U", neg="I", **common),
    }


def _register_wan_for_pag() -> None:
    """diffusers 0.42.1's PAG hook registry lacks the current ``WanAttnProcessor`` (only the deprecated
    ``WanAttnProcessor2_0``); its metadata is unused when attention scores are skipped."""
    from diffusers.hooks._helpers import AttentionProcessorRegistry
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor, WanAttnProcessor2_0

    AttentionProcessorRegistry._register()
    AttentionProcessorRegistry.register(WanAttnProcessor, AttentionProcessorRegistry.get(WanAttnProcessor2_0))


def _step(block, tr, guider, x, pe, ne):
    """One step (i = 1 of 2: inside every guider's perturbation window) of diffusers' WanLoopDenoiser."""
    from diffusers.modular_pipelines.modular_pipeline import BlockState

    state = BlockState(latent_model_input=x, dtype=x.dtype, num_inference_steps=2, attention_kwargs=None,
                       prompt_embeds=pe, negative_prompt_embeds=ne)
    components = SimpleNamespace(guider=guider, transformer=tr)
    block(components, state, i=1, t=torch.tensor(500.0))
    return state.noise_pred


def _prefix_guiders(blocks: int) -> dict:
    """Batched guiders, perturbed layer in the first / last block, prefix sharing on / off; separate forwards
    (``batched=False``), last block, on / off; CFG (s = 0) batched and separate."""
    from ieadapt_interp.methods.guider import IEAdaptGuidance

    out = {f"ours, s=0 = CFG, {mode}": IEAdaptGuidance(pos="A", neg="I", layers="blocks.0.attn1", guidance_scale=5.0,
                                                      perturbed_guidance_scale=0.0, batched=mode == "batched")
           for mode in ("batched", "separate")}
    for pair in ("A", "U"):
        for mode, where, j in (("batched", "first", 0), ("batched", "last", blocks - 1),
                               ("separate", "last", blocks - 1)):
            for share in (True, False):
                out[f"({pair},I) {mode}, {where} block, {'shared' if share else 'unshared'}"] = IEAdaptGuidance(
                    pos=pair, neg="I", layers=f"blocks.{j}.attn1", guidance_scale=5.0, perturbed_guidance_scale=2.0,
                    share_prefix=share, batched=mode == "batched")
    return out


def _timed(block, tr, guiders: dict, x, pe, ne, reps: int) -> tuple[dict, dict]:
    """``(median ms per step, last prediction)`` of each guider; 2 warm-ups, then interleaved reps."""
    times: dict[str, list[float]] = {k: [] for k in guiders}
    preds = {}
    with torch.no_grad():
        for key, guider in guiders.items():
            for _ in range(2):
                preds[key] = _step(block, tr, guider, x, pe, ne)
        for _ in range(reps):
            for key, guider in guiders.items():
                start = time.perf_counter()
                _step(block, tr, guider, x, pe, ne)
                times[key].append((time.perf_counter() - start) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}, preds


def bench_prefix(name: str, reps: int) -> dict:
    """Prefix sharing: ms per step of each :func:`_prefix_guiders` guider, and shared vs unshared max |Δ|."""
    from diffusers.modular_pipelines.wan.denoise import WanLoopDenoiser

    tr, x, pe, ne = _case(name)
    guiders = _prefix_guiders(len(tr.blocks))
    med, preds = _timed(WanLoopDenoiser(), tr, guiders, x, pe, ne, reps)
    agree = {f"({p},I) {w} shared vs unshared": float((preds[f"({p},I) {w} block, shared"]
                                                       - preds[f"({p},I) {w} block, unshared"]).abs().max())
             for p in ("A", "U") for w in ("batched, first", "batched, last", "separate, last")}
    shared = {k: g.shared_blocks(tr) for k, g in guiders.items()}
    return {"case": name, "blocks": len(tr.blocks), "tokens": int(x.shape[2] * x.shape[3] * x.shape[4] // 4),
            "ms_per_step": med, "shared_blocks": shared, "max_abs_diff": agree, "reps": reps}


def bench(name: str, reps: int) -> dict:
    from diffusers.modular_pipelines.wan.denoise import WanLoopDenoiser

    tr, x, pe, ne = _case(name)
    med, preds = _timed(WanLoopDenoiser(), tr, _guiders("blocks.0.attn1"), x, pe, ne, reps)
    agree = {
        "(A,I) batched vs separate": float((preds["ours (A,I), batched (1 × 3 rows)"]
                                            - preds["ours (A,I), separate (3 forwards)"]).abs().max()),
        "(A,I) separate vs PAG": float((preds["ours (A,I), separate (3 forwards)"]
                                        - preds["diffusers PAG (3 forwards)"]).abs().max()),
        "(U,I) batched vs separate": float((preds["ours (U,I), batched (1 × 4 rows)"]
                                            - preds["ours (U,I), separate (4 forwards)"]).abs().max()),
    }
    return {"case": name, "tokens": int(x.shape[2] * x.shape[3] * x.shape[4] // 4), "ms_per_step": med,
            "max_abs_diff": agree, "reps": reps}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["tiny", "small"])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--prefix", action="store_true", help="prefix sharing: first / last block, on / off")
    args = parser.parse_args(argv)
    import diffusers

    torch.set_num_threads(args.threads)
    _register_wan_for_pag()
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor()
               or platform.machine(), "cpus": torch.get_num_threads(), "torch": torch.__version__,
               "diffusers": diffusers.__version__, "load_before": os.getloadavg(),
               "cases": [(bench_prefix if args.prefix else bench)(c, args.reps) for c in args.cases]}
    results["load_after"] = os.getloadavg()
    for case in results["cases"]:
        base = case["ms_per_step"]
        print(f"\n{case['case']} ({case['tokens']} tokens), ms/step, median of {case['reps']}:")
        for key, ms in base.items():
            print(f"  {key:42s} {ms:8.2f}")
        print("  max |Δ|:", case["max_abs_diff"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
