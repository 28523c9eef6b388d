"""Guidance, editing and the nnsight wrapper on the video models people run today (tiny random pipelines).

Per architecture (Wan 2.1, Wan 2.2 with two experts, Latte, LTX-Video, HunyuanVideo, Mochi, Stable Video
Diffusion, AnimateDiff-Lightning, AnimateDiff SDXL), each against an independent reference:

* guidance at scale 0 is the plain generation, bit for bit, and adds no row;
* ``(A, I)`` guidance: every denoiser output the pipeline receives equals ``ε + s·(ε_A − ε_I)`` built by hand
  from separate forwards of the same inputs (``ε_I`` through the test's own ``Y = V`` at the SDPA call), with
  as many rows as the formula needs (no unconditional row without CFG: Lightning, HunyuanVideo);
* an edit to the same prompt returns the source; in ``method="fixed"`` layers each target row's output is the
  naive fp64 ``softmax(Q_src K_srcᵀ)·V_tgt`` (Mochi, one attention call per row: over the source's token set,
  ``V_tgt`` from the layer's weights; its masactrl and value rows too); what cannot edit (SVD: no text; Mochi:
  ``uncond='source'``; flow-matching models: no DDIM inversion of a real video) raises one clear error first;
* ``ia.traced`` (nnsight) gives the statistics ``ia.trace`` gives.
"""

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import RecordSDPA, softmax_map
from test_models import CASES, IMAGE, PROMPT, tiny  # one shared tiny pipeline per architecture
from test_models import _trace as trace_stats
from torch.overrides import TorchFunctionMode

import ieadapt_interp as ia
from ieadapt_interp.core.adapters import ADAPTERS, encode_prompt, get_adapter, layer_records
from ieadapt_interp.core.errors import IEAdaptError
from ieadapt_interp.methods.editing import edit_many
from ieadapt_interp.methods.guidance import Guidance, guiding
from ieadapt_interp.methods.tracing import _noise
from ieadapt_interp.models.tiny import TEXT_LEN

ARCHS = list(CASES)
TEXT = [a for a in ARCHS if a != "svd"]


def _first_self_layers(pipe) -> list[str]:
    """The first self-attention layer of each denoiser (Wan 2.2: of each expert)."""
    table = ia.attention_layers(pipe)
    table = table[table.kind != "cross"]
    expert = table.name.str.extract(r"^(transformer_2?)\.")[0].fillna("")
    return list(table.groupby(expert, sort=False).name.first())


def _kw(arch) -> dict:
    size, guidance, steps = CASES[arch]
    return dict(guidance_scale=guidance, num_inference_steps=steps, **size)


def _svd_call(pipe, arch) -> dict:
    size, guidance, steps = CASES[arch]
    return dict(image=IMAGE, num_frames=size["num_frames"], height=size["height"], width=size["width"],
                min_guidance_scale=1.0, max_guidance_scale=guidance, decode_chunk_size=size["num_frames"],
                num_inference_steps=steps, output_type="latent", generator=torch.Generator().manual_seed(0))


class IdentityAt(TorchFunctionMode):
    """The test's own ``A ← I``: inside the named modules every SDPA call returns ``V`` — except the last
    ``keep_last`` query rows (text tokens after the video), which keep their attention."""

    def __init__(self, modules, keep_last: int = 0):
        super().__init__()
        self.active, self.keep_last = False, keep_last
        self.handles = []
        for m in modules:
            self.handles.append(m.register_forward_pre_hook(lambda *a: setattr(self, "active", True)))
            self.handles.append(m.register_forward_hook(lambda *a: setattr(self, "active", False)))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and self.active:
            q, k, v = (*args[:3], *(kwargs[n] for n in ("query", "key", "value")[len(args[:3]):]))
            assert q.shape[-2] == v.shape[-2]
            out = v.clone()
            if self.keep_last:
                out[..., -self.keep_last:, :] = func(*args, **kwargs)[..., -self.keep_last:, :]
            return out
        return func(*args, **kwargs)

    def close(self):
        for h in self.handles:
            h.remove()


def _sample(output):
    return output[0] if isinstance(output, tuple) else getattr(output, "sample", output)


def _guided_calls(pipe, arch, guidance):
    """Run the pipeline once under ``guidance`` → (per denoiser call [module, inputs before the guidance added
    rows, output after the guidance combined them], rows run per call, final latents)."""
    calls, rows = [], []
    with guiding(pipe, guidance) as run:
        hooks = []
        for model in get_adapter(pipe).denoisers(pipe).values():
            hooks.append(model.register_forward_pre_hook(  # prepended after the guidance's: sees the user's inputs
                lambda m, a, k: calls.append([m, a, dict(k)]), with_kwargs=True, prepend=True))
            hooks.append(model.register_forward_hook(lambda m, a, o: calls[-1].append(_sample(o).clone())))
            hooks.append(model.register_forward_pre_hook(  # registered after the guidance's: sees its rows
                lambda m, a, k: rows.append(_rows_of(m, a, k)), with_kwargs=True))
        try:
            with torch.no_grad():
                out = pipe(**_svd_call(pipe, arch)) if arch == "svd" else _plain(pipe, arch)
        finally:
            for h in hooks:
                h.remove()
    assert [r for _, r in run.batches] == rows  # the guidance's own count of the rows it ran
    return calls, rows, out.frames


def _plain(pipe, arch):
    """The pipeline's own call with ia.generate's inputs (embeddings, masks, pooled; seed-0 noise)."""
    size, guidance, steps = CASES[arch]
    adapter = get_adapter(pipe)
    cfg = guidance > 1.0 and adapter.guidance_is_cfg
    named = encode_prompt(pipe, PROMPT, "", cfg)
    latents = _noise(pipe, 0, size["num_frames"], size["height"], size["width"], named["prompt_embeds"].dtype)
    call = {**adapter.call_defaults(pipe), **named, "negative_prompt": None}
    call = {k: v for k, v in call.items() if k in inspect.signature(type(pipe).__call__).parameters}
    return pipe(height=size["height"], width=size["width"], num_inference_steps=steps, guidance_scale=guidance,
                latents=latents, output_type="latent", **{adapter.frames_kwarg: size["num_frames"]}, **call)


@pytest.mark.parametrize("arch", ARCHS)
def test_guidance_at_scale_zero_is_the_plain_generation(arch):
    pipe = tiny(arch)
    layers = _first_self_layers(pipe)
    with torch.no_grad():
        plain = pipe(**_svd_call(pipe, arch)).frames if arch == "svd" else _plain(pipe, arch).frames
    calls, rows, guided = _guided_calls(pipe, arch, Guidance("A", "I", scale=0.0, layers=layers))
    torch.testing.assert_close(guided, plain, rtol=0, atol=0)
    assert rows == [_rows_of(*c[:3]) for c in calls]  # no row was added
    if arch == "wan":  # the library's entry point too (one forward per CFG branch)
        kw = _kw(arch)
        np.testing.assert_array_equal(ia.guide(pipe, PROMPT, pos="U", neg="I", scale=0.0, layers=layers, **kw).video,
                                      ia.generate(pipe, PROMPT, **kw).video)


def _rows_of(module, args, kwargs) -> int:
    """Batch rows of one denoiser call."""
    sample_arg = next(a for a in ADAPTERS if type(module).__name__ in a.denoiser_classes).sample_arg
    return int((args[0] if args else kwargs[sample_arg]).shape[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_pag_guidance_equals_the_hand_built_combination(arch):
    """(A, I), s = 2: the pipeline receives ε + s·(ε_A − ε_I) in every row of the sample (unconditional too),
    ε_I from a separate forward with the test's own Y = V; rows run = rows + one neg row per sample."""
    pipe = tiny(arch)
    layers = _first_self_layers(pipe)
    s = 2.0
    # text tokens in the sequence: HunyuanVideo's text rows keep their attention (the default), Mochi's per-row
    # text lengths are the processor's, so there the reference perturbs every query row (text_rows=True)
    text_rows = arch == "mochi"
    keep_last = TEXT_LEN if arch == "hunyuanvideo" else 0
    calls, rows, _ = _guided_calls(pipe, arch, Guidance("A", "I", scale=s, layers=layers, text_rows=text_rows))
    adapter = get_adapter(pipe)
    size, guidance, steps = CASES[arch]
    cfg = guidance > 1.0 and adapter.guidance_is_cfg
    separate = cfg and bool(adapter.cfg_forwards)  # Wan: a cond forward, then an uncond forward
    modules = [r.module for r in layer_records(pipe) if r.name in layers]
    delta = None
    for (module, args, kwargs, got), n_run in zip(calls, rows):
        batch = _rows_of(module, args, kwargs)
        with torch.no_grad():
            eps = _sample(module(*args, **kwargs))
            mode = IdentityAt(modules, keep_last)
            try:
                with mode:
                    eps_i = _sample(module(*args, **kwargs))
            finally:
                mode.close()
        if separate:
            is_cond = delta is None  # cond first at each step
            if is_cond:
                delta = s * (eps - eps_i)
            expected = eps + delta
            assert n_run == batch * (2 if is_cond else 1)
            if not is_cond:
                delta = None
        else:
            n = batch // 2 if cfg else batch
            d = s * (eps[batch - n:] - eps_i[batch - n:])
            expected = eps + d.repeat(batch // n, *([1] * (d.ndim - 1)))
            assert n_run == batch + n  # the neg rows; no unconditional row without CFG
        assert not torch.equal(eps, eps_i)  # the perturbation acts
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert len(calls) == steps * (2 if separate else 1)
    if arch == "wan2.2":  # both experts were guided, each on its own layer
        assert {type(c[0]).__name__ for c in calls} == {"WanTransformer3DModel"}
        assert len({id(c[0]) for c in calls}) == 2


@pytest.mark.parametrize("arch", ARCHS)
def test_traced_stats_equal_trace(arch):
    pipe = tiny(arch)
    size, guidance, steps = CASES[arch]
    adapter = get_adapter(pipe)
    both = guidance > 1.0 and adapter.guidance_is_cfg
    with ia.traced(pipe, branch="both" if both else "cond") as model:
        if arch == "svd":
            call = _svd_call(pipe, arch)
            image = call.pop("image")
            call.pop("generator")
            with model.generate([image], seed=0, **call):
                pass
            expected = trace_stats(pipe, arch)
        else:
            latents = _noise(pipe, 0, size["num_frames"], size["height"], size["width"], torch.float32)
            with model.generate(PROMPT, latents=latents, output_type="latent", **_kw(arch)):
                pass
            expected = ia.trace(pipe, PROMPT, branch="both" if both else "cond", **_kw(arch)).stats
        got = model.stats
    assert got.entropy.dims == expected.entropy.dims and got.sizes == expected.sizes
    for var in ("entropy", "entropy_pct", "energy", "energy_identity", "energy_uniform"):
        np.testing.assert_allclose(got[var].values, expected[var].values, rtol=1e-5, atol=1e-6, err_msg=var)
    assert np.isfinite(got.entropy_pct.values).any()


@pytest.mark.parametrize("arch", TEXT)
def test_edit_to_the_same_prompt_returns_the_source(arch):
    """IE-Adapt from a generated source to the same prompt: the target row denoises exactly as the source did
    (the source is decoded by the pipeline itself, the target by the library's decode)."""
    pipe = tiny(arch)
    out = ia.edit(pipe, 0, PROMPT, PROMPT, **_kw(arch))
    assert out.video.shape == out.source_video.shape
    diff = np.abs(out.video.astype(int) - out.source_video.astype(int))
    psnr = 10 * np.log10(255 ** 2 / max(float((diff ** 2).mean()), 1e-12))
    assert diff.max() <= 2 and psnr > 50  # fp32 rounding of a larger batch only (decodes checked exact)
    assert out.layers.chosen.any()


@pytest.mark.parametrize("arch,video,match,extra", [
    ("svd", False, "not conditioned on a text prompt", {}),
    ("mochi", False, "once per batch row, in row order", {"uncond": "source"}),  # uncond rows run first
    ("mochi", False, "has none", {"method": "p2p"}),  # no cross-attention
    ("wan", True, "flow-matching", {}),  # a real video needs DDIM inversion
    ("ltx", True, "flow-matching", {}),
])
def test_models_that_cannot_edit_say_so_before_any_work(arch, video, match, extra):
    pipe = tiny(arch)
    size = CASES[arch][0]
    source = np.zeros((size["num_frames"], size["height"], size["width"], 3), np.uint8) if video else 0
    calls = []
    hooks = [m.register_forward_pre_hook(lambda *a: calls.append(1))
             for m in [*get_adapter(pipe).denoisers(pipe).values(), pipe.vae]]
    try:
        with pytest.raises(IEAdaptError, match=match):
            ia.edit(pipe, source, PROMPT, "a blue circle moving left", **extra, **_kw(arch))
    finally:
        for h in hooks:
            h.remove()
    assert calls == []


def test_attend_from_in_generate_on_per_row_attention_is_refused_before_any_work():
    pipe = tiny("mochi")
    name = next(n for n, k in ia.attention_layers(pipe)[["name", "kind"]].values if k != "cross")
    calls = []
    hooks = [m.register_forward_pre_hook(lambda *a: calls.append(1))
             for m in [*get_adapter(pipe).denoisers(pipe).values(), pipe.vae, pipe.text_encoder]]
    try:
        with pytest.raises(IEAdaptError, match="once per batch row.*ia.edit"):
            ia.generate(pipe, PROMPT, variants=[None, None], attend_from=[ia.AttendFrom(layers=[name], source=0, target=1)],
                        **_kw("mochi"))
    finally:
        for h in hooks:
            h.remove()
    assert calls == []


TARGET = "a blue circle moving left"


@pytest.mark.parametrize("arch", ["wan", "wan2.2", "latte", "ltx", "hunyuanvideo", "animatediff-sdxl"])
def test_edit_target_output_is_the_source_map_times_its_own_values(arch):
    """method='fixed', uncond='source', on the last self-attention layer of each denoiser: in every call there,
    each target row's output (unconditional rows too) equals the naive fp64 ``softmax(Q_src K_srcᵀ)·V_tgt`` with
    the source's conditional row (sample 0, labelled here by its text embedding; Wan's separate unconditional
    forward: the source's row of that forward) — the source's map (with its own text mask) times the target's own
    values.
    HunyuanVideo's target prompt is shorter, so its padded text tokens (masked keys) differ from the source's."""
    target = "a blue square" if arch == "hunyuanvideo" else TARGET
    pipe = tiny(arch)
    adapter = get_adapter(pipe)
    table = ia.attention_layers(pipe)
    table = table[table.kind != "cross"]
    expert = table.name.str.extract(r"^(transformer_2?)\.")[0].fillna("")
    layers = list(table.groupby(expert, sort=False).name.last())
    records = {r.name: r for r in layer_records(pipe)}
    source_text = encode_prompt(pipe, PROMPT, "", False)["prompt_embeds"][0]
    batches, texts = [], []  # per denoiser call: its rows' text embeddings

    def text_of(m, a, k):
        text = k.get(adapter.text_arg) if adapter.text_arg in k else a[2]
        rows = int((k.get(adapter.sample_arg) if adapter.sample_arg in k else a[0]).shape[0])
        texts.append(text[::text.shape[0] // rows])  # AnimateDiff's UNet repeats the text rows per frame
        batches.append([torch.equal(row, source_text) for row in texts[-1]])

    hooks = [m.register_forward_pre_hook(text_of, with_kwargs=True) for m in adapter.denoisers(pipe).values()]
    recorder = RecordSDPA(list(adapter.denoisers(pipe).values()), {n: records[n].module for n in layers},
                          adapter.timestep_arg)
    try:
        with recorder:
            ia.edit(pipe, 0, PROMPT, target, method="fixed", layers=layers, uncond="source", **_kw(arch))
    finally:
        recorder.close()
        for h in hooks:
            h.remove()
    size, guidance, steps = CASES[arch]
    last = steps * (2 if adapter.cfg_forwards else 1)  # the edit's batched run comes after the source's traced run
    assert len(recorder.calls) == len(batches)  # one chosen layer per denoiser call
    target_text = encode_prompt(pipe, target, "", False)["prompt_embeds"][0]
    own_masks = [encode_prompt(pipe, p, "", False).get("prompt_attention_mask") for p in (PROMPT, target)]
    blank_text = encode_prompt(pipe, PROMPT, "", True).get("negative_prompt_embeds", target_text[None] * 0)[0]
    checked = 0
    for call, is_source, text in zip(recorder.calls[-last:], batches[-last:], texts[-last:]):
        q, k, v, out = call["q"], call["k"], call["v"], call["out"]
        n_rows = len(is_source)
        per = q.shape[0] // n_rows
        src_rows = [i for i, f in enumerate(is_source) if f]
        if not src_rows:  # Wan's separate unconditional forward: sample 0 is the source
            src_rows = [0]
        src = src_rows[0]
        s = slice(src * per, (src + 1) * per)
        mask = call["mask"]
        blank = [i for i in range(n_rows) if torch.equal(text[i], blank_text)]
        own = blank[:1] if len(blank) == 2 else []  # the source's own unconditional row (when it runs one)
        for row in range(n_rows):
            if row == src or row in own:
                continue
            t = slice(row * per, (row + 1) * per)
            m = None if mask is None else (mask[s] if mask.shape[0] == q.shape[0] else mask)
            expected = softmax_map(q[s], k[s], call["scale"], m) @ v[t].double()
            torch.testing.assert_close(out[t].double(), expected, rtol=1e-4, atol=1e-5)
            if arch == "hunyuanvideo":  # the target's own text mask differs; its keys' mask is the source's
                assert torch.equal(mask[t], mask[s]) and not torch.equal(own_masks[0], own_masks[1])
            if torch.equal(text[row], target_text):
                assert not torch.equal(v[t], v[s])  # the target's own values (its conditional row)
            checked += 1
    assert checked >= len(layers)


def test_mochi_target_rows_attend_over_the_source_tokens():
    """Mochi calls the attention once per row over ``[video, the row's valid text]``. One batch with a ``fixed``,
    a ``masactrl`` and a ``value`` target (last layer, CFG, ``uncond='own'``), the target prompt shorter than the
    source's: each target's conditional call runs over the source's token set (every video token, the source's
    valid text positions) and equals, in fp64,
    fixed ``softmax(Q_src K_srcᵀ)·V_tgt`` with ``V_tgt`` the target's value projections (the layer's own weights)
    of its video and **padded** text states at those positions; masactrl ``softmax(Q_tgt K_srcᵀ)·V_src``; value
    ``softmax(Q_tgt K_tgtᵀ)·V_src``. The unconditional rows keep their own attention."""
    pipe = tiny("mochi")
    adapter = get_adapter(pipe)
    layer = ia.attention_layers(pipe).name.iloc[-1]
    attn = {r.name: r.module for r in layer_records(pipe)}[layer]
    target = "a blue square"
    valid = [encode_prompt(pipe, p, "", False)["prompt_attention_mask"][0] for p in (PROMPT, target)]
    assert valid[1].sum() < valid[0].sum()  # the target lacks some of the source's text positions
    inputs = []
    hook = attn.register_forward_pre_hook(lambda m, a, k: inputs.append(k), with_kwargs=True)
    recorder = RecordSDPA(list(adapter.denoisers(pipe).values()), {layer: attn}, adapter.timestep_arg)
    edits = [ia.Edit(target, method, layers=(layer,)) for method in ("fixed", "masactrl", "value")]
    try:
        with recorder:
            edit_many(pipe, 0, PROMPT, edits, **_kw("mochi"))
    finally:
        recorder.close()
        hook.remove()
    n = 1 + len(edits)
    steps = CASES["mochi"][2]
    assert len(recorder.calls) == steps * 2 * n and len(inputs) == steps  # rows [uncond × n, cond × n], one call each
    idx = torch.nonzero(valid[0]).flatten()

    def proj(linear, x):
        bias = None if linear.bias is None else linear.bias.double()
        return F.linear(x.double(), linear.weight.double(), bias).unflatten(-1, (attn.heads, -1))

    worst = 0.0
    for step in range(steps):
        calls, kw = recorder.calls[step * 2 * n:(step + 1) * 2 * n], inputs[step]
        src = calls[n]  # the source's conditional row
        for k, call in enumerate(calls[n + 1:], start=n + 1):
            assert call["k"].shape == src["k"].shape  # the source's token set
            if k == n + 1:
                v_tgt = torch.cat([proj(attn.to_v, kw["hidden_states"][k]),
                                   proj(attn.add_v_proj, kw["encoder_hidden_states"][k])[idx]]).transpose(0, 1)
                expected = softmax_map(src["q"], src["k"]) @ v_tgt
            elif k == n + 2:
                expected = softmax_map(call["q"], src["k"]) @ src["v"].double()
            else:
                expected = softmax_map(call["q"], call["k"]) @ src["v"].double()
            worst = max(worst, float((call["out"].double() - expected).abs().max()))
            torch.testing.assert_close(call["out"].double(), expected, rtol=1e-4, atol=1e-5)
        for call in calls[1:n]:  # the targets' unconditional rows: their own attention
            torch.testing.assert_close(call["out"].double(), softmax_map(call["q"], call["k"]) @ call["v"].double(),
                                       rtol=1e-4, atol=1e-5)
    assert worst < 1e-5
