"""Tiny random-initialised pipelines of the video models people run today, built offline from configs.

Each builder returns a real diffusers pipeline (the real denoiser, VAE, text/image encoder and
scheduler classes) at tiny widths, so that every adapter is exercised on CPU in seconds:

===================  ============================================  =========================================
arch                 pipeline / denoiser                           attention layers (kinds)
===================  ============================================  =========================================
``wan``              ``WanPipeline`` / ``WanTransformer3DModel``   2 blocks: ``attn1`` joint (3-D full
                                                                   self-attention over video tokens),
                                                                   ``attn2`` cross
``wan2.2``           the same with ``transformer_2`` and           2 experts × 2 blocks; names start with
                     ``boundary_ratio=0.5`` (two experts)          the expert (``transformer_2.blocks.0.attn1``)
``latte``            ``LattePipeline`` / ``LatteTransformer3DModel``  2 spatial, 2 cross, 2 temporal
``ltx``              ``LTXPipeline`` / ``LTXVideoTransformer3DModel``  2 joint (video self-attention), 2 cross
``hunyuanvideo``     ``HunyuanVideoPipeline``                      1 dual-stream + 1 single-stream joint block
``mochi``            ``MochiPipeline`` / ``MochiTransformer3DModel``   2 joint (asymmetric) blocks
``svd``              ``StableVideoDiffusionPipeline`` /            spatial, cross (image), temporal
                     ``UNetSpatioTemporalConditionModel``          (self + image cross)
``animatediff-lightning``  ``AnimateDiffPipeline``, ``EulerDiscreteScheduler``  as AnimateDiff
                     (trailing), meant for 4 steps at ``guidance_scale=1``
``animatediff-sdxl`` ``AnimateDiffSDXLPipeline``                   SDXL layout + motion modules
===================  ============================================  =========================================

:data:`TINY_BUILDERS` maps each name to its builder; :func:`ieadapt_interp.tiny_pipeline` finds them
there (and seeds, evaluates and silences them).

>>> from ieadapt_interp import tiny_pipeline, attention_layers
>>> pipe = tiny_pipeline("wan")
>>> attention_layers(pipe).kind.tolist()
['joint', 'cross', 'joint', 'cross']
"""

from __future__ import annotations

from .pipelines import _TINY_WORDS, _tiny_animatediff, clip_tokenizer

#: Tiny text length of every text encoder here (``max_sequence_length``).
TEXT_LEN = 16


def word_tokenizer(words: tuple[str, ...] = tuple(_TINY_WORDS), max_length: int = TEXT_LEN):
    """A fast word-level tokenizer (``tokenizers`` ``WordLevel`` in ``PreTrainedTokenizerFast``), offline.

    Ids 0–2 are ``<pad>``, ``</s>``, ``<unk>``; each word of ``words`` is one token; ``</s>`` ends every
    text (so even the empty prompt has one unmasked token).

    >>> tok = word_tokenizer()
    >>> tok("a red circle", padding="max_length", max_length=5).input_ids
    [3, 26, 38, 1, 0]
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=max_length)


def _t5(d_model: int = 16, umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kw = dict(vocab_size=len(_TINY_WORDS) + 3, d_model=d_model, d_ff=32, d_kv=8, num_layers=2, num_heads=2,
              relative_attention_num_buckets=8)
    return UMT5EncoderModel(UMT5Config(**kw)) if umt5 else T5EncoderModel(T5Config(**kw, decoder_start_token_id=0))


def _wan_transformer():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
                                 rope_max_seq_len=32)


def _tiny_wan(two_experts: bool = False):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    transformer = _wan_transformer()
    extra = dict(transformer_2=_wan_transformer(), boundary_ratio=0.5) if two_experts else {}
    return WanPipeline(tokenizer=word_tokenizer(), text_encoder=_t5(umt5=True), vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), **extra)


def _tiny_wan22():
    return _tiny_wan(two_experts=True)


def _tiny_latte():
    from diffusers import AutoencoderKL, DDIMScheduler, LattePipeline, LatteTransformer3DModel

    transformer = LatteTransformer3DModel(
        sample_size=4, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=16,
        in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        video_length=3,
    )
    vae = AutoencoderKL(block_out_channels=(8, 8, 8), in_channels=3, out_channels=3, latent_channels=4,
                        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3)
    return LattePipeline(tokenizer=word_tokenizer(), text_encoder=_t5(), vae=vae, transformer=transformer,
                         scheduler=DDIMScheduler(beta_schedule="linear", clip_sample=False))


def _tiny_ltx():
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline
    from diffusers import LTXVideoTransformer3DModel

    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                                             num_layers=2, caption_channels=16)
    vae = AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
                                decoder_layers_per_block=(1, 1, 1, 1, 1),
                                spatio_temporal_scaling=(True, True, False, False),
                                decoder_spatio_temporal_scaling=(True, True, False, False),
                                patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    return LTXPipeline(tokenizer=word_tokenizer(), text_encoder=_t5(), vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler())


def _tiny_hunyuanvideo():
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True,
    )
    llama = LlamaModel(LlamaConfig(bos_token_id=0, eos_token_id=1, pad_token_id=0, hidden_size=16,
                                   intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                                   vocab_size=len(_TINY_WORDS) + 3, hidden_act="gelu"))
    clip = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8,
                                        intermediate_size=16, num_attention_heads=2, num_hidden_layers=2,
                                        vocab_size=1000, max_position_embeddings=77, projection_dim=8))
    return HunyuanVideoPipeline(text_encoder=llama, tokenizer=word_tokenizer(), transformer=transformer,
                                vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=clip,
                                tokenizer_2=clip_tokenizer())


def _tiny_mochi():
    from diffusers import AutoencoderKLMochi, FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel

    transformer = MochiTransformer3DModel(patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2,
                                          pooled_projection_dim=16, in_channels=12, qk_norm="rms_norm",
                                          text_embed_dim=16, time_embed_dim=4, activation_fn="swiglu",
                                          max_sequence_length=TEXT_LEN)
    vae = AutoencoderKLMochi(latent_channels=12, out_channels=3, encoder_block_out_channels=(32, 32, 32, 32),
                             decoder_block_out_channels=(32, 32, 32, 32), layers_per_block=(1, 1, 1, 1, 1))
    return MochiPipeline(tokenizer=word_tokenizer(), text_encoder=_t5(), vae=vae, transformer=transformer,
                         scheduler=FlowMatchEulerDiscreteScheduler())


def _tiny_svd():
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                           UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 32), layers_per_block=1, sample_size=4, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=16,
        num_attention_heads=2, projection_class_embeddings_input_dim=24, addition_time_embed_dim=8, num_frames=4,
    )
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 32), in_channels=3, out_channels=3,
                                       down_block_types=("DownEncoderBlock2D",) * 2, latent_channels=4)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, projection_dim=16, num_hidden_layers=2, num_attention_heads=2, image_size=224,
        intermediate_size=32, patch_size=32))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
        prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002, steps_offset=1, timestep_spacing="leading",
        timestep_type="continuous", use_karras_sigmas=True)
    return StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler,
                                        feature_extractor=CLIPImageProcessor(crop_size=32, size=32))


def _tiny_animatediff_lightning():
    from diffusers import EulerDiscreteScheduler

    pipe = _tiny_animatediff()
    pipe.scheduler = EulerDiscreteScheduler(beta_schedule="linear", timestep_spacing="trailing")
    return pipe


def _tiny_animatediff_sdxl():
    from diffusers import (AnimateDiffSDXLPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter,
                           UNet2DConditionModel, UNetMotionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=4, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=32,
        cross_attention_dim=16, norm_num_groups=4,
    )  # 6 · 4 + 8 (text_encoder_2's projection) = 32
    text_config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8, intermediate_size=16,
                                 num_attention_heads=2, num_hidden_layers=2, vocab_size=1000,
                                 max_position_embeddings=77, projection_dim=8)
    adapter = MotionAdapter(block_out_channels=(8, 16), motion_layers_per_block=1, motion_norm_num_groups=4,
                            motion_num_attention_heads=2, use_motion_mid_block=False, motion_max_seq_length=24)
    vae = AutoencoderKL(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4,
                        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)
    return AnimateDiffSDXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(text_config), text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=UNetMotionModel.from_unet2d(unet, adapter),
        motion_adapter=adapter, scheduler=DDIMScheduler(beta_schedule="linear", clip_sample=False,
                                                        timestep_spacing="trailing"),
    )


#: ``{arch: builder}`` of the tiny pipelines defined here (``ieadapt_interp.tiny_pipeline(arch)``).
TINY_BUILDERS = {
    "wan": _tiny_wan,
    "wan2.2": _tiny_wan22,
    "latte": _tiny_latte,
    "ltx": _tiny_ltx,
    "hunyuanvideo": _tiny_hunyuanvideo,
    "mochi": _tiny_mochi,
    "svd": _tiny_svd,
    "animatediff-lightning": _tiny_animatediff_lightning,
    "animatediff-sdxl": _tiny_animatediff_sdxl,
}
