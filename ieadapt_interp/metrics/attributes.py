"""Attribute checks of the embedded toy model as metrics: does the video show what its caption says?

The toy model's captions follow one grammar, ``"a <colour> <shape> moving <left|right|up|down> on a <colour>
background"`` or ``"a <colour> <shape> staying still on a <colour> background"``
(:func:`ieadapt_interp.models.toy.dataset.parse_caption`). Each metric reads the video with the measurements of
:mod:`ieadapt_interp.models.toy.attributes` (background-subtracted foreground, dominant colour, contour shape, centroid
trajectory, connected components) and returns 1.0 when it matches the caption, else 0.0 — averaged over prompts
and seeds in a sweep they become accuracies. ``connectedness`` needs no caption: the fraction of frames with
exactly one foreground blob.

>>> import numpy as np
>>> connectedness(np.zeros((4, 32, 32, 3), np.uint8))      # no foreground at all
0.0
"""

from __future__ import annotations

import numpy as np

from .video import check_video
from ..core.errors import IEAdaptValueError


def check_caption(prompt: str) -> None:
    """Raise ``ValueError`` unless ``prompt`` follows the embedded model's caption grammar."""
    from ..models.toy.dataset import parse_caption

    try:
        parse_caption(prompt)
    except ValueError:
        raise IEAdaptValueError(
            f"prompt {prompt!r} is outside the embedded model's caption grammar ('a red circle moving left on a "
            "white background', 'a blue square staying still on a black background'); the attribute metrics "
            "(colour_match, shape_match, direction_match) apply to it only."
        ) from None


def _caption(prompt: str):
    from ..models.toy.dataset import parse_caption

    check_caption(prompt)
    return parse_caption(prompt)


def colour_match(video: np.ndarray, prompt: str) -> float:
    """1.0 if the dominant foreground colour is the caption's colour, else 0.0. ``video``: uint8 ``(T, H, W, 3)``.

    Source: :func:`ieadapt_interp.models.toy.attributes.dominant_colour` (nearest palette colour of the median
    foreground pixel over frames).
    """
    from ..models.toy.attributes import dominant_colour

    check_video(video)
    return float(dominant_colour(video) == _caption(prompt).colour)


def shape_match(video: np.ndarray, prompt: str) -> float:
    """1.0 if the majority contour shape over frames is the caption's shape, else 0.0.

    Source: :func:`ieadapt_interp.models.toy.attributes.shape_name` (polygon approximation of the largest foreground
    contour: 3 corners triangle, 4 square, round otherwise; majority vote over frames).
    """
    from ..models.toy.attributes import shape_name

    check_video(video)
    return float(shape_name(video) == _caption(prompt).shape)


def direction_match(video: np.ndarray, prompt: str) -> float:
    """1.0 if the object's net motion (least-squares line through the centroids) goes the caption's way.

    ``still`` captions match when the displacement is below the attribute module's threshold. Source:
    :func:`ieadapt_interp.models.toy.attributes.motion_direction`. ``video``: uint8 ``(T, H, W, 3)``, T ≥ 2.
    """
    from ..models.toy.attributes import motion_direction

    check_video(video, min_frames=2)
    return float(motion_direction(video) == _caption(prompt).motion)


def connectedness(video: np.ndarray) -> float:
    """Fraction of frames whose foreground is exactly one connected blob (the toy clips always show one).

    Source: :func:`ieadapt_interp.models.toy.attributes.one_blob_fraction` (8-connected components above a minimum
    area). ``video``: uint8 ``(T, H, W, 3)``; returns a float in [0, 1].
    """
    from ..models.toy.attributes import one_blob_fraction

    check_video(video)
    return float(one_blob_fraction(video))
