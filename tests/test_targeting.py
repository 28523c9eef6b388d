"""Step and CFG-branch targeting, exactly: a perturbation limited to a step range or a branch equals the closed
form applied by hand at those steps only, to that branch's rows only (an independent torch-function hook)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import ANIMATEDIFF_KW
from torch.overrides import TorchFunctionMode

import ieadapt_interp as ia
from ieadapt_interp.core.adapters import denoiser, layer_records

SPATIAL = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"
TEMPORAL = "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1"


class HandPerturbation(TorchFunctionMode):
    """Replaces the output of ``layer``'s attention call by the closed form, by hand.

    ``steps``: denoiser calls (one per step: diffusers batches the CFG branches) where it applies.
    ``halves``: which halves of the attention batch — diffusers' AnimateDiff concatenates
    ``[negative, prompt]``, so the first half holds the ``uncond`` rows and the second the ``cond`` rows
    (spatial layers: ``[row·frame]``; temporal: ``[row·pixel]``, row-major in both).
    """

    def __init__(self, pipe, layer: str, replacement: str, lam: float, steps: set[int], halves: set[str]):
        super().__init__()
        self.replacement, self.lam, self.steps, self.halves = replacement, lam, steps, halves
        self.step, self.inside = -1, False
        module = {r.name: r.module for r in layer_records(pipe)}[layer]
        self.handles = [
            denoiser(pipe).register_forward_pre_hook(lambda m, a: setattr(self, "step", self.step + 1)),
            module.register_forward_pre_hook(lambda m, a: setattr(self, "inside", True)),
            module.register_forward_hook(lambda m, a, o: setattr(self, "inside", False)),
        ]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is not F.scaled_dot_product_attention or not self.inside or self.step not in self.steps:
            return out
        v = args[2].double()
        mean = v.mean(dim=-2, keepdim=True).expand_as(v)  # U·V: every row the key-mean of V
        new = {"uniform": mean, "mix": self.lam * v + (1 - self.lam) * mean}[self.replacement].to(out.dtype)
        half = out.shape[0] // 2
        rows = {"uncond": slice(0, half), "cond": slice(half, 2 * half)}
        out = out.clone()
        for branch in self.halves:
            out[rows[branch]] = new[rows[branch]]
        return out

    def close(self):
        for handle in self.handles:
            handle.remove()


def _noise_predictions(pipe, perturb=None, hand=None):
    """The denoiser's output at every step of a CFG run (``[2, ...]``: uncond, cond)."""
    outs = []
    handle = denoiser(pipe).register_forward_hook(lambda m, a, o: outs.append(o[0].detach().clone()))
    try:
        if hand is None:
            ia.generate(pipe, "a red circle", perturb=perturb, guidance_scale=7.5, **ANIMATEDIFF_KW)
        else:
            with hand:
                ia.generate(pipe, "a red circle", guidance_scale=7.5, **ANIMATEDIFF_KW)
    finally:
        handle.remove()
        if hand is not None:
            hand.close()
    assert len(outs) == ANIMATEDIFF_KW["num_inference_steps"]
    return outs


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


CASES = [
    # perturbation, the hand-made reference (replacement, λ, steps, halves), a wrong target of the same kind
    (ia.uniform(TEMPORAL, steps=(1, 2)), ("uniform", 1.0, {1}, {"uncond", "cond"}), ({0}, {"uncond", "cond"})),
    (ia.uniform(TEMPORAL, branch="cond"), ("uniform", 1.0, {0, 1}, {"cond"}), ({0, 1}, {"uncond"})),
    (ia.mix(0.5, SPATIAL, steps=(0, 1), branch="uncond"), ("mix", 0.5, {0}, {"uncond"}), ({0}, {"cond"})),
    (ia.uniform(SPATIAL, steps=(0, 1), branch="cond"), ("uniform", 1.0, {0}, {"cond"}), ({1}, {"cond"})),
]


@pytest.mark.parametrize("perturbation,reference,wrong", CASES, ids=["step1", "cond", "step0-uncond", "step0-cond"])
def test_step_and_branch_targeting_equals_the_hand_applied_closed_form(animatediff, perturbation, reference, wrong):
    layer = perturbation.layers.names[0]
    replacement, lam, steps, halves = reference
    ours = _noise_predictions(animatediff, perturb=perturbation)
    expected = _noise_predictions(animatediff, hand=HandPerturbation(animatediff, layer, replacement, lam, steps,
                                                                      halves))
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the reference is sharp: perturbing another step / branch, or nothing, is far outside the tolerance
    misplaced = _noise_predictions(animatediff, hand=HandPerturbation(animatediff, layer, replacement, lam, *wrong))
    plain = _noise_predictions(animatediff)
    assert _max_diff(ours, misplaced) > 1e-4 and _max_diff(ours, plain) > 1e-4
