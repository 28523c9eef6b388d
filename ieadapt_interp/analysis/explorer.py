"""Interactive explorer of one traced run (ipywidgets), with a static fallback for headless runs.

:class:`Explorer` shows, for the step / layer / head / frame chosen with sliders, the entropy heatmap
(layer × step, selected cell outlined) and the pooled attention map of the selected layer, plus the
run's videos (original vs perturbed, side by side) with a Play button and a frame slider.
:func:`static_views` returns the same views as figures — what papermill / CI should save.

A run with several videos comes from ``ia.trace(..., variants=[None, ia.identity(layer)])``; the
heatmap averages every sample and branch the statistics recorded (the default ``rows`` of
:mod:`ieadapt_interp.core.accessor`); the maps show sample 0 (the first variant).

>>> import ieadapt_interp as ia
>>> pipe = ia.tiny_pipeline()
>>> run = ia.trace(pipe, "a red circle", num_frames=4, num_inference_steps=2, height=16, width=16,
...                maps=ia.MapRequest(layers="temporal", size=(8, 8)))  # doctest: +SKIP
>>> Explorer(run, labels=["original"])                                     # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import xarray as xr

from . import figures
from .display import FigureSet
from ..core.accessor import select_rows
from .video import side_by_side, upscale
from ..core.errors import IEAdaptValueError

MEAN = -1  #: slider value meaning "average over this dimension"


def _labels(videos: np.ndarray, labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return ["original"] + [f"variant {i}" for i in range(1, len(videos))]
    labels = list(labels)
    if len(labels) != len(videos):
        raise IEAdaptValueError(
            f"{len(labels)} labels for {len(videos)} videos (Result.videos has one per variant)."
        )
    return labels


def _default_layer(stats: xr.Dataset, maps: xr.DataTree | None, kinds: Sequence[str] | None) -> str:
    if maps is not None and len(maps.children):
        return next(iter(maps.children))
    names = [n for n, k in zip(stats["layer"].values, stats["kind"].values) if kinds is None or k in kinds]
    if not names:
        raise IEAdaptValueError(f"No layers of kind {list(kinds) if kinds else 'any'} in the run's stats.")
    return str(names[0])


def static_views(
    result,
    *,
    step: int | None = None,
    layer: str | None = None,
    head: int | None = None,
    frame: int | None = None,
    labels: Sequence[str] | None = None,
    kinds: Sequence[str] | None = ("spatial", "temporal"),
) -> FigureSet:
    """The explorer's views as figures: ``entropy_heatmap``, ``attention_map`` (when the run has maps for
    ``layer``) and ``video_strip``, as a ``{name: Figure}`` dict that a notebook shows as images.

    ``result``: an :class:`ieadapt_interp.Result` with ``stats`` (trace). ``step`` defaults to the last
    step, ``layer`` to the first layer with a materialised map; ``head`` / ``frame`` ``None`` = mean.
    """
    if result.stats is None:
        raise IEAdaptValueError("The run has no statistics: use ieadapt_interp.trace (or generate(capture=True)).")
    stats = select_rows(result.stats)  # every sample and branch recorded, pooled (the summaries' default)
    step = int(stats["step"].values[-1]) if step is None else step
    layer = layer or _default_layer(stats, result.maps, kinds)
    views = FigureSet(
        entropy_heatmap=figures.entropy_heatmap(stats, kinds=kinds, head=head, frame=frame, mark=(step, layer))
    )
    if result.maps is not None and layer in result.maps.children:
        map_steps = list(result.maps[layer]["attention"]["step"].values)
        views["attention_map"] = figures.attention_map(
            result.maps, layer, step=step if step in map_steps else int(map_steps[-1]), head=head, frame=frame
        )
    views["video_strip"] = figures.video_strip(result.videos, _labels(result.videos, labels))
    return views


def last_layer(pipe, kind: str = "spatial") -> str:
    """Name of the last layer of ``kind`` in forward order (the paper's most sensitive spatial layer)."""
    from ..core.adapters import attention_layers

    table = attention_layers(pipe)
    names = table.loc[table["kind"] == kind, "name"]
    if names.empty:
        raise IEAdaptValueError(
            f"The model has no {kind} attention layer; kinds present: {sorted(set(table['kind']))}."
        )
    return str(names.iloc[-1])


def compare_run(
    pipe,
    prompt: str,
    *,
    layer: str | None = None,
    kind: str = "spatial",
    replacements: Sequence[str] = ("identity", "uniform"),
    map_kinds: Sequence[str] | None = ("spatial", "temporal"),
    map_layers=None,
    map_size: int = 16,
    map_steps: Sequence[int] | None = None,
    **generation,
):
    """Trace the original and ``layer`` ← I / U in one batched run → ``(Result, labels)``.

    ``layer=None`` picks the last layer of ``kind``. ``result.videos`` is ``[1 + len(replacements), frame,
    H, W, 3]`` (original first); ``stats`` and ``maps`` (pooled to ``map_size²``, layers of ``map_kinds`` or
    the layer spec ``map_layers``, ``map_steps`` or all; none when both are ``None``) describe the original. ``generation`` goes to :func:`ieadapt_interp.trace`.
    """
    from ..core.maps import MapRequest
    from ..methods.perturbation import Layers, Perturbation
    from ..methods.tracing import trace

    layer = layer or last_layer(pipe, kind)
    variants = [None] + [Perturbation(Layers(names=(layer,)), rep) for rep in replacements]
    spec = map_layers if map_layers is not None else (Layers(kinds=tuple(map_kinds)) if map_kinds else None)
    maps = (
        None
        if spec is None
        else MapRequest(
            layers=spec, size=(map_size, map_size), steps=None if map_steps is None else tuple(map_steps)
        )
    )
    result = trace(pipe, prompt, variants=variants, maps=maps, **generation)
    short = layer.replace("transformer_blocks.0.", "")
    labels = ["original"] + [f"{figures.REPLACEMENT_LABELS.get(rep, rep)} @ {short}" for rep in replacements]
    return result, labels


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


class Explorer:
    """ipywidgets explorer of a traced run (display it as a notebook cell's value).

    Widgets: ``step``, ``layer`` (selection slider over the layers of ``kinds``), ``head`` and ``frame``
    sliders (``-1`` = mean), the entropy heatmap and attention map below them, then the videos side by
    side with ``play`` and ``video_frame``. :meth:`render` redraws (called on every slider change).

    Parameters
    ----------
    result
        :class:`ieadapt_interp.Result` from :func:`ieadapt_interp.trace` (``maps=`` optional).
    labels
        One label per video in ``result.videos``.
    fps, scale
        Playback speed and nearest-neighbour upscaling of the video frames (``None``: ≥ 192 px tall).
    """

    def __init__(
        self,
        result,
        *,
        labels: Sequence[str] | None = None,
        kinds: Sequence[str] | None = ("spatial", "temporal"),
        fps: float = 8.0,
        scale: int | None = None,
    ):
        import ipywidgets as w

        if result.stats is None:
            raise IEAdaptValueError(
                "The run has no statistics: use ieadapt_interp.trace (or generate(capture=True))."
            )
        self.result = result
        self.stats = select_rows(result.stats)
        self.maps = result.maps
        self.kinds = kinds
        self.labels = _labels(result.videos, labels)
        kind_ok = [kinds is None or k in kinds for k in self.stats["kind"].values]
        options = [
            (f"{figures.short_label(k, i)}  {n}", str(n))
            for n, k, i, ok in zip(
                self.stats["layer"].values, self.stats["kind"].values, self.stats["index"].values, kind_ok
            )
            if ok
        ]
        steps = [int(s) for s in self.stats["step"].values]
        self.step = w.SelectionSlider(options=steps, value=steps[-1], description="step")
        self.layer = w.SelectionSlider(
            options=options,
            value=_default_layer(self.stats, self.maps, kinds),
            description="layer",
            layout=w.Layout(width="95%"),
        )
        self.head = w.IntSlider(
            min=MEAN, max=self.stats.sizes.get("head", 1) - 1, value=MEAN, description="head (-1 mean)"
        )
        self.frame = w.IntSlider(
            min=MEAN, max=self.stats.sizes.get("frame", 1) - 1, value=MEAN, description="frame (-1 mean)"
        )
        self.heatmap_out, self.map_out = w.Output(), w.Output()
        videos = result.videos
        height = videos.shape[2]
        self._scale = scale if scale is not None else max(1, int(np.ceil(192 / height)))
        self._strip = side_by_side(list(videos))
        n_frames = videos.shape[1]
        self.play = w.Play(min=0, max=n_frames - 1, value=0, interval=int(1000 / fps), description="play")
        self.video_frame = w.IntSlider(min=0, max=n_frames - 1, value=0, description="video frame")
        w.jslink((self.play, "value"), (self.video_frame, "value"))
        self.image = w.Image(value=self._frame_png(0), format="png")
        self.video_labels = w.HTML(" | ".join(self.labels))
        for control in (self.step, self.layer, self.head, self.frame):
            control.observe(lambda _change: self.render(), names="value")
        self.video_frame.observe(
            lambda change: setattr(self.image, "value", self._frame_png(change["new"])), names="value"
        )
        self.widget = w.VBox(
            [
                w.HBox([self.step, self.head, self.frame]),
                self.layer,
                w.HBox([self.heatmap_out, self.map_out]),
                self.video_labels,
                self.image,
                w.HBox([self.play, self.video_frame]),
            ]
        )
        self.render()

    def _frame_png(self, index: int) -> bytes:
        return _png(upscale(self._strip[index : index + 1], self._scale)[0])

    def selection(self) -> dict:
        """Current ``{step, layer, head, frame}`` (``None`` = mean)."""
        return {
            "step": self.step.value,
            "layer": self.layer.value,
            "head": None if self.head.value == MEAN else self.head.value,
            "frame": None if self.frame.value == MEAN else self.frame.value,
        }

    def views(self) -> dict:
        """The figures for the current selection (same as :func:`static_views`)."""
        return static_views(self.result, labels=self.labels, kinds=self.kinds, **self.selection())

    def render(self) -> None:
        """Redraw heatmap and attention map for the current selection."""
        from IPython.display import display

        sel = self.selection()
        heatmap = figures.entropy_heatmap(
            self.stats,
            kinds=self.kinds,
            head=sel["head"],
            frame=sel["frame"],
            mark=(sel["step"], sel["layer"]),
        )
        self.heatmap_out.clear_output(wait=True)
        with self.heatmap_out:
            display(heatmap)
        self.map_out.clear_output(wait=True)
        with self.map_out:
            if self.maps is not None and sel["layer"] in self.maps.children:
                steps = list(self.maps[sel["layer"]]["attention"]["step"].values)
                if sel["step"] in steps:
                    display(
                        figures.attention_map(
                            self.maps, sel["layer"], step=sel["step"], head=sel["head"], frame=sel["frame"]
                        )
                    )
                else:
                    print(f"no map materialised at step {sel['step']} (steps with maps: {steps})")
            else:
                print(
                    "no attention map materialised for this layer "
                    "(trace with maps=ia.MapRequest(layers=...) to add it)"
                )

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def explore(result, *, interactive: bool = True, out_dir=None, **kwargs):
    """The explorer for notebooks: the widget, or its static views when ``interactive=False``.

    Headless runs (papermill, CI) should pass ``interactive=False``: executing widget-creating cells
    headless can block nbclient (jupyter/nbclient#312). Static mode returns :func:`static_views`'
    figures (``{name: Figure}``). With ``out_dir`` the static views are saved as ``explorer_<name>.png``
    in both modes. ``kwargs`` go to :class:`Explorer` / :func:`static_views` (``labels``, ``kinds``).
    """
    views = static_views(result, **kwargs) if (out_dir is not None or not interactive) else FigureSet()
    if out_dir is not None:
        for name, fig in views.items():
            figures.save_figure(fig, out_dir, f"explorer_{name}")
    return Explorer(result, **kwargs) if interactive else views
