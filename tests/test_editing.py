"""IE-Adapt editing: the replacement at the attention call against a naive fp64 computation, each baseline's own
definition, the layer selections, same-prompt edits, masks, and bad input (one clear error, nothing installed)."""

import numpy as np
import pandas as pd
import pytest
import torch

import ieadapt_interp as ia
from ieadapt_interp.core.errors import IEAdaptError
from ieadapt_interp.core.handlers import AttentionHandler
from ieadapt_interp.methods.attend_from import AttendFrom, AttendFromHandler
from ieadapt_interp.methods.editing import Edit, edit_many, selection_table
from ieadapt_interp.methods.inversion import denoise, encode_prompts, self_attention_names

from conftest import ANIMATEDIFF_KW, COGVIDEOX_KW

TOL = 1e-5


def naive(q, k, v, scale):
    """Materialised map × V in fp64: ``softmax(q kᵀ · scale) · v``."""
    a = torch.softmax(q.double() @ k.double().transpose(-1, -2) * scale, dim=-1)
    return a @ v.double()


class Check(AttentionHandler):
    """Records, per call, the largest deviation of every row's output from its definition (fp64).

    The target (sample 1) of each branch takes the source (sample 0) of the same branch, or with
    ``from_cond=True`` the source's conditional row (an edit batch: the source may run only that row)."""

    name = "check"

    def __init__(self, layers, what, branches=None, from_cond=False):
        self.layer_names, self.what, self.branches, self.from_cond = set(layers), what, branches, from_cond
        self.errors, self.kinds, self.rows = [], set(), []

    def before(self, ctx):  # runs first: the call's own tensors, before the source's are copied in
        self.original = [ctx.query.clone(), ctx.key.clone(), ctx.value.clone()]

    def after(self, ctx):
        q, k, v = self.original
        self.rows.append(list(ctx.rows))
        index = {label: i for i, label in enumerate(ctx.rows)}
        for branch in {b for b, _ in ctx.rows}:
            source = index[("cond", 0)] if self.from_cond else index[(branch, 0)]
            src, tgt = ctx.elements([source]), ctx.elements([index[(branch, 1)]])
            replaced = self.branches is None or branch in self.branches
            what = self.what if replaced else None
            qt, kt, vt = q[tgt], k[tgt], v[tgt]
            if what == "qk":
                qt, kt = q[src], k[src]
            elif what == "kv":
                kt, vt = k[src], v[src]
            elif what == "v":
                vt = v[src]
            want = naive(qt, kt, vt, ctx.scale)
            self.errors.append(float((ctx.out[tgt].double() - want).abs().max()))
            own = naive(q[src], k[src], v[src], ctx.scale)  # the source row is never changed
            self.errors.append(float((ctx.out[src].double() - own).abs().max()))
        self.kinds.add(ctx.layer.kind)


def run_pair(pipe, kw, layers, what, branches=None):
    cond, uncond = encode_prompts(pipe, ["a red circle", "a blue square"], True)
    adapter = ia.get_adapter(pipe)
    shape = (2, *adapter.latent_shape(pipe, kw["num_frames"], kw["height"], kw["width"]))
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    check = Check(layers, what, branches)
    spec = AttendFrom(frozenset(layers), source=0, target=1, what=what, branches=branches)
    with ia.Interception(pipe, [check, AttendFromHandler(spec)], embeddings={"cond": cond, "uncond": uncond}):
        denoise(pipe, cond, uncond, latents, guidance_scale=2.0, output_type="latent", **kw)
    return check


@pytest.mark.parametrize("what", ["qk", "kv", "v"])
def test_replacement_equals_naive_animatediff(animatediff, what):
    layers = self_attention_names(animatediff)
    check = run_pair(animatediff, ANIMATEDIFF_KW, layers, what)
    assert check.kinds == {"spatial", "temporal"}
    assert max(check.errors) < TOL


@pytest.mark.parametrize("what", ["qk", "kv", "v"])
def test_replacement_equals_naive_cogvideox_joint(cogvideox, what):
    layers = self_attention_names(cogvideox)
    check = run_pair(cogvideox, COGVIDEOX_KW, layers, what)
    assert check.kinds == {"joint"}
    assert max(check.errors) < TOL


def test_p2p_replaces_cross_attention_maps_in_the_conditional_branch_only(animatediff):
    cross = list(ia.attention_layers(animatediff).query("kind == 'cross'").name)
    check = run_pair(animatediff, ANIMATEDIFF_KW, cross, "qk", branches=("cond",))
    assert check.kinds == {"cross"}
    assert max(check.errors) < TOL


@pytest.mark.parametrize("arch, what, uncond", [("animatediff", "qk", "source"), ("animatediff", "kv", "own"),
                                                 ("cogvideox", "qk", "source"), ("cogvideox", "v", "own")])
def test_edit_batch_runs_the_source_cond_row_only_and_equals_naive(animatediff, cogvideox, arch, what, uncond):
    """With the source's trajectory replayed, each denoiser call holds 3 rows (source cond, target uncond and
    cond); the target's rows take the source's conditional row (``uncond="source"``: both branches; ``"own"``:
    the conditional one), and the source's CFG output is its conditional one."""
    from ieadapt_interp.methods.editing import run_batch

    pipe, kw = (animatediff, ANIMATEDIFF_KW) if arch == "animatediff" else (cogvideox, COGVIDEOX_KW)
    layers = self_attention_names(pipe)
    cond, uncond_embeds = encode_prompts(pipe, ["a red circle", "a blue square"], True)
    shape = (1, *ia.get_adapter(pipe).latent_shape(pipe, kw["num_frames"], kw["height"], kw["width"]))
    g = torch.Generator().manual_seed(0)
    start = torch.randn(shape, generator=g)
    replay = [torch.randn(shape, generator=g) for _ in range(kw["num_inference_steps"])]
    branches = None if uncond == "source" else ("cond",)
    check = Check(layers, what, branches, from_cond=True)
    spec = AttendFrom(frozenset(layers), source=0, target=1, what=what, branches=branches)
    final = run_batch(pipe, cond, uncond_embeds, start.repeat(2, *([1] * (start.ndim - 1))), [spec], replay=replay,
                      handlers=[check], guidance_scale=2.0, **kw)
    assert {tuple(r) for r in check.rows} == {(("uncond", 1), ("cond", 0), ("cond", 1))}
    assert check.kinds == ({"spatial", "temporal"} if arch == "animatediff" else {"joint"})
    assert max(check.errors) < TOL
    torch.testing.assert_close(final[0].float(), replay[-1][0])   # the source row follows its trajectory
    assert not [m for m in pipe.components[ia.get_adapter(pipe).denoiser_attr].modules()
                if m._forward_pre_hooks or m._forward_hooks]


def test_source_row_gets_its_conditional_estimate(animatediff):
    """Inside ``CondSourceRow`` a CFG call [u_src, u_tgt, c_src, c_tgt] runs the last three rows only; the
    source's unconditional output is its conditional one (its CFG estimate is then ε_cond)."""
    from ieadapt_interp.methods.editing import CondSourceRow

    cond, uncond = encode_prompts(animatediff, ["a red circle", "a blue square"], True)
    shape = (1, *ia.get_adapter(animatediff).latent_shape(animatediff, 4, 16, 16))
    z = torch.randn(shape, generator=torch.Generator().manual_seed(0)).repeat(4, 1, 1, 1, 1)
    text, t = torch.cat([uncond, cond]).repeat_interleave(4, 0), torch.tensor(500)   # one text row per frame
    with torch.no_grad():
        with ia.Interception(animatediff, [], embeddings={"cond": cond, "uncond": uncond}) as icp, \
                CondSourceRow(animatediff, icp, 2):
            out = animatediff.unet(z, t, encoder_hidden_states=text).sample
            rows = list(icp.state.rows)
        ref = animatediff.unet(z[1:], t, encoder_hidden_states=text[4:]).sample
    assert rows == [("uncond", 1), ("cond", 0), ("cond", 1)]
    torch.testing.assert_close(out[1:], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[0], out[2], rtol=0, atol=0)


def test_selection_is_the_lowest_entropy_self_attention_layers(animatediff):
    run = ia.generate(animatediff, "a red circle", capture=self_attention_names(animatediff), **ANIMATEDIFF_KW)
    table = selection_table(animatediff, run.stats, 0.25)
    assert list(table.columns) == ["layer", "kind", "entropy", "chosen"]
    assert set(table.kind) == {"spatial", "temporal"}          # never cross-attention
    expect = table.sort_values("entropy", kind="stable").layer[: round(0.25 * len(table))]
    assert set(table.layer[table.chosen]) == set(expect)
    # the entropy column is the mean of the recorded entropy % over steps, heads and frames
    mean = run.stats["entropy_pct"].mean(["step", "head", "frame"])
    np.testing.assert_allclose(table.set_index("layer").entropy[mean.layer.values], mean.values, rtol=1e-6)


def test_each_method_acts_on_its_own_layers(animatediff):
    names = self_attention_names(animatediff)
    cross = list(ia.attention_layers(animatediff).query("kind == 'cross'").name)
    edits = [Edit("a blue circle", method=m) for m in ("ieadapt", "all", "masactrl", "value", "p2p", "none")]
    edits.append(Edit("a blue circle", method="fixed", layers=names[-2:]))
    results = edit_many(animatediff, 0, "a red circle", edits, **ANIMATEDIFF_KW)
    chosen = {r.edit.method: set(r.layers.layer[r.layers.chosen]) for r in results}
    assert chosen["all"] == set(names)
    assert chosen["masactrl"] == set(names[len(names) // 2:])
    assert chosen["ieadapt"] == chosen["value"] and len(chosen["ieadapt"]) == round(0.5 * len(names))
    assert chosen["p2p"] == set(cross)
    assert chosen["none"] == set()
    assert chosen["fixed"] == set(names[-2:])
    for r in results:                        # one source row shared by every target
        np.testing.assert_array_equal(r.source_video, results[0].source_video)


def test_same_prompt_edit_returns_the_source(animatediff):
    out = ia.edit(animatediff, 3, "a red circle", "a red circle", **ANIMATEDIFF_KW)   # uncond="own" (default)
    np.testing.assert_array_equal(out.video, out.source_video)
    plain = ia.generate(animatediff, "a red circle", seed=3, guidance_scale=7.5, **ANIMATEDIFF_KW).video
    assert np.abs(out.source_video.astype(int) - plain).max() <= 1   # the generated source (its traced run)


def test_zero_mask_keeps_the_source_and_full_mask_changes_nothing(animatediff):
    kw = dict(ANIMATEDIFF_KW)
    f, h, w = kw["num_frames"], kw["height"], kw["width"]
    kept = ia.edit(animatediff, 0, "a red circle", "a blue square", mask=np.zeros((h, w)), **kw)
    np.testing.assert_array_equal(kept.video, kept.source_video)
    free = ia.edit(animatediff, 0, "a red circle", "a blue square", mask=np.ones((f, h, w)), **kw)
    plain = ia.edit(animatediff, 0, "a red circle", "a blue square", **kw)
    np.testing.assert_array_equal(free.video, plain.video)


class Copied(AttentionHandler):
    """Records ``(step, branch)`` of every call in which the target's key is the source's (cond) key."""

    name = "copied"

    def __init__(self, layers):
        self.layer_names, self.seen = set(layers), set()

    def after(self, ctx):  # runs after the replacement copied the source's tensors in
        index = {label: i for i, label in enumerate(ctx.rows)}
        for (branch, sample), i in index.items():
            if sample == 1 and torch.equal(ctx.key[ctx.elements([i])], ctx.key[ctx.elements([index[("cond", 0)]])]):
                self.seen.add((ctx.step, branch))


@pytest.mark.parametrize("uncond", ["source", "own"])
def test_step_range_limits_the_replacement(animatediff, uncond):
    from ieadapt_interp.methods.editing import run_batch

    kw = dict(ANIMATEDIFF_KW, num_inference_steps=3)
    cond, uncond_embeds = encode_prompts(animatediff, ["a red circle", "a blue square"], True)
    shape = (2, *ia.get_adapter(animatediff).latent_shape(animatediff, kw["num_frames"], kw["height"], kw["width"]))
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0))   # rows differ: keys differ
    layers = self_attention_names(animatediff)
    copied = Copied(layers)
    spec = AttendFrom(frozenset(layers), 0, 1, steps=(1, 2), branches=None if uncond == "source" else ("cond",))
    run_batch(animatediff, cond, uncond_embeds, latents, [spec], handlers=[copied], guidance_scale=7.5, **kw)
    assert copied.seen == ({(1, "uncond"), (1, "cond")} if uncond == "source" else {(1, "cond")})
    every = ia.edit(animatediff, 0, "a red circle", "a blue square", method="all", **ANIMATEDIFF_KW)
    np.testing.assert_array_equal(every.video, ia.edit(animatediff, 0, "a red circle", "a blue square",
                                                       method="all", steps=(0, 2), **ANIMATEDIFF_KW).video)
    with pytest.raises(IEAdaptError, match="reaches past"):
        ia.edit(animatediff, 0, "a red circle", "a blue square", method="all", steps=(1, 3), **ANIMATEDIFF_KW)


def _clean(pipe):
    unet = pipe.unet
    hooks = [m for m in unet.modules() if m._forward_pre_hooks or m._forward_hooks]
    return not hooks and type(pipe.scheduler).__name__ == "DDIMScheduler"


@pytest.mark.parametrize("bad, match", [
    (dict(ratio=0.0), "ratio must lie in"),
    (dict(ratio=1.5), "ratio must lie in"),
    (dict(method="p2p", target="a blue circle moving left"), "token by token"),
    (dict(method="fixed"), "needs layers"),
    (dict(method="all", layers=["nope"]), "unknown attention layer"),
    (dict(method="paint"), "unknown edit method"),
    (dict(height=20), "multiples of"),
    (dict(num_frames=1), "at least 2 frames"),
])
def test_bad_input_raises_one_clear_error_and_leaves_nothing_installed(animatediff, bad, match):
    kw = {**ANIMATEDIFF_KW, **{k: v for k, v in bad.items() if k in ("height", "num_frames")}}
    args = {k: v for k, v in bad.items() if k not in ("height", "num_frames", "target")}
    with pytest.raises(IEAdaptError, match=match):
        ia.edit(animatediff, 0, "a red circle", bad.get("target", "a blue circle"), **args, **kw)
    assert _clean(animatediff)


def test_p2p_needs_cross_attention(cogvideox):
    with pytest.raises(IEAdaptError, match="cross-attention"):
        ia.edit(cogvideox, 0, "a red circle", "a blue circle", method="p2p", **COGVIDEOX_KW)


def test_edit_of_a_video_pins_the_source_row_to_the_inversion(animatediff):
    video = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    out = ia.edit(animatediff, video, "a red circle", "a blue circle", stats=True, **ANIMATEDIFF_KW)
    z0 = out.inversion.latents[0]
    from ieadapt_interp.methods.inversion import decode
    assert "source_video=<decoded when first read>" in repr(out)  # printing the result does not decode it
    np.testing.assert_array_equal(out.source_video, decode(animatediff, z0)[0])   # the pinned z_0, decoded
    assert "source_video=<decoded when first read>" not in repr(out)
    assert set(out.stats.layer.values) == set(self_attention_names(animatediff))
    assert isinstance(out.layers, pd.DataFrame) and out.layers.chosen.sum() == round(0.5 * len(out.layers))


def test_edit_rows_in_a_sweep_are_the_batched_edits_of_the_baseline(animatediff, tmp_path):
    from ieadapt_interp.metrics import compute_metrics

    rows = {"ie": Edit("a blue circle"), "masa": Edit("a blue circle", method="masactrl", steps=(0, 1))}
    ds = ia.sweep(animatediff, ["a red circle"], rows, seeds=[2], metrics=["ssim"], store=tmp_path / "s.zarr",
                  generation=dict(ANIMATEDIFF_KW, guidance_scale=7.5), progress=False, save_videos=False)
    direct = edit_many(animatediff, 2, "a red circle", list(rows.values()), guidance_scale=7.5, **ANIMATEDIFF_KW)
    base = ia.generate(animatediff, "a red circle", seed=2, guidance_scale=7.5, **ANIMATEDIFF_KW).video
    for name, result in zip(rows, direct):
        want = compute_metrics(["ssim"], result.video, reference=base)["ssim"]
        got = float(ds.value.sel(perturbation=name, metric="ssim").squeeze())
        assert got == pytest.approx(want, abs=2e-3)
    assert list(ds.replacement.sel(perturbation=["ie", "masa"]).values) == ["edit:ieadapt", "edit:masactrl"]


def test_edit_checks_on_rendered_clips():
    from ieadapt_interp.methods.sources import render_toy_clip
    from ieadapt_interp.metrics.editing import edit_preservation, edit_success, trajectory_distance

    src = "a red circle moving right on a black background"
    blue = src.replace("red", "blue")
    a, b = render_toy_clip(src, seed=3), render_toy_clip(blue, seed=3)      # same seed: the same path
    assert edit_success(b, a, src, blue) == 1.0 and edit_preservation(b, a, src, blue) == 1.0
    off = render_toy_clip(blue, seed=3, off_path=14.0)                     # the edit, 14 px off the source's path
    assert edit_success(off, a, src, blue) == 1.0 and edit_preservation(off, a, src, blue) == 0.0
    assert trajectory_distance(off, a) == pytest.approx(14.0, abs=0.5)
    assert edit_success(a, a, src, blue) == 0.0                            # unchanged video: no edit
    square = render_toy_clip(src.replace("circle", "square"), seed=3)
    assert edit_preservation(square, a, src, blue) == 0.0                  # the shape was not to change


def test_editing_table_is_the_registry_metrics(animatediff):
    from ieadapt_interp.metrics import compute_metrics
    from ieadapt_interp.metrics.editing import editing_table

    results = edit_many(animatediff, 0, "a red circle", [Edit("a blue circle"), Edit("a blue circle", "none")],
                        **ANIMATEDIFF_KW)
    table = editing_table(results)
    assert list(table.index) == ["ieadapt", "none"]
    for r in results:
        want = compute_metrics(["ssim"], r.video, reference=r.source_video)["ssim"]
        assert table.loc[r.edit.label, "SSIM"] == pytest.approx(want)
    assert table[["LPIPS", "success"]].isna().all().all()    # 16 px < LPIPS's 32; not toy captions
