"""One error base: user errors derive from ``IEAdaptError`` (and the built-in they replace); the CLI prints
only those as one line, everything else keeps its traceback."""

import ast
from pathlib import Path

import pytest

import ieadapt_interp as ia
from ieadapt_interp import cli
from ieadapt_interp.core import errors

PACKAGE = Path(ia.__file__).parent


@pytest.mark.parametrize(
    "cls, builtin",
    [
        (errors.IEAdaptValueError, ValueError),
        (errors.IEAdaptTypeError, TypeError),
        (errors.IEAdaptKeyError, KeyError),
        (errors.IEAdaptFileNotFoundError, FileNotFoundError),
        (errors.IEAdaptNotImplementedError, NotImplementedError),
    ],
)
def test_each_error_is_both_kinds(cls, builtin):
    assert issubclass(cls, ia.IEAdaptError) and issubclass(cls, builtin)
    with pytest.raises(builtin):
        raise cls("what to do")


def test_key_error_message_is_plain():
    assert str(errors.IEAdaptKeyError("unknown layer 'x'")) == "unknown layer 'x'"


def test_package_errors_derive_from_the_base(tmp_path):
    from ieadapt_interp.metrics import get_metric
    from ieadapt_interp.sweeps import SweepConfig, StoreMismatchError, open_sweep
    from ieadapt_interp.metrics.weights import MissingWeightsError

    pipe = ia.tiny_pipeline("animatediff")
    with pytest.raises(ia.IEAdaptError, match="Unknown layer kind"):
        ia.Layers(kinds=("bogus",))
    with pytest.raises(KeyError) as info:
        ia.Layers(names=("down_blocks.9.nope",)).resolve(ia.attention_layers(pipe))
    assert isinstance(info.value, ia.IEAdaptError)
    with pytest.raises(ia.IEAdaptError, match="unknown metric"):
        get_metric("ssimm")
    with pytest.raises(ia.IEAdaptError, match="prompts is empty"):
        SweepConfig.build([], {"u": ia.uniform("temporal")}, metrics=["ssim"])
    with pytest.raises(ia.IEAdaptError):
        open_sweep(tmp_path / "missing.zarr")
    assert issubclass(StoreMismatchError, ia.IEAdaptError) and issubclass(MissingWeightsError, ia.IEAdaptError)


def _raised_builtins(path: Path) -> list[str]:
    """``raise ValueError(...)``-style statements (built-in user-error classes raised directly) in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
            if node.exc.func.id in ("ValueError", "TypeError", "KeyError", "FileNotFoundError"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.exc.func.id}")
    return found


def test_no_plain_builtin_user_errors_are_raised():
    """User errors use the IEAdaptError subclasses (the Triton kernel's argument checks are internal)."""
    files = [p for p in PACKAGE.rglob("*.py") if "kernels" not in p.parts]
    offenders = [hit for path in files for hit in _raised_builtins(path)]
    assert offenders == []


def test_cli_prints_user_errors_as_one_line_and_keeps_tracebacks(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts: [a red circle]\nperturbations: [{preset: all_layers, kindz: [temporal]}]\n"
                   "store: x.zarr\nmodel: tiny:animatediff\n")
    assert cli.main(["sweep", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown option(s) ['kindz']" in err
    bad.write_text("prompts: [a red circle\n")
    assert cli.main(["sweep", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err

    def crash(*args, **kwargs):
        raise ValueError("an internal bug, not the user's input")

    monkeypatch.setattr(cli, "load_config", crash)
    with pytest.raises(ValueError, match="internal bug"):
        cli.main(["sweep", str(bad)])
