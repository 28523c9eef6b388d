"""The embedded toy text-to-video model: AnimateDiff's architecture at toy scale, built from diffusers' own
classes (UNet2DConditionModel + MotionAdapter -> UNetMotionModel, AutoencoderKL, CLIPTextModel with an offline
word-level CLIPTokenizer, DDIM with v-prediction and zero-terminal SNR) and wrapped as an AnimateDiffPipeline.
"""

from __future__ import annotations

import copy
import itertools
import os
import warnings
from pathlib import Path

import torch

from ...models.toy.dataset import VOCAB_WORDS
from ...core.errors import IEAdaptFileNotFoundError

#: The sampler settings the package uses by default for the toy model.
DEFAULT_SAMPLING: dict = {
    "num_frames": 16,
    "height": 64,
    "width": 64,
    "num_inference_steps": 25,
    "guidance_scale": 5.0,
}

#: architecture of the shipped model (see data/toy_t2v/README.md)
DEFAULT_CONFIG: dict = {
    "vae": {
        "block_out_channels": (32, 64, 64),  # 2 downsamplings: x4, 64x64 frames -> 16x16 latents
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 16,
    },
    "text": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
             "max_position_embeddings": 16},
    "unet": {
        "block_out_channels": (64, 128, 192),
        "layers_per_block": 1,
        "attention_head_dim": 32,  # heads = channels / 32 in the spatial transformers
        "norm_num_groups": 16,
    },
    "motion": {
        "motion_layers_per_block": 1,
        "motion_num_attention_heads": 4,
        "motion_norm_num_groups": 16,
        "motion_max_seq_length": 32,
        "use_motion_mid_block": True,
    },
    "scheduler": {
        "num_train_timesteps": 1000,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 0,
    },
}

TINY_CONFIG: dict = copy.deepcopy(DEFAULT_CONFIG)
TINY_CONFIG["vae"].update(block_out_channels=(8, 16, 16), norm_num_groups=4)
TINY_CONFIG["text"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
TINY_CONFIG["unet"].update(block_out_channels=(16, 32, 32), attention_head_dim=8, norm_num_groups=4)
TINY_CONFIG["motion"].update(motion_layers_per_block=1, motion_num_attention_heads=2, motion_norm_num_groups=4)

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def build_tokenizer(max_length: int = 16):
    """A CLIPTokenizer whose BPE vocabulary holds every word of the toy grammar as one token (built offline)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for ch in sorted({c for w in VOCAB_WORDS for c in w}):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []

    def pieces(word: str) -> list[str]:
        """apply the current merges to a word, as BPE does (lowest rank first)."""
        ranks = {m: i for i, m in enumerate(merges)}
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(itertools.pairwise(parts))]
            r, i = min(pairs)
            if r == 1 << 30:
                break
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
        return parts

    changed = True
    while changed:
        changed = False
        for w in VOCAB_WORDS:
            p = pieces(w)
            if len(p) > 1:
                merges.append((p[0], p[1]))
                vocab.setdefault(p[0] + p[1], len(vocab))
                changed = True
    tok = CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=max_length)
    for w in VOCAB_WORDS:  # every grammar word is exactly one token
        ids = tok(w, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, (w, ids)
    return tok


def _build_components(config: dict, seed: int):
    from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(config["text"]["max_position_embeddings"])
    vc = config["vae"]
    n = len(vc["block_out_channels"])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(vc["block_out_channels"]), layers_per_block=vc["layers_per_block"],
        latent_channels=vc["latent_channels"], norm_num_groups=vc["norm_num_groups"], sample_size=64,
        scaling_factor=1.0,
    )
    tc = config["text"]
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=tc["hidden_size"], intermediate_size=tc["intermediate_size"],
        num_hidden_layers=tc["num_hidden_layers"], num_attention_heads=tc["num_attention_heads"],
        max_position_embeddings=tc["max_position_embeddings"], projection_dim=tc["hidden_size"],
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    uc = config["unet"]
    boc = tuple(uc["block_out_channels"])
    nb = len(boc)
    unet2d = UNet2DConditionModel(
        sample_size=64 // 2 ** (n - 1), in_channels=vc["latent_channels"], out_channels=vc["latent_channels"],
        down_block_types=("CrossAttnDownBlock2D",) * (nb - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (nb - 1),
        block_out_channels=boc, layers_per_block=uc["layers_per_block"],
        cross_attention_dim=tc["hidden_size"], attention_head_dim=[c // uc["attention_head_dim"] for c in boc],
        norm_num_groups=uc["norm_num_groups"],
    )
    mc = config["motion"]
    adapter = MotionAdapter(
        block_out_channels=boc, motion_layers_per_block=mc["motion_layers_per_block"],
        motion_num_attention_heads=mc["motion_num_attention_heads"],
        motion_norm_num_groups=mc["motion_norm_num_groups"], motion_max_seq_length=mc["motion_max_seq_length"],
        use_motion_mid_block=mc["use_motion_mid_block"],
    )
    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    scheduler = DDIMScheduler(**config["scheduler"])
    return vae, text_encoder, tokenizer, unet, scheduler


def build_toy_pipeline(config: dict | None = None, seed: int = 0):
    """A randomly initialised toy AnimateDiffPipeline (eval mode, float32, CPU)."""
    from diffusers import AnimateDiffPipeline

    vae, text_encoder, tokenizer, unet, scheduler = _build_components(config or DEFAULT_CONFIG, seed)
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                               motion_adapter=None, scheduler=scheduler)
    _eval(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _eval(pipe):
    for m in (pipe.vae, pipe.text_encoder, pipe.unet):
        m.eval()
        m.requires_grad_(False)


def default_model_path() -> Path:
    """Where the shipped model lives: ``$IEADAPT_TOY_MODEL`` if set, else the package folder
    ``ieadapt_interp/models/toy/toy_t2v``.

    In a clone that folder is a link to ``data/toy_t2v``; an installed wheel (``pip install .``) holds the
    files themselves (package data), so the model is found without the repository.

    >>> (default_model_path() / "model_index.json").is_file()
    True
    """
    env = os.environ.get("IEADAPT_TOY_MODEL")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "toy_t2v"


def load_toy_pipeline(path: str | Path | None = None, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32):
    """Load the embedded toy model (an AnimateDiffPipeline) in eval mode, with no network access."""
    from diffusers import AnimateDiffPipeline

    path = Path(path) if path is not None else default_model_path()
    if not (path / "model_index.json").is_file():
        raise IEAdaptFileNotFoundError(
            f"no toy text-to-video pipeline at {path} (model_index.json missing). The shipped model lives in "
            "data/toy_t2v of the repository (ieadapt_interp/models/toy/toy_t2v in an installed wheel); retrain it "
            "with `python -m ieadapt_interp.models.toy.train --out DIR "
            "--device cuda` (see data/toy_t2v/README.md) and pass path=DIR/pipeline or set IEADAPT_TOY_MODEL."
        )
    with warnings.catch_warnings():  # diffusers >= 0.42 renames torch_dtype to dtype; older ones lack dtype
        warnings.simplefilter("ignore", FutureWarning)
        pipe = AnimateDiffPipeline.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
    pipe.to(device)
    _eval(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def count_parameters(pipe) -> dict[str, int]:
    unet = pipe.unet
    motion = sum(p.numel() for n, p in unet.named_parameters() if "motion_modules" in n)
    out = {
        "vae": sum(p.numel() for p in pipe.vae.parameters()),
        "text_encoder": sum(p.numel() for p in pipe.text_encoder.parameters()),
        "unet": sum(p.numel() for p in unet.parameters()),
        "unet_motion": motion,
    }
    out["total"] = out["vae"] + out["text_encoder"] + out["unet"]
    return out
