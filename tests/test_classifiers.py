"""Classifiers through the run engine, the files and the command line (docs/math.md section 10): a run with
the cross-entropy or the logistic loss solves every row with the loss (each row equals the library call on the
run's own kernels), records the loss, the outputs, accuracies and disagreement rates, writes files with an
``output`` dimension that read back, and refuses what has no meaning for a loss with one line."""

import dataclasses
import json

import h5py
import jax.numpy as jnp
import numpy as np
import pytest

import nth
from nth.cli import main
from nth.losses import decisions

#: 3 digit classes, 2 images each, 3 test images: 18 samples; a short horizon keeps the run small.
CE = dict(p=4, width=64, data="digits", classes=3, digits_per_class=2, n_test=3, loss="cross-entropy", t_max=20.0,
          num_times=5)


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("ce") / "ce.h5"
    return nth.run_solve(nth.SolveConfig(**CE), str(path))


def test_rows_of_a_classifier_run_equal_the_library_calls(ce_run):
    """The engine hands each row the run's loss, targets (integer labels) and kernels over the 18 samples."""
    res = ce_run
    assert res.out_shape == (3,) and res.f0.shape == (6, 3) and res.kernels[2].shape == (18, 18)
    assert [r.label for r in res.rows] == ["p2", "p3", "p4", "dg", "inf"]
    y = jnp.asarray(res.data.labels)
    np.testing.assert_array_equal(res.data.labels, [0, 0, 1, 1, 2, 2])
    ts = res.flow.ts
    test = dict(test_kernels=res.test_kernels, f0_test=res.flow.f_test[0])  # the same state as the run's
    for q in (2, 4):
        ref = nth.truncated_nth(res.kernels, res.f0, y, ts, p=q, loss="cross-entropy", **test)
        np.testing.assert_allclose(res.predictions[f"p{q}"].solution.f, ref.f, rtol=0, atol=1e-12)
    dg = nth.dg_correction(res.kernels, res.f0, y, ts, loss="cross-entropy", method="ode",
                           test_kernels={r: res.test_kernels[r] for r in (2, 3, 4)}, f0_test=res.flow.f_test[0])
    assert res.predictions["dg"].solution.method == "ode"  # the closed form is the mse fast path
    np.testing.assert_allclose(res.predictions["dg"].solution.f, dg.f, rtol=0, atol=1e-12)
    # the true loss is the cross-entropy of the flow's outputs
    f, ce = res.flow.f[-1], nth.losses.CrossEntropy()
    want = np.mean([float(ce.per_input(f[a], int(y[a]))) for a in range(6)])
    assert abs(float(res.flow.loss[-1]) - want) < 1e-12


def test_classifier_measures_are_recorded(ce_run):
    res = ce_run
    acc = float(np.mean(np.argmax(np.asarray(res.flow.f[-1]), -1) == res.data.labels))
    assert res.flow_measures.accuracy == acc
    for label in ("p2", "p4", "dg"):
        e = res.predictions[label].measures
        dec = np.asarray(decisions(res.predictions[label].solution.f[-1], (3,)))
        assert e.disagreement == float(np.mean(dec != np.argmax(np.asarray(res.flow.f[-1]), -1)))
        assert None not in (e.final_loss, e.accuracy, e.test_accuracy, e.test_disagreement)
    table = nth.io.format_table(res)
    assert "acc" in table and "disagree" in table and "cross-entropy" in table


def test_classifier_file_has_an_output_dimension_and_reads_back(ce_run):
    with h5py.File(ce_run.path, "r") as h:
        cfg = json.loads(h.attrs["config"]) if isinstance(h.attrs["config"], str) else dict(h.attrs["config"])
        assert h["nth/p4/f"].shape == (5, 6, 3) and h["nth/p4/K2"].shape == (5, 18, 18)
        assert h["data/labels"][()].tolist() == [0, 0, 1, 1, 2, 2] and h["data/labels_test"].shape == (3,)
        assert "accuracy" in h["true"].attrs and "disagreement" in h["dg"].attrs
    assert cfg["loss"] == "cross-entropy" and cfg["model_info"]["outputs"] == 3
    xr = pytest.importorskip("xarray")
    ds = xr.open_dataset(ce_run.path, engine="h5netcdf", group="nth/p4")
    assert ds["f"].dims == ("time", "sample", "output") and ds["K2"].dims == ("time", "pair", "pair_2")


def test_logistic_run_with_two_digit_classes():
    cfg = nth.SolveConfig(**(CE | dict(loss="logistic", classes=2, p=2, n_test=0)))
    res = nth.solve(cfg)
    assert res.out_shape == () and res.f0.shape == (4,)
    ref = nth.truncated_nth(res.kernels, res.f0, jnp.asarray(res.data.labels, float), res.flow.ts, p=2,
                            loss="logistic")
    np.testing.assert_allclose(res.predictions["p2"].solution.f, ref.f, rtol=0, atol=1e-12)
    assert res.predictions["p2"].measures.accuracy == float(
        np.mean((np.asarray(res.predictions["p2"].solution.f[-1]) > 0) == res.data.labels))


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_built_in_architectures_take_outputs(arch):
    spec = nth.models.ModelSpec(arch=arch, depth=1)
    model = spec.build(seed=0, width=3, in_shape=(4,), dtype=jnp.float64, outputs=3)
    X = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4)))
    assert model(X).shape == (2, 3) and model.describe()["outputs"] == 3
    one = spec.build(seed=0, width=3, in_shape=(4,), dtype=jnp.float64)
    assert one(X).shape == (2,)  # one output: the readout and its draw as before


@pytest.mark.parametrize("argv,pattern", [
    (["--loss", "logistic", "--outputs", "3"], "logistic loss takes one output"),
    (["--loss", "cross-entropy"], "cross-entropy loss needs class labels"),
    (["--loss", "cross-entropy", "--data", "digits", "--outputs", "1"], "k >= 2 class scores"),
    (["--classes", "3"], "--classes C chooses the digits"),
    (["--data", "digits", "--classes", "11"], "classes = 11"),
    (["--loss", "hinge"], "loss = 'hinge' is not known"),
    (["--outputs", "0"], "outputs = 0"),
    (["--loss", "logistic", "--data", "digits", "--dg-method", "closed"], "exists for the mse loss only"),
])
def test_what_has_no_meaning_for_a_loss_is_refused_with_one_line(argv, pattern, capsys, tmp_path):
    out = tmp_path / "x.h5"
    size = [] if "--data" in argv else ["--n", "4"]
    assert main(["solve", "--p", "2", "--width", "8", "--quiet", "--out", str(out)] + size + argv) == 2
    err = capsys.readouterr().err
    assert pattern in err and err.count("\n") == 1, err
    assert not out.exists()


def test_mse_with_several_outputs_fits_one_hot_digits():
    """mse on three digit classes: targets one-hot (n, 3), three outputs, accuracies from the labels."""
    res = nth.solve(nth.SolveConfig(**(CE | dict(loss="mse", p=2, n_test=0))))
    assert res.out_shape == (3,)
    np.testing.assert_array_equal(res.data.y, np.eye(3)[[0, 0, 1, 1, 2, 2]])
    assert res.predictions["p2"].measures.accuracy is not None


def test_importing_nth_leaves_the_precision_alone():
    """float64 is explicit: import nth does not switch JAX to 64 bits; a built-in model, a run or
    nth.enable_float64() does (nth._precision)."""
    import subprocess
    import sys

    code = ("import jax, jax.numpy as jnp, nth; a = jax.config.jax_enable_x64; x = jnp.ones(2).dtype; "
            "net = nth.init_mlp(0, 3, 4, 1, 'tanh'); print(a, x, jax.config.jax_enable_x64, net.a.dtype)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "float32", "True", "float64"]


def test_mse_results_of_a_committed_sweep_are_unchanged():
    """A run of the committed results/sweep_gd_half_mlp.h5 (written before losses, outputs and prediction rows
    existed), solved again from its recorded configuration: every row, the flow and gradient descent equal the
    file to 1e-12 (the mse, scalar-output path is unchanged; the file's schema still reads)."""
    sw = nth.load_sweep("results/sweep_gd_half_mlp.h5")
    res = nth.solve(nth.SolveConfig(**sw["config"]["base"], width=256, seed=0))
    run = sw["runs"][(256, 0)]
    got = {"true": res.flow, "gd": res.gd} | {label: p.solution for label, p in res.predictions.items()}
    assert set(got) == {"true", "gd", "p2", "p3", "p4", "dg", "discrete_p2", "discrete_o1m"}
    for label, sol in got.items():
        for name in ("f", "f_test", "K2", "loss"):
            np.testing.assert_allclose(getattr(sol, name), run[f"{label}_{name}"], rtol=0, atol=1e-10,
                                       err_msg=f"{label} {name}")


def test_cross_entropy_on_a_file_whose_targets_are_labels(tmp_path):
    """An .npz whose y holds integer labels trains with cross-entropy (the labels are read from y, their count
    sets the outputs); a y that is not labels is refused with one line before any work."""
    X = np.random.default_rng(0).standard_normal((6, 3))
    np.savez(tmp_path / "ce.npz", X=X, y=np.array([0, 1, 2, 0, 1, 2]))
    cfg = nth.SolveConfig(p=2, width=8, data=str(tmp_path / "ce.npz"), t_max=1.0, num_times=3, loss="cross-entropy")
    res = nth.solve(cfg)
    assert res.out_shape == (3,) and res.config["outputs"] == 3 and res.predictions["p2"].measures.accuracy is not None
    np.savez(tmp_path / "bad.npz", X=X, y=np.array([0, 1, 2.5, 0, 1, 2]))
    with pytest.raises(nth.ConfigError, match="needs class labels"):
        nth.solve(dataclasses.replace(cfg, data=str(tmp_path / "bad.npz")))


def test_a_float32_network_is_the_float64_one_rounded_whatever_the_process_state():
    import subprocess
    import sys

    code = ("import nth, numpy as np; a = np.asarray(nth.init_mlp(0, 3, 8, 1, dtype='float32').a); "
            "b = np.asarray(nth.init_mlp(0, 3, 8, 1).a); print(np.array_equal(a, b.astype('float32')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_kernel_command_over_samples(tmp_path, capsys):
    """nth kernel --outputs 3: K^(2)(0) of a network with 3 outputs over the 3n samples, and the limiting
    kernels times the identity on outputs (the m = inf row's kernel), in the file on pair axes."""
    out = tmp_path / "k.h5"
    assert main(["kernel", "--n", "4", "--d", "3", "--width", "32", "--depth", "1", "--infinite", "--outputs", "3",
                 "--out", str(out)]) == 0
    assert "3 outputs each (12 samples)" in capsys.readouterr().out
    one = nth.io._kernel_report.compute_kernels(nth.io._kernel_report.KernelRequest(
        n=4, d=3, depth=1, infinite=True, width=32))
    with h5py.File(out, "r") as h:
        K2, ntk = h["kernels/K2"][()], h["infinite/ntk"][()]
    assert K2.shape == (12, 12)
    np.testing.assert_array_equal(ntk, np.kron(np.asarray(one.limiting.ntk), np.eye(3)))
    xr = pytest.importorskip("xarray")
    assert xr.open_dataset(out, engine="h5netcdf", group="kernels")["K2"].dims == ("pair", "pair_2")
