"""``ds.ieadapt``: the paper's per-layer summaries on a stats Dataset (an xarray accessor).

>>> import ieadapt_interp as ia
>>> pipe = ia.tiny_pipeline()
>>> ds = ia.trace(pipe, "a red circle", num_frames=4, height=16, width=16, num_inference_steps=2).stats
>>> ds.ieadapt.layer_entropy().dims
('layer',)
>>> ds.ieadapt.registry(kind="spatial") in set(ds.layer.values)
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from .errors import IEAdaptValueError

_REDUCE_DIMS = ("step", "head", "frame", "sample", "branch")


@xr.register_dataset_accessor("ieadapt")
class IEAdaptAccessor:
    """Per-layer summaries of a :func:`ieadapt_interp.trace` stats Dataset."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def layer_entropy(self, kind: str | None = None) -> xr.DataArray:
        """Mean normalised entropy ``H̄(A_l)`` (percent) per layer, over steps, heads and frames."""
        pct = self._ds["entropy_pct"]
        if kind is not None:
            pct = pct.sel(layer=self._ds["kind"] == kind)
            if pct.sizes["layer"] == 0:
                raise IEAdaptValueError(f"No {kind!r} layers in these stats; kinds present: "
                                 f"{sorted(set(self._ds['kind'].values))}.")
        return pct.mean([d for d in _REDUCE_DIMS if d in pct.dims])

    def registry(self, kind: str | None = None) -> str:
        """``l* = argmax_l H̄(A_l)`` (paper Eq. 3): the name of the highest-entropy layer."""
        mean = self.layer_entropy(kind)
        return str(mean["layer"].values[int(np.nanargmax(mean.values))])

    def low_entropy_layers(self, ratio: float = 0.5, kind: str | None = None) -> list[str]:
        """Layers whose mean entropy is among the lowest ``ratio`` fraction (IE-Adapt editing's ``L_edit``)."""
        if not 0.0 < ratio <= 1.0:
            raise IEAdaptValueError(f"ratio must lie in (0, 1]; got {ratio}.")
        mean = self.layer_entropy(kind).dropna("layer")
        count = max(1, int(round(ratio * mean.sizes["layer"])))
        order = np.argsort(mean.values, kind="stable")[:count]
        return [str(mean["layer"].values[i]) for i in order]

    def energy_violations(self) -> xr.DataArray:
        """Per layer, the fraction of (step, head, frame) cells violating ``E(UV) ≤ E(AV) ≤ E(IV)``."""
        ds = self._ds
        defined = np.isfinite(ds["energy_identity"])
        bad = (ds["energy"] < ds["energy_uniform"] * (1 - 1e-6)) | (
            (ds["energy"] > ds["energy_identity"] * (1 + 1e-6)) & defined)
        dims = [d for d in _REDUCE_DIMS if d in bad.dims]
        return bad.where(np.isfinite(ds["energy"])).mean(dims)

    def layer_summary(self) -> pd.DataFrame:
        """One row per layer: kind, block, index, mean entropy %, energy-bound violation rate."""
        ds = self._ds
        return pd.DataFrame({
            "kind": ds["kind"].values, "block": ds["block"].values, "index": ds["index"].values,
            "entropy_pct": self.layer_entropy().values, "energy_violation_rate": self.energy_violations().values,
        }, index=pd.Index(ds["layer"].values, name="layer"))

    def plot_entropy(self, kinds: tuple[str, ...] | None = None):
        """Heatmap of entropy % (layer index × step), one panel per kind. Returns the Figure."""
        import matplotlib.pyplot as plt

        ds = self._ds
        kinds = kinds or tuple(k for k in ("spatial", "temporal", "cross", "joint") if k in set(ds["kind"].values))
        fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False)
        for ax, kind in zip(axes[0], kinds):
            pct = ds["entropy_pct"].sel(layer=ds["kind"] == kind)
            grid = pct.mean([d for d in ("head", "frame", "sample", "branch") if d in pct.dims])
            image = ax.imshow(grid.transpose("layer", "step").values, aspect="auto", vmin=0, vmax=100, cmap="magma")
            ax.set_title(f"{kind} attention: entropy % of max")
            ax.set_xlabel("denoising step")
            ax.set_ylabel(f"{kind} layer index")
            ax.set_yticks(range(grid.sizes["layer"]), [str(i) for i in grid["index"].values], fontsize=6)
            fig.colorbar(image, ax=ax, fraction=0.046)
        fig.tight_layout()
        return fig
