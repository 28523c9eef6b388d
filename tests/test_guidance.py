"""IE-Adapt quality guidance: formula, batching, PAG peer, capture, bad input, no-CFG (tiny models)."""

import numpy as np
import pytest
import torch

import ieadapt_interp as ia
from ieadapt_interp.core.adapters import get_adapter
from ieadapt_interp.core.interception import Interception
from ieadapt_interp.methods.calibration import TOY_REGISTRY, Registry
from ieadapt_interp.methods.guidance import Guidance, GuidedDenoiser, guiding
from ieadapt_interp.methods.perturbation import Perturbation, PerturbationHandler
from reference import has_leftovers

KW = dict(num_frames=4, height=16, width=16, num_inference_steps=2)
SPATIAL = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"
TEMPORAL = "down_blocks.1.motion_modules.0.transformer_blocks.0.attn1"
PAIRS = [("A", "I"), ("U", "A"), ("U", "I"), ("mix(0.5)", "I")]


def _inputs(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, 4, 8, 8, generator=g)
    uncond, cond = pipe.encode_prompt("", "cpu", 1, False)[0], pipe.encode_prompt("a red circle", "cpu", 1, False)[0]
    return sample, torch.cat([uncond, cond]).repeat_interleave(4, 0), torch.tensor(500)  # AnimateDiff: per frame


def _eps(pipe, sample, text, t, term=None, layers=(SPATIAL, TEMPORAL)):
    """One unguided denoiser call, every row's map in ``layers`` replaced by ``term`` (reference)."""
    handlers = []
    if term is not None and term != "A":
        kind, lam = {"I": ("identity", 1.0), "U": ("uniform", 1.0), "mix(0.5)": ("mix", 0.5)}[term]
        handlers = [PerturbationHandler(Perturbation(ia.Layers(names=layers), kind, lam))]
    with torch.no_grad(), Interception(pipe, handlers):
        return pipe.unet(sample, t, encoder_hidden_states=text).sample


@pytest.mark.parametrize("pos,neg,cfg", [(*pair, True) for pair in PAIRS] + [("U", "I", False)])
def test_combination_formula_against_hand_built(animatediff, pos, neg, cfg):
    pipe, s, w = animatediff, 1.7, 5.0
    sample, text, t = _inputs(pipe)
    if not cfg:
        sample, text = sample[1:], text[4:]
    g = Guidance(pos, neg, scale=s, layers=[SPATIAL, TEMPORAL])
    with torch.no_grad(), Interception(pipe, g.handlers(g.resolve(pipe))) as ic, \
            GuidedDenoiser(pipe, g, ic, cfg=cfg) as run:
        out = pipe.unet(sample, t, encoder_hidden_states=text).sample
    eps = {term: _eps(pipe, sample, text, t, term) for term in {"A", pos, neg}}
    delta = s * (eps[pos][-1:] - eps[neg][-1:])
    assert run.batches == [(0, len(sample) + len(g.extra_branches))]
    if cfg:  # the pipeline's CFG line on the folded rows gives ε_∅ + w(ε_A − ε_∅) + s(ε_pos − ε_neg)
        e_null, e_a = eps["A"][:1], eps["A"][1:]
        combined = out[:1] + w * (out[1:] - out[:1])
        torch.testing.assert_close(combined, e_null + w * (e_a - e_null) + delta, rtol=1e-4, atol=1e-5)
    else:  # ε_A + s(ε_pos − ε_neg)
        torch.testing.assert_close(out, eps["A"] + delta, rtol=1e-4, atol=1e-5)
    assert not has_leftovers(pipe)


def _batch_sizes(pipe, **kw):
    sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, a, k: sizes.append(int((a[0] if a else k["sample"]).shape[0])),
                                                 with_kwargs=True)
    try:
        out = ia.generate(pipe, "a red circle", **KW, **kw)
    finally:
        handle.remove()
    return sizes, out


@pytest.mark.parametrize("pos,neg,rows", [("A", "I", 3), ("U", "A", 3), ("U", "I", 4)])
def test_only_needed_rows_run_in_one_call_per_step(animatediff, pos, neg, rows):
    sizes, _ = _batch_sizes(animatediff, guidance=Guidance(pos, neg, scale=2.0, layers=SPATIAL))
    assert sizes == [rows] * KW["num_inference_steps"]  # one denoiser call per step, uncond+cond+extra
    sizes, _ = _batch_sizes(animatediff, guidance=Guidance(pos, neg, scale=2.0, layers=SPATIAL, steps=(1, 2)))
    assert sizes == [2, rows]  # step 0 outside the range: no extra rows


def test_scale_zero_equals_plain_cfg_exactly(animatediff):
    plain = ia.generate(animatediff, "a red circle", **KW)
    sizes, zero = _batch_sizes(animatediff, guidance=Guidance("U", "I", scale=0.0, layers=SPATIAL))
    assert np.array_equal(plain.videos, zero.videos) and sizes == [2, 2]


def test_no_cfg_drops_the_unconditional_row(animatediff):
    sizes, out = _batch_sizes(animatediff, guidance=Guidance("U", "I", scale=2.0, layers=SPATIAL), guidance_scale=1.0)
    assert sizes == [3, 3]  # cond, pos, neg — no unconditional row
    assert out.video.shape == (4, 16, 16, 3)


def test_pag_equivalence_with_diffusers(animatediff):
    """(A, I) equals diffusers' AnimateDiffPAGPipeline (pag_applied_layers, pag_scale) on the same inputs."""
    from diffusers import AnimateDiffPAGPipeline

    pipe, layers, w, s = animatediff, [SPATIAL, "up_blocks.1.attentions.0.transformer_blocks.0.attn1"], 5.0, 3.0
    call = dict(prompt="a red circle", num_frames=4, height=16, width=16, num_inference_steps=3, guidance_scale=w,
                output_type="latent", latents=torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(3)))
    processors = dict(pipe.unet.attn_processors)
    pag = AnimateDiffPAGPipeline(**pipe.components, pag_applied_layers=layers)
    pag.set_progress_bar_config(disable=True)
    with torch.no_grad():
        reference = pag(**call, pag_scale=s).frames
    pipe.unet.set_attn_processor(processors)  # the PAG pipeline shares our UNet; leave it as it was
    with torch.no_grad(), guiding(pipe, Guidance("A", "I", scale=s, layers=layers)):
        ours = pipe(**call).frames
    plain = pipe(**call).frames
    assert (reference - plain).abs().max() > 1e-2  # the guidance changes the result …
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)  # … as PAG does (fp32 rounding)
    assert not has_leftovers(pipe)


def test_capture_under_guidance_equals_unguided_trace_on_the_a_row(animatediff):
    g = Guidance("U", "I", scale=3.0, layers=SPATIAL)
    plain = ia.trace(animatediff, "a red circle", **KW).stats
    guided = ia.trace(animatediff, "a red circle", guidance=g, branch="all", **KW).stats
    assert sorted(guided.branch.values) == ["cond", "neg", "pos", "uncond"]
    step0 = dict(step=0)
    for var in ("entropy", "energy"):  # step 0 sees the same z_t; later steps follow the guided trajectory
        np.testing.assert_allclose(guided[var].sel(branch="cond", **step0), plain[var].sel(**step0), rtol=1e-5,
                                   atol=1e-7, equal_nan=True)
    # the perturbed rows are recorded too: at the perturbed layer pos (U) / neg (I) attend like cond (same input)
    # but their output replaces A·V, so the next layers differ
    at = guided.sel(layer=SPATIAL, **step0)
    np.testing.assert_allclose(at.entropy.sel(branch="neg"), at.entropy.sel(branch="cond"), rtol=1e-5)
    later = guided.sel(layer=TEMPORAL, **step0).entropy
    assert not np.allclose(later.sel(branch="neg"), later.sel(branch="cond"))


@pytest.mark.parametrize("make", [
    lambda: Guidance("U", "X", layers=SPATIAL),                        # unknown branch
    lambda: Guidance("U", "I", scale=float("nan"), layers=SPATIAL),    # scale not finite
    lambda: Guidance("U", "I", scale=float("inf"), layers=SPATIAL),
    lambda: Guidance("I", "I", layers=SPATIAL),                        # zero guidance term
])
def test_bad_guidance_is_one_clear_error(make):
    with pytest.raises(ia.IEAdaptError):
        make()


@pytest.mark.parametrize("guidance", [
    lambda: Guidance("U", "I", layers=Registry.load(TOY_REGISTRY)),   # a registry from another model
    lambda: Guidance("U", "I"),                                        # no registry for this model
    lambda: Guidance("U", "I", layers="down_blocks.9.attentions.0.transformer_blocks.0.attn1"),  # unknown layer
    lambda: Guidance("U", "I", layers="cross"),                        # cross-attention is never guided
    lambda: Guidance("U", "I", scale=[1.0, 2.0, 3.0], layers=SPATIAL),  # schedule of the wrong length
])
def test_bad_input_leaves_the_pipeline_untouched(animatediff, guidance):
    processors = {k: type(v) for k, v in animatediff.unet.attn_processors.items()}
    with pytest.raises((ia.IEAdaptError, KeyError)) as info:
        ia.generate(animatediff, "a red circle", guidance=guidance(), **KW)
    assert str(info.value)
    assert not has_leftovers(animatediff)
    assert {k: type(v) for k, v in animatediff.unet.attn_processors.items()} == processors


def test_schedule_steps_and_serialisation():
    g = Guidance("mix(0.50)", "I", scale=ia.linear_schedule(2.0, 0.0, 3), layers=SPATIAL, steps=(1, 3))
    assert g.pos == "mix(0.5)" and [g.scale_at(i) for i in range(3)] == [0.0, 1.0, 0.0]
    assert Guidance.from_dict(g.to_dict()) == g
    assert Guidance.pair("UI").extra_branches == ("pos", "neg") and Guidance.pair("PAG").extra_branches == ("neg",)


def test_joint_attention_perturbs_video_rows_only_by_default(cogvideox):
    """CogVideoX: the guided rows' text-token outputs keep their attention unless text_rows=True."""
    from ieadapt_interp.core.handlers import AttentionHandler

    layer = ia.attention_layers(cogvideox).name[0]

    class Keep(AttentionHandler):
        name = "keep"

        def __init__(self):
            self.layer_names, self.seen = {layer}, []

        def after(self, ctx):
            self.seen.append((ctx.text_len, ctx.rows, ctx.out.clone(), ctx.value.clone()))

    results = {}
    for text_rows in (False, True):
        g = Guidance("A", "I", scale=1.0, layers=layer, text_rows=text_rows)
        keep = Keep()
        with Interception(cogvideox, [*g.handlers([layer]), keep]) as ic, GuidedDenoiser(cogvideox, g, ic, cfg=False):
            cogvideox(prompt="a red circle", num_frames=9, height=32, width=32, num_inference_steps=1,
                      guidance_scale=1.0, output_type="latent", generator=torch.Generator().manual_seed(0),
                      **get_adapter(cogvideox).call_defaults(cogvideox))
        results[text_rows] = keep.seen[0]
    text_len, rows, out, v = results[False]
    assert rows == [("cond", 0), ("neg", 0)] and text_len > 0
    assert torch.equal(out[1, :, text_len:], v[1, :, text_len:])             # video rows: I·V = V
    assert not torch.allclose(out[1, :, :text_len], v[1, :, :text_len])      # text rows: A·V kept
    torch.testing.assert_close(out[1, :, :text_len], out[0, :, :text_len])
    _, _, out_t, v_t = results[True]
    assert torch.equal(out_t[1], v_t[1])                                      # text_rows=True: every row V
    assert not has_leftovers(cogvideox)


def test_guide_convenience_equals_generate(animatediff):
    g = Guidance("U", "I", scale=2.0, layers=SPATIAL)
    a = ia.guide(animatediff, "a red circle", pos="U", neg="I", scale=2.0, layers=SPATIAL, **KW)
    b = ia.generate(animatediff, "a red circle", guidance=g, **KW)
    assert np.array_equal(a.videos, b.videos)


def test_guidance_rows_in_a_sweep(animatediff, tmp_path):
    from ieadapt_interp.metrics import compute_metrics

    g = Guidance("U", "I", scale=2.0, layers=SPATIAL)
    ds = ia.sweep(animatediff, ["a red circle"], {"UI": g, "U": ia.uniform(SPATIAL)}, metrics=["temporal_ssim"],
                  store=tmp_path / "s.zarr", generation=KW, progress=False)
    assert bool(ds["done"].all())
    row = ds.sel(perturbation="UI")
    assert str(row["replacement"].values) == "guidance" and str(row["label"].values) == "(U,I) s=2"
    video = ia.generate(animatediff, "a red circle", guidance=g, **KW).video
    expected = compute_metrics(["temporal_ssim"], video, on_missing="nan")["temporal_ssim"]
    assert float(row["value"].sel(metric="temporal_ssim").squeeze()) == pytest.approx(expected, rel=1e-6)


def test_cogvideox_combination_equals_diffusers_pag_guider(cogvideox):
    """diffusers 0.42.1's PerturbedAttentionGuidance guider is used by none of the AnimateDiff / CogVideoX pipelines,
    and its layer skip (``apply_layer_skip``) refuses CogVideoX's processor (``CogVideoXAttnProcessor2_0`` is not
    registered). What it does cover is the combination: its ``forward(pred_cond, pred_uncond, pred_cond_skip)`` on
    ε_A, ε_∅ and ε_I (every row of the layer ← I, as diffusers' skip would; ours with ``text_rows=True``) must equal
    the pipeline's CFG line on our folded rows."""
    from diffusers import PerturbedAttentionGuidance

    pipe, w, s, layer = cogvideox, 6.0, 2.5, "transformer_blocks.0.attn1"
    model = pipe.transformer
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a, k: seen.append(dict(k)), with_kwargs=True)
    try:
        pipe(prompt="a red circle", num_frames=9, height=32, width=32, num_inference_steps=1, guidance_scale=w,
             output_type="latent", generator=torch.Generator().manual_seed(0), **get_adapter(pipe).call_defaults(pipe))
    finally:
        handle.remove()
    kw = {**seen[0], "return_dict": False}
    with torch.no_grad():
        plain = model(**kw)[0]
        with Interception(pipe, [PerturbationHandler(ia.identity(layer))]):
            skip = model(**kw)[0][1:]
        guider = PerturbedAttentionGuidance(guidance_scale=w, perturbed_guidance_scale=s, perturbed_guidance_layers=[0],
                                            perturbed_guidance_start=0.0, perturbed_guidance_stop=1.0)
        guider.set_state(step=5, num_inference_steps=10, timestep=kw["timestep"])
        reference = guider.forward(plain[1:], plain[:1], skip).pred
        g = Guidance("A", "I", scale=s, layers=layer, text_rows=True)
        with Interception(pipe, g.handlers(g.resolve(pipe))) as ic, GuidedDenoiser(pipe, g, ic, cfg=True) as run:
            out = model(**kw)[0]
    assert run.batches == [(0, 3)]
    assert (reference - (plain[:1] + w * (plain[1:] - plain[:1]))).abs().max() > 1e-3  # guidance matters
    torch.testing.assert_close(out[:1] + w * (out[1:] - out[:1]), reference, rtol=1e-4, atol=1e-5)
    assert not has_leftovers(pipe)


@pytest.mark.parametrize("branch", ["cond", "uncond", "both"])
def test_user_perturbation_under_guidance_acts_on_the_conditional_side(animatediff, branch):
    """A user perturbation at another layer: its ``cond`` side covers the pos / neg rows (copies of the
    conditional row), its ``uncond`` side only the unconditional row; checked against separate denoiser calls."""
    pipe, s, w = animatediff, 1.3, 4.0
    other = "up_blocks.1.attentions.0.transformer_blocks.0.attn1"
    sample, text, t = _inputs(pipe)
    user = Perturbation(ia.Layers(names=[other]), "identity", branch=branch)
    g = Guidance("U", "I", scale=s, layers=[SPATIAL])
    with torch.no_grad(), Interception(pipe, [PerturbationHandler(user), *g.handlers(g.resolve(pipe))]) as ic, \
            GuidedDenoiser(pipe, g, ic, cfg=True):
        out = pipe.unet(sample, t, encoder_hidden_states=text).sample

    def eps(rows, term, perturbed):
        handlers = [PerturbationHandler(Perturbation(ia.Layers(names=[other]), "identity"))] if perturbed else []
        if term != "A":
            handlers.append(PerturbationHandler(Perturbation(ia.Layers(names=[SPATIAL]),
                                                             {"U": "uniform", "I": "identity"}[term]), name="term"))
        with torch.no_grad(), Interception(pipe, handlers):
            return pipe.unet(sample[rows], t, encoder_hidden_states=text[4 * rows.start:4 * rows.stop]).sample

    on_cond, on_uncond = branch in ("cond", "both"), branch in ("uncond", "both")
    e_null = eps(slice(0, 1), "A", on_uncond)
    e_a, e_u, e_i = (eps(slice(1, 2), term, on_cond) for term in ("A", "U", "I"))
    combined = out[:1] + w * (out[1:] - out[:1])
    torch.testing.assert_close(combined, e_null + w * (e_a - e_null) + s * (e_u - e_i), rtol=1e-4, atol=1e-5)
    assert not has_leftovers(pipe)
