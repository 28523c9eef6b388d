"""Naive fp64 reference computations for the tests (materialised softmax maps, explicit loops).

Independent of the library: its own hooks and torch-function mode record every attention call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class RecordSDPA(TorchFunctionMode):
    """Records (layer, step, q, k, v, out) of every SDPA call inside the named attention modules."""

    def __init__(self, pipe_denoiser, modules: dict[str, torch.nn.Module], timestep_arg: str = "timestep"):
        super().__init__()
        self.calls: list[dict] = []
        self.layer = None
        self.step = -1
        self.last_t = None
        self.timestep_arg = timestep_arg
        denoisers = pipe_denoiser if isinstance(pipe_denoiser, (list, tuple)) else [pipe_denoiser]
        self.handles = [d.register_forward_pre_hook(self._denoiser, with_kwargs=True) for d in denoisers]
        for name, module in modules.items():
            self.handles.append(module.register_forward_pre_hook(lambda m, a, k, n=name: self._enter(n), with_kwargs=True))
            self.handles.append(module.register_forward_hook(lambda m, a, o: self._enter(None)))

    def _denoiser(self, module, args, kwargs):
        t = kwargs.get(self.timestep_arg, args[1] if len(args) > 1 else None)
        t = float(torch.as_tensor(t).flatten()[0])
        if t != self.last_t:
            self.step += 1
            self.last_t = t

    def _enter(self, name):
        self.layer = name

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.scaled_dot_product_attention and self.layer is not None:
            q, k, v = (*args[:3], *(kwargs[n] for n in ("query", "key", "value")[len(args[:3]):]))
            self.calls.append({"layer": self.layer, "step": self.step, "q": q.detach().clone(),
                               "k": k.detach().clone(), "v": v.detach().clone(), "out": out.detach().clone(),
                               "scale": kwargs.get("scale"), "mask": _mask_arg(args, kwargs)})
        return out

    def close(self):
        for h in self.handles:
            h.remove()


def _mask_arg(args, kwargs):
    mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
    return None if mask is None else mask.detach().clone()


def _bias(mask, shape) -> torch.Tensor:
    """An SDPA mask (bool: allowed, float: added) as an fp64 additive bias broadcast to ``shape``."""
    if mask is None:
        return torch.zeros(shape, dtype=torch.float64)
    if mask.dtype == torch.bool:
        return torch.zeros(shape, dtype=torch.float64).masked_fill(~mask.expand(shape), float("-inf"))
    return mask.double().expand(shape)


def softmax_map(q, k, scale=None, mask=None) -> torch.Tensor:
    """Materialised ``A = softmax(q kᵀ · scale + mask)`` in fp64, ``[B, head, query, key]``."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = q.double() @ k.double().transpose(-1, -2) * scale
    return torch.softmax(s + _bias(mask, s.shape), dim=-1)


def uniform_map(q, k, mask=None) -> torch.Tensor:
    """``U``: every row uniform over the keys the mask allows, fp64 ``[B, head, query, key]``."""
    shape = (*q.shape[:-1], k.shape[-2])
    return torch.softmax(_bias(mask, shape), dim=-1)


def row_stats(q, k, v, scale=None, mask=None) -> dict[str, torch.Tensor]:
    """Per-row entropy and energies from the materialised map, fp64, each ``[B, head, query]``."""
    a = softmax_map(q, k, scale, mask)
    v = v.double()
    entropy = -(a * torch.log(a.clamp_min(1e-300))).sum(-1)
    n = a.shape[-1]
    u = uniform_map(q, k, mask)
    rows = {"entropy": entropy, "energy": ((a @ v) ** 2).sum(-1), "energy_uniform": ((u @ v) ** 2).sum(-1)}
    if a.shape[-1] == a.shape[-2]:
        eye = torch.eye(n, dtype=a.dtype).expand_as(a)
        rows["energy_identity"] = ((eye @ v) ** 2).sum(-1)
    return rows


def per_frame(rows: torch.Tensor, layout: str, n_rows: int, frames: int, text_len: int = 0, how: str = "sum"):
    """Reduce ``[B', head, query]`` to ``[row, head, frame]`` with explicit loops."""
    bp, heads, n_q = rows.shape
    per = bp // n_rows
    out = torch.zeros(n_rows, heads, frames, dtype=torch.float64)
    agg = (lambda x: x.mean()) if how == "mean" else (lambda x: x.sum())
    for r in range(n_rows):
        for h in range(heads):
            for f in range(frames):
                if layout == "frames_in_batch":
                    out[r, h, f] = agg(rows[r * per + f, h, :])
                elif layout == "frames_in_sequence":
                    out[r, h, f] = agg(rows[r * per:(r + 1) * per, h, f])
                else:  # one element per row: [text, video] (joint), [video] (video), [video, text]
                    p = (n_q - text_len) // frames
                    start = text_len if layout == "joint" else 0
                    out[r, h, f] = agg(rows[r, h, start + f * p: start + (f + 1) * p])
    return out


def perturbed_output(q, k, v, replacement: str, lam: float = 1.0, scale=None, mask=None) -> torch.Tensor:
    """``A' · V`` with the map ``A'`` built explicitly, fp64 (``U`` uniform over the allowed keys)."""
    a = softmax_map(q, k, scale, mask)
    n_q, n_k = a.shape[-2:]
    u = uniform_map(q, k, mask)
    eye = torch.eye(n_q, n_k, dtype=a.dtype).expand_as(a)
    new = {"identity": eye, "uniform": u, "mix": lam * eye + (1 - lam) * u, "scale": lam * a + (1 - lam) * u}
    return new[replacement] @ v.double()


def has_leftovers(pipe) -> list[str]:
    """Names of modules that still carry hooks or hook points (must be empty after any run)."""
    found = []
    for attr in ("unet", "transformer", "transformer_2"):
        model = getattr(pipe, attr, None)
        if model is None:
            continue
        for name, module in model.named_modules():
            if module._forward_pre_hooks or module._forward_hooks or "hook_entropy" in module._modules:
                found.append(name or attr)
    return found
