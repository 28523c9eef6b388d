"""Paper presets: layer × {I, U}, Supplementary 7.2 combinations, λ sweep, generation settings."""

import pytest

import ieadapt_interp as ia
from ieadapt_interp import presets
from tests.conftest import ANIMATEDIFF_KW


def test_single_layer_counts(animatediff):
    made = presets.single_layer(animatediff)
    assert len(made) == (16 + 40) * 2
    assert (
        sum(k.startswith("spatial.") for k in made) == 32
        and sum(k.startswith("temporal.") for k in made) == 80
    )
    last = made["spatial.16:identity"]
    assert last.replacement == "identity" and len(last.layers.names) == 1
    table = ia.attention_layers(animatediff)
    assert last.layers.resolve(table) == [table[table.kind == "spatial"].name.iloc[-1]]
    assert len(presets.single_layer(animatediff, kinds="spatial", replacements=("U",))) == 16
    chosen = presets.single_layer(animatediff, names=[last.layers.names[0]], replacements=("I",))
    assert list(chosen) == ["spatial.16:identity"]
    with pytest.raises(KeyError, match="no.such"):
        presets.single_layer(animatediff, names=["no.such.layer"])


def test_all_layers_of_a_kind(animatediff):
    made = presets.all_layers(animatediff, kinds=("temporal", "spatial"), replacements=("U",))
    assert list(made) == ["temporal.all:uniform", "spatial.all:uniform"]
    table = ia.attention_layers(animatediff)
    assert made["temporal.all:uniform"].layers.resolve(table) == list(table[table.kind == "temporal"].name)
    with pytest.raises(ValueError, match="no \\['joint'\\]"):
        presets.all_layers(animatediff, kinds=("joint",))


@pytest.fixture(scope="module")
def stats(animatediff):
    return presets.calibration_stats(animatediff, "a red circle", **ANIMATEDIFF_KW)


def test_entropy_split(animatediff, stats):
    made = presets.entropy_split(animatediff, stats)
    assert {k: len(v.layers.names) for k, v in made.items() if k.endswith(":identity")} == {
        "spatial.top50%entropy:identity": 8,
        "spatial.bottom50%entropy:identity": 8,
        "temporal.top50%entropy:identity": 20,
        "temporal.bottom50%entropy:identity": 20,
    }
    entropy = presets.layer_entropy(stats)
    top = set(made["temporal.top50%entropy:uniform"].layers.names)
    bottom = set(made["temporal.bottom50%entropy:uniform"].layers.names)
    assert not top & bottom
    assert min(entropy[list(top)]) >= max(entropy[list(bottom)])
    with pytest.raises(ValueError, match="trace"):
        presets.entropy_split(animatediff, stats.isel(layer=slice(0, 3)))


def test_block_combinations(animatediff, stats):
    ud = presets.up_down(animatediff)
    assert {k: len(v.layers.names) for k, v in ud.items() if k.endswith(":uniform")} == {
        "spatial.down:uniform": 6,
        "spatial.up:uniform": 9,
        "temporal.down:uniform": 16,
        "temporal.up:uniform": 24,
    }
    pb = presets.per_block(animatediff)
    assert sum(len(v.layers.names) for k, v in pb.items() if k.endswith(":identity")) == 56
    assert len(presets.multi_layer(animatediff, stats)) == 8 + 8 + len(pb)


def test_per_block_on_cogvideox(cogvideox):
    assert list(presets.per_block(cogvideox, kinds=("joint",), replacements=("I",))) == [
        "joint@depth.0:identity",
        "joint@depth.1:identity",
    ]
    with pytest.raises(ValueError, match="has no \\['spatial', 'temporal'\\] attention layers"):
        presets.single_layer(cogvideox)


def test_lambda_sweep():
    made = presets.lambda_sweep("temporal", lams=(0.0, 0.5, 1.0))
    assert list(made) == ["temporal:mix(0)", "temporal:mix(0.5)", "temporal:mix(1)"]
    assert [p.lam for p in made.values()] == [0.0, 0.5, 1.0]
    assert all(p.replacement == "mix" for p in made.values())


def test_generation_settings():
    assert presets.PAPER_ANIMATEDIFF == {
        "seed": 42,
        "guidance_scale": 9.0,
        "num_inference_steps": 25,
        "scheduler": "euler",
        "num_frames": 16,
        "height": 512,
        "width": 512,
    }
    assert presets.PAPER_COGVIDEOX == {
        "seed": 42,
        "guidance_scale": 6.0,
        "num_inference_steps": 25,
        "num_frames": 25,
    }
    toy = presets.generation("toy", num_inference_steps=3)
    assert (toy["num_frames"], toy["height"], toy["width"], toy["num_inference_steps"]) == (16, 64, 64, 3)
    assert presets.TOY["num_inference_steps"] == 25
    with pytest.raises(ValueError, match="unknown generation preset"):
        presets.generation("paper")
    with pytest.raises(ValueError, match="unknown replacement"):
        presets.single_layer(
            ia.attention_layers(ia.tiny_pipeline("cogvideox")), kinds=("joint",), replacements=("A",)
        )
