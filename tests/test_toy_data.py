"""Renderer, caption grammar and attribute checks of the embedded toy model's data."""

import numpy as np
import pandas as pd
import pytest
import torch

from ieadapt_interp.models.toy import attributes as A
from ieadapt_interp.models.toy import dataset as D


def test_grammar_roundtrip():
    for c in D.all_combos():
        cap = c.caption
        assert D.parse_caption(cap) == c
        if c.motion == "still":
            assert cap == f"a {c.colour} {c.shape} staying still on a {c.background} background"
        else:
            assert cap == f"a {c.colour} {c.shape} moving {c.motion} on a {c.background} background"
    with pytest.raises(ValueError):
        D.parse_caption("a pink circle moving left on a black background")
    assert {"red", "green", "blue", "yellow", "purple", "orange"} <= set(D.COLOURS)
    assert {"circle", "square", "triangle"} <= set(D.SHAPES)
    assert {"left", "right", "up", "down"} <= set(D.DIRECTIONS)
    assert {"black", "white", "gray"} <= set(D.BACKGROUNDS)


def test_heldout_file_is_fixed_and_disjoint_from_training():
    held = D.heldout_combos()
    assert len(held) >= 60 and len(set(held)) == len(held)
    # the shipped file is what the generator makes
    assert [c.caption for c in D._make_heldout()] == D.heldout_captions()
    train = D.train_combos()
    assert not set(held) & set(train)
    assert len(train) + len(held) == len(D.all_combos())
    # every motion is held out, and every attribute value still occurs in training
    assert {c.motion for c in held} == set(D.MOTIONS)
    s = D.ToyVideoSampler(seed=0)
    _, p = s.sample(512)
    assert not set(p.captions()) & set(D.heldout_captions())


def test_renderer_deterministic_and_shaped():
    caps = D.heldout_captions()[:8]
    a = D.render_captions(caps, seed=3)
    b = D.render_captions(caps, seed=3)
    c = D.render_captions(caps, seed=4)
    assert a.shape == (8, 16, 3, 64, 64) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    s1, s2 = D.ToyVideoSampler(seed=1), D.ToyVideoSampler(seed=1)
    x1, p1 = s1.sample(6)
    x2, p2 = s2.sample(6)
    assert torch.equal(x1, x2) and p1.captions() == p2.captions()


def test_sampler_state_resumes():
    s = D.ToyVideoSampler(seed=2)
    s.sample(3)
    st = s.state_dict()
    x1, _ = s.sample(3)
    s2 = D.ToyVideoSampler(seed=99)
    s2.load_state_dict(st)
    x2, _ = s2.sample(3)
    assert torch.equal(x1, x2)


def test_moving_shapes_travel_far():
    caps = [D.make_caption("red", "square", m, "black") for m in D.MOTIONS] * 4
    x = D.render_captions(caps, seed=0)
    for clip, cap in zip(x, caps):
        dx, dy = A.displacement(clip.permute(0, 2, 3, 1))
        want = D.parse_caption(cap).motion
        dist = float(np.hypot(dx, dy))
        if want == "still":
            assert dist < 1
        else:
            assert 28 <= dist <= 38


def _check_rendered(captions, seed):
    x = D.render_captions(captions, seed=seed)
    return pd.DataFrame([A.check_clip(clip.permute(0, 2, 3, 1), cap) for clip, cap in zip(x, captions)])


def test_attribute_checks_accuracy_on_rendered_clips():
    caps = [c.caption for c in D.all_combos()]  # 270 clips, every combination once
    df = _check_rendered(caps, seed=11)
    for col in ("colour_ok", "shape_ok", "motion_ok", "background_ok"):
        assert df[col].mean() >= 0.98, (col, df[col].mean())
    assert df.one_blob_frac.mean() >= 0.98


def test_attribute_checks_reject_a_model_that_ignores_its_prompt():
    # "a model that ignores its prompt": every clip rendered for some other caption
    caps = D.heldout_captions()
    wrong = caps[1:] + caps[:1]  # shifted: each clip shows the next caption's content
    x = D.render_captions(wrong, seed=0)
    df = pd.DataFrame([A.check_clip(clip.permute(0, 2, 3, 1), cap) for clip, cap in zip(x, caps)])
    all_ok = df.colour_ok & df.shape_ok & df.motion_ok
    assert all_ok.mean() < 0.2
    # a constant clip ignoring all prompts fails too
    fixed = D.render_captions([caps[0]] * len(caps), seed=0)
    df2 = pd.DataFrame([A.check_clip(clip.permute(0, 2, 3, 1), cap) for clip, cap in zip(fixed, caps)])
    assert df2.motion_ok.mean() < 0.5 and df2.colour_ok.mean() < 0.5


def test_attribute_checks_on_blank_and_two_blobs():
    blank = np.zeros((16, 64, 64, 3), np.float32)
    assert A.dominant_colour(blank) is None and A.shape_name(blank) is None
    assert A.motion_direction(blank) == "still" and A.one_blob_fraction(blank) == 0.0
    two = blank.copy()
    two[:, 10:20, 10:20] = [1, 0, 0]
    two[:, 40:50, 40:50] = [1, 0, 0]
    assert A.one_blob_fraction(two) == 0.0
