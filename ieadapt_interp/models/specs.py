"""Model names used by notebooks, scripts and the CLI → a loaded pipeline.

===================  ==========================================================
name                 pipeline
===================  ==========================================================
``"default"``        the embedded toy model, :func:`ieadapt_interp.load_pipeline`
``"tiny-animatediff"``  :func:`ieadapt_interp.tiny_pipeline` ``("animatediff")``
``"tiny-cogvideox"``    :func:`ieadapt_interp.tiny_pipeline` ``("cogvideox")``
a local folder       a saved toy-style pipeline (``model_index.json`` with a
                     ``UNetMotionModel``) or :func:`ieadapt_interp.load_pipeline`
===================  ==========================================================

>>> pipe = resolve_model("tiny-animatediff")
>>> type(pipe).__name__
'AnimateDiffPipeline'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from ..core.errors import IEAdaptValueError

MODEL_NAMES: tuple[str, ...] = ("default", "tiny-animatediff", "tiny-cogvideox")


def resolve_model(name: str | os.PathLike = "default", **load_kwargs):
    """Return the pipeline a model name denotes (see the module table).

    ``load_kwargs`` go to :func:`ieadapt_interp.load_pipeline` (``device=``, ``dtype=``,
    ``motion_adapter=``). Raises ``ValueError`` for a name that is neither known nor a folder.
    """
    from ..models.pipelines import load_pipeline, tiny_pipeline

    text = str(name)
    if text == "default":
        return load_pipeline(**load_kwargs)
    if text.startswith("tiny-"):
        arch = text[len("tiny-") :]
        if arch not in ("animatediff", "cogvideox"):
            raise IEAdaptValueError(f"Unknown tiny model {text!r}; choose 'tiny-animatediff' or 'tiny-cogvideox'.")
        return tiny_pipeline(arch)
    folder = Path(os.path.expanduser(text))
    if not folder.exists():
        raise IEAdaptValueError(
            f"Model {text!r} is neither one of {list(MODEL_NAMES)} nor an existing folder. "
            "Give 'default' for the embedded model or the path of a local pipeline folder."
        )
    index = folder / "model_index.json"
    if index.is_file() and "motion_adapter" not in load_kwargs:
        unet = json.loads(index.read_text()).get("unet", [None, None])
        if isinstance(unet, list) and unet[-1] == "UNetMotionModel":
            from ..models.toy import load_toy_pipeline

            return load_toy_pipeline(
                folder, **{k: v for k, v in load_kwargs.items() if k in ("device", "dtype")}
            )
    return load_pipeline(folder, **load_kwargs)
