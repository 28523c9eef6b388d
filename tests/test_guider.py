"""IEAdaptGuidance, the diffusers guider: equal to diffusers' PAG for (A, I), to a hand-built map for U / mix,
to ``ia.guiding`` on the classic pipeline; batched = separate forwards; bad input leaves nothing behind.

Tiny random Wan 2.1 (``ia.tiny_pipeline("wan")``) inside diffusers' own ``WanModularPipeline`` loop, 2 steps,
5 frames, 32² (2 latent frames × 4 tokens).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import ieadapt_interp as ia
from ieadapt_interp.core.errors import IEAdaptError

pytest.importorskip("diffusers.modular_pipelines")
from diffusers.guiders import ClassifierFreeGuidance, PerturbedAttentionGuidance  # noqa: E402
from diffusers.modular_pipelines.modular_pipeline import BlockState  # noqa: E402

from ieadapt_interp.methods.guider import IEAdaptGuidance, modular_pipeline  # noqa: E402

LAYER = "blocks.0.attn1"
RUN = dict(num_inference_steps=2, height=32, width=32, num_frames=5)
FIELDS = {"encoder_hidden_states": ("prompt_embeds", "negative_prompt_embeds")}
#: Batched forwards (3–4 rows in one GEMM) against separate ones: float32 rounding only.
BATCHED_TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def wan():
    pipe = ia.tiny_pipeline("wan", seed=0)
    embeds = pipe.encode_prompt("a red circle", "", do_classifier_free_guidance=True, max_sequence_length=16)
    return pipe, modular_pipeline(pipe), embeds


def _latents(wan, guider):
    pipe, modular, (pe, ne) = wan
    modular.update_components(guider=guider)
    return modular(prompt_embeds=pe, negative_prompt_embeds=ne, generator=torch.Generator().manual_seed(0),
                   output="latents", **RUN)


def _prepared(wan, layers):
    """A (U, I) guider set to step 0 with its hooks installed for the first forward, and its condition states."""
    pipe, _, (pe, ne) = wan
    g = IEAdaptGuidance(pos="U", neg="I", layers=layers)
    g.set_state(step=0, num_inference_steps=1, timestep=torch.tensor([500.0]))
    states = g.prepare_inputs_from_block_state(BlockState(prompt_embeds=pe, negative_prompt_embeds=ne), FIELDS)
    g.prepare_models(pipe.transformer)
    return g, states


def _no_hooks(module: torch.nn.Module) -> bool:
    return "forward" not in module.__dict__ and not any(
        m._forward_hooks or m._forward_pre_hooks for m in module.modules())


@contextmanager
def _pag_on_wan():
    """diffusers 0.42.1's PAG only knows the deprecated ``WanAttnProcessor2_0``; register the current class
    (its metadata is unused when attention scores are skipped) for the comparison, and remove it after."""
    from diffusers.hooks._helpers import AttentionProcessorRegistry
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor, WanAttnProcessor2_0

    AttentionProcessorRegistry._register()
    added = WanAttnProcessor not in AttentionProcessorRegistry._registry
    if added:
        AttentionProcessorRegistry.register(WanAttnProcessor, AttentionProcessorRegistry.get(WanAttnProcessor2_0))
    try:
        yield
    finally:
        if added:
            AttentionProcessorRegistry._registry.pop(WanAttnProcessor, None)


@pytest.fixture(scope="module")
def pag(wan):
    """diffusers' PAG latents (w = 5, s = 2, block 0) and CFG alone.

    Only with CFG: without it, diffusers 0.42.1's PAG runs its "skip" condition on the *negative* embeddings
    (``prepare_inputs`` takes tuple index 1 for the second of two conditions) and without the perturbation
    (``is_conditional`` is false for the second forward), so there is no PAG to compare with.
    """
    with _pag_on_wan():
        guider = PerturbedAttentionGuidance(guidance_scale=5.0, perturbed_guidance_scale=2.0,
                                            perturbed_guidance_layers=[0], perturbed_guidance_start=0.0,
                                            perturbed_guidance_stop=1.0)
        out = {"pag": _latents(wan, guider)}
    out["cfg only"] = _latents(wan, ClassifierFreeGuidance(guidance_scale=5.0))
    return out


@pytest.mark.parametrize("batched", [False, True], ids=["separate", "batched"])
def test_pos_A_neg_I_equals_diffusers_pag(wan, pag, batched):
    # PAG perturbs where 0 < step < n (its window excludes step 0); start=0.5 gives ours the same step (1 of 2)
    guider = IEAdaptGuidance(pos="A", neg="I", layers=LAYER, guidance_scale=5.0, perturbed_guidance_scale=2.0,
                             perturbed_guidance_start=0.5, batched=batched)
    ours = _latents(wan, guider)
    assert (pag["pag"] - pag["cfg only"]).abs().max() > 1e-3  # PAG does something on this model
    if batched:
        torch.testing.assert_close(ours, pag["pag"], **BATCHED_TOL)
        assert [rows for _, rows in guider.forwards] == [2, 3]
    else:
        assert torch.equal(ours, pag["pag"])  # the same arithmetic, bit for bit
        assert [rows for _, rows in guider.forwards] == [1] * 5
    assert _no_hooks(wan[0].transformer)


@pytest.fixture(scope="module")
def wan_ui(wan):
    """(U, I) latents on the Wan modular pipeline, batched and with separate forwards (and the guiders)."""
    make = dict(pos="U", neg="I", layers=LAYER, guidance_scale=5.0, perturbed_guidance_scale=2.0)
    batched, separate = IEAdaptGuidance(**make), IEAdaptGuidance(**make, batched=False)
    return {"batched": (batched, _latents(wan, batched)), "separate": (separate, _latents(wan, separate))}


def test_batched_equals_separate_forwards(wan, wan_ui):
    """(U, I): one forward of 4 rows per step = 4 forwards per step."""
    (batched, a), (separate, b) = wan_ui["batched"], wan_ui["separate"]
    assert [rows for _, rows in batched.forwards] == [4, 4]
    assert [rows for _, rows in separate.forwards] == [1] * 8
    torch.testing.assert_close(a, b, **BATCHED_TOL)
    assert _no_hooks(wan[0].transformer)


def test_wan_equals_ia_guiding_on_the_classic_pipeline(wan, wan_ui):
    pipe, _, (pe, ne) = wan
    if not getattr(ia.get_adapter(pipe), "cfg_forwards", ()):
        pytest.skip("ia.guiding drives Wan's classic pipeline (one forward per CFG branch) once the Wan adapter "
                    "declares cfg_forwards")
    with ia.guiding(pipe, ia.Guidance("U", "I", scale=2.0, layers=LAYER)):
        classic = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, guidance_scale=5.0, output_type="latent",
                       generator=torch.Generator().manual_seed(0), **RUN).frames
    torch.testing.assert_close(wan_ui["batched"][1], classic, **BATCHED_TOL)
    assert _no_hooks(pipe.transformer)


def test_ltx_modular_batched_equals_separate_and_ia_guiding():
    """LTX-Video's modular loop (guider fields: embeddings and attention masks, packed latents)."""
    pipe = ia.tiny_pipeline("ltx", seed=0)
    pe, pm, ne, nm = pipe.encode_prompt("a red circle", "", do_classifier_free_guidance=True, max_sequence_length=16)
    modular, layer = modular_pipeline(pipe), "transformer_blocks.0.attn1"
    run = dict(num_inference_steps=2, height=32, width=32, num_frames=9, prompt_embeds=pe, prompt_attention_mask=pm,
               negative_prompt_embeds=ne, negative_prompt_attention_mask=nm)
    out = []
    for batched in (True, False):
        modular.update_components(guider=IEAdaptGuidance(pos="U", neg="I", layers=layer, guidance_scale=5.0,
                                                         perturbed_guidance_scale=2.0, batched=batched))
        out.append(modular(generator=torch.Generator().manual_seed(0), output="latents", **run))
    torch.testing.assert_close(out[0], out[1], **BATCHED_TOL)
    with ia.guiding(pipe, ia.Guidance("U", "I", scale=2.0, layers=layer)):
        packed = pipe(guidance_scale=5.0, output_type="latent", generator=torch.Generator().manual_seed(0),
                      **run).frames
    torch.testing.assert_close(out[0], pipe._unpack_latents(packed, 3, 8, 8, 1, 1), **BATCHED_TOL)
    assert _no_hooks(pipe.transformer)


def test_wan22_one_guider_per_expert():
    """Wan 2.2's modular loop: ``guider`` on ``transformer`` above the boundary, ``guider_2`` on ``transformer_2``
    below it, layers named inside each expert; batched = separate forwards."""
    from diffusers.modular_pipelines.wan.modular_blocks_wan22 import Wan22Blocks

    pipe = ia.tiny_pipeline("wan2.2", seed=0)
    pe, ne = pipe.encode_prompt("a red circle", "", do_classifier_free_guidance=True, max_sequence_length=16)
    blocks = Wan22Blocks()
    blocks.sub_blocks.pop("text_encoder")
    modular = blocks.init_pipeline()
    modular.update_components(transformer=pipe.transformer, transformer_2=pipe.transformer_2, vae=pipe.vae,
                              scheduler=pipe.scheduler, boundary_ratio=0.5)
    out, guiders = [], []
    for batched in (True, False):
        g = [IEAdaptGuidance(pos="U", neg="I", layers=f"blocks.{i}.attn1", guidance_scale=w, batched=batched,
                             perturbed_guidance_scale=s) for i, w, s in ((0, 5.0, 2.0), (1, 3.0, 1.0))]
        modular.update_components(guider=g[0], guider_2=g[1])
        out.append(modular(prompt_embeds=pe, negative_prompt_embeds=ne, generator=torch.Generator().manual_seed(0),
                           output="latents", num_inference_steps=4, height=32, width=32, num_frames=5))
        guiders.append(g)
    assert [g.forwards for g in guiders[0]] == [[(0, 4), (1, 4), (2, 4)], [(3, 4)]]
    assert [len(g.forwards) for g in guiders[1]] == [12, 4]
    torch.testing.assert_close(out[0], out[1], **BATCHED_TOL)
    assert _no_hooks(pipe.transformer) and _no_hooks(pipe.transformer_2)


class _MapMode(TorchFunctionMode):
    """SDPA → ``M·V`` with an explicit fp64 map ``M`` (no closed form): the independent reference."""

    def __init__(self, make_map):
        super().__init__()
        self.make_map = make_map

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            value = args[2] if len(args) > 2 else (kwargs or {})["value"]
            return self.make_map(value.shape[-2], value) @ value
        return func(*args, **(kwargs or {}))


def _with_map(transformer, make_map, **call):
    attn = transformer.get_submodule(LAYER)
    mode = _MapMode(make_map)
    handles = [attn.register_forward_pre_hook(lambda *a: (mode.__enter__(), None)[1]),
               attn.register_forward_hook(lambda *a: mode.__exit__(None, None, None))]
    try:
        return transformer(**call, return_dict=False)[0]
    finally:
        for h in handles:
            h.remove()


@pytest.fixture(scope="module")
def wan64(wan):
    """The tiny Wan transformer in fp64, one input, and its ε_A, ε_∅, ε_U, ε_mix(0.25) with explicit maps."""
    pipe, _, (pe, ne) = wan
    tr = copy.deepcopy(pipe.transformer).double()
    pe, ne = pe.double(), ne.double()
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([700.0], dtype=torch.float64)

    def uniform(n, v):
        return torch.full((n, n), 1.0 / n, dtype=v.dtype)

    def mixed(n, v):
        return 0.25 * torch.eye(n, dtype=v.dtype) + 0.75 * uniform(n, v)

    plain = dict(hidden_states=x, timestep=t)
    eps = {"A": tr(**plain, encoder_hidden_states=pe, return_dict=False)[0],
           "uncond": tr(**plain, encoder_hidden_states=ne, return_dict=False)[0],
           "U": _with_map(tr, uniform, **plain, encoder_hidden_states=pe),
           "mix": _with_map(tr, mixed, **plain, encoder_hidden_states=pe)}
    return tr, pe, ne, x, t, eps


@pytest.mark.parametrize("w", [4.0, 1.0], ids=["cfg", "no-cfg"])
@pytest.mark.parametrize("batched", [False, True], ids=["separate", "batched"])
def test_U_and_mix_against_explicit_maps_fp64(wan64, batched, w):
    """ε̃ = ε_∅ + w(ε_A − ε_∅) + s(ε_U − ε_mix(0.25)) (ε_A + s(…) without CFG) against maps built as matrices,
    one step of diffusers' Wan loop protocol (set_state → prepare_inputs → prepare_models / forward /
    cleanup_models per condition → guider(states))."""
    tr, pe, ne, x, t, eps = wan64
    s = 1.5
    g = IEAdaptGuidance(pos="U", neg="mix(0.25)", layers=LAYER, guidance_scale=w, perturbed_guidance_scale=s,
                        batched=batched)
    g.set_state(step=0, num_inference_steps=1, timestep=t)
    states = g.prepare_inputs_from_block_state(BlockState(prompt_embeds=pe, negative_prompt_embeds=ne), FIELDS)
    names = ["pred_cond", "pred_uncond", "pred_pos", "pred_neg"] if w != 1.0 else ["pred_cond", "pred_pos", "pred_neg"]
    assert [getattr(st, "__guidance_identifier__") for st in states] == names
    for st in states:
        g.prepare_models(tr)
        st.noise_pred = tr(hidden_states=x, timestep=t, encoder_hidden_states=st.encoder_hidden_states,
                           return_dict=False)[0]
        g.cleanup_models(tr)
    pred = g(states).pred
    assert g.forwards == ([(0, len(names))] if batched else [(0, 1)] * len(names))
    cfg = eps["uncond"] + w * (eps["A"] - eps["uncond"]) if w != 1.0 else eps["A"]
    reference = cfg + s * (eps["U"] - eps["mix"])
    assert (eps["U"] - eps["mix"]).abs().max() > 1e-3
    # the reference is fp64 throughout; the package's closed forms (perturbation.replace_output) run in fp32
    torch.testing.assert_close(pred, reference, rtol=0, atol=1e-5)
    assert _no_hooks(tr)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pos="X"), "Unknown guidance branch 'X'"),
    (dict(pos="I", neg="I"), "both 'I'"),
    (dict(neg="mix(2)"), "0 ≤ λ ≤ 1"),
    (dict(layers=None), "needs layers="),
    (dict(layers=[3]), "layers= takes"),
    (dict(perturbed_guidance_start=0.6, perturbed_guidance_stop=0.5), "0 ≤ start < stop ≤ 1"),
    (dict(perturbed_guidance_scale=float("nan")), "finite"),
    (dict(perturbed_guidance_scale=None), "scale must be a number"),
    (dict(guidance_scale="5"), "guidance_scale"),
])
def test_bad_construction_is_one_clear_error(kwargs, message):
    with pytest.raises(IEAdaptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        IEAdaptGuidance(**{"layers": LAYER, **kwargs})


@pytest.mark.parametrize("layers, message", [("blocks.9.attn1", "Unknown attention layer"),
                                             ("blocks.0.attn2", "cross-attention")])
def test_bad_layer_fails_before_any_hook(wan, layers, message):
    pipe = wan[0]
    with pytest.raises(IEAdaptError, match=message):
        _latents(wan, IEAdaptGuidance(pos="U", neg="I", layers=layers))
    assert _no_hooks(pipe.transformer)


def test_a_failing_forward_leaves_no_hook(wan):
    pipe = wan[0]
    g, states = _prepared(wan, LAYER)
    with pytest.raises(RuntimeError):  # 3 latent channels where the model takes 4
        pipe.transformer(hidden_states=torch.zeros(1, 3, 2, 4, 4), timestep=torch.tensor([500.0]),
                         encoder_hidden_states=states[0].encoder_hidden_states)
    assert _no_hooks(pipe.transformer)


def test_config_round_trip_and_step_window():
    g = IEAdaptGuidance(pos="mix(0.5)", neg="I", layers=[LAYER], perturbed_guidance_scale=[3.0, 2.0, 1.0],
                        perturbed_guidance_start=0.0, perturbed_guidance_stop=0.5, guidance_scale=1.0)
    h = IEAdaptGuidance.from_config(g.config)
    assert h.config == g.config and h.guidance == g.guidance
    seen = []
    for step in range(4):
        g.set_state(step=step, num_inference_steps=4, timestep=torch.tensor(0))
        seen.append((g.num_conditions, g.perturbed_scale()))
    assert seen == [(3, 3.0), (3, 2.0), (1, 0.0), (1, 0.0)]  # no CFG (w = 1): cond, pos, neg


# -- prefix sharing (batched forwards): the blocks before the first perturbed one skip the pos / neg rows ------
LAST = "blocks.1.attn1"  # the tiny Wan transformer has 2 blocks: block 1 is the last


class _BlockRows:
    """``[(block, rows)]`` of every block that ran (its self-attention layer's output) while entered."""

    def __init__(self, transformer):
        self.blocks, self.rows = transformer.blocks, []

    def __enter__(self):
        self.handles = [b.attn1.register_forward_hook(lambda m, a, o, j=j: self.rows.append((j, int(o.shape[0]))))
                        for j, b in enumerate(self.blocks)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@pytest.fixture(scope="module")
def pag_last(wan):
    """diffusers' PAG latents perturbing the last block (w = 5, s = 2)."""
    with _pag_on_wan():
        return _latents(wan, PerturbedAttentionGuidance(guidance_scale=5.0, perturbed_guidance_scale=2.0,
                                                        perturbed_guidance_layers=[1], perturbed_guidance_start=0.0,
                                                        perturbed_guidance_stop=1.0))


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "separate"])
def test_prefix_sharing_last_block_equals_pag(wan, pag, pag_last, batched):
    """(A, I) on the last block, shared: batched, 2 rows in block 0 and 3 in block 1 at the perturbed step;
    separate, the neg forward skips block 0 (replays the cond forward's). The latents equal diffusers' PAG on that
    block (separate: bit for bit), and the first block has nothing to share."""
    guider = IEAdaptGuidance(pos="A", neg="I", layers=LAST, guidance_scale=5.0, perturbed_guidance_scale=2.0,
                             perturbed_guidance_start=0.5, batched=batched)
    with _BlockRows(wan[0].transformer) as seen:
        ours = _latents(wan, guider)
    assert (pag_last - pag["cfg only"]).abs().max() > 1e-3
    assert guider.shared_blocks(wan[0].transformer) == 1
    if batched:
        torch.testing.assert_close(ours, pag_last, **BATCHED_TOL)
        assert seen.rows == [(0, 2), (1, 2), (0, 2), (1, 3)] and [r for _, r in guider.forwards] == [2, 3]
    else:
        assert torch.equal(ours, pag_last)
        assert [j for j, _ in seen.rows if j == 0] == [0] * 4  # 2 forwards per step; the neg one skips it
        assert [j for j, _ in seen.rows] == [0, 1, 0, 1, 0, 1, 0, 1, 1]
    assert IEAdaptGuidance(pos="A", neg="I", layers=LAYER).shared_blocks(wan[0].transformer) == 0
    assert IEAdaptGuidance(pos="A", neg="I", layers=LAST, share_prefix=False).shared_blocks(wan[0].transformer) == 0
    assert _no_hooks(wan[0].transformer)


def test_prefix_sharing_U_I_equals_unshared(wan, pag):
    """(U, I) on the last block: block 0 runs 2 rows instead of 4; the latents equal the unshared guider's."""
    out, rows = {}, {}
    for share in (True, False):
        guider = IEAdaptGuidance(pos="U", neg="I", layers=LAST, guidance_scale=5.0, perturbed_guidance_scale=2.0,
                                 share_prefix=share)
        with _BlockRows(wan[0].transformer) as seen:
            out[share] = _latents(wan, guider)
        rows[share] = seen.rows
    assert rows == {True: [(0, 2), (1, 4)] * 2, False: [(0, 4), (1, 4)] * 2}
    assert (out[True] - pag["cfg only"]).abs().max() > 1e-3
    torch.testing.assert_close(out[True], out[False], rtol=0, atol=1e-5)
    assert _no_hooks(wan[0].transformer)


def test_prefix_sharing_error_in_a_block_leaves_no_hook(wan):
    pipe = wan[0]
    g, states = _prepared(wan, LAST)

    def fail(*_):
        raise RuntimeError("boom")

    handle = pipe.transformer.blocks[0].register_forward_hook(fail)  # inside the shared blocks
    try:
        with pytest.raises(RuntimeError, match="boom"):
            pipe.transformer(hidden_states=torch.zeros(1, 4, 2, 4, 4), timestep=torch.tensor([500.0]),
                             encoder_hidden_states=states[0].encoder_hidden_states)
    finally:
        handle.remove()
    assert _no_hooks(pipe.transformer) and g._sharing is None


def test_prefix_replay_only_for_the_same_inputs(wan):
    """Separate forwards, (U, I) on the last block: pos / neg forwards with the cond forward's inputs skip block 0
    and give the unshared prediction bit for bit; with other latents they run it (and still equal the unshared)."""
    pipe, _, (pe, ne) = wan
    tr = pipe.transformer
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700.0])
    out, calls = {}, {}
    for other in (False, True):
        for share in (True, False):
            g = IEAdaptGuidance(pos="U", neg="I", layers=LAST, batched=False, share_prefix=share)
            g.set_state(step=0, num_inference_steps=1, timestep=t)
            states = g.prepare_inputs_from_block_state(BlockState(prompt_embeds=pe, negative_prompt_embeds=ne), FIELDS)
            with _BlockRows(tr) as seen:
                for st in states:
                    g.prepare_models(tr)
                    xi = x + 1.0 if other and st.__guidance_identifier__ in ("pred_pos", "pred_neg") else x
                    st.noise_pred = tr(hidden_states=xi, timestep=t, encoder_hidden_states=st.encoder_hidden_states,
                                       return_dict=False)[0]
                    g.cleanup_models(tr)
            out[other, share], calls[other, share] = g(states).pred, [j for j, _ in seen.rows].count(0)
            assert _no_hooks(tr)
    assert calls == {(False, True): 2, (False, False): 4, (True, True): 4, (True, False): 4}
    assert torch.equal(out[False, True], out[False, False]) and torch.equal(out[True, True], out[True, False])
