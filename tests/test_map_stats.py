"""Per-map statistics (the paper's unit "one map"): histograms of map entropy and energy position, on
hand-built attention calls whose maps are known."""

import math

import pytest
import torch

from ieadapt_interp.core.adapters import AttentionLayer
from ieadapt_interp.core.entropy import sdpa_with_entropy
from ieadapt_interp.core.handlers import (ENERGY_BINS, ENTROPY_BINS, CallContext, StatsRecorder, energy_position,
                                          histogram)
from ieadapt_interp.core.layouts import get_layout

F_, P_, D_ = 4, 6, 8  # frames, spatial positions, head dim


def _temporal_call(identity_positions: set[int]):
    """One temporal call (frames in sequence): positions in ``identity_positions`` have map I, the others U."""
    q = torch.zeros(P_, 1, F_, D_)
    k = torch.zeros(P_, 1, F_, D_)
    for p in identity_positions:
        q[p, 0, :, :F_] = 1e4 * torch.eye(F_)  # scores 1e8 on the diagonal, 0 elsewhere: softmax = I exactly
        k[p, 0, :, :F_] = torch.eye(F_)
    v = torch.randn(P_, 1, F_, D_, generator=torch.Generator().manual_seed(0))
    out, ent = sdpa_with_entropy(q, k, v, None, D_ ** -0.5, sdpa=torch.nn.functional.scaled_dot_product_attention)
    layer = AttentionLayer("t", "temporal", "up.0", 1, 1, None)
    ctx = CallContext(layer, 0, [("cond", 0)], P_, get_layout("frames_in_sequence"), F_, 0, q, k, v, None,
                      D_ ** -0.5, out=out, entropy=ent)
    rec = StatsRecorder(["t"])
    rec.after(ctx)
    return rec.calls[0].stats


def test_temporal_maps_are_counted_per_position():
    stats = _temporal_call({0, 3})
    ent = stats["map_entropy_hist"][0, 0]  # [bin]
    assert ent.sum() == P_  # one count per position's F×F map
    assert ent[0] == 2  # the two identity maps: entropy 0 %
    assert ent[-1] == P_ - 2  # the uniform maps: 100 %, in the last (closed) bin


def test_identity_map_sits_on_the_upper_energy_bound_not_over_it():
    stats = _temporal_call({0, 3})
    energy = stats["map_energy_hist"][0, 0]
    upper_bin = len(ENERGY_BINS) - 3  # [0.9, 1 + tol]
    lower_ok_bin = 1  # [-tol, 0.1)
    assert energy[-1] == 0 and energy[0] == 0  # no violations of either bound
    assert energy[upper_bin] == 2  # A = I: E(AV) = E(IV)
    assert energy[lower_ok_bin] == P_ - 2  # A = U: E(AV) = E(UV)


def test_histogram_edges_and_energy_position():
    assert histogram(torch.tensor([[0.0, 4.9, 5.0, 100.0]]), (0.0, 5.0, 100.0)).tolist() == [[2.0, 2.0]]
    assert len(ENTROPY_BINS) == 21 and ENTROPY_BINS[-1] == 100.0
    pos = energy_position(torch.tensor([2.0, 3.0, 1.0, 5.0]), torch.tensor([3.0, 3.0, 3.0, 5.0]),
                          torch.tensor([1.0, 1.0, 1.0, 5.0]))
    assert pos.tolist() == [0.5, 1.0, 0.0, 0.0]  # equal bounds: position 0, not NaN


@pytest.mark.parametrize("arch", ["animatediff", "cogvideox"])
def test_map_histograms_agree_with_per_frame_stats(arch, request):
    """On a traced run the entropy histogram counts every map once, and spatial / joint maps (one per frame /
    per row) fall in the bin of the per-frame entropy."""
    import ieadapt_interp as ia
    from conftest import ANIMATEDIFF_KW, COGVIDEOX_KW

    pipe = request.getfixturevalue(arch)
    stats = ia.trace(pipe, "a red circle", **(ANIMATEDIFF_KW if arch == "animatediff" else COGVIDEOX_KW)).stats
    kinds = stats.kind.values
    for i, kind in enumerate(kinds):
        if kind not in ("spatial", "joint") or int(stats.n_keys[i]) <= 1:
            continue
        hist = stats.map_entropy_hist.isel(layer=i)
        n_maps = stats.sizes["frame"] if kind == "spatial" else 1
        assert bool((hist.sum("entropy_bin") == n_maps).all())
        if kind == "spatial":
            pct = stats.entropy_pct.isel(layer=i)  # [step, head, frame]
            idx = (pct // 5).clip(0, 19).astype(int)
            for b in range(20):
                assert bool(((idx == b).sum("frame") == hist.isel(entropy_bin=b)).all())
    assert not math.isnan(float(stats.map_entropy_hist.sum()))
