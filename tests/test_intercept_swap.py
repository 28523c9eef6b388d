"""The two ways an Interception catches SDPA (attribute swap, TorchFunctionMode) agree, and the swap always restores."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from reference import RecordSDPA

from ieadapt_interp import attention_layers, tiny_pipeline
from ieadapt_interp.core.errors import IEAdaptValueError
from ieadapt_interp.core.handlers import AttentionHandler
from ieadapt_interp.core.interception import Interception

SDPA = F.scaled_dot_product_attention
KW = {"num_frames": 2, "height": 16, "width": 16, "num_inference_steps": 1, "output_type": "pt"}


class ScaleValues(AttentionHandler):
    """Scales ``v`` by ``factor`` and counts the calls it saw (a perturbation with a closed form)."""

    def __init__(self, name, layers, factor=1.0, fail_at=None, on_call=None):
        self.name, self.layer_names, self.factor = name, set(layers), factor
        self.fail_at, self.on_call, self.calls = fail_at, on_call, 0

    def before(self, ctx):
        self.calls += 1
        if self.fail_at == self.calls:
            raise KeyError("boom")
        if self.on_call is not None:
            self.on_call(ctx)
        ctx.value = ctx.value * self.factor


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline().to("cpu")


def _names(pipe):
    return list(attention_layers(pipe).name)


def _run(pipe, *handlers, capture=()):
    with torch.no_grad(), Interception(pipe, handlers, capture=capture) as ic:
        video = pipe("a red circle", generator=torch.Generator().manual_seed(0), **KW).frames
    return video, ic


def _reference_count(pipe):
    """SDPA calls of one run inside the attention layers, counted by the tests' own mode."""
    den = pipe.unet
    rec = RecordSDPA(den, {r: m for r, m in zip(_names(pipe), _modules(pipe))})
    try:
        with torch.no_grad(), rec:
            pipe("a red circle", generator=torch.Generator().manual_seed(0), **KW)
    finally:
        rec.close()
    return len(rec.calls)


def _modules(pipe):
    from ieadapt_interp.core.adapters import layer_records
    return [r.module for r in layer_records(pipe)]


def test_swap_and_mode_give_identical_results(pipe, monkeypatch):
    names = _names(pipe)
    out = {}
    for how in ("swap", "mode"):
        monkeypatch.setenv("IEADAPT_INTERCEPT", how)
        handler = ScaleValues("scale", names[::2], factor=0.5)
        video, ic = _run(pipe, handler, capture=names)
        out[how] = (video, [(s.layer, s.step, s.rows) for s in ic.stats_calls], handler.calls)
        assert F.scaled_dot_product_attention is SDPA
    assert torch.equal(out["swap"][0], out["mode"][0])
    assert out["swap"][1] == out["mode"][1]
    # every SDPA call of the scaled layers was seen, as an independent mode counts them
    n_ref = _reference_count(pipe)
    assert out["swap"][2] == out["mode"][2] > 0 and n_ref >= out["swap"][2]


def test_unknown_intercept_setting_is_one_clear_error(pipe, monkeypatch):
    monkeypatch.setenv("IEADAPT_INTERCEPT", "patch")
    with pytest.raises(IEAdaptValueError, match="IEADAPT_INTERCEPT"):
        Interception(pipe, capture=_names(pipe)).__enter__()
    assert not pipe.unet._forward_pre_hooks and F.scaled_dot_product_attention is SDPA


@pytest.mark.parametrize("how", ["swap", "mode"])
def test_restored_after_an_exception_inside_a_layer(pipe, monkeypatch, how):
    monkeypatch.setenv("IEADAPT_INTERCEPT", how)
    with pytest.raises(KeyError, match="boom"):
        _run(pipe, ScaleValues("fail", _names(pipe), fail_at=3))
    assert F.scaled_dot_product_attention is SDPA
    assert not torch._C._is_torch_function_mode_enabled()


def test_nested_interceptions_stack_and_restore(pipe, monkeypatch):
    monkeypatch.setenv("IEADAPT_INTERCEPT", "swap")
    names = _names(pipe)
    seen = {}
    with torch.no_grad():
        ref, _ = _run(pipe, ScaleValues("both", names, factor=0.5 * 0.25))
        outer, inner = ScaleValues("outer", names, factor=0.5), ScaleValues("inner", names, factor=0.25)
        with Interception(pipe, [outer]):
            with Interception(pipe, [inner]):
                video = pipe("a red circle", generator=torch.Generator().manual_seed(0), **KW).frames
                seen["inside"] = F.scaled_dot_product_attention is SDPA
            seen["between"] = F.scaled_dot_product_attention is SDPA
    assert seen == {"inside": True, "between": True} and F.scaled_dot_product_attention is SDPA
    assert outer.calls == inner.calls > 0
    # both scalings applied (inner handler forwards to the outer one): v * 0.5 * 0.25 in one go
    assert torch.allclose(video, ref, atol=1e-6)


def test_a_foreign_replacement_is_restored_not_the_original(pipe, monkeypatch):
    monkeypatch.setenv("IEADAPT_INTERCEPT", "swap")
    calls = []

    def foreign(*args, **kwargs):
        calls.append(1)
        return SDPA(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", foreign)
    handler = ScaleValues("count", _names(pipe))
    _run(pipe, handler)
    assert F.scaled_dot_product_attention is foreign and len(calls) >= handler.calls > 0


def test_another_thread_runs_plain_sdpa_while_swapped(pipe, monkeypatch):
    monkeypatch.setenv("IEADAPT_INTERCEPT", "swap")
    q = torch.randn(1, 2, 3, 4, generator=torch.Generator().manual_seed(1))
    module = _modules(pipe)[0]
    handler = ScaleValues("scale", _names(pipe)[:1], factor=0.5)
    result = {}

    def in_layer(mod, args, kwargs):  # runs after the interception's pre-hook: the layer is swapped
        if result:
            return
        before = handler.calls
        t = threading.Thread(target=lambda: result.update(out=F.scaled_dot_product_attention(q, q, q * 2)))
        t.start()
        t.join()
        result.update(swapped=F.scaled_dot_product_attention is not SDPA, handled=handler.calls - before)

    with torch.no_grad(), Interception(pipe, [handler]):
        hook = module.register_forward_pre_hook(in_layer, with_kwargs=True)
        try:
            pipe("a red circle", generator=torch.Generator().manual_seed(0), **KW)
        finally:
            hook.remove()
    assert result["swapped"] and result["handled"] == 0
    assert torch.equal(result["out"], SDPA(q, q, q * 2))
