"""`nth solve` end to end: the default problem, and user data + weights files, give the documented schema."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np

import nth
from nth.cli import main


def check_schema(path, p, n, T, d, save_kernels=False, k=0, dg=False, gd=False):
    with h5py.File(path, "r") as h:
        if k:
            assert h["/data/X_test"].shape == (k, d) and h["/true/f_test"].shape == (T, k)
            for q in range(2, p + 1):
                assert h[f"/nth/p{q}/f_test"].shape == (T, k)
                assert h[f"/nth/p{q}"].attrs["max_test_error"] > 0
        else:
            assert "/true/f_test" not in h
        if dg:
            assert h["/dg/f"].shape == (T, n) and h["/dg/K2"].shape == (T, n, n)
            assert h["/dg/K2_late"].shape == (n, n)
            if k:
                assert h["/dg/f_test"].shape == (T, k)
        else:
            assert "/dg" not in h
        if gd:
            for name in ("step", "t", "loss"):
                assert h[f"/gd/{name}"].shape == (T,)
            assert h["/gd/f"].shape == (T, n)
            np.testing.assert_allclose(h["/gd/t"][()], h["/true/t"][()])
            assert h["/nth/p2"].attrs["max_f_error_gd"] > 0
        assert h["/true/t"].shape == (T,)
        assert h["/true/f"].shape == (T, n)
        assert h["/true/K2"].shape == (T, n, n)
        assert h["/true/loss"].shape == (T,)
        for q in range(2, p + 1):
            assert h[f"/nth/p{q}/f"].shape == (T, n)
            assert h[f"/nth/p{q}/K2"].shape == (T, n, n)
            assert h[f"/nth/p{q}"].attrs["max_f_error"] > 0
        assert f"/nth/p{p + 1}" not in h
        assert h["/data/X"].shape == (n, d) and h["/data/y"].shape == (n,)
        np.testing.assert_allclose(np.linalg.norm(h["/data/X"][()], axis=1), 1.0, rtol=1e-14)
        if save_kernels:
            for r in range(2, p + 1):
                assert h[f"/kernels/K{r}"].shape == (n,) * r
        else:
            assert "/kernels" not in h
        attrs = dict(h.attrs)
        cfg = json.loads(attrs["config"])
        assert cfg["p"] == p and cfg["n"] == n
        for key in ("seed", "version_nth", "version_jax", "version_diffrax", "version_equinox",
                    "wall_time_kernels", "wall_time_gradient_flow", f"wall_time_nth_p{p}"):
            assert key in attrs, key
        assert h["/data"].attrs["normalization"] == "sphere"
        return cfg, np.asarray(h["/true/loss"])


def test_default_problem_end_to_end(tmp_path):
    """`nth solve --p 4` exactly as the README runs it (width 1024, depth 2, tanh, n = 16, d = 8)."""
    out = tmp_path / "default.h5"
    proc = subprocess.run([sys.executable, "-m", "nth.cli", "solve", "--p", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "p=4" in proc.stdout and "dg" in proc.stdout and "training loss fell" in proc.stdout
    cfg, loss = check_schema(out, 4, 16, 41, 8, k=4, dg=True)
    assert cfg["width"] == 1024 and cfg["depth"] == 2 and cfg["activation"] == "tanh"
    assert loss[0] / loss[-1] > 100
    with h5py.File(out) as h:  # the predictions improve with the level where the theory says they should
        assert h["/nth/p4"].attrs["max_f_error"] < 0.1 * h["/nth/p2"].attrs["max_f_error"]
        assert h["/dg"].attrs["max_f_error"] < 0.1 * h["/nth/p2"].attrs["max_f_error"]
        # the m = inf row (kernel GD with Kbar^(2)) is further off than the finite frozen kernel (docs/math.md section 5)
        assert h["/inf/f"].shape == (41, 16) and h["/inf"].attrs["max_f_error"] > h["/nth/p2"].attrs["max_f_error"]
    assert cfg["param"] == "ntk" and cfg["inf"] and cfg["tp4"]["r"] == "1/2" and cfg["tp4"]["kernel_regime"]


def test_user_data_and_weights(tmp_path, capsys):
    rng = np.random.default_rng(7)
    m, d, n = 64, 5, 6
    X = rng.standard_normal((n, d)) * 3.0  # not normalized: nth projects onto the sphere
    y = np.tanh(X[:, 0])
    np.savez(tmp_path / "data.npz", X=X, y=y, X_test=rng.standard_normal((3, d)))
    W = {"W1": rng.standard_normal((m, d)), "W2": rng.standard_normal((m, m)), "W3": rng.standard_normal((m, m)),
         "a": rng.standard_normal(m)}
    np.savez(tmp_path / "w.npz", **W)
    out = tmp_path / "user.h5"
    code = main(["solve", "--p", "3", "--data", str(tmp_path / "data.npz"), "--weights", str(tmp_path / "w.npz"),
                 "--out", str(out), "--save-kernels", "--num-times", "7", "--t-max", "20", "--quiet"])
    assert code == 0, capsys.readouterr().err
    cfg, _ = check_schema(out, 3, n, 7, d, save_kernels=True, k=3)
    assert cfg["width"] == m and cfg["depth"] == 3
    # the stored kernels and outputs are those of exactly the user's weights
    net = nth.mlp_from_arrays(W)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    with h5py.File(out) as h:
        np.testing.assert_allclose(h["/init/f0"][()], np.asarray(net(Xn)), rtol=1e-12)
        np.testing.assert_allclose(h["/kernels/K2"][()], np.asarray(nth.ntk(net, Xn)), rtol=1e-12)
        np.testing.assert_allclose(h["/true/f"][0], h["/init/f0"][()], rtol=1e-12)
        assert h["/kernels/K3_test"].shape == (3, n, n)
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_finite_learning_rate_run(tmp_path, capsys):
    """`--lr --steps`: gradient descent stored under /gd and every prediction compared at t = lr * step."""
    out = tmp_path / "gd.h5"
    code = main(["solve", "--p", "4", "--width", "128", "--depth", "1", "--n", "6", "--d", "3", "--lr", "0.05",
                 "--steps", "200", "--num-times", "5", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "f vs GD" in captured.out
    check_schema(out, 4, 6, 5, 3, k=4, dg=True, gd=True)
    with h5py.File(out) as h:
        np.testing.assert_array_equal(h["/gd/step"][()], [0, 50, 100, 150, 200])
        assert 0 < h["/gd"].attrs["max_f_error"] < 0.05  # O(lr) away from the flow
        for order in ("p2", "o1m"):  # the discrete-time rows, on the same steps
            assert h[f"/discrete/{order}/f"].shape == (5, 6) and h[f"/discrete/{order}/f_test"].shape == (5, 4)
            assert h[f"/discrete/{order}"].attrs["lr"] == 0.05
    assert "d-o1m" in captured.out and "test vs GD" in captured.out


def test_discrete_rows_predict_gradient_descent_at_half_the_stable_step(tmp_path, capsys):
    """`--lr-fraction 0.5`: against real gradient descent the discrete O(1/m) row beats the discrete frozen kernel,
    and both beat the continuous p = 4 prediction, whose O(lr) error no width removes (docs/math.md section 7)."""
    out = tmp_path / "gd.h5"
    code = main(["solve", "--p", "4", "--width", "1024", "--depth", "1", "--n", "6", "--d", "3", "--n-test", "2",
                 "--lr-fraction", "0.5", "--steps", "40", "--num-times", "5", "--no-inf", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    with h5py.File(out) as h:
        e = {g: h[g].attrs["max_f_error_gd"] for g in ("/discrete/o1m", "/discrete/p2", "/nth/p4")}
        cfg = json.loads(h.attrs["config"])
        stable = 2 * 6 / np.linalg.eigvalsh(h["/true/K2"][0])[-1]
    assert e["/discrete/o1m"] < e["/discrete/p2"] / 5 < e["/nth/p4"] / 5, e
    np.testing.assert_allclose(cfg["lr"], 0.5 * stable, rtol=1e-10)
    assert cfg["lr_fraction"] == 0.5 and cfg["steps"] == 40


def test_dry_run_prints_the_plan_and_refuses_what_would_not_fit(tmp_path, capsys, monkeypatch):
    """--dry-run: every stage's predicted memory, nothing computed or written; over budget it names the way out
    (matrix-free), which then fits."""
    monkeypatch.chdir(tmp_path)
    assert main(["solve", "--p", "4", "--n", "128", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for stage in ("K^(4): 2.0 GiB", "stage kernels", "stage gradient flow", "stage truncated NTH", "predicted peak"):
        assert stage in out
    assert main(["solve", "--p", "4", "--n", "128", "--memory-budget", "2GiB", "--dry-run"]) == 2
    assert "--matrix-free" in capsys.readouterr().err
    assert main(["solve", "--p", "4", "--n", "128", "--memory-budget", "2GiB", "--matrix-free", "--dry-run"]) == 0
    assert "K^(4): not stored" in capsys.readouterr().out
    assert main(["solve", "--p", "4", "--n", "16", "--lr", "0.1", "--steps", "10", "--dry-run"]) == 0
    assert "stage discrete-time hierarchy" in capsys.readouterr().out  # the tensors O11, O111, M, P are planned
    assert os.listdir(tmp_path) == []


def test_float32_run_adjusts_tolerances_and_flags_the_floor(tmp_path, capsys):
    """float32: tolerances raised to what float32 can meet (recorded in the file), and errors within 10x of the
    measured float32 floor flagged as unresolved (results/float32_floor.txt)."""
    from nth.engine import float32_floor, float32_warnings

    out = tmp_path / "f32.h5"
    assert main(["solve", "--p", "2", "--width", "64", "--depth", "1", "--n", "4", "--d", "3", "--t-max", "5",
                 "--num-times", "3", "--dtype", "float32", "--out", str(out), "--quiet"]) == 0
    with h5py.File(out, "r") as h:
        cfg = json.loads(h.attrs["config"])
        assert cfg["rtol"] == 1e-6 and cfg["atol"] == 1e-8 and cfg["dtype"] == "float32"
        assert h["/true/f"].dtype == np.float32
    assert 1e-7 < float32_floor(256) < float32_floor(4096) < 1e-6
    warn = float32_warnings({"p4": nth.Measures(max_f_error=2e-6), "p2": nth.Measures(max_f_error=1e-3)}, 4096)
    assert len(warn) == 1 and warn[0].startswith("p4") and "float64" in warn[0]


def test_params_kernel_and_mup_commands(tmp_path, capsys):
    """`nth params` prints TP4 Table 1; `nth kernel --infinite` prints and writes Kbar^(2), NNGP and the finite
    gap, and never replaces a file without --force; `nth solve --param mup` records the TP4 quantities and has
    no inf row."""
    assert main(["params", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "meanfield" in out and "feature learning" in out and "kernel regime" in out
    path = tmp_path / "k.h5"
    args = ["kernel", "--infinite", "--width", "256", "--depth", "1", "--n", "5", "--d", "3", "--activation", "erf",
            "--out", str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Kbar^(2) (m = inf, closed form)" in out and "/ sqrt(m)" in out
    with h5py.File(path) as h:
        assert h["/infinite/ntk"].shape == (5, 5) and h["/kernels/K2"].shape == (5, 5)
        assert json.loads(h.attrs["config"])["activation"] == "erf" and "version_jax" in h.attrs
    assert main(args) == 2 and "exists" in capsys.readouterr().err
    assert main(["kernel", "--infinite", "--param", "mup"]) == 2
    assert "no limiting kernel" in capsys.readouterr().err
    out = tmp_path / "mup.h5"
    assert main(["solve", "--p", "3", "--param", "mup", "--width", "64", "--depth", "2", "--n", "5", "--d", "3",
                 "--t-max", "2", "--num-times", "3", "--out", str(out), "--quiet"]) == 0
    with h5py.File(out) as h:
        cfg = json.loads(h.attrs["config"])
        assert cfg["tp4"]["regime"] == "feature learning" and cfg["tp4"]["eta_exponents"] == ["1", "1", "0"]
        assert "/inf" not in h
