"""Correlation-function measurements on disk: one resumable HDF5 file per :class:`~nth.engine.CorrConfig`.

Layout (``nth-corr-2``): root attributes ``format``, ``corr_config`` (JSON of the fields that decide the
values, with the functions as nth writes them) and its ``config_sha256``, ``widths`` (every width the file has
draws of), ``checksums = "sha256"`` and those of every nth file (versions, device,
creation time, command); ``/inputs`` (K, d), the inputs x1..xK; and per width ``/m{width}/d{start}``
blocks of values, shape (draws, functions), for draws start..start+len-1, each with ``start`` and ``sha256``
attributes. Each block is committed atomically (the whole file is rewritten through a temporary, as a sweep
commits its runs), so a crash loses at most the block in progress. Running again with the same arguments
resumes; with more ``draws`` or other ``widths`` it adds them (draw i at width m is always the same
initialization); a damaged block is computed again; other arguments are refused.

Dimensions (netCDF-4 dimension scales, as in every nth file): ``/inputs`` is (``input``, ``feature``), and a
block is (``d{start}_draw``, ``function``): its own draw dimension, whose coordinate is the block's draw
numbers, and the file's ``function`` dimension (the functions in the order of ``corr_config``). So
``xarray.open_dataset(FILE, engine="h5netcdf", group="m256")`` holds the blocks of width 256 as labelled arrays
(``xarray.concat`` of them along their draw coordinates gives every draw); :func:`load_corr` does that for nth.
``nth-corr-1`` is the same layout without dimensions; it is read and resumed, and becomes ``nth-corr-2``. The
format changed because dimension attributes are left out of the blocks' checksums, so a version of nth that
knows only ``nth-corr-1`` refuses a newer file instead of taking its blocks for damaged ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from .._cluster import from_writer
from ..engine import CorrConfig, check_corr_plan as check_plan, correlation_values, plan_batch, sample_draws as sample
from ..engine import summarize_corr as summarize
from ..errors import ConfigError, DamagedFileError
from ._files import file_writer
from ._hdf5 import check_writable, differences, digest, dimension, drop_damaged, edit_h5, open_results, verify
from ._hdf5 import write_group
from ._schema import SCHEMA_VERSION, file_attrs

FORMAT = "nth-corr-2"
#: Formats that are read and resumed (the same blocks, without and with dimensions).
FORMATS = ("nth-corr-1", FORMAT)
#: Draws committed per block at least (the whole file is rewritten per block; it holds values only).
BLOCK = 256


def _block_name(start: int) -> str:
    return f"d{start:010d}"


def _blocks(g: h5py.Group) -> dict[str, h5py.Dataset]:
    """The blocks of a width's group, without their draw dimensions (module docstring); a dataset whose header
    cannot be read counts as a block (its checksum then fails)."""
    def is_scale(ds) -> bool:
        try:
            return bool(ds.is_scale)
        except (OSError, KeyError, RuntimeError, ValueError):
            return False

    return {name: ds for name, ds in g.items() if not is_scale(ds)}


def _contiguous(h: h5py.File, width: int) -> tuple[np.ndarray | None, list[str]]:
    """The values of draws 0..k-1 of ``width`` that the file holds intact without a gap (None if k = 0), and
    the names of its damaged blocks. Blocks may overlap (a block computed again after a damaged one was
    dropped); the earlier draws of a later block then give way to those already placed."""
    g = h.get(f"m{width}")
    if g is None:
        return None, []
    blocks, bad = [], []
    for name, ds in _blocks(g).items():
        if verify(ds, required=True):
            blocks.append((int(ds.attrs["start"]), ds))
        else:
            bad.append(f"m{width}/{name}")
    parts, k = [], 0
    for start, ds in sorted(blocks, key=lambda b: b[0]):
        if start > k:
            break
        if start + ds.shape[0] > k:
            parts.append(ds[k - start:])
            k = start + ds.shape[0]
    return (np.concatenate(parts) if parts else None), bad


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _saved_config(h: h5py.File, path: str) -> dict[str, Any]:
    """The file's corr_config, checked against its checksum (root attributes carry one of their own)."""
    if h.attrs.get("format") not in FORMATS or "corr_config" not in h.attrs:
        raise ConfigError(f"{path!r} exists and is not an nth correlation file (written by nth corr); choose another "
                          "file")
    text = h.attrs["corr_config"]
    text = text.decode() if isinstance(text, bytes) else str(text)
    if h.attrs.get("config_sha256") != _sha(text):
        raise DamagedFileError(f"{path!r} is damaged: its recorded arguments (corr_config) fail their checksum; move "
                               "it away and measure again")
    try:
        d = json.loads(text)
        CorrConfig(**{k: tuple(v) if k == "functions" else v for k, v in d.items() if k != "widths"}).validate()
    except (ValueError, TypeError) as e:
        raise DamagedFileError(f"{path!r} is damaged: its recorded arguments cannot be read ({e})") from None
    d.pop("widths", None)
    return d


def _widths_in(h: h5py.File) -> list[int]:
    return sorted(int(k[1:]) for k in h if k.startswith("m") and k[1:].isdigit())


def _open(cfg: CorrConfig, path: str, log: Callable[[str], None] | None) -> dict[int, np.ndarray]:
    """Check an existing file against ``cfg`` (same values-deciding arguments, readable, writable), drop its
    damaged blocks (at every width it holds) and repair damaged inputs; return {width: the first cfg.draws of
    its intact contiguous draws} for the widths of ``cfg`` it holds. The
    draws already there must be this code's: the inputs are compared bit for bit and the first draw of the
    narrowest width is computed again (a JAX whose random numbers differ would otherwise mix two sets of draws
    in one file). A new file is created with its first block."""
    if not os.path.exists(path):
        return {}
    check_writable(path, "draws")
    with open_results(path, "correlation file") as h:
        old, new = _saved_config(h, path), json.loads(cfg.to_json())
        if old != new:
            raise ConfigError(f"{path!r} holds a measurement with different arguments ({differences(old, new)}); run "
                              "it with the same arguments (more --draws or --widths add draws) or choose another --out")
        bad = []
        for w in _widths_in(h):
            bad += _contiguous(h, w)[1]
        inputs_bad = "inputs" in h and not verify(h["inputs"], required=True)
        if "inputs" in h and not inputs_bad and not np.array_equal(h["inputs"][()], np.asarray(cfg.inputs())):
            raise ConfigError(f"{path!r} holds draws at other inputs than this nth computes for input seed "
                              f"{cfg.input_seed} (another version of nth or JAX); choose another --out")
    def also(h):  # the damaged blocks' draw dimensions go with them; damaged inputs are written again
        for name in bad:
            if f"{name}_draw" in h:
                del h[f"{name}_draw"]
        if inputs_bad:
            _write_inputs(h, cfg)

    drop_damaged(path, bad + (["inputs"] if inputs_bad else []), log, "part(s)", also=also)
    with h5py.File(path, "r") as h:
        stored = {w: v for w in _widths_in(h) if (v := _contiguous(h, w)[0]) is not None}
    if stored:
        w = min(stored)
        again = correlation_values(cfg, w, draws=1, share=False)[0]  # process 0 alone opens the file
        if not np.allclose(again, stored[w][0], rtol=1e-10, atol=1e-300):
            raise ConfigError(f"{path!r}: draw 0 at width {w} computed now differs from the one stored ({again} "
                              f"against {stored[w][0]}): the file was made by another version of nth or JAX; choose "
                              "another --out")
    return {w: v[: cfg.draws] for w, v in stored.items() if w in cfg.widths}


def _write_inputs(h: h5py.File, cfg: CorrConfig) -> None:
    write_group(h, {"inputs": np.asarray(cfg.inputs())}, {"inputs": {"description": "x1..xK, one per row"}},
                axes=lambda path, shape: (("input", "feature"), None))
    h["inputs"].attrs["sha256"] = digest(h["inputs"])


def _commit(path: str, cfg: CorrConfig, width: int, start: int, vals: np.ndarray) -> None:
    create = None
    if not os.path.exists(path):
        create = file_attrs() | {"format": FORMAT, "corr_config": cfg.to_json(), "checksums": "sha256",
                                 "config_sha256": _sha(cfg.to_json())}

    def add(h):
        if "inputs" not in h:
            _write_inputs(h, cfg)
        g = h.require_group(f"m{width}")
        for old in [n for n, ds in _blocks(g).items() if start <= int(ds.attrs["start"]) < start + len(vals)]:
            del g[old]  # superseded: blocks after a gap that this one fills
            if f"{old}_draw" in g:
                del g[f"{old}_draw"]
        name = _block_name(start)
        ds = g.create_dataset(name, data=vals)
        ds.dims[0].attach_scale(dimension(g, f"{name}_draw", len(vals), np.arange(start, start + len(vals))))
        ds.dims[1].attach_scale(dimension(h, "function", vals.shape[1]))
        ds.attrs["start"] = start
        ds.attrs["sha256"] = digest(ds)
        h.attrs["widths"] = np.asarray(_widths_in(h))
        h.attrs["format"], h.attrs["schema_version"] = FORMAT, SCHEMA_VERSION  # a resumed nth-corr-1 file is now 2

    edit_h5(path, add, create=create)


def run_corr(cfg: CorrConfig, path: str | None = None, *, progress: bool = False,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure ``cfg``: every width's draws 0..draws-1 that ``path`` does not hold yet, committed in blocks as
    they finish (module docstring), then the summary of :func:`nth.engine._corr.summarize`. With ``path``
    None nothing is written. Arguments, the output path and the memory of one batch at the largest width are
    checked before the first draw; the process is the file's only writer (``writer_lock``). Under several
    processes (:mod:`nth._cluster`) process 0 writes the file and the others return ``path`` None."""
    check_plan(cfg)
    if path is None:
        return _measure(cfg, None, {}, progress)
    with file_writer(path, f"nth corr (widths {','.join(map(str, cfg.widths))})", force=True) as mine:
        stored = from_writer(lambda: _open(cfg, mine, log))  # process 0 of several opens the file (nth._cluster)
        return _measure(cfg, mine, stored, progress and mine is not None)


def _measure(cfg: CorrConfig, path: str | None, stored: dict[int, np.ndarray], progress: bool) -> dict[str, Any]:
    """Draw what ``stored`` (the file's draws per width) lacks, committing blocks to ``path`` (None: nothing is
    written, as in the processes of a multi-process run other than 0); the summary."""
    values: dict[int, list[np.ndarray]] = {w: [stored[w]] if w in stored else [] for w in cfg.widths}
    have = {w: len(stored[w]) if w in stored else 0 for w in cfg.widths}
    todo = {w: cfg.draws - have[w] for w in cfg.widths}
    bar = None
    if progress and sum(todo.values()):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cfg.widths) * cfg.draws, initial=len(cfg.widths) * cfg.draws - sum(todo.values()),
                   unit="draw", desc="nth corr")
    try:
        for w in cfg.widths:
            start = have[w]
            if start >= cfg.draws:
                continue
            if bar is not None:
                bar.set_postfix(width=w, batch=plan_batch(cfg, w))
            pending, first = [], start
            for lo, vals in sample(cfg, w, start, cfg.draws, on_batch=bar.update if bar is not None else None):
                values[w].append(vals)
                if path is None:
                    continue
                pending.append(vals)
                n = sum(len(v) for v in pending)
                if n >= BLOCK or lo + len(vals) >= cfg.draws:
                    _commit(path, cfg, w, first, np.concatenate(pending))
                    pending, first = [], first + n
    finally:
        if bar is not None:
            bar.close()
    arrays = {w: np.concatenate(v)[: cfg.draws] for w, v in values.items()}
    return {"config": cfg, "values": arrays, "path": path, "summary": summarize(cfg, arrays)}


def load_corr(path: str, draws: int | None = None) -> dict[str, Any]:
    """Read a correlation file: its configuration (a :class:`CorrConfig` with the widths it has draws of and
    ``draws`` the number every one of them holds), the inputs, and {width: values (draws, functions)} of its intact contiguous draws (the first
    ``draws`` if given). A damaged block is refused (run the same ``nth corr`` again to recompute it)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"load_corr: path = {path!r} must be a file name")
    if draws is not None and (not isinstance(draws, (int, np.integer)) or isinstance(draws, bool) or draws < 1):
        raise ConfigError(f"load_corr: draws = {draws!r} must be a positive integer (or None for all)")
    with open_results(path, "correlation file") as h:
        d = _saved_config(h, path)
        values, bad = {}, []
        for w in _widths_in(h):
            arr, b = _contiguous(h, w)
            bad += b
            if arr is not None:
                values[w] = arr if draws is None else arr[:draws]
        if "inputs" in h and not verify(h["inputs"], required=True):
            bad.append("inputs")
        if bad:
            raise DamagedFileError(f"{path!r} is damaged: {len(bad)} part(s) fail their checksum "
                                   f"({', '.join(bad[:6])}); run the same nth corr again to recompute them")
        inputs = h["inputs"][()] if "inputs" in h else None
    if not values:
        raise ConfigError(f"{path!r} holds no draws yet")
    n = min(len(v) for v in values.values())
    if n < 2:
        raise ConfigError(f"{path!r} holds fewer than 2 draws at some width; run nth corr on it again")
    cfg = CorrConfig(**{k: tuple(v) if k == "functions" else v for k, v in d.items()}, widths=tuple(sorted(values)),
                     draws=n)
    return {"config": cfg, "values": values, "inputs": inputs, "path": path, "draws": n}


def default_corr_path(cfg: CorrConfig) -> str:
    """results/corr_{activation}_{init}_{hash}.h5: the same name for the same values-deciding arguments, so that
    running a measurement again resumes (or extends) it, and a different one gets its own file."""
    tag = _sha(cfg.to_json())[:10]
    return os.path.join("results", f"corr_{cfg.activation}_{cfg.init}_{tag}.h5")


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def format_corr(summary: list[dict[str, Any]]) -> str:
    """The prediction next to the measurement, one block per function (``nth corr``'s table): s_C (DG Conjecture
    1) and 2 s_C (DG Lemma 6) beside the fitted exponents, the resolved rule and draws_needed of docs/math.md
    section 8.1."""
    lines = []
    for s in summary:
        lines.append(f"{s['function']}")
        lines.append(f"  clusters {s['clusters']}: n_e = {s['n_e']}, n_o = {s['n_o']}, M = {s['factors']}; "
                     f"predicted s_C = {s['s_C_exact']} (variance 2 s_C = {s['variance_exponent']:g})"
                     + ("" if s["forest"] else "; cycles estimated by random probes"))
        if not s.get("widths"):
            continue
        lines.append(f"  {'width':>7} {'mean':>12} {'stderr':>10} {'|mean|/se':>9} {'variance':>11}")
        for w, mu, se, z, var in zip(s["widths"], s["mean"], s["stderr"], s["z"] or [None] * len(s["mean"]),
                                     s["variance"]):
            lines.append(f"  {w:>7} {mu:>12.4e} {se:>10.2e} {_num(z, '.1f'):>9} {var:>11.3e}")
        if s["zero"]:
            lines.append("  every draw is exactly 0 at every width: nothing to fit")
        elif s["slope_mean"] is not None:
            lo, hi = s["slope_mean_ci"]
            lines.append(f"  fitted exponent of |mean|: {s['slope_mean']:.2f} [{_num(lo)}, {_num(hi)}]  "
                         f"(s_C = {s['s_C']:g})")
        elif len(set(s["widths"])) < 2:
            lines.append("  one width: no exponent can be fitted (give two widths or more)")
        else:
            lines.append(f"  mean not resolved (within {s['resolve']:g} standard errors of zero at some width, or of "
                         f"both signs): no exponent fitted; about {_num(s['draws_needed'], 'd')} draws per width "
                         "would resolve the measured mean with 80% probability")
        if s["slope_variance"] is not None:
            lo, hi = s["slope_variance_ci"]
            lines.append(f"  fitted exponent of the variance: {s['slope_variance']:.2f} [{_num(lo)}, {_num(hi)}]  "
                         f"(2 s_C = {s['variance_exponent']:g})")
        lines.append(f"  {s['draws']} draws per width; {s['activation']} network, depth {s['depth']}, inputs of "
                     f"dimension {s['in_dim']}, {s['init']} weights"
                     + (f", {s['outputs']} outputs" if s.get("outputs", 1) > 1 else ""))
    return "\n".join(lines)
