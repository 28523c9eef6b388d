"""Edit checks on the embedded toy model: did the edit change what the target caption asks, and keep the rest?

An edit goes from a source caption to a target caption of the toy grammar
(:func:`ieadapt_interp.models.toy.dataset.parse_caption`) that differ in some attributes (colour, shape,
background, motion). Measured with :mod:`ieadapt_interp.models.toy.attributes` (pure image processing):

* :func:`edit_success` — every attribute the captions change is, in the edited video, the target's;
* :func:`attributes_kept` — every attribute the captions share (colour, shape, background) is measured the same
  in the edited video as in the source video;
* :func:`trajectory_distance` — mean distance (px) between the shape's centroids in the edited and the source
  video, frame by frame;
* :func:`edit_preservation` — ``attributes_kept`` and a trajectory within :data:`TRAJECTORY_TOLERANCE` px
  (scaled to the frame size: 4 px at 64 px).

All take ``(video, reference, source_prompt, target_prompt)`` with ``reference`` the source video, uint8
``[frame, H, W, 3]``, and return floats (1.0 / 0.0 for the checks, averaged over pairs they become rates).

>>> import numpy as np
>>> from ieadapt_interp.models.toy.dataset import render_captions
>>> src = "a red circle moving left on a black background"
>>> clip = (render_captions([src], seed=0)[0].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
>>> edit_success(clip, clip, src, src.replace("red", "blue")), edit_preservation(clip, clip, src, src)
(0.0, 1.0)
"""

from __future__ import annotations

import numpy as np

from .video import check_pair, check_video
from ..core.errors import IEAdaptValueError

#: centroid-trajectory tolerance of :func:`edit_preservation`, in pixels at 64 px frames (scaled with size)
TRAJECTORY_TOLERANCE = 4.0
#: attributes whose preservation :func:`attributes_kept` checks (motion is checked by the trajectory)
KEPT = ("colour", "shape", "background")
ATTRIBUTES = ("colour", "shape", "motion", "background")


def _captions(source_prompt: str, target_prompt: str):
    from ..models.toy.dataset import parse_caption

    try:
        return parse_caption(source_prompt), parse_caption(target_prompt)
    except ValueError as error:
        raise IEAdaptValueError(f"the edit checks need captions of the embedded model's grammar ('a red circle moving "
                         f"left on a black background'): {error}") from None


def changed_attributes(source_prompt: str, target_prompt: str) -> list[str]:
    """Attributes (``colour``, ``shape``, ``motion``, ``background``) in which the two captions differ.

    >>> changed_attributes("a red circle moving left on a black background",
    ...                    "a red square moving left on a white background")
    ['shape', 'background']
    """
    a, b = _captions(source_prompt, target_prompt)
    return [name for name in ATTRIBUTES if getattr(a, name) != getattr(b, name)]


def measure(video: np.ndarray) -> dict[str, str | None]:
    """The four attributes measured on a video: ``{"colour", "shape", "motion", "background"}``."""
    from ..models.toy.attributes import background_name, dominant_colour, motion_direction, shape_name

    return {"colour": dominant_colour(video), "shape": shape_name(video), "motion": motion_direction(video),
            "background": background_name(video)}


def edit_success(video: np.ndarray, reference: np.ndarray, source_prompt: str, target_prompt: str) -> float:
    """1.0 if every attribute the captions change is measured as the target caption's in ``video``, else 0.0
    (0.0 also when the captions change nothing).

    Source: this project's edit checks (paper Sec. 5.3, edit success and structure preservation), measured
    with the embedded model's attribute checks (:mod:`ieadapt_interp.models.toy.attributes`)."""
    check_video(video, min_frames=2)
    check_pair(video, reference)
    changed = changed_attributes(source_prompt, target_prompt)
    if not changed:
        return 0.0
    want = _captions(source_prompt, target_prompt)[1]
    got = measure(video)
    return float(all(got[name] == getattr(want, name) for name in changed))


def attributes_kept(video: np.ndarray, reference: np.ndarray, source_prompt: str, target_prompt: str) -> float:
    """1.0 if the attributes the captions share (of colour, shape, background) measure the same in ``video`` and
    in the source ``reference``, else 0.0.

    Source: this project's edit checks (paper Sec. 5.3, edit success and structure preservation), measured
    with the embedded model's attribute checks (:mod:`ieadapt_interp.models.toy.attributes`)."""
    check_video(video, min_frames=2)
    check_pair(video, reference)
    changed = set(changed_attributes(source_prompt, target_prompt))
    kept = [name for name in KEPT if name not in changed]
    got, ref = measure(video), measure(reference)
    return float(all(got[name] == ref[name] for name in kept))


def trajectory_distance(video: np.ndarray, reference: np.ndarray, source_prompt: str | None = None,
                        target_prompt: str | None = None) -> float:
    """Mean Euclidean distance (px) between the largest blob's centroids of ``video`` and ``reference``, over
    the frames where both have one; ``inf`` when no frame has both. Lower = the motion path is kept.

    Source: this project's edit checks (paper Sec. 5.3, edit success and structure preservation), measured
    with the embedded model's attribute checks (:mod:`ieadapt_interp.models.toy.attributes`)."""
    from ..models.toy.attributes import centroids

    check_video(video, min_frames=2)
    check_pair(video, reference)
    a, b = centroids(video), centroids(reference)
    d = np.hypot(*(a - b).T)
    ok = np.isfinite(d)
    return float(d[ok].mean()) if ok.any() else float("inf")


def edit_preservation(video: np.ndarray, reference: np.ndarray, source_prompt: str, target_prompt: str) -> float:
    """1.0 if :func:`attributes_kept` and the trajectory stays within :data:`TRAJECTORY_TOLERANCE` px (scaled by
    ``min(H, W) / 64``) of the source's, else 0.0.

    Source: this project's edit checks (paper Sec. 5.3, edit success and structure preservation), measured
    with the embedded model's attribute checks (:mod:`ieadapt_interp.models.toy.attributes`)."""
    tolerance = TRAJECTORY_TOLERANCE * min(video.shape[1:3]) / 64.0
    kept = attributes_kept(video, reference, source_prompt, target_prompt)
    return float(kept == 1.0 and trajectory_distance(video, reference) <= tolerance)


#: the columns of the paper's Tables 3 and 5 (CLIP score, CLIP directional similarity, motion smoothness, subject
#: consistency; NaN without their weights), then structure and, on toy captions, the edit checks
TABLE_METRICS = {"CS": "clip_score", "CDS": "clip_directional_similarity", "MS": "motion_smoothness",
                 "SC": "subject_consistency", "SSIM": "ssim", "LPIPS": "lpips", "success": "edit_success",
                 "preserved": "edit_preservation", "path px": "trajectory_distance"}


def editing_table(results, reference=None, columns: dict[str, str] | None = None, device: str = "cpu"):
    """One row per edit, shaped like the paper's Tables 3 / 5: ``CS, CDS, MS, SC`` then ``SSIM, LPIPS`` to the
    source, and on the embedded model's captions ``success``, ``preserved``, ``path px``.

    ``results``: edit results (``.video``, ``.source_video``, ``.edit.label``, ``.source_prompt``,
    ``.target_prompt``); ``reference``: the source video to compare with (default: each result's
    ``source_video``; pass the real input video for inverted sources). Metrics whose weights are missing, or that
    cannot take the video's size, are NaN;
    the edit checks are NaN for captions outside the toy grammar. Returns a DataFrame indexed by method label.
    """
    import pandas as pd

    from .registry import compute_metrics

    columns = dict(columns or TABLE_METRICS)
    rows = {}
    for r in results:
        ref = reference if reference is not None else r.source_video
        names = list(columns.values())
        try:
            _captions(r.source_prompt, r.target_prompt)
        except ValueError:
            names = [n for n in names if n not in ("edit_success", "edit_preservation", "trajectory_distance")]
        values = {}
        for name in names:  # one at a time: a size limit (LPIPS ≥ 32 px, AMT-S > 112 px) gives NaN, not an error
            try:
                values.update(compute_metrics([name], r.video, reference=ref, prompt=r.target_prompt,
                                              source_prompt=r.source_prompt, target_prompt=r.target_prompt,
                                              on_missing="nan", device=device))
            except ValueError:
                values[name] = float("nan")
        rows[r.edit.label] = {col: values.get(name, float("nan")) for col, name in columns.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


__all__ = ["ATTRIBUTES", "KEPT", "TRAJECTORY_TOLERANCE", "attributes_kept", "changed_attributes", "edit_preservation",
           "edit_success", "editing_table", "measure", "trajectory_distance", "TABLE_METRICS"]
