"""The embedded toy text-to-video model: data, attribute checks, model, training and evaluation.

``load_toy_pipeline()`` returns the shipped AnimateDiffPipeline (``data/toy_t2v``) on CPU;
``DEFAULT_SAMPLING`` holds the sampler settings the package uses with it.
"""

from ...models.toy.dataset import heldout_captions, make_caption, parse_caption, render_captions
from ...models.toy.model import DEFAULT_SAMPLING, build_toy_pipeline, default_model_path, load_toy_pipeline


def evaluate_toy_model(pipe, captions=None, seed: int = 0, **kw):
    from ...models.toy.evaluate import evaluate_toy_model as _ev

    return _ev(pipe, captions, seed=seed, **kw)


__all__ = [
    "DEFAULT_SAMPLING",
    "build_toy_pipeline",
    "default_model_path",
    "evaluate_toy_model",
    "heldout_captions",
    "load_toy_pipeline",
    "make_caption",
    "parse_caption",
    "render_captions",
]
