"""The HDF5 schema (version 2): one layout for a run, used by solve files, sweep files and kernel files.

A run's group ``R`` (the root ``/`` of a solve file; ``/runs/m{width}_s{seed}`` in a sweep file) holds,
with T saved times, n training points, k test points and inputs of shape ``in``:

    R/true/t (T,)  R/true/f (T, n)  R/true/f_test (T, k)  R/true/K2 (T, n, n)  R/true/loss (T,)
                     attrs: solver, rtol, atol, num_steps, loss_fall
    R/nth/p{q}/f, f_test, K2, loss      truncated NTH at level q = 2..p   attrs: max_f_error, max_K2_error,
                                                                          max_test_error, [max_f_error_gd], num_steps
    R/dg/f, f_test, K2, loss, K2_late   DG first-order correction (p >= 4)   attrs: the errors, method
    R/inf/f, f_test, K2, loss           kernel gradient descent with Kbar^(2) (the m = inf row)
    R/gd/step, t, f, f_test, K2, loss   gradient descent at t = lr * step      attrs: lr, the errors
    R/discrete/p2/f, f_test, K2, loss   the discrete-time hierarchy's predictions of gradient descent on the
    R/discrete/o1m/...                  steps R/gd/step (frozen kernel; O(1/m) system; docs/math.md section 7)
                                        attrs: lr, the errors (max_f_error_gd etc. against gradient descent)
    R/init/f0 (n,)                      outputs at t = 0
    R/kernels/K{r} (n,)*r, K{r}_test (k,)+(n,)*(r-1)   K^(r)(0) (solve files with save_kernels)
    R                                   attrs: width, seed, loss_fall, K2_movement, kernel_mean_abs_K{r},
                                               dg_vs_p4, wall_time_<stage>, [warnings]; in a sweep file also
                                               config (the run's resolved configuration, JSON)

The data live once per file: ``/data/X`` (n, *in), ``/data/y`` (n,), ``/data/X_test`` (k, *in) (attrs
normalization, source). Root attributes: ``schema_version``, ``config`` (JSON of every resolved option,
including the model's description ``model_info`` and ``arch_options``), seeds, package versions, device,
creation time, command. A sweep file's root also holds ``format`` = ``nth-sweep-2``, ``sweep_config``,
``widths``, ``seeds``. Version-1 files (flat per-run names in sweeps) stay readable (:mod:`nth.io._sweep`).

A kernel file (``nth kernel --out``) holds the data, ``/kernels/K2`` (n, n) (the empirical K^(2)(0) of a
seeded network), ``/infinite/nngp`` and ``/infinite/ntk`` (the limiting kernels, docs/math.md section 5), and
the root attributes with the request as ``config``.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import jax
import numpy as np

from ..data import Dataset
from ..engine import SolveResult
from ._hdf5 import package_versions

SCHEMA_VERSION = 2


def prediction_group(label: str) -> str:
    """Group of a prediction label: p{q} -> nth/p{q}; discrete_{order} -> discrete/{order}; dg, inf -> themselves."""
    if label.startswith("discrete_"):
        return "discrete/" + label[len("discrete_"):]
    return label if label in ("dg", "inf") else f"nth/{label}"


#: Prediction labels as they appear in scalar names (``max_f_error_p4``, ``max_f_error_dg``, ...).
_LABEL = re.compile(r"p\d+|dg|inf|discrete_p2|discrete_o1m")

#: The per-run error scalars of a sweep, against the flow or (``_gd``) against gradient descent, with what each
#: measures over the horizon.
ERROR_QUANTITIES = {"max_f_error": "max_t |f - f_true| / sqrt(n)", "max_K2_error": "max_t |K2 - K2_true|",
                    "max_test_error": "max_t |f(x_test) - f_true(x_test)| / sqrt(k)",
                    "max_f_error_gd": "max_step |f - f_GD| / sqrt(n)",
                    "max_test_error_gd": "max_step |f(x_test) - f_GD(x_test)| / sqrt(k)"}


def prediction_labels(scalars: Mapping[str, Any], prefix: str) -> list[str]:
    """The prediction labels of the keys ``prefix + label`` (p2, p3, ..., dg, inf, discrete_p2, discrete_o1m),
    levels first in order, then dg and inf."""
    found = (k[len(prefix):] for k in scalars if k.startswith(prefix) and _LABEL.fullmatch(k[len(prefix):]))
    return sorted(found, key=lambda s: (s in ("dg", "inf"), s == "inf", int(s[1:]) if s[1:].isdigit() else 99))


def wall_key(label: str) -> str:
    return label if label in ("dg", "inf") or label.startswith("discrete_") else f"nth_{label}"


def row_name(label: str) -> str:
    """Table name of a prediction label: p=2.., dg, inf, d-p2, d-o1m (discrete time)."""
    if label.startswith("discrete_"):
        return "d-" + label[len("discrete_"):]
    return label if label in ("dg", "inf") else f"p={label[1:]}"


def data_datasets(data: Dataset) -> tuple[dict[str, Any], dict[str, dict]]:
    ds: dict[str, Any] = {"data/X": data.X} | ({"data/y": data.y} if data.has_targets else {})
    if data.X_test is not None:
        ds["data/X_test"] = data.X_test
    return ds, {"data": {"normalization": data.normalization, "source": data.source}}


def run_datasets(result: SolveResult, *, save_kernels: bool = False) -> tuple[dict[str, Any], dict[str, dict]]:
    """A run mapped onto the schema, relative to its group: ({'true/f': array, ...}, {'true': attrs, '': attrs})."""
    cfg = result.config
    fl = result.flow
    ds: dict[str, Any] = {"init/f0": result.f0, "true/t": fl.ts, "true/f": fl.f, "true/K2": fl.K2,
                          "true/loss": fl.loss}
    if fl.f_test is not None:
        ds["true/f_test"] = fl.f_test
    if save_kernels:
        ds.update({f"kernels/K{r}": k for r, k in result.kernels.items()})
        if result.test_kernels is not None:
            ds.update({f"kernels/K{r}_test": k for r, k in result.test_kernels.items()})
    attrs: dict[str, dict] = {
        "true": {"solver": cfg["flow_solver"], "rtol": cfg["rtol"], "atol": cfg["atol"],
                 "num_steps": fl.stats.get("num_steps", -1), "loss_fall": result.loss_fall},
        "": run_summary(result),
    }
    for label, pred in result.predictions.items():
        g = prediction_group(label)
        ds.update({f"{g}/f": pred.f, f"{g}/K2": pred.K2, f"{g}/loss": pred.loss})
        if pred.f_test is not None:
            ds[f"{g}/f_test"] = pred.f_test
        attrs[g] = dict(result.errors[label])
        if label == "dg":
            ds["dg/K2_late"] = pred.K2_late
            attrs[g]["method"] = pred.method
        elif label.startswith("discrete_"):
            attrs[g]["lr"] = pred.lr
        else:
            attrs[g]["num_steps"] = pred.stats.get("num_steps", -1)
    if result.gd is not None:
        gd = result.gd
        ds.update({"gd/step": gd.steps, "gd/t": gd.ts, "gd/f": gd.f, "gd/K2": gd.K2, "gd/loss": gd.loss})
        if gd.f_test is not None:
            ds["gd/f_test"] = gd.f_test
        attrs["gd"] = dict(result.errors["gd"]) | {"lr": gd.lr}
    return {k: np.asarray(v) for k, v in ds.items()}, attrs


def run_summary(result: SolveResult) -> dict[str, Any]:
    """The scalars of a run that sweeps tabulate against width: kernel sizes, NTK movement, DG - p4, wall times."""
    fl = result.flow
    out: dict[str, Any] = {"width": result.config["width"], "seed": result.config["seed"],
                           "loss_fall": result.loss_fall,
                           "K2_movement": float(np.abs(np.asarray(fl.K2[-1] - fl.K2[0])).max())}
    for r, K in result.kernels.items():
        out[f"kernel_mean_abs_K{r}"] = float(np.abs(K).mean())
    if result.dg_vs_p4 is not None:
        out["dg_vs_p4"] = result.dg_vs_p4
    out.update({f"wall_time_{k}": float(v) for k, v in result.wall_times.items()})
    if result.warnings:
        out["warnings"] = "\n".join(result.warnings)
    return out


def file_attrs(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Root attributes every nth file carries: schema version, versions, device, creation time, command, and the
    resolved configuration with its seeds."""
    attrs: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "device": jax.devices()[0].platform,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    if config is not None:
        attrs.update(config=dict(config), seed=config.get("seed"), data_seed=config.get("data_seed"))
    attrs.update({f"version_{k}": v for k, v in package_versions().items()})
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


def kernel_file(data: Dataset, config: Mapping[str, Any], K2=None, nngp=None, ntk=None
                ) -> tuple[dict[str, Any], dict[str, dict]]:
    """A kernel file (module docstring): the data, the kernels that were computed, and the root attributes."""
    ds, attrs = data_datasets(data)
    for path, K in (("kernels/K2", K2), ("infinite/nngp", nngp), ("infinite/ntk", ntk)):
        if K is not None:
            ds[path] = np.asarray(K)
    attrs[""] = file_attrs(config)
    return {"/" + k: v for k, v in ds.items()}, {"/" + k: v for k, v in attrs.items()}


def created_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
