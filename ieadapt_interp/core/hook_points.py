"""Identity modules attached to attention layers, so nnsight (or torch hooks) can read and set
what flows through them.

Each attention layer ``L`` gets, while an :class:`~ieadapt_interp.core.interception.Interception` with
``hook_points=True`` is active (e.g. inside :func:`ieadapt_interp.traced`):

* ``L.hook_entropy``  — ``[B', head, query]`` fp32 entropy of each softmax row (nats);
* ``L.hook_output``   — ``[B', head, query, dim]`` the attention output ``A·V`` (after any
  perturbation), before the layer's output projection; setting it changes the model;
* ``L.hook_map``      — ``[B', head, query_bin, key_bin]`` the pooled map, only for layers whose
  maps were requested.

``B'`` is the batch of the scaled-dot-product call (see :mod:`ieadapt_interp.core.adapters` layouts).

>>> import torch
>>> HookPoint()(torch.ones(2)).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import torch

HOOK_NAMES: tuple[str, ...] = ("hook_entropy", "hook_output", "hook_map")


class HookPoint(torch.nn.Module):
    """An identity module: a named place to observe or replace a tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def install(modules: list[torch.nn.Module]) -> None:
    """Attach fresh hook points to every module; an existing one is an error (no silent reuse)."""
    for module in modules:
        for name in HOOK_NAMES:
            if name in module._modules:
                raise RuntimeError(f"{type(module).__name__} already has {name}: another ieadapt_interp "
                                   "interception is active on this pipeline. Close it first.")
    for module in modules:
        for name in HOOK_NAMES:
            module.add_module(name, HookPoint())


def remove(modules: list[torch.nn.Module]) -> None:
    """Detach the hook points again (idempotent)."""
    for module in modules:
        for name in HOOK_NAMES:
            module._modules.pop(name, None)
