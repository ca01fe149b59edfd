"""Width sweeps: one resumable HDF5 file holding every (width, seed) run of a configuration.

Each finished run is committed to the file atomically: the file is copied, the run's group is added to
the copy, the copy is flushed to disk and renamed over the original. A crash, Ctrl-C or power loss
therefore loses at most the run in progress, and never leaves a half-written group. ``run_sweep`` with
the same arguments skips the runs the file already holds; different arguments are refused.

Sweep file layout (``nth-sweep`` version 1):

    /                        attrs: format, sweep_config (JSON), widths, seeds, versions, device, created
    /runs/m{width}_s{seed}   attrs: width, seed, wall_time, loss_fall, kernel_mean_abs_K{r} (r = 2..p),
                                    K2_movement = max |K2_true(T) - K2_true(0)|, and for each prediction
                                    label (p2..p{p}, dg): max_f_error_<label>, max_K2_error_<label>,
                                    max_test_error_<label>; dg_vs_p4 when both exist
        t (T,), true_f (T, n), true_K2 (T, n, n), [true_f_test (T, k)],
        <label>_f (T, n), <label>_K2 (T, n, n), [<label>_f_test (T, k)]
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import h5py
import jax
import numpy as np

from . import store
from .compare import f_error
from .errors import ConfigError
from .pipeline import SolveConfig, SolveResult, run_solve

FORMAT = "nth-sweep-1"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A sweep: the widths, the seeds 0..num_seeds-1, and the solve configuration shared by every run.

    ``base.width`` and ``base.seed`` are ignored (set per run). ``t_max`` must be fixed so that every width
    is compared on the same horizon (MATH.md section 3); it defaults to 20.
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
        if self.base.lr is not None:
            raise ConfigError("nth sweep compares with gradient flow; --lr/--steps are for nth solve")
        if self.base.t_max is None:
            raise ConfigError("a sweep needs a fixed horizon t_max shared by every width")
        self.run_config(self.widths[0], 0).validate()

    def run_config(self, width: int, seed: int) -> SolveConfig:
        return dataclasses.replace(self.base, width=width, seed=seed)

    def to_json(self) -> str:
        base = dataclasses.asdict(self.base)
        for k in ("width", "seed", "memory_budget", "chunk", "devices"):  # per run, or result-neutral
            base.pop(k)
        return json.dumps({"widths": list(self.widths), "num_seeds": self.num_seeds, "base": base}, sort_keys=True)


def run_name(width: int, seed: int) -> str:
    return f"m{width}_s{seed}"


def _run_payload(res: SolveResult) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Datasets and attributes of one run's group."""
    fl = res.flow
    ds: dict[str, np.ndarray] = {"t": fl.ts, "true_f": fl.f, "true_K2": fl.K2}
    if fl.f_test is not None:
        ds["true_f_test"] = fl.f_test
    attrs: dict[str, Any] = {"loss_fall": res.loss_fall, "wall_time": sum(res.wall_times.values()),
                             "K2_movement": float(np.abs(np.asarray(fl.K2[-1] - fl.K2[0])).max())}
    for r, K in res.kernels.items():
        attrs[f"kernel_mean_abs_K{r}"] = float(np.abs(K).mean())
    for label, pred in res.predictions.items():
        ds[f"{label}_f"], ds[f"{label}_K2"] = pred.f, pred.K2
        if pred.f_test is not None:
            ds[f"{label}_f_test"] = pred.f_test
        for k, v in res.errors[label].items():
            attrs[f"{k}_{label}"] = v
    if res.warnings:
        attrs["warnings"] = "\n".join(res.warnings)
    if "dg" in res.predictions and "p4" in res.predictions:
        attrs["dg_vs_p4"] = float(f_error(res.predictions["dg"].f, res.predictions["p4"].f).max())
    return {k: np.asarray(v) for k, v in ds.items()}, attrs


def _commit(path: str, edit: Callable[[h5py.File], None], create_attrs: dict[str, Any] | None = None) -> None:
    """Apply ``edit`` to a copy of the sweep file and atomically replace the file with the copy."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        if create_attrs is None:
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a" if create_attrs is None else "w") as h:
            if create_attrs is not None:
                for k, v in create_attrs.items():
                    h.attrs[k] = v
                h.create_group("runs")
            edit(h)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def finished_runs(path: str) -> set[str]:
    with h5py.File(path, "r") as h:
        return set(h["runs"].keys())


def _remove_stale_temporaries(path: str) -> None:
    """Delete temporary copies a killed sweep left behind (the run they held was not committed)."""
    parent = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    for name in os.listdir(parent):
        if name.startswith(prefix) and name.endswith(".tmp"):
            os.unlink(os.path.join(parent, name))


def open_sweep(cfg: SweepConfig, path: str) -> set[str]:
    """Create the sweep file, or check that an existing one was made by the same arguments; return the
    names of the runs it already holds."""
    if os.path.exists(os.path.dirname(os.path.abspath(path))):
        _remove_stale_temporaries(path)
    if os.path.exists(path):
        try:
            with h5py.File(path, "r") as h:
                fmt, saved = h.attrs.get("format"), h.attrs.get("sweep_config")
        except OSError as e:
            raise ConfigError(f"{path!r} exists but is not a readable HDF5 file ({e}); choose another --out") from None
        if fmt != FORMAT or saved is None:
            raise ConfigError(f"{path!r} exists and is not an nth sweep file; choose another --out")
        old, new = json.loads(saved), json.loads(cfg.to_json())
        # options added after a file was written read as their defaults
        defaults = {f.name: f.default for f in dataclasses.fields(SolveConfig)}
        old["base"] = {k: old["base"].get(k, defaults.get(k)) for k in set(old["base"]) | set(new["base"])}
        if old != new:
            diff = sorted(k for k in set(old["base"]) | set(new["base"]) if old["base"].get(k) != new["base"].get(k))
            diff += [k for k in ("widths", "num_seeds") if old[k] != new[k]]
            raise ConfigError(f"{path!r} holds a sweep with different arguments ({', '.join(diff)}: "
                              f"{[(old['base'].get(k, old.get(k)), new['base'].get(k, new.get(k))) for k in diff]}); "
                              "resume it with the same arguments or choose another --out")
        return finished_runs(path)
    attrs = {"format": FORMAT, "sweep_config": cfg.to_json(), "widths": np.asarray(cfg.widths),
             "seeds": np.arange(cfg.num_seeds), "device": jax.devices()[0].platform,
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    attrs.update({f"version_{k}": v for k, v in store.package_versions().items()})
    _commit(path, lambda h: None, create_attrs=attrs)
    return set()


def run_sweep(cfg: SweepConfig, path: str, *, progress: bool = False, batch_seeds: bool = False, devices=None,
              on_run: Callable[[str, SolveResult], None] | None = None) -> dict[str, int]:
    """Run every (width, seed) of ``cfg`` that ``path`` does not hold yet, committing each as it finishes.

    With ``batch_seeds`` the missing seeds of a width run as one vmapped batch (:mod:`nth.batched`), sharded
    across ``devices`` when there are several; each is still committed as its own run.
    Returns {"done": runs already in the file, "ran": runs computed now}.
    """
    cfg.validate()
    path = os.fspath(path)
    done = open_sweep(cfg, path)
    todo = [(w, s) for w in cfg.widths for s in range(cfg.num_seeds) if run_name(w, s) not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cfg.widths) * cfg.num_seeds, initial=len(done), unit="run", desc="sweep")
    if batch_seeds:
        from .batched import run_solve_seeds

        groups = [(w, [s for ww, s in todo if ww == w]) for w in cfg.widths]
        jobs = ((w, seeds, lambda w=w, seeds=seeds: run_solve_seeds(cfg.run_config(w, seeds[0]), seeds,
                                                                    devices=devices or cfg.base.devices))
                for w, seeds in groups if seeds)
    else:
        jobs = ((w, [s], lambda w=w, s=s: [run_solve(cfg.run_config(w, s))]) for w, s in todo)
    for w, seeds, job in jobs:
        if bar is not None:
            bar.set_postfix(width=w, seeds=",".join(map(str, seeds)))
        for s, res in zip(seeds, job()):
            _commit_run(path, w, s, res)
            if on_run:
                on_run(run_name(w, s), res)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return {"done": len(done), "ran": len(todo)}


#: Per-run arrays larger than this (bytes) are stored gzip-compressed.
COMPRESS_ABOVE = 65536


def _commit_run(path: str, w: int, s: int, res: SolveResult) -> None:
    ds, attrs = _run_payload(res)
    attrs.update(width=w, seed=s, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def add(h):
        g = h["runs"].create_group(run_name(w, s))
        for k, v in ds.items():  # small arrays contiguous: a chunk index costs more than gzip saves on them
            big = np.asarray(v).nbytes > COMPRESS_ABOVE
            g.create_dataset(k, data=v, **({"compression": "gzip", "shuffle": True} if big else {}))
        for k, v in attrs.items():
            g.attrs[k] = v

    _commit(path, add)


def load_sweep(path: str) -> dict[str, Any]:
    """Read a sweep file: widths (W,), seeds (S,), config, and every per-run scalar as a (W, S) array
    (NaN where a run is missing); ``runs`` maps (width, seed) to that run's datasets."""
    with h5py.File(path, "r") as h:
        if h.attrs.get("format") != FORMAT:
            raise ConfigError(f"{path!r} is not an nth sweep file")
        cfg = json.loads(h.attrs["sweep_config"])
        widths, seeds = list(cfg["widths"]), list(range(cfg["num_seeds"]))
        scalars: dict[str, np.ndarray] = {}
        runs: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        for name, g in h["runs"].items():
            w, s = int(g.attrs["width"]), int(g.attrs["seed"])
            i, j = widths.index(w), seeds.index(s)
            for k, v in g.attrs.items():
                if np.ndim(v) == 0 and isinstance(v, (int, float, np.number)) and k not in ("width", "seed"):
                    scalars.setdefault(k, np.full((len(widths), len(seeds)), np.nan))[i, j] = float(v)
            runs[(w, s)] = {k: g[k][()] for k in g}
    return {"config": cfg, "widths": np.asarray(widths), "seeds": np.asarray(seeds), "scalars": scalars,
            "runs": runs, "path": path}
