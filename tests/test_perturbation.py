"""Closed-form perturbations equal the materialised-map result; PAG equivalence; per-sample variants."""

import numpy as np
import pytest
import torch
from conftest import ANIMATEDIFF_KW, COGVIDEOX_KW
from reference import RecordSDPA, has_leftovers, perturbed_output

import ieadapt_interp as ia
from ieadapt_interp.core.adapters import denoiser, layer_records
from ieadapt_interp.core.interception import Interception
from ieadapt_interp.methods.perturbation import PerturbationHandler

SPATIAL = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"
TEMPORAL = "up_blocks.3.motion_modules.0.transformer_blocks.0.attn1"
CROSS = "up_blocks.3.attentions.0.transformer_blocks.0.attn2"


def _one_forward(pipe, perturbation, layer):
    """One denoiser forward with a perturbation; returns the layer's q, k, v and its perturbed output."""
    record = {r.name: r for r in layer_records(pipe)}[layer]
    outputs = []
    recorder = RecordSDPA(denoiser(pipe), {layer: record.module})
    ic = Interception(pipe, [PerturbationHandler(perturbation)], hook_points=True)
    with ic:
        handle = record.module.hook_output.register_forward_hook(lambda m, a, o: outputs.append(o.detach().clone()))
        try:
            with recorder, torch.no_grad():
                _run_denoiser(pipe)
        finally:
            handle.remove()
            recorder.close()
    call = recorder.calls[0]
    return call, outputs[0]


def _run_denoiser(pipe):
    torch.manual_seed(0)
    if hasattr(pipe, "unet"):
        sample = torch.randn(2, 4, 4, 8, 8)
        text = torch.randn(2, 77, 16).repeat_interleave(4, dim=0)  # the pipeline repeats text per frame
        return pipe.unet(sample, torch.tensor(500), encoder_hidden_states=text).sample
    sample = torch.randn(1, 3, 4, 4, 4)
    return pipe.transformer(hidden_states=sample, encoder_hidden_states=torch.randn(1, 16, 16),
                            timestep=torch.tensor([500])).sample


CASES = [("identity", 1.0), ("uniform", 1.0), ("mix", 0.3), ("scale", 0.6)]


@pytest.mark.parametrize("replacement,lam", CASES)
@pytest.mark.parametrize("layer", [SPATIAL, TEMPORAL])
def test_animatediff_closed_form_equals_materialised(animatediff, replacement, lam, layer):
    p = ia.Perturbation(ia.Layers(names=(layer,)), replacement, lam)
    call, out = _one_forward(animatediff, p, layer)
    expected = perturbed_output(call["q"], call["k"], call["v"], replacement, lam, call["scale"])
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    assert has_leftovers(animatediff) == []


@pytest.mark.parametrize("replacement,lam", CASES)
def test_cogvideox_joint_closed_form(cogvideox, replacement, lam):
    layer = "transformer_blocks.1.attn1"
    call, out = _one_forward(cogvideox, ia.Perturbation(ia.Layers(names=(layer,)), replacement, lam), layer)
    expected = perturbed_output(call["q"], call["k"], call["v"], replacement, lam, call["scale"])
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("replacement,lam", [("uniform", 1.0), ("scale", 0.25)])
def test_cross_attention_uniform_and_scale(animatediff, replacement, lam):
    call, out = _one_forward(animatediff, ia.Perturbation(ia.Layers(names=(CROSS,)), replacement, lam), CROSS)
    expected = perturbed_output(call["q"], call["k"], call["v"], replacement, lam, call["scale"])
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_identity_on_cross_attention_is_refused(animatediff):
    with pytest.raises(ValueError, match="cross-attention"):
        ia.generate(animatediff, "a red circle", perturb=ia.identity(CROSS), **ANIMATEDIFF_KW)
    assert has_leftovers(animatediff) == []


def test_identity_matches_diffusers_pag_processor(animatediff):
    """diffusers' PAG identity processor perturbs the second half of the batch; ours the named layer."""
    from diffusers.models.attention_processor import PAGIdentitySelfAttnProcessor2_0

    module = {r.name: r for r in layer_records(animatediff)}[SPATIAL].module
    torch.manual_seed(0)
    sample = torch.randn(1, 4, 4, 8, 8)
    text = torch.randn(1, 77, 16).repeat_interleave(4, dim=0)
    t = torch.tensor(500)
    original = module.processor
    module.set_processor(PAGIdentitySelfAttnProcessor2_0())
    try:
        with torch.no_grad():
            pag = animatediff.unet(sample.repeat(2, 1, 1, 1, 1), t, encoder_hidden_states=text.repeat(2, 1, 1)).sample
    finally:
        module.set_processor(original)
    with Interception(animatediff, [PerturbationHandler(ia.identity(SPATIAL))]), torch.no_grad():
        ours = animatediff.unet(sample, t, encoder_hidden_states=text).sample
    with torch.no_grad():
        plain = animatediff.unet(sample, t, encoder_hidden_states=text).sample
    torch.testing.assert_close(ours, pag[1:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, plain, atol=1e-4)  # the perturbation did something
    torch.testing.assert_close(plain, pag[:1], rtol=1e-5, atol=1e-5)


def test_variants_share_one_forward_and_match_single_runs(animatediff):
    specs = [None, {SPATIAL: "identity"}, ia.uniform("temporal")]
    calls = []
    hook = denoiser(animatediff).register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        batched = ia.generate(animatediff, "a red circle", variants=specs, **ANIMATEDIFF_KW)
    finally:
        hook.remove()
    assert len(calls) == ANIMATEDIFF_KW["num_inference_steps"]  # one batched forward per step
    assert batched.videos.shape[0] == 3
    for i, spec in enumerate(specs):
        single = ia.generate(animatediff, "a red circle", perturb=spec, **ANIMATEDIFF_KW)
        assert np.abs(single.video.astype(int) - batched.videos[i].astype(int)).max() <= 1
    assert not np.array_equal(batched.videos[0], batched.videos[2])


def test_step_range_and_branch(animatediff):
    base = ia.generate(animatediff, "a red circle", **ANIMATEDIFF_KW).video
    late = ia.generate(animatediff, "a red circle", perturb=ia.uniform("temporal", steps=(1, 2)), **ANIMATEDIFF_KW)
    every = ia.generate(animatediff, "a red circle", perturb=ia.uniform("temporal"), **ANIMATEDIFF_KW)
    assert not np.array_equal(late.video, base) and not np.array_equal(late.video, every.video)
    cond_only = ia.generate(animatediff, "a red circle", perturb=ia.uniform("temporal", branch="cond"),
                            **ANIMATEDIFF_KW)
    assert not np.array_equal(cond_only.video, every.video) and not np.array_equal(cond_only.video, base)


def test_perturbation_config_roundtrip_and_labels():
    p = ia.mix(0.25, ia.Layers(kinds=("temporal",), indices=(1, 2)), steps=(0, 5), branch="cond")
    assert ia.Perturbation.from_dict(p.to_dict()) == p
    assert p.label == "mix(0.25)" and ia.identity("spatial").label == "identity"
    assert p.active(3, "cond") and not p.active(5, "cond") and not p.active(3, "uncond")


def test_cogvideox_generate_with_perturbation_changes_video(cogvideox):
    base = ia.generate(cogvideox, "a red circle", **COGVIDEOX_KW).video
    pert = ia.generate(cogvideox, "a red circle", perturb=ia.uniform("joint"), **COGVIDEOX_KW).video
    assert not np.array_equal(base, pert)
    assert has_leftovers(cogvideox) == []


def test_negative_index_selects_the_last_layer_of_each_kind(animatediff):
    table = ia.attention_layers(animatediff)
    last = ia.Layers(kinds="spatial", indices=(-1,)).resolve(table)
    assert last == ["up_blocks.3.attentions.2.transformer_blocks.0.attn1"]
    assert ia.Layers(kinds="spatial", indices=(16,)).resolve(table) == last
    assert len(ia.Layers(indices=(-1,)).resolve(table)) == 3  # one per kind present
