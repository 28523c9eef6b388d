"""Guidance with prefix sharing: the blocks before the first perturbed one run only the denoiser's own rows.

Checked on tiny random transformers (a 3-block CogVideoX; Wan, Wan 2.2, LTX-Video, HunyuanVideo, Mochi):
the guided output equals the unshared path and the naive separate-forwards formula, each block runs the
rows it should, capture labels each row with its branch, and no hook is left behind.
"""

import pytest
import torch
from test_models import tiny
from test_models_methods import _plain

import ieadapt_interp as ia
from ieadapt_interp.core.adapters import get_adapter
from ieadapt_interp.core.interception import Interception
from ieadapt_interp.methods.guidance import Guidance, GuidedDenoiser, guiding, shared_prefix
from ieadapt_interp.methods.perturbation import Perturbation, PerturbationHandler
from reference import has_leftovers

KW = dict(num_frames=9, height=32, width=32, num_inference_steps=2)
BLOCKS = [f"transformer_blocks.{i}.attn1" for i in range(3)]  # first, middle, last block


@pytest.fixture(scope="module")
def cog3_fp32():
    """The tiny CogVideoX pipeline with a 3-block transformer (same config otherwise)."""
    from diffusers import CogVideoXTransformer3DModel

    pipe = ia.tiny_pipeline("cogvideox", seed=0)
    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel.from_config({**pipe.transformer.config, "num_layers": 3}).eval()
    pipe = type(pipe)(**{**pipe.components, "transformer": transformer})
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def cog3(cog3_fp32):
    """The same in fp64 (float rounding out of the way: sharing changes only the batch a block runs)."""
    import copy

    return copy.deepcopy(cog3_fp32).to(torch.float64)


@pytest.fixture(scope="module")
def inputs(cog3):
    """The denoiser's keyword arguments of one CFG call ``[uncond, cond]`` of the pipeline (2 rows)."""
    seen = []
    handle = cog3.transformer.register_forward_pre_hook(lambda m, a, k: seen.append(dict(k)), with_kwargs=True)
    try:
        with torch.no_grad():
            cog3(prompt="a red circle", guidance_scale=5.0, output_type="latent", max_sequence_length=16,
                 generator=torch.Generator().manual_seed(0), **{**KW, "num_inference_steps": 1})
    finally:
        handle.remove()
    return {**seen[0], "return_dict": False}


class BlockRows:
    """The rows each block of ``blocks`` ran (its output's first axis), per call: ``[[rows of block 0, …]]``."""

    def __init__(self, blocks):
        self.rows, self.handles = [], []
        for j, block in enumerate(blocks):
            self.handles.append(block.register_forward_hook(lambda m, a, o, j=j: self._add(j, o)))

    def _add(self, j, output):
        if j == 0 or not self.rows:
            self.rows.append([])
        self.rows[-1].append(int((output[0] if isinstance(output, tuple) else output).shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _guided(pipe, kw, g):
    """One guided denoiser call (CFG) → (folded output, GuidedDenoiser, rows per block)."""
    with torch.no_grad(), Interception(pipe, g.handlers(g.resolve(pipe))) as ic, \
            GuidedDenoiser(pipe, g, ic, cfg=True) as run, BlockRows(pipe.transformer.transformer_blocks) as blocks:
        out = pipe.transformer(**kw)[0]
    return out, run, blocks.rows


def _eps(pipe, kw, rows, term, layer):
    """Naive: one unguided forward of ``rows`` with every query row of ``layer`` ← ``term`` (the whole map)."""
    handlers = [] if term == "A" else [PerturbationHandler(Perturbation(ia.Layers(names=(layer,)),
                                                                        {"I": "identity", "U": "uniform"}[term]))]
    one = {k: (v[rows] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == 2 else v) for k, v in kw.items()}
    with torch.no_grad(), Interception(pipe, handlers):
        return pipe.transformer(**one)[0]


@pytest.mark.parametrize("pos,neg", [("U", "I"), ("A", "I")])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_shared_equals_unshared_and_the_naive_formula(cog3, inputs, pos, neg, k):
    """Perturbed layer in block k (first, middle, last): the folded output with prefix sharing equals the
    unshared path and ε_∅ + w(ε_A − ε_∅) + s(ε_pos − ε_neg) from separate forwards; blocks < k run 2 rows."""
    layer, s, w = BLOCKS[k], 2.5, 5.0
    g = Guidance(pos, neg, scale=s, layers=layer, text_rows=True)  # the naive reference perturbs every query row
    shared, run, rows = _guided(cog3, inputs, g)
    unshared, run_off, rows_off = _guided(cog3, inputs, Guidance(pos, neg, scale=s, layers=layer, text_rows=True,
                                                                  share_prefix=False))
    extra = len(g.extra_branches)
    assert run.shared_blocks == ({"transformer": k} if k else {}) and run_off.shared_blocks == {}
    assert rows == [[2] * k + [2 + extra] * (3 - k)]      # the saving: blocks before k skip the extra rows
    assert rows_off == [[2 + extra] * 3]
    assert run.batches == run_off.batches == [(0, 2 + extra)]
    torch.testing.assert_close(shared, unshared, rtol=1e-5, atol=1e-5)
    e_null, e_a = _eps(cog3, inputs, slice(0, 1), "A", layer), _eps(cog3, inputs, slice(1, 2), "A", layer)
    e_pos, e_neg = (_eps(cog3, inputs, slice(1, 2), t, layer) for t in (pos, neg))
    expected = e_null + w * (e_a - e_null) + s * (e_pos - e_neg)
    assert (s * (e_pos - e_neg)).abs().max() > 1e-3  # the guidance term matters
    torch.testing.assert_close(shared[:1] + w * (shared[1:] - shared[:1]), expected, rtol=1e-5, atol=1e-5)
    assert not has_leftovers(cog3)


def test_pipeline_output_with_and_without_sharing(cog3):
    """Two steps through the pipeline's own loop (video-token rows only, the default): same latents."""
    call = dict(prompt="a red circle", guidance_scale=5.0, output_type="latent", max_sequence_length=16, **KW)
    out = {}
    for share in (True, False):
        with torch.no_grad(), guiding(cog3, Guidance("U", "I", scale=2.0, layers=BLOCKS[2], share_prefix=share)):
            out[share] = cog3(**call, generator=torch.Generator().manual_seed(0)).frames
    with torch.no_grad():
        plain = cog3(**call, generator=torch.Generator().manual_seed(0)).frames
    assert (out[True] - plain).abs().max() > 1e-2
    torch.testing.assert_close(out[True], out[False], rtol=1e-5, atol=1e-5)
    assert not has_leftovers(cog3)


def test_capture_rows_are_labelled_under_sharing(cog3_fp32):
    """The cond row's stats equal an unguided trace at step 0; the pos / neg rows exist from the perturbed
    block on (at the perturbed layer they attend like cond); in the shared block they are not computed."""
    g = Guidance("U", "I", scale=2.0, layers=BLOCKS[1])
    kw = {**KW, "num_inference_steps": 1}
    plain = ia.trace(cog3_fp32, "a red circle", **kw).stats.sel(step=0)
    guided = ia.trace(cog3_fp32, "a red circle", guidance=g, branch="all", **kw).stats.sel(step=0)
    assert sorted(guided.branch.values) == ["cond", "neg", "pos", "uncond"]
    for var in ("entropy", "energy"):
        torch.testing.assert_close(torch.as_tensor(guided[var].sel(branch="cond").values),
                                   torch.as_tensor(plain[var].values), rtol=1e-5, atol=1e-7)
    entropy = guided.entropy
    for branch in ("pos", "neg"):
        assert entropy.sel(layer=BLOCKS[0], branch=branch).isnull().all()            # shared: not computed
        torch.testing.assert_close(torch.as_tensor(entropy.sel(layer=BLOCKS[1], branch=branch).values),
                                   torch.as_tensor(entropy.sel(layer=BLOCKS[1], branch="cond").values))
    assert not bool(entropy.sel(layer=BLOCKS[2]).isnull().any())
    assert float(abs(entropy.sel(layer=BLOCKS[2], branch="neg") - entropy.sel(layer=BLOCKS[2], branch="cond")).max()) > 0
    assert not has_leftovers(cog3_fp32)


def test_no_hook_left_after_an_error_inside_a_shared_forward(cog3):
    """An error in the middle of the forward (after the shared blocks): every hook is removed, and the next
    plain call runs its own rows."""
    def fail(*_):
        raise KeyError("boom")

    g = Guidance("U", "I", scale=2.0, layers=BLOCKS[2])
    call = dict(prompt="a red circle", guidance_scale=5.0, output_type="latent", max_sequence_length=16, **KW)
    handle = cog3.transformer.transformer_blocks[2].register_forward_pre_hook(fail)
    try:
        with pytest.raises(KeyError, match="boom"), torch.no_grad(), guiding(cog3, g) as run:
            cog3(**call, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert run.sharing is None and not has_leftovers(cog3)
    with torch.no_grad(), BlockRows(cog3.transformer.transformer_blocks) as blocks:
        cog3(**{**call, "num_inference_steps": 1}, generator=torch.Generator().manual_seed(0))
    assert blocks.rows == [[2, 2, 2]]


def test_shared_prefix_is_chosen_per_adapter(cog3, animatediff):
    assert shared_prefix(cog3, [BLOCKS[2], BLOCKS[1]]) == {"transformer": 1}       # the earliest perturbed block
    assert shared_prefix(cog3, [BLOCKS[0], BLOCKS[2]]) == {}                       # block 0: nothing to share
    spatial = "up_blocks.1.attentions.0.transformer_blocks.0.attn1"
    with guiding(animatediff, Guidance("U", "I", scale=2.0, layers=spatial)) as run:  # a UNet: today's path
        assert run.shared_blocks == {}
    g = Guidance("U", "I", scale=2.0, layers=BLOCKS[1], share_prefix=False)
    assert Guidance.from_dict(g.to_dict()).share_prefix is False and "share_prefix" not in Guidance().to_dict()["guidance"]


def _last_self_layers(pipe) -> list[str]:
    """The last self-attention layer of each denoiser (Wan 2.2: of each expert)."""
    table = ia.attention_layers(pipe)
    table = table[table.kind != "cross"]
    expert = table.name.str.extract(r"^(transformer_2?)\.")[0].fillna("")
    return list(table.groupby(expert, sort=False).name.last())


@pytest.mark.parametrize("arch", ["wan", "wan2.2", "ltx", "hunyuanvideo", "mochi"])
def test_other_transformers_share_the_prefix(arch):
    """Perturbed layer in the last block of each denoiser: the pipeline's latents equal the unshared run's and
    the blocks before it run only the denoiser's own rows."""
    pipe = tiny(arch)
    layers = _last_self_layers(pipe)
    adapter = get_adapter(pipe)
    out, rows = {}, {}
    for share in (True, False):
        g = Guidance("U", "I", scale=2.0, layers=layers, text_rows=arch == "mochi", share_prefix=share)
        with guiding(pipe, g) as run:
            blocks = [b for m in adapter.denoisers(pipe).values() for _, b in adapter.block_list(m)]
            with torch.no_grad(), BlockRows(blocks) as seen:
                out[share] = _plain(pipe, arch).frames
        rows[share] = [r for r in seen.rows if r]
        assert bool(run.shared_blocks) == share
    torch.testing.assert_close(out[True], out[False], rtol=1e-5, atol=1e-5)
    # each call: every block but the last ran fewer rows with sharing (the extra pos/neg rows only at the end)
    flat_on = [r for call in rows[True] for r in call]
    flat_off = [r for call in rows[False] for r in call]
    assert len(flat_on) == len(flat_off) and sum(flat_on) < sum(flat_off)
    assert not has_leftovers(pipe)
