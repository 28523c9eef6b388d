"""The video models people run today, each as a tiny random pipeline built from the real diffusers classes.

Per architecture (Wan 2.1, Wan 2.2 with two experts, Latte, LTX-Video, HunyuanVideo, Stable Video
Diffusion, AnimateDiff-Lightning, AnimateDiff SDXL): the layer table; statistics of every kind against
the fp64 reference (materialised softmax, explicit loops; CFG rows labelled independently of the
library: diffusers batches ``[uncond, cond]``, Wan runs cond then uncond as two forwards); perturbation
closed forms against ``A'·V`` built explicitly; restore (pipeline bit-identical afterwards); bad input;
``load_pipeline(folder)`` round trip.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from reference import RecordSDPA, has_leftovers, per_frame, perturbed_output, row_stats

import ieadapt_interp as ia
from ieadapt_interp.core.adapters import get_adapter, layer_records
from ieadapt_interp.core.interception import Interception
from ieadapt_interp.core.stats import stats_dataset
from ieadapt_interp.methods.perturbation import perturbation_handlers
from ieadapt_interp.methods.tracing import _noise
from ieadapt_interp.models.tiny import TEXT_LEN

PROMPT = "a red circle moving left"
#: (size and frames, guidance scale, steps) of each tiny run
CASES = {
    "wan": (dict(num_frames=5, height=32, width=32), 4.0, 1),
    "wan2.2": (dict(num_frames=5, height=32, width=32), 4.0, 2),  # boundary 0.5: one step per expert
    "latte": (dict(num_frames=3, height=32, width=32), 4.0, 1),
    "ltx": (dict(num_frames=9, height=32, width=32), 4.0, 1),
    "hunyuanvideo": (dict(num_frames=5, height=32, width=32), 6.0, 1),  # distilled guidance: no CFG rows
    "mochi": (dict(num_frames=7, height=32, width=32), 4.0, 2),  # its sigma schedule needs 2 steps
    "svd": (dict(num_frames=2, height=32, width=32), 3.0, 1),
    "animatediff-lightning": (dict(num_frames=2, height=16, width=16), 1.0, 1),  # no CFG; 4 steps below
    "animatediff-sdxl": (dict(num_frames=2, height=16, width=16), 4.0, 1),
}
KINDS = {
    "wan": ["joint", "cross"] * 2,
    "wan2.2": ["joint", "cross"] * 4,
    "latte": ["spatial", "cross", "temporal"] * 2,
    "ltx": ["joint", "cross"] * 2,
    "hunyuanvideo": ["joint", "joint"],
    "mochi": ["joint", "joint"],
    "svd": ["spatial", "cross", "temporal", "cross"] * 4,
    "animatediff-lightning": None,  # as AnimateDiff (tests/test_safety.py)
    "animatediff-sdxl": ["temporal"] * 2 + ["spatial", "cross"] * 2 + ["temporal"] * 2 + ["spatial", "cross"] * 2
                        + ["spatial", "cross"] * 2 + ["temporal"] * 2 + ["spatial", "cross"] * 2
                        + ["temporal"] * 2 + ["temporal"] * 4,
}
ARCHS = list(CASES)
IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
_PIPES: dict = {}


def tiny(arch):
    if arch not in _PIPES:
        _PIPES[arch] = ia.tiny_pipeline(arch, seed=0)
    return _PIPES[arch]


def _cfg(pipe, guidance):
    return guidance > 1.0 and get_adapter(pipe).guidance_is_cfg


def _run_plain(pipe, arch, guidance=None):
    """One plain pipeline call (prompt, or image for SVD), tiny sizes, latents out."""
    size, default, steps = CASES[arch]
    guidance = default if guidance is None else guidance
    adapter = get_adapter(pipe)
    kw = dict(height=size["height"], width=size["width"], num_inference_steps=steps,
              generator=torch.Generator().manual_seed(0), output_type="latent")
    if arch == "svd":
        return pipe(image=IMAGE, num_frames=size["num_frames"], min_guidance_scale=1.0,
                    max_guidance_scale=guidance, decode_chunk_size=size["num_frames"], **kw)
    # the same inputs as ia.generate: negative prompt "" and the latents it draws for seed 0
    latents = _noise(pipe, 0, size["num_frames"], size["height"], size["width"], pipe.text_encoder.dtype)
    return pipe(prompt=PROMPT, guidance_scale=guidance, latents=latents, **{adapter.frames_kwarg: size["num_frames"]},
                **{**adapter.call_defaults(pipe), "negative_prompt": "", **kw})


def _trace(pipe, arch, layers=None):
    """Statistics of every layer, both CFG branches where there are two, as an ``xr.Dataset``."""
    size, guidance, steps = CASES[arch]
    cfg = _cfg(pipe, guidance)
    if arch != "svd":
        return ia.trace(pipe, PROMPT, guidance_scale=guidance, num_inference_steps=steps,
                        branch="both" if cfg else "cond", layers=layers, **size).stats
    # image-to-video: the CFG rows are labelled by the image embeddings (zeros for the unconditional row)
    emb = pipe._encode_image(IMAGE, pipe._execution_device, 1, do_classifier_free_guidance=True)
    records = layer_records(pipe)
    names = [r.name for r in records]
    with torch.no_grad(), Interception(pipe, capture=names, record_branches=("cond", "uncond"),
                                       embeddings={"uncond": emb[:1], "cond": emb[1:]}) as ic:
        _run_plain(pipe, arch)
    return stats_dataset(ic.stats_calls, records, ic.state.timesteps, {})


@pytest.mark.parametrize("arch", [a for a in ARCHS if KINDS[a] is not None])
def test_layer_table_kinds_and_order(arch):
    df = ia.attention_layers(tiny(arch))
    assert df.kind.tolist() == KINDS[arch]
    for kind in set(df.kind):
        assert df[df.kind == kind]["index"].tolist() == list(range(1, (df.kind == kind).sum() + 1))


def test_layer_names_say_which_expert():
    df = ia.attention_layers(tiny("wan2.2"))
    assert df.name.tolist()[:2] == ["transformer.blocks.0.attn1", "transformer.blocks.0.attn2"]
    assert df.name.tolist()[4] == "transformer_2.blocks.0.attn1" and df.block.tolist()[4] == "transformer_2.depth.0"
    assert ia.attention_layers(tiny("wan")).name.tolist()[0] == "blocks.0.attn1"  # one expert: plain paths
    assert type(ia.load_pipeline("tiny:wan2.2").transformer_2).__name__ == "WanTransformer3DModel"  # the spec


def _reference(pipe, arch):
    """Every SDPA call of a plain run, recorded by the test's own hooks (fp64 reference input)."""
    records = layer_records(pipe)
    adapter = get_adapter(pipe)
    recorder = RecordSDPA(list(adapter.denoisers(pipe).values()), {r.name: r.module for r in records},
                          adapter.timestep_arg)
    try:
        with recorder, torch.no_grad():
            _run_plain(pipe, arch)
    finally:
        recorder.close()
    return recorder.calls


@pytest.mark.parametrize("arch", ARCHS)
def test_stats_match_fp64_reference_every_kind(arch):
    pipe = tiny(arch)
    size, guidance, steps = CASES[arch]
    cfg = _cfg(pipe, guidance)
    table = ia.attention_layers(pipe)
    layers = list(table.drop_duplicates(["kind", "block"]).name) if len(table) > 16 else None  # UNets: a subset
    stats = _trace(pipe, arch, layers)
    calls = [c for c in _reference(pipe, arch) if layers is None or c["layer"] in layers]
    layouts = {r.name: r.layout for r in layer_records(pipe)}
    frames = stats.sizes["frame"]
    seen: dict = {}
    checked = set()
    for call in calls:
        key = (call["layer"], call["step"])
        nth = seen[key] = seen.get(key, -1) + 1
        # Wan: a cond forward, then an uncond forward; Mochi: one attention call per row (uncond, then cond)
        separate = arch in ("wan", "wan2.2", "mochi") and cfg
        n_rows = 2 if cfg and not separate else 1
        order = ["cond", "uncond"] if arch.startswith("wan") else ["uncond", "cond"]
        branches = (order[nth],) if separate else (("uncond", "cond") if n_rows == 2 else ("cond",))
        layout = layouts[call["layer"]]
        text_len = TEXT_LEN if layout in ("joint", "joint_video_text") else 0
        if arch == "mochi":  # only the row's unpadded text tokens follow its video tokens (patch 2, VAE 8×, 6 frames)
            n_video = ((size["num_frames"] - 1) // 6 + 1) * (size["height"] // 16) * (size["width"] // 16)
            text_len = call["q"].shape[-2] - n_video
        ref = row_stats(call["q"], call["k"], call["v"], call["scale"], call["mask"])
        for var, rows in ref.items():
            how = "mean" if var == "entropy" else "sum"
            expected = per_frame(rows, layout, n_rows, frames, text_len, how)
            for row, branch in enumerate(branches):
                got = stats[var].sel(step=call["step"], layer=call["layer"])
                got = got.sel(branch=branch) if "branch" in got.dims else got
                np.testing.assert_allclose(got.values[:expected.shape[1]], expected[row].numpy(), rtol=1e-4, atol=1e-6,
                                           err_msg=f"{arch} {var} {call['layer']} step {call['step']} {branch}")
                checked.add((var, str(stats.kind.sel(layer=call["layer"]).item()), branch))
        if layout == "joint_video_text":  # text-token query rows are reported separately
            text = ref["entropy"][..., -text_len:].mean(-1)
            for row, branch in enumerate(branches):
                got = stats.entropy_text.sel(step=call["step"], layer=call["layer"])
                got = got.sel(branch=branch) if "branch" in got.dims else got
                np.testing.assert_allclose(got.values, text[row].numpy(), rtol=1e-4)
    kinds = set(table.kind)
    assert {k for _, k, _ in checked} == kinds
    assert {b for _, _, b in checked} == ({"cond", "uncond"} if cfg else {"cond"})
    if arch == "wan2.2":  # the step axis says which expert ran
        assert stats.expert.values.tolist() == ["transformer", "transformer_2"]
        assert np.isnan(stats.entropy.sel(step=0, layer="transformer_2.blocks.0.attn1")).all()


def _closed_form_run(pipe, arch, assign):
    """One plain run with ``assign = {layer: (replacement, λ)}``; per layer its q, k, v, mask and perturbed output."""
    records = {r.name: r for r in layer_records(pipe)}
    perturbations = [ia.Perturbation(ia.Layers(names=(name,)), rep, lam) for name, (rep, lam) in assign.items()]
    adapter = get_adapter(pipe)
    recorder = RecordSDPA(list(adapter.denoisers(pipe).values()), {n: records[n].module for n in assign},
                          adapter.timestep_arg)
    outputs: dict = {}
    with Interception(pipe, perturbation_handlers([perturbations], per_sample=False), hook_points=True):
        handles = [records[n].module.hook_output.register_forward_hook(
            lambda m, a, o, n=n: outputs.setdefault(n, o.detach().clone())) for n in assign]
        try:
            with recorder, torch.no_grad():
                _run_plain(pipe, arch, guidance=1.0)
        finally:
            for h in handles:
                h.remove()
            recorder.close()
    first = {}
    for call in recorder.calls:
        first.setdefault(call["layer"], call)
    return first, outputs


SELF = [("identity", 1.0), ("uniform", 1.0), ("mix", 0.3), ("scale", 0.6)]
CROSS = [("uniform", 1.0), ("scale", 0.25)]


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "animatediff-lightning"])  # its UNet: test_perturbation
def test_perturbation_closed_forms(arch):
    """Two runs; every layer gets one replacement per run (each kind sees several), checked against A'·V."""
    pipe = tiny(arch)
    table = ia.attention_layers(pipe)
    if len(table) > 12:  # SDXL: the first layer of each kind in each block is enough
        table = table.drop_duplicates(["kind", "block"])
    for shift in (0, 2):
        assign = {}
        for i, (name, kind) in enumerate(zip(table.name, table.kind)):
            options = CROSS if kind == "cross" else SELF
            assign[name] = options[(i + shift) % len(options)]
        calls, outputs = _closed_form_run(pipe, arch, assign)
        for name, (rep, lam) in assign.items():
            call = calls[name]
            expected = perturbed_output(call["q"], call["k"], call["v"], rep, lam, call["scale"], call["mask"])
            torch.testing.assert_close(outputs[name].double(), expected, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"{arch} {name} {rep}: {m}")
    assert has_leftovers(pipe) == []


def _processors(pipe):
    return {(a, n): m.processor for a, model in get_adapter(pipe).denoisers(pipe).items()
            for n, m in model.named_modules() if hasattr(m, "processor")}


# SVD: not prompt-driven (its restore is the closed-form test's has_leftovers); Lightning: the AnimateDiff UNet
# (tests/test_safety.py) and test_lightning_perturbs_without_an_unconditional_row
@pytest.mark.parametrize("arch", [a for a in ARCHS if a not in ("svd", "animatediff-lightning")])
def test_restored_after_exception_and_bit_identical(arch):
    pipe = tiny(arch)
    size, guidance, steps = CASES[arch]
    kw = dict(guidance_scale=guidance, num_inference_steps=steps, **size)
    before = ia.generate(pipe, PROMPT, **kw).video
    processors = _processors(pipe)
    first = ia.attention_layers(pipe).name[0]

    def boom(p, step, timestep, kwargs):
        raise RuntimeError("user callback failed")

    with pytest.raises(RuntimeError, match="user callback failed"):
        ia.trace(pipe, PROMPT, perturb=ia.uniform(ia.attention_layers(pipe).kind[0]), callback_on_step_end=boom,
                 maps=ia.MapRequest(layers=first), **kw)
    assert has_leftovers(pipe) == []
    assert _processors(pipe) == processors
    assert not torch.overrides._get_current_function_mode_stack()
    traced = ia.trace(pipe, PROMPT, layers=first, **kw)  # capture leaves the output as it was
    np.testing.assert_array_equal(traced.video, before)
    np.testing.assert_array_equal(ia.generate(pipe, PROMPT, **kw).video, before)


def test_lightning_perturbs_without_an_unconditional_row():
    """4 steps at guidance 1: an unperturbed and a perturbed sample in one batched forward per step, no uncond row."""
    pipe = tiny("animatediff-lightning")
    size, guidance, steps = CASES["animatediff-lightning"]
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    kw = dict(guidance_scale=1.0, num_inference_steps=4, **{**size, "num_frames": 2})
    calls = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a, k: calls.append(int(a[0].shape[0])), with_kwargs=True)
    try:
        run = ia.trace(pipe, PROMPT, variants=[None, ia.uniform("temporal")], layers="temporal", **kw)
    finally:
        hook.remove()
    assert calls == [2] * 4  # two samples per forward, no unconditional branch
    assert run.stats.branch.item() == "cond" and run.stats.sizes["step"] == 4 and run.stats.sizes["sample"] == 2
    assert np.isfinite(run.stats.entropy_pct).all()  # both samples recorded at every step
    assert not np.array_equal(run.videos[0], run.videos[1])  # the perturbation acted on sample 1 only
    with pytest.raises(ValueError, match="guidance"):
        ia.trace(pipe, PROMPT, branch="uncond", **kw)


@pytest.mark.parametrize("arch,call,error,match,before_work", [
    ("wan", lambda p: ia.trace(p, PROMPT, layers="blocks.9.attn1", **CASES["wan"][0]), KeyError,
     "Unknown attention layer", True),
    # refused at the layer's first call, as for AnimateDiff (tests/test_perturbation.py)
    ("wan", lambda p: ia.generate(p, PROMPT, perturb=ia.identity("cross"), **CASES["wan"][0]), ValueError,
     "cross-attention", False),
    ("latte", lambda p: ia.trace(p, PROMPT, **{**CASES["latte"][0], "num_frames": 4}), ValueError,
     "at most 3 frames", True),
    ("ltx", lambda p: ia.generate(p, PROMPT, perturb=ia.identity("temporal"), **CASES["ltx"][0]), ValueError,
     "matches no attention layer", True),
    ("hunyuanvideo", lambda p: ia.trace(p, PROMPT, branch="both", **CASES["hunyuanvideo"][0]), ValueError,
     "guidance", True),
    ("svd", lambda p: ia.trace(p, PROMPT, **CASES["svd"][0]), TypeError, "not conditioned on a text prompt", True),
])
def test_bad_input_fails_cleanly(arch, call, error, match, before_work):
    pipe = tiny(arch)
    calls = []
    hooks = [m.register_forward_pre_hook(lambda m, a: calls.append(1))
             for m in get_adapter(pipe).denoisers(pipe).values()]
    try:
        with pytest.raises(error, match=match):
            call(pipe)
    finally:
        for h in hooks:
            h.remove()
    assert (calls == []) or not before_work
    assert has_leftovers(pipe) == [] and not torch.overrides._get_current_function_mode_stack()


@pytest.mark.parametrize("arch", ARCHS)
def test_load_pipeline_from_a_saved_folder(arch, tmp_path):
    pipe = tiny(arch)
    pipe.save_pretrained(tmp_path / arch)
    loaded = ia.load_pipeline(tmp_path / arch, device="cpu")
    assert type(loaded).__name__ == type(pipe).__name__
    assert ia.attention_layers(loaded).name.tolist() == ia.attention_layers(pipe).name.tolist()
    for attr, model in get_adapter(pipe).denoisers(pipe).items():
        ours, theirs = model.state_dict(), getattr(loaded, attr).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_load_pipeline_names_what_is_missing(tmp_path):
    folder = tmp_path / "wan"
    tiny("wan").save_pretrained(folder)
    import shutil

    shutil.rmtree(folder / "vae")
    with pytest.raises(FileNotFoundError, match=r"WanPipeline.*missing.*\bvae\b"):
        ia.load_pipeline(folder, device="cpu")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
