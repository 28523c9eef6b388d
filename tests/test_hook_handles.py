"""HookHandles: every hook it registered is removed on exit and when a registration fails half-way."""

from __future__ import annotations

import pytest
import torch

from ieadapt_interp.core.interception import HookHandles, hook_denoisers


def _no_hooks(module: torch.nn.Module) -> bool:
    return not module._forward_pre_hooks and not module._forward_hooks


def test_removed_on_normal_exit():
    torch.manual_seed(0)
    lin, x = torch.nn.Linear(3, 2), torch.randn(4, 3)
    expected = x @ lin.weight.T + lin.bias  # the closed form of the unhooked layer
    with HookHandles() as hooks:
        hooks.add(lin.register_forward_pre_hook(lambda module, args: (args[0] * 2,)))
        hooks.add(lin.register_forward_hook(lambda module, args, out: out + 1))
        assert len(hooks) == 2
        torch.testing.assert_close(lin(x), (2 * x) @ lin.weight.T + lin.bias + 1)
    assert _no_hooks(lin) and len(hooks) == 0
    torch.testing.assert_close(lin(x), expected)
    hooks.remove_all()  # idempotent


def test_failed_registration_leaves_no_hook():
    lin = torch.nn.Linear(2, 2)
    hooks = HookHandles()
    with pytest.raises(RuntimeError, match="half-way"), hooks.registering():
        hooks.add(lin.register_forward_pre_hook(lambda module, args: None))
        hooks.add(lin.register_forward_hook(lambda module, args, out: None))
        raise RuntimeError("registration failed half-way")
    assert _no_hooks(lin) and len(hooks) == 0
    # a registration that succeeds keeps its hooks until remove_all
    with hooks.registering():
        hooks.add(lin.register_forward_hook(lambda module, args, out: None))
    assert len(lin._forward_hooks) == 1
    hooks.remove_all()
    assert _no_hooks(lin)


def test_hook_denoisers_cleans_up_a_failed_registration():
    first = torch.nn.Linear(2, 2)
    with pytest.raises(AttributeError):  # the second "denoiser" is no module: its registration fails
        hook_denoisers([first, object()], lambda module, args, kwargs: None, lambda module, args, out: None)
    assert _no_hooks(first)
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    hooks = hook_denoisers([a], lambda module, args, kwargs: None, lambda module, args, out: None)
    other = hook_denoisers([b], lambda module, args, kwargs: None, lambda module, args, out: None)
    hooks.extend(other)
    assert len(hooks) == 4 and len(other) == 0
    hooks.remove_all()
    assert _no_hooks(a) and _no_hooks(b)
