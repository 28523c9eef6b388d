"""Launch a Triton kernel straight through its compiled binary once its specialisation is known (host cost per call).

``jit[grid](*args)`` re-derives the kernel's specialisation on every call (binding ~30 arguments, the cache key
string, the global-value check): on the H200 machine's CPU that took 60–80 µs per launch of the fused attention and
row-norm kernels, several times the launch itself, and the traced AnimateDiff step (56 attention calls, each with
both kernels) waits on the host (``benchmarks/RESULTS.md``, 2026-12-02). A :class:`CompiledLaunch` belongs to one
caller-side *plan* whose key fixes everything Triton specialises on (every integer argument, the dtypes, 16-byte
alignment of each pointer, the constexprs and launch options): its first call goes through ``jit`` as usual (compiling
if needed) and keeps the compiled kernel, later calls launch that kernel directly (``CompiledKernel[grid](*args)``,
Triton's own runner). Under ``TRITON_INTERPRET=1`` nothing is kept (every call goes through the interpreter).
"""

from __future__ import annotations

import os

__all__ = ["CompiledLaunch", "keep", "launch_options"]

#: Launch plans kept per cache before it starts over (bounded host memory)
MAX_PLANS = 512


class CompiledLaunch:
    """One kernel, one argument specialisation: ``launch(grid, values)`` with ``values`` in the kernel's parameter order.

    ``jit``: the ``@triton.jit`` function; ``constexprs``: its compile-time arguments by name (they follow the runtime
    arguments in its signature); ``options``: launch options (``num_warps``, ``num_stages``, ... as an autotuner
    ``Config.all_kwargs()`` gives them, minus the constexprs). The caller guarantees that every call of one instance
    has the same specialisation (same integer values, dtypes, pointer alignment).
    """

    def __init__(self, jit, constexprs: dict, options: dict) -> None:
        self.jit = jit
        self.constexprs = dict(constexprs)
        self.options = dict(options)
        names = jit.arg_names[len(jit.arg_names) - len(self.constexprs):]
        if set(names) != set(self.constexprs):
            raise ValueError(f"constexprs {sorted(self.constexprs)} are not the last parameters {names} of {jit}")
        self.tail = tuple(self.constexprs[name] for name in names)
        self.kernel = None

    def __call__(self, grid: tuple, args) -> None:
        """Launch on ``args`` (the runtime arguments, in order); the constexprs are appended."""
        kernel = self.kernel
        if kernel is not None:
            kernel[(*grid, 1, 1)[:3]](*args, *self.tail)  # the compiled runner reads three grid dims
            return
        kernel = self.jit[grid](*args, **self.constexprs, **self.options)
        if os.environ.get("TRITON_INTERPRET", "0") != "1" and hasattr(kernel, "function") and hasattr(kernel, "run"):
            self.kernel = kernel


def launch_options(config) -> dict:
    """The launch options (``num_warps``, ``num_stages``, ...) of an autotuner ``Config``: everything but its
    constexprs (``config.kwargs``)."""
    return {name: value for name, value in config.all_kwargs().items() if name not in config.kwargs}


def keep(plans: dict, key, plan) -> None:
    """``plans[key] = plan``, starting over when ``plans`` holds :data:`MAX_PLANS` (call shapes seen)."""
    if len(plans) >= MAX_PLANS:
        plans.clear()
    plans[key] = plan
