"""One loader: ``ia.load_pipeline(spec)`` takes every model spec — None, "tiny:<arch>", a folder, a hub id in the
local cache — and the older spellings keep working for one release with a DeprecationWarning."""

import warnings

import pytest
import torch

import ieadapt_interp as ia
from ieadapt_interp.models.specs import canonical_spec, resolve_model
from ieadapt_interp.sweeps.models import build_pipeline, model_key


def _same_weights(a, b) -> bool:
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def reference():
    return ia.tiny_pipeline("animatediff", seed=0)


def test_tiny_spec_is_the_seeded_builder(reference):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the one spelling warns about nothing
        pipe = ia.load_pipeline("tiny:animatediff")
        assert type(ia.load_pipeline("tiny:cogvideox")).__name__ == "CogVideoXPipeline"
    assert _same_weights(pipe, reference) and not pipe.unet.training


@pytest.mark.parametrize("old", ["tiny-animatediff", ("tiny", "animatediff")])
def test_old_spellings_warn_and_mean_the_same(old, reference):
    with pytest.warns(DeprecationWarning, match="tiny:animatediff"):
        assert _same_weights(ia.load_pipeline(old), reference)
    with pytest.warns(DeprecationWarning):
        assert model_key(old) == model_key("tiny:animatediff") == "tiny:animatediff"
    with pytest.warns(DeprecationWarning, match="resolve_model is deprecated"):
        assert _same_weights(resolve_model(old), reference)
    with pytest.warns(DeprecationWarning):
        assert canonical_spec("default") is None


def test_a_folder_and_a_cached_hub_id(tmp_path, monkeypatch, reference):
    folder = tmp_path / "saved"
    reference.save_pretrained(folder)
    assert _same_weights(ia.load_pipeline(folder), reference)
    assert _same_weights(ia.load_pipeline(str(folder)), reference)
    # a hub id already in the local Hugging Face cache (the cache layout: refs/main → snapshots/<revision>)
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    repo = cache / "models--ieadapt--tiny-animatediff"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    reference.save_pretrained(repo / "snapshots" / "0123abcd")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    assert _same_weights(ia.load_pipeline("ieadapt/tiny-animatediff"), reference)
    assert _same_weights(build_pipeline(str(folder), cache=False), reference)


def test_bad_specs_are_one_clear_error():
    with pytest.raises(ia.IEAdaptError, match="unknown arch 'nosuch'"):
        ia.load_pipeline("tiny:nosuch")
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded") as info:
        ia.load_pipeline("no-such-org/no-such-model")
    assert isinstance(info.value, ia.IEAdaptError)
    with pytest.raises(ia.IEAdaptError, match="drop motion_adapter"):
        ia.load_pipeline("tiny:animatediff", motion_adapter="/models/adapter")
    with pytest.raises(TypeError, match="model spec"):
        ia.load_pipeline(3)


def test_the_embedded_model_is_the_default():
    from ieadapt_interp.models.toy import default_model_path

    pipe = ia.load_pipeline()
    assert type(pipe).__name__ == "AnimateDiffPipeline" and (default_model_path() / "model_index.json").is_file()
    assert pipe.unet.dtype == torch.float32 and pipe.unet.device.type == "cpu"
