"""Edit sources: files (mp4, gif, webm, frame folders), arrays and runs — read, fitted, checked, encoded."""

import numpy as np
import pytest
import torch

import ieadapt_interp as ia
from ieadapt_interp.core.errors import IEAdaptError
from ieadapt_interp.methods.sources import (as_source, default_source_path, encode_video, fit_video, read_video,
                                            render_toy_clip, DEFAULT_SOURCE_PROMPT)

from conftest import ANIMATEDIFF_KW


def blocks(frames=6, h=32, w=32):
    """A few flat colours moving one block per frame (exact in GIF, near-exact in video codecs)."""
    v = np.zeros((frames, h, w, 3), np.uint8)
    v[..., 2] = 60
    for f in range(frames):
        v[f, 8:24, 2 * f:2 * f + 8] = (220, 40, 40)
    return v


def test_gif_and_frame_folder_read_back_exactly(tmp_path):
    import imageio.v3 as iio

    v = blocks()
    iio.imwrite(tmp_path / "clip.gif", v, duration=100, loop=0)
    np.testing.assert_array_equal(read_video(tmp_path / "clip.gif"), v)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(v):
        iio.imwrite(folder / f"{i:03d}.png", frame)
    np.testing.assert_array_equal(read_video(folder), v)


@pytest.mark.parametrize("suffix, codec", [(".mp4", "libx264"), (".webm", "libvpx-vp9")])
def test_movie_files_read_back_closely(tmp_path, suffix, codec):
    import imageio.v3 as iio

    v = blocks()
    iio.imwrite(tmp_path / f"clip{suffix}", v, fps=8, codec=codec, macro_block_size=1)
    got = read_video(tmp_path / f"clip{suffix}")
    assert got.shape == v.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - v).mean() < 12          # lossy codecs: close, not equal


def test_shipped_source_is_the_documented_render():
    np.testing.assert_array_equal(read_video(default_source_path()),
                                  render_toy_clip(DEFAULT_SOURCE_PROMPT, seed=1, off_path=14.0))
    assert default_source_path().stat().st_size < 300_000


def test_fit_resizes_the_shorter_side_and_crops_the_centre():
    v = np.zeros((2, 16, 32, 3), np.uint8)
    v[:, :, 8:24] = 200                                     # the central 16 columns
    np.testing.assert_array_equal(fit_video(v, 16, 16), np.full((2, 16, 16, 3), 200, np.uint8))
    flat = np.full((3, 8, 8, 3), 77, np.uint8)              # upscaling a flat video keeps it flat
    np.testing.assert_array_equal(fit_video(flat, 16, 16, num_frames=2), np.full((2, 16, 16, 3), 77, np.uint8))


def test_encode_is_the_vae_posterior_mean_scaled(animatediff):
    v = blocks(4, 16, 16)
    z = encode_video(animatediff, v)
    x = torch.from_numpy(v).permute(0, 3, 1, 2).float() / 127.5 - 1
    want = animatediff.vae.encode(x).latent_dist.mean * animatediff.vae.config.scaling_factor
    torch.testing.assert_close(z[0].permute(1, 0, 2, 3), want)


def test_a_traced_result_is_a_generated_source(animatediff):
    run = ia.trace(animatediff, "a red circle", seed=5, **ANIMATEDIFF_KW)
    source, frames = as_source(run, num_frames=None, height=16, width=16)
    assert (source.kind, source.seed, frames) == ("generated", 5, 4)
    plain = ia.generate(animatediff, "a red circle", seed=5, **ANIMATEDIFF_KW)   # no stats: used as a video
    assert as_source(plain, num_frames=None, height=16, width=16)[0].kind == "video"


def _no_hooks(pipe):
    return not [m for m in pipe.unet.modules() if m._forward_pre_hooks or m._forward_hooks]


def _write(path, data):
    path.write_bytes(data)
    return path


def _folder(path):
    path.mkdir()
    return path


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing.mp4", "No video at"),
    (lambda p: _write(p / "empty.mp4", b""), "is empty"),
    (lambda p: _write(p / "junk.mp4", b"not a movie"), "Cannot read"),
    (lambda p: _folder(p / "noframes"), "no frame images"),
])
def test_bad_files_raise_one_clear_error(animatediff, tmp_path, make, match):
    with pytest.raises(IEAdaptError, match=match):
        ia.edit(animatediff, make(tmp_path), "a red circle", "a blue circle", **ANIMATEDIFF_KW)
    assert _no_hooks(animatediff)


def test_too_few_frames_and_bad_sizes(animatediff):
    short = blocks(3, 16, 16)
    with pytest.raises(IEAdaptError, match="has 3 frames"):
        ia.edit(animatediff, short, "a red circle", "a blue circle", **ANIMATEDIFF_KW)   # needs 4
    with pytest.raises(IEAdaptError, match="multiples of"):
        ia.invert(animatediff, blocks(4, 16, 16), "a red circle", num_inference_steps=1, height=12, width=16)
    with pytest.raises(IEAdaptError, match=r"\[frame, H, W, 3\]"):
        ia.edit(animatediff, np.zeros((4, 16, 16), np.uint8), "a red circle", "a blue circle", **ANIMATEDIFF_KW)
    assert _no_hooks(animatediff)
