"""Writing one sweep job's video: H.264 mp4 when ``imageio-ffmpeg`` is installed, else an animated GIF.

>>> import numpy as np
>>> write_video("/tmp/demo", np.zeros((4, 16, 16, 3), np.uint8)).suffix in (".mp4", ".gif")
True
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np


def has_ffmpeg() -> bool:
    """True when ``imageio-ffmpeg`` (H.264 mp4 writing) is importable."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def write_video(stem: str | os.PathLike, video: np.ndarray, fps: int = 8) -> Path:
    """Write uint8 ``[frame, H, W, 3]`` to ``stem.mp4`` (H.264) or ``stem.gif``; atomic (temp + rename).

    Returns the written path. mp4 needs ``pip install imageio-ffmpeg``; frames smaller than 16 px or with
    odd sides fall back to GIF (yuv420p needs even sides).
    """
    import imageio.v3 as iio

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    frames = np.ascontiguousarray(video, dtype=np.uint8)
    mp4 = has_ffmpeg() and frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0
    target = stem.with_name(stem.name + (".mp4" if mp4 else ".gif"))
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}{target.suffix}")
    if mp4:
        _write_mp4(tmp, frames, fps)
    else:
        iio.imwrite(tmp, frames, duration=int(1000 / fps), loop=0)
    os.replace(tmp, target)
    return target


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    import imageio.v2 as iio2

    with iio2.get_writer(
        str(path),
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        macro_block_size=1,
        pixelformat="yuv420p",
    ) as writer:
        for frame in frames:
            writer.append_data(frame)
