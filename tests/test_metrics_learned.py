"""Learned metrics through their real code paths (loaders, preprocessing, architectures) with random weights.

Weights are random-initialised models of the real classes, saved where a user would put real ones
(``$IEADAPT_WEIGHTS_DIR``) and loaded by the same functions; expected values are recomputed by hand
(VBench's torchvision transforms, explicit cosines)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.transforms import CenterCrop, InterpolationMode, Normalize, Resize

from ieadapt_interp.metrics import (
    MUSIQ,
    MissingWeightsError,
    clip_directional_similarity,
    clip_score,
    compute_metrics,
    imaging_quality,
    load_clip,
    load_dino,
    load_lpips,
    lpips,
    subject_consistency,
)
from ieadapt_interp.metrics.musiq import multiscale_patches
from ieadapt_interp.metrics.vbench import consistency_from_features

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty ``$IEADAPT_WEIGHTS_DIR``, with every other cache pointed at empty folders."""
    import huggingface_hub.constants as hf_constants

    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("IEADAPT_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    return folder


def video_rng(frames: int = 3, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size + 8, 3), dtype=np.uint8)


def vbench_clip_transform(video: np.ndarray, size: int) -> torch.Tensor:
    """VBench ``clip_transform`` exactly as VBench applies it (to a uint8 tensor)."""
    frames = torch.from_numpy(video).permute(0, 3, 1, 2)
    frames = CenterCrop(size)(Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=False)(frames))
    return Normalize(CLIP_MEAN, CLIP_STD)(frames.float() / 255.0)


# ------------------------------------------------------------------ missing weights
@pytest.mark.parametrize(
    "name, filename",
    [
        ("lpips", "alexnet-owt-7be5be79.pth"),
        ("aesthetic_quality", "sa_0_4_vit_l_14_linear.pth"),
        ("imaging_quality", "musiq_spaq_ckpt-358bb6af.pth"),
        ("subject_consistency", "dino_vitbase16_pretrain.pth"),
        ("motion_smoothness", "amt-s.pth"),
        ("clip_score", "clip-vit-large-patch14"),
        ("clip_directional_similarity", "clip-vit-large-patch14"),
    ],
)
def test_missing_weights_name_the_file_and_where_to_put_it(weights_dir, name, filename):
    video = video_rng()
    kwargs = {"reference": video, "prompt": "a cat", "source_prompt": "a cat", "target_prompt": "a dog"}
    with pytest.raises(MissingWeightsError) as info:
        compute_metrics([name], video, **kwargs)
    assert info.value.metric == name and info.value.filename == filename
    assert str(weights_dir / filename) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    reasons: dict[str, str] = {}
    out = compute_metrics([name], video, on_missing="nan", reasons=reasons, **kwargs)
    assert math.isnan(out[name]) and filename in reasons[name]


def test_explicit_missing_path_is_reported(weights_dir):
    with pytest.raises(MissingWeightsError, match="nowhere.pth"):
        load_lpips(weights_dir / "nowhere.pth")


# ------------------------------------------------------------------ LPIPS
def test_lpips_real_loader_with_random_alexnet(weights_dir):
    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet().state_dict()
    torch.save(alexnet, weights_dir / "alexnet-owt-7be5be79.pth")
    model = load_lpips()
    assert torch.equal(getattr(model.net.slice2, "3").weight, alexnet["features.3.weight"])
    assert not model.training
    video = video_rng(size=64)
    assert compute_metrics(["lpips"], video, reference=video)["lpips"] == pytest.approx(0.0, abs=1e-7)
    assert lpips(video, 255 - video) > 0


# ------------------------------------------------------------------ aesthetic quality
def test_aesthetic_quality_matches_vbench_formula(weights_dir):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=768,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(weights_dir / "clip-vit-large-patch14")
    head = torch.nn.Linear(768, 1)
    torch.save(head.state_dict(), weights_dir / "sa_0_4_vit_l_14_linear.pth")

    video = video_rng(frames=3)
    value = compute_metrics(["aesthetic_quality"], video)["aesthetic_quality"]

    clip = CLIPVisionModelWithProjection.from_pretrained(weights_dir / "clip-vit-large-patch14").eval()
    with torch.no_grad():
        embeds = F.normalize(clip(pixel_values=vbench_clip_transform(video, 32)).image_embeds, dim=-1)
        expected = (head(embeds).squeeze(-1) / 10).mean().item()
    assert value == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------ imaging quality (MUSIQ)
def test_musiq_architecture_matches_pyiqa_checkpoint_layout():
    state = MUSIQ().state_dict()
    assert state["transformer_encoder.posembed_input.position_emb"].shape == (1, 100, 384)
    assert state["transformer_encoder.scaleembed_input.scale_emb"].shape == (3, 384)
    assert state["embedding.weight"].shape == (384, 256 * 8 * 8)
    assert "transformer_encoder.transformer.encoderblock_13.attention.query.weight" in state
    assert {"block1.conv_proj.weight", "block1.gn_proj.weight", "conv_root.weight", "head.weight"} <= set(
        state
    )
    assert sum(v.numel() for v in state.values()) == pytest.approx(27.1e6, rel=0.05)


def test_musiq_multiscale_tokens():
    tokens = multiscale_patches(torch.zeros(1, 3, 64, 96), patch=32, grid=10, longer_sides=[224, 384])
    # 224: 149×224 → 5×7 = 35 patches padded to 49; 384: 256×384 → 8×12 = 96 padded to 144; original: 2×3 = 6
    assert tokens.shape == (1, 49 + 144 + 6, 3 * 32 * 32 + 3)
    mask, scale, position = tokens[0, :, -1], tokens[0, :, -2], tokens[0, :, -3]
    assert mask.sum() == 35 + 96 + 6
    assert scale[193:].eq(2).all() and position.max() < 100


def test_imaging_quality_real_loader(weights_dir):
    torch.manual_seed(0)
    model = MUSIQ()
    torch.save(
        {"params": {f"module.{k}": v for k, v in model.state_dict().items()}},
        weights_dir / "musiq_spaq_ckpt-358bb6af.pth",
    )
    video = video_rng(frames=2, size=48)
    value = imaging_quality(video)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255).mean().item() / 100
    assert value == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ subject consistency (DINO)
def test_subject_consistency_formula_on_hand_made_features():
    features = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # t=1: (1 + 1)/2 = 1; t=2: (0 + 0)/2 = 0; t=3: (max(0, cos(f3, f2)=0) + max(0, -1))/2 = 0
    assert consistency_from_features(features) == pytest.approx(1 / 3)
    diagonal = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert consistency_from_features(diagonal) == pytest.approx(math.sqrt(0.5))


def tiny_dino_hub_state(hidden: int = 128, depth: int = 2, patch: int = 16, grid: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    shapes = {
        "cls_token": (1, 1, hidden),
        "pos_embed": (1, grid * grid + 1, hidden),
        "patch_embed.proj.weight": (hidden, 3, patch, patch),
        "patch_embed.proj.bias": (hidden,),
        "norm.weight": (hidden,),
        "norm.bias": (hidden,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (hidden,),
            b + "norm1.bias": (hidden,),
            b + "norm2.weight": (hidden,),
            b + "norm2.bias": (hidden,),
            b + "attn.qkv.weight": (3 * hidden, hidden),
            b + "attn.qkv.bias": (3 * hidden,),
            b + "attn.proj.weight": (hidden, hidden),
            b + "attn.proj.bias": (hidden,),
            b + "mlp.fc1.weight": (4 * hidden, hidden),
            b + "mlp.fc1.bias": (4 * hidden,),
            b + "mlp.fc2.weight": (hidden, 4 * hidden),
            b + "mlp.fc2.bias": (hidden,),
        }
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}


def test_dino_torch_hub_checkpoint_converts(weights_dir):
    hub = tiny_dino_hub_state()
    torch.save(hub, weights_dir / "dino_vitbase16_pretrain.pth")
    model = load_dino()  # found in $IEADAPT_WEIGHTS_DIR, converted
    state = model.state_dict()
    q_key = next(k for k in state if k.endswith(("q_proj.weight", "attention.query.weight")))
    assert torch.equal(state[q_key], hub["blocks.0.attn.qkv.weight"][:128])
    assert model.config.num_attention_heads == 2 and model.config.image_size == 32
    video = np.repeat(video_rng(frames=1, size=40), 4, axis=0)
    assert subject_consistency(video) == pytest.approx(1.0, abs=1e-6)  # static video
    assert subject_consistency(video_rng(frames=4, size=40), model=model) <= 1.0


def test_subject_consistency_hf_folder_matches_formula(weights_dir):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=16,
        layer_norm_eps=1e-6,
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(weights_dir / "dino-vitb16")
    video = video_rng(frames=3, size=32)
    value = subject_consistency(video)
    model = ViTModel.from_pretrained(weights_dir / "dino-vitb16", add_pooling_layer=False).eval()
    frames = Resize(32, antialias=False)(torch.from_numpy(video).permute(0, 3, 1, 2)).float() / 255
    pixels = Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(frames)
    with torch.no_grad():
        feats = F.normalize(
            model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0], dim=-1
        )
    sims = [(max(0, float(feats[t] @ feats[t - 1])) + max(0, float(feats[t] @ feats[0]))) / 2 for t in (1, 2)]
    assert value == pytest.approx(np.mean(sims), abs=1e-5)


# ------------------------------------------------------------------ CLIP score / directional similarity
def save_tiny_clip(folder) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab: dict[str, int] = {}
    for code in range(33, 127):
        vocab[chr(code)] = len(vocab)
        vocab[chr(code) + "</w>"] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def manual_clip(bundle, video: np.ndarray, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        image = bundle.model.get_image_features(pixel_values=vbench_clip_transform(video, 32))
        tokens = bundle.tokenizer(prompts, padding=True, return_tensors="pt")
        text = bundle.model.get_text_features(**tokens)
    image = getattr(image, "pooler_output", image)
    text = getattr(text, "pooler_output", text)
    return F.normalize(image, dim=-1), F.normalize(text, dim=-1)


def test_clip_score_matches_manual_cosine(weights_dir):
    save_tiny_clip(weights_dir / "clip-vit-large-patch14")
    video = video_rng(frames=3)
    value = compute_metrics(["clip_score"], video, prompt="a red ball")["clip_score"]
    bundle = load_clip()
    image, text = manual_clip(bundle, video, ["a red ball"])
    cosines = (image @ text[0]).tolist()
    expected = np.mean([100 * max(c, 0.0) for c in cosines])
    assert value == pytest.approx(expected, abs=1e-4)
    assert clip_score(video, "a red ball", model=bundle) == pytest.approx(value)


def test_clip_directional_similarity_matches_manual(weights_dir):
    save_tiny_clip(weights_dir / "clip-vit-large-patch14")
    source, edit = video_rng(frames=2, seed=1), video_rng(frames=2, seed=2)
    bundle = load_clip()
    value = clip_directional_similarity(edit, source, "a cat", "a dog", model=bundle)
    image_edit, text = manual_clip(bundle, edit, ["a cat", "a dog"])
    image_source, _ = manual_clip(bundle, source, ["a cat"])
    expected = F.cosine_similarity(image_edit - image_source, (text[1] - text[0])[None], dim=-1).mean().item()
    assert value == pytest.approx(expected, abs=1e-5)
    assert clip_directional_similarity(source, source, "a cat", "a dog", model=bundle) == 0.0
