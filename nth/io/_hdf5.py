"""HDF5 files written atomically, and read back.

A file is built in memory and handed to :func:`nth.io._files.write_atomic` (temporary file, fsync, rename
under the writer lock), so an error, a full disk or an interruption never leaves a partial file under the
target name. An existing file is never replaced unless ``force=True``. :func:`digest` checksums a group (a
sweep's runs carry one). What goes into a file is :mod:`nth.io._schema`'s business.

Every axis of a dataset written with an ``axes`` rule is named by a netCDF-4 dimension: an HDF5 dimension scale
in the same group, which is how netCDF-4 stores dimensions, so that ``xarray.open_dataset(path,
engine="h5netcdf", group=...)``, netCDF tools and h5py's ``.dims`` see named dimensions. A dimension without
values of its own (sample, time, ...) is netCDF's "dimension but not a variable": an empty dataset marked as a
scale with the ``NAME`` netCDF gives those; a coordinate such as the saved times ``t`` is an ordinary dataset
along the dimension, listed in the ``coordinates`` attribute of the datasets that use it (the CF convention
xarray decodes). Dimension-scale bookkeeping (object references) is left out of :func:`digest`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from collections.abc import Callable, Mapping
from typing import Any

import h5py
import numpy as np

from ..errors import ConfigError
from ._files import check_output_path, write_atomic

def package_versions() -> dict[str, str]:
    """Versions of nth and the numerical stack, recorded in every file."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("nth", "jax", "jaxlib", "diffrax", "equinox", "numpy", "h5py"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _attr(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    if v is None:
        return "None"
    return v


#: Arrays larger than this (bytes) are stored gzip-compressed, with HDF5's fletcher32 checksums; smaller ones
#: contiguous (a chunk index costs more than gzip saves on them).
COMPRESS_ABOVE = 65536

#: The ``NAME`` that marks a netCDF-4 dimension that is not a variable (netCDF-C's own text; h5netcdf and
#: netCDF read it).
NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."
#: Attributes HDF5 and netCDF-4 use for dimension scales: structure, not content (object references whose
#: values depend on the file's layout), so :func:`digest` leaves them out.
SCALE_ATTRS = frozenset({"CLASS", "NAME", "DIMENSION_LIST", "REFERENCE_LIST", "_Netcdf4Dimid", "_Netcdf4Coordinates"})

#: A rule naming a dataset's axes: (path relative to its group, shape) -> (dimension names, coordinates), the
#: coordinates a space-separated list of datasets of the same group, or None.
AxesRule = Callable[[str, tuple[int, ...]], tuple[tuple[str, ...], "str | None"]]


def dimension(h: h5py.Group, name: str, size: int, values: Any = None) -> h5py.Dataset:
    """The netCDF dimension ``name`` of the group ``h``, created if absent: with ``values`` a coordinate variable
    (a scale holding them, xarray's index), without a dimension that is not a variable. An existing dimension of
    another size is a ValueError (a schema defect, not a user error)."""
    if name in h:
        d = h[name]
        if d.shape != (size,) or not d.is_scale:
            raise ValueError(f"{h.name}/{name} exists with shape {d.shape}; expected the dimension of size {size}")
        return d
    if values is None:
        d = h.create_dataset(name, shape=(size,), dtype="f4")  # never written: no storage is allocated
        d.make_scale(f"{NOT_A_VARIABLE}{size:10d}")
    else:
        d = h.create_dataset(name, data=np.asarray(values))
        d.make_scale(name)
    return d


def is_dimension(obj: Any) -> bool:
    """Whether ``obj`` is a netCDF dimension that is not a variable (:func:`dimension` without values)."""
    name = obj.attrs.get("NAME", b"") if isinstance(obj, h5py.Dataset) else b""
    return (name.decode() if isinstance(name, bytes) else str(name)).startswith(NOT_A_VARIABLE)


def label_axes(h: h5py.Group, paths: Any, axes: AxesRule) -> None:
    """Attach to every dataset ``h[path]`` the dimensions ``axes`` names for it (created in ``h``), and its
    ``coordinates`` attribute."""
    for path in paths:
        ds = h[path]
        dims, coords = axes(path.lstrip("/"), ds.shape)
        if len(dims) != ds.ndim:
            raise ValueError(f"{ds.name} has shape {ds.shape} but the schema names {len(dims)} dimensions {dims}")
        for axis, name in enumerate(dims):
            ds.dims[axis].attach_scale(dimension(h, name, ds.shape[axis]))
        if coords:
            ds.attrs["coordinates"] = coords


def write_group(h: h5py.Group, datasets: Mapping[str, Any], attrs: Mapping[str, Mapping[str, Any]],
                axes: AxesRule | None = None) -> None:
    """Datasets ({'path/name': array}, relative to ``h``) and attributes ({'group': {key: value}}, '' or '/' for
    ``h`` itself) under the group ``h``: big arrays compressed (COMPRESS_ABOVE), dicts and lists as JSON; with
    ``axes``, every axis named by a dimension in ``h`` (:func:`label_axes`)."""
    for name, arr in datasets.items():
        arr = np.asarray(arr)
        big = arr.nbytes > COMPRESS_ABOVE
        h.create_dataset(name, data=arr, **({"compression": "gzip", "shuffle": True, "fletcher32": True} if big else {}))
    if axes is not None:
        label_axes(h, datasets, axes)
    for group, kv in attrs.items():
        obj = h if group in ("", "/") else (h[group] if group in h else h.create_group(group))
        for k, v in kv.items():
            obj.attrs[k] = _attr(v)


def build_h5(
    datasets: Mapping[str, Any],
    attrs: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    axes: AxesRule | None = None,
    before_commit: Callable[[h5py.File], None] | None = None,
) -> bytes:
    """The bytes of an HDF5 file holding ``datasets`` ({'/group/name': array}) and ``attrs`` ({'/group': {key:
    value}}), built in memory, with the ``axes`` rule's dimensions (:func:`write_group`). ``before_commit`` (used
    by tests) is called on the open file before it is closed."""
    bio = io.BytesIO()
    with h5py.File(bio, "w") as h:
        write_group(h, datasets, attrs or {}, axes)
        if before_commit is not None:
            before_commit(h)
    return bio.getvalue()


def write_h5(
    path: str | os.PathLike,
    datasets: Mapping[str, Any],
    attrs: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    force: bool = False,
    axes: AxesRule | None = None,
    before_commit: Callable[[h5py.File], None] | None = None,
) -> str:
    """Write ``datasets`` and ``attrs`` (:func:`build_h5`, with the ``axes`` rule's dimensions) to ``path``
    atomically (:func:`nth.io._files.write_atomic`).

    Raises :class:`~nth.errors.OutputExistsError` if ``path`` exists and ``force`` is False, and
    :class:`~nth.errors.OutputWriteError` if the disk refuses the bytes (nothing is left behind).
    """
    path = check_output_path(path, force)
    return write_atomic(path, build_h5(datasets, attrs, axes=axes, before_commit=before_commit), force=force)


def edit_h5(path: str | os.PathLike, edit: Callable[[h5py.File], None],
            create: Mapping[str, Any] | None = None) -> None:
    """Apply ``edit`` to the HDF5 file ``path`` in memory and replace the file atomically with the result; with
    ``create`` (root attributes) start from a new file instead. The caller holds the writer lock."""
    bio = io.BytesIO() if create is not None else io.BytesIO(_read_bytes(path))
    with h5py.File(bio, "w" if create is not None else "r+") as h:
        for k, v in (create or {}).items():
            h.attrs[k] = v
        edit(h)
    write_atomic(path, bio.getvalue(), force=True)


def check_writable(path: str, what: str) -> None:
    """Refuse to add to an existing results file that is read-only (before any computation)."""
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ConfigError(f"{path!r} is read-only; make it writable (chmod u+w) to add {what}, or choose another --out")


def drop_damaged(path: str, names: list[str], log: Callable[[str], None] | None, what: str,
                 also: Callable[[h5py.File], None] | None = None) -> None:
    """Remove the damaged parts ``names`` of a resumable file (to be computed again), in one atomic edit; ``also``
    may repair more in the same edit. The caller holds the writer lock."""
    if not names:
        return
    if log:
        log(f"{path}: {len(names)} damaged {what} fail their checksum and will be computed again: {', '.join(names)}")

    def drop(h):
        for name in names:
            if name in h:
                del h[name]
        if also is not None:
            also(h)

    edit_h5(path, drop)


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """'key: old there, new now; ...' for the keys whose values differ (a resumed file's recorded arguments)."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys)


def _read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _canonical(v: Any) -> bytes:
    """Bytes that identify an attribute or dataset value as h5py reads it back (dtype, shape, contents)."""
    if isinstance(v, bytes):
        return b"b:" + v
    if isinstance(v, str):
        return b"s:" + v.encode("utf-8", "surrogateescape")
    a = np.asarray(v)
    if a.dtype.kind in "OSU":
        return b"o:" + repr([_canonical(x) for x in a.ravel().tolist()]).encode()
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return f"{a.dtype.str}{a.shape}:".encode() + a.tobytes()


def digest(obj: h5py.Group | h5py.Dataset, skip: str = "sha256") -> str:
    """SHA-256 of everything under ``obj``: every dataset's dtype, shape and values and every attribute (except
    ``skip`` and the dimension-scale bookkeeping SCALE_ATTRS), in name order. Stored as the ``sha256`` attribute
    of a sweep's runs, it detects damaged bytes."""
    h = hashlib.sha256()

    def add(name: str, o) -> None:
        h.update(name.encode("utf-8") + b"\0")
        for k in sorted(o.attrs):
            if k != skip and k not in SCALE_ATTRS:
                h.update(b"@" + k.encode("utf-8") + b"=" + _canonical(o.attrs[k]) + b"\0")
        if isinstance(o, h5py.Dataset):
            h.update(_canonical(o[()]))

    add("", obj)
    if isinstance(obj, h5py.Group):
        names: list[str] = []
        obj.visit(names.append)
        for name in sorted(names):
            add(name, obj[name])
    return h.hexdigest()


def verify(obj: h5py.Group | h5py.Dataset, required: bool = False) -> bool:
    """Whether ``obj`` can be read in full and matches its stored ``sha256`` attribute (without one: True, unless
    ``required``)."""
    try:
        stored = obj.attrs.get("sha256")
        if stored is None:
            return not required
        return str(stored) == digest(obj)
    except (OSError, KeyError, ValueError, RuntimeError, UnicodeDecodeError):
        return False


def open_results(path: str | os.PathLike, what: str = "results file") -> h5py.File:
    """Open an HDF5 file for reading, or raise ConfigError saying why it cannot be (missing, a directory, empty,
    not HDF5, truncated)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise ConfigError(f"{what} {path!r} is a directory, not a file")
    size = os.path.getsize(path)
    if size == 0:
        raise ConfigError(f"{what} {path!r} is empty (0 bytes); it is not an HDF5 file written by nth")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        why = str(e).split("(")[0].strip().rstrip(",") or type(e).__name__
        raise ConfigError(f"{what} {path!r} ({size} bytes) is not a readable HDF5 file ({why}): it is another kind of "
                          "file, or truncated or damaged") from None


def read_h5(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results file into {'/group/name': ndarray} plus {'@/group': attrs dict} entries: every dataset but
    the netCDF dimensions that are not variables (:func:`is_dimension`, placeholders without data)."""
    out: dict[str, Any] = {}
    with open_results(path) as h:
        out["@/"] = dict(h.attrs)

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                if not is_dimension(obj):
                    out["/" + name] = obj[()]
            else:
                out["@/" + name] = dict(obj.attrs)

        h.visititems(visit)
    return out
