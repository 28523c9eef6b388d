"""Figures (synthetic data + one tiny traced run), the explorer, inline video helpers and model names."""

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import xarray as xr
from matplotlib.container import BarContainer
from matplotlib.patches import Rectangle

from ieadapt_interp import explorer, figures, video

LAST_SPATIAL = "up_blocks.3.attentions.2.transformer_blocks.0.attn1"
FIRST_TEMPORAL = "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1"


def sweep(n_spatial=3, n_temporal=2, prompts=("p0", "p1", "p2"), baseline=True):
    """Sweep-shaped table: value = 1 − 0.1·index·(2 if identity) − 0.01·prompt_number (baseline 1)."""
    rows = [("", "", -1, "none")] if baseline else []
    for kind, n in (("spatial", n_spatial), ("temporal", n_temporal)):
        rows += [(f"{kind}{i}", kind, i, rep) for i in range(1, n + 1) for rep in ("identity", "uniform")]
    data = np.zeros((len(prompts), 1, len(rows), 2))
    for p in range(len(prompts)):
        for r, (_, _, index, rep) in enumerate(rows):
            drop = 0.0 if rep == "none" else 0.1 * index * (2 if rep == "identity" else 1) + 0.01 * p
            data[p, 0, r] = [1 - drop, 5 + drop]
    return xr.Dataset(
        {"value": (("prompt", "seed", "perturbation", "metric"), data)},
        coords={
            "prompt": list(prompts),
            "seed": [0],
            "metric": ["ssim", "dynamic_degree"],
            "perturbation": [f"{r[3]}@{r[0]}" for r in rows],
            "layer": ("perturbation", [r[0] for r in rows]),
            "kind": ("perturbation", [r[1] for r in rows]),
            "block": ("perturbation", ["b"] * len(rows)),
            "index": ("perturbation", [r[2] for r in rows]),
            "replacement": ("perturbation", [r[3] for r in rows]),
            "lam": ("perturbation", [0.0] * len(rows)),
        },
    )


def stats(steps=3, kinds=("spatial", "spatial", "temporal", "cross"), heads=2, frames=2, seed=0):
    rng = np.random.default_rng(seed)
    shape = (steps, len(kinds), heads, frames)
    dims = ("step", "layer", "head", "frame")
    identity = np.full(shape, 4.0)
    uniform = np.full(shape, 1.0)
    energy = rng.uniform(1.5, 3.5, shape)
    energy[0, 0, 0, 0] = 0.5  # below E(UV)
    energy[1, 2, 1, 1] = 9.0  # above E(IV)
    energy[2, 2, 0, 0] = 0.2  # below E(UV)
    pct = rng.uniform(20, 100, shape)
    index = [sum(k == kind for k in kinds[: i + 1]) for i, kind in enumerate(kinds)]
    return xr.Dataset(
        {
            "energy": (dims, energy),
            "energy_identity": (dims, identity),
            "energy_uniform": (dims, uniform),
            "entropy_pct": (dims, pct),
            "entropy": (dims, pct / 100),
        },
        coords={
            "step": np.arange(steps),
            "timestep": ("step", np.linspace(999, 0, steps)),
            "layer": [f"{k}.{i}" for k, i in zip(kinds, index)],
            "kind": ("layer", list(kinds)),
            "block": ("layer", ["down.0"] * len(kinds)),
            "index": ("layer", index),
            "head": np.arange(heads),
            "frame": np.arange(frames),
        },
    )


@pytest.fixture(scope="module")
def run(animatediff):
    """Original + last spatial ← I, pooled maps of one spatial and one temporal layer."""
    result, labels = explorer.compare_run(
        animatediff,
        "a red circle",
        layer=LAST_SPATIAL,
        replacements=("identity",),
        map_layers=[LAST_SPATIAL, FIRST_TEMPORAL],
        map_size=8,
        num_frames=4,
        num_inference_steps=2,
        height=16,
        width=16,
    )
    assert result.videos.shape == (2, 4, 16, 16, 3)
    return result, labels


def _bars(ax):
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def test_layer_effect_bars_heights_and_labels():
    fig = figures.layer_effect(sweep(), "ssim")
    spatial, temporal = fig.axes[:2]
    assert [len(c) for c in _bars(spatial)] == [3, 3]  # identity, uniform: one bar per spatial layer
    assert [len(c) for c in _bars(temporal)] == [2, 2]
    assert spatial.get_xlabel() == "spatial layer index" and spatial.get_ylabel() == "Δ ssim"
    # spatial layer 2, identity: −(0.4 + mean(0, .01, .02)) = −0.41
    heights = [bar.get_height() for bar in _bars(spatial)[0]]
    np.testing.assert_allclose(heights, [-0.21, -0.41, -0.61])
    assert [t.get_text() for t in spatial.get_legend().get_texts()] == ["A ← I", "A ← U"]
    assert len(fig.data) == 10


def test_layer_effect_without_baseline_and_kind_filter():
    fig = figures.layer_effect(sweep(baseline=False), "dynamic_degree", kinds=["temporal"])
    assert len(fig.axes) == 1
    assert fig.axes[0].get_ylabel() == "dynamic_degree"  # raw values, no baseline to subtract
    np.testing.assert_allclose([b.get_height() for b in _bars(fig.axes[0])[0]], [5.21, 5.41])
    with pytest.raises(ValueError, match="No layers of kind"):
        figures.layer_effect(sweep(), "ssim", kinds=["joint"])
    with pytest.raises(KeyError, match="metric 'lpips'"):
        figures.layer_effect(sweep(), "lpips")


def test_perturbation_effect_one_bar_per_perturbation():
    fig = figures.perturbation_effect(sweep(n_spatial=2, n_temporal=1), "ssim")
    (bars,) = _bars(fig.axes[0])
    assert len(bars) == 6  # 3 layers × {I, U}; the baseline is not a bar
    # spatial1 ← I: −(0.2 + mean(0, .01, .02)) = −0.21; temporal1 ← U: −0.11
    np.testing.assert_allclose([b.get_height() for b in bars], [-0.21, -0.11, -0.41, -0.21, -0.21, -0.11])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][0] == "identity@spatial1"
    assert list(fig.data.columns) == ["perturbation", "replacement", "lam", "mean", "std"]


def lambda_sweep_table():
    """Baseline + temporal mix(λ) for λ ∈ {0, .5, 1} and spatial scale(.5); value = 1 − λ/10 − prompt/100."""
    rows = [("baseline", "none", np.nan)] + [(f"temporal:mix({lam:g})", "mix", lam) for lam in (1.0, 0.0, 0.5)]
    rows.append(("spatial.1:scale(0.5)", "scale", 0.5))
    data = np.array([[[[1.0 if rep == "none" else 1 - lam / 10 - p / 100] for _, rep, lam in rows]]
                     for p in range(2)])
    return xr.Dataset(
        {"value": (("prompt", "seed", "perturbation", "metric"), data)},
        coords={
            "prompt": ["p0", "p1"], "seed": [0], "metric": ["ssim"], "perturbation": [r[0] for r in rows],
            "layer": ("perturbation", ["", "t", "t", "t", "s"]),
            "kind": ("perturbation", ["", "temporal", "temporal", "temporal", "spatial"]),
            "block": ("perturbation", [""] * 5), "index": ("perturbation", [-1, -1, -1, -1, 1]),
            "replacement": ("perturbation", [r[1] for r in rows]), "lam": ("perturbation", [r[2] for r in rows]),
        },
    )


def test_lambda_effect_lines_sorted_by_lambda():
    fig = figures.lambda_effect(lambda_sweep_table(), "ssim")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"temporal (mix)", "spatial.1 (scale)"}
    mix = lines["temporal (mix)"]
    np.testing.assert_allclose(mix.get_xdata(), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(mix.get_ydata(), [-0.005, -0.055, -0.105])  # −λ/10 − mean(0, .01)
    assert fig.axes[0].get_ylabel() == "Δ ssim"
    with pytest.raises(ValueError, match="lambda_sweep"):
        figures.lambda_effect(sweep(), "ssim")


def test_layer_boxplots_one_box_per_layer():
    fig = figures.layer_boxplots(sweep(n_spatial=4), "ssim", kind="spatial")
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4"]
    assert sum(isinstance(p, matplotlib.patches.PathPatch) for p in ax.patches) == 4
    assert len(fig.data) == 4 * 2 * 3  # layers × replacements × prompts
    with pytest.raises(ValueError, match="kind 'joint'"):
        figures.layer_boxplots(sweep(), "ssim", kind="joint")


def test_entropy_by_layer_bars_and_nan_layer():
    st = stats()
    st["entropy_pct"][:, 1] = np.nan  # a 1-key layer has no defined percentage
    fig = figures.entropy_by_layer(st)
    ax = fig.axes[0]
    assert len(_bars(ax)[0]) == 3  # spatial, spatial, temporal — cross excluded by default
    assert [t.get_text() for t in ax.get_xticklabels()] == ["S1", "S2", "T1"]
    assert ax.get_ylabel() == "entropy, % of max"
    np.testing.assert_allclose(_bars(ax)[0][0].get_height(), float(st["entropy_pct"][:, 0].mean()))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["spatial", "temporal"]


def test_energy_bounds_counts_violations():
    fig = figures.energy_bounds(stats())
    spatial, temporal = fig.axes[:2]
    assert spatial.get_title().startswith("spatial: 1 of 24 cells violate")
    assert "(1 below, 0 above)" in spatial.get_title()
    assert temporal.get_title().startswith("temporal: 2 of 12 cells violate")
    assert "(1 below, 1 above)" in temporal.get_title()
    assert [t.get_text() for t in temporal.texts] == ["2"]
    assert fig.data["violations"].sum() == 3


def test_entropy_heatmap_selection_and_mark():
    st = stats()
    fig = figures.entropy_heatmap(st, head=1, frame=0, mark=(2, "temporal.1"))
    ax = fig.axes[0]
    image = ax.get_images()[0].get_array()
    assert image.shape == (3, 3)  # layers (spatial, spatial, temporal) × steps
    np.testing.assert_allclose(
        image[2, 1], st["entropy_pct"].sel(step=1, layer="temporal.1", head=1, frame=0)
    )
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(rects) == 1 and rects[0].get_xy() == (1.5, 1.5)
    assert ax.get_xlabel() == "denoising step" and "head 1" in ax.get_title()


def test_video_strip_grid_and_errors():
    videos = np.zeros((3, 10, 8, 8, 3), np.uint8)
    fig = figures.video_strip(videos, ["a", "b", "c"], max_frames=4)
    assert len(fig.axes) == 12 and list(fig.data) == [0, 3, 6, 9]
    assert [fig.axes[i * 4].get_ylabel() for i in range(3)] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="labels"):
        figures.video_strip(videos, ["a"])
    with pytest.raises(IndexError):
        figures.video_strip(videos, frames=[10])


def test_attention_map_from_run(run):
    result, _ = run
    fig = figures.attention_map(result.maps, FIRST_TEMPORAL, step=1, head=0)
    assert fig.data.shape == (4, 4)  # query_frame × key_frame
    np.testing.assert_allclose(fig.data.sum(axis=1), 1.0, atol=1e-4)  # rows of a softmax map
    assert fig.axes[0].get_xlabel() == "key frame"
    fig = figures.attention_map(result.maps, LAST_SPATIAL, step=0, frame=1)
    assert fig.data.shape == (8, 8) and fig.axes[0].get_ylabel() == "query bin"
    with pytest.raises(KeyError, match="no materialised map"):
        figures.attention_map(result.maps, "mid_block.attentions.0.transformer_blocks.0.attn1")


def test_save_figure(tmp_path):
    fig = figures.video_strip(np.zeros((1, 2, 8, 8, 3), np.uint8))
    assert figures.save_figure(fig, tmp_path / "sub", "strip") is fig
    assert (tmp_path / "sub" / "strip.png").stat().st_size > 0


def test_static_views_and_explorer(run):
    result, labels = run
    assert labels == ["original", "A ← I @ up_blocks.3.attentions.2.attn1"]
    views = explorer.static_views(result, labels=labels)
    assert set(views) == {"entropy_heatmap", "attention_map", "video_strip"}
    assert views["video_strip"].axes[0].get_ylabel() == "original"
    ex = explorer.Explorer(result, labels=labels)
    assert ex.layer.value == FIRST_TEMPORAL  # first layer (forward order) with a materialised map
    ex.layer.value = LAST_SPATIAL
    ex.head.value, ex.frame.value, ex.step.value = 1, 2, 0
    assert ex.selection() == {"step": 0, "layer": LAST_SPATIAL, "head": 1, "frame": 2}
    assert ex.views()["attention_map"].data.shape == (8, 8)
    first = ex.image.value
    ex.video_frame.value = 3
    assert ex.image.value != first  # the side-by-side frame changed
    from PIL import Image

    assert Image.open(io.BytesIO(ex.image.value)).size[0] > 2 * 16  # two upscaled 16-px videos side by side
    with pytest.raises(ValueError, match="labels"):
        explorer.Explorer(result, labels=["only one"])


def test_video_helpers(tmp_path):
    a = np.zeros((3, 15, 9, 3), np.uint8)
    a[:, 0, 0] = np.array([0, 100, 200])[:, None]  # frames differ (identical GIF frames would be merged)
    b = np.full((3, 15, 9, 3), 200, np.uint8)
    strip = video.side_by_side([a, b], gap=2)
    assert (
        strip.shape == (3, 15, 20, 3) and (strip[:, :, 9:11] == 255).all() and (strip[:, :, 11:] == 200).all()
    )
    assert (strip[:, 0, 0, 0] == [0, 100, 200]).all()
    data, mime = video.encode_video(strip, fps=4, format="gif")
    from PIL import Image

    gif = Image.open(io.BytesIO(data))
    assert mime == "image/gif" and gif.n_frames == 3
    assert video.upscale(a, 3).shape == (3, 45, 27, 3)
    html = video.show_video([a, b], labels=["x", "y"], format="gif").data
    assert html.count("<figure") == 2 and "data:image/gif;base64," in html
    assert video.save_video(a, tmp_path / "v.gif").stat().st_size > 0
    with pytest.raises(ValueError, match=r"\[frame, H, W, 3\]"):
        video.side_by_side([a[0]])
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        video.save_video(a, tmp_path / "v.avi")
    if not video.has_h264():
        with pytest.raises(ImportError, match="imageio-ffmpeg"):
            video.encode_video(a, format="mp4")


def test_video_mp4_h264(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    data, mime = video.encode_video(np.zeros((4, 15, 9, 3), np.uint8), format="mp4")  # odd sides get padded
    assert mime == "video/mp4" and data[4:8] == b"ftyp"


def test_explore_static_for_headless_and_widget(run, tmp_path):
    result, labels = run
    views = explorer.explore(result, labels=labels, interactive=False, out_dir=tmp_path)
    assert set(views) == {"entropy_heatmap", "attention_map", "video_strip"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "explorer_attention_map.png",
        "explorer_entropy_heatmap.png",
        "explorer_video_strip.png",
    ]
    assert isinstance(explorer.explore(result, labels=labels), explorer.Explorer)
