"""Output files: checked before any computation, one writer at a time, written atomically.

Every file nth writes (solve, sweep and kernel files, figures) goes through this module:

- :func:`check_output_path` runs before the computation: the name (UTF-8, not too long for the file
  system, not a directory, not a dangling link), the directory (the nearest existing ancestor must be a
  writable directory, tested by creating and removing a probe file) and an existing file (refused unless
  ``force``). Nothing is computed for a path that could not be written.
- :func:`writer_lock` makes the caller the file's only writer: an exclusive ``flock`` on a lock file beside
  the target, ``.nth-<hash>.lock``, held for the whole run (a sweep holds it across all its runs). A second
  writer is refused at once with a message naming the holder. The kernel releases the lock when its
  process dies, so a killed run never blocks later ones; its lock file is reused or removed by the next.
- :func:`write_atomic` writes bytes to a temporary file ``.nth-<hash>.<pid>.<random>.tmp`` in the target's
  directory, flushes it to disk and moves it into place (refusing to clobber a file that appeared
  meanwhile unless ``force``). A failure (full disk, quota, I/O error, Ctrl-C) removes the temporary file
  and leaves any previous file untouched; temporary files of a killed writer are removed by the next
  writer of the same target, under the lock.

HDF5 files are built in memory (:mod:`nth.io._hdf5`) and written with :func:`write_atomic`, so the HDF5
library never writes to disk itself: a full disk is an ordinary ``OSError`` here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Iterator

from .._cluster import is_writer
from ..errors import ConfigError, OutputExistsError, OutputWriteError, WriterBusyError

#: Bytes written per os.write call.
_BLOCK = 1 << 24
#: Locks this process holds: resolved target path -> (fd, lock path, directories created for it); a nested
#: writer_lock is a no-op.
_HELD: dict[str, tuple[int, str, list[str]]] = {}
#: Temporary files this process is writing right now.
_TEMPS: set[str] = set()


def abandon() -> None:
    """Remove this process's temporary and lock files, for a process about to leave at once (an interrupted
    ``nth`` command, :func:`nth.cli.entry`); its finished files are untouched."""
    for tmp in list(_TEMPS):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    for _, lock_path, created in list(_HELD.values()):
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        _remove_empty(created)


def _remove_empty(created: list[str]) -> None:
    """Remove the directories a writer created (deepest first), up to the first one that is not empty."""
    for d in created:
        try:
            os.rmdir(d)
        except FileNotFoundError:  # never made (makedirs failed below it)
            continue
        except OSError:
            break


def _real(path: str | os.PathLike) -> str:
    """The file a path names, symbolic links (of the file and its directories) resolved: one file, one lock."""
    return os.path.realpath(os.fspath(path))


def _key(path: str) -> tuple[str, str]:
    """(directory, short stem) of the sidecar files of ``path``: names of fixed length, whatever the target's."""
    full = _real(path)
    digest = hashlib.sha1(os.path.basename(full).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.dirname(full), f".nth-{digest}"


def _nearest_existing(directory: str) -> str:
    d = directory
    while not os.path.lexists(d):
        d = os.path.dirname(d)
    return d


def check_output_path(path: str | os.PathLike, force: bool) -> str:
    """Refuse, before any computation, an output ``path`` that cannot be written: ConfigError (bad name,
    unwritable directory) or OutputExistsError (exists and ``force`` is not set). Returns ``path`` as a str."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise ConfigError(f"output path {path!r} is not a file name") from None
    if not isinstance(path, str):
        raise ConfigError(f"output path {path!r} must be a str (or os.PathLike of str), not {type(path).__name__}")
    if not path:
        raise ConfigError("output path '' is empty; give a file name")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"output path {path!r} is not valid UTF-8; choose a name of UTF-8 characters") from None
    if "\0" in path:
        raise ConfigError(f"output path {path!r} contains a NUL character")
    if path.endswith(os.sep) or os.path.basename(path) in ("", ".", ".."):
        raise ConfigError(f"output path {path!r} names a directory; give a file name such as "
                          f"{os.path.join(path, 'run.h5')}")
    if os.path.isdir(path):
        raise ConfigError(f"output path {path!r} is a directory; give a file name such as {path}/run.h5")
    if os.path.islink(path) and not os.path.exists(path):
        raise ConfigError(f"output path {path!r} is a symbolic link to {os.readlink(path)!r}, which does not exist; "
                          "remove the link or choose another --out")
    if os.path.lexists(path) and not force:
        raise OutputExistsError(f"output file {path!r} already exists; choose another --out or pass --force "
                                "to overwrite it")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise ConfigError(f"output path {path!r} exists and is not a regular file; choose another --out")
    real = _real(path)
    anc = _nearest_existing(os.path.dirname(real))
    if not os.path.isdir(anc):
        raise ConfigError(f"cannot write {path!r}: {anc!r} is a file, not a directory; choose another --out")
    try:
        name_max = os.pathconf(anc, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(real.encode("utf-8")) >= 4096:
        raise ConfigError(f"cannot write {path[:60]!r}...: the path is {len(real.encode('utf-8'))} bytes long, "
                          "over the 4095 this system allows; choose a shorter --out")
    for part in os.path.relpath(real, anc).split(os.sep):
        if len(part.encode("utf-8")) > name_max:
            raise ConfigError(f"cannot write {path!r}: the name {part[:40]!r}... is {len(part.encode('utf-8'))} "
                              f"bytes long and this file system allows {name_max}; choose a shorter --out")
    probe = os.path.join(anc, f"{_key(path)[1]}.{os.getpid()}.probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot write {path!r}: directory {anc!r} is not writable ({e.strerror}); choose "
                          "another --out") from None
    os.close(fd)
    os.unlink(probe)
    return path


def _holder(lock_path: str) -> str:
    try:
        with open(lock_path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike, what: str = "nth") -> Iterator[None]:
    """Hold the exclusive writer lock of ``path`` (module docstring); refuse with WriterBusyError if another
    process holds it. Re-entrant within a process. Creates the target's directory if needed."""
    target = _real(path)
    if target in _HELD:
        yield
        return
    directory, stem = _key(target)
    created = []  # directories made here, removed again at the end if the run left them empty
    d = directory
    while not os.path.lexists(d):
        created.append(d)
        d = os.path.dirname(d)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        _remove_empty(created)
        raise ConfigError(f"cannot create the directory {directory!r} of {os.fspath(path)!r} ({e.strerror})") from None
    lock_path = os.path.join(directory, stem + ".lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"cannot write {os.fspath(path)!r}: cannot create its lock file in {directory!r} "
                              f"({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WriterBusyError(f"{os.fspath(path)!r} is being written by {_holder(lock_path)}; a file has one "
                                      "writer at a time: wait for it to finish or choose another --out") from None
            raise
        # the previous holder may have removed the lock file between our open and our lock: retry on the new one
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{what} (pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
    except OSError:
        pass  # the holder's description is a courtesy
    _HELD[target] = (fd, lock_path, created)
    try:
        _remove_temporaries(target)  # left by a killed writer; nobody else writes this target now
        yield
    finally:
        del _HELD[target]
        with contextlib.suppress(OSError):
            os.unlink(lock_path)  # while still holding the lock (a waiting opener then retries, see above)
        os.close(fd)
        _remove_empty(created)


@contextlib.contextmanager
def file_writer(path: str | os.PathLike, what: str, *, force: bool) -> Iterator[str | None]:
    """The writer of ``path`` for one command: in the process that writes files (process 0 of several,
    :mod:`nth._cluster`; the only one otherwise) the path checked (:func:`check_output_path`) and its
    :func:`writer_lock` held for the duration, yielding the checked path; in every other process of a
    multi-process run nothing is checked or locked and None is yielded (it writes nothing)."""
    if not is_writer():
        yield None
        return
    path = check_output_path(path, force)
    with writer_lock(path, what):
        yield path


def _remove_temporaries(target: str) -> None:
    directory, stem = _key(target)
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if name.startswith(stem + ".") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:_BLOCK])
        view = view[n:]


def write_atomic(path: str | os.PathLike, data: bytes, *, force: bool = False, what: str = "nth") -> str:
    """Write ``data`` to ``path`` atomically under the writer lock (module docstring).

    Raises OutputExistsError if ``path`` exists (or appears meanwhile) and ``force`` is False, and
    OutputWriteError (naming the cause, e.g. no space left on the device) if the bytes cannot be written; in
    every failure no temporary file is left and an existing file is unchanged.
    """
    shown = check_output_path(path, force)
    path = _real(shown)  # through a symbolic link, the file it points to is written (the link stays)
    with writer_lock(path, what):
        directory, stem = _key(path)
        tmp = os.path.join(directory, f"{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            umask = os.umask(0)
            os.umask(umask)
            mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o666 & ~umask
            _TEMPS.add(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, mode)  # a replaced file keeps its permissions
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if force:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # atomic, and refuses to clobber a file created meanwhile
                except FileExistsError:
                    raise OutputExistsError(f"output file {path!r} was created by someone else while this run was "
                                            "computing; not overwritten (pass --force to overwrite)") from None
                except OSError as e:
                    if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                        raise
                    if os.path.lexists(path):  # file systems without hard links
                        raise OutputExistsError(f"output file {path!r} already exists; pass --force") from None
                    os.replace(tmp, path)
            with contextlib.suppress(OSError):  # the rename itself is durable once the directory is synced
                dfd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as e:
            if isinstance(e, OutputExistsError):
                raise
            why = "no space left on the device" if e.errno == errno.ENOSPC else \
                "disk quota exceeded" if e.errno == errno.EDQUOT else (e.strerror or str(e))
            raise OutputWriteError(f"could not write {shown!r}: {why} ({len(data)} bytes to write); nothing was "
                                   "written" + ("" if not os.path.lexists(path) else " and the existing file is "
                                                "unchanged")) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            _TEMPS.discard(tmp)
    return shown
