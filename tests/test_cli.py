"""The ``ieadapt`` command line: sweep from YAML (with presets), report, help, errors."""

import textwrap

import pytest
import yaml

from ieadapt_interp import cli
from ieadapt_interp.sweeps import open_sweep


def _config(tmp_path, **overrides):
    config = {
        "model": "tiny:animatediff",
        "prompts": ["a red circle"],
        "seeds": [0],
        "generation": {
            "num_frames": 4,
            "height": 16,
            "width": 16,
            "num_inference_steps": 2,
            "guidance_scale": 1.0,
        },
        "perturbations": [
            {"preset": "single_layer", "kinds": ["spatial"], "replacements": ["uniform"]},
            {"preset": "lambda_sweep", "layers": "temporal", "lams": [0.0, 1.0]},
            {
                "name": "last-spatial-I",
                "layers": {"kinds": ["spatial"], "indices": [16]},
                "replacement": "identity",
            },
        ],
        "metrics": ["ssim", "temporal_ssim"],
        "store": str(tmp_path / "cli.zarr"),
        "batch_size": 8,
    }
    config.update(overrides)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_sweep_then_report(tmp_path, capsys):
    path = _config(tmp_path)
    assert cli.main(["sweep", str(path), "--dry-run"]) == 0
    assert "1 prompt(s) × 1 seed(s) × 20 perturbations (incl. baseline) = 20 jobs" in capsys.readouterr().out
    assert cli.main(["sweep", str(path), "--no-progress"]) == 0
    ds = open_sweep(tmp_path / "cli.zarr")
    assert bool(ds["done"].all()) and ds.sizes["perturbation"] == 20
    assert {"spatial.16:uniform", "temporal:mix(0)", "last-spatial-I"} <= set(ds.perturbation.values)
    assert cli.main(["sweep", str(path), "--no-progress"]) == 0  # resume of a finished sweep: no work
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path / "cli.zarr"), "--out", str(out)]) == 0
    assert (out / "summary.csv").exists() and (out / "effect.csv").exists()
    kinds = ("perturbation_effect", "layer_effect", "lambda_effect")  # all perturbations, single layers, λ mixes
    assert {p.name for p in out.glob("*.png")} == {f"{k}_{m}.png" for k in kinds for m in ("ssim", "temporal_ssim")}
    import pandas as pd

    effect = pd.read_csv(out / "effect.csv")
    assert set(effect.columns) >= {
        "perturbation",
        "metric",
        "mean",
        "baseline",
        "change",
        "layer",
        "kind",
        "lam",
    }
    assert len(effect) == 20 * 2


def test_errors_are_one_line_messages(tmp_path, capsys):
    assert cli.main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["sweep", str(_config(tmp_path, metric=["ssim"]))]) == 2
    assert "unknown key(s) ['metric']" in capsys.readouterr().err
    assert cli.main(["sweep", str(_config(tmp_path, prompts=[])), "--dry-run"]) == 2
    assert "prompts is empty" in capsys.readouterr().err
    bad = [{"preset": "single_layers"}]
    assert cli.main(["sweep", str(_config(tmp_path, perturbations=bad)), "--dry-run"]) == 2
    assert "unknown preset 'single_layers'" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "missing.zarr")]) == 2
    assert "No sweep store" in capsys.readouterr().err


def test_help_texts(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sweep", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "Example CONFIG.yaml" in text and "perturbations:" in text and "resumes" in text
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "ieadapt sweep --help" in capsys.readouterr().out


def test_example_config_is_valid_and_documented():
    from pathlib import Path

    example = Path(__file__).parents[1] / "docs" / "sweep_example.yaml"
    assert example.read_text() == cli.EXAMPLE_YAML
    config = yaml.safe_load(cli.EXAMPLE_YAML)
    assert set(config) <= cli.CONFIG_KEYS
    assert cli.generation_settings(config["generation"])["num_frames"] == 16
    assert cli.generation_settings({"preset": "toy", "num_inference_steps": 3})["num_inference_steps"] == 3
    assert textwrap.dedent(cli.SWEEP_HELP).count("preset:") >= 2


def test_example_config_dry_run_on_the_embedded_model(capsys):
    from pathlib import Path

    example = Path(__file__).parents[1] / "docs" / "sweep_example.yaml"
    assert cli.main(["sweep", str(example), "--dry-run"]) == 0
    # toy: 7 spatial + 20 temporal layers × {I, U}, temporal.all × {I, U}, 3 λ, last-spatial-U, baseline
    assert "2 prompt(s) × 1 seed(s) × 61 perturbations (incl. baseline) = 122 jobs" in capsys.readouterr().out
