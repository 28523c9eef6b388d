"""Calibration (Eq. 3) and the registry: per-layer means over prompts, l*, serialisation, the shipped one."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

import ieadapt_interp as ia
from ieadapt_interp.methods.calibration import TOY_REGISTRY, Registry, fingerprint
from ieadapt_interp.models.toy import heldout_captions

KW = dict(num_frames=2, height=16, width=16, num_inference_steps=2)
PROMPTS = ["a red circle", "a blue square moving left"]


@pytest.fixture(scope="module")
def calibrated(animatediff):
    return ia.calibrate(animatediff, PROMPTS, seeds=(0, 1), progress=False, **KW)


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # single-key layers: NaN in every run
def test_per_layer_mean_over_prompts_and_seeds(animatediff, calibrated):
    runs = []
    for prompt in PROMPTS:
        for seed in (0, 1):
            ds = ia.trace(animatediff, prompt, seed=seed, **KW).stats
            pct = 100 * ds.entropy / np.log(ds.n_keys.where(ds.n_keys > 1))  # H / log N, by hand
            runs.append(pct.mean(["step", "head", "frame"]).to_series())
    expected = np.nanmean(np.stack([r.reindex(calibrated.layers).values for r in runs]), axis=0)
    np.testing.assert_allclose(calibrated.entropy_pct, expected, rtol=1e-9, equal_nan=True)
    table = ia.attention_layers(animatediff)
    assert set(calibrated.layers) == set(table.name[table.kind != "cross"])  # cross is never a candidate


def test_choices(calibrated):
    e = np.asarray(calibrated.entropy_pct)
    finite = np.where(np.isfinite(e))[0]
    assert calibrated.l_star == calibrated.layers[finite[np.argmax(e[finite])]]
    top = calibrated.top(3)
    assert [calibrated.entropy_pct[calibrated.layers.index(n)] for n in top] == sorted(e[finite], reverse=True)[:3]
    assert calibrated.lowest(1)[0] == calibrated.layers[finite[np.argmin(e[finite])]]
    assert calibrated.kinds[calibrated.layers.index(calibrated.best("temporal"))] == "temporal"
    assert calibrated.random_layer(0, exclude=[calibrated.l_star]) != calibrated.l_star
    with pytest.raises(ia.IEAdaptError):
        calibrated.best("joint")
    assert isinstance(calibrated.plot(), Figure)


def test_save_load_roundtrip_and_bad_files(calibrated, tmp_path):
    path = calibrated.save(tmp_path)
    assert Registry.load(path) == calibrated == Registry.load(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "x"}))
    with pytest.raises(ia.IEAdaptError, match="not a registry"):
        Registry.load(bad)
    with pytest.raises(ia.IEAdaptError, match="No registry"):
        Registry.load(tmp_path / "missing.json")


def test_bad_kinds_and_other_models(animatediff, calibrated):
    with pytest.raises(ia.IEAdaptError, match="self-attention"):
        ia.calibrate(animatediff, PROMPTS, kinds=("cross",), **KW)
    calibrated.check(animatediff)
    with pytest.raises(ia.IEAdaptError, match="another model"):
        Registry.load(TOY_REGISTRY).check(animatediff)


def test_shipped_registry_of_the_embedded_model():
    reg = Registry.load(TOY_REGISTRY)
    assert reg.model.startswith("AnimateDiffPipeline/UNetMotionModel")
    assert len(reg.layers) == 27 and set(reg.kinds) == {"spatial", "temporal"}  # 7 spatial + 20 temporal
    assert not set(reg.prompts) & set(heldout_captions())  # calibrated on training captions only
    assert reg.l_star == reg.top(1)[0] and reg.kinds[reg.layers.index(reg.l_star)] in ("spatial", "temporal")
    assert fingerprint(ia.tiny_pipeline()) != reg.fingerprint
