"""Benchmark and study of IE-Adapt video editing.

``--bench``: inversion + edit against one plain generation — wall time (median of ``--reps``) and peak memory
(GPU: ``torch.cuda.max_memory_allocated``; CPU: the measuring child process's peak RSS). Cases: the embedded model
(``toy``, 16 frames 64×64, 25 steps, guidance 5) and, on a GPU, real-scale random weights with the configs of
``bench_trace.py`` (``animatediff``: SD 1.5 UNet + motion adapter v1-5-3, fp16, 16 frames 512×512;
``cogvideox``: CogVideoX-5B transformer, bf16, 49 frames 480×720), ``--steps`` denoising steps. The edit is
IE-Adapt (r = 0.5) of a video: DDIM inversion with entropy capture, then the batched source+target run.

``--study``: the honest result on the embedded model. Held-out captions are edited in colour, shape and background
(``--pairs`` each); sources are generated (seed) or rendered clips (DDIM-inverted; every second one off its usual
path). Every method runs as one batch per source (IE-Adapt at r = 0.25/0.5/0.65/0.75, and at r = 0.5 with the
target's unconditional row its own, all, fixed, MasaCtrl, value, P2P, none = the target prompt from the same
initial latent), plus a plain generation of the target prompt (seed 0). Writes per-edit rows (CSV) and the summary
tables (JSON), with the inversion's PSNR / SSIM by background. ``--jobs N`` runs N shard processes side by side
(the embedded model is too small to fill a GPU alone).

    python benchmarks/bench_edit.py --study --out study.json --csv rows.csv --pairs 20 --jobs 6 --device cuda
    python benchmarks/bench_edit.py --bench --out bench.json --cases toy animatediff cogvideox --device cuda
    python benchmarks/bench_edit.py --bench --cases animatediff --steps 4 25 --phases --out bench.json  # + parts
    python benchmarks/bench_edit.py --bench --cases animatediff --steps 4 25 --reps 5 3 \
        --which edit edit_with_source --out bench.json        # medians of interleaved runs, one process
    python benchmarks/bench_edit.py --study --kinds rendered --pair-ids 18 19 --jobs 2 --shard-dir shards \
        --csv topup.csv                                                   # top up a study with given pairs
    python benchmarks/bench_edit.py --summarise stored.csv topup.csv --csv merged.csv --out merged.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import ieadapt_interp as ia  # noqa: E402
from ieadapt_interp.methods.editing import Edit, edit_many  # noqa: E402
from ieadapt_interp.methods.inversion import invert  # noqa: E402

TOY = dict(num_frames=16, height=64, width=64, num_inference_steps=25, guidance_scale=5.0)
OFF_PATH_SHIFT = 14.0  # px across the motion (the dataset's jitter is at most 6 px)


# -- sources ------------------------------------------------------------------------------------------------
def render_clip(caption: str, seed: int, off_path: bool) -> np.ndarray:
    """A toy-dataset clip of ``caption``; ``off_path`` shifts it 14 px across its motion."""
    from ieadapt_interp.methods.sources import render_toy_clip

    return render_toy_clip(caption, seed, OFF_PATH_SHIFT if off_path else 0.0)


def edit_pairs(n: int) -> list[tuple[str, str, str]]:
    """``n`` (attribute, source caption, target caption) per attribute, sources from the held-out captions."""
    from ieadapt_interp.models.toy import dataset as d

    held = [d.parse_caption(c) for c in d.heldout_captions()]
    colours, shapes, backgrounds = list(d.COLOURS), list(d.SHAPES), list(d.BACKGROUNDS)
    pairs = []
    for attribute, values in (("colour", colours), ("shape", shapes), ("background", backgrounds)):
        for i, c in enumerate(held[:n] if attribute == "colour" else held[n:2 * n] if attribute == "shape"
                              else held[2 * n:3 * n] if len(held) >= 3 * n else held[-n:]):
            old = getattr(c, attribute)
            new = values[(values.index(old) + 1 + i % (len(values) - 1)) % len(values)]
            target = d.make_caption(**{**c.__dict__, attribute: new})
            pairs.append((attribute, c.caption, target))
    return pairs


#: the target's unconditional-row rule of every study method: "source", the default when the stored study
#: (results/edit_study_rows_h200_2026-12-01.csv) ran, kept so that new pairs merge with it; IE-Adapt r = 0.5 also
#: runs with "own" (the present default), labelled "ieadapt r=0.5 uncond=own" as in that file
STUDY_UNCOND = "source"


def study_edits(pipe, target: str) -> list[Edit]:
    names = ia.attention_layers(pipe)
    decoder = [n for n, k in zip(names.name, names.kind) if k in ("spatial", "temporal") and n.startswith("up_blocks")]
    u = dict(uncond=STUDY_UNCOND)
    return [Edit(target, "ieadapt", 0.25, **u), Edit(target, "ieadapt", 0.5, **u),
            Edit(target, "ieadapt", 0.5, uncond="own"), Edit(target, "ieadapt", 0.65, **u),
            Edit(target, "ieadapt", 0.75, **u), Edit(target, "all", **u),
            Edit(target, "fixed", layers=tuple(decoder), **u), Edit(target, "masactrl", **u),
            Edit(target, "value", **u), Edit(target, "p2p"), Edit(target, "none")]


def study_label(e: Edit) -> str:
    """The stored study's method names: ``"ieadapt r=0.5"`` (uncond source; the ratio always shown),
    ``"ieadapt r=0.5 uncond=own"``, else the method (``all``, ``fixed``, ``masactrl``, ``value``, ``p2p``, ``none``)."""
    if e.method != "ieadapt":
        return e.method
    return f"ieadapt r={e.ratio:g}" + (" uncond=own" if e.uncond == "own" else "")


def score(video, reference, source, target) -> dict:
    from ieadapt_interp.metrics import compute_metrics

    names = ["edit_success", "attributes_kept", "trajectory_distance", "edit_preservation", "ssim", "connectedness"]
    return compute_metrics(names, video, reference=reference, prompt=target, source_prompt=source,
                           target_prompt=target)


def study_rows(args) -> list[dict]:
    """Edit the pairs of shard ``args.shard`` of ``args.shards`` → one row per (pair, source kind, method)."""
    from ieadapt_interp.models.toy import dataset as d

    pipe = ia.load_pipeline(device=args.device)
    pairs = edit_pairs(args.pairs)
    settings = {**TOY, **json.loads(args.settings)}
    n = args.pairs  # interleaved (pair j of each attribute, each kind) so that a time budget cuts evenly
    order = [(a * n + j, kind) for j in range(n) for a in range(3) for kind in args.kinds]
    units = [(i, kind) for i, kind in order if i < len(pairs) and (args.pair_ids is None or i in args.pair_ids)
             and not (kind == "generated" and i < args.generated_from)][args.shard::args.shards]
    rows = []
    start = time.perf_counter()
    for i, kind in units:
        attribute, source, target = pairs[i]
        if time.perf_counter() - start > args.budget:
            print(f"study: time budget reached, shard {args.shard} stops", flush=True)
            break
        edits = study_edits(pipe, target)
        if True:
            extra = {}
            if kind == "generated":
                off = False
                results = edit_many(pipe, i, source, edits, **settings)
                reference = results[0].source_video
                plain = results[-1].video  # "none": the target prompt from the same noise = a plain generation
            else:
                off = i % 2 == 1
                clip = render_clip(source, i, off)
                inv = invert(pipe, clip, source, num_inference_steps=settings["num_inference_steps"], capture=True,
                             num_frames=16, height=64, width=64)
                extra = {"inversion_psnr": inv.psnr, "inversion_ssim": inv.ssim, "vae_psnr": inv.vae_psnr}
                results = edit_many(pipe, clip, source, edits, inversion=inv, **settings)
                reference = clip
                plain = ia.generate(pipe, target, seed=0, **settings).video
            labelled = [(study_label(r.edit), r.video) for r in results] + [("plain generation", plain)]
            for method, video in labelled:
                rows.append({"pair": i, "attribute": attribute, "source_kind": kind, "off_path": off,
                             "background": d.parse_caption(source).background,
                             "source": source, "target": target, "method": method,
                             **score(video, reference, source, target), **extra})
        print(f"shard {args.shard}: pair {i} ({kind}) done at {time.perf_counter() - start:.0f}s", flush=True)
        if args.csv:  # kept after every source: a shard stopped from outside keeps what it did
            import pandas as pd

            pd.DataFrame(rows).to_csv(args.csv, index=False)
    return rows


def parallel_study(args) -> list[dict]:
    """``args.jobs`` shard processes of this script side by side → their rows."""
    import tempfile

    import pandas as pd

    tmp = Path(args.shard_dir) if args.shard_dir else Path(tempfile.mkdtemp())  # shard CSVs, kept per source
    tmp.mkdir(parents=True, exist_ok=True)
    common = ["--study", "--device", args.device, "--pairs", str(args.pairs), "--budget", str(args.budget),
              "--kinds", *args.kinds, "--generated-from", str(args.generated_from), "--settings", args.settings,
              "--shards", str(args.jobs), *(["--pair-ids", *map(str, args.pair_ids)] if args.pair_ids else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // args.jobs))}
    procs = [subprocess.Popen([sys.executable, __file__, *common, "--shard", str(k), "--csv", str(tmp / f"{k}.csv"),
                               "--out", str(tmp / f"{k}.json")], env=env) for k in range(args.jobs)]
    codes = [p.wait() for p in procs]
    frames = [pd.read_csv(tmp / f"{k}.csv") for k in range(args.jobs)
              if (tmp / f"{k}.csv").is_file() and (tmp / f"{k}.csv").stat().st_size > 1]  # a shard with no unit: empty
    print(f"study: shard exit codes {codes}", flush=True)
    return pd.concat(frames, ignore_index=True).to_dict("records") if frames else []


def merge_rows(frames: list, n_pairs: int):
    """Study CSVs of one study → one frame; refuses a (pair, source kind, method) twice and a pair whose captions
    differ from :func:`edit_pairs` (so a top-up continues the stored pairs instead of repeating them)."""
    import pandas as pd

    df = pd.concat(frames, ignore_index=True)
    twice = df[df.duplicated(["pair", "source_kind", "method"], keep=False)]
    if len(twice):
        raise SystemExit(f"merge: {len(twice)} rows repeat a (pair, source_kind, method): "
                         f"{sorted(set(zip(twice.pair, twice.source_kind)))[:10]}")
    pairs = edit_pairs(n_pairs)
    wrong = sorted({(int(r.pair), r.source_kind) for r in df.itertuples()
                    if tuple(pairs[int(r.pair)]) != (r.attribute, r.source, r.target)})
    if wrong:
        raise SystemExit(f"merge: pairs whose captions are not edit_pairs({n_pairs})'s: {wrong[:10]}")
    return df.sort_values(["source_kind", "pair", "method"], kind="stable").reset_index(drop=True)


def uncond_comparison(df) -> dict:
    """IE-Adapt r = 0.5 with the target's unconditional row its own vs the source's: per source kind, the pairs
    where success-and-preserved differs (own only / source only) and the mean path distance of each."""
    both = df.assign(both=((df.edit_success == 1) & (df.edit_preservation == 1)))
    out = {}
    for kind, frame in both.groupby("source_kind"):
        own = frame[frame.method == "ieadapt r=0.5 uncond=own"].set_index("pair")
        src = frame[frame.method == "ieadapt r=0.5"].set_index("pair")
        common = own.index.intersection(src.index)
        o, s = own.loc[common, "both"], src.loc[common, "both"]
        out[kind] = {"pairs": int(len(common)), "own_only": int((o & ~s).sum()), "source_only": int((s & ~o).sum()),
                     "own_both": int(o.sum()), "source_both": int(s.sum()),
                     "path_px_own": float(own.loc[common, "trajectory_distance"].mean()),
                     "path_px_source": float(src.loc[common, "trajectory_distance"].mean())}
    return out


def summarise(df) -> dict:
    """Rates per method (rows) for every source group; ``df`` holds :func:`study_rows` rows."""
    cols = ["edit_success", "edit_preservation", "attributes_kept", "trajectory_distance", "ssim"]
    group = lambda frame: frame.groupby("method")[cols].mean().round(4).to_dict("index")  # noqa: E731
    tables = {"all_sources": group(df)}
    for kind in ("generated", "rendered"):
        tables[kind] = group(df[df.source_kind == kind])
    tables["rendered_off_path"] = group(df[(df.source_kind == "rendered") & df.off_path])
    tables["rendered_on_path"] = group(df[(df.source_kind == "rendered") & ~df.off_path])
    for attribute in ("colour", "shape", "background"):
        for kind in ("generated", "rendered"):
            tables[f"{kind}_{attribute}"] = group(df[(df.attribute == attribute) & (df.source_kind == kind)])
    both = df.assign(both=((df.edit_success == 1) & (df.edit_preservation == 1)).astype(float))
    tables["success_and_preserved"] = both.groupby(["method", "source_kind"]).both.mean().unstack().round(4) \
        .to_dict("index")
    off = both[(both.source_kind == "rendered") & both.off_path]
    tables["success_and_preserved_rendered_off_path"] = off.groupby("method").both.mean().round(4).to_dict()
    by = both.assign(group=both.source_kind + "/" + both.attribute)
    tables["success_and_preserved_by_attribute"] = by.groupby(["method", "group"]).both.mean().round(4).unstack() \
        .to_dict("index")
    rendered = df[(df.source_kind == "rendered")].drop_duplicates("pair")
    inversion = {"n": int(len(rendered))}
    if "inversion_psnr" in df and len(rendered):
        inversion.update({k: float(rendered[k].median()) for k in ("inversion_psnr", "inversion_ssim", "vae_psnr")})
        inversion["inversion_psnr_min"] = float(rendered.inversion_psnr.min())
        if "background" in rendered:
            inversion["by_background"] = rendered.groupby("background").agg(
                n=("pair", "size"), psnr_median=("inversion_psnr", "median"), psnr_min=("inversion_psnr", "min"),
                ssim_median=("inversion_ssim", "median"), vae_psnr_median=("vae_psnr", "median")).round(3) \
                .to_dict("index")
    counts = df.drop_duplicates(["pair", "source_kind"]).groupby(["source_kind", "attribute"]).size()
    off = df[df.source_kind == "rendered"].drop_duplicates("pair").off_path.sum()
    return {"pairs": {f"{k}/{a}": int(n) for (k, a), n in counts.items()}, "rendered_off_path": int(off),
            "tables": tables, "inversion": inversion, "uncond": uncond_comparison(df)}


# -- benchmark ----------------------------------------------------------------------------------------------
def real_pipeline(name: str, device: str):
    """Real-scale random-weight pipelines (bench_trace.py configs; tokenizers built offline, small text encoders)."""
    from ieadapt_interp.models.pipelines import clip_tokenizer, t5_tokenizer

    with torch.device(device):
        if name == "animatediff":
            from diffusers import (AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter,
                                   UNet2DConditionModel, UNetMotionModel)
            from transformers import CLIPTextConfig, CLIPTextModel

            unet = UNet2DConditionModel(
                sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                cross_attention_dim=768, attention_head_dim=8,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
            adapter = MotionAdapter(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                                    motion_num_attention_heads=8, motion_norm_num_groups=32,
                                    motion_max_seq_length=32, use_motion_mid_block=False)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4,
                                down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, sample_size=512)
            text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                                num_hidden_layers=12, vocab_size=1000, max_position_embeddings=77))
            pipe = AnimateDiffPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer(),
                                       unet=UNetMotionModel.from_unet2d(unet, adapter), motion_adapter=adapter,
                                       scheduler=DDIMScheduler(beta_schedule="linear", clip_sample=False,
                                                               timestep_spacing="trailing"))
            dtype, kw = torch.float16, dict(num_frames=16, height=512, width=512, guidance_scale=7.5)
        else:
            from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline,
                                   CogVideoXTransformer3DModel)
            from transformers import T5Config, T5EncoderModel

            transformer = CogVideoXTransformer3DModel(
                num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=512,
                text_embed_dim=4096, num_layers=42, sample_width=90, sample_height=60, sample_frames=49,
                patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,
                use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False, norm_eps=1e-5,
                activation_fn="gelu-approximate", timestep_activation_fn="silu", flip_sin_to_cos=True, freq_shift=0,
                attention_bias=True, spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0)
            text = T5EncoderModel(T5Config(vocab_size=200, d_model=4096, d_ff=1024, d_kv=64, num_layers=1,
                                           num_heads=8, decoder_start_token_id=0))
            tok = t5_tokenizer(max_length=226)
            pipe = CogVideoXPipeline(tokenizer=tok, text_encoder=text, vae=AutoencoderKLCogVideoX(),
                                     transformer=transformer,
                                     scheduler=CogVideoXDDIMScheduler(prediction_type="v_prediction",
                                                                      rescale_betas_zero_snr=True,
                                                                      timestep_spacing="trailing",
                                                                      snr_shift_scale=1.0, clip_sample=False))
            dtype, kw = torch.bfloat16, dict(num_frames=49, height=480, width=720, guidance_scale=6.0)
    pipe = pipe.to(device, dtype)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe, kw


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is KiB on Linux)


def cost_case(case: str, device: str):
    """``(pipe, call settings, source prompt, target prompt, source video)`` of a cost case."""
    if case == "toy":
        pipe, kw = ia.load_pipeline(device=device), dict(TOY)
        kw.pop("num_inference_steps")
        source_prompt = "a red circle moving right on a black background"
        return pipe, kw, source_prompt, "a blue circle moving right on a black background", \
            render_clip(source_prompt, 0, True)
    if case == "tiny":  # a smoke test of the driver (tiny random AnimateDiff)
        pipe = ia.load_pipeline("tiny:animatediff", device=device)
        kw = dict(num_frames=4, height=16, width=16, guidance_scale=7.5)
    else:
        pipe, kw = real_pipeline(case, device)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (kw["num_frames"], kw["height"], kw["width"], 3), dtype=np.uint8)
    return pipe, kw, "a red car", "a blue car", video


def cost_functions(pipe, kw: dict, source_prompt: str, target_prompt: str, video, steps: int) -> dict:
    """The timed functions: ``plain`` (``ia.generate`` of the target), ``edit`` (the user's path: ``edit_many`` of
    the video inverts it itself — entropy-only capture, no reconstruction — then the 3-row batch and the edited
    video's decode; the source video, decoded on first read, is not read), ``edit_with_source`` (the same, then
    ``.source_video`` read: its decode included, what every edit paid before the source was decoded on first
    read) and ``edit_full_capture`` (``edit`` with an inversion that records every StatsRecorder variable)."""
    size = {k: kw[k] for k in ("num_frames", "height", "width")}

    def plain():
        return ia.generate(pipe, target_prompt, num_inference_steps=steps, seed=0, **kw).video

    def edit():
        return edit_many(pipe, video, source_prompt, [Edit(target_prompt)], num_inference_steps=steps, **kw)[0].video

    def edit_with_source():
        result = edit_many(pipe, video, source_prompt, [Edit(target_prompt)], num_inference_steps=steps, **kw)[0]
        return result.video, result.source_video

    def edit_full_capture():
        inv = invert(pipe, video, source_prompt, num_inference_steps=steps, capture=True, reconstruct=False, **size)
        return edit_many(pipe, video, source_prompt, [Edit(target_prompt)], inversion=inv,
                         num_inference_steps=steps, **kw)[0].video

    return {"plain": plain, "edit": edit, "edit_with_source": edit_with_source,
            "edit_full_capture": edit_full_capture}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, reps: int, device: str) -> dict:
    """Median seconds of ``reps`` runs of ``fn`` (already warm) and the peak memory over them."""
    _peak_reset(device)
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "runs": times, "peak_gib": _peak(device)}


def timed_interleaved(fns: dict, reps: int, device: str) -> dict:
    """``{name: {seconds (median), runs, min, max, peak_gib}}`` of ``reps`` rounds, each round running every function
    once in turn (a slow drift of the machine then hits all of them alike); peak memory per function, the maximum
    over its runs (``max_memory_allocated`` reset before each run)."""
    runs = {name: [] for name in fns}
    peaks = dict.fromkeys(fns, 0.0)
    for _ in range(reps):
        for name, fn in fns.items():
            _peak_reset(device)
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            runs[name].append(time.perf_counter() - t0)
            peaks[name] = max(peaks[name], _peak(device))
    return {name: {"seconds": statistics.median(t), "runs": t, "min": min(t), "max": max(t), "peak_gib": peaks[name]}
            for name, t in runs.items()}


def phases(pipe, kw: dict, source_prompt: str, target_prompt: str, video, steps: int, device: str) -> dict:
    """Seconds of the edit's parts, one warm run each: the VAE encode, the inversion (encode included) without
    capture / with the entropy only / with every statistic, the edit run given the inversion (text encode, the
    3-row batch, the edited video's decode; before the source video was decoded on first read, both decodes) and
    one video's decode."""
    from ieadapt_interp.methods.inversion import decode
    from ieadapt_interp.methods.sources import encode_video

    size = {k: kw[k] for k in ("num_frames", "height", "width")}
    held = {}

    def inversion(capture):
        held["inv"] = invert(pipe, video, source_prompt, num_inference_steps=steps, capture=capture,
                             reconstruct=False, **size)

    parts = {"vae_encode": lambda: encode_video(pipe, video),
             "inversion_no_capture": lambda: inversion(False),
             "inversion_full_capture": lambda: inversion(True),
             "inversion_entropy_capture": lambda: inversion("entropy"),
             "edit_run_given_inversion": lambda: edit_many(pipe, video, source_prompt, [Edit(target_prompt)],
                                                           inversion=held["inv"], num_inference_steps=steps, **kw),
             "decode_one_video": lambda: decode(pipe, held["inv"].latents[0])}
    return {name: timed(fn, 1, device)["seconds"] for name, fn in parts.items()}


def measure(case: str, device: str, steps: int, reps: int, which: str) -> dict:
    """Time and peak memory of ``which`` (see :func:`cost_functions`) on ``case`` in this process (warm-up first)."""
    pipe, kw, source_prompt, target_prompt, video = cost_case(case, device)
    steps = 25 if case == "toy" else steps
    fn = cost_functions(pipe, kw, source_prompt, target_prompt, video, steps)[which]
    fn()  # warm-up (kernels, allocator)
    return {**timed(fn, reps, device), "steps": steps}


def bench_gpu_case(case: str, args, save) -> dict:
    """Every step count of ``args.steps`` on one pipeline: the functions ``args.which`` of :func:`cost_functions`
    (each warmed up once at the first step count, then ``args.reps`` interleaved rounds — one count per step count,
    or one for all) and, with ``--phases``, the edit's parts. Ratios of medians to ``plain``; ``*_range`` the
    ratio's spread (slowest edit / fastest plain … fastest edit / slowest plain)."""
    pipe, kw, source_prompt, target_prompt, video = cost_case(case, args.device)
    out = {}
    for n, steps in enumerate(args.steps):
        every = cost_functions(pipe, kw, source_prompt, target_prompt, video, steps)
        fns = {which: every[which] for which in dict.fromkeys(["plain", *args.which])}
        if n == 0:
            for fn in fns.values():
                fn()  # warm-up (kernels, autotuning, allocator)
        reps = args.reps[min(n, len(args.reps) - 1)]
        row = {which: {**res, "steps": steps} for which, res in timed_interleaved(fns, reps, args.device).items()}
        plain = row["plain"]
        for which in fns:
            if which == "plain":
                continue
            row[f"time_ratio_{which}"] = row[which]["seconds"] / plain["seconds"]
            row[f"time_ratio_{which}_range"] = [row[which]["min"] / plain["max"], row[which]["max"] / plain["min"]]
            row[f"memory_ratio_{which}"] = row[which]["peak_gib"] / plain["peak_gib"]
        if "edit" in fns:
            row["time_ratio"], row["memory_ratio"] = row["time_ratio_edit"], row["memory_ratio_edit"]
        if args.phases:
            row["phases"] = phases(pipe, kw, source_prompt, target_prompt, video, steps, args.device)
        print(case, steps, json.dumps(row), flush=True)
        out[f"steps_{steps}"] = row
        save(out)
    return out


def bench(args) -> dict:
    out = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else
           f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)",
           "versions": ia.core.versions.versions_string() if hasattr(ia.core, "versions") else ""}

    def save(partial):  # written after every step count: a run stopped from outside keeps what it measured
        if args.out:
            Path(args.out).with_suffix(".partial.json").write_text(json.dumps({**out, case: partial}, indent=1))

    for case in args.cases:
        if args.device != "cpu" or case == "tiny":  # tiny: the GPU driver's smoke test, on the CPU
            out[case] = bench_gpu_case(case, args, save)
            continue
        row = {}
        for which in ("plain", "edit"):  # a fresh process each: peak RSS is per process
            cmd = [sys.executable, __file__, "--child", case, which, "--device", "cpu", "--reps", str(args.reps[0]),
                   "--steps", str(args.steps[0])]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row[which] = json.loads(res.stdout.strip().splitlines()[-1])
        row["time_ratio"] = row["edit"]["seconds"] / row["plain"]["seconds"]
        row["memory_ratio"] = row["edit"]["peak_gib"] / row["plain"]["peak_gib"]
        print(case, json.dumps(row), flush=True)
        out[case] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", action="store_true")
    p.add_argument("--bench", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("CASE", "WHICH"))
    p.add_argument("--cases", nargs="+", default=["toy"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, nargs="+", default=[4], help="denoising steps of the real-scale cases")
    p.add_argument("--phases", action="store_true", help="bench: also time the edit's parts (one run each)")
    p.add_argument("--reps", type=int, nargs="+", default=[1],
                   help="timed runs: one count, or one per --steps entry (GPU cases)")
    p.add_argument("--which", nargs="+", default=["edit", "edit_with_source", "edit_full_capture"],
                   choices=["edit", "edit_with_source", "edit_full_capture"],
                   help="GPU cases: the edit variants timed next to plain (see cost_functions)")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--budget", type=float, default=1e9, help="study: stop starting new pairs after this many s")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--kinds", nargs="+", default=["generated", "rendered"], help="study: source kinds")
    p.add_argument("--generated-from", type=int, default=0, help="study: generated sources from this pair index")
    p.add_argument("--pair-ids", type=int, nargs="+", help="study: only these pair indices (topping up a study)")
    p.add_argument("--shard-dir", help="study with --jobs: where the shards write their CSVs (default: a temp dir)")
    p.add_argument("--jobs", type=int, default=1, help="study: shard processes run side by side")
    p.add_argument("--settings", default="{}", help="study: JSON overrides of the sampling settings (a smoke test)")
    p.add_argument("--summarise", nargs="+", metavar="CSV", help="merge study CSVs into the tables")
    p.add_argument("--out")
    p.add_argument("--csv")
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.device, args.steps[0], args.reps[0], args.child[1])))
        return
    result = {}
    if args.study:
        import pandas as pd

        rows = pd.DataFrame(study_rows(args) if args.jobs == 1 else parallel_study(args))
        if args.csv:
            rows.to_csv(args.csv, index=False)
        if len(rows):
            result["study"] = {**summarise(rows), "settings": {**TOY, **json.loads(args.settings)}}
    if args.summarise:
        import pandas as pd

        rows = merge_rows([pd.read_csv(f) for f in args.summarise], args.pairs)
        if args.csv:
            rows.to_csv(args.csv, index=False)
        result["study"] = {**summarise(rows), "settings": TOY}
    if args.bench:
        result["bench"] = bench(args)
    result["date"] = time.strftime("%Y-%m-%d")
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
