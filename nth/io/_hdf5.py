"""HDF5 files written atomically, and read back.

A file is written to a temporary file beside the target, flushed, and only then moved into place, so an
error or interruption never leaves a partial file under the target name. An existing file is never
replaced unless ``force=True`` (the final link refuses to clobber, so a file that appears while a run is
computing is protected too). What goes into a file is :mod:`nth.io._schema`'s business.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import h5py
import numpy as np

from ..errors import ConfigError, OutputExistsError

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


def check_output_path(path: str | os.PathLike, force: bool) -> str:
    """Refuse early (before any computation) if ``path`` exists and ``force`` is not set."""
    path = os.fspath(path)
    if not path:
        raise ConfigError("output path is empty")
    if os.path.isdir(path):
        raise ConfigError(f"output path {path!r} is a directory; give a file name such as {path}/run.h5")
    if os.path.exists(path) and not force:
        raise OutputExistsError(f"output file {path!r} already exists; choose another --out or pass --force "
                                "to overwrite it")
    return path


def _attr(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    if v is None:
        return "None"
    return v


def write_h5(
    path: str | os.PathLike,
    datasets: Mapping[str, Any],
    attrs: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    force: bool = False,
    before_commit: Callable[[h5py.File], None] | None = None,
) -> str:
    """Write ``datasets`` ({'/group/name': array}) and ``attrs`` ({'/group': {key: value}}) atomically.

    ``before_commit`` (used by tests) is called on the open temporary file just before it is moved into
    place. Raises :class:`~nth.errors.OutputExistsError` if ``path`` exists and ``force`` is False.
    """
    path = check_output_path(path, force)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as h:
            for name, arr in datasets.items():
                h.create_dataset(name, data=np.asarray(arr))
            for group, kv in (attrs or {}).items():
                obj = h[group] if group in h else h.create_group(group)
                for k, v in kv.items():
                    obj.attrs[k] = _attr(v)
            if before_commit is not None:
                before_commit(h)
            h.flush()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions of a normal one
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic and refuses to clobber a file created meanwhile
            except FileExistsError:
                raise OutputExistsError(f"output file {path!r} appeared while this run was computing; "
                                        "not overwritten (pass --force to overwrite)") from None
            except OSError:  # file systems without hard links
                if os.path.exists(path):
                    raise OutputExistsError(f"output file {path!r} already exists; pass --force") from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_h5(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results file into {'/group/name': ndarray} plus {'@/group': attrs dict} entries."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as h:
        out["@/"] = dict(h.attrs)

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out["/" + name] = obj[()]
            else:
                out["@/" + name] = dict(obj.attrs)

        h.visititems(visit)
    return out
