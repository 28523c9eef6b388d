"""Wheels work: ``pip install .`` (not editable) into a fresh environment, then, from another directory, the
embedded model loads and the notebook runner finds the notebooks — both from the installed package, not the
checkout.

Offline and fast: the wheel is built without build isolation (setuptools of this environment), installed with
``--no-deps`` into a new venv that reaches this environment's dependencies through a ``.pth`` line (which, unlike
``--system-site-packages``, does not run this environment's editable-install hook)."""

import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, cwd=None, env_extra=None) -> str:
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1", **(env_extra or {})}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv holding the package installed from a freshly built wheel → (python, a work folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so that the build writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("ieadapt_interp", "notebooks", "data/toy_t2v"):
        shutil.copytree(ROOT / folder, source / folder, symlinks=True, ignore=ignore)
    dist = tmp / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", dist, source)
    wheel = next(dist.glob("ieadapt_interp-*.whl"))
    env_dir = tmp / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    target = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (target / "_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    work = tmp / "elsewhere"
    work.mkdir()
    return python, work


def test_the_installed_package_is_not_the_checkout(installed):
    python, work = installed
    where = _run(python, "-c", "import ieadapt_interp, pathlib; print(pathlib.Path(ieadapt_interp.__file__).resolve())",
                 cwd=work).strip()
    assert str(ROOT) not in where and "site-packages" in where


def test_embedded_model_loads_from_the_wheel(installed):
    python, work = installed
    script = textwrap.dedent("""
        import pathlib, ieadapt_interp as ia
        from ieadapt_interp.models.toy import default_model_path
        path = default_model_path()
        assert not path.is_symlink() and "site-packages" in str(path.resolve()), path
        pipe = ia.load_pipeline()
        state = pipe.unet.state_dict()
        print(type(pipe).__name__, repr(sum(float(state[k].double().sum()) for k in sorted(state))))
    """)
    out = _run(python, "-c", script, cwd=work).split()
    assert out[-2] == "AnimateDiffPipeline"
    assert float(out[-1]) == _checkout_unet_sum()  # the same weights as the checkout's data/toy_t2v


def _checkout_unet_sum() -> float:
    """Sum (fp64, keys sorted) of the checkout's embedded U-Net weights, read straight from its safetensors."""
    from safetensors.torch import load_file

    state = load_file(str(ROOT / "data" / "toy_t2v" / "unet" / "diffusion_pytorch_model.safetensors"))
    return sum(float(state[k].double().sum()) for k in sorted(state))


def test_notebook_runner_finds_the_notebooks_from_the_wheel(installed):
    python, work = installed
    names = _run(python, "-c", "from ieadapt_interp.notebook_runner import notebook_paths, NOTEBOOK_DIR; "
                 "print(NOTEBOOK_DIR.resolve()); print(*[p.name for p in notebook_paths()])", cwd=work).splitlines()
    assert "site-packages" in names[0]
    assert names[1].split() == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    usage = _run(python, "-m", "ieadapt_interp.notebook_runner", "--help", cwd=work)
    assert "--only" in usage
