"""`nth sweep`: one resumable file per sweep; a killed sweep loses at most the run in progress."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import nth
from nth.cli import main
from nth.io import finished_runs, load_sweep
from nth.io._hdf5 import is_dimension

ARGS = ["--widths", "24,32,40", "--seeds", "3", "--p", "3", "--depth", "1", "--n", "4", "--d", "3", "--n-test", "2",
        "--t-max", "5", "--num-times", "3"]


def run_attrs(path):
    with h5py.File(path, "r") as h:
        return {name: (g.attrs["created"], g["true/f"][()].tobytes()) for name, g in h["runs"].items()}


def test_killed_sweep_resumes_without_loss_or_duplication(tmp_path):
    out = tmp_path / "sweep.h5"
    proc = subprocess.Popen([sys.executable, "-m", "nth.cli", "sweep", *ARGS, "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:  # kill it as soon as two runs are committed, in the middle of the third
            if out.exists() and len(finished_runs(str(out))) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"sweep ended before it could be killed: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = run_attrs(out)
    assert 2 <= len(before) < 9, "the sweep must be killed part-way"
    # the file is intact after SIGKILL, and resuming computes only the missing runs
    assert main(["sweep", *ARGS, "--out", str(out), "--quiet"]) == 0
    after = run_attrs(out)
    assert sorted(after) == sorted(f"m{w}_s{s}" for w in (24, 32, 40) for s in range(3))
    for name, value in before.items():
        assert after[name] == value, f"{name} was recomputed or changed"
    assert os.listdir(tmp_path) == ["sweep.h5"]  # no stale temporary copy is left
    # a third call finds nothing to do
    assert main(["sweep", *ARGS, "--out", str(out), "--quiet"]) == 0
    assert run_attrs(out) == after
    sw = load_sweep(str(out))
    assert sw["scalars"]["max_f_error_p2"].shape == (3, 3) and np.isfinite(sw["scalars"]["max_f_error_p2"]).all()
    assert sw["runs"][(40, 2)]["p3_f_test"].shape == (3, 2)


def test_sweep_runs_are_laid_out_like_solve_files(tmp_path):
    """One schema (nth.io._schema): a sweep's run group holds the datasets and attributes of a solve file's root,
    and the same numbers as `nth solve` for that width and seed."""
    out, solo = tmp_path / "sweep.h5", tmp_path / "solo.h5"
    common = ["--p", "4", "--depth", "1", "--n", "4", "--d", "3", "--n-test", "2", "--t-max", "5", "--num-times", "3",
              "--quiet"]
    assert main(["sweep", "--widths", "16", "--seeds", "2", *common, "--out", str(out)]) == 0
    assert main(["solve", "--width", "16", "--seed", "1", *common, "--out", str(solo)]) == 0
    with h5py.File(out) as sw, h5py.File(solo) as so:
        assert sw.attrs["format"] == "nth-sweep-3" and sw.attrs["schema_version"] == so.attrs["schema_version"] == 3
        run = sw["runs/m16_s1"]
        names = lambda g: sorted(n for n in _datasets(g) if not n.startswith(("data/", "kernels/")))  # noqa: E731
        assert names(run) == names(so) and "nth/p4/f_test" in names(run) and "dg/K2_late" in names(run)
        for name in names(so):
            np.testing.assert_allclose(run[name][()], so[name][()], rtol=1e-12, atol=1e-15, err_msg=name)
        for group in ("nth/p2", "dg", "inf", "true"):
            assert set(run[group].attrs) == set(so[group].attrs), group
        np.testing.assert_array_equal(sw["data/X"][()], so["data/X"][()])
        # each run records where it ran (a resumed sweep may continue on another machine), as a file's root does
        provenance = [k for k in so.attrs if k.startswith("version_") or k in ("device", "device_kind")]
        assert {"device", "device_kind", "version_jax", "version_nth"} <= set(provenance)
        for k in provenance:
            assert run.attrs[k] == so.attrs[k], k


def _datasets(group):
    """The variables under ``group`` (datasets other than netCDF dimensions; those are tested in test_xarray)."""
    out = []
    group.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) and not is_dimension(obj)
                     else None)
    return out


def test_first_layout_sweep_files_stay_readable(tmp_path):
    """Sweep files written before the schema-2 layout (nth-sweep-1, e.g. the committed results/sweep_tanh_d1.h5)
    load into the same form and plot; nth refuses to add runs to them."""
    path = os.path.join(os.path.dirname(__file__), "..", "results", "sweep_tanh_d2.h5")
    sw = load_sweep(path)
    assert sw["format"] == "nth-sweep-1" and sw["scalars"]["max_f_error_p4"].shape == (4, 5)
    assert np.isfinite(sw["scalars"]["max_f_error_p4"]).all()
    run = sw["runs"][(256, 0)]
    assert run["p4_f"].shape == run["true_f"].shape and run["t"].ndim == 1
    png = tmp_path / "old.png"
    assert main(["plot", "error-vs-width", path, "--out", str(png)]) == 0 and png.stat().st_size > 10_000
    copy = tmp_path / "old.h5"
    copy.write_bytes(open(path, "rb").read())
    assert main(["sweep", "--widths", "256", "--seeds", "1", "--out", str(copy), "--quiet"]) == 2


def test_resume_refuses_different_arguments(tmp_path, capsys):
    out = tmp_path / "sweep.h5"
    small = ["--widths", "16", "--seeds", "1", "--p", "2", "--depth", "1", "--n", "3", "--d", "2", "--t-max", "1",
             "--num-times", "2", "--out", str(out), "--quiet"]
    assert main(["sweep", *small]) == 0
    capsys.readouterr()
    assert main(["sweep", *small, "--activation", "gelu"]) == 2
    err = capsys.readouterr().err
    assert "different arguments" in err and "activation" in err
    assert len(finished_runs(str(out))) == 1


def test_sweep_refuses_bad_arguments(tmp_path, capsys):
    assert main(["sweep", "--widths", "16,16", "--out", str(tmp_path / "s.h5"), "--quiet"]) == 2
    assert "duplicates" in capsys.readouterr().err
    not_sweep = tmp_path / "other.h5"
    nth.write_h5(not_sweep, {"/x": np.zeros(2)})
    assert main(["sweep", "--widths", "16", "--seeds", "1", "--out", str(not_sweep), "--quiet"]) == 2
    assert "not an nth sweep file" in capsys.readouterr().err


def test_plots_from_a_sweep_file(tmp_path, capsys):
    out = tmp_path / "s.h5"
    assert main(["sweep", "--widths", "32,64", "--seeds", "2", "--p", "4", "--depth", "1", "--n", "4", "--d", "3",
                 "--t-max", "5", "--num-times", "4", "--out", str(out), "--quiet"]) == 0
    for kind, extra in (("error-vs-width", []), ("error-vs-width", ["--quantity", "max_test_error"]),
                        ("trajectories", []), ("kernel-sizes", [])):
        png = tmp_path / f"{kind}{len(extra)}.png"
        assert main(["plot", kind, str(out), "--out", str(png), *extra]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "p4: slope" in printed and "95% CI" in printed and "K2_movement" in printed


def test_digits_problem():
    data = nth.data.digits_problem(per_class=7, n_test=3)
    assert data.X.shape == (14, 64) and data.X_test.shape == (3, 64)
    assert sorted(set(data.y)) == [-1.0, 1.0] and (data.y == 1).sum() == 7
    np.testing.assert_allclose(np.linalg.norm(data.X, axis=1), 1.0, rtol=1e-14)
    with pytest.raises(nth.DataError, match="too many"):
        nth.data.digits_problem(per_class=500)


def test_batched_seeds_equal_sequential_runs(tmp_path):
    """--batch-seeds (one vmapped computation per width) stores the numbers of the seed-by-seed loop."""
    small = ["--widths", "32", "--seeds", "3", "--p", "4", "--depth", "1", "--n", "4", "--d", "3", "--n-test", "2",
             "--t-max", "5", "--num-times", "3", "--quiet"]
    assert main(["sweep", *small, "--out", str(tmp_path / "loop.h5")]) == 0
    assert main(["sweep", *small, "--batch-seeds", "--out", str(tmp_path / "batch.h5")]) == 0
    a, b = load_sweep(str(tmp_path / "loop.h5")), load_sweep(str(tmp_path / "batch.h5"))
    errors = [k for k in a["scalars"] if k.startswith(("max_", "dg_vs"))]
    assert "max_f_error_p4" in errors and "max_test_error_dg" in errors
    # an error is a difference of outputs of size ~1: the batched solves take their own steps, so the two agree in
    # units of f (measured: up to 7e-11), not relative to the error itself
    for k in errors:
        np.testing.assert_allclose(b["scalars"][k], a["scalars"][k], rtol=0, atol=1e-9, err_msg=k)
    for k in [k for k in a["scalars"] if k.startswith(("kernel_mean", "loss_fall"))]:
        np.testing.assert_allclose(b["scalars"][k], a["scalars"][k], rtol=1e-9, err_msg=k)
    np.testing.assert_allclose(b["runs"][(32, 2)]["p4_f"], a["runs"][(32, 2)]["p4_f"], rtol=0, atol=1e-11)
    assert b["scalars"]["max_f_error_p4"].shape == (1, 3)


def test_gradient_descent_sweep(tmp_path, capsys):
    """`nth sweep --lr-fraction F --steps S`: every run holds gradient descent and the discrete-time rows on its
    steps, errors against gradient descent are tabulated (max_f_error_gd_<label>), and the figure plots them."""
    out = tmp_path / "gd.h5"
    args = ["sweep", "--widths", "16,32", "--seeds", "2", "--depth", "1", "--n", "4", "--d", "3", "--n-test", "0",
            "--p", "4", "--lr-fraction", "0.5", "--steps", "10", "--num-times", "3", "--no-inf", "--quiet",
            "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    sw = load_sweep(str(out))
    for label in ("p2", "p4", "dg", "discrete_p2", "discrete_o1m"):
        E = sw["scalars"][f"max_f_error_gd_{label}"]
        assert E.shape == (2, 2) and np.isfinite(E).all() and (E > 0).all(), label
    run = sw["runs"][(32, 1)]
    assert run["discrete_o1m_f"].shape == (3, 4) and run["gd_f"].shape == (3, 4)
    np.testing.assert_array_equal(run["gd_step"], [0, 5, 10])
    assert sw["config"]["base"]["t_max"] is None and sw["config"]["base"]["lr_fraction"] == 0.5
    assert main(["plot", "error-vs-width", str(out), "--quantity", "max_f_error_gd"]) == 0
    assert "discrete_o1m: slope" in capsys.readouterr().out
    assert main(args[:-1] + [str(tmp_path / "b.h5"), "--batch-seeds"]) == 2
    assert "--batch-seeds computes gradient flow only" in capsys.readouterr().err
