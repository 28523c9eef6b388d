"""Inline display of the package's figures in Jupyter (JupyterLab, classic notebook, papermill).

The figures of :mod:`ieadapt_interp.analysis.figures` are ``matplotlib.figure.Figure`` objects built
without pyplot (no global state), so Jupyter's inline backend — which only hooks pyplot figures — would
show them as ``<Figure size … with 2 Axes>`` text. :func:`register_figure_display` registers an
``image/png`` formatter for ``Figure`` in the running IPython kernel; it runs once when
:mod:`ieadapt_interp.analysis.figures` is imported, and does nothing outside IPython. From then on a figure
returned by a cell, shown with ``IPython.display.display`` or inside an ``ipywidgets.Output`` (the
explorer) is a PNG image in the notebook, also in notebooks executed headless by papermill.

:class:`FigureSet` is a ``dict`` ``{name: Figure}`` that displays each figure under its name (the static
explorer views).

>>> from matplotlib.figure import Figure
>>> figure_png(Figure(figsize=(1, 1)))[:8]
b'\\x89PNG\\r\\n\\x1a\\n'
>>> register_figure_display()  # outside IPython: nothing to register
False
"""

from __future__ import annotations

import io
import sys

from matplotlib.figure import Figure


def figure_png(fig: Figure, dpi: float | None = None) -> bytes:
    """PNG bytes of ``fig`` (tight bounding box; ``dpi`` defaults to the figure's own)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi, bbox_inches="tight")
    return buffer.getvalue()


def register_figure_display(shell=None) -> bool:
    """Show ``matplotlib.figure.Figure`` as ``image/png`` in the IPython ``shell`` (default: the running
    one). Returns ``True`` when a formatter was registered, ``False`` outside IPython.
    """
    if shell is None:
        ipython = sys.modules.get("IPython")  # no kernel without IPython imported: don't import it here
        shell = ipython.get_ipython() if ipython is not None else None
    formatters = getattr(getattr(shell, "display_formatter", None), "formatters", None)
    if not formatters or "image/png" not in formatters:
        return False
    formatters["image/png"].for_type(Figure, figure_png)
    return True


class FigureSet(dict):
    """``{name: Figure}`` that Jupyter displays as one titled image per figure."""

    def _ipython_display_(self) -> None:
        from IPython.display import Markdown, display

        for name, fig in self.items():
            display(Markdown(f"**{name}**"), fig)
