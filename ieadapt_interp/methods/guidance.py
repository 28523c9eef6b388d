"""IE-Adapt quality guidance (paper Sec. 4.1, Eqs. 4–5): attention-perturbation guidance in one batched forward.

Per denoising step, with ``ε_∅`` (unconditional), ``ε_A = ε(z_t, c)`` and the perturbed conditional
estimates ``ε_I`` (``A_l ← I``), ``ε_U`` (``A_l ← U``) or ``ε_mix(λ)`` (``A_l ← λI + (1-λ)U``) in the
guidance layers ``l``::

    ε̃ = ε_∅ + w·(ε_A − ε_∅) + s·(ε_pos − ε_neg)           (with CFG, w = the pipeline's guidance_scale)
    ε̃ = ε_A + s·(ε_pos − ε_neg)                           (without CFG, guidance_scale ≤ 1)

The paper's pairs by name (:data:`PAIRS`): ``PAG = (A, I)`` (Ahn et al. 2024), ``(U, A)``, ``(U, I)``.

**How it runs.** The user's own pipeline object, scheduler and denoising loop run unchanged. A forward
pre-hook on the denoiser appends one copy of the conditional rows per term other than ``A`` (a term equal
to ``A`` reuses the conditional row), so ``(A, I)`` runs 3 rows per sample and ``(U, I)`` 4, in **one**
batch; the rows are labelled ``("uncond", i)``, ``("cond", i)``, ``("pos", i)``, ``("neg", i)`` and the
perturbation acts only on the ``pos`` / ``neg`` rows, at the attention call. A forward hook then drops the
extra rows and adds ``s·(ε_pos − ε_neg)`` to *every* remaining row of the sample (unconditional and
conditional alike). The pipeline's own CFG line ``ε_∅' + w·(ε_c' − ε_∅')`` then yields exactly the
formula above for any ``w`` — also CogVideoX's dynamic CFG, which changes ``w`` after the denoiser call.
At a step where the guidance is off (outside ``steps``, or scale 0) no row is added at all.

**Prefix sharing** (transformer denoisers whose blocks run in sequence: CogVideoX, Wan, LTX-Video, Mochi,
HunyuanVideo — the adapter's ``blocks``). The ``pos`` / ``neg`` rows are copies of the conditional row, so
their activations equal it up to the first block holding a perturbed layer. The blocks before it run only the
denoiser's own rows; at that block's input the conditional rows of every per-row block argument (hidden states,
text states, ``temb``, masks; the adapter's ``block_row_args``) are copied into the ``pos`` / ``neg`` rows, and
the rest of the forward (and the fold-back) runs as above. What runs outside the blocks (patch and time
embeddings, output head) still runs on every row — cheap. The saving grows with the depth of the first
perturbed layer: none when it is in the first block, almost all of the extra rows' cost when it is in the last.
UNets (AnimateDiff, SVD: skip connections) and Latte (reshapes by batch between blocks) keep the full rows;
``Guidance(share_prefix=False)`` turns sharing off everywhere (the result is the same up to float rounding).
Capture in the shared blocks sees only the ``uncond`` / ``cond`` rows: a ``pos`` / ``neg`` row there is the
conditional row and is not recorded.

**Models that run one forward per CFG branch** (Wan; the adapter's ``cfg_forwards``): the extra rows ride on
the conditional forward, and its ``s·(ε_pos − ε_neg)`` is added to that forward's output and to the
unconditional forward's of the same step. Every expert of a model is hooked (Wan 2.2's ``transformer_2``);
per-row forward arguments the adapter names (``row_args``: HunyuanVideo's pooled embeddings and distilled
guidance, SVD's ``added_time_ids``) are copied with the rows.

**Joint attention (CogVideoX; HunyuanVideo and Mochi, text after the video).** The perturbation replaces the
map of the *video-token* query rows only; the text-token rows keep their attention (``text_rows=True`` perturbs
them too).

>>> g = Guidance("U", "I", scale=2.0, layers="down_blocks.0.attentions.0.transformer_blocks.0.attn1")
>>> g.label, g.extra_branches
('(U,I) s=2', ('pos', 'neg'))
>>> Guidance.from_dict(g.to_dict()) == g
True
>>> Guidance.pair("PAG", scale=3.0).label
'(A,I) s=3'
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from ..core.adapters import attention_layers, get_adapter
from ..core.errors import IEAdaptKeyError, IEAdaptTypeError, IEAdaptValueError
from ..core.handlers import CallContext
from ..core.interception import HookHandles, Interception, get_arg, hook_denoisers, parameter_positions, set_arg
from ..core.layers import Layers, LayerSpec, as_layers
from .calibration import Registry, default_registry, fingerprint
from .perturbation import Perturbation, PerturbationHandler

#: The paper's (pos, neg) pairs (Table 2), by name.
PAIRS: dict[str, tuple[str, str]] = {"PAG": ("A", "I"), "UA": ("U", "A"), "UI": ("U", "I")}

_MIX = re.compile(r"mix\(\s*([0-9.eE+-]+)\s*\)")
_TERM_HELP = "'A' (unperturbed), 'I' (identity map), 'U' (uniform map) or 'mix(λ)' (λI + (1-λ)U, 0 ≤ λ ≤ 1)"


def parse_term(term: str) -> tuple[str, float]:
    """``"A" | "I" | "U" | "mix(λ)"`` → ``(replacement, λ)``; ``("none", 1.0)`` for ``A``.

    >>> parse_term("mix(0.25)"), parse_term("U")
    (('mix', 0.25), ('uniform', 1.0))
    """
    if not isinstance(term, str):
        raise IEAdaptTypeError(f"A guidance term must be a string, {_TERM_HELP}; got {term!r}.")
    t = term.strip()
    if t in ("A", "I", "U"):
        return {"A": ("none", 1.0), "I": ("identity", 1.0), "U": ("uniform", 1.0)}[t]
    match = _MIX.fullmatch(t)
    if match:
        lam = float(match.group(1))
        if not 0.0 <= lam <= 1.0:
            raise IEAdaptValueError(f"mix(λ) needs 0 ≤ λ ≤ 1 (λ=1 is I, λ=0 is U); got {term!r}.")
        return "mix", lam
    raise IEAdaptValueError(f"Unknown guidance branch {term!r}: use {_TERM_HELP}.")


def _canonical(term: str) -> str:
    kind, lam = parse_term(term)
    return f"mix({lam:g})" if kind == "mix" else term.strip()


def _check_scale(scale) -> float | tuple[float, ...]:
    if isinstance(scale, bool):
        raise IEAdaptTypeError(f"scale must be a number or a per-step sequence of numbers; got {scale!r}.")
    if isinstance(scale, (int, float)):
        values: tuple[float, ...] = (float(scale),)
    elif isinstance(scale, Sequence) and not isinstance(scale, str) and len(scale) > 0:
        try:
            values = tuple(float(v) for v in scale)
        except (TypeError, ValueError):
            raise IEAdaptTypeError(f"scale must be a number or a per-step sequence of numbers; got {scale!r}.") from None
    else:
        raise IEAdaptTypeError(f"scale must be a number or a non-empty per-step sequence of numbers; got {scale!r}.")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise IEAdaptValueError(f"The guidance scale must be finite; got {bad[0]} in scale={scale!r}.")
    return values[0] if isinstance(scale, (int, float)) else values


def linear_schedule(start: float, stop: float, steps: int) -> tuple[float, ...]:
    """A per-step scale going linearly from ``start`` (first step) to ``stop`` (last step).

    >>> linear_schedule(3.0, 1.0, 3)
    (3.0, 2.0, 1.0)
    """
    if int(steps) < 1:
        raise IEAdaptValueError(f"steps must be ≥ 1; got {steps}.")
    if int(steps) == 1:
        return (float(start),)
    return tuple(float(start + (stop - start) * i / (steps - 1)) for i in range(int(steps)))


@dataclass(frozen=True)
class Guidance:
    """Attention-perturbation guidance ``s·(ε_pos − ε_neg)`` added to CFG (see module docstring).

    Parameters
    ----------
    pos, neg
        ``"A"`` (unperturbed conditional), ``"I"``, ``"U"`` or ``"mix(λ)"``; they must differ.
    scale
        ``s``: a finite number, or one number per denoising step (a schedule, e.g. :func:`linear_schedule`).
    layers
        The perturbed layers: ``None`` = the model's registry ``l*`` (the highest-entropy self-attention
        layer; the embedded model ships its registry, other models need :func:`~ieadapt_interp.calibrate`),
        a :class:`~ieadapt_interp.methods.calibration.Registry` (its ``l*``; checked to come from the same
        model), or any layer spec (name, list of names, kind, :class:`~ieadapt_interp.Layers`). Only
        self-attention layers (spatial, temporal, joint).
    steps
        ``(start, stop)`` step range with guidance (stop exclusive); ``None`` = every step.
    text_rows
        Joint-attention models (CogVideoX): also perturb the text-token query rows (default: video only).
    registry
        Fingerprint of the model the registry came from (set when ``layers`` is a Registry).
    share_prefix
        Run the blocks before the first perturbed one once for the conditional row and its ``pos`` / ``neg``
        copies (prefix sharing, see the module docstring; only where the adapter allows it). ``False``: the
        extra rows run through the whole denoiser. It changes the cost, not the result (not compared by ``==``).
    """

    pos: str = "U"
    neg: str = "I"
    scale: float | tuple[float, ...] = 1.0
    layers: Layers | None = None
    steps: tuple[int, int] | None = None
    text_rows: bool = False
    registry: str | None = None
    share_prefix: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pos", _canonical(self.pos))
        object.__setattr__(self, "neg", _canonical(self.neg))
        if self.pos == self.neg:
            raise IEAdaptValueError(f"pos and neg are both {self.pos!r}: ε_pos − ε_neg would be 0. Choose two "
                                    f"different branches, e.g. the paper's pairs {PAIRS}.")
        object.__setattr__(self, "scale", _check_scale(self.scale))
        if isinstance(self.layers, Registry):
            object.__setattr__(self, "registry", self.layers.fingerprint)
            object.__setattr__(self, "layers", Layers(names=(self.layers.l_star,)))
        elif self.layers is not None:
            layers = as_layers(self.layers)
            if layers.where is not None:
                raise IEAdaptValueError("Guidance layers cannot be a predicate (it could not be stored or swept); "
                                        "name the layers, a kind, or a Layers(...) selection.")
            object.__setattr__(self, "layers", layers)
        if self.steps is not None:
            start, stop = (int(v) for v in self.steps)
            if not 0 <= start < stop:
                raise IEAdaptValueError(f"steps must be (start, stop) with 0 ≤ start < stop; got {self.steps}.")
            object.__setattr__(self, "steps", (start, stop))
        object.__setattr__(self, "text_rows", bool(self.text_rows))
        object.__setattr__(self, "share_prefix", bool(self.share_prefix))

    # -- naming ---------------------------------------------------------------------------------------
    @classmethod
    def pair(cls, name: str, **kwargs) -> "Guidance":
        """One of the paper's pairs by name: ``"PAG"`` = (A, I), ``"UA"`` = (U, A), ``"UI"`` = (U, I)."""
        if name not in PAIRS:
            raise IEAdaptKeyError(f"Unknown guidance pair {name!r}; choose from {sorted(PAIRS)} (= {PAIRS}).")
        pos, neg = PAIRS[name]
        return cls(pos, neg, **kwargs)

    @property
    def label(self) -> str:
        """Short name, e.g. ``(U,I) s=2`` (``s=sched`` for a schedule)."""
        s = f"{self.scale:g}" if isinstance(self.scale, float) else "sched"
        return f"({self.pos},{self.neg}) s={s}"

    @property
    def extra_branches(self) -> tuple[str, ...]:
        """The branches that need their own rows: ``pos`` / ``neg`` unless that term is ``A``."""
        return tuple(b for b, t in (("pos", self.pos), ("neg", self.neg)) if t != "A")

    def scale_at(self, step: int) -> float:
        """``s`` at denoising ``step`` (0 outside ``steps``)."""
        if self.steps is not None and not self.steps[0] <= step < self.steps[1]:
            return 0.0
        if isinstance(self.scale, float):
            return self.scale
        if step >= len(self.scale):
            raise IEAdaptValueError(f"The scale schedule has {len(self.scale)} values but step {step} ran; give "
                                    "one value per denoising step.")
        return self.scale[step]

    # -- serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (a sweep row); ``{"guidance": {...}}`` marks it among perturbations."""
        layers = None
        if self.layers is not None:
            layers = {k: list(v) for k, v in asdict(self.layers).items() if k != "where" and v is not None}
        return {"guidance": {"pos": self.pos, "neg": self.neg,
                             "scale": self.scale if isinstance(self.scale, float) else list(self.scale),
                             "layers": layers, "steps": list(self.steps) if self.steps else None,
                             "text_rows": self.text_rows, "registry": self.registry,
                             **({} if self.share_prefix else {"share_prefix": False})}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Guidance":
        d = dict(data.get("guidance", data))
        layers = Layers(**{k: tuple(v) for k, v in d["layers"].items()}) if d.get("layers") else None
        scale = d.get("scale", 1.0)
        return cls(d["pos"], d["neg"], scale if isinstance(scale, (int, float)) else tuple(scale), layers,
                   tuple(d["steps"]) if d.get("steps") else None, bool(d.get("text_rows", False)), d.get("registry"),
                   bool(d.get("share_prefix", True)))

    # -- resolution against a pipeline ---------------------------------------------------------------
    def resolve(self, pipe) -> list[str]:
        """The guidance layers of ``pipe`` (names), checked; raises before any work on bad input."""
        table = attention_layers(pipe)
        if self.registry is not None and self.registry != fingerprint(pipe):
            raise IEAdaptValueError(
                f"This guidance's layers come from a registry calibrated on another model (fingerprint "
                f"{self.registry}, this pipeline's is {fingerprint(pipe)}). Run ia.calibrate(pipe, prompts) on "
                "this pipeline, or give layers= by name.")
        layers = self.layers
        if layers is None:
            layers = Layers(names=(default_registry(pipe).l_star,))
        names = layers.resolve(table)
        kinds = dict(zip(table["name"], table["kind"]))
        cross = [n for n in names if kinds[n] == "cross"]
        if cross:
            raise IEAdaptValueError(f"Guidance perturbs self-attention maps only; {cross[0]} is cross-attention. "
                                    "Choose spatial, temporal or joint layers (e.g. the registry's l*).")
        return names

    def handlers(self, names: Sequence[str]) -> list["BranchPerturbationHandler"]:
        """One handler per perturbed branch (``pos`` / ``neg`` rows), on ``names``."""
        out = []
        for branch, term in (("pos", self.pos), ("neg", self.neg)):
            kind, lam = parse_term(term)
            if kind != "none":
                out.append(BranchPerturbationHandler(Perturbation(Layers(names=tuple(names)), kind, lam), branch,
                                                     self.text_rows, name=f"guidance.{branch}"))
        return out


class BranchPerturbationHandler(PerturbationHandler):
    """Perturbs the rows of one guidance branch (``pos`` or ``neg``) in closed form.

    On joint layers (text + video tokens in one sequence) only the video-token query rows are replaced
    unless ``text_rows``.
    """

    def __init__(self, perturbation: Perturbation, branch: str, text_rows: bool = False,
                 name: str = "guidance") -> None:
        super().__init__(perturbation, rows=lambda b, s: b == branch, name=name)
        self.branch, self.text_rows = branch, text_rows

    def after(self, ctx: CallContext) -> None:
        original = ctx.out
        super().after(ctx)
        if ctx.text_len and not self.text_rows and ctx.out is not original:  # ctx.out is a new tensor
            text = slice(-ctx.text_len, None) if ctx.layout.name == "joint_video_text" else slice(0, ctx.text_len)
            ctx.out[..., text, :] = original[..., text, :]


# -- the batched forward ------------------------------------------------------------------------------
_ROW_ARGS = ("timestep_cond", "added_cond_kwargs", "ofs", "encoder_attention_mask",
             "down_block_additional_residuals", "mid_block_additional_residual")


def _take(x, index: torch.Tensor, batch: int):
    """Rows ``index`` of every tensor in ``x`` whose first axis is a multiple of ``batch`` (nested dict/list)."""
    if isinstance(x, torch.Tensor):
        if x.ndim == 0 or x.shape[0] % batch or x.shape[0] == 0:
            return None
        per = x.shape[0] // batch
        idx = (index.unsqueeze(1) * per + torch.arange(per, device=index.device).unsqueeze(0)).flatten()
        return x.index_select(0, idx.to(x.device))
    if isinstance(x, Mapping):
        return {k: _take(v, index, batch) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_take(v, index, batch) for v in x)
    return None


def _map_tensors(x, fn):
    """``x`` with ``fn`` applied to every tensor in it (nested dict/list/tuple; other values kept)."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, Mapping):
        return {k: _map_tensors(v, fn) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_map_tensors(v, fn) for v in x)
    return x


def shared_prefix(pipe, layers: Sequence[str]) -> dict[str, int]:
    """``{denoiser attribute: k}``: the guidance rows can share the first ``k ≥ 1`` blocks of that denoiser.

    ``k`` is the index of the first block (the adapter's :meth:`~ieadapt_interp.core.adapters.Adapter.block_list`)
    holding one of the perturbed ``layers``. A denoiser is left out when its blocks do not run in sequence
    (UNets), when ``k = 0`` (nothing to share) or when one of its perturbed layers lies outside the blocks.

    >>> import ieadapt_interp as ia
    >>> pipe = ia.tiny_pipeline("cogvideox")
    >>> shared_prefix(pipe, ["transformer_blocks.1.attn1"]), shared_prefix(pipe, ["transformer_blocks.0.attn1"])
    ({'transformer': 1}, {})
    >>> shared_prefix(ia.tiny_pipeline(), ["up_blocks.1.attentions.0.transformer_blocks.0.attn1"])  # a UNet
    {}
    """
    adapter = get_adapter(pipe)
    denoisers = adapter.denoisers(pipe)
    out = {}
    for attr, model in denoisers.items():
        prefix = f"{attr}." if len(denoisers) > 1 else ""
        paths = [name[len(prefix):] for name in layers if name.startswith(prefix)]
        blocks = [path for path, _ in adapter.block_list(model)]
        holding = [next((i for i, b in enumerate(blocks) if p.startswith(b + ".")), None) for p in paths]
        if paths and None not in holding and min(holding) > 0:
            out[attr] = min(holding)
    return out


def _extend(x, extra):
    """``x`` with the rows ``extra`` appended (same nesting as :func:`_take`)."""
    if isinstance(x, torch.Tensor):
        return x if extra is None else torch.cat([x, extra.to(x.dtype)], 0)
    if isinstance(x, Mapping):
        return {k: _extend(v, extra[k]) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_extend(v, e) for v, e in zip(x, extra))
    return x


def hook_shared_blocks(adapter, model: torch.nn.Module, k: int, interception: Interception,
                       sharing: Callable[[], tuple | None]) -> HookHandles:
    """Prefix sharing on ``model``: forward pre-hooks on its blocks ``0 … k`` (a :class:`HookHandles`, to remove).

    ``sharing()`` gives, for the denoiser call now running, ``(batch, total, index, labels)``: the rows that
    differ (``batch``, first), all rows (``total``: the ``pos`` / ``neg`` copies last, ``index`` = the
    conditional rows they copy) and the ``total`` row labels; ``None``: no sharing in this call. Blocks
    ``j < k`` run the first ``batch`` rows of each per-row argument (``adapter.block_row_args``); at block
    ``k`` the rows ``index`` are appended. Used by :class:`GuidedDenoiser` and the diffusers guider.
    """
    hooks = HookHandles()
    with hooks.registering():
        for j, (_, block) in enumerate(adapter.block_list(model)[:k + 1]):
            hook = partial(_share_rows, adapter, interception, sharing, j, k, parameter_positions(type(block)))
            hooks.add(block.register_forward_pre_hook(hook, with_kwargs=True))
    return hooks


def _share_rows(adapter, interception: Interception, sharing: Callable[[], tuple | None], j: int, k: int,
                position: dict, module, args, kwargs):
    """Block ``j``'s pre-hook (:func:`hook_shared_blocks`): blocks ``j < k``: only the first ``batch`` rows of
    each per-row argument; block ``k``: the carried arguments (``batch`` rows) get their ``pos`` / ``neg`` rows
    as copies of the conditional ones."""
    state = sharing()
    if state is None:
        return None
    batch, total, index, labels = state

    def rows(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0 or x.shape[0] not in (batch, total):
            raise RuntimeError(f"{adapter.name}: a per-row block argument has {x.shape[0] if x.ndim else 0}"
                               f" rows, expected {batch} or {total}; the adapter's block_row_args do not fit "
                               "this model. Use Guidance(share_prefix=False).")
        if j < k:
            return x[:batch] if x.shape[0] == total else x
        return torch.cat([x, x.index_select(0, index.to(x.device))]) if x.shape[0] == batch else x

    args, kwargs = list(args), dict(kwargs)
    for name in adapter.block_row_args:
        value = get_arg(position, args, kwargs, name)
        if value is not None:
            set_arg(position, args, kwargs, name, _map_tensors(value, rows))
    if j == 0 or j == k:
        interception.relabel(labels[:batch] if j < k else labels)
    return tuple(args), kwargs


class GuidedDenoiser:
    """Installs the guidance on the denoiser of ``pipe`` for a ``with`` block (see module docstring).

    ``interception`` must be active (entered) and hold :meth:`Guidance.handlers`; ``cfg`` says whether the
    pipeline runs classifier-free guidance (``None``: read ``pipe.do_classifier_free_guidance`` at the first
    denoiser call of the run); ``layers`` are the perturbed layer names (``None``: ``guidance.resolve(pipe)``).
    :attr:`batches` lists ``(step, rows at the denoiser input)`` per denoiser call; :attr:`shared_blocks` is
    ``{denoiser attribute: k}``, the leading blocks that run without the ``pos`` / ``neg`` rows (prefix
    sharing; empty where nothing is shared).
    """

    def __init__(self, pipe, guidance: Guidance, interception: Interception, cfg: bool | None = None,
                 layers: Sequence[str] | None = None) -> None:
        self.pipe, self.guidance, self.interception = pipe, guidance, interception
        self.adapter = get_adapter(pipe)
        experts = self.adapter.denoisers(pipe)
        self.denoisers = list(experts.values())  # Wan 2.2: both experts
        self.denoiser = self.denoisers[0]
        self.cfg_given = cfg
        self.position = parameter_positions(type(self.denoiser))
        self.shared_blocks: dict[str, int] = {}
        if guidance.share_prefix and self.adapter.blocks:
            self.shared_blocks = shared_prefix(pipe, guidance.resolve(pipe) if layers is None else layers)
        self._shared_ids = {id(experts[attr]) for attr in self.shared_blocks}
        self._hooks = HookHandles()

    def __enter__(self) -> "GuidedDenoiser":
        self.step, self.last_t, self.cfg, self.pending = -1, None, self.cfg_given, None
        self.forward_in_step, self.delta, self.sharing = 0, None, None
        self.batches: list[tuple[int, int]] = []
        self._hooks = hook_denoisers(self.denoisers, self._before, self._after)
        with self._hooks.registering():
            experts = self.adapter.denoisers(self.pipe)
            for attr, k in self.shared_blocks.items():
                self._hooks.extend(hook_shared_blocks(self.adapter, experts[attr], k, self.interception,
                                                      lambda: self.sharing))
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.remove_all()
        self.sharing = None

    # argument access by name, keeping the call's positional / keyword style
    def _get(self, args, kwargs, name):
        return get_arg(self.position, args, kwargs, name)

    def _set(self, args, kwargs, name, value):
        set_arg(self.position, args, kwargs, name, value)

    def _before(self, module, args, kwargs):
        sample = self._get(args, kwargs, self.adapter.sample_arg)
        timestep = self._get(args, kwargs, self.adapter.timestep_arg)
        t = float(torch.as_tensor(timestep).flatten()[0]) if timestep is not None else float(self.step + 1)
        if self.last_t is None or t != self.last_t:  # the interception's step rule
            self.step, self.last_t, self.forward_in_step, self.delta = self.step + 1, t, 0, None
        else:
            self.forward_in_step += 1
        if self.cfg is None:
            self.cfg = bool(getattr(self.pipe, "do_classifier_free_guidance", False))
        batch = int(sample.shape[0])
        s = self.guidance.scale_at(self.step)
        branches = self.guidance.extra_branches if s != 0.0 else ()
        order = self.adapter.cfg_forwards if self.cfg else ()
        if order:  # one forward per CFG branch (Wan: cond, then uncond): rows are added to the cond forward,
            branch = order[min(self.forward_in_step, len(order) - 1)]  # its s·(ε_pos − ε_neg) to every forward
            n, labels = batch, [(branch, i) for i in range(batch)]
            if branch != "cond":
                self.pending = (batch, n, s, (), branch)
                self.batches.append((self.step, batch))
                self.interception.label_next(labels)
                return None
        else:
            if self.cfg and batch % 2:
                raise RuntimeError(f"Guidance expected a CFG batch [uncond, cond] of even size; got {batch} rows.")
            n = batch // 2 if self.cfg else batch
            labels = ([("uncond", i) for i in range(n)] if self.cfg else []) + [("cond", i) for i in range(n)]
        self.pending = (batch, n, s, branches, "cond" if order else None)
        self.batches.append((self.step, batch + n * len(branches)))
        self.sharing = None
        if not branches:
            self.interception.label_next(labels)
            return None
        cond = torch.arange(batch - n, batch, device=sample.device)
        index = cond.repeat(len(branches))
        labels = labels + [(b, i) for b in branches for i in range(n)]
        if id(module) in self._shared_ids:  # the blocks before the first perturbed one see only `batch` rows
            self.sharing = (batch, len(labels), index, labels)
        args, kwargs = list(args), dict(kwargs)
        for name in (self.adapter.sample_arg, self.adapter.text_arg, self.adapter.timestep_arg, *_ROW_ARGS,
                     *self.adapter.row_args):
            value = self._get(args, kwargs, name)
            if value is None:
                continue
            extra = _take(value, index, batch)
            if extra is not None:
                self._set(args, kwargs, name, _extend(value, extra))
        self.interception.label_next(labels)
        return tuple(args), kwargs

    def _after(self, module, args, output):
        batch, n, s, branches, branch = self.pending
        self.pending = None
        self.sharing = None
        x = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        if branch not in (None, "cond"):  # a separate unconditional forward: this step's s·(ε_pos − ε_neg)
            return None if self.delta is None else self._replaced(output, x + self.delta)
        if not branches:
            return None
        rows = {"cond": x[batch - n: batch]}
        for k, b in enumerate(branches):
            rows[b] = x[batch + k * n: batch + (k + 1) * n]
        delta = s * (rows["pos" if "pos" in rows else "cond"] - rows["neg" if "neg" in rows else "cond"])
        if branch == "cond":
            self.delta = delta
        return self._replaced(output, x[:batch] + delta.repeat(batch // n, *([1] * (delta.ndim - 1))))

    @staticmethod
    def _replaced(output, new):
        """The denoiser's output with its sample replaced by ``new`` (tuple, tensor or output class)."""
        if isinstance(output, tuple):
            return (new, *output[1:])
        if isinstance(output, torch.Tensor):
            return new
        return type(output)(**{**output, "sample": new})


@contextmanager
def guiding(pipe, guidance: Guidance, *, cfg: bool | None = None,
            interception: Interception | None = None) -> Iterator[GuidedDenoiser]:
    """Apply ``guidance`` to every call of ``pipe`` inside the block (any batch of prompts).

    Without ``interception`` a new one holding only the guidance handlers is used. Everything is removed
    on exit, also on errors.

    >>> import ieadapt_interp as ia
    >>> pipe = ia.tiny_pipeline()
    >>> g = Guidance("A", "I", scale=1.0, layers="down_blocks.0.attentions.0.transformer_blocks.0.attn1")
    >>> with guiding(pipe, g) as run:
    ...     _ = pipe(["a red circle", "a blue square"], num_frames=2, height=16, width=16,
    ...              num_inference_steps=1, output_type="np")
    >>> run.batches                      # 2 prompts × (uncond, cond, neg)
    [(0, 6)]
    """
    if not isinstance(guidance, Guidance):
        raise IEAdaptTypeError(f"guidance= takes an ieadapt_interp.Guidance; got {type(guidance).__name__}.")
    names = guidance.resolve(pipe)
    own = interception is None
    if own:
        interception = Interception(pipe, guidance.handlers(names))
        interception.__enter__()
    try:
        with GuidedDenoiser(pipe, guidance, interception, cfg=cfg, layers=names) as run:
            yield run
    finally:
        if own:
            interception.__exit__(None, None, None)


def guidance_grid(registry: Registry, pairs: Sequence[str] = ("PAG", "UA", "UI"),
                  scales: Sequence[float] = (1.0, 3.0), layers: Sequence[str] = ("l*",), seed: int = 0,
                  kind: str | None = None) -> dict[str, Guidance]:
    """``{"UI|l*|s=2": Guidance, …}``: every pair × scale × layer choice, for a sweep.

    Layer choices: ``"l*"`` (the registry's highest-entropy layer), ``"lowest"`` (its lowest-entropy layer),
    ``"random"`` (a seeded draw among the others — a control). ``kind`` restricts the choices to one kind.

    >>> from ieadapt_interp.methods.calibration import Registry, TOY_REGISTRY
    >>> sorted(guidance_grid(Registry.load(TOY_REGISTRY), ["UI"], [2.0], ["l*", "random"]))
    ['UI|l*|s=2', 'UI|random|s=2']
    """
    chosen = {"l*": registry.best(kind), "lowest": registry.lowest(1, kind)[0]}
    chosen["random"] = registry.random_layer(seed, kind, exclude=[chosen["l*"], chosen["lowest"]])
    unknown = [c for c in layers if c not in chosen]
    if unknown:
        raise IEAdaptValueError(f"Unknown layer choice(s) {unknown}; choose from {sorted(chosen)}.")
    out = {}
    for choice in layers:
        for name in pairs:
            for s in scales:
                out[f"{name}|{choice}|s={float(s):g}"] = Guidance.pair(
                    name, scale=float(s), layers=Layers(names=(chosen[choice],)), registry=registry.fingerprint)
    return out


def guided_videos(pipe, prompt: str, guidances: Mapping[str, Guidance], **generation):
    """``(videos uint8 [1 + len(guidances), frame, H, W, 3], labels)``: CFG only, then each guidance, same noise.

    >>> import ieadapt_interp as ia
    >>> videos, labels = guided_videos(ia.tiny_pipeline(), "a red circle",
    ...     {"(U,I)": Guidance("U", "I", scale=2.0, layers="spatial")}, num_frames=2, height=16, width=16,
    ...     num_inference_steps=1)
    >>> videos.shape, labels
    ((2, 2, 16, 16, 3), ['CFG only', '(U,I)'])
    """
    import numpy as np

    from .tracing import generate

    videos = [generate(pipe, prompt, **generation).video]
    videos += [generate(pipe, prompt, guidance=g, **generation).video for g in guidances.values()]
    return np.stack(videos), ["CFG only", *guidances]


def guide(pipe, prompt: str, *, pos: str, neg: str, scale: float | Sequence[float],
          layers: LayerSpec | Registry | None = None, steps: tuple[int, int] | None = None,
          text_rows: bool = False, share_prefix: bool = True, **generation):
    """:func:`~ieadapt_interp.generate` with ``Guidance(pos, neg, scale, layers, steps, text_rows, share_prefix=…)``.

    >>> import ieadapt_interp as ia
    >>> out = guide(ia.tiny_pipeline(), "a red circle", pos="U", neg="I", scale=2.0, layers="spatial",
    ...             num_frames=2, height=16, width=16, num_inference_steps=1)
    >>> out.video.shape
    (2, 16, 16, 3)
    """
    from .tracing import generate

    guidance = Guidance(pos, neg, scale if isinstance(scale, (int, float)) else tuple(scale), layers, steps, text_rows,
                        share_prefix=share_prefix)
    return generate(pipe, prompt, guidance=guidance, **generation)


__all__ = ["BranchPerturbationHandler", "GuidedDenoiser", "Guidance", "PAIRS", "guidance_grid", "guide", "guided_videos",
           "guiding", "linear_schedule", "parse_term", "shared_prefix"]
