"""Sources of an edit: a generated run, a video array, or a video file — checked, fitted and VAE-encoded.

A source is one of

* a generated run: an ``int`` seed (the source prompt is generated with it), or a
  :class:`~ieadapt_interp.Result` whose stats record their seed (``trace`` results do; a Result without
  them is used as a video);
* a video array: uint8 ``[frame, H, W, 3]``;
* a video file: ``.mp4``, ``.gif``, ``.webm`` (or another format ffmpeg reads) or a folder of frame images,
  read with imageio (imageio-ffmpeg for movies, Pillow for GIFs and images).

Arrays and files are fitted to the model's size (shorter side resized with antialiasing, then a centre crop),
cut to ``num_frames`` (the first frames; too few is an error) and encoded with the pipeline's VAE
(the posterior mean, scaled as the pipeline scales latents).

>>> import numpy as np
>>> video = np.zeros((5, 30, 40, 3), np.uint8)
>>> fit_video(video, 16, 16, num_frames=4).shape
(4, 16, 16, 3)
>>> default_source_path().name
'red_circle_off_path.gif'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.adapters import get_adapter
from ..core.errors import IEAdaptFileNotFoundError, IEAdaptTypeError, IEAdaptValueError

#: image suffixes read from a folder of frames (sorted by file name)
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: the caption of the shipped default source clip (see data/edit_source/README.md)
DEFAULT_SOURCE_PROMPT = "a red circle moving right on a black background"


def default_source_path() -> Path:
    """The shipped real clip (rendered by the toy dataset, shape off its usual path): ``data/edit_source/``.

    ``$IEADAPT_EDIT_SOURCE`` overrides it.
    """
    env = os.environ.get("IEADAPT_EDIT_SOURCE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data" / "edit_source" / "red_circle_off_path.gif"


@dataclass
class Source:
    """A checked source. ``kind``: ``"generated"`` (``seed``) or ``"video"`` (``video`` uint8 ``[f, H, W, 3]``,
    already fitted to the model's size)."""

    kind: str
    seed: int | None = None
    video: np.ndarray | None = None
    origin: str = ""


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Read a video file or a folder of frames → uint8 ``[frame, H, W, 3]``.

    One clear :class:`~ieadapt_interp.core.errors.IEAdaptValueError` for an unreadable or empty file
    (:class:`FileNotFoundError` subclass when it does not exist).
    """
    import imageio.v3 as iio

    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise IEAdaptFileNotFoundError(f"No video at {str(path)!r}: give an .mp4/.gif/.webm file or a folder of "
                                       "frame images.")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise IEAdaptValueError(f"The folder {str(path)!r} holds no frame images ({', '.join(FRAME_SUFFIXES)}).")
        try:
            frames = [np.asarray(iio.imread(f)) for f in files]
        except Exception as error:  # noqa: BLE001 — any decoder failure is the same user error
            raise IEAdaptValueError(f"Cannot read the frames in {str(path)!r}: {error}") from None
        shapes = {f.shape[:2] for f in frames}
        if len(shapes) > 1:
            raise IEAdaptValueError(f"The frames in {str(path)!r} differ in size ({sorted(shapes)}); give frames of "
                                    "one size.")
        video = np.stack([_rgb(f) for f in frames])
    else:
        if path.stat().st_size == 0:
            raise IEAdaptValueError(f"The file {str(path)!r} is empty: give a video file with at least one frame.")
        try:
            video = np.asarray(iio.imread(path, index=None))
        except Exception as error:  # noqa: BLE001
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise IEAdaptValueError(f"Cannot read {str(path)!r} as a video ({reason}). Give an .mp4, .gif or .webm "
                                    "file ffmpeg can decode, or a folder of frame images.") from None
        if video.ndim == 3:  # a single still image (or a greyscale frame stack)
            video = video[None] if video.shape[-1] in (3, 4) else video[..., None]
        video = np.stack([_rgb(f) for f in video]) if len(video) else video
    if video.size == 0 or len(video) == 0:
        raise IEAdaptValueError(f"{str(path)!r} holds no frames.")
    return np.ascontiguousarray(video.astype(np.uint8))


def _rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, -1)
    return frame[..., :3]


def check_video_array(video, name: str = "video") -> np.ndarray:
    """``video`` as uint8 ``[frame, H, W, 3]`` (float arrays in [0, 1] are scaled); a clear error otherwise."""
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if not isinstance(video, np.ndarray):
        raise IEAdaptTypeError(f"{name} must be a uint8 array [frame, H, W, 3], a file path or a seed; "
                               f"got {type(video).__name__}.")
    if video.ndim != 4 or video.shape[-1] != 3:
        raise IEAdaptValueError(f"{name} must have shape [frame, H, W, 3]; got {video.shape}.")
    if video.shape[0] == 0 or video.shape[1] == 0 or video.shape[2] == 0:
        raise IEAdaptValueError(f"{name} is empty (shape {video.shape}).")
    if video.dtype != np.uint8:
        if not np.issubdtype(video.dtype, np.floating) or video.min() < 0 or video.max() > 1:
            raise IEAdaptValueError(f"{name} must be uint8 in [0, 255] (or float in [0, 1]); got {video.dtype}.")
        video = (video * 255.0).round().astype(np.uint8)
    return video


def fit_video(video: np.ndarray, height: int, width: int, num_frames: int | None = None) -> np.ndarray:
    """Resize (shorter side, bilinear with antialiasing) and centre-crop to ``height × width``; keep the
    first ``num_frames`` frames. uint8 ``[f, H, W, 3]`` → uint8 ``[num_frames, height, width, 3]``."""
    video = check_video_array(video)
    if num_frames is not None:
        if len(video) < num_frames:
            raise IEAdaptValueError(f"The source has {len(video)} frames; the edit needs {num_frames}. Give a longer "
                                    f"video or pass num_frames={len(video)} (or fewer).")
        video = video[:num_frames]
    h, w = video.shape[1:3]
    if (h, w) == (height, width):
        return np.ascontiguousarray(video)
    scale = max(height / h, width / w)
    new = (max(height, round(h * scale)), max(width, round(w * scale)))
    x = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=new, mode="bilinear", align_corners=False, antialias=True)
    top, left = (new[0] - height) // 2, (new[1] - width) // 2
    x = x[..., top:top + height, left:left + width]
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def size_multiple(pipe) -> int:
    """Pixel multiple the model's height and width must be (VAE factor × the denoiser's downsampling)."""
    adapter = get_adapter(pipe)
    if adapter.name == "cogvideox":
        return int(pipe.vae_scale_factor_spatial) * int(pipe.transformer.config.patch_size)
    if adapter.size_multiple is not None:  # Wan, Latte, LTX-Video, HunyuanVideo, Mochi: VAE factor × patch
        return int(adapter.size_multiple(pipe))
    down = 2 ** max(0, len(pipe.unet.config.block_out_channels) - 1)
    return int(pipe.vae_scale_factor) * down


def check_size(pipe, height: int, width: int, num_frames: int) -> None:
    """Raise one clear error for a size or frame count the model's VAE / denoiser cannot take."""
    multiple = size_multiple(pipe)
    if height < multiple or width < multiple or height % multiple or width % multiple:
        raise IEAdaptValueError(f"height × width = {height} × {width} cannot be encoded and denoised by this model: "
                                f"both must be positive multiples of {multiple} (VAE factor × denoiser "
                                "downsampling). The source is resized to it, so pick the model's size.")
    adapter = get_adapter(pipe)
    if num_frames < 2:
        raise IEAdaptValueError(f"num_frames={num_frames}: a video edit needs at least 2 frames.")
    if adapter.name == "cogvideox":
        t = int(pipe.vae_scale_factor_temporal)
        if (num_frames - 1) % t:
            raise IEAdaptValueError(f"num_frames={num_frames}: CogVideoX's VAE takes 1 + {t}·k frames "
                                    f"(e.g. {1 + t * max(1, (num_frames - 1) // t)}).")
    limit = adapter.max_frames(getattr(pipe, adapter.denoiser_attr))
    if limit is not None and num_frames > limit:
        raise IEAdaptValueError(f"num_frames={num_frames} exceeds the motion module's maximum {limit}.")


def as_source(source, *, num_frames: int | None, height: int, width: int) -> tuple[Source, int]:
    """Check ``source`` (seed, Result, array, file path) → ``(Source, num_frames)``; video sources fitted."""
    from .tracing import Result

    if isinstance(source, (bool, np.bool_)):
        raise IEAdaptTypeError("source must be a seed (int), a Result, a video array or a file path; got a bool.")
    if isinstance(source, (int, np.integer)):
        return Source("generated", seed=int(source), origin=f"seed {int(source)}"), num_frames or 16
    if isinstance(source, Result):
        attrs = source.stats.attrs if source.stats is not None else {}
        if "seed" in attrs and "prompt" in attrs:
            return (Source("generated", seed=int(attrs["seed"]), origin=f"Result (seed {attrs['seed']})"),
                    num_frames or int(attrs.get("num_frames", len(source.video))))
        source = source.video
    if isinstance(source, (str, os.PathLike)):
        origin = str(source)
        video = read_video(source)
    else:
        origin = "array"
        video = check_video_array(source, "source")
    frames = num_frames or len(video)
    return Source("video", video=fit_video(video, height, width, frames), origin=origin), frames


def render_toy_clip(caption: str, seed: int = 0, off_path: float = 0.0) -> np.ndarray:
    """A clip of the embedded model's dataset (uint8 ``[16, 64, 64, 3]``) for a toy ``caption``.

    ``off_path`` shifts the shape that many pixels across its motion (both axes for ``still``; the sign
    alternates with the seed's parity) — a layout the model does not produce from the caption alone (its
    training jitter is at most ±6 px). The shipped default source is
    ``render_toy_clip(DEFAULT_SOURCE_PROMPT, seed=1, off_path=14.0)``.
    """
    from ..models.toy import dataset as d

    combo = d.parse_caption(caption)
    params = d.sample_params([combo], generator=torch.Generator().manual_seed(int(seed)))
    if off_path:
        vx, vy = d.MOTION_VECTORS[combo.motion]
        sign = 1.0 if int(seed) % 2 == 0 else -1.0
        if combo.motion == "still":
            params.cx, params.cy = params.cx + sign * off_path, params.cy - sign * off_path
        else:  # perpendicular to the motion
            params.cx = params.cx + sign * off_path * abs(vy)
            params.cy = params.cy + sign * off_path * abs(vx)
    clip = d.render(params)[0]
    return (clip.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


@torch.no_grad()
def encode_video(pipe, video: np.ndarray) -> torch.Tensor:
    """VAE-encode uint8 ``[f, H, W, 3]`` → the pipeline's latents ``[1, *latent_shape]`` (posterior mean, scaled).

    AnimateDiff: ``[1, C, f, h, w]``; CogVideoX: ``[1, f', C, h, w]`` (``f' = (f - 1)/4 + 1``).
    """
    adapter = get_adapter(pipe)
    vae = pipe.vae
    device, dtype = pipe._execution_device, vae.dtype
    x = torch.from_numpy(np.ascontiguousarray(video)).to(device).permute(0, 3, 1, 2).to(dtype) / 127.5 - 1.0
    if adapter.name == "cogvideox":
        z = vae.encode(x.permute(1, 0, 2, 3)[None]).latent_dist.mean * pipe.vae_scaling_factor_image
        return z.permute(0, 2, 1, 3, 4)
    chunks = [vae.encode(x[i:i + 16]).latent_dist.mean for i in range(0, len(x), 16)]
    z = torch.cat(chunks) * vae.config.scaling_factor  # [f, C, h, w]
    return z.permute(1, 0, 2, 3)[None]


__all__ = ["DEFAULT_SOURCE_PROMPT", "Source", "as_source", "check_size", "check_video_array", "default_source_path",
           "encode_video", "fit_video", "read_video", "render_toy_clip", "size_multiple"]
