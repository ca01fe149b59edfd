"""The HDF5 schema (version 3): one layout for a run, used by solve files, sweep files and kernel files.

A run's group ``R`` (the root ``/`` of a solve file; ``/runs/m{width}_s{seed}`` in a sweep file) holds,
with T saved times, n training points, k test points and inputs of shape ``in``:

    R/true/t (T,)  R/true/f (T, n)  R/true/f_test (T, k)  R/true/K2 (T, n, n)  R/true/loss (T,)
                     attrs: solver, rtol, atol, num_steps, loss_fall   (absent where a gradient-descent run
                     skipped the flow, config flow false; the rows' t are then gradient descent's)
    R/nth/p{q}/t, f, f_test, K2, loss   truncated NTH at level q = 2..p   attrs: max_f_error, max_K2_error,
                                                                          max_test_error, [max_f_error_gd], num_steps
    R/dg/t, f, f_test, K2, loss, K2_late   DG first-order correction (p >= 4)   attrs: the errors, method
    R/inf/t, f, f_test, K2, loss        kernel gradient descent with Kbar^(2) (the m = inf row)
    R/gd/step, t, f, f_test, K2, loss   gradient descent at t = lr * step      attrs: lr, the errors
    R/gd/batches (S, B)                 under SGD (--batch-size B): the inputs of the batch of every step
    R/discrete/p2/step, t, f, ...       the discrete-time hierarchy's predictions of gradient descent on the
    R/discrete/o1m/...                  steps R/gd/step (frozen kernel; O(1/m) system; docs/math.md section 7)
                                        attrs: lr, the errors (max_f_error_gd etc. against gradient descent)
    R/init/f0 (n,)                      outputs at t = 0
    every prediction group and R/true, R/gd   attrs also: final_loss (the training loss at the last saved time)
                                        and, where the data have classes, accuracy, test_accuracy (the decided
                                        class, argmax of k outputs or f > 0 for one, against the labels) and,
                                        for a prediction, disagreement, test_disagreement (the fraction of
                                        inputs whose decided class differs from the reference's)
    R/kernels/K{r} (n,)*r, K{r}_test (k,)+(n,)*(r-1)   K^(r)(0) (solve files with save_kernels)
    (the trajectories */K2 are left out where the configuration has save_k2 false; the K2 errors are kept)
    R/spectrum/t (T,), [step (T,)]      with ``spectra``: the loss Hessian against the NTK at the reference's saved
        hessian_top, hessian_residuals  times (the flow's, or gradient descent's steps; docs/math.md section 11):
          (T, top)                      the top eigenvalues of H (Lanczos) and their residuals,
        gn_eigenvalues (T, N)           all of G's (decreasing),
        moments_H, moments_H_stderr,    Tr(H^j) (Hutchinson) and Tr(G^j), j = 1..4,
          moments_G (T, 4)
        trace_B2, trace_B2_stderr,      Tr(B^2) (Hutchinson), sqrt(Tr(B^2) / P), Lanczos steps
          rms_B, lanczos_steps (T,)     attrs: top, probes, spectrum_tol, num_params, at (true or gd)
    R                                   attrs: width, seed, loss_fall, K2_movement, kernel_mean_abs_K{r},
                                               dg_vs_p4, wall_time_<stage>, [warnings], with spectra the
                                               scalars of :func:`spectrum_summary`; in a sweep file also
                                               config (the run's resolved configuration, JSON)

The data live once per file: ``/data/X`` (n, *in), ``/data/y`` (n,) or (n, k), ``/data/X_test`` (k, *in),
and where the data have classes ``/data/labels`` (n,) and ``/data/labels_test`` (k,) (attrs normalization,
source). With k outputs per input, outputs carry a last axis of k and kernels and K2 run over the N = n k
samples s = a k + i (docs/math.md section 10); the configuration records ``loss`` and ``outputs``. Root attributes: ``schema_version``, ``config`` (JSON of every resolved option,
including the model's description ``model_info`` and ``arch_options``), seeds, package versions, device,
creation time, command. A sweep file's root also holds ``format`` = ``nth-sweep-3``, ``sweep_config``,
``widths``, ``seeds``. Version-1 files (flat per-run names in sweeps) stay readable (:mod:`nth.io._sweep`).

Dimensions (netCDF-4 dimension scales, :mod:`nth.io._hdf5`): every axis of every dataset above is named, so
``xarray.open_dataset(FILE, engine="h5netcdf", group=G)`` returns labelled arrays for G = ``true``, ``nth/p4``,
``dg``, ``gd``, ``data``, ... (in a sweep file, ``runs/m{width}_s{seed}/true`` and so on). The names:
``time`` (the saved times; the coordinate ``t``, stored in every group with a time axis), ``step`` (gradient
descent's recorded steps, groups ``gd`` and ``discrete/*``; coordinates ``step`` and ``t = lr * step``),
``eigenvalue``, ``gn_eigenvalue`` and ``moment`` (the spectrum group's), ``sample`` (training points),
``test_sample`` (test points), ``sample_2`` .. ``sample_r`` (the further training
slots of K^(2) and K^(r)), and ``feature`` (an input's coordinates; ``feature_0``, ``feature_1``, ... for inputs
with several axes). The dimensions of a run live in its group, those of the data in the file's root. A sweep
file's root also holds the sweep's table for xarray: every per-run scalar (``max_f_error_p4``, ``loss_fall``,
...) as an array over the dimensions ``width`` and ``seed``, whose coordinates are the widths and seeds (NaN
where a run is missing), so that ``xarray.open_dataset(SWEEP, engine="h5netcdf")`` is the error table.

A kernel file (``nth kernel --out``) holds the data, ``/kernels/K2`` (n, n) (the empirical K^(2)(0) of a
seeded network) and with ``--p`` the higher ``/kernels/K{r}`` (n,)*r, ``/infinite/nngp`` and ``/infinite/ntk`` (the limiting kernels, docs/math.md section 5), and
the root attributes with the request as ``config``.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import jax
import numpy as np

from ..data import Dataset
from ..engine import SolveResult
from ..engine import SolveConfig
from ..engine._rows import every_row, labels_in, row, rows_for
from ..kernel import Spectrum, separated_top
from ._hdf5 import package_versions

#: 3: version 2 with netCDF-4 dimensions on every axis, the time coordinate in every group with a time axis,
#: and a sweep's root table.
SCHEMA_VERSION = 3


def prediction_group(label: str) -> str:
    """Group of a prediction label (its row's :attr:`~nth.engine.AbstractRow.group`), or of the reference gd."""
    return "gd" if label == "gd" else row(label).group


#: The per-run error scalars of a sweep, against the flow (docs/math.md section 3) or (``_gd``) against gradient
#: descent (section 7), with what each measures over the horizon.
ERROR_QUANTITIES = {"max_f_error": "max_t |f - f_true| / sqrt(n)", "max_K2_error": "max_t |K2 - K2_true|",
                    "max_test_error": "max_t |f(x_test) - f_true(x_test)| / sqrt(k)",
                    "max_f_error_gd": "max_step |f - f_GD| / sqrt(n)",
                    "max_test_error_gd": "max_step |f(x_test) - f_GD(x_test)| / sqrt(k)"}


def prediction_labels(scalars: Mapping[str, Any], prefix: str) -> list[str]:
    """The prediction labels of the keys ``prefix + label`` (p2, p3, ..., discrete_p2, discrete_o1m, dg, inf), in
    the rows' table order (:mod:`nth.engine._rows`)."""
    return labels_in(scalars, prefix)


def sample_axes(k: int) -> tuple[str, ...]:
    """The dimensions of k training-point slots: sample, sample_2, ..., sample_k."""
    return ("sample",) + tuple(f"sample_{i}" for i in range(2, k + 1))


def dataset_axes(path: str, shape: tuple[int, ...], out_shape: tuple[int, ...] = ()) -> tuple[tuple[str, ...], str | None]:
    """The named dimensions of the schema's dataset ``path`` (relative to its run group, or ``data/...``) of the
    given shape, and its coordinates (module docstring); the rule :func:`nth.io._hdf5.write_group` applies.
    With outputs of per-input shape ``out_shape`` = (k,), outputs carry a last axis ``output``, and for k > 1
    kernels run over the n k samples (input, output), named ``pair``, ``pair_2``, ... (``test_pair`` for test
    inputs); targets of shape (n, j) carry ``target``."""
    group, _, name = path.rpartition("/")
    ndim = len(shape)
    out = ("output",) if len(out_shape) == 1 else ()
    pairs = math.prod(out_shape) > 1
    slots = (lambda r: tuple(a.replace("sample", "pair") for a in sample_axes(r))) if pairs else sample_axes
    test_slot = "test_pair" if pairs else "test_sample"
    if group == "data":
        if name in ("y", "labels", "labels_test"):
            return ("test_sample",) if name == "labels_test" else ("sample",) + (("target",) if ndim == 2 else ()), None
        features = ("feature",) if ndim == 2 else tuple(f"feature_{i}" for i in range(ndim - 1))
        return ("test_sample" if name == "X_test" else "sample",) + features, None
    if group == "init":
        return ("sample",) + out, None
    if group in ("kernels", "infinite"):
        if name.endswith("_test"):
            return (test_slot,) + slots(ndim - 1), None
        return slots(ndim), None
    stepped = group in _STEPPED  # gradient descent and the rows that predict its steps
    time, coords = ("step", "step t") if stepped else ("time", "t")
    if name in ("t", "step"):
        return (time,), None
    if name == "batches":  # every update 0..S-1, not only the saved steps
        return ("update", "batch"), None
    if name == "K2_late":
        return slots(2), None
    if group == "spectrum":  # at the reference's saved times (gradient descent's too: t = lr * step)
        per = {"hessian_top": ("eigenvalue",), "hessian_residuals": ("eigenvalue",), "gn_eigenvalues": ("gn_eigenvalue",),
               "moments_H": ("moment",), "moments_H_stderr": ("moment",), "moments_G": ("moment",)}
        return ("time",) + per.get(name, ()), "t"
    per_time = {"f": ("sample",) + out, "f_test": ("test_sample",) + out, "K2": slots(2), "loss": ()}
    if name not in per_time:
        raise ValueError(f"the schema names no dimensions for the dataset {path!r}")
    return (time,) + per_time[name], coords


#: The groups whose time axis is gradient descent's steps: gd itself and every row predicting it.
_STEPPED = {"gd"} | {r.group for r in every_row(4) if r.reference == "gd"}


def axes_for(result: SolveResult):
    """:func:`dataset_axes` for the files of ``result`` (its outputs per input)."""
    return functools.partial(dataset_axes, out_shape=tuple(result.out_shape))


def data_datasets(data: Dataset) -> tuple[dict[str, Any], dict[str, dict]]:
    ds: dict[str, Any] = {"data/X": data.X} | ({"data/y": data.y} if data.has_targets else {})
    if data.X_test is not None:
        ds["data/X_test"] = data.X_test
    for name in ("labels", "labels_test"):
        if getattr(data, name) is not None:
            ds[f"data/{name}"] = np.asarray(getattr(data, name))
    return ds, {"data": {"normalization": data.normalization, "source": data.source}}


def run_datasets(result: SolveResult, *, save_kernels: bool = False) -> tuple[dict[str, Any], dict[str, dict]]:
    """A run mapped onto the schema, relative to its group: ({'true/f': array, ...}, {'true': attrs, '': attrs}).
    Without the configuration's ``save_k2`` the K^(2)(t) trajectories (``*/K2``) are left out."""
    cfg = result.config
    fl = result.flow
    ds: dict[str, Any] = {"init/f0": result.f0}
    attrs: dict[str, dict] = {"": run_summary(result)}
    if fl is not None:  # a gradient-descent run may skip the flow (flow False): no true/ group then
        ds.update({"true/t": fl.ts, "true/f": fl.f, "true/K2": fl.K2, "true/loss": fl.loss})
        if fl.f_test is not None:
            ds["true/f_test"] = fl.f_test
        attrs["true"] = ({"solver": cfg["flow_solver"], "rtol": cfg["rtol"], "atol": cfg["atol"],
                          "num_steps": fl.stats.get("num_steps", -1), "loss_fall": result.loss_fall}
                         | result.flow_measures.as_dict())
    if save_kernels:
        ds.update({f"kernels/K{r}": k for r, k in result.kernels.items()})
        if result.test_kernels is not None:
            ds.update({f"kernels/K{r}_test": k for r, k in result.test_kernels.items()})
    for r in result.rows:
        pred, g = result.predictions[r.label].solution, r.group
        ds.update({f"{g}/f": pred.f, f"{g}/K2": pred.K2, f"{g}/loss": pred.loss})
        # every group with a time axis holds its coordinate (the flow's times; gd's steps for the discrete rows)
        if r.reference == "gd":
            ds.update({f"{g}/step": result.gd.steps, f"{g}/t": result.gd.ts})
        else:  # the flow's times, which are gradient descent's where the flow is skipped
            ds[f"{g}/t"] = result.trained.ts
        if pred.f_test is not None:
            ds[f"{g}/f_test"] = pred.f_test
        ds.update({f"{g}/{name}": v for name, v in r.datasets(pred).items()})
        attrs[g] = result.predictions[r.label].measures.as_dict() | r.attrs(pred)
    if result.gd is not None:
        gd = result.gd
        ds.update({"gd/step": gd.steps, "gd/t": gd.ts, "gd/f": gd.f, "gd/K2": gd.K2, "gd/loss": gd.loss})
        if gd.f_test is not None:
            ds["gd/f_test"] = gd.f_test
        if gd.batches is not None:
            ds["gd/batches"] = gd.batches
        attrs["gd"] = result.gd_measures.as_dict() | {"lr": gd.lr}
    if not cfg.get("save_k2", True):  # the trajectories K^(2)(t): (T, N, N) per group, the bulk of a large-n file
        ds = {k: v for k, v in ds.items() if not (k.endswith("/K2") and not k.startswith("kernels/"))}
    if result.spectra is not None:
        sp, ref = result.spectra, (fl if result.gd is None else result.gd)
        ds["spectrum/t"] = ref.ts
        if result.gd is not None:
            ds["spectrum/step"] = result.gd.steps
        ds.update({f"spectrum/{name}": v for name, v in spectrum_arrays(sp).items()})
        attrs["spectrum"] = {"top": cfg["top"], "probes": sp.probes, "spectrum_tol": cfg["spectrum_tol"],
                             "num_params": sp.num_params, "at": "true" if result.gd is None else "gd"}
    return {k: np.asarray(v) for k, v in ds.items()}, attrs


def spectrum_arrays(sp: Spectrum) -> dict[str, np.ndarray]:
    """Spectra along a trajectory (leading time axis) by the names of ``R/spectrum`` (module docstring)."""
    return {"hessian_top": sp.hessian_top, "hessian_residuals": sp.residuals, "gn_eigenvalues": sp.gn_eigenvalues,
            "moments_H": sp.moments_H.mean, "moments_H_stderr": sp.moments_H.stderr, "moments_G": sp.moments_G,
            "trace_B2": sp.trace_B2.mean, "trace_B2_stderr": sp.trace_B2.stderr, "rms_B": sp.rms_B,
            "lanczos_steps": sp.lanczos_steps}


def spectrum_summary(arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    """What a width study reads of spectra along training (docs/math.md section 11, DG Figs. 9-10), at the first
    (``_init``) and last (``_final``) saved time: ``separated``, how many of G's leading eigenvalues stand apart
    from the rest of H's spectrum (:func:`nth.kernel.separated_top`; their gaps lambda_i(H) - lambda_i(G) are read
    from the run's spectra); ``rms_B`` and ``trace_B2``; ``moment_reldiff_j`` = (Tr(H^j) - Tr(G^j)) / Tr(G^j),
    j = 1..4."""
    top = np.asarray(arrays["hessian_top"], dtype=np.float64)
    gn = np.asarray(arrays["gn_eigenvalues"], dtype=np.float64)
    mh, mg = np.asarray(arrays["moments_H"], dtype=np.float64), np.asarray(arrays["moments_G"], dtype=np.float64)
    out: dict[str, float] = {}
    for tag, i in (("init", 0), ("final", -1)):
        out[f"separated_{tag}"] = separated_top(top[i], gn[i])
        out[f"rms_B_{tag}"] = float(arrays["rms_B"][i])
        out[f"trace_B2_{tag}"] = float(arrays["trace_B2"][i])
        for j in range(mh.shape[1]):
            out[f"moment_reldiff_{j + 1}_{tag}"] = float((mh[i, j] - mg[i, j]) / mg[i, j])
    return out


def run_summary(result: SolveResult) -> dict[str, Any]:
    """The scalars of a run that sweeps tabulate against width: kernel sizes, NTK movement, DG - p4, wall times."""
    trained = result.trained
    out: dict[str, Any] = {"width": result.config["width"], "seed": result.config["seed"],
                           "loss_fall": result.loss_fall,
                           "K2_movement": float(np.abs(np.asarray(trained.K2[-1] - trained.K2[0])).max())}
    for r, K in result.kernels.items():
        out[f"kernel_mean_abs_K{r}"] = float(np.abs(K).mean())
    if result.dg_vs_p4 is not None:
        out["dg_vs_p4"] = result.dg_vs_p4
    if result.spectra is not None:
        out.update(spectrum_summary(spectrum_arrays(result.spectra)))
    out.update({f"wall_time_{k}": float(v) for k, v in result.wall_times.items()})
    if result.warnings:
        out["warnings"] = "\n".join(result.warnings)
    return out


def provenance() -> dict[str, Any]:
    """Where a computation ran: the device platform (``cpu``, ``gpu``, ``tpu``), its kind, and the package
    versions (``version_<package>``). Every file carries it at its root, and a sweep's runs carry their own: a
    resumed sweep may be continued on another machine."""
    device = jax.devices()[0]
    return ({"device": device.platform, "device_kind": str(getattr(device, "device_kind", device.platform))}
            | {f"version_{k}": v for k, v in package_versions().items()})


def file_attrs(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Root attributes every nth file carries: schema version, creation time, command, :func:`provenance`, and
    the resolved configuration with its seeds."""
    attrs: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    if config is not None:
        attrs.update(config=dict(config), seed=config.get("seed"), data_seed=config.get("data_seed"))
    attrs.update(provenance())
    return attrs


def solve_file(result: SolveResult, *, save_kernels: bool = False) -> tuple[dict[str, Any], dict[str, dict]]:
    """A solve file: the data, the run at the root, and the root attributes (module docstring)."""
    ds, attrs = data_datasets(result.data)
    run_ds, run_attrs = run_datasets(result, save_kernels=save_kernels)
    ds.update(run_ds)
    root = file_attrs(result.config) | run_attrs.pop("")
    attrs.update(run_attrs)
    attrs[""] = root
    return {"/" + k: v for k, v in ds.items()}, {"/" + k: v for k, v in attrs.items()}


def kernel_file(data: Dataset, config: Mapping[str, Any], finite: Mapping[int, Any] | None = None, nngp=None,
                ntk=None) -> tuple[dict[str, Any], dict[str, dict]]:
    """A kernel file (module docstring): the data, the kernels that were computed (``finite``: {r: K^(r)(0)}
    as ``kernels/K<r>``), and the root attributes."""
    ds, attrs = data_datasets(data)
    named = [(f"kernels/K{r}", K) for r, K in sorted((finite or {}).items())]
    for path, K in (*named, ("infinite/nngp", nngp), ("infinite/ntk", ntk)):
        if K is not None:
            ds[path] = np.asarray(K)
    attrs[""] = file_attrs(config)
    return {"/" + k: v for k, v in ds.items()}, {"/" + k: v for k, v in attrs.items()}


def created_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
