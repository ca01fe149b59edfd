"""Every script in examples/ runs at tiny sizes and produces what it promises, so that none of them rots.

Each script with a ``main`` runs as ``python examples/NAME.py <tiny arguments>`` in a fresh directory, and its
outputs (files and printed table) are checked. A new example is picked up by the glob and must get an entry in
TINY. JAX compilation, mostly single-threaded, dominates the time, so the scripts run at the same time (34 s
on a 2-core CPU, against 55 s one after the other).
"""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import nth

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Small-size arguments of every example (paths relative to the directory the script runs in).
TINY = {
    "sweep_and_figure.py": ["--widths", "16,32", "--seeds", "1", "--p", "3", "--n", "4", "--d", "3", "--n-test", "0",
                            "--t-max", "2", "--num-times", "3", "--out", "sweep.h5"],
    "own_model.py": ["--width", "8", "--p", "3", "--n", "3", "--n-test", "1", "--t-max", "1", "--num-times", "3",
                     "--out", "own.h5"],
    "correlation_function.py": ["f(x1) f(x2)", "d{mu}f(x1) d{nu}f(x2) d{mu,nu}f(x3) f(x4)", "--widths", "16,32",
                                "--draws", "8", "--depth", "1", "--out", "corr.h5"],
    "gradient_descent.py": ["--widths", "16", "--seeds", "1", "--n", "4", "--d", "3", "--steps", "4",
                            "--num-times", "3", "--out", "gd.h5"],
}


def scripts_with_main() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if re.search(r"^def main\(", p.read_text(), re.M))


def run_example(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=os.environ | {"PYTHONPATH": str(EXAMPLES.parent)})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every example with a TINY entry, run once, all at the same time: {name: (finished process, its directory)}."""
    dirs = {name: tmp_path_factory.mktemp(name.removesuffix(".py")) for name in scripts_with_main() if name in TINY}
    with ThreadPoolExecutor(max_workers=len(dirs) or 1) as pool:
        futures = {name: pool.submit(run_example, name, TINY[name], d) for name, d in dirs.items()}
        return {name: (f.result(), dirs[name]) for name, f in futures.items()}


def ok(runs, name: str) -> tuple[str, Path]:
    assert name in runs, f"{name} has no small-size arguments in TINY"
    proc, cwd = runs[name]
    assert proc.returncode == 0, f"{name} failed (status {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout, cwd


def row(out: str, label: str) -> list[str]:
    """The fields of the printed table row that starts with ``label``."""
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == label:
            return fields
    raise AssertionError(f"no row {label!r} in:\n{out}")


def test_every_example_runs_small_and_has_its_own_check():
    """Each example has small-size arguments in TINY and a test below, test_<name>, that checks what it printed
    and wrote against its files (a new example needs both)."""
    scripts = scripts_with_main()
    assert {"sweep_and_figure.py", "own_model.py", "correlation_function.py", "gradient_descent.py"} <= set(scripts)
    assert not set(scripts) - set(TINY), f"examples without small-size arguments in TINY: {set(scripts) - set(TINY)}"
    assert not set(TINY) - set(scripts), f"TINY names scripts that are gone: {set(TINY) - set(scripts)}"
    unchecked = [n for n in scripts if not callable(globals().get(f"test_{n.removesuffix('.py')}"))]
    assert not unchecked, f"examples without a test_<name> checking their output: {unchecked}"


def test_sweep_and_figure(runs):
    out, cwd = ok(runs, "sweep_and_figure.py")
    sw = nth.load_sweep(str(cwd / "sweep.h5"))
    assert sw["widths"].tolist() == [16, 32] and sw["seeds"].tolist() == [0]
    for label, predicted in (("p2", -1), ("p3", -1), ("inf", -0.5)):
        errors = sw["scalars"][f"max_f_error_{label}"]
        assert errors.shape == (2, 1) and np.all(np.isfinite(errors)) and np.all(errors > 0)
        fields = row(out, label)  # label, error per width, slope [lo, hi], predicted
        assert np.allclose([float(v) for v in fields[1:3]], errors[:, 0], rtol=1e-3)
        assert float(fields[-1]) == predicted
    png = cwd / "sweep_f_error_vs_width.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "width at which the error falls below" in out
    # the same command again resumes the finished sweep: nothing is computed, the file is kept
    again = run_example("sweep_and_figure.py", TINY["sweep_and_figure.py"], cwd)
    assert again.returncode == 0, again.stderr
    assert "0 runs computed now, 2 were already there" in again.stdout


def test_own_model(runs):
    out, cwd = ok(runs, "own_model.py")
    for label in ("p2", "p3"):
        errors = [float(v) for v in row(out, label)[1:]]  # output, NTK and test-output errors
        assert len(errors) == 3 and all(np.isfinite(errors)) and all(e > 0 for e in errors)
    h = nth.read_h5(str(cwd / "own.h5"))
    assert h["/nth/p3/f"].shape == h["/true/f"].shape == (3, 3)
    assert "BiasedNet" in h["@/"]["config"]
    assert float(row(out, "p3")[1]) == pytest.approx(h["@/nth/p3"]["max_f_error"], rel=1e-3)
    # an existing output file is refused (before any computation), and left as it was
    before = (cwd / "own.h5").read_bytes()
    again = run_example("own_model.py", TINY["own_model.py"], cwd)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert (cwd / "own.h5").read_bytes() == before


def test_correlation_function(runs):
    out, cwd = ok(runs, "correlation_function.py")
    stored = nth.load_corr(str(cwd / "corr.h5"))
    assert stored["config"].widths == (16, 32) and stored["draws"] == 8
    assert all(v.shape == (8, 2) and np.all(np.isfinite(v)) for v in stored["values"].values())
    assert "s_C = 0, variance exponent 2 s_C = 0" in out
    assert "n_e = 0, n_o = 2, M = 4: s_C = -1, variance exponent 2 s_C = -2" in out
    measured = out[out.index("measured:"):]
    assert row(measured, "f(x1)")[2:3] == ["0"]  # the function's two factors, then s_C
    assert row(measured, "d{mu}f(x1)")[4:5] == ["-1"]


def test_gradient_descent(runs):
    out, cwd = ok(runs, "gradient_descent.py")
    errors = {label: float(row(out, label)[-1]) for label in ("d-p2", "d-o1m", "p=2", "p=4", "dg", "gd")}
    assert all(np.isfinite(e) and e > 0 for e in errors.values())
    # the discrete O(1/m) system is closer to real gradient descent than the frozen kernel and than continuous p = 4
    assert errors["d-o1m"] < errors["d-p2"] < errors["p=4"]
    sw = nth.load_sweep(str(cwd / "gd.h5"))  # the runs are a sweep file, as `nth sweep --lr-fraction` writes
    assert sw["widths"].tolist() == [16] and sw["config"]["base"]["lr_fraction"] == 0.5
    run = sw["runs"][(16, 0)]
    for name in ("gd_f", "discrete_p2_f", "discrete_o1m_f", "p4_f"):
        assert run[name].shape == (3, 4), name
    assert float(row(out, "d-o1m")[-1]) == pytest.approx(sw["scalars"]["max_f_error_gd_discrete_o1m"][0, 0], rel=1e-3)
    assert float(row(out, "gd")[-1]) == pytest.approx(sw["scalars"]["max_f_error_gd"][0, 0], rel=1e-3)
    assert np.isclose(sw["scalars"]["lr_gd"][0, 0], sw["scalars"]["lr_discrete_p2"][0, 0])
