"""Train the embedded toy text-to-video model from scratch.

    python -m ieadapt_interp.models.toy.train --out DIR [--resume DIR] [--steps N] [--device cuda] [--tiny]

Phase 1 trains the VAE on single frames, phase 2 the UNetMotionModel and the CLIP text encoder together
(v-prediction on a zero-terminal-SNR schedule, EMA, 10 % caption dropout for classifier-free guidance, bf16
autocast on the GPU, an extra loss on the temporal differences of the prediction). Seeded and resumable: the
checkpoint is a few fp16 safetensors shards (each < 15 MB) plus ``state.json`` in DIR; ``--resume DIR`` picks
up from them (the optimiser restarts with a short warm-up). At the end the EMA model is exported with
``save_pretrained`` to DIR/pipeline, and a sample strip (PNG) of held-out captions is written.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...models.toy import dataset as ds
from ...models.toy.model import DEFAULT_CONFIG, DEFAULT_SAMPLING, TINY_CONFIG, _build_components, _eval

SHARD_BYTES = 14 * 1024 * 1024


# ---------------------------------------------------------------------------------------------------------
# checkpoint I/O: fp16 safetensors shards under 15 MB each (files back from the GPU machine are limited)


def save_shards(tensors: dict[str, torch.Tensor], out: Path, prefix: str) -> list[str]:
    from safetensors.torch import save_file

    for old in out.glob(f"{prefix}-*.safetensors"):
        old.unlink()
    shards, cur, size = [], {}, 0
    for k, v in tensors.items():
        v = v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype).contiguous()
        nb = v.numel() * v.element_size()
        if cur and size + nb > SHARD_BYTES:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += nb
    if cur:
        shards.append(cur)
    names = []
    for i, sh in enumerate(shards):
        name = f"{prefix}-{i:02d}.safetensors"
        save_file(sh, str(out / name))
        names.append(name)
    return names


def load_shards(d: Path, prefix: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(d.glob(f"{prefix}-*.safetensors")):
        out.update(load_file(str(f)))
    return out


# ---------------------------------------------------------------------------------------------------------


class Trainer:
    def __init__(self, config: dict, seed: int, device: str, batch: int, vae_batch: int, lr: float,
                 vae_lr: float, ema_decay: float, temporal_loss: float, cond_drop: float):
        self.config, self.seed, self.device = config, seed, torch.device(device)
        self.batch, self.vae_batch, self.lr, self.vae_lr = batch, vae_batch, lr, vae_lr
        self.ema_decay, self.temporal_loss, self.cond_drop = ema_decay, temporal_loss, cond_drop
        self.pool_size, self.pool_refresh = 0, 1000
        torch.manual_seed(seed)
        self.vae, self.text_encoder, self.tokenizer, self.unet, self.scheduler = _build_components(config, seed)
        for m in (self.vae, self.text_encoder, self.unet):
            m.to(self.device).train()
        self.ema_text = copy.deepcopy(self.text_encoder).eval().requires_grad_(False)
        self.ema_unet = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.sampler = ds.ToyVideoSampler(seed=seed, device=self.device)
        self.step, self.vae_step, self.log = 0, 0, []
        acp = self.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.sqrt_acp, self.sqrt_1macp = acp.sqrt(), (1 - acp).clamp(min=0).sqrt()
        # token ids of every combination's caption (index = ds.all_combos() order) plus the empty caption
        caps = [c.caption for c in ds.all_combos()] + [""]
        tok = self.tokenizer(caps, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        self.caption_ids = tok.input_ids.to(self.device)
        self.empty_index = len(caps) - 1
        self.autocast = self.device.type == "cuda"
        self.gen = torch.Generator(device=self.device).manual_seed(seed + 1)

    # ---- state
    def state_tensors(self) -> tuple[dict, dict]:
        model = {}
        for name, m in (("vae", self.vae), ("text", self.text_encoder), ("unet", self.unet)):
            model.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
        ema = {}
        for name, m in (("text", self.ema_text), ("unet", self.ema_unet)):
            ema.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
        return model, ema

    def save(self, out: Path, extra: dict | None = None) -> None:
        out.mkdir(parents=True, exist_ok=True)
        model, ema = self.state_tensors()
        save_shards(model, out, "ckpt-model")
        save_shards(ema, out, "ckpt-ema")
        state = {
            "step": self.step, "vae_step": self.vae_step, "seed": self.seed, "config": self.config,
            "scaling_factor": float(self.vae.config.scaling_factor), "log": self.log,
            "sampler_rng": self.sampler.generator.get_state().tolist(),
            "gen_rng": self.gen.get_state().tolist(),
        }
        state.update(extra or {})
        (out / "state.json").write_text(json.dumps(state))

    def load(self, d: Path) -> dict:
        state = json.loads((d / "state.json").read_text())
        model, ema = load_shards(d, "ckpt-model"), load_shards(d, "ckpt-ema")
        for name, m in (("vae", self.vae), ("text", self.text_encoder), ("unet", self.unet)):
            m.load_state_dict({k[len(name) + 1:]: v.float() for k, v in model.items() if k.startswith(name + ".")})
        for name, m in (("text", self.ema_text), ("unet", self.ema_unet)):
            m.load_state_dict({k[len(name) + 1:]: v.float() for k, v in ema.items() if k.startswith(name + ".")})
        self.vae.register_to_config(scaling_factor=state["scaling_factor"])
        self.step, self.vae_step, self.log = state["step"], state["vae_step"], state["log"]
        try:  # RNG states only carry over on the same kind of device
            self.sampler.generator.set_state(torch.tensor(state["sampler_rng"], dtype=torch.uint8))
            self.gen.set_state(torch.tensor(state["gen_rng"], dtype=torch.uint8))
        except (RuntimeError, ValueError):
            self.sampler = ds.ToyVideoSampler(seed=self.seed + 7919 * self.step, device=self.device)
            self.gen = torch.Generator(device=self.device).manual_seed(self.seed + 1 + 7919 * self.step)
        return state

    # ---- phase 1: VAE
    def train_vae(self, steps: int, time_budget: float, log_every: int = 100) -> None:
        if self.vae_step >= steps or self.step > 0:  # never retrain the VAE once the UNet has started
            return
        opt = torch.optim.AdamW(self.vae.parameters(), lr=self.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
        t0 = time.time()
        self.vae.train()
        while self.vae_step < steps and time.time() - t0 < time_budget:
            clips, _ = self.sampler.sample(max(1, self.vae_batch // 4))
            # 4 random frames per clip
            fi = torch.randint(ds.NUM_FRAMES, (clips.shape[0], 4), generator=self.gen, device=self.device)
            x = torch.gather(clips, 1, fi[:, :, None, None, None].expand(-1, -1, *clips.shape[2:]))
            x = x.flatten(0, 1) * 2 - 1
            warm = min(1.0, (self.vae_step + 1) / 100)
            for g in opt.param_groups:
                g["lr"] = self.vae_lr * warm
            with torch.autocast("cuda", torch.bfloat16, enabled=self.autocast):
                post = self.vae.encode(x).latent_dist
                z = post.sample(generator=None)
                rec = self.vae.decode(z).sample.float()
            kl = post.kl().mean() / x[0].numel()
            loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-4 * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
            opt.step()
            self.vae_step += 1
            if self.vae_step % log_every == 0 or self.vae_step == steps:
                psnr = -10 * math.log10(F.mse_loss(rec.clamp(-1, 1) / 2, x / 2).item() + 1e-12)
                rec_ = {"phase": "vae", "step": self.vae_step, "loss": round(loss.item(), 5),
                        "psnr": round(psnr, 2), "t": round(time.time() - t0, 1)}
                self.log.append(rec_)
                print(json.dumps(rec_), flush=True)
        self.vae.eval().requires_grad_(False)
        # scaling factor: unit variance of the latents the UNet sees
        with torch.no_grad():
            clips, _ = self.sampler.sample(32)
            z = self.encode(clips, scale=False)
            self.vae.register_to_config(scaling_factor=float(1.0 / z.float().std()))
        print(json.dumps({"phase": "vae", "scaling_factor": self.vae.config.scaling_factor}), flush=True)

    @torch.no_grad()
    def encode(self, clips: torch.Tensor, scale: bool = True) -> torch.Tensor:
        """clips (B, F, 3, H, W) in [0,1] -> latents (B, C, F, h, w)."""
        B, Fr = clips.shape[:2]
        with torch.autocast("cuda", torch.bfloat16, enabled=self.autocast):
            z = self.vae.encode(clips.flatten(0, 1) * 2 - 1).latent_dist.mean.float()
        if scale:
            z = z * self.vae.config.scaling_factor
        return z.unflatten(0, (B, Fr)).permute(0, 2, 1, 3, 4).contiguous()

    @staticmethod
    def combo_index(p) -> torch.Tensor:
        return ((p.colour * len(ds.SHAPES) + p.shape) * len(ds.MOTIONS) + p.motion) * len(ds.BACKGROUNDS) \
            + p.background

    @torch.no_grad()
    def make_pool(self, n: int, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """A pool of freshly rendered clips, encoded once (bf16 latents + combination index): the VAE encoder
        at 64x64 costs about as much as a UNet step, so it is not run at every step."""
        zs, cs = [], []
        for i in range(0, n, chunk):
            clips, p = self.sampler.sample(min(chunk, n - i))
            zs.append(self.encode(clips).to(torch.bfloat16))
            cs.append(self.combo_index(p))
        return torch.cat(zs), torch.cat(cs)

    # ---- phase 2: UNet + text encoder
    def train_unet(self, steps: int, time_budget: float, log_every: int = 50, warmup: int = 200) -> None:
        if self.step >= steps:
            return
        self.vae.eval().requires_grad_(False)
        params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        opt = torch.optim.AdamW(params, lr=self.lr, betas=(0.9, 0.99), weight_decay=0.01)
        self.unet.train()
        self.text_encoder.train()
        t0, start_step, seen = time.time(), self.step, 0
        run_loss = []
        pool = None
        while self.step < steps and time.time() - t0 < time_budget:
            if self.pool_size:
                if pool is None or (self.step - start_step) % self.pool_refresh == 0:
                    pool = self.make_pool(self.pool_size)
                which = torch.randint(pool[0].shape[0], (self.batch,), generator=self.gen, device=self.device)
                z0, combo = pool[0][which].float(), pool[1][which]
            else:
                clips, p = self.sampler.sample(self.batch)
                z0, combo = self.encode(clips), self.combo_index(p)
            B = z0.shape[0]
            drop = torch.rand(B, generator=self.gen, device=self.device) < self.cond_drop
            combo = torch.where(drop, torch.full_like(combo, self.empty_index), combo)
            ids = self.caption_ids[combo]
            t = torch.randint(0, self.scheduler.config.num_train_timesteps, (B,), generator=self.gen,
                              device=self.device)
            noise = torch.randn(z0.shape, generator=self.gen, device=self.device)
            a = self.sqrt_acp[t].view(B, 1, 1, 1, 1)
            s = self.sqrt_1macp[t].view(B, 1, 1, 1, 1)
            zt = a * z0 + s * noise
            target = a * noise - s * z0
            k = self.step - start_step
            for g in opt.param_groups:
                g["lr"] = self.lr * min(1.0, (k + 1) / warmup)
            with torch.autocast("cuda", torch.bfloat16, enabled=self.autocast):
                # AnimateDiffPipeline repeats the prompt embedding once per frame; the UNet expects that
                emb = self.text_encoder(ids)[0].repeat_interleave(z0.shape[2], dim=0)
                pred = self.unet(zt, t, encoder_hidden_states=emb).sample
            pred = pred.float()
            loss = F.mse_loss(pred, target)
            if self.temporal_loss > 0:
                dp, dt = pred.diff(dim=2), target.diff(dim=2)
                loss = loss + self.temporal_loss * F.mse_loss(dp, dt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            self.step += 1
            seen += B
            d = min(self.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for src, dst in ((self.unet, self.ema_unet), (self.text_encoder, self.ema_text)):
                    ps = [q for q in src.parameters()]
                    pd_ = [q for q in dst.parameters()]
                    torch._foreach_lerp_(pd_, ps, 1 - d)
            run_loss.append(loss.detach())
            if self.step % log_every == 0 or self.step == steps:
                el = time.time() - t0
                rec = {"phase": "unet", "step": self.step, "loss": round(torch.stack(run_loss).mean().item(), 5),
                       "lr": round(opt.param_groups[0]["lr"], 7), "t": round(el, 1),
                       "clips_per_s": round(seen / max(el, 1e-6), 1)}
                run_loss = []
                self.log.append(rec)
                print(json.dumps(rec), flush=True)
        # buffers (none expected, but keep them in sync)
        for src, dst in ((self.unet, self.ema_unet), (self.text_encoder, self.ema_text)):
            for bs, bd in zip(src.buffers(), dst.buffers()):
                bd.copy_(bs)

    # ---- export
    def pipeline(self, ema: bool = True):
        from diffusers import AnimateDiffPipeline, DDIMScheduler

        pipe = AnimateDiffPipeline(
            vae=self.vae, text_encoder=self.ema_text if ema else self.text_encoder, tokenizer=self.tokenizer,
            unet=self.ema_unet if ema else self.unet, motion_adapter=None,
            scheduler=DDIMScheduler.from_config(self.scheduler.config))
        _eval(pipe)
        pipe.set_progress_bar_config(disable=True)
        return pipe


def export_pipeline(pipe, path: str | Path, fp16: bool = True) -> Path:
    """save_pretrained in fp16 (the shipped format) without touching the pipeline passed in."""
    path = Path(path)
    p = copy.deepcopy(pipe).to("cpu")
    if fp16:
        for m in (p.vae, p.text_encoder, p.unet):
            m.to(torch.float16)
    p.save_pretrained(str(path), safe_serialization=True)
    return path


@torch.no_grad()
def sample_strip(pipe, captions: list[str], path: str | Path, seed: int = 0, **kw) -> Path:
    """Generate one clip per caption and save them as a PNG grid (one row per caption, one column per frame)."""
    from PIL import Image

    settings = {**DEFAULT_SAMPLING, **kw}
    gens = [torch.Generator("cpu").manual_seed(seed) for _ in captions]
    frames = pipe(list(captions), generator=gens, output_type="np", **settings).frames  # (B, F, H, W, 3)
    frames = np.asarray(frames)
    B, Fr, H, W, _ = frames.shape
    grid = frames.transpose(0, 2, 1, 3, 4).reshape(B * H, Fr * W, 3)
    Image.fromarray((np.clip(grid, 0, 1) * 255).astype(np.uint8)).save(path)
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (checkpoint, log, samples, pipeline/)")
    ap.add_argument("--resume", default=None, help="folder holding a checkpoint written by this script")
    ap.add_argument("--steps", type=int, default=None, help="total UNet steps (default 20000; tiny: 4)")
    ap.add_argument("--vae-steps", type=int, default=None, help="total VAE steps (default 1500; tiny: 4)")
    ap.add_argument("--batch", type=int, default=None, help="clips per UNet step (default 128)")
    ap.add_argument("--vae-batch", type=int, default=None, help="frames per VAE step (default 512)")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--temporal-loss", type=float, default=1.0, help="weight of the loss on frame differences")
    ap.add_argument("--cond-drop", type=float, default=0.1, help="caption dropout (classifier-free guidance)")
    ap.add_argument("--time-budget", type=float, default=float("inf"),
                    help="seconds of training in this call (both phases); checkpoint and stop after it")
    ap.add_argument("--vae-time-budget", type=float, default=float("inf"), help="cap on the VAE phase (s)")
    ap.add_argument("--pool", type=int, default=0,
                    help="encode a pool of N clips at once and draw batches from it (0: encode every batch)")
    ap.add_argument("--pool-refresh", type=int, default=1000, help="steps between fresh pools")
    ap.add_argument("--warmup", type=int, default=None, help="LR warm-up steps of this call (default 200)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="tiny model and few steps: end to end on CPU in seconds")
    ap.add_argument("--no-export", action="store_true", help="skip writing OUT/pipeline")
    ap.add_argument("--samples", type=int, default=6, help="held-out captions in the sample strip (0: none)")
    ap.add_argument("--eval-guidance", type=float, nargs="*", default=None, help="guidance scales to evaluate")
    ap.add_argument("--eval", action="store_true", help="evaluate the EMA model on all held-out captions")
    args = ap.parse_args(argv)

    tiny = args.tiny
    steps = args.steps if args.steps is not None else (4 if tiny else 20000)
    vae_steps = args.vae_steps if args.vae_steps is not None else (4 if tiny else 1500)
    batch = args.batch or (2 if tiny else 128)
    vae_batch = args.vae_batch or (8 if tiny else 512)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.time()
    config = copy.deepcopy(TINY_CONFIG if tiny else DEFAULT_CONFIG)
    if args.resume:
        config = json.loads((Path(args.resume) / "state.json").read_text())["config"]
    tr = Trainer(config, args.seed, args.device, batch, vae_batch, args.lr, args.vae_lr, args.ema,
                 args.temporal_loss, args.cond_drop)
    tr.pool_size, tr.pool_refresh = args.pool, args.pool_refresh
    if args.resume:
        tr.load(Path(args.resume))
        print(json.dumps({"resumed": args.resume, "step": tr.step, "vae_step": tr.vae_step}), flush=True)
    budget = args.time_budget
    tr.train_vae(vae_steps, min(budget, args.vae_time_budget), log_every=1 if tiny else 100)
    tr.train_unet(steps, budget - (time.time() - t_start), log_every=1 if tiny else 50, warmup=args.warmup or (2 if tiny else 200))
    gpu_s = time.time() - t_start
    prev = json.loads((Path(args.resume) / "state.json").read_text()).get("train_seconds", 0.0) if args.resume \
        else 0.0
    tr.save(out, {"train_seconds": prev + gpu_s, "device": str(tr.device),
                  "device_name": torch.cuda.get_device_name() if tr.device.type == "cuda" else "cpu"})
    print(json.dumps({"saved": str(out), "step": tr.step, "vae_step": tr.vae_step,
                      "seconds_this_call": round(gpu_s, 1), "train_seconds": round(prev + gpu_s, 1)}), flush=True)
    pipe = tr.pipeline(ema=True)
    samp = {"num_inference_steps": 2} if tiny else {}
    if args.samples:
        caps = ds.heldout_captions()[:: max(1, len(ds.heldout_captions()) // args.samples)][: args.samples]
        sample_strip(pipe, caps, out / f"samples_{tr.step:06d}.png", **samp)
    if args.eval:
        from ...models.toy.evaluate import evaluate_toy_model, summarize

        for g in args.eval_guidance or [DEFAULT_SAMPLING["guidance_scale"]]:
            df = evaluate_toy_model(pipe, ds.heldout_captions(), seed=0, batch_size=65, guidance_scale=g, **samp)
            by = df.groupby("want_motion").motion_ok.mean().round(2).to_dict()
            print(json.dumps({"eval_step": tr.step, "guidance_scale": g, **summarize(df), "by_motion": by}),
                  flush=True)
    if not args.no_export:
        export_pipeline(pipe, out / "pipeline")
        print(json.dumps({"exported": str(out / "pipeline")}), flush=True)


if __name__ == "__main__":
    main()
