"""nth files open in the netCDF ecosystem: every axis of every dataset has a named dimension (HDF5 dimension
scales, nth.io._hdf5), so xarray's h5netcdf engine gives labelled arrays for each group of a solve file and of
a sweep's runs, and a sweep file's root is its (width, seed) table."""

import h5py
import numpy as np
import pytest

from nth.cli import main
from nth.io import load_sweep
from nth.io._hdf5 import edit_h5, is_dimension

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")

TINY = ["--depth", "1", "--n", "4", "--d", "3", "--n-test", "2", "--p", "4", "--num-times", "3", "--quiet"]
GD = ["--lr-fraction", "0.5", "--steps", "10"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("xr")
    solve, sweep = d / "solve.h5", d / "sweep.h5"
    assert main(["solve", "--width", "16", *TINY, *GD, "--save-kernels", "--spectra", "--top", "2", "--probes", "4",
                 "--out", str(solve)]) == 0
    assert main(["sweep", "--widths", "16,32", "--seeds", "2", *TINY, "--t-max", "5", "--out", str(sweep)]) == 0
    return solve, sweep


def _variables(h):
    out = {}
    h.visititems(lambda name, obj: out.update({name: obj}) if isinstance(obj, h5py.Dataset) and not is_dimension(obj)
                 else None)
    return out


def _open(path, group=None):
    return xr.open_dataset(path, engine="h5netcdf", group=group)


EXPECTED = {  # a solve file's groups: the dimensions of each variable (n = 4 samples, 2 test samples)
    "true": {"f": ("time", "sample"), "f_test": ("time", "test_sample"), "K2": ("time", "sample", "sample_2"),
             "loss": ("time",)},
    "nth/p4": {"f": ("time", "sample"), "K2": ("time", "sample", "sample_2")},
    "dg": {"f": ("time", "sample"), "K2_late": ("sample", "sample_2")},
    "gd": {"f": ("step", "sample"), "f_test": ("step", "test_sample"), "loss": ("step",)},
    "discrete/o1m": {"f": ("step", "sample"), "K2": ("step", "sample", "sample_2")},
    "kernels": {"K4": ("sample", "sample_2", "sample_3", "sample_4"), "K3_test": ("test_sample", "sample", "sample_2")},
    "data": {"X": ("sample", "feature"), "X_test": ("test_sample", "feature"), "y": ("sample",)},
    "init": {"f0": ("sample",)},
    "spectrum": {"hessian_top": ("time", "eigenvalue"), "gn_eigenvalues": ("time", "gn_eigenvalue"),
                 "moments_H": ("time", "moment"), "trace_B2": ("time",), "step": ("time",)},
}


def test_every_dataset_has_named_dimensions(files):
    for path in files:
        with h5py.File(path) as h:
            variables = _variables(h)
            assert len(variables) > 20
            for name, ds in variables.items():
                if ds.parent.name == "/" and ds.ndim == 1 and ds.is_scale:
                    continue  # the sweep table's coordinates width and seed
                assert all(len(ds.dims[i]) == 1 for i in range(ds.ndim)), f"{path.name}:{name} has an unnamed axis"


def test_solve_file_groups_open_in_xarray(files):
    solve = files[0]
    with h5py.File(solve) as h:
        raw = {name: ds[()] for name, ds in _variables(h).items()}
    for group, variables in EXPECTED.items():
        ds = _open(solve, group)
        for name, dims in variables.items():
            assert ds[name].dims == dims, (group, name)
            np.testing.assert_array_equal(ds[name].values, raw[f"{group}/{name}"])
        assert ds.sizes.get("sample", 4) == 4 and ds.sizes.get("test_sample", 2) == 2
        if "time" in ds.dims:  # the saved times are the coordinate t of every group with a time axis
            np.testing.assert_array_equal(ds["t"].values, raw["true/t"])
            first = next(name for name in variables if "time" in ds[name].dims)
            assert "t" in ds.coords and ds[first].coords["t"].dims == ("time",)
        if "step" in ds.dims:  # gradient descent's steps (an index) and t = lr * step
            np.testing.assert_array_equal(ds["step"].values, [0, 5, 10])
            assert "step" in ds.indexes and "t" in ds.coords
            np.testing.assert_allclose(ds["t"].values, ds.attrs["lr"] * ds["step"].values, rtol=1e-12)
    # a time slice by the coordinate, the way a user reads a trajectory
    true = _open(solve, "true").swap_dims(time="t")
    assert true["f"].sel(t=true["t"].values[-1]).dims == ("sample",)


def test_sweep_file_is_a_table_and_its_runs_open(files):
    sweep = files[1]
    table, sw = _open(sweep), load_sweep(str(sweep))
    np.testing.assert_array_equal(table["width"].values, [16, 32])
    np.testing.assert_array_equal(table["seed"].values, [0, 1])
    assert set(table.indexes) == {"width", "seed"}
    for key in ("max_f_error_p2", "max_f_error_p4", "max_f_error_dg", "loss_fall", "kernel_mean_abs_K4"):
        assert table[key].dims == ("width", "seed")
        np.testing.assert_array_equal(table[key].values, sw["scalars"][key])
    assert float(table["max_f_error_p4"].sel(width=32, seed=1)) == sw["scalars"]["max_f_error_p4"][1, 1]
    run = _open(sweep, "runs/m32_s1/nth/p4")
    assert run["f"].dims == ("time", "sample") and run.sizes["time"] == 3
    np.testing.assert_array_equal(run["f"].values, sw["runs"][(32, 1)]["p4_f"])
    np.testing.assert_array_equal(run["t"].values, sw["runs"][(32, 1)]["t"])


def test_sweep_table_follows_its_runs(files, tmp_path):
    """The table is rebuilt from the runs at each commit: a run that is gone (a damaged one, dropped to be
    computed again) leaves NaN in its cells."""
    from nth.io._sweep import _tabulate

    sweep = tmp_path / "copy.h5"
    sweep.write_bytes(files[1].read_bytes())

    def drop(h):
        del h["runs/m16_s0"]
        _tabulate(h)

    edit_h5(sweep, drop)
    table = _open(sweep)
    E = table["max_f_error_p4"].values
    assert np.isnan(E[0, 0]) and np.isfinite(E[0, 1]) and np.isfinite(E[1]).all()
    assert load_sweep(str(sweep))["runs"].keys() == {(16, 1), (32, 0), (32, 1)}


def test_older_sweep_resumes_and_becomes_the_current_format(files, tmp_path):
    """A sweep file of the layout before dimensions (nth-sweep-2: the same runs, no table) resumes: the missing run
    is computed with its dimensions, the table covers every run, and the file is marked nth-sweep-3, so that a
    version of nth that knows only nth-sweep-2 refuses it rather than taking its runs for damaged ones."""
    sweep = tmp_path / "older.h5"
    sweep.write_bytes(files[1].read_bytes())

    def make_older(h):
        del h["runs/m32_s1"]
        for k in [k for k, d in h.items() if isinstance(d, h5py.Dataset)]:
            del h[k]  # the table and its coordinates
        h.attrs["format"], h.attrs["schema_version"] = "nth-sweep-2", 2

    edit_h5(sweep, make_older)
    assert main(["sweep", "--widths", "16,32", "--seeds", "2", *TINY, "--t-max", "5", "--out", str(sweep)]) == 0
    with h5py.File(sweep) as h:
        assert h.attrs["format"] == "nth-sweep-3" and h.attrs["schema_version"] == 3
    table, sw = _open(sweep), load_sweep(str(sweep))
    assert np.isfinite(table["max_f_error_p4"].values).all()
    np.testing.assert_array_equal(table["max_f_error_p4"].values, sw["scalars"]["max_f_error_p4"])
    assert _open(sweep, "runs/m32_s1/true")["f"].dims == ("time", "sample")


def test_correlation_file_opens_in_xarray(tmp_path):
    """A correlation file's inputs are (input, feature) and each block of draws (its own draw dimension, whose
    coordinate is the draw numbers, by function): concatenated along the draws they are load_corr's values. A
    file of the layout before dimensions (nth-corr-1) is extended and becomes nth-corr-2."""
    import dataclasses

    from nth import CorrConfig, load_corr, run_corr

    path = str(tmp_path / "c.h5")
    cfg = CorrConfig(functions=("f(x1) f(x2)", "d{mu}f(x1) d{mu}f(x2)"), widths=(8,), draws=6, depth=1)
    run_corr(cfg, path)
    edit_h5(path, lambda h: h.attrs.__setitem__("format", "nth-corr-1"))
    run_corr(dataclasses.replace(cfg, draws=10), path)  # resumes the older file: a second block, draws 6..9
    with h5py.File(path) as h:
        assert h.attrs["format"] == "nth-corr-2"
    assert _open(path)["inputs"].dims == ("input", "feature")
    width = _open(path, "m8")
    blocks = [width[name].rename({f"{name}_draw": "draw"}) for name in sorted(width.data_vars)]
    assert [b.dims for b in blocks] == [("draw", "function")] * 2 and blocks[1]["draw"].values.tolist() == [6, 7, 8, 9]
    np.testing.assert_array_equal(xr.concat(blocks, "draw").values, load_corr(path)["values"][8])
