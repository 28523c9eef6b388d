"""The interception point: the lifecycle around the scaled-dot-product call of each attention layer.

An :class:`Interception` installs, for the duration of a ``with`` block,

* a forward pre-hook on the denoiser that counts denoising steps (by timestep), reads the number of
  latent frames and labels each batch row with its CFG branch and sample (by matching the text
  embeddings of that row against the ones the caller encoded — no assumption about the CFG batch
  order; a caller that builds the batch itself may label the rows with :meth:`Interception.label_next`);
* forward pre/post hooks on the attention modules its handlers need that mark which layer is running
  and, only while it runs, turn each ``F.scaled_dot_product_attention`` call — after the model's own
  projections, QK-norm, RoPE and text/video concatenation, so every processor is reused as is — into a
  :class:`~ieadapt_interp.core.handlers.CallContext` for the :mod:`handlers <ieadapt_interp.core.handlers>`;
* optionally :mod:`hook points <ieadapt_interp.core.hook_points>` for nnsight.

Everything is removed in ``__exit__``, also when an exception escapes.

How the call is caught (environment variable ``IEADAPT_INTERCEPT``, read at ``__enter__``):

* ``swap`` (default): the attribute ``torch.nn.functional.scaled_dot_product_attention`` is replaced by
  the interception's handler while a hooked layer's forward runs, and restored by the layer's forward hook
  (also on an exception), by ``__exit__`` and on removal. Every processor of diffusers 0.42.1 for the
  supported models (``AttnProcessor2_0``, ``CogVideoXAttnProcessor2_0``, ``MochiAttnProcessor2_0`` and
  the ``dispatch_attention_fn`` native backends of Wan, LTX-Video and HunyuanVideo) looks the function up
  by attribute at call time, so this catches it with no per-op cost.
* ``mode``: a ``TorchFunctionMode`` that routes every torch function of the layer's forward through
  Python (about 20 per attention forward) to catch the same call — also one bound under another name at
  import (``from torch.nn.functional import scaled_dot_product_attention``); use it for such a processor.

Both give identical results. The swap is process-global: nested interceptions stack (each forwards to the
function it replaced, and any exit order restores the right one), and a call from another thread while a
layer is swapped runs the function that was there before (plain SDPA), as the mode — whose stack is
per thread — does. Run one traced pipeline per thread at a time.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from . import hook_points
from .adapters import AttentionLayer, attention_layers, get_adapter, layer_records
from .entropy import sdpa_with_entropy
from .handlers import (AttentionHandler, CallContext, HookPointHandler, LayerStats, MapRecorder, RowLabel,
                       StatsRecorder)
from .layouts import get_layout
from .maps import MapRequest
from .errors import IEAdaptValueError

_SDPA = F.scaled_dot_product_attention
_MODES = ("swap", "mode")


def intercept_mode() -> str:
    """How an :class:`Interception` catches the SDPA call: ``IEADAPT_INTERCEPT`` (``swap``, the default, or ``mode``).

    >>> intercept_mode() in _MODES
    True
    """
    value = os.environ.get("IEADAPT_INTERCEPT", "swap").strip().lower() or "swap"
    if value not in _MODES:
        raise IEAdaptValueError(f"IEADAPT_INTERCEPT={value!r} is not one of {_MODES}; unset it (swap, the "
                                "default) or set it to 'mode' (TorchFunctionMode).")
    return value


_SWAP_LOCK = threading.Lock()
_ACTIVE_SWAPS: list[_SDPASwap] = []


class _SDPASwap:
    """``torch.nn.functional.scaled_dot_product_attention`` → ``handler`` while entered, on the entering thread.

    Calls from another thread, from inside the handler (its own SDPA) or after exit go to the function this
    swap replaced (``previous``); while the handler runs the attribute is ``previous`` again. Swaps stack;
    leaving one out of order relinks the one above it.

    >>> import torch
    >>> seen = []
    >>> swap = _SDPASwap(lambda q, k, v, **kw: seen.append(q.shape) or F.scaled_dot_product_attention(q, k, v, **kw))
    >>> q = torch.ones(1, 1, 2, 4)
    >>> with swap:
    ...     out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    >>> seen, torch.nn.functional.scaled_dot_product_attention is _SDPA
    ([torch.Size([1, 1, 2, 4])], True)
    """

    def __init__(self, handler) -> None:
        self.handler = handler
        self.previous = _SDPA
        self.thread = -1
        self.active = False
        self.busy = False
        self.fn = self._call  # one bound method: the attribute is compared by identity

    def _call(self, *args, **kwargs):
        if not self.active or self.busy or threading.get_ident() != self.thread:
            return self.previous(*args, **kwargs)
        self.busy = True
        # inside the handler the name means what it meant before (a mode testing ``func is
        # F.scaled_dot_product_attention``, e.g. diffusers' layer skip, still recognises the call)
        F.scaled_dot_product_attention = self.previous
        try:
            return self.handler(*args, **kwargs)
        finally:
            self.busy = False
            if self.active:
                F.scaled_dot_product_attention = self.fn

    def __enter__(self) -> _SDPASwap:
        with _SWAP_LOCK:
            self.previous = F.scaled_dot_product_attention
            self.thread = threading.get_ident()
            self.active = True
            F.scaled_dot_product_attention = self.fn
            _ACTIVE_SWAPS.append(self)
        return self

    def __exit__(self, *exc) -> None:
        with _SWAP_LOCK:
            if not self.active:
                return
            self.active = False
            _ACTIVE_SWAPS.remove(self)
            above = next((s for s in _ACTIVE_SWAPS if s.previous is self.fn), None)
            if above is not None:  # left out of order: the swap above now forwards past this one
                above.previous = self.previous
            elif F.scaled_dot_product_attention is self.fn:
                F.scaled_dot_product_attention = self.previous
            # else code outside replaced it after this swap; when it restores this one, calls forward (inactive)


class _SDPAMode(TorchFunctionMode):
    def __init__(self, handler) -> None:
        super().__init__()
        self.handler = handler

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _SDPA:
            return self.handler(*args, **kwargs)
        return func(*args, **kwargs)


@functools.lru_cache(maxsize=256)
def _forward_signature(cls: type) -> inspect.Signature:
    """The signature of ``cls.forward``, computed once per class (``inspect.signature`` costs ~50 µs a call)."""
    return inspect.signature(cls.forward)


@functools.lru_cache(maxsize=256)
def parameter_positions(cls: type) -> dict[str, int]:
    """``{name: position}`` of the positional parameters of ``cls.forward`` (``self`` excluded, up to ``*args``).

    >>> import torch
    >>> parameter_positions(torch.nn.Linear)
    {'input': 0}
    """
    out = {}
    for i, p in enumerate(list(_forward_signature(cls).parameters.values())[1:]):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        out[p.name] = i
    return out


def get_arg(position: dict[str, int], args, kwargs: dict, name: str):
    """The argument ``name`` of a call, positional or keyword (``None`` if absent); ``position`` from
    :func:`parameter_positions`.

    >>> get_arg({"x": 0, "t": 1}, [10], {"t": 3}, "t"), get_arg({"x": 0}, [10], {}, "x")
    (3, 10)
    """
    i = position.get(name)
    if i is not None and i < len(args):
        return args[i]
    return kwargs.get(name)


def set_arg(position: dict[str, int], args: list, kwargs: dict, name: str, value) -> None:
    """Replace the argument ``name`` in place where the call passed it (a missing keyword stays missing).

    >>> args, kwargs = [10], {"t": 3}
    >>> set_arg({"x": 0, "t": 1}, args, kwargs, "x", 11); set_arg({"x": 0, "t": 1}, args, kwargs, "t", 4)
    >>> args, kwargs
    ([11], {'t': 4})
    """
    i = position.get(name)
    if i is not None and i < len(args):
        args[i] = value
    elif name in kwargs:
        kwargs[name] = value


def _bind(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict:
    """Name a module call's arguments by its class's ``forward`` signature (wrappers may hide it)."""
    try:
        bound = _forward_signature(type(module)).bind_partial(module, *args, **kwargs)
    except TypeError:
        return dict(kwargs)
    return dict(bound.arguments)


@dataclass
class _RunState:
    step: int = -1
    last_timestep: float | None = None
    timesteps: list[float] = field(default_factory=list)
    rows: list[RowLabel] = field(default_factory=list)
    num_frames: int = 1
    layer: AttentionLayer | None = None
    text_len: int = 0
    text_mask: torch.Tensor | None = None  # a layer's ``[row, text]`` padding mask (Mochi)
    calls_in_layer: int = 0
    mode: _SDPAMode | _SDPASwap | None = None



class Interception:
    """Run ``handlers`` at every attention call of ``pipe`` inside a ``with`` block.

    Parameters
    ----------
    pipe
        A supported diffusers pipeline (see :func:`ieadapt_interp.attention_layers`).
    handlers
        :class:`~ieadapt_interp.core.handlers.AttentionHandler` objects, run in this order (names unique);
        e.g. a :class:`~ieadapt_interp.methods.perturbation.PerturbationHandler`.
    capture
        Layer names whose statistics a :class:`~ieadapt_interp.core.handlers.StatsRecorder` records
        (:attr:`stats_calls`).
    record_branches
        CFG branches whose rows are recorded (stats and maps): ``("cond",)`` (default), ``("uncond",)`` or both.
    maps
        Optional :class:`~ieadapt_interp.core.maps.MapRequest` (a :class:`~ieadapt_interp.core.handlers.MapRecorder`).
    embeddings
        ``{"cond": [b, T, C], "uncond": [b, T, C]}`` text embeddings used to label batch rows.
        Without them every row is labelled ``("all", row)``.
    hook_points
        Route every attention layer through identity hook points (for nnsight) while active.
    keep_hook_points
        The hook points are already attached by the caller, who also removes them.

    The core handlers run after the given ones: hook points, then the stats and map recorders.

    Example
    -------
    >>> from ieadapt_interp import tiny_pipeline, attention_layers
    >>> pipe = tiny_pipeline()
    >>> with Interception(pipe, capture=list(attention_layers(pipe).name)) as ic:
    ...     _ = pipe("a red circle", num_frames=4, height=16, width=16, num_inference_steps=1)
    >>> len(ic.stats_calls) > 0
    True
    """

    def __init__(
        self,
        pipe,
        handlers: Iterable[AttentionHandler] = (),
        *,
        capture: Iterable[str] = (),
        record_branches: tuple[str, ...] = ("cond",),
        maps: MapRequest | None = None,
        embeddings: dict[str, torch.Tensor] | None = None,
        hook_points: bool = False,
        keep_hook_points: bool = False,
    ) -> None:
        self.pipe = pipe
        self.adapter = get_adapter(pipe)
        self.denoiser = getattr(pipe, self.adapter.denoiser_attr)
        self.layers = layer_records(pipe)
        self.by_module = {id(r.module): r for r in self.layers}
        self.embeddings = dict(embeddings or {})
        self.hook_points = hook_points
        self.keep_hook_points = keep_hook_points  # installed and removed by the owner (nnsight wrapper)
        self.registry: dict[str, AttentionHandler] = {}
        for handler in handlers:
            self.add(handler)
        if hook_points:
            self.add(HookPointHandler(r.name for r in self.layers))
        self.stats_recorder = StatsRecorder(capture, record_branches) if capture else None
        if self.stats_recorder is not None:
            self.add(self.stats_recorder)
        self.map_recorder = None
        if maps is not None:
            def steps() -> int:
                return int(getattr(pipe.scheduler, "num_inference_steps", 1) or 1)

            self.map_recorder = MapRecorder(maps, maps.resolved.resolve(attention_layers(pipe)), steps,
                                            record_branches, hook_points)
            self.add(self.map_recorder)
        self._label_next: list[RowLabel] | None = None
        self._hooks = HookHandles()
        self._index_cache: dict = {}
        self.state = _RunState()

    def add(self, handler: AttentionHandler) -> AttentionHandler:
        """Register ``handler`` (after the ones already registered); a duplicate name is an error."""
        if handler.name in self.registry:
            raise IEAdaptValueError(f"A handler named {handler.name!r} is already registered on this interception; "
                             "give each handler a unique name.")
        self.registry[handler.name] = handler
        return handler

    @property
    def stats_calls(self) -> list[LayerStats]:
        """What the stats recorder recorded, one :class:`LayerStats` per (call, layer)."""
        return self.stats_recorder.calls if self.stats_recorder is not None else []

    @property
    def maps(self) -> dict:
        """What the map recorder kept: ``{layer: [(step, rows, pooled)]}``."""
        return self.map_recorder.maps if self.map_recorder is not None else {}

    def label_next(self, rows: list[RowLabel]) -> None:
        """Label the rows of the next denoiser call explicitly (a caller that builds the batch itself)."""
        self._label_next = list(rows)

    def relabel(self, rows: list[RowLabel]) -> None:
        """Label the rows of the denoiser call now running, from its next attention call on (a caller that
        changes the batch between blocks: guidance's prefix sharing)."""
        self.state.rows = list(rows)

    # -- install / remove --------------------------------------------------------------------
    def _handlers_by_layer(self) -> dict[str, list[AttentionHandler]]:
        table = attention_layers(self.pipe)
        wanted: dict[str, list[AttentionHandler]] = {}
        for handler in self.registry.values():
            for name in handler.layers(table):
                wanted.setdefault(name, []).append(handler)
        return wanted

    def __enter__(self) -> "Interception":
        self._intercept = _SDPASwap if intercept_mode() == "swap" else _SDPAMode
        self._by_layer = self._handlers_by_layer()
        for handler in self.registry.values():
            handler.reset()
        self.state = _RunState()
        try:
            for model in self.adapter.denoisers(self.pipe).values():  # Wan 2.2: both experts
                self._hooks.add(model.register_forward_pre_hook(self._on_denoiser, with_kwargs=True))
            if self.hook_points and not self.keep_hook_points:
                hook_points.install([r.module for r in self.layers])
            for record in self.layers:
                if record.name in self._by_layer:
                    self._hooks.add(record.module.register_forward_pre_hook(self._on_enter, with_kwargs=True))
                    self._hooks.add(record.module.register_forward_hook(self._on_exit, always_call=True))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        self._leave_mode()
        self._hooks.remove_all()
        if self.hook_points and not self.keep_hook_points:
            hook_points.remove([r.module for r in self.layers])

    # -- hooks -----------------------------------------------------------------------------
    def _on_denoiser(self, module, args, kwargs):
        bound = _bind(module, args, kwargs)
        sample = bound.get(self.adapter.sample_arg)
        timestep = bound.get(self.adapter.timestep_arg)
        text = bound.get(self.adapter.text_arg)
        t = float(torch.as_tensor(timestep).flatten()[0]) if timestep is not None else float(self.state.step + 1)
        if self.state.last_timestep is None or t != self.state.last_timestep:
            self.state.step += 1
            self.state.timesteps.append(t)
            self.state.last_timestep = t
        self.state.num_frames = self.adapter.token_frames(module, self.adapter.latent_frames(bound))
        if self._label_next is not None:
            if len(self._label_next) != int(sample.shape[0]):
                raise RuntimeError(f"label_next gave {len(self._label_next)} labels for a batch of "
                                   f"{int(sample.shape[0])} rows.")
            self.state.rows, self._label_next = self._label_next, None
        else:
            self.state.rows = self._label_rows(text, int(sample.shape[0]))

    def _label_rows(self, text: torch.Tensor | None, n_rows: int) -> list[RowLabel]:
        if text is None or not self.embeddings:
            return [("all", i) for i in range(n_rows)]
        counts = {"cond": 0, "uncond": 0}
        rows = []
        stride = max(1, text.shape[0] // n_rows)  # some pipelines repeat the text rows per frame
        for i in range(n_rows):
            label = "unknown"
            row_text = text[i * stride]
            for branch in ("cond", "uncond"):
                ref = self.embeddings.get(branch)
                if ref is not None and any(torch.equal(row_text.to(r.device, r.dtype), r) for r in ref):
                    label = branch
                    break
            if label == "unknown":
                rows.append(("unknown", i))
                continue
            rows.append((label, counts[label]))
            counts[label] += 1
        return rows

    def _on_enter(self, module, args, kwargs):
        self.state.layer = self.by_module[id(module)]
        self.state.calls_in_layer = 0
        layout = get_layout(self.state.layer.layout)
        # only a layout with text tokens reads the call's arguments (binding them costs ~20 µs per layer call)
        bound = _bind(module, args, kwargs) if layout.has_text else {}
        text = bound.get("encoder_hidden_states")
        self.state.text_len = int(text.shape[1]) if (text is not None and layout.has_text) else 0
        mask = bound.get("attention_mask") if self.state.text_len else None
        self.state.text_mask = mask if (mask is not None and mask.ndim == 2
                                        and mask.shape[1] == self.state.text_len) else None
        self._leave_mode()
        self.state.mode = self._intercept(self._on_sdpa)
        self.state.mode.__enter__()

    def _on_exit(self, module, args, output):
        layer = self.state.layer
        self._leave_mode()
        self.state.layer = None
        if layer is not None and self.state.calls_in_layer == 0:
            raise RuntimeError(
                f"Attention layer {layer.name} ran without calling F.scaled_dot_product_attention, so it cannot "
                f"be observed or perturbed (processor {type(module.processor).__name__}). Use a PyTorch-SDPA "
                f"processor, e.g. pipe.{self.adapter.denoiser_attr}.set_default_attn_processor() or "
                f"AttnProcessor2_0(). A processor that calls it under a name bound at import needs "
                f"IEADAPT_INTERCEPT=mode."
            )
        return output

    def _leave_mode(self) -> None:
        if self.state.mode is not None:
            mode, self.state.mode = self.state.mode, None
            mode.__exit__(None, None, None)

    # -- the attention call ----------------------------------------------------------------
    def _on_sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **extra):
        layer, st = self.state.layer, self.state
        st.calls_in_layer += 1
        rows, text_len = st.rows or [("all", i) for i in range(query.shape[0])], st.text_len
        if st.text_mask is not None and attn_mask is None and query.shape[0] == 1:
            # one call per row over [video, the row's unpadded text tokens] (Mochi's processor)
            row = st.calls_in_layer - 1
            rows, text_len = [rows[row]], int(st.text_mask[row].sum())
        n_rows = len(rows)
        if query.shape[0] % n_rows:
            raise RuntimeError(f"{layer.name}: attention batch {query.shape[0]} is not a multiple of the "
                               f"denoiser batch {n_rows}; the adapter's layout does not fit this model.")
        ctx = CallContext(layer, st.step, rows, query.shape[0] // n_rows, get_layout(layer.layout), st.num_frames,
                          text_len, query, key, value, attn_mask,
                          query.shape[-1] ** -0.5 if scale is None else scale, _index_cache=self._index_cache)
        handlers = self._by_layer.get(layer.name, ())
        for handler in handlers:
            handler.before(ctx)
        kwargs = dict(dropout_p=dropout_p, is_causal=is_causal, **extra)
        # by attribute: inside the handler the swap forwards to the function it replaced (an outer
        # interception's, or SDPA), as the mode, popped while it runs, passes it to the mode below
        sdpa = F.scaled_dot_product_attention
        if any(handler.wants_entropy(ctx) for handler in handlers):
            ctx.out, ctx.entropy = sdpa_with_entropy(ctx.query, ctx.key, ctx.value, ctx.attn_mask, ctx.scale,
                                                     sdpa=sdpa, **kwargs)
        else:
            ctx.out = sdpa(ctx.query, ctx.key, ctx.value, attn_mask=ctx.attn_mask, scale=ctx.scale, **kwargs)
        for handler in handlers:
            handler.after(ctx)
        return ctx.out


class HookHandles:
    """The PyTorch hook handles one owner registered, removed together.

    :meth:`add` keeps a handle (``module.register_forward_pre_hook(...)``, ``register_forward_hook(...)``);
    :meth:`remove_all` removes every handle kept so far (idempotent; the set is empty again and can be
    reused). As a context manager it removes everything on exit, also when an exception escapes;
    :meth:`registering` removes everything only on an exception, for registration in an ``__enter__``
    (the user's modules are left with none of the hooks when a registration half-way fails).

    >>> lin = torch.nn.Linear(2, 2)
    >>> with HookHandles() as hooks:
    ...     _ = hooks.add(lin.register_forward_hook(lambda module, args, out: out * 0))
    ...     lin(torch.ones(1, 2)).abs().sum().item()
    0.0
    >>> len(hooks), len(lin._forward_hooks)
    (0, 0)
    >>> hooks = HookHandles()
    >>> try:
    ...     with hooks.registering():
    ...         _ = hooks.add(lin.register_forward_pre_hook(lambda module, args: None))
    ...         raise RuntimeError("the second registration failed")
    ... except RuntimeError:
    ...     pass
    >>> len(hooks), len(lin._forward_pre_hooks)
    (0, 0)
    """

    def __init__(self) -> None:
        self._handles: list = []

    def add(self, handle):
        """Keep ``handle`` (a ``torch.utils.hooks.RemovableHandle``) for removal; returns it."""
        self._handles.append(handle)
        return handle

    def extend(self, other: "HookHandles") -> None:
        """Take over the handles of ``other`` (left empty): they are removed with these."""
        self._handles += other._handles
        other._handles = []

    def remove_all(self) -> None:
        """Remove every kept hook (in registration order) and forget the handles."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    @contextlib.contextmanager
    def registering(self):
        """A ``with`` block that registers hooks: on an exception every kept hook is removed, then it propagates."""
        try:
            yield self
        except BaseException:
            self.remove_all()
            raise

    def __len__(self) -> int:
        return len(self._handles)

    def __enter__(self) -> "HookHandles":
        return self

    def __exit__(self, *exc) -> None:
        self.remove_all()


def hook_denoisers(models, before, after) -> HookHandles:
    """A forward pre-hook (with kwargs, run first) and a forward hook on each denoiser in ``models``.

    Returns the handles; if one registration fails, those already made are removed before the error propagates.
    """
    hooks = HookHandles()
    with hooks.registering():
        for model in models:
            hooks.add(model.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
            hooks.add(model.register_forward_hook(after))
    return hooks
