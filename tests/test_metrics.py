"""Weight-free metrics, the registry, and input validation (hand-computed values where a formula exists)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from ieadapt_interp.metrics import (
    METRICS,
    compute_metrics,
    flow_magnitude,
    get_metric,
    motion,
    motion_smoothness_flow,
    ssim,
    subject_consistency_hist,
    temporal_ssim,
)
from ieadapt_interp.metrics.motion import colour_descriptor, interpolate_midpoint
from ieadapt_interp.metrics.registry import INPUTS


def textured(size: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (good for optical flow)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (size // 10, size // 10, 3)).astype(np.uint8)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def translating(shift: int, frames: int = 6, size: int = 64) -> np.ndarray:
    """Texture moving right by ``shift`` px per frame (cropped so no wrap-around is visible)."""
    big = textured(size + 2 * shift * frames + 32)
    return np.stack([big[16 : 16 + size, 16 + shift * t : 16 + shift * t + size] for t in range(frames)])[
        :, :, ::-1
    ]


def static(frames: int = 4, size: int = 48) -> np.ndarray:
    return np.repeat(textured(size)[None], frames, axis=0)


def test_ssim_identical_is_one_and_differs_otherwise():
    video = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert ssim(video, video) == pytest.approx(1.0)
    assert ssim(video, 255 - video) < 0.5


def test_temporal_ssim_static_is_one():
    assert temporal_ssim(static()) == pytest.approx(1.0)
    assert temporal_ssim(translating(3)) < 0.99


def test_flow_magnitude_static_is_zero_and_translation_gives_its_shift():
    assert flow_magnitude(static()) == 0.0
    video = translating(2)
    assert np.abs(video[1:].astype(int) - video[:-1]).mean() > 1  # really moving
    assert flow_magnitude(video) == pytest.approx(2.0, rel=0.1)
    assert flow_magnitude(translating(4)) == pytest.approx(4.0, rel=0.1)


def test_old_dynamic_degree_function_warns_and_returns_flow_magnitude():
    video = translating(2)
    with pytest.warns(FutureWarning, match="renamed flow_magnitude"):
        assert motion.dynamic_degree(video) == flow_magnitude(video)
    with pytest.warns(FutureWarning, match="VBench's binary RAFT score"):
        assert get_metric("dynamic_degree").needs_weights == ("raft-things.pth",)


def test_subject_consistency_hist_against_hand_computed_bhattacharyya():
    # two colours: frame 0 all black; frame 1 half black half white; frame 2 all white (8 bins: cells 0 and 511)
    video = np.zeros((3, 8, 8, 3), np.uint8)
    video[1, :, 4:] = 255
    video[2] = 255
    d = colour_descriptor(video[1])
    assert d[0] == pytest.approx(np.sqrt(0.5)) and d[511] == pytest.approx(np.sqrt(0.5))
    # t=1: cos(f1, f0) = √½ for previous and first; t=2: cos(f2, f1) = √½, cos(f2, f0) = 0
    expected = (np.sqrt(0.5) + (np.sqrt(0.5) + 0.0) / 2) / 2
    assert subject_consistency_hist(video) == pytest.approx(expected, abs=1e-12)


def test_subject_consistency_hist_ignores_motion_and_sees_appearance():
    moving = translating(3, frames=5)
    assert temporal_ssim(moving) < 0.99  # motion lowers temporal SSIM …
    rng = np.random.default_rng(0)
    # … while a colour-preserving permutation of pixels (all motion, no appearance change) keeps the stand-in at 1
    shuffled = np.stack([f.reshape(-1, 3)[rng.permutation(f.shape[0] * f.shape[1])].reshape(f.shape) for f in static(4)])
    assert subject_consistency_hist(shuffled) == pytest.approx(1.0)
    recoloured = static(4).copy()
    recoloured[2:] = 255 - recoloured[2:]  # the subject changes colour half-way
    assert subject_consistency_hist(recoloured) < 0.9


def test_midpoint_interpolation_of_a_translation():
    video = translating(2, frames=3)
    middle = interpolate_midpoint(video[0], video[2])
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(middle[inner].astype(int) - video[1][inner]).mean() < 2.0


def test_motion_smoothness_flow_formula():
    assert motion_smoothness_flow(static(5)) == 1.0
    noise = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    smooth = motion_smoothness_flow(translating(2, frames=5))
    assert 0.98 < smooth < 1.0
    assert motion_smoothness_flow(noise) < smooth


def test_registry_records_are_complete():
    for name, metric in METRICS.items():
        assert metric.name == name and metric.source
        assert metric.needs[0] == "video" and set(metric.needs) <= set(INPUTS)
        assert metric.fn.__doc__ and "Source" in metric.fn.__doc__
    assert all(metric.implemented for metric in METRICS.values())
    assert METRICS["motion_smoothness"].needs_weights == ("amt-s.pth",)
    assert METRICS["lpips"].higher_is_better is False
    assert METRICS["ssim"].needs_weights == ()


def test_unknown_metric_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown metric 'temporal_sim'.*'temporal_ssim'"):
        get_metric("temporal_sim")
    with pytest.raises(ValueError, match="Did you mean 'flow_magnitude'"):
        compute_metrics(["ssim", "flow_magnitud"], static(), reference=static())


def test_compute_metrics_weight_free():
    video = static()
    out = compute_metrics(
        ["temporal_ssim", "flow_magnitude", "ssim", "subject_consistency_hist"], video, reference=video
    )
    assert out == {
        "temporal_ssim": pytest.approx(1.0),
        "flow_magnitude": 0.0,
        "ssim": pytest.approx(1.0),
        "subject_consistency_hist": pytest.approx(1.0),
    }


@pytest.mark.parametrize(
    "video, message",
    [
        (np.zeros((2, 16, 16, 3), np.float32), "uint8"),
        (np.zeros((16, 16, 3), np.uint8), "shape"),
        (np.zeros((2, 16, 16, 4), np.uint8), "shape"),
        ([[0]], "numpy array"),
        (np.zeros((0, 16, 16, 3), np.uint8), "at least 1 frame"),
    ],
)
def test_bad_videos_are_rejected(video, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(["temporal_ssim"], video)


def test_bad_inputs_are_rejected_before_work(monkeypatch):
    video = static()
    calls = []
    spy = dataclasses.replace(METRICS["temporal_ssim"], fn=lambda *a, **k: calls.append(1) or 1.0)
    monkeypatch.setitem(METRICS, "temporal_ssim", spy)
    with pytest.raises(ValueError, match="needs reference"):
        compute_metrics(["temporal_ssim", "ssim"], video)
    with pytest.raises(ValueError, match="uint8"):
        compute_metrics(["temporal_ssim", "ssim"], video, reference=video.astype(np.float64))
    with pytest.raises(ValueError, match="needs prompt"):
        compute_metrics(["clip_score"], video)
    with pytest.raises(ValueError, match="differs from video shape"):
        ssim(video, video[:2])
    with pytest.raises(ValueError, match="at least 2 frame"):
        flow_magnitude(video[:1])
    with pytest.raises(ValueError, match="at least 7"):
        temporal_ssim(np.zeros((2, 5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="not requested"):
        compute_metrics(["ssim"], video, reference=video, weights={"lpips": "x"})
    assert calls == []


def rendered(caption: str, seed: int = 0) -> np.ndarray:
    """One clip of the embedded model's training renderer, uint8 (F, H, W, 3)."""
    from ieadapt_interp.models.toy.attributes import to_uint8_clip
    from ieadapt_interp.models.toy.dataset import render_captions

    return to_uint8_clip(render_captions([caption], seed=seed)[0])


def test_attribute_metrics_on_rendered_clips():
    caption = "a red square moving right on a white background"
    clip = rendered(caption)
    names = ["colour_match", "shape_match", "direction_match", "connectedness"]
    assert compute_metrics(names, clip, prompt=caption) == dict.fromkeys(names, 1.0)
    wrong = "a blue circle moving left on a white background"  # every attribute differs
    assert compute_metrics(names, clip, prompt=wrong) == {
        "colour_match": 0.0, "shape_match": 0.0, "direction_match": 0.0, "connectedness": 1.0
    }
    still = rendered("a green triangle staying still on a black background", seed=1)
    assert compute_metrics(["direction_match"], still, prompt="a green triangle staying still on a black "
                           "background")["direction_match"] == 1.0
    two = np.concatenate([clip[:, :, :32], clip[:, :, :32]], axis=2)  # the object twice side by side
    assert compute_metrics(["connectedness"], two)["connectedness"] < 1.0


def test_attribute_metrics_refuse_other_prompts_before_work(monkeypatch):
    from ieadapt_interp.metrics import attributes

    calls = []
    monkeypatch.setattr(attributes, "_caption", lambda prompt: calls.append(prompt))
    with pytest.raises(ValueError, match="caption grammar"):
        compute_metrics(["flow_magnitude", "colour_match"], np.zeros((4, 32, 32, 3), np.uint8),
                        prompt="an astronaut riding a horse")
    assert calls == []
