"""The sweep store on disk: a clean zarr hierarchy, and one clear error (touching nothing) when it is damaged."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import ieadapt_interp as ia
from ieadapt_interp import cli
from ieadapt_interp.core.errors import IEAdaptError
from ieadapt_interp.sweeps import open_sweep, sweep
from ieadapt_interp.sweeps.store import StoreCorruptError, SweepStore, files_path, migrate

GEN = {"num_frames": 4, "height": 16, "width": 16, "num_inference_steps": 1, "guidance_scale": 1.0}
PROMPTS = ["a red circle moving left"]
SPATIAL = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"


def _run(pipe, store, **kw):
    return sweep(pipe, PROMPTS, [ia.uniform(SPATIAL)], [0], ["temporal_ssim"], store=store, generation=GEN,
                 progress=False, **kw)


@pytest.fixture(scope="module")
def finished(animatediff, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "sweep.zarr"
    ds = _run(animatediff, store, save_videos=True)
    return store, ds


def _copy(store: Path, tmp_path: Path) -> Path:
    target = tmp_path / store.name
    shutil.copytree(store, target)
    shutil.copytree(files_path(store), files_path(target))
    return target


def _snapshot(store: Path) -> dict:
    return {str(p): p.read_bytes() for root in (store, files_path(store)) if root.exists()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_store_is_a_clean_consolidated_zarr_group(finished):
    store, ds = finished
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not "not recognized as a component of a Zarr hierarchy", nor any other
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        opened = xr.open_zarr(store).load()  # consolidated metadata is the default read path
        group = zarr.open_consolidated(str(store), zarr_format=3)
    np.testing.assert_array_equal(opened["value"].values, ds["value"].values)
    assert bool(opened["done"].all())
    meta = json.loads((store / "zarr.json").read_text())
    assert meta["consolidated_metadata"]["metadata"].keys() >= {"value", "done", "missing_reason", "perturbation"}
    assert {name for name, _ in group.members()} == set(meta["consolidated_metadata"]["metadata"])
    # only zarr nodes inside the group; the files lie beside it
    assert sorted(p.name for p in store.iterdir() if not (p / "zarr.json").exists()) == ["zarr.json"]
    files = files_path(store)
    assert files == store.with_name("sweep.zarr-files")
    assert sorted(p.name for p in files.iterdir()) == ["baseline", "baseline_stats", "videos"]
    np.testing.assert_array_equal(SweepStore(store).baseline_video(0, 0).shape, (4, 16, 16, 3))
    assert SweepStore(store).baseline_stats(0, 0)["entropy"].dims == ("step", "layer", "head", "frame")


def _corruptions(store: Path) -> dict:
    return {
        "zarr.json cut off": lambda: (store / "zarr.json").write_bytes((store / "zarr.json").read_bytes()[:200]),
        "array metadata cut off": lambda: (store / "value" / "zarr.json").write_text('{"shape": [1, '),
        "chunk missing": lambda: (store / "value" / "c" / "0" / "0" / "1" / "0").unlink(),
        "chunk garbage": lambda: (store / "value" / "c" / "0" / "0" / "1" / "0").write_bytes(b"\x00garbage"),
        "baseline unreadable": lambda: (files_path(store) / "baseline" / "p0000_s0000.npy").write_bytes(b"\x93NUMPY"),
        "baseline missing": lambda: (files_path(store) / "baseline" / "p0000_s0000.npy").unlink(),
        "baseline stats cut off": lambda: (files_path(store) / "baseline_stats" / "p0000_s0000.zarr"
                                           / "zarr.json").write_text("{"),
    }


CASES = list(_corruptions(Path("x")))


@pytest.mark.parametrize("case", CASES)
def test_damaged_store_gives_one_clear_error_and_is_not_touched(animatediff, finished, tmp_path, case, capsys):
    store = _copy(finished[0], tmp_path)
    _corruptions(store)[case]()
    before = _snapshot(store)
    pattern = r"sweep store .*sweep\.zarr.* cannot be read: .*Nothing was changed.*restore it .*new store path"
    with pytest.raises(StoreCorruptError, match=pattern):
        open_sweep(store)
    with pytest.raises(StoreCorruptError, match=pattern):
        _run(animatediff, store)  # the same configuration: a resume
    assert _snapshot(store) == before  # a resume never writes to a store it cannot read
    assert cli.main(["report", str(store), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be read" in err[0] and str(store) in err[0]
    assert not (tmp_path / "report").exists()
    assert _snapshot(store) == before


def test_damage_on_a_job_not_done_is_recomputed_not_an_error(animatediff, finished, tmp_path):
    """A chunk of an unfinished job may be absent (zarr's fill value): the resume computes that job."""
    store = _copy(finished[0], tmp_path)
    import zarr

    zarr.open_array(str(store / "done"), mode="r+", zarr_format=3)[0, 0, 1] = False
    (store / "value" / "c" / "0" / "0" / "1" / "0").unlink()
    assert not bool(open_sweep(store)["done"][0, 0, 1])
    ds = _run(animatediff, store)
    np.testing.assert_array_equal(ds["value"].values, finished[1]["value"].values)


def test_old_layout_is_refused_clearly_then_migrated(finished, tmp_path):
    store = _copy(finished[0], tmp_path)
    # the first layout: files inside the group, no store_format, no consolidated metadata
    for name in ("baseline", "baseline_stats", "videos"):
        shutil.move(str(files_path(store) / name), str(store / name))
    files_path(store).rmdir()
    meta = json.loads((store / "zarr.json").read_text())
    meta.pop("consolidated_metadata")
    meta["attributes"].pop("store_format")
    (store / "zarr.json").write_text(json.dumps(meta))
    before = _snapshot(store)
    with pytest.raises(StoreCorruptError, match=r"older layout.*migrate\(.*sweep\.zarr"):
        open_sweep(store)
    assert _snapshot(store) == before
    assert isinstance(StoreCorruptError("x"), IEAdaptError)
    migrate(store)
    ds = open_sweep(store)
    np.testing.assert_array_equal(ds["value"].values, finished[1]["value"].values)
    assert SweepStore(store).baseline_stats(0, 0)["entropy"].dims == ("step", "layer", "head", "frame")


def test_leftover_files_folder_without_its_store_is_refused(animatediff, finished, tmp_path):
    store = _copy(finished[0], tmp_path)
    shutil.rmtree(store)
    with pytest.raises(ValueError, match="sweep.zarr-files.*exists but its store"):
        _run(animatediff, store)
    assert not store.exists()
