"""Benchmark: ``ia.traced`` (nnsight) against ``ia.trace`` and a plain generation, AnimateDiff at real scale (GPU).

Random weights, no downloads: the SD 1.5 UNet + motion adapter v1-5-3 config of ``bench_trace.py`` (fp16, 16 frames,
512×512, CFG 7.5, DDIM), the SD VAE config and a 12-layer CLIP text encoder over the offline tokenizer. Every mode
captures the same layers (every self-attention layer, the conditional rows) and runs the same call:

* ``plain``        — ``ia.generate`` (no capture);
* ``trace``        — ``ia.trace(pipe, ..., layers=<self-attention>)``;
* ``traced``       — ``with ia.traced(pipe, capture=<self-attention>) as m: with m.generate(...): pass``;
* ``traced_read``  — the same, also saving one spatial layer's mean entropy at every step through its hook point.

Per mode: ms per denoising step (median of the intervals between the denoiser's calls, over all timed runs: the
denoiser call, the scheduler step, the hooks), the peak GPU memory of the denoising loop (reset when the first
denoiser call starts, read after the last; the VAE decode is left out) and the end-to-end seconds of the run
(encode, loop, VAE decode, building the results). Writes JSON after every mode.

    python benchmarks/bench_traced.py --out traced.json [--steps 8] [--reps 2] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_trace import animatediff_case

PROMPT = "a red car driving on a road"


def real_pipeline(device: str):
    """AnimateDiffPipeline at real scale with random weights (the UNet of ``bench_trace.animatediff_case``)."""
    from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from ieadapt_interp.models.pipelines import clip_tokenizer

    with torch.device(device):
        unet = animatediff_case(device)[0].unet
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, sample_size=512)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                            num_hidden_layers=12, vocab_size=1000, max_position_embeddings=77))
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer(), unet=unet, motion_adapter=None,
                               scheduler=DDIMScheduler(beta_schedule="linear", clip_sample=False,
                                                       timestep_spacing="trailing"))
    return _finish(pipe.to(device, torch.float16)), {"num_frames": 16, "height": 512, "width": 512}


def tiny_pipeline(device: str):
    """The tiny AnimateDiff pipeline (a CPU check of this script's code paths)."""
    import ieadapt_interp as ia

    return _finish(ia.load_pipeline("tiny:animatediff").to(device)), {"num_frames": 4, "height": 16, "width": 16}


def _finish(pipe):
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class StepClock:
    """Times the denoiser's calls (synchronised) and the peak memory from the first call to the end of the last."""

    def __init__(self, denoiser, cuda: bool) -> None:
        self.cuda, self.starts, self.peak = cuda, [], 0.0
        self.handles = [denoiser.register_forward_pre_hook(self._pre), denoiser.register_forward_hook(self._post)]

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _pre(self, module, args) -> None:
        self._sync()
        if not self.starts and self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.starts.append(time.perf_counter())

    def _post(self, module, args, output) -> None:
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated() / 2**30

    def intervals_ms(self) -> list[float]:
        return [(b - a) * 1e3 for a, b in zip(self.starts, self.starts[1:])]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def modes(pipe, kw: dict, steps: int, layers: list[str], read_layer: str) -> dict:
    """One callable per mode; each runs one generation of ``steps`` steps."""
    import nnsight

    import ieadapt_interp as ia

    call = dict(kw, num_inference_steps=steps, guidance_scale=7.5, seed=0)

    def plain():
        ia.generate(pipe, PROMPT, **call)

    def trace():
        assert ia.trace(pipe, PROMPT, layers=layers, **call).stats.sizes["step"] == steps

    def traced(read: bool):
        def run():
            with ia.traced(pipe, capture=layers) as model:
                with model.generate(PROMPT, output_type="np", **call) as tracer:
                    if read:
                        module = _envoy(model, read_layer)
                        saved = nnsight.save([])
                        for _ in tracer.iter[:]:
                            saved.append(module.hook_entropy.output.mean().save())
                stats = model.stats
            assert stats is not None and stats.sizes["step"] == steps
            if read:
                assert len(saved) == steps
        return run

    return {"plain": plain, "trace": trace, "traced": traced(False), "traced_read": traced(True)}


def _envoy(model, name: str):
    """The nnsight envoy of the denoiser's submodule ``name`` (dotted path)."""
    node = model.unet
    for part in name.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def measure(fn, pipe, reps: int, cuda: bool) -> dict:
    fn()  # warm-up: kernels compiled and autotuned, allocator warm
    intervals, peaks, seconds = [], [], []
    for _ in range(reps):
        clock = StepClock(pipe.unet, cuda)
        try:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - t0)
        finally:
            clock.close()
        intervals += clock.intervals_ms()
        peaks.append(clock.peak)
    return {"ms_per_step": statistics.median(intervals), "step_intervals": len(intervals),
            "peak_loop_gib": max(peaks), "run_seconds": statistics.median(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the tiny pipeline on the CPU (checks the code paths)")
    parser.add_argument("--modes", nargs="*", default=["plain", "trace", "traced", "traced_read"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import diffusers
    import nnsight

    import ieadapt_interp as ia

    cuda = not args.tiny
    pipe, kw = tiny_pipeline("cpu") if args.tiny else real_pipeline("cuda")
    table = ia.attention_layers(pipe)
    layers = list(table.loc[table["kind"] != "cross", "name"])
    read_layer = str(table.loc[table["kind"] == "spatial", "name"].iloc[0])
    info = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "torch": torch.__version__, "diffusers": diffusers.__version__,
            "nnsight": getattr(nnsight, "__version__", "?"), "steps": args.steps, "reps": args.reps,
            "layers_captured": len(layers), "case": "tiny" if args.tiny else "animatediff 16x512x512 fp16 CFG"}
    print(json.dumps(info), flush=True)
    fns, results = modes(pipe, kw, args.steps, layers, read_layer), {}
    for name in args.modes:
        try:
            results[name] = measure(fns[name], pipe, args.reps, cuda)
        except Exception as exc:  # noqa: BLE001 - record and go on
            results[name] = {"error": repr(exc)[:800]}
        if "ms_per_step" in results[name] and "ms_per_step" in results.get("plain", {}):
            base = results["plain"]
            results[name]["time_ratio"] = results[name]["ms_per_step"] / base["ms_per_step"]
            if cuda:
                results[name]["memory_ratio"] = results[name]["peak_loop_gib"] / base["peak_loop_gib"]
        print(name, json.dumps(results[name]), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"info": info, "results": results}, indent=1))


if __name__ == "__main__":
    main()
