"""Bad input gets one clear error before any work; the pipeline is always left as it was."""

import numpy as np
import pytest
import torch
from conftest import ANIMATEDIFF_KW
from reference import has_leftovers

import ieadapt_interp as ia
from ieadapt_interp.core.adapters import denoiser

SPATIAL = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"


def _forward_count(pipe):
    calls = []
    return calls, denoiser(pipe).register_forward_pre_hook(lambda m, a: calls.append(1))


@pytest.mark.parametrize("call,error,match", [
    (lambda p: ia.generate(p, "a red circle", perturb={"down_blocks.1.attentions.0.transformer_block.0.attn1": "identity"},
                           **ANIMATEDIFF_KW), KeyError, "Closest valid names.*down_blocks.1.attentions.0.transformer_blocks.0.attn1"),
    (lambda p: ia.generate(p, "a red circle", perturb=ia.mix(1.5, SPATIAL), **ANIMATEDIFF_KW), ValueError, r"\[0, 1\]"),
    (lambda p: ia.generate(p, "a red circle", perturb=ia.scale(-0.1, SPATIAL), **ANIMATEDIFF_KW), ValueError, r"\[0, 1\]"),
    (lambda p: ia.trace(p, "a red circle", **{**ANIMATEDIFF_KW, "num_frames": 25}), ValueError, "maximum sequence length 24"),
    (lambda p: ia.trace(p, "   ", **ANIMATEDIFF_KW), ValueError, "prompt is empty"),
    (lambda p: ia.generate(p, "a red circle", perturb={SPATIAL: "zero"}, **ANIMATEDIFF_KW), ValueError, "identity' or 'uniform"),
    (lambda p: ia.trace(p, "a red circle", layers="nonsense_layer", **ANIMATEDIFF_KW), KeyError, "Unknown attention layer"),
    (lambda p: ia.trace(p, "a red circle", branch="both", guidance_scale=1.0, **ANIMATEDIFF_KW), ValueError, "guidance"),
    (lambda p: ia.generate(p, "a red circle", perturb=ia.identity(ia.Layers(kinds="joint")), **ANIMATEDIFF_KW), ValueError, "matches no attention layer"),
])
def test_bad_input_fails_before_work_and_leaves_nothing(animatediff, call, error, match):
    calls, handle = _forward_count(animatediff)
    try:
        with pytest.raises(error, match=match):
            call(animatediff)
    finally:
        handle.remove()
    assert calls == []  # raised before any denoising work
    assert has_leftovers(animatediff) == []


def test_unsupported_architecture_names_the_supported_ones():
    from diffusers import DDIMScheduler, StableDiffusionPipeline  # noqa: F401

    class Fake:
        unet = torch.nn.Linear(1, 1)

    with pytest.raises(TypeError, match="Supported: animatediff.*cogvideox"):
        ia.attention_layers(Fake())


def test_restored_after_exception_and_bit_identical_afterwards(animatediff):
    def boom(pipe, step, timestep, kwargs):
        raise RuntimeError("user callback failed")

    fresh = ia.tiny_pipeline("animatediff", seed=0)
    reference = ia.generate(fresh, "a red circle", **ANIMATEDIFF_KW).video
    processors = dict(animatediff.unet.attn_processors)
    with pytest.raises(RuntimeError, match="user callback failed"):
        ia.trace(animatediff, "a red circle", perturb=ia.uniform("temporal"), callback_on_step_end=boom,
                 maps=ia.MapRequest(layers=SPATIAL), **ANIMATEDIFF_KW)
    assert has_leftovers(animatediff) == []
    assert animatediff.unet.attn_processors == processors
    assert not torch.overrides._get_current_function_mode_stack()  # no torch-function mode left behind
    ia.generate(animatediff, "a red circle", perturb=ia.identity("spatial"), **ANIMATEDIFF_KW)
    after = animatediff(prompt="a red circle", guidance_scale=7.5, output_type="np",
                        generator=torch.Generator().manual_seed(0), **ANIMATEDIFF_KW).frames[0]
    np.testing.assert_array_equal((np.clip(after, 0, 1) * 255).round().astype(np.uint8), reference)


def test_adapter_layer_table(animatediff, cogvideox):
    df = ia.attention_layers(animatediff)
    assert df.kind.value_counts().to_dict() == {"temporal": 40, "spatial": 16, "cross": 16}
    spatial = df[df.kind == "spatial"]
    assert spatial.block.tolist()[:2] == ["down.0", "down.0"] and spatial.block.tolist()[6] == "mid"
    assert spatial["index"].tolist() == list(range(1, 17))
    motion = df[df.kind == "temporal"]
    assert set(motion.name.str[-5:]) == {"attn1", "attn2"}  # both attentions of a motion module are temporal
    cog = ia.attention_layers(cogvideox)
    assert cog.kind.tolist() == ["joint", "joint"] and cog.block.tolist() == ["depth.0", "depth.1"]


def test_mid_block_motion_module_is_temporal():
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    pipe = ia.tiny_pipeline("animatediff")
    unet2d = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, cross_attention_dim=16, attention_head_dim=2,
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    adapter = MotionAdapter(block_out_channels=(8, 16), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=4, use_motion_mid_block=True)
    pipe.unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    df = ia.attention_layers(pipe)
    mid = df[df.block == "mid"]
    assert set(mid.kind) == {"spatial", "cross", "temporal"}
    assert (df.kind == "spatial").sum() == 1 + 1 + 2  # down.0, mid, up.1 ×2


def test_sdxl_layout_motion_unet_is_supported():
    """SDXL-style blocks (several transformer blocks per attention) keep forward order and kinds."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    unet2d = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, cross_attention_dim=16, attention_head_dim=2,
        norm_num_groups=4, transformer_layers_per_block=(1, 2),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    adapter = MotionAdapter(block_out_channels=(8, 16), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=4, use_motion_mid_block=False)
    pipe = ia.tiny_pipeline("animatediff")
    pipe.unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    df = ia.attention_layers(pipe)
    spatial = df[df.kind == "spatial"]
    assert spatial.name.tolist()[:2] == ["down_blocks.1.attentions.0.transformer_blocks.0.attn1",
                                         "down_blocks.1.attentions.0.transformer_blocks.1.attn1"]
    assert spatial["index"].tolist() == list(range(1, len(spatial) + 1))


def test_load_pipeline_missing_weights_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="Download the base model"):
        ia.load_pipeline(tmp_path / "no_such_model")
    (tmp_path / "base").mkdir()
    with pytest.raises(FileNotFoundError, match="motion_adapter"):
        ia.load_pipeline(tmp_path / "base")
