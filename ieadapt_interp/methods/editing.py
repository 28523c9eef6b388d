"""IE-Adapt video editing (paper Sec. 4.2, Alg. 1) and the baselines of its Table 3, under one API.

The source and the target(s) are denoised together, as one batch: sample 0 is the source, samples 1…K the
targets (one per :class:`Edit`). In each chosen layer a target attends with the source's tensors through
:class:`~ieadapt_interp.methods.attend_from.AttendFrom` — no attention map is ever stored:

=============  ========================================================  ======================================
``method``     target computes, in its layers                            layers (default; ``layers=`` overrides)
=============  ========================================================  ======================================
``ieadapt``    ``A_src · V_tgt`` (source ``Q, K``)                       ``L_edit``: self-attention layers whose
                                                                         mean entropy on the source is among
                                                                         the lowest ``ratio`` fraction
``all``        ``A_src · V_tgt``                                         every self-attention layer
``fixed``      ``A_src · V_tgt``                                         a given list (TokenFlow-style)
``masactrl``   ``softmax(Q_tgt K_srcᵀ) · V_src`` (source ``K, V``)       self-attention layers of the second
                                                                         half (a U-Net's decoder; MasaCtrl)
``value``      ``A_tgt · V_src`` (source ``V`` only)                     ``L_edit``
``p2p``        ``A_src · V_tgt`` on cross-attention, conditional branch  every cross-attention layer
               (Prompt-to-Prompt word swap; token counts must match)
``none``       nothing: a plain generation of the target prompt from     —
               the source's initial latent
=============  ========================================================  ======================================

Sources (:mod:`.sources`): a generated run (seed) — both rows start from its noise; when ``L_edit`` is needed
it comes from a traced run of the source, which also records the source's latent after every step; or a real
video — DDIM-inverted first (:func:`~.inversion.invert`, which also records the entropy), both rows start
from ``z_T``. Where the source's trajectory is known (inverted, or recorded) the source row's latent is
overwritten with it after every step, so the source's ``Q, K`` are those of the source exactly, and the
source runs **only its conditional row**: the batch holds ``1 + 2K`` rows with CFG (not ``2 + 2K``).

CFG branches (``uncond=``): ``"own"`` (default) — only the target's conditional row attends from the source,
its unconditional row is its own (Prompt-to-Prompt's rule; P2P always uses it), so an edit of a generated
source to its own prompt returns the source exactly; ``"source"`` — both of a target's rows (unconditional and
conditional) attend from the source's conditional row. On the embedded model's study (benchmarks/RESULTS.md;
60 generated and 60 inverted pairs) the two give the same success-and-preserved rate within one pair on each.

Options: ``steps=(start, stop)`` limits the replacement to those denoising steps; ``mask`` (``[H, W]`` or
``[frame, H, W]``, 1 = may change) blends the target's latent with the source's outside the mask after every
step (background preservation, Supp. 8.3).

>>> import ieadapt_interp as ia
>>> pipe = ia.tiny_pipeline()
>>> out = edit(pipe, 0, "a red circle", "a blue circle", num_frames=4, num_inference_steps=2,
...            height=16, width=16)
>>> out.video.shape, out.source_video.shape, list(out.layers.columns)
((4, 16, 16, 3), (4, 16, 16, 3), ['layer', 'kind', 'entropy', 'chosen'])
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr

from ..core.adapters import get_adapter, layer_records
from ..core.errors import IEAdaptTypeError, IEAdaptValueError
from ..core.interception import HookHandles, Interception, get_arg, hook_denoisers, parameter_positions, set_arg
from .attend_from import AttendFrom, AttendFromHandler, PerRowSource
from .guidance import _ROW_ARGS, _map_tensors, _take
from .inversion import (SELF_ATTENTION, Inversion, decode, denoise, encode_named, invert, prompt_extras,
                        self_attention_names, skipping)
from .sources import as_source, check_size
from .tracing import Result, _check_prompt, _noise, generate

METHODS: tuple[str, ...] = ("ieadapt", "all", "fixed", "masactrl", "value", "p2p", "none")
#: what each method copies from the source row (see the module table)
WHAT = {"ieadapt": "qk", "all": "qk", "fixed": "qk", "masactrl": "kv", "value": "v", "p2p": "qk"}
#: methods whose default layers come from the entropy selection L_edit
SELECTING = ("ieadapt", "value")
#: what a target's unconditional (CFG) row attends from: the source's conditional row, or nothing (its own);
#: the first is the default
UNCOND = ("own", "source")


def check_ratio(ratio: float) -> float:
    """``ratio`` as a float in (0, 1]; one clear error otherwise."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise IEAdaptTypeError(f"ratio must be a number in (0, 1]; got {ratio!r}.") from None
    if not 0.0 < value <= 1.0:
        raise IEAdaptValueError(f"ratio must lie in (0, 1] (the fraction of self-attention layers to edit, "
                                f"0.5 in the paper); got {ratio}.")
    return value


@dataclass(frozen=True)
class Edit:
    """One edit configuration: a target prompt and how the target attends to the source.

    ``method`` (see the module table), ``ratio`` (the ``L_edit`` fraction), ``steps`` (``(start, stop)``
    denoising steps of the replacement, stop exclusive; ``None`` = all), ``layers`` (layer names: required
    for ``fixed``, an override otherwise), ``uncond`` (what the target's unconditional CFG row attends from:
    ``"own"``, its own attention (default), or ``"source"``, the source's conditional row — see the module
    docstring; P2P is always ``"own"``). ``target`` may be left ``None`` where the caller supplies it.

    >>> Edit("a blue circle", method="masactrl").label
    'masactrl'
    >>> Edit("a blue circle", ratio=0.25, steps=(0, 10)).label
    'ieadapt r=0.25 steps=0-10'
    """

    target: str | None = None
    method: str = "ieadapt"
    ratio: float = 0.5
    steps: tuple[int, int] | None = None
    layers: tuple[str, ...] | None = None
    uncond: str = UNCOND[0]

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise IEAdaptValueError(f"unknown edit method {self.method!r}; choose one of {list(METHODS)}.")
        if self.uncond not in UNCOND:
            raise IEAdaptValueError(f"uncond must be one of {list(UNCOND)}; got {self.uncond!r}.")
        object.__setattr__(self, "ratio", check_ratio(self.ratio))
        if self.steps is not None:
            if len(tuple(self.steps)) != 2:
                raise IEAdaptValueError(f"steps must be (start, stop); got {self.steps!r}.")
            start, stop = (int(s) for s in self.steps)
            if not 0 <= start < stop:
                raise IEAdaptValueError(f"steps must be (start, stop) with 0 ≤ start < stop; got {self.steps}.")
            object.__setattr__(self, "steps", (start, stop))
        if self.layers is not None:
            if isinstance(self.layers, str):
                object.__setattr__(self, "layers", (self.layers,))
            object.__setattr__(self, "layers", tuple(str(n) for n in self.layers))
            if not self.layers:
                raise IEAdaptValueError("layers= is empty: name at least one attention layer.")
        if self.method == "fixed" and self.layers is None:
            raise IEAdaptValueError("method='fixed' needs layers=[...] (attention layer names, see "
                                    "ia.attention_layers(pipe)).")
        if self.target is not None:
            _check_prompt(self.target)

    @property
    def label(self) -> str:
        """A short name: ``"ieadapt r=0.5"`` → ``"ieadapt"`` at the defaults."""
        parts = [self.method]
        if self.method in SELECTING and self.layers is None and self.ratio != 0.5:
            parts.append(f"r={self.ratio:g}")
        if self.steps is not None:
            parts.append(f"steps={self.steps[0]}-{self.steps[1]}")
        if self.layers is not None and self.method != "fixed":
            parts.append(f"layers[{len(self.layers)}]")
        if self.uncond != UNCOND[0] and self.method not in ("p2p", "none"):
            parts.append(f"uncond={self.uncond}")
        return " ".join(parts)

    def to_dict(self) -> dict:
        """JSON-able form (a sweep row); ``{"edit": {...}}`` marks it among perturbations."""
        return {"edit": {"target": self.target, "method": self.method, "ratio": self.ratio,
                         "steps": list(self.steps) if self.steps else None,
                         "layers": list(self.layers) if self.layers else None,
                         **({"uncond": self.uncond} if self.uncond != UNCOND[0] else {})}}

    @classmethod
    def from_dict(cls, data: dict) -> "Edit":
        data = dict(data.get("edit", data))
        if data.get("steps") is not None:
            data["steps"] = tuple(data["steps"])
        if data.get("layers") is not None:
            data["layers"] = tuple(data["layers"])
        return cls(**data)


class Pending:
    """A value computed on its first :meth:`get` and kept (then the inputs are let go).

    >>> p = Pending(lambda: np.zeros(2))
    >>> p.get() is p.get()
    True
    """

    def __init__(self, compute, head=None) -> None:
        self._compute, self._value, self.head = compute, None, head

    def get(self):
        if self._compute is not None:
            self._value, self._compute = self._compute(), None
        return self._value


def _pending_field(name: str, doc: str) -> property:
    """An attribute that may hold a :class:`Pending`; read, it is computed once and stored in its place."""
    def get(self):
        value = self.__dict__.get(name)
        if isinstance(value, Pending):
            value = self.__dict__[name] = value.get()
        return value

    def put(self, value) -> None:
        self.__dict__[name] = value

    return property(get, put, doc=doc)


@dataclass
class EditResult(Result):
    """What :func:`edit` returns: ``.video`` (the edit), ``.source_video`` (the generated source, or for a real
    video its VAE reconstruction — the source row is pinned to the inversion), ``.layers`` (the selection:
    ``layer, kind, entropy, chosen``), ``.stats`` (the source's self-attention statistics, with ``stats=True``),
    ``.inversion`` (for real videos: the :class:`~.inversion.Inversion`, its PSNR / SSIM).

    ``.source_video`` of a source that was not already decoded (a real video; a generated source without a
    traced run) is VAE-decoded from the source row's final latent when it is first read (``.videos`` too:
    ``[edit, source]``), then kept and shared by the results of one :func:`edit_many`; an edit whose source video
    is never looked at does not pay that decode (one video's VAE decode, ~0.35 s for AnimateDiff 16 × 512²).
    """

    source_video: np.ndarray | None = None
    layers: pd.DataFrame | None = None
    edit: Edit | None = None
    source_prompt: str = ""
    inversion: Inversion | None = field(default=None, repr=False)

    @property
    def target_prompt(self) -> str:
        return self.edit.target if self.edit is not None else ""

    @property
    def video(self) -> np.ndarray:
        """The edited video (reading it does not decode a pending source video)."""
        videos = self.__dict__["videos"]
        return videos.head if isinstance(videos, Pending) else videos[0]

    def __repr__(self) -> str:
        """The dataclass repr, except that a video not decoded yet shows as such (printing does not decode it)."""
        shown = (f"{f.name}=" + ("<decoded when first read>" if isinstance(self.__dict__.get(f.name), Pending)
                                 else repr(getattr(self, f.name))) for f in fields(self) if f.repr)
        return f"{type(self).__name__}({', '.join(shown)})"


EditResult.source_video = _pending_field("source_video", "The source video (decoded on first read, see the class).")
EditResult.videos = _pending_field("videos", "``[edit, source]`` uint8 ``[2, frame, H, W, 3]`` (see the class).")


# -- layer selection --------------------------------------------------------------------------------------
def selection_table(pipe, stats: xr.Dataset | None, ratio: float) -> pd.DataFrame:
    """``L_edit`` with its reasons: one row per self-attention layer (forward order) — ``layer``, ``kind``,
    ``entropy`` (mean % of the maximum over steps, heads and frames of the source run; NaN without stats)
    and ``chosen`` (among the lowest ``ratio`` fraction, via ``ds.ieadapt.low_entropy_layers``)."""
    ratio = check_ratio(ratio)
    records = [r for r in layer_records(pipe) if r.kind in SELF_ATTENTION]  # one walk of the model's modules
    if stats is None:
        entropy, chosen = {}, set()
    else:
        mean = stats.ieadapt.layer_entropy()
        entropy = dict(zip(map(str, mean["layer"].values), map(float, mean.values)))
        chosen = set(stats.ieadapt.low_entropy_layers(ratio))
    return pd.DataFrame({"layer": [r.name for r in records], "kind": [r.kind for r in records],
                         "entropy": [entropy.get(r.name, np.nan) for r in records],
                         "chosen": [r.name in chosen for r in records]})


def method_layers(pipe, edit: Edit, table: pd.DataFrame) -> pd.DataFrame:
    """The layers ``edit`` acts on, as a table like :func:`selection_table` (``chosen`` marks them)."""
    if edit.method == "p2p":
        cross = [r for r in layer_records(pipe) if r.kind == "cross"]
        if not cross:
            raise IEAdaptValueError("method='p2p' replaces cross-attention maps; this model has none (its attention "
                                    "is joint text+video). Use 'ieadapt', 'all', 'masactrl' or 'value'.")
        names = set(edit.layers) if edit.layers else {r.name for r in cross}
        return pd.DataFrame({"layer": [r.name for r in cross], "kind": "cross", "entropy": np.nan,
                             "chosen": [r.name in names for r in cross]})
    out = table.copy()
    if edit.layers is not None:
        out["chosen"] = out.layer.isin(edit.layers)
    elif edit.method in SELECTING:
        pass  # chosen by entropy: the caller's selection table already says which
    elif edit.method == "all":
        out["chosen"] = True
    elif edit.method == "masactrl":
        out["chosen"] = np.arange(len(out)) >= len(out) // 2
    elif edit.method == "none":
        out["chosen"] = False
    return out


def _check_layers(pipe, edit: Edit) -> None:
    if edit.layers is None:
        return
    known = {r.name: r.kind for r in layer_records(pipe)}
    unknown = [n for n in edit.layers if n not in known]
    if unknown:
        raise IEAdaptValueError(f"unknown attention layer(s) {unknown}; see ia.attention_layers(pipe).name.")
    want = ("cross",) if edit.method == "p2p" else ("spatial", "temporal", "joint")
    wrong = [n for n in edit.layers if known[n] not in want]
    if wrong:
        raise IEAdaptValueError(f"method {edit.method!r} acts on {'/'.join(want)} attention; {wrong} are not.")


def check_alignment(pipe, source_prompt: str, target_prompt: str) -> None:
    """Prompt-to-Prompt's word swap maps token ``i`` to token ``i``: the prompts must have as many tokens."""
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None:
        return
    a, b = (len(tokenizer(p, truncation=True).input_ids) for p in (source_prompt, target_prompt))
    if a != b:
        raise IEAdaptValueError(
            f"method='p2p' (Prompt-to-Prompt) swaps cross-attention maps token by token, but the source prompt has "
            f"{a} tokens and the target {b}: {source_prompt!r} → {target_prompt!r}. Change words one for one "
            "(e.g. 'red' → 'blue'), or use method='ieadapt'.")


def _check_steps(edits: Sequence[Edit], steps: int) -> None:
    for e in edits:
        if e.steps is not None and e.steps[1] > steps:
            raise IEAdaptValueError(f"steps={e.steps} reaches past the {steps} denoising steps of this run.")


def _mask_latent(pipe, mask, num_frames: int, height: int, width: int, latent_shape: tuple[int, ...]) -> torch.Tensor:
    """Pixel mask → ``[1, *latent_shape]``-broadcastable float mask (1 = the edit may change it)."""
    m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
    if m.ndim == 2:
        m = m[None].expand(num_frames, -1, -1)
    if m.ndim != 3 or m.shape[0] != num_frames:
        raise IEAdaptValueError(f"mask must be [H, W] or [frame, H, W] with {num_frames} frames; got {tuple(m.shape)}.")
    if m.min() < 0 or m.max() > 1:
        raise IEAdaptValueError("mask values must lie in [0, 1] (1 = the edit may change the pixel).")
    adapter = get_adapter(pipe)
    f_axis = adapter.frame_axis
    c_axis = 1 if f_axis == 2 else 2
    size = (latent_shape[f_axis - 1], latent_shape[-2], latent_shape[-1])
    small = F.interpolate(m[None, None], size=size, mode="area")[0, 0]  # [f', h, w]
    small = small.unsqueeze(c_axis - 1)  # channel axis of one sample
    return small[None]


# -- the run ----------------------------------------------------------------------------------------------
def _prepare(pipe, source, source_prompt, edits, num_frames, height, width, steps):
    _check_prompt(source_prompt)
    if not get_adapter(pipe).prompt_outputs:  # SVD: image-to-video
        raise IEAdaptTypeError(f"{type(pipe).__name__} is not conditioned on a text prompt, so a text-guided edit "
                               "(source prompt → target prompt) is not defined for it.")
    if get_adapter(pipe).attention_per_row and any(e.uncond == "source" and e.method not in ("p2p", "none")
                                                   for e in edits):
        raise IEAdaptValueError(f"{type(pipe).__name__} runs its attention once per batch row, in row order, and a "
                                "target's unconditional row runs before the source's conditional row, so "
                                "uncond='source' cannot give it the source's tensors; use uncond='own' (the default).")
    if not edits:
        raise IEAdaptValueError("give at least one edit.")
    for e in edits:
        if e.target is None:
            raise IEAdaptValueError("each Edit needs its target prompt (Edit(target=...)).")
        _check_layers(pipe, e)
        if e.method == "p2p":
            method_layers(pipe, e, pd.DataFrame(columns=["layer", "kind", "entropy", "chosen"]))
            check_alignment(pipe, source_prompt, e.target)
    adapter = get_adapter(pipe)
    height = height or adapter.default_size(pipe)[0]
    width = width or adapter.default_size(pipe)[1]
    src, num_frames = as_source(source, num_frames=num_frames, height=height, width=width)
    check_size(pipe, height, width, num_frames)
    if int(steps) < 1:
        raise IEAdaptValueError(f"num_inference_steps must be ≥ 1; got {steps}.")
    _check_steps(edits, int(steps))
    return src, num_frames, height, width


class SourceRowHandler(AttendFromHandler):
    """:class:`~.attend_from.AttendFromHandler` whose target rows take the source's **conditional** row where the
    call holds one (the source may run only that row), else the source's row in the target's own branch."""

    def source_of(self, rows: list, i: int, a: AttendFrom) -> int | None:
        index = {label: j for j, label in enumerate(rows)}
        return index.get(("cond", a.source), index.get((rows[i][0], a.source)))


def _keep_rows(x, keep: torch.Tensor, batch: int):
    """``x`` with only the denoiser rows ``keep`` where it is batched (nested dict/list; others unchanged)."""
    def rows(t: torch.Tensor) -> torch.Tensor:
        taken = _take(t, keep, batch)
        return t if taken is None else taken

    return _map_tensors(x, rows)


class CondSourceRow:
    """For a ``with`` block: every CFG denoiser call ``[uncond × n, cond × n]`` runs without row 0 (the source's
    unconditional row); its output is filled with the source's conditional output, so the pipeline's CFG gives
    the source ``ε_cond`` (its latent is replayed anyway). Rows are labelled ``("uncond", 1…n-1)``,
    ``("cond", 0…n-1)``. A call of another size (a model that runs its branches in separate calls) is left whole.
    """

    def __init__(self, pipe, interception: Interception, n: int) -> None:
        self.adapter = get_adapter(pipe)
        self.models = list(self.adapter.denoisers(pipe).values())
        self.interception, self.n, self._hooks, self.dropped = interception, n, HookHandles(), False

    def __enter__(self) -> "CondSourceRow":
        self._hooks = hook_denoisers(self.models, self._before, self._after)
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.remove_all()

    def _before(self, module, args, kwargs):
        position, args, kwargs = parameter_positions(type(module)), list(args), dict(kwargs)
        batch, n = int(get_arg(position, args, kwargs, self.adapter.sample_arg).shape[0]), self.n
        self.dropped = batch == 2 * n
        if not self.dropped:
            return None
        keep = torch.arange(1, batch)
        names = (self.adapter.sample_arg, self.adapter.text_arg, self.adapter.timestep_arg, *_ROW_ARGS,
                 *getattr(self.adapter, "row_args", ()))
        for name in dict.fromkeys(names):
            value = get_arg(position, args, kwargs, name)
            if value is not None:
                set_arg(position, args, kwargs, name, _keep_rows(value, keep, batch))
        self.interception.label_next([("uncond", k) for k in range(1, n)] + [("cond", k) for k in range(n)])
        return tuple(args), kwargs

    def _after(self, module, args, output):
        if not self.dropped:
            return None
        self.dropped = False
        x = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        new = torch.cat([x[self.n - 1: self.n], x])  # the source's cond output stands in for its uncond one
        if isinstance(output, tuple):
            return (new, *output[1:])
        if isinstance(output, torch.Tensor):
            return new
        return type(output)(**{**output, "sample": new})


def run_batch(pipe, cond, uncond, latents, specs, *, replay=None, mask_latent=None, skip: int = 0,
              handlers=(), guidance_scale: float, progress: bool = False, **call) -> torch.Tensor:
    """The batched source + target denoising run → final latents ``[n, *latent_shape]`` (sample 0 = source).

    ``replay[i]``: the source's latent after step ``i`` (then the source runs only its conditional row, see
    :class:`CondSourceRow`); ``mask_latent``: 1 where the targets may differ from the source; ``handlers``:
    further attention handlers (run before the replacement's).
    """
    n = int(latents.shape[0])
    cfg = guidance_scale > 1.0

    def on_step(pipeline, i, t, kwargs):
        if replay is None and mask_latent is None:
            return {}
        z = kwargs["latents"].clone()
        if replay is not None:
            z[0] = replay[i][0].to(z.device, z.dtype)
        if mask_latent is not None:
            m = mask_latent.to(z.device, z.dtype)
            z[1:] = m * z[1:] + (1 - m) * z[:1]
        return {"latents": z}

    edit_handler = SourceRowHandler(specs, name="edit") if specs else None
    every = [*handlers, *([edit_handler] if edit_handler else [])]
    interception = Interception(pipe, every, embeddings={"cond": cond, **({"uncond": uncond} if cfg else {})})
    per_row = (PerRowSource(interception, edit_handler) if specs and get_adapter(pipe).attention_per_row
               else contextlib.nullcontext())  # Mochi: each target row runs over its source row's tokens
    forward = pipe.scheduler
    try:
        pipe.scheduler = skipping(forward, skip)  # a real video's edit starts where its inversion stopped
        with interception, per_row:
            if replay is not None and cfg:
                with CondSourceRow(pipe, interception, n):
                    out = denoise(pipe, cond, uncond, latents, guidance_scale=guidance_scale, output_type="latent",
                                  callback=on_step, progress=progress, **call)
            else:
                out = denoise(pipe, cond, uncond, latents, guidance_scale=guidance_scale, output_type="latent",
                              callback=on_step, progress=progress, **call)
    finally:
        pipe.scheduler = forward
    return out.frames


def _recorded_source(pipe, prompt, seed, **kw):
    """A generated source traced on its self-attention layers → ``(stats, video, replay)`` with ``replay[i]`` its
    latent after step ``i`` (the edit replays it instead of running the source with CFG)."""
    replay = []

    def keep(pipeline, i, t, kwargs):
        replay.append(kwargs["latents"].detach().clone())
        return {}

    run = generate(pipe, prompt, seed=seed, capture=self_attention_names(pipe), callback_on_step_end=keep,
                   callback_on_step_end_tensor_inputs=["latents"], **kw)
    return run.stats, run.video, replay


@torch.no_grad()
def edit_many(
    pipe,
    source,
    source_prompt: str,
    edits: Sequence[Edit],
    *,
    num_frames: int | None = None,
    num_inference_steps: int = 25,
    guidance_scale: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str = "",
    mask=None,
    inversion: Inversion | None = None,
    inversion_guidance: float = 1.0,
    stats: bool = False,
    progress: bool = False,
) -> list[EditResult]:
    """Several edits of one source in **one** batched run (sample 0 = the source, then one row per edit).

    Same arguments as :func:`edit`; ``edits`` are :class:`Edit` objects with their targets. ``inversion``
    reuses an earlier :func:`~.inversion.invert` of the same video (with ``capture=True``).
    Returns one :class:`EditResult` per edit, sharing the source video.
    """
    edits = list(edits)
    src, num_frames, height, width = _prepare(pipe, source, source_prompt, edits, num_frames, height, width,
                                              num_inference_steps)
    steps = int(num_inference_steps)
    adapter = get_adapter(pipe)
    latent_shape = adapter.latent_shape(pipe, num_frames, height, width)
    mask_latent = None if mask is None else _mask_latent(pipe, mask, num_frames, height, width, latent_shape)
    needs_stats = stats or any(e.method in SELECTING and e.layers is None for e in edits)
    size = dict(num_frames=num_frames, height=height, width=width)

    # 1. the source: its entropy (L_edit), its initial latent and, where known, its trajectory
    source_stats, replay, skip, source_video, start = None, None, 0, None, None
    if src.kind == "generated":
        if needs_stats:
            source_stats, source_video, replay = _recorded_source(
                pipe, source_prompt, src.seed, num_inference_steps=steps, guidance_scale=guidance_scale,
                negative_prompt=negative_prompt, **size)
    else:
        if inversion is None or (needs_stats and inversion.stats is None):
            capture = (True if stats else "entropy") if needs_stats else False  # L_edit reads the entropy only
            inversion = invert(pipe, src.video, source_prompt, num_inference_steps=steps,
                               guidance_scale=inversion_guidance, reconstruct=False, capture=capture,
                               progress=progress, **size)
        elif inversion.num_inference_steps != steps:
            raise IEAdaptValueError(f"the given inversion has {inversion.num_inference_steps} steps; this edit uses "
                                    f"{steps}.")
        source_stats, skip = inversion.stats, inversion.skip
        trajectory = inversion.latents
        replay = [trajectory[len(trajectory) - 2 - i] for i in range(len(trajectory) - 1)]
        start = trajectory[-1]
    table = selection_table(pipe, source_stats, 0.5)

    # 2. the attention specs, one per target row
    specs, tables = [], []
    for k, e in enumerate(edits, start=1):
        t = table.copy()
        if e.method in SELECTING and e.layers is None:
            t["chosen"] = t.layer.isin(source_stats.ieadapt.low_entropy_layers(e.ratio))
        else:
            t = method_layers(pipe, e, t)
        tables.append(t.reset_index(drop=True))
        chosen = frozenset(t.layer[t.chosen])
        if e.method != "none" and chosen:
            own = e.method == "p2p" or e.uncond == "own"
            specs.append(AttendFrom(chosen, source=0, target=k, steps=e.steps, what=WHAT[e.method],
                                    branches=("cond",) if own else None))

    # 3. one batched run
    prompts = [source_prompt, *[e.target for e in edits]]
    named = encode_named(pipe, prompts, guidance_scale > 1.0, negative_prompt)  # + masks, pooled embeddings
    cond, uncond_embeds = named["prompt_embeds"], named.get("negative_prompt_embeds")
    n = len(prompts)
    if start is None:
        start = _noise(pipe, src.seed, num_frames, height, width, cond.dtype)
    device = pipe._execution_device
    start = start.to(device, cond.dtype)
    latents = start.repeat(n, *([1] * (start.ndim - 1)))
    final = run_batch(pipe, cond, uncond_embeds, latents, specs, replay=replay, mask_latent=mask_latent, skip=skip,
                      guidance_scale=guidance_scale, num_inference_steps=steps, progress=progress, **size,
                      **prompt_extras(named))
    # decoded one sample at a time (the VAE's peak memory of one video); a recorded source is already decoded,
    # another one is decoded when first read (EditResult)
    shape = (num_frames, height, width)
    edited = [decode(pipe, final[k:k + 1], shape, device)[0] for k in range(1, n)]
    source = source_video
    if source is None:
        source_latent = final[:1].clone()
        source = Pending(lambda: decode(pipe, source_latent, shape, device)[0])

    def both(video):
        if isinstance(source, Pending):
            return Pending(lambda: np.stack([video, source.get()]), head=video)
        return np.stack([video, source])

    return [EditResult(videos=both(edited[k - 1]), stats=source_stats if stats else None, source_video=source,
                       layers=tables[k - 1], edit=e, source_prompt=source_prompt, inversion=inversion)
            for k, e in enumerate(edits, start=1)]


def edit(
    pipe,
    source,
    source_prompt: str,
    target_prompt: str,
    *,
    ratio: float = 0.5,
    method: str = "ieadapt",
    steps: tuple[int, int] | None = None,
    mask=None,
    layers: Sequence[str] | None = None,
    uncond: str = UNCOND[0],
    stats: bool = False,
    **generation,
) -> EditResult:
    """Edit ``source`` from ``source_prompt`` to ``target_prompt``, keeping its structure (IE-Adapt by default).

    Parameters
    ----------
    source
        A seed (the source prompt generated with it), a traced :class:`~ieadapt_interp.Result`, a uint8 video
        ``[frame, H, W, 3]`` or a video file / frame folder (DDIM-inverted first; see :mod:`.sources`).
    ratio
        ``r`` in (0, 1]: the fraction of self-attention layers (lowest mean entropy on the source) whose map the
        target takes from the source (``L_edit``; 0.5 in the paper).
    method
        ``"ieadapt"`` (default), ``"all"``, ``"fixed"`` (with ``layers=``), ``"masactrl"``, ``"value"``,
        ``"p2p"`` or ``"none"`` — see the module table.
    steps
        ``(start, stop)``: the denoising steps in which attention is shared (default: all).
    mask
        ``[H, W]`` or ``[frame, H, W]`` in [0, 1], 1 where the edit may change the video; elsewhere the target's
        latent follows the source's (background preservation).
    uncond
        What the target's unconditional (CFG) row attends from: ``"own"`` (its own attention; only the conditional
        row is edited; default) or ``"source"`` (the source's conditional row, as the target's conditional row;
        refused on Mochi, whose per-row attention runs the target's unconditional row before the source's).
    stats
        Attach the source's self-attention statistics (``.stats``; the entropy ``L_edit`` came from).
    generation
        ``num_frames``, ``num_inference_steps`` (25), ``guidance_scale`` (7.5), ``height``, ``width``, ``negative_prompt``, ``inversion_guidance`` (1.0),
        ``inversion`` (reuse an :class:`~.inversion.Inversion`), ``progress``.

    Returns an :class:`EditResult`. Bad input raises one clear error before any work; the pipeline is left as
    it was (no hook, same scheduler), also on errors.
    """
    _check_prompt(target_prompt)
    one = Edit(target_prompt, method=method, ratio=ratio, steps=steps,
               layers=tuple(layers) if layers is not None else None, uncond=uncond)
    return edit_many(pipe, source, source_prompt, [one], mask=mask, stats=stats, **generation)[0]


__all__ = ["METHODS", "UNCOND", "CondSourceRow", "Edit", "EditResult", "SourceRowHandler", "check_alignment",
           "check_ratio", "edit", "edit_many", "method_layers", "run_batch", "selection_table"]


def table_edits(pipe, target_prompt: str, ratios: Sequence[float] = (0.25, 0.5, 0.65, 0.75, 1.0)) -> list[Edit]:
    """The edits of the paper's Tables 5 and 3: IE-Adapt at each ratio below 1 (ratio 1 is ``"all"``), then
    ``all``, ``fixed`` (the decoder's self-attention layers, TokenFlow-style), ``masactrl``, ``value``, ``p2p``
    and ``none``.

    >>> import ieadapt_interp as ia
    >>> [e.label for e in table_edits(ia.load_pipeline("tiny:animatediff"), "a blue circle", (0.5, 1.0))][:3]
    ['ieadapt', 'all', 'fixed']
    """
    table = [r for r in layer_records(pipe) if r.kind in ("spatial", "temporal", "joint")]
    decoder = tuple(r.name for r in table[len(table) // 2:])
    return ([Edit(target_prompt, "ieadapt", r) for r in ratios if r < 1.0]
            + [Edit(target_prompt, "all"), Edit(target_prompt, "fixed", layers=decoder)]
            + [Edit(target_prompt, m) for m in ("masactrl", "value", "p2p", "none")])


def ratio_rows(results) -> list[str]:
    """Row labels of the Table 5 ratio sweep in an :func:`editing_table`: the IE-Adapt edits, then ``all`` (100 %)."""
    return [r.edit.label for r in results if r.edit.method == "ieadapt"] + ["all"]


def videos_of(results, labels: Sequence[str] = ("ieadapt", "masactrl", "p2p", "none")) -> dict[str, np.ndarray]:
    """``{label: edited video}`` of the results whose edit label is in ``labels`` (in the results' order)."""
    return {r.edit.label: r.video for r in results if r.edit.label in labels}
