"""The interception point: the scaled-dot-product call inside each attention layer.

An :class:`Interception` installs, for the duration of a ``with`` block,

* a forward pre-hook on the denoiser that counts denoising steps (by timestep), reads the number of
  latent frames and labels each batch row with its CFG branch and sample (by matching the text
  embeddings of that row against the ones :func:`ieadapt_interp.generate` encoded — no assumption
  about the CFG batch order);
* forward pre/post hooks on the chosen attention modules that mark which layer is running and, only
  while it runs, a ``TorchFunctionMode`` that observes or replaces
  ``F.scaled_dot_product_attention`` — after the model's own projections, QK-norm, RoPE and
  text/video concatenation, so every processor is reused as is;
* optionally :mod:`hook points <ieadapt_interp.hook_points>` for nnsight.

Everything is removed in ``__exit__``, also when an exception escapes.

Per call it can (per batch element): compute row entropy/energy (:mod:`.entropy`), replace the
output in closed form (:mod:`.perturbation`), attend with another sample's ``Q, K`` (editing), and
pool the map (:mod:`.maps`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from . import hook_points
from .adapters import AttentionLayer, get_adapter, layer_records
from .entropy import sdpa_with_entropy, squared_norm, value_mean
from .maps import MapRequest, map_bytes, pooled_map
from .perturbation import Perturbation, replace_output

_SDPA = F.scaled_dot_product_attention


@dataclass(frozen=True)
class Assignment:
    """A perturbation and the samples (within each CFG branch) it applies to (``None`` = all)."""

    perturbation: Perturbation
    samples: frozenset[int] | None = None


@dataclass(frozen=True)
class AttendFrom:
    """Sample ``target`` attends with sample ``source``'s ``Q, K`` (``Y_tgt = A_src · V_tgt``) in ``layers``.

    ``what="qk"`` is IE-Adapt editing; ``what="kv"`` takes the source's ``K, V`` (MasaCtrl).
    """

    layers: frozenset[str]
    source: int
    target: int
    steps: tuple[int, int] | None = None
    what: str = "qk"


@dataclass
class CallRecord:
    """Per-row statistics of one attention call, reduced to ``[row, head, frame]`` (+ text rows)."""

    step: int
    layer: str
    rows: list[tuple[str, int]]
    n_keys: int
    stats: dict[str, torch.Tensor]


class _SDPAMode(TorchFunctionMode):
    def __init__(self, handler: Callable) -> None:
        super().__init__()
        self.handler = handler

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _SDPA:
            return self.handler(*args, **kwargs)
        return func(*args, **kwargs)


def _bind(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict:
    """Name a module call's arguments by its class's ``forward`` signature (wrappers may hide it)."""
    try:
        bound = inspect.signature(type(module).forward).bind_partial(module, *args, **kwargs)
    except TypeError:
        return dict(kwargs)
    return dict(bound.arguments)


@dataclass
class _RunState:
    step: int = -1
    last_timestep: float | None = None
    timesteps: list[float] = field(default_factory=list)
    rows: list[tuple[str, int]] = field(default_factory=list)
    num_frames: int = 1
    layer: AttentionLayer | None = None
    text_len: int = 0
    calls_in_layer: int = 0
    mode: _SDPAMode | None = None


class Interception:
    """Observe and replace every chosen attention call of ``pipe`` inside a ``with`` block.

    Parameters
    ----------
    pipe
        A supported diffusers pipeline (see :func:`ieadapt_interp.attention_layers`).
    capture
        Layer names whose statistics are recorded (``entropy``, ``energy`` …) into :attr:`records`.
    record_branches
        CFG branches whose rows are recorded: ``("cond",)`` (default), ``("uncond",)`` or both.
    assignments
        Perturbations and the samples they apply to.
    attend_from
        Cross-sample attention (editing).
    maps
        Optional :class:`~ieadapt_interp.maps.MapRequest`.
    embeddings
        ``{"cond": [b, T, C], "uncond": [b, T, C]}`` text embeddings used to label batch rows.
        Without them every row is labelled ``("all", row)``.
    hook_points
        Attach identity hook points (for nnsight) to every attention layer while active.
    keep_hook_points
        The hook points are already attached by the caller, who also removes them.

    Example
    -------
    >>> from ieadapt_interp import tiny_pipeline, attention_layers
    >>> pipe = tiny_pipeline()
    >>> with Interception(pipe, capture=list(attention_layers(pipe).name)) as ic:
    ...     _ = pipe("a red circle", num_frames=4, height=16, width=16, num_inference_steps=1)
    >>> len(ic.records) > 0
    True
    """

    def __init__(
        self,
        pipe,
        *,
        capture: Iterable[str] = (),
        record_branches: tuple[str, ...] = ("cond",),
        assignments: Iterable[Assignment] = (),
        attend_from: Iterable[AttendFrom] = (),
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
        self.capture = set(capture)
        self.record_branches = tuple(record_branches)
        self.embeddings = embeddings or {}
        self.hook_points = hook_points
        self.keep_hook_points = keep_hook_points  # installed and removed by the owner (nnsight wrapper)
        self.maps = maps
        self.plan: dict[str, list[Assignment]] = {}
        table = self.table()
        for assignment in assignments:
            for name in assignment.perturbation.layers.resolve(table):
                self.plan.setdefault(name, []).append(assignment)
        self.attend_from = list(attend_from)
        self.map_layers = set(maps.resolved.resolve(table)) if maps else set()
        self.records: list[CallRecord] = []
        self.map_records: dict[str, list[tuple[int, list[tuple[str, int]], torch.Tensor]]] = {}
        self._map_committed = 0
        self._map_buffer = 0
        self._map_checked: set[str] = set()
        self._handles: list = []
        self._index_cache: dict[tuple, torch.Tensor] = {}
        self.state = _RunState()

    def table(self):
        from .adapters import attention_layers

        return attention_layers(self.pipe)

    # -- install / remove --------------------------------------------------------------------
    def _active_layers(self) -> list[AttentionLayer]:
        if self.hook_points:
            return self.layers
        wanted = self.capture | set(self.plan) | self.map_layers | {n for a in self.attend_from for n in a.layers}
        return [r for r in self.layers if r.name in wanted]

    def __enter__(self) -> "Interception":
        try:
            self._handles.append(self.denoiser.register_forward_pre_hook(self._on_denoiser, with_kwargs=True))
            active = self._active_layers()
            if self.hook_points and not self.keep_hook_points:
                hook_points.install([r.module for r in self.layers])
            for record in active:
                self._handles.append(record.module.register_forward_pre_hook(self._on_enter, with_kwargs=True))
                self._handles.append(record.module.register_forward_hook(self._on_exit, always_call=True))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        self._leave_mode()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
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
        self.state.num_frames = int(sample.shape[self.adapter.frame_axis])
        self.state.rows = self._label_rows(text, int(sample.shape[0]))

    def _label_rows(self, text: torch.Tensor | None, n_rows: int) -> list[tuple[str, int]]:
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
        text = _bind(module, args, kwargs).get("encoder_hidden_states")
        self.state.text_len = int(text.shape[1]) if (text is not None and self.state.layer.kind == "joint") else 0
        self._leave_mode()
        self.state.mode = _SDPAMode(self._on_sdpa)
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
                f"AttnProcessor2_0()."
            )
        return output

    def _leave_mode(self) -> None:
        if self.state.mode is not None:
            mode, self.state.mode = self.state.mode, None
            mode.__exit__(None, None, None)

    # -- the attention call ----------------------------------------------------------------
    def _elements(self, rows: list[int], per: int, device) -> slice | torch.Tensor:
        """Batch elements of denoiser ``rows`` (each spans ``per`` consecutive elements of the attention batch).

        Consecutive rows (the usual case: a CFG half, or the whole batch) give a ``slice`` — selecting is a
        view, no copy. Other row sets give an index tensor, built once per run and device: moving a host
        index to the GPU synchronises the stream, which would stall every attention call.
        """
        if rows and rows == list(range(rows[0], rows[-1] + 1)):
            return slice(rows[0] * per, (rows[-1] + 1) * per)
        key = (tuple(rows), per, str(device))
        if key not in self._index_cache:
            idx = torch.tensor(rows, dtype=torch.long).unsqueeze(1) * per + torch.arange(per).unsqueeze(0)
            self._index_cache[key] = idx.flatten().to(device)
        return self._index_cache[key]

    def _kept_rows(self) -> list[int]:
        """Denoiser rows whose statistics and maps are recorded (their branch is in ``record_branches``)."""
        return [i for i, (b, _) in enumerate(self.state.rows) if b in self.record_branches or b == "all"]

    def _rows_where(self, branch_ok: Callable[[str], bool], samples: frozenset[int] | None) -> list[int]:
        return [i for i, (b, s) in enumerate(self.state.rows)
                if branch_ok(b) and (samples is None or s in samples)]

    def _on_sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **extra):
        layer, st = self.state.layer, self.state
        st.calls_in_layer += 1
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        n_rows = len(st.rows) or query.shape[0]
        if query.shape[0] % n_rows:
            raise RuntimeError(f"{layer.name}: attention batch {query.shape[0]} is not a multiple of the "
                               f"denoiser batch {n_rows}; the adapter's layout does not fit this model.")
        per = query.shape[0] // n_rows
        query, key, value = self._cross_sample(layer, query, key, value, per)
        sdpa_kwargs = dict(dropout_p=dropout_p, is_causal=is_causal, **extra)
        capture = layer.name in self.capture and any(b in self.record_branches or b == "all"
                                                     for b, _ in st.rows)
        want_entropy = capture or self.hook_points
        if want_entropy:
            out, ent = sdpa_with_entropy(query, key, value, attn_mask, scale, sdpa=_SDPA, **sdpa_kwargs)
        else:
            out, ent = _SDPA(query, key, value, attn_mask=attn_mask, scale=scale, **sdpa_kwargs), None
        mean_v = None
        assignments = [a for a in self.plan.get(layer.name, ())]
        for assignment in assignments:
            p = assignment.perturbation
            rows = self._rows_where(lambda b: p.active(st.step, b) or (b == "all" and p.active(st.step, "both")),
                                    assignment.samples)
            if not rows:
                continue
            if p.replacement in ("identity", "mix") and query.shape[-2] != key.shape[-2]:
                raise ValueError(f"{layer.name} is cross-attention ({query.shape[-2]} queries, {key.shape[-2]} "
                                 f"keys): '{p.replacement}' needs a square map; use uniform or scale.")
            mean_v = value_mean(value, attn_mask) if mean_v is None else mean_v
            sel = self._elements(rows, per, out.device)
            mv = _select(mean_v, sel) if mean_v.shape[0] == out.shape[0] else mean_v
            new = replace_output(_select(out, sel), _select(value, sel), mv, p.replacement, p.lam)
            out = _scatter(out, sel, new.to(out.dtype))
        if self.hook_points:
            ent = layer.module.hook_entropy(ent)
            out = layer.module.hook_output(out)
        if capture:
            self._record(layer, query, key, value, attn_mask, out, ent, per)
        if layer.name in self.map_layers and self.maps.wants(st.step):
            self._record_map(layer, query, key, attn_mask, scale, per)
        return out

    def _cross_sample(self, layer, query, key, value, per):
        """Editing: the target rows take the source's Q, K (or K, V); returns ``(q, k, v)``."""
        active = [a for a in self.attend_from if layer.name in a.layers
                  and (a.steps is None or a.steps[0] <= self.state.step < a.steps[1])]
        if not active:
            return query, key, value
        query, key, value = query.clone(), key.clone(), value.clone()
        for branch in {b for b, _ in self.state.rows}:
            lookup = {s: i for i, (b, s) in enumerate(self.state.rows) if b == branch}
            for a in active:
                if a.source not in lookup or a.target not in lookup:
                    continue
                src = self._elements([lookup[a.source]], per, query.device)
                tgt = self._elements([lookup[a.target]], per, query.device)
                if a.what == "qk":
                    query[tgt], key[tgt] = query[src], key[src]
                else:
                    key[tgt], value[tgt] = key[src], value[src]
        return query, key, value

    # -- statistics --------------------------------------------------------------------------
    def _record(self, layer, query, key, value, attn_mask, out, ent, per) -> None:
        st = self.state
        keep = self._kept_rows()
        sel = self._elements(keep, per, out.device)
        n_q, n_k = query.shape[-2], key.shape[-2]
        v = _select(value, sel)  # a view for consecutive rows; both energy bounds derive from it
        mask = attn_mask if attn_mask is None or attn_mask.shape[0] == 1 else _select(attn_mask, sel)
        entropy = _select(ent, sel).float()
        rows = {
            "entropy": entropy,
            "energy": squared_norm(_select(out, sel)),
            "energy_identity": squared_norm(v) if n_q == n_k else torch.full_like(entropy, float("nan")),
            "energy_uniform": squared_norm(value_mean(v, mask)).expand(-1, -1, n_q),
        }
        stats = {name: _to_frames(x, len(keep), per, layer.layout, st.num_frames, st.text_len,
                                  "mean" if name == "entropy" else "sum")
                 for name, x in rows.items()}
        flat = {}
        for name, (video, text) in stats.items():
            flat[name] = video
            if text is not None:
                flat[name + "_text"] = text
        self.records.append(CallRecord(st.step, layer.name, [st.rows[i] for i in keep], n_k, flat))

    def _record_map(self, layer, query, key, attn_mask, scale, per) -> None:
        st, req = self.state, self.maps
        keep = self._kept_rows()
        heads = list(req.heads) if req.heads is not None else list(range(query.shape[1]))
        sel = self._elements(keep, per, query.device)
        q = _select(query, sel)[:, heads]
        k = _select(key, sel)[:, heads]
        mask = None if attn_mask is None else (attn_mask if attn_mask.shape[0] == 1 else _select(attn_mask, sel))
        if layer.name not in self._map_checked:
            steps = len(req.steps) if req.steps is not None else int(getattr(self.pipe.scheduler, "num_inference_steps", 1) or 1)
            kept = len(keep) if layer.layout == "frames_in_sequence" else q.shape[0]  # temporal: mean over positions
            result, buffer = map_bytes(q.shape[0], kept, len(heads), q.shape[-2], k.shape[-2], req.size, steps)
            self._map_committed += result
            self._map_buffer = max(self._map_buffer, buffer)
            self._map_checked.add(layer.name)
            total = self._map_committed + self._map_buffer
            if total > req.budget_bytes:
                raise MemoryError(
                    f"Materialising maps for the requested layers needs at least {total / 2**20:.1f} MiB "
                    f"(layer {layer.name}: {result / 2**20:.1f} MiB kept + {buffer / 2**20:.1f} MiB working), over the "
                    f"budget of {req.budget_bytes / 2**20:.1f} MiB. Raise MapRequest(budget=...), pool to a smaller "
                    f"size, or request fewer layers/steps/heads."
                )
        if layer.layout == "frames_in_sequence":
            a = torch.softmax(torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale, dim=-1)
            pooled = a.view(len(keep), per, *a.shape[1:]).mean(1)
        else:
            pooled = pooled_map(q, k, scale, mask, req.size)
            if layer.layout == "frames_in_batch":
                pooled = pooled.view(len(keep), per, *pooled.shape[1:]).transpose(1, 2)
        if self.hook_points:
            pooled = layer.module.hook_map(pooled)
        self.map_records.setdefault(layer.name, []).append((st.step, [st.rows[i] for i in keep], pooled.cpu()))


def _select(x: torch.Tensor, sel: slice | torch.Tensor) -> torch.Tensor:
    """``x`` restricted to the batch elements ``sel`` (:meth:`Interception._elements`): a view for a slice."""
    return x[sel] if isinstance(sel, slice) else x.index_select(0, sel)


def _scatter(x: torch.Tensor, sel: slice | torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` whose batch elements ``sel`` are ``new`` (``x`` itself is not modified)."""
    if isinstance(sel, slice):
        return x.slice_scatter(new, 0, sel.start, sel.stop)
    return x.index_copy(0, sel, new)


def _to_frames(x: torch.Tensor, n_rows: int, per: int, layout: str, num_frames: int, text_len: int, how: str):
    """Reduce per-query-row values ``[B', head, query]`` to ``[row, head, frame]`` (and text rows).

    ``how`` is ``"mean"`` (entropy) or ``"sum"`` (energies) over the query rows of each frame.
    """
    reduce = (lambda t, dim: t.mean(dim)) if how == "mean" else (lambda t, dim: t.sum(dim))
    heads, n_q = x.shape[1], x.shape[2]
    if layout == "frames_in_batch":
        return reduce(x.view(n_rows, per, heads, n_q), -1).transpose(1, 2), None
    if layout == "frames_in_sequence":
        return reduce(x.view(n_rows, per, heads, n_q), 1), None
    video = x[..., text_len:]
    per_frame = video.shape[-1] // num_frames
    video = reduce(video.reshape(n_rows, heads, num_frames, per_frame), -1)
    text = reduce(x[..., :text_len], -1) if text_len else torch.full((n_rows, heads), float("nan"), device=x.device)
    return video, text
