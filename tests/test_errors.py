"""Bad inputs get a clear NTHError naming the bad value, through the CLI too, and leave no output file."""

import os
import re

import numpy as np
import pytest

import nth
from nth.cli import main

SMALL = ["--width", "16", "--depth", "1", "--n", "4", "--d", "3", "--num-times", "3"]
HORIZON = ["--t-max", "1"]


def run_cli(args, tmp_path, capsys):
    out = tmp_path / "run.h5"
    code = main(["solve", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    return code, err, out


def assert_clean(tmp_path):
    """Nothing (no results file, no temporary file) is left behind."""
    assert sorted(os.listdir(tmp_path)) == [p for p in sorted(os.listdir(tmp_path)) if p.endswith(".npz")]


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((4, 3)), rng.standard_normal(4)
    W1, W2, a = rng.standard_normal((16, 3)), rng.standard_normal((16, 16)), rng.standard_normal(16)
    return {"X": X, "y": y, "W1": W1, "W2": W2, "a": a}


@pytest.mark.parametrize("args, pattern", [
    (["--p", "3", "--activation", "relu"], r"'relu' cannot be used with p = 3"),
    (["--p", "1"], r"p = 1 must be an integer >= 2"),
    (["--p", "2", "--n", "0"], r"n = 0 must be a positive integer"),
    (["--p", "2", "--rtol", "0"], r"rtol = 0.0 must be a finite positive"),
    (["--p", "4", "--memory-budget", "1KB"], r"(?s)K\^\(4\).*over the memory budget.*--memory-budget"),
    (["--p", "2", "--max-steps", "2"], r"(?s)true gradient flow solve failed.*max_steps"),
    (["--p", "3", "--dg"], r"DG correction needs K\^\(3\) and K\^\(4\), so p >= 4; got p = 3"),
    (["--p", "2", "--lr", "0.1"], r"needs both lr and steps"),
    (["--p", "4", "--matrix-free", "--dg"], r"DG correction needs a dense K\^\(4\)"),
    (["--p", "2", "--matrix-free"], r"matrix_free needs p >= 3"),
    (["--p", "2", "--devices", "0"], r"devices = 0 must be a positive integer"),
    (["--p", "2", "--chunk", "0"], r"chunk = 0 must be a positive integer"),
    (["--p", "2", "--lr", "-0.1", "--steps", "3"], r"lr = -0.1 must be"),
    (["--p", "2", "--lr-fraction", "1.5", "--steps", "3"], r"lr_fraction = 1.5 must be in \(0, 1\)"),
    (["--p", "2", "--lr", "0.1", "--lr-fraction", "0.5", "--steps", "3"], r"give the learning rate once"),
    (["--p", "2", "--lr-fraction", "0.5"], r"needs both lr and steps"),
])
def test_bad_options(tmp_path, capsys, args, pattern):
    code, err, out = run_cli(SMALL + args + ([] if "--lr" in args else HORIZON), tmp_path, capsys)
    assert code == 2
    assert err.startswith("nth: error: ")
    assert "Traceback" not in err
    assert re.search(pattern, err), err
    assert not out.exists()
    assert_clean(tmp_path)


@pytest.mark.parametrize("key, index, value, pattern", [
    ("X", (1, 2), np.nan, r"'X' has 1 non-finite value\(s\), first at index \(1, 2\)"),
    ("y", (3,), np.inf, r"'y' has 1 non-finite value\(s\), first at index \(3,\)"),
    ("W2", (0, 5), np.nan, r"'W2' has 1 non-finite value\(s\), first at index \(0, 5\)"),
    ("a", (2,), -np.inf, r"'a' has 1 non-finite value"),
])
def test_non_finite_inputs(tmp_path, capsys, files, key, index, value, pattern):
    files[key][index] = value
    data = write_npz(tmp_path / "data.npz", X=files["X"], y=files["y"])
    weights = write_npz(tmp_path / "w.npz", W1=files["W1"], W2=files["W2"], a=files["a"])
    code, err, out = run_cli(["--p", "2", "--data", data, "--weights", weights, "--t-max", "1"], tmp_path, capsys)
    assert code == 2 and not out.exists(), err
    assert re.search(pattern, err), err
    assert_clean(tmp_path)


@pytest.mark.parametrize("change, pattern", [
    ({"W1": np.zeros((16, 5))}, r"shape mismatch.*d = 3"),
    ({"W2": np.zeros((16, 15))}, r"'W2' has shape \(16, 15\); expected \(16, 16\)"),
    ({"y": np.zeros(5)}, r"'y' has shape \(5,\); expected \(4,\)"),
    ({"X": np.zeros((0, 3)), "y": np.zeros(0)}, r"n = 0 rows"),
    ({"X": np.zeros((4, 3))}, r"row 0 of 'X' is zero"),
])
def test_shape_mismatches_and_empty_data(tmp_path, capsys, files, change, pattern):
    files.update(change)
    data = write_npz(tmp_path / "data.npz", X=files["X"], y=files["y"])
    weights = write_npz(tmp_path / "w.npz", W1=files["W1"], W2=files["W2"], a=files["a"])
    code, err, out = run_cli(["--p", "2", "--data", data, "--weights", weights, "--t-max", "1"], tmp_path, capsys)
    assert code == 2 and not out.exists(), err
    assert re.search(pattern, err), err


def test_missing_files(tmp_path, capsys):
    code, err, _ = run_cli(["--data", str(tmp_path / "nope.npz")], tmp_path, capsys)
    assert code == 2 and "does not exist" in err


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run.h5"
    out.write_bytes(b"user's precious file")
    code = main(["solve", *SMALL, *HORIZON, "--p", "2", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "--force" in err
    assert out.read_bytes() == b"user's precious file"
    assert os.listdir(tmp_path) == ["run.h5"]
    # with --force it is replaced by a valid results file
    assert main(["solve", *SMALL, *HORIZON, "--p", "2", "--out", str(out), "--quiet", "--force"]) == 0
    assert nth.read_h5(out)["/true/f"].shape == (3, 4)


def test_exception_while_writing_leaves_no_file(tmp_path):
    out = tmp_path / "run.h5"

    def boom(h5file):
        assert "/true/f" in h5file  # the data are half-way into the temporary file
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        nth.write_h5(out, {"/true/f": np.ones((3, 4)), "/true/t": np.arange(3.0)}, before_commit=boom)
    assert os.listdir(tmp_path) == []


def test_interrupted_solve_writes_nothing(tmp_path, monkeypatch):
    """An exception in a late stage (here: the NTH solve) leaves no file either."""
    import nth.engine._rows

    def fail(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(nth.engine._rows, "truncated_nth", fail)
    cfg = nth.SolveConfig(p=2, width=16, depth=1, n=4, d=3, t_max=1.0, num_times=3)
    with pytest.raises(KeyboardInterrupt):
        nth.run_solve(cfg, tmp_path / "run.h5")
    assert os.listdir(tmp_path) == []
