"""Width sweeps: one resumable HDF5 file holding every (width, seed) run of a configuration.

Each finished run is committed to the file atomically: the file is copied, the run's group is added to
the copy, the copy is flushed to disk and renamed over the original. A crash, Ctrl-C or power loss
therefore loses at most the run in progress, and never leaves a half-written group. ``run_sweep`` with
the same arguments skips the runs the file already holds; different arguments are refused.

Layout (``nth-sweep-3``, schema version 3 of :mod:`nth.io._schema`): the data once under ``/data``, and every
run under ``/runs/m{width}_s{seed}`` laid out exactly like a solve file's root (``true/f``, ``nth/p4/f``,
``dg/f``, ... with their error attributes; the run's summary scalars, its creation time and the device and
package versions it ran with (:func:`nth.io._schema.provenance`) as the group's attributes). Root
attributes: ``format``, ``schema_version``, ``sweep_config`` (JSON), ``widths``, ``seeds``, package versions,
device, creation time. Every axis has a named dimension, and the root holds the sweep's table over the
dimensions ``width`` and ``seed`` (:mod:`nth.io._schema`), rebuilt from the runs at every commit: a view for
xarray and netCDF tools; nth itself reads the runs. ``nth-sweep-2`` is the same layout without dimensions and
table: it is read, and resumed, which makes it ``nth-sweep-3`` (its earlier runs keep unnamed axes). The format
changed with the dimensions because their attributes are left out of the runs' checksums: a version of nth that
knows only ``nth-sweep-2`` refuses a newer file instead of taking its runs for damaged ones. Files of the first
layout (``nth-sweep-1``: flat per-run names such as ``true_f``, ``p4_f``, errors as ``max_f_error_p4``
attributes) are still read by :func:`load_sweep`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from .._cluster import from_writer, shared_map
from ..engine import SolveConfig, SolveResult, solve_seeds
from ..engine._rows import every_row
from ..errors import ConfigError, DamagedFileError
from ._files import file_writer
from ._hdf5 import check_writable, digest, dimension, drop_damaged, edit_h5, open_results, verify, write_group
from ._schema import SCHEMA_VERSION, axes_for, created_now, data_datasets, file_attrs, prediction_group
from ._schema import provenance, run_datasets

FORMAT = "nth-sweep-3"
#: Formats that resume (the run layout of schema 2 and 3) and that load.
FORMATS_RESUMED = ("nth-sweep-2", FORMAT)
FORMATS_READ = ("nth-sweep-1", *FORMATS_RESUMED)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A sweep: the widths, the seeds 0..num_seeds-1, and the solve configuration shared by every run.

    ``base.width`` and ``base.seed`` are ignored (set per run). ``t_max`` must be fixed so that every width
    is compared on the same horizon (docs/math.md section 3); it defaults to 20. With gradient descent
    (``lr`` or ``lr_fraction`` and ``steps``) the horizon is lr * steps: the same for every run with ``lr``,
    within O(1/sqrt(m)) of each other with ``lr_fraction`` (each network's own stable step).
    """

    widths: tuple[int, ...]
    num_seeds: int
    base: SolveConfig

    def validate(self) -> None:
        if not self.widths or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ConfigError(f"widths = {self.widths!r} must be a non-empty list of positive integers")
        if len(set(self.widths)) != len(self.widths):
            raise ConfigError(f"widths = {self.widths!r} contain duplicates")
        if not isinstance(self.num_seeds, int) or self.num_seeds < 1:
            raise ConfigError(f"seeds = {self.num_seeds!r} must be a positive integer")
        if self.base.weights is not None:
            raise ConfigError("a width sweep draws its own weights; --weights cannot be used with nth sweep")
        if self.base.gradient_descent:
            if self.base.lr is not None and self.base.t_max is not None:
                raise ConfigError("with --lr the horizon is lr * steps; do not pass --t-max")
        elif self.base.t_max is None:
            raise ConfigError("a sweep needs a fixed horizon t_max shared by every width")
        self.run_config(self.widths[0], 0).validate()

    def run_config(self, width: int, seed: int) -> SolveConfig:
        return self.base.replace(width=width, seed=seed)

    def to_json(self) -> str:
        base = self.base.flat() | {"dg_method": self.base.resolved_dg_method}  # as files before it
        for k in ("width", "seed", "memory_budget", "chunk", "devices"):  # per run, or result-neutral
            base.pop(k)
        if not self.base.spectra:  # options of a stage that does not run
            for k in ("top", "probes", "spectrum_tol"):
                base.pop(k)
        return json.dumps({"widths": list(self.widths), "num_seeds": self.num_seeds, "base": base}, sort_keys=True)


def run_name(width: int, seed: int) -> str:
    return f"m{width}_s{seed}"


def finished_runs(path: str) -> set[str]:
    with h5py.File(path, "r") as h:
        return set(h["runs"].keys())


def _damaged(h: h5py.File) -> tuple[bool, list[str]]:
    """(whether /data is damaged, names of the damaged runs): parts that cannot be read in full or fail their
    sha256 attribute (:func:`nth.io._hdf5.verify`)."""
    required = h.attrs.get("checksums") == "sha256"  # files written since checksums exist carry one on every run
    data_bad = "data" in h and not verify(h["data"], required)
    try:
        names = list(h["runs"].keys())
    except (OSError, KeyError, RuntimeError):
        return data_bad, ["runs"]
    return data_bad, [name for name in names if not verify(h["runs"][name], required)]


def open_sweep(cfg: SweepConfig, path: str, log: Callable[[str], None] | None = None) -> set[str]:
    """Create the sweep file, or check that an existing one was made by the same arguments and is undamaged;
    return the names of the (intact) runs it already holds. Damaged runs are removed, to be computed again.
    The caller holds the writer lock of ``path``."""
    if os.path.exists(path):
        check_writable(path, "runs")
        try:
            h = h5py.File(path, "r")
        except OSError as e:
            raise ConfigError(f"{path!r} exists but is not a readable HDF5 file ({e}); choose another --out") from None
        with h:
            fmt, saved = h.attrs.get("format"), h.attrs.get("sweep_config")
            if fmt == "nth-sweep-1":
                raise ConfigError(f"{path!r} is a sweep file of the first layout (nth-sweep-1): nth reads it but does "
                                  "not add runs to it; choose another --out")
            if fmt not in FORMATS_RESUMED or saved is None or "runs" not in h:
                raise ConfigError(f"{path!r} exists and is not an nth sweep file; choose another --out")
            data_bad, bad = _damaged(h)
        if data_bad or bad == ["runs"]:
            raise DamagedFileError(f"{path!r} is damaged (its {'/data' if data_bad else '/runs'} group fails its "
                                   "checksum or cannot be read); move it away and run the sweep again")
        old, new = json.loads(saved), json.loads(cfg.to_json())
        # options added after a file was written read as their defaults
        defaults = SolveConfig.defaults()
        old["base"] = {k: old["base"].get(k, defaults.get(k)) for k in set(old["base"]) | set(new["base"])}
        if old != new:
            diff = sorted(k for k in set(old["base"]) | set(new["base"]) if old["base"].get(k) != new["base"].get(k))
            diff += [k for k in ("widths", "num_seeds") if old[k] != new[k]]
            raise ConfigError(f"{path!r} holds a sweep with different arguments ({', '.join(diff)}: "
                              f"{[(old['base'].get(k, old.get(k)), new['base'].get(k, new.get(k))) for k in diff]}); "
                              "resume it with the same arguments or choose another --out")
        drop_damaged(path, [f"runs/{name}" for name in bad], log, "run(s)", also=_tabulate)
        return finished_runs(path)
    return set()  # a new file is created with its first run (a refused or failed sweep leaves no file)


def _new_file_attrs(cfg: SweepConfig) -> dict[str, Any]:
    return file_attrs() | {"format": FORMAT, "sweep_config": cfg.to_json(), "widths": np.asarray(cfg.widths),
                           "seeds": np.arange(cfg.num_seeds), "checksums": "sha256"}


def run_sweep(cfg: SweepConfig, path: str, *, progress: bool = False, batch_seeds: bool = False, devices=None,
              on_run: Callable[[str, SolveResult], None] | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, int]:
    """Run every (width, seed) of ``cfg`` that ``path`` does not hold yet, committing each as it finishes.

    The process is the file's only writer for the whole sweep (:func:`nth.io._files.writer_lock`: a second
    sweep on the same file is refused at once). Damaged runs (failing their checksum) are computed again.
    With ``batch_seeds`` the missing seeds of a width run as one computation (:func:`nth.engine.solve_seeds`),
    each still committed as its own run. Returns {"done": runs already in the file, "ran": runs computed now}.

    Under several processes (:mod:`nth._cluster`) process 0 opens and writes the file and sends the missing runs
    to every process; the runs are shared out (:func:`nth._cluster.shared_map`) and committed by process 0 in
    the order a single process commits them, with the same numbers.
    """
    cfg.validate()
    if batch_seeds and cfg.base.gradient_descent:
        raise ConfigError("--batch-seeds computes gradient flow only; run a gradient-descent sweep (--lr / "
                          "--lr-fraction) without it")
    with file_writer(path, f"nth sweep (widths {','.join(map(str, cfg.widths))}, {cfg.num_seeds} seeds)",
                     force=True) as path:  # None in the processes that do not write
        done = from_writer(lambda: open_sweep(cfg, path, log=log))
        todo = [(w, s) for w in cfg.widths for s in range(cfg.num_seeds) if run_name(w, s) not in done]
        groups = [(w, [s for ww, s in todo if ww == w]) for w in cfg.widths]
        if batch_seeds:
            jobs = [(w, seeds) for w, seeds in groups if seeds]
        else:
            jobs = [(w, [s]) for w, s in todo]
        bar = None
        if progress and path is not None:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(cfg.widths) * cfg.num_seeds, initial=len(done), unit="run", desc="sweep")

        def compute(job):
            w, seeds = job
            if bar is not None:
                bar.set_postfix(width=w, seeds=",".join(map(str, seeds)))
            return solve_seeds(cfg.run_config(w, seeds[0]), seeds, devices=devices)

        try:
            for (w, seeds), results in shared_map(compute, jobs):
                for s, res in zip(seeds, results):
                    if path is not None:
                        _commit_run(path, w, s, res, None if os.path.exists(path) else _new_file_attrs(cfg))
                    if on_run:
                        on_run(run_name(w, s), res)
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return {"done": len(done), "ran": len(todo)}


def _commit_run(path: str, w: int, s: int, res: SolveResult, create: dict[str, Any] | None = None) -> None:
    """Add one run (and, the first time, the data) to the sweep file; ``create``: the root attributes of a new
    file, created by this commit."""
    ds, attrs = run_datasets(res)
    attrs[""].update(created=created_now(), config=json.dumps(res.config, default=str), **provenance())

    def add(h):
        if "runs" not in h:
            h.create_group("runs")
        if "data" not in h:
            data_ds, data_attrs = data_datasets(res.data)
            write_group(h, data_ds, data_attrs, axes_for(res))
            h["data"].attrs["sha256"] = digest(h["data"])
        g = h["runs"].create_group(run_name(w, s))
        write_group(g, ds, attrs, axes_for(res))
        g.attrs["sha256"] = digest(g)
        _tabulate(h)
        h.attrs["format"], h.attrs["schema_version"] = FORMAT, SCHEMA_VERSION  # a resumed nth-sweep-2 file is now 3

    edit_h5(path, add, create=create)


def _labels(cfg: dict[str, Any]) -> list[str]:
    """The prediction labels a sweep of this configuration (its ``sweep_config``) may hold (every row a run of
    its p may have), and ``gd`` (gradient descent against the flow: ``max_f_error_gd``, and its learning rate
    ``lr_gd``)."""
    return [r.label for r in every_row(cfg["base"]["p"])] + ["gd"]


def _run_scalars(g: h5py.Group, labels: list[str], fmt: str) -> dict[str, float]:
    """A run's numeric scalars (summary and errors, ``max_f_error_<label>``, ...), without its width and seed."""
    attrs = dict(g.attrs) if fmt == "nth-sweep-1" else _attrs_v2(g, labels)
    return {k: float(v) for k, v in attrs.items()
            if np.ndim(v) == 0 and isinstance(v, (int, float, np.number)) and k not in ("width", "seed")}


def _tabulate(h: h5py.File) -> None:
    """(Re)build the sweep's table at the root from its runs: each scalar of :func:`_run_scalars` as a (width,
    seed) array on the coordinates ``width`` and ``seed``, NaN where a run is missing (module docstring)."""
    cfg = json.loads(h.attrs["sweep_config"])
    widths, seeds = list(cfg["widths"]), list(range(cfg["num_seeds"]))
    table: dict[str, np.ndarray] = {}
    for g in h["runs"].values():
        i, j = widths.index(int(g.attrs["width"])), seeds.index(int(g.attrs["seed"]))
        for k, v in _run_scalars(g, _labels(cfg), FORMAT).items():
            table.setdefault(k, np.full((len(widths), len(seeds)), np.nan))[i, j] = v
    axes = (dimension(h, "width", len(widths), widths), dimension(h, "seed", len(seeds), seeds))
    for k in [k for k, d in h.items() if isinstance(d, h5py.Dataset) and d.ndim == 2 and k not in table]:
        h[k][...] = np.nan  # a scalar no remaining run has
    for k, values in table.items():
        if k not in h:
            d = h.create_dataset(k, data=values)
            for axis, scale in enumerate(axes):
                d.dims[axis].attach_scale(scale)
        else:
            h[k][...] = values


def _flat_name(path: str, groups: dict[str, str]) -> str | None:
    """How a run's dataset of layout 2 maps onto the flat names of layout 1 (what load_sweep returns for both):
    true/f -> true_f, gd/f -> gd_f, spectrum/rms_B -> spectrum_rms_B, and <row group>/f -> <label>_f (nth/p4/f -> p4_f, discrete/o1m/f ->
    discrete_o1m_f) for the rows' ``groups`` ({group: label})."""
    group, _, name = path.rpartition("/")
    if group == "true":
        return "t" if name == "t" else f"true_{name}"
    if group == "spectrum":
        return f"spectrum_{name}"
    label = groups.get(group)
    return None if label is None else f"{label}_{name}"


def _attrs_v2(g: h5py.Group, labels: list[str]) -> dict[str, Any]:
    """A run's attributes and its predictions' attributes under ``<name>_<label>`` (layout 2)."""
    scalars = {k: v for k, v in g.attrs.items()}
    for label in labels:
        grp = prediction_group(label)
        if grp in g:
            scalars.update({f"{k}_{label}": v for k, v in g[grp].attrs.items()})
    return scalars


def _arrays_v2(g: h5py.Group, labels: list[str]) -> dict[str, np.ndarray]:
    """A run's arrays under the flat names of layout 1 (:func:`_flat_name`)."""
    arrays: dict[str, np.ndarray] = {}
    groups = {prediction_group(label): label for label in labels}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and (flat := _flat_name(name, groups)) is not None:
            arrays[flat] = obj[()]

    g.visititems(visit)
    if "t" not in arrays and "gd_t" in arrays:  # a run that skipped the flow: the rows' times are gradient descent's
        arrays["t"] = arrays["gd_t"]
    return arrays


def trained_by(sweep: dict[str, Any]) -> str:
    """What the runs of a loaded sweep measured the NTK's movement along (``K2_movement``): the true gradient flow,
    or gradient descent where they skipped the flow (``flow`` false)."""
    return "true flow" if sweep["config"]["base"].get("flow", True) else "gradient descent"


def no_values(sweep: dict[str, Any], quantity: str) -> str:
    """The message for a loaded sweep without ``quantity`` values, naming the way out where its runs skipped the
    flow (their errors are against gradient descent, ``..._gd``)."""
    hint = "" if quantity.endswith("_gd") or trained_by(sweep) != "gradient descent" else (
        f"; its runs skipped the true flow (--no-flow), so ask for the errors against gradient descent: --quantity "
        f"{quantity.replace('max_K2_error', 'max_f_error')}_gd")
    return f"{sweep['path']!r} holds no '{quantity}' values (finished runs: {len(sweep['runs'])}){hint}"


def load_sweep(path: str) -> dict[str, Any]:
    """Read a sweep file of either layout: widths (W,), seeds (S,), config, and every per-run scalar as a (W, S)
    array (NaN where a run is missing; errors as ``max_f_error_<label>`` etc.); ``runs`` maps (width, seed) to
    that run's arrays under flat names (``t``, ``true_f``, ``p4_f``, ``dg_K2``, ...)."""
    h = open_results(path, "sweep file")
    with h:
        fmt = h.attrs.get("format")
        if fmt not in FORMATS_READ or "sweep_config" not in h.attrs or "runs" not in h:
            raise ConfigError(f"{path!r} is not an nth sweep file (written by nth sweep)")
        data_bad, bad = _damaged(h)
        if data_bad or bad:
            raise DamagedFileError(f"{path!r} is damaged: {'/data and ' if data_bad else ''}{len(bad)} run(s) fail "
                                   f"their checksum ({', '.join(bad[:6])}{', ...' if len(bad) > 6 else ''}); run the "
                                   "same nth sweep again to recompute them")
        cfg = json.loads(h.attrs["sweep_config"])
        widths, seeds = list(cfg["widths"]), list(range(cfg["num_seeds"]))
        labels = _labels(cfg)
        scalars: dict[str, np.ndarray] = {}
        runs: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        for name, g in h["runs"].items():
            w, s = int(g.attrs["width"]), int(g.attrs["seed"])
            i, j = widths.index(w), seeds.index(s)
            for k, v in _run_scalars(g, labels, fmt).items():
                scalars.setdefault(k, np.full((len(widths), len(seeds)), np.nan))[i, j] = v
            runs[(w, s)] = {k: g[k][()] for k in g} if fmt == "nth-sweep-1" else _arrays_v2(g, labels)
    return {"config": cfg, "widths": np.asarray(widths), "seeds": np.asarray(seeds), "scalars": scalars,
            "runs": runs, "path": path, "format": fmt}
