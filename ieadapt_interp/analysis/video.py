"""Showing and saving generated videos: inline HTML players, side-by-side strips, files.

Videos are uint8 arrays ``[frame, H, W, 3]``. Inline players use H.264 mp4 (what browsers play) when
``imageio-ffmpeg`` is installed, otherwise an animated GIF (always available through Pillow).

>>> import numpy as np
>>> a = np.zeros((4, 16, 16, 3), np.uint8)
>>> side_by_side([a, a], gap=2).shape
(4, 16, 34, 3)
>>> encode_video(a, format="gif")[1]
'image/gif'
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from ..core.errors import IEAdaptValueError

VideoFormat = Literal["auto", "mp4", "gif"]


def as_uint8_video(video: np.ndarray, name: str = "video") -> np.ndarray:
    """``video`` converted to a uint8 ``[frame, H, W, 3]`` array for display; a clear error for a wrong shape.

    Floats in ``[0, 1]`` are scaled to ``[0, 255]``, other dtypes clipped to ``[0, 255]``. (The metrics'
    :func:`ieadapt_interp.metrics.video.check_video` converts nothing: it rejects every non-uint8 video.)

    >>> as_uint8_video(np.ones((1, 2, 2, 3)))[0, 0, 0].tolist()
    [255, 255, 255]
    """
    arr = np.asarray(video)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise IEAdaptValueError(
            f"{name} must be [frame, H, W, 3]; got shape {arr.shape}. "
            "Use Result.video (one sample) or Result.videos[i]."
        )
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = (np.clip(arr, 0, 1) * 255).round()
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def check_video(video: np.ndarray, name: str = "video") -> np.ndarray:
    """Deprecated alias (one release) of :func:`as_uint8_video` (it converts; the metrics' check_video rejects)."""
    import warnings

    warnings.warn("analysis.video.check_video is deprecated; use as_uint8_video.", DeprecationWarning, stacklevel=2)
    return as_uint8_video(video, name)


def has_h264() -> bool:
    """Whether ``imageio-ffmpeg`` (bundled ffmpeg with libx264) is importable."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def upscale(video: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling ``[f, H, W, 3]`` → ``[f, H·factor, W·factor, 3]`` (tiny videos stay crisp)."""
    if factor < 1:
        raise IEAdaptValueError(f"upscale factor must be ≥ 1; got {factor}.")
    video = as_uint8_video(video)
    return video if factor == 1 else video.repeat(factor, axis=1).repeat(factor, axis=2)


def side_by_side(videos: Sequence[np.ndarray] | np.ndarray, gap: int = 2, fill: int = 255) -> np.ndarray:
    """Concatenate videos left to right with a ``gap``-pixel separator: → ``[frame, H, ΣW + gaps, 3]``.

    ``videos``: a list of ``[frame, H, W, 3]`` or one ``[sample, frame, H, W, 3]`` array; all must share
    frame count and height.
    """
    items = [as_uint8_video(v, f"videos[{i}]") for i, v in enumerate(videos)]
    if not items:
        raise IEAdaptValueError("side_by_side needs at least one video.")
    frames, height = items[0].shape[:2]
    for i, v in enumerate(items):
        if v.shape[:2] != (frames, height):
            raise IEAdaptValueError(f"videos[{i}] has (frames, H) = {v.shape[:2]}, expected {(frames, height)}.")
    spacer = np.full((frames, height, gap, 3), fill, np.uint8)
    parts: list[np.ndarray] = []
    for i, v in enumerate(items):
        parts += [spacer, v] if i and gap else [v]
    return np.concatenate(parts, axis=2)


def _gif_bytes(video: np.ndarray, fps: float) -> bytes:
    from PIL import Image

    frames = [Image.fromarray(f) for f in video]
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )
    return buffer.getvalue()


def _mp4_bytes(video: np.ndarray, fps: float) -> bytes:
    import imageio_ffmpeg

    # yuv420p needs even sides: pad by one pixel where odd.
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    if pad_h or pad_w:
        video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    handle, path = tempfile.mkstemp(suffix=".mp4")
    os.close(handle)
    try:
        writer = imageio_ffmpeg.write_frames(
            path,
            (video.shape[2], video.shape[1]),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            output_params=["-movflags", "+faststart"],
        )
        writer.send(None)
        for frame in video:
            writer.send(np.ascontiguousarray(frame).tobytes())
        writer.close()
        return Path(path).read_bytes()
    finally:
        os.unlink(path)


def encode_video(video: np.ndarray, fps: float = 8.0, format: VideoFormat = "auto") -> tuple[bytes, str]:
    """Encode ``[frame, H, W, 3]`` → ``(bytes, mime type)``: H.264 mp4 or GIF.

    ``format="auto"`` picks mp4 when ``imageio-ffmpeg`` is installed, GIF otherwise; ``"mp4"`` without
    it raises ``ImportError`` naming the package.
    """
    video = as_uint8_video(video)
    if fps <= 0:
        raise IEAdaptValueError(f"fps must be > 0; got {fps}.")
    if format == "auto":
        format = "mp4" if has_h264() else "gif"
    if format == "mp4":
        if not has_h264():
            raise ImportError(
                "H.264 mp4 needs the `imageio-ffmpeg` package (pip install imageio-ffmpeg); "
                "or use format='gif'."
            )
        return _mp4_bytes(video, fps), "video/mp4"
    if format == "gif":
        return _gif_bytes(video, fps), "image/gif"
    raise IEAdaptValueError(f"format must be 'auto', 'mp4' or 'gif'; got {format!r}.")


def video_html(
    video: np.ndarray,
    fps: float = 8.0,
    scale: int = 1,
    format: VideoFormat = "auto",
    label: str | None = None,
) -> str:
    """An HTML snippet playing ``video`` inline (``<video controls loop>`` or a GIF ``<img>``)."""
    data, mime = encode_video(upscale(video, scale), fps, format)
    src = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    if mime == "video/mp4":
        player = f'<video src="{src}" controls loop autoplay muted playsinline></video>'
    else:
        player = f'<img src="{src}"/>'
    caption = f"<figcaption>{html.escape(label)}</figcaption>" if label else ""
    return f'<figure style="display:inline-block;margin:4px">{player}{caption}</figure>'


def show_video(
    videos: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    fps: float = 8.0,
    scale: int | None = None,
    format: VideoFormat = "auto",
):
    """Inline players for one video or several side by side → ``IPython.display.HTML``.

    ``scale=None`` upscales so the shorter side is at least 128 px.

    >>> import numpy as np
    >>> show_video(np.zeros((2, 16, 16, 3), np.uint8), format="gif")  # doctest: +ELLIPSIS
    <IPython.core.display.HTML object>
    """
    from IPython.display import HTML

    arr = np.asarray(videos) if not isinstance(videos, (list, tuple)) else None
    items = [videos] if arr is not None and arr.ndim == 4 else list(videos)
    labels = list(labels) if labels is not None else [None] * len(items)
    if len(labels) != len(items):
        raise IEAdaptValueError(f"{len(labels)} labels for {len(items)} videos.")
    parts = []
    for video, label in zip(items, labels):
        video = as_uint8_video(video)
        factor = scale if scale is not None else max(1, int(np.ceil(128 / min(video.shape[1:3]))))
        parts.append(video_html(video, fps, factor, format, label))
    return HTML("<div>" + "".join(parts) + "</div>")


def save_video(video: np.ndarray, path: str | os.PathLike, fps: float = 8.0, scale: int = 1) -> Path:
    """Write ``video`` to ``path``: ``.mp4`` (H.264, needs imageio-ffmpeg) or ``.gif``. Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise IEAdaptValueError(f"save_video writes .mp4 or .gif; got {path.name!r}.")
    data, _ = encode_video(upscale(video, scale), fps, "mp4" if suffix == ".mp4" else "gif")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
