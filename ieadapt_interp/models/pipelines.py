"""Building and loading video diffusion pipelines.

* :func:`load_pipeline` — the one entry: every model spec (:mod:`ieadapt_interp.models.specs`): ``None``
  (the embedded model), ``"tiny:animatediff"`` / ``"tiny:cogvideox"``, a folder, or a hub id already in the
  local Hugging Face cache.
* :func:`tiny_pipeline` — the builder behind ``"tiny:<arch>"``: a random-initialised pipeline built only from
  configs (offline tokenizers, every component in eval mode), with a ``seed``. Tests use it.

Example
-------
>>> pipe = load_pipeline("tiny:animatediff")
>>> type(pipe).__name__
'AnimateDiffPipeline'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from ..core.errors import IEAdaptFileNotFoundError, IEAdaptValueError

Arch = Literal["animatediff", "cogvideox"]

#: Words every tiny tokenizer knows (prompts outside it map to the unknown token).
_TINY_WORDS = (
    "a an the of on in and with to is at by moving staying still left right up down fast slow big small "
    "red green blue yellow purple orange white black gray pink cyan brown circle square triangle star "
    "background cat dog car boat bird person walking running flying water sky city forest beach snow "
    "astronaut horse riding photo video painting sunset night day"
).split()


def clip_tokenizer(words: tuple[str, ...] = tuple(_TINY_WORDS), max_length: int = 77):
    """A real ``CLIPTokenizer`` over a small word vocabulary, built offline.

    Each word is one BPE token (merges join its characters left to right).

    >>> tok = clip_tokenizer()
    >>> len(tok("a red circle").input_ids)
    5
    """
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for special in ("<|startoftext|>", "<|endoftext|>"):
        add(special)
    for code in range(33, 127):
        add(chr(code))
        add(chr(code) + "</w>")
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in merges:
                merges.append((current, piece))
            current = current + piece
            add(current)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.model_max_length = max_length
    return tok


def t5_tokenizer(words: tuple[str, ...] = tuple(_TINY_WORDS), max_length: int = 16):
    """A real ``T5Tokenizer`` (unigram) over a small word vocabulary, built offline."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -1.0) for w in words]
    pieces += [(chr(c), -5.0) for c in range(97, 123)]
    tok = T5Tokenizer(vocab=pieces, extra_ids=0)
    tok.model_max_length = max_length
    return tok


def _eval(pipe):
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval().requires_grad_(False)
    return pipe


def _tiny_animatediff():
    from diffusers import (AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter,
                           UNet2DConditionModel, UNetMotionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    # SD 1.5's block layout (16 spatial self-attention layers), tiny widths.
    unet = UNet2DConditionModel(
        block_out_channels=(8, 8, 16, 16), layers_per_block=2, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
    )
    adapter = MotionAdapter(
        block_out_channels=(8, 8, 16, 16), motion_layers_per_block=2, motion_num_attention_heads=2,
        motion_norm_num_groups=4, motion_max_seq_length=24, use_motion_mid_block=False,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32,
        num_attention_heads=2, num_hidden_layers=2, vocab_size=1000, max_position_embeddings=77,
        projection_dim=16,
    ))
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False, timestep_spacing="trailing")
    return AnimateDiffPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), scheduler=scheduler,
        unet=UNetMotionModel.from_unet2d(unet, adapter), motion_adapter=adapter,
    )


def _tiny_cogvideox():
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline
    from diffusers import CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=16, num_layers=2, sample_width=4, sample_height=4, sample_frames=9, patch_size=1,
        temporal_compression_ratio=4, max_text_seq_length=16,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    )
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=200, d_model=16, d_ff=32, d_kv=8, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8, decoder_start_token_id=0,
    ))
    return CogVideoXPipeline(
        tokenizer=t5_tokenizer(), text_encoder=text_encoder, vae=vae, transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(),
    )


_TINY_BUILDERS = {"animatediff": _tiny_animatediff, "cogvideox": _tiny_cogvideox}


def tiny_pipeline(arch: Arch = "animatediff", seed: int = 0):
    """A random-initialised pipeline of the given architecture, built only from configs.

    The builder behind the spec ``"tiny:<arch>"``: the documented entry is
    :func:`load_pipeline` ``("tiny:<arch>")`` (seed 0); call this directly only for another ``seed``.
    Deterministic by ``seed``; no downloads; every module in eval mode with gradients off.
    AnimateDiff keeps SD 1.5's block layout (16 spatial self-attention layers) at tiny widths;
    it generates 16×16 px videos in well under a second per step on CPU.

    >>> pipe = tiny_pipeline("cogvideox", seed=1)
    >>> pipe.transformer.config.num_layers
    2
    """
    from .tiny import TINY_BUILDERS  # the models people run today (Wan, LTX-Video, …)

    builders = {**_TINY_BUILDERS, **TINY_BUILDERS}
    if arch not in builders:
        raise IEAdaptValueError(f"tiny_pipeline: unknown arch {arch!r}; choose one of {sorted(builders)}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = builders[arch]()
    pipe.set_progress_bar_config(disable=True)
    return _eval(pipe)


def _default_dtype(device: str, dtype: torch.dtype | None, half: torch.dtype) -> torch.dtype:
    if dtype is not None:
        return dtype
    return half if str(device).startswith("cuda") else torch.float32


def _require(path: str | os.PathLike | None, what: str, how: str) -> Path:
    if path is None or not Path(path).exists():
        raise IEAdaptFileNotFoundError(
            f"{what} not found at {path!r}. {how} "
            "Nothing is downloaded by this package: pass a local folder (or a repo id already in the "
            "Hugging Face cache)."
        )
    return Path(path)


def _is_toy_folder(index: Path) -> bool:
    """True for a saved pipeline whose ``model_index.json`` holds a ``UNetMotionModel`` (the embedded model's form)."""
    import json

    if not index.is_file():
        return False
    unet = json.loads(index.read_text()).get("unet", [None, None])
    return isinstance(unet, list) and unet[-1] == "UNetMotionModel"


def _resolve(path_or_id: str | os.PathLike) -> str:
    """A local folder as is; a repo id through the Hugging Face cache (offline)."""
    if Path(path_or_id).exists():
        return str(path_or_id)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(str(path_or_id), local_files_only=True)
    except Exception:
        return str(path_or_id)


#: Pipelines saved whole (``save_pretrained``) that load as they are, with their default dtype on CUDA.
NATIVE_PIPELINES = {
    "WanPipeline": torch.bfloat16, "LattePipeline": torch.float16, "LTXPipeline": torch.bfloat16,
    "HunyuanVideoPipeline": torch.bfloat16, "MochiPipeline": torch.bfloat16,
    "StableVideoDiffusionPipeline": torch.float16, "AnimateDiffSDXLPipeline": torch.float16,
}  # a whole AnimateDiffPipeline folder loads as the embedded model's form (_is_toy_folder)


def _native_pipeline(folder: Path, device: str, dtype: torch.dtype | None):
    """A folder whose ``model_index.json`` names one of :data:`NATIVE_PIPELINES` with every component
    present (an AnimateDiff folder must hold its motion UNet); ``None`` for other folders."""
    import json

    index = folder / "model_index.json"
    if not index.exists():
        return None
    spec = json.loads(index.read_text())
    name = spec.get("_class_name")
    if name not in NATIVE_PIPELINES or (name.startswith("AnimateDiff")
                                        and spec.get("unet", [None, None])[1] != "UNetMotionModel"):
        return None  # an AnimateDiff base model without its motion modules: the `motion_adapter=` path
    missing = [k for k, v in spec.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None
               and not (folder / k).is_dir()]
    if missing:
        raise IEAdaptFileNotFoundError(
            f"{folder} holds a {name} whose model_index.json lists components that are missing: "
            f"{', '.join(missing)}. Copy those sub-folders from the original checkpoint (e.g. `vae/`, "
            f"`text_encoder/`) next to model_index.json.")
    import diffusers

    torch_dtype = _default_dtype(device, dtype, NATIVE_PIPELINES[name])
    pipe = getattr(diffusers, name).from_pretrained(folder, torch_dtype=torch_dtype)
    return _eval(pipe.to(device))


def load_pipeline(
    model: str | os.PathLike | None = None,
    *,
    motion_adapter: str | os.PathLike | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
):
    """Load a video diffusion pipeline.

    Parameters
    ----------
    model
        A model spec (:mod:`ieadapt_interp.models.specs`). ``None`` → the embedded default model, shipped
        inside the package (runs on a laptop CPU). ``"tiny:<arch>"`` → :func:`tiny_pipeline` ``(arch)``
        (random weights). A folder or cached repo id: a saved pipeline (``model_index.json``), an AnimateDiff
        base model (SD 1.5 / SDXL layout, with ``motion_adapter=`` naming the adapter folder) or a CogVideoX
        pipeline folder. Older spellings (``"default"``, ``"tiny-animatediff"``, ``("tiny", arch)``) work for
        one release with a ``DeprecationWarning``.
    device
        Defaults to ``"cuda"`` when available, else ``"cpu"`` (the embedded and tiny models: CPU).
    dtype
        Defaults to fp16 (AnimateDiff) / bf16 (CogVideoX) on CUDA and fp32 on CPU.

    Example
    -------
    >>> pipe = load_pipeline("tiny:cogvideox")
    >>> type(pipe).__name__
    'CogVideoXPipeline'
    >>> pipe = load_pipeline()            # doctest: +SKIP
    >>> pipe = load_pipeline("~/models/CogVideoX-5b")   # doctest: +SKIP
    """
    from .specs import canonical_spec, tiny_arch

    model = canonical_spec(model)
    if model is None:
        from ..models.toy import load_toy_pipeline

        pipe = load_toy_pipeline(device=device or "cpu", dtype=dtype or torch.float32)
        pipe.set_progress_bar_config(disable=True)
        return _eval(pipe)
    arch = tiny_arch(model)
    if arch is not None:
        if motion_adapter is not None:
            raise IEAdaptValueError(f"{model!r} is a whole random-initialised pipeline: drop motion_adapter=.")
        pipe = tiny_pipeline(arch)
        return pipe.to(device=device, dtype=dtype) if (device or dtype) else pipe
    folder = Path(_resolve(os.path.expanduser(str(model))))
    _require(folder, "Model folder", "Download the base model (e.g. SG161222/Realistic_Vision_V5.1_noVAE or "
             "THUDM/CogVideoX-5b) on a machine with internet access and copy the folder here.")
    index = folder / "model_index.json"
    native = _native_pipeline(folder, device or ("cuda" if torch.cuda.is_available() else "cpu"), dtype)
    if native is not None:  # Wan, LTX-Video, HunyuanVideo, … saved whole
        return native
    if _is_toy_folder(index) and motion_adapter is None:  # a saved toy-style pipeline (UNetMotionModel inside)
        from ..models.toy import load_toy_pipeline

        return load_toy_pipeline(folder, device=device or "cpu", dtype=dtype or torch.float32)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if (folder / "transformer").exists() and "CogVideoX" in (index.read_text() if index.exists() else ""):
        from diffusers import CogVideoXPipeline

        pipe = CogVideoXPipeline.from_pretrained(folder, torch_dtype=_default_dtype(device, dtype, torch.bfloat16))
    else:
        from diffusers import AnimateDiffPipeline, AnimateDiffSDXLPipeline, MotionAdapter

        adapter_dir = _require(
            _resolve(os.path.expanduser(str(motion_adapter))) if motion_adapter else None,
            "Motion adapter", "AnimateDiff needs `motion_adapter=` pointing at a MotionAdapter folder "
            "(e.g. guoyww/animatediff-motion-adapter-v1-5-3).",
        )
        torch_dtype = _default_dtype(device, dtype, torch.float16)
        adapter = MotionAdapter.from_pretrained(adapter_dir, torch_dtype=torch_dtype)
        is_xl = (folder / "text_encoder_2").exists()
        cls = AnimateDiffSDXLPipeline if is_xl else AnimateDiffPipeline
        pipe = cls.from_pretrained(folder, motion_adapter=adapter, torch_dtype=torch_dtype)
    return _eval(pipe.to(device))
