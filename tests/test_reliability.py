"""Reliability (README, "Reliability"): bad input and faults end with one line and exit status 2 (130 on
interrupt), are caught before any computation, never leave a file behind or change one, and a sweep file has
one writer at a time and detects damaged runs.

Each row of ``CASES`` is a command, what the directory holds before it, the expected exit status and a pattern
of the message; the check that nothing was left or changed is the same for every row.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import nth
import nth.io._files
import nth.io._kernel_report
import nth.io._solve
import nth.io._sweep
import nth.plot
from nth.cli import main

TINY = ["--depth", "1", "--n", "4", "--d", "3", "--p", "2", "--num-times", "3", "--quiet"]
SOLVE = ["solve", "--width", "16", "--t-max", "1", *TINY]
SWEEP = ["sweep", "--widths", "8,16", "--seeds", "2", "--t-max", "1", *TINY]
KERNEL = ["kernel", "--width", "16", "--n", "4", "--d", "3"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run(argv) -> tuple[int, str]:
    """nth's exit status and stderr for ``argv`` (argparse's own errors included)."""
    try:
        return main([str(a) for a in argv]), ""
    except SystemExit as e:  # argparse: usage + one error line, status 2
        return int(e.code), ""


def snapshot(root) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``root`` (hidden ones too) with its size and modification time."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def no_compute(monkeypatch):
    """Computing anything fails the test: the refusals below must come before the work."""
    def computed(*a, **k):
        raise AssertionError("computation started before the refusal")

    monkeypatch.setattr(nth.io._solve, "solve", computed)
    monkeypatch.setattr(nth.io._sweep, "solve_seeds", computed)
    monkeypatch.setattr(nth.io._kernel_report, "compute_kernels", computed)
    monkeypatch.setattr(nth.plot, "load_sweep", computed)


def _npz(tmp, name="data.npz", **arrays):
    path = tmp / name
    rng = np.random.default_rng(0)
    base = {"X": rng.standard_normal((4, 3)), "y": rng.standard_normal(4)}
    np.savez(path, **(base | arrays))
    return path


def _text_file(tmp, name, text="not what you think\n"):
    (tmp / name).write_text(text)
    return tmp / name


def _truncated_h5(tmp):
    path = tmp / "cut.h5"
    nth.write_h5(path, {"/a": np.ones(1000)}, {"/": {"format": "nth-sweep-2"}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _fifo(tmp):
    os.mkfifo(tmp / "fifo.npz")
    return tmp / "fifo.npz"


def _bad_deflate(tmp):
    """An .npz whose compressed member's deflate stream is damaged (its CRC would catch nothing: zlib fails first)."""
    path = tmp / "deflate.npz"
    np.savez_compressed(path, X=np.arange(400.0).reshape(100, 4), y=np.zeros(100))
    data = bytearray(path.read_bytes())
    start = data.index(b"X.npy") + 40
    data[start:start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    return path


def _dangling(tmp, name):
    os.symlink(tmp / "missing" / "target", tmp / name)
    return tmp / name


LONG = "x" * 300 + ".h5"
BAD_UTF8 = "out_\udcff.h5"  # what Python makes of a non-UTF-8 byte in argv

#: (id, setup(tmp) -> argv, exit status, stderr pattern). Output-path rows run with ``no_compute``.
PATH_CASES = [
    (f"{cmd}-{what}", cmd, what)
    for cmd in ("solve", "sweep", "kernel", "plot")
    for what in ("long-name", "non-utf8", "parent-is-file", "read-only-dir", "dangling-link")
]


def _path_argv(tmp, cmd, what):
    name = {"long-name": LONG, "non-utf8": BAD_UTF8, "parent-is-file": "afile/out.h5",
            "read-only-dir": "ro/out.h5", "dangling-link": None}[what]
    if what == "parent-is-file":
        _text_file(tmp, "afile")
    if what == "read-only-dir":
        (tmp / "ro").mkdir()
        os.chmod(tmp / "ro", 0o555)
    suffix = ".png" if cmd == "plot" else ".h5"
    out = str(_dangling(tmp, "link" + suffix)) if what == "dangling-link" else os.path.join(str(tmp), name)
    if cmd == "plot":
        return ["plot", "error-vs-width", str(tmp / "sweep.h5"), "--out", re.sub(r"\.h5$", ".png", out)]
    base = {"solve": SOLVE, "sweep": SWEEP, "kernel": KERNEL}[cmd]
    return [*base, "--out", out]


def test_trailing_slash_and_empty_names_are_refused_before_computing(tmp_path, capsys, no_compute):
    (tmp_path / "file.h5").write_bytes(b"x")
    for out, pattern in ((f"{tmp_path}/newdir/", r"names a directory"), (f"{tmp_path}/file.h5/", r"names a directory"),
                         ("", r"output path '' is empty")):
        for base in (SOLVE, SWEEP, KERNEL):
            code, _ = run([*base, "--out", out] + (["--force"] if base is SOLVE else []))
            err = capsys.readouterr().err
            assert code == 2 and re.search(pattern, err), (base[0], out, err)
    assert sorted(os.listdir(tmp_path)) == ["file.h5"]


PATH_PATTERNS = {"long-name": r"is 30\d bytes long and this file system allows \d+",
                 "non-utf8": r"is not valid UTF-8", "parent-is-file": r"is a file, not a directory",
                 "read-only-dir": r"is not writable", "dangling-link": r"symbolic link to .* which does not exist"}


@pytest.mark.parametrize("case, cmd, what", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_unwritable_outputs_are_refused_before_computing(tmp_path, capsys, no_compute, case, cmd, what):
    if what == "read-only-dir" and ROOT:
        pytest.skip("root writes into read-only directories")
    argv = _path_argv(tmp_path, cmd, what)
    if cmd == "plot":
        (tmp_path / "sweep.h5").write_bytes(b"")  # never read: the figure path is refused first
    before = snapshot(tmp_path)
    code, _ = run(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("nth: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(PATH_PATTERNS[what], err), err
    assert snapshot(tmp_path) == before


#: Bad input anywhere on the command line: (id, setup(tmp) -> argv, status, pattern). argparse rows print
#: their own usage line; every other row prints exactly one line.
CASES = [
    ("complex-X", lambda t: ["solve", "--data", _npz(t, X=np.ones((4, 3)) * (1 + 1j)), "--width", "16",
                             "--t-max", "1", "--p", "2", "--quiet"], 2, r"'X' is complex .*must be real"),
    ("complex-y", lambda t: ["solve", "--data", _npz(t, y=np.ones(4) * 1j), "--width", "16", "--t-max", "1",
                             "--p", "2", "--quiet"], 2, r"'y' is complex"),
    ("complex-X_test", lambda t: ["solve", "--data", _npz(t, X_test=np.ones((2, 3), complex)), "--width", "16",
                                  "--t-max", "1", "--p", "2", "--quiet"], 2, r"'X_test' is complex"),
    ("complex-weights", lambda t: ["solve", "--weights", _npz(t, "w.npz", W1=np.ones((8, 8), complex),
                                                              a=np.ones(8)), "--t-max", "1", "--p", "2", "--quiet"],
     2, r"'W1' is complex .*must be real"),
    ("overflowing-inputs", lambda t: ["solve", "--data", _npz(t, X=np.full((4, 3), 1e200)), "--normalization",
                                      "none", "--width", "16", "--t-max", "1", "--p", "2", "--quiet"],
     2, r"squared norm overflows float64"),
    ("empty-npz", lambda t: ["solve", "--data", _text_file(t, "empty.npz", ""), "--quiet"], 2,
     r"\(0 bytes\) is not an \.npz archive"),
    ("text-as-npz", lambda t: ["solve", "--data", _text_file(t, "text.npz"), "--quiet"], 2,
     r"is not an \.npz archive; write one with numpy\.savez"),
    ("pickled-npz", lambda t: ["solve", "--data", _npz(t, X=np.array([{"a": 1}] * 4, dtype=object)), "--quiet"],
     2, r"hold Python objects"),
    ("fifo-as-npz", lambda t: ["solve", "--data", _fifo(t), "--quiet"], 2, r"is not a regular file"),
    ("empty-X_test", lambda t: ["solve", "--data", _npz(t, X_test=np.zeros((0, 3))), "--quiet"], 2,
     r"'X_test' has 0 rows"),
    ("bad-deflate-npz", lambda t: ["solve", "--data", _bad_deflate(t), "--quiet"], 2, r"is not a readable \.npz archive"),
    ("plot-missing", lambda t: ["plot", "kernel-sizes", t / "nope.h5"], 2, r"sweep file .* does not exist"),
    ("plot-empty", lambda t: ["plot", "kernel-sizes", _text_file(t, "e.h5", "")], 2, r"is empty \(0 bytes\)"),
    ("plot-text", lambda t: ["plot", "trajectories", _text_file(t, "t.h5")], 2, r"is not a readable HDF5 file"),
    ("plot-truncated", lambda t: ["plot", "error-vs-width", _truncated_h5(t)], 2,
     r"not a readable HDF5 file .* truncated or damaged"),
    ("plot-not-sweep", lambda t: ["plot", "kernel-sizes", _h5(t)], 2, r"is not an nth sweep file"),
    ("plot-over-non-png", lambda t: ["plot", "kernel-sizes", _h5(t), "--out", _text_file(t, "notes.png")], 2,
     r"exists and is not a PNG image"),
    ("budget-1e400", lambda t: [*SOLVE, "--memory-budget", "1e400", "--dry-run"], 2, None),
    ("budget-0.5", lambda t: [*SOLVE, "--memory-budget", "0.5", "--dry-run"], 2, None),
    ("seed-beyond-64-bits", lambda t: [*SOLVE, "--seed", str(2**70), "--dry-run"], 2, None),
    ("data-seed-negative", lambda t: [*SOLVE, "--data-seed", "-1", "--dry-run"], 2, None),
    ("params-depth-0", lambda t: ["params", "--depth", "0"], 2, r"depth = 0 must be a positive integer"),
    ("existing-output", lambda t: [*SOLVE, "--out", _text_file(t, "mine.h5")], 2, r"already exists.*--force"),
    ("width-1e9-dry-run", lambda t: ["solve", "--width", "1000000000", "--depth", "2", "--dry-run"], 2,
     r"(?s)weights: [\d.]+ EiB.*Reduce the width: the weights alone need"),
]


def _h5(tmp):
    path = tmp / "other.h5"
    nth.write_h5(path, {"/a": np.ones(3)})
    return path


@pytest.mark.parametrize("case, setup, status, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_table(tmp_path, capsys, case, setup, status, pattern):
    argv = setup(tmp_path)
    before = snapshot(tmp_path)
    code, _ = run(argv)
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err
    if pattern is None:  # argparse: "usage: ..." then "nth ...: error: argument ...: <why>"
        assert re.search(r"error: argument --[\w-]+: ", err.strip().splitlines()[-1]), err
    else:
        assert err.startswith("nth: error: ") and re.search(pattern, err), err
    assert snapshot(tmp_path) == before


def test_dry_run_plans_from_sizes_alone(tmp_path):
    """--n 10^8 is refused by the plan from sizes: the 6 GB inputs are never generated (the process's peak
    resident memory, VmHWM of its own address space, stays under 1 GiB)."""
    code = ("import sys\nfrom nth.cli import main\n"
            "try:\n    rc = main(['solve', '--n', '100000000', '--dry-run'])\nexcept SystemExit as e:\n    rc = e.code\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "over the memory budget" in proc.stderr, proc.stderr
    assert int(proc.stdout.split()[-1]) < 1 << 20, f"peak RSS {proc.stdout.split()[-1]} KiB"


def test_kernel_data_needs_no_targets(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", X=np.random.default_rng(0).standard_normal((4, 3)))
    out = tmp_path / "k.h5"
    assert run(["kernel", "--width", "16", "--data", tmp_path / "x.npz", "--out", out])[0] == 0
    with h5py.File(out) as h:
        assert h["data/X"].shape == (4, 3) and "data/y" not in h and h["kernels/K2"].shape == (4, 4)


def test_huge_inputs_are_projected_without_overflow():
    """x -> x/|x| is computed without squaring x: inputs of size 1e200 (or 1e-200) give the same unit vectors."""
    X = np.random.default_rng(1).standard_normal((5, 3))
    y = np.ones(5)
    ref = nth.data.make_dataset(X, y).X
    for scale in (1e200, 1e-200, 1e300):
        np.testing.assert_allclose(nth.data.make_dataset(X * scale, y).X, ref, rtol=1e-15, atol=1e-15)


# --- faults while writing --------------------------------------------------------------------------------------

def _enospc_after(nbytes):
    """A stand-in for the writer's byte loop that writes ``nbytes`` and then finds the disk full."""
    def write_all(fd, data):
        os.write(fd, bytes(memoryview(data)[:nbytes]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write_all


@pytest.mark.parametrize("cmd", ["solve", "kernel", "sweep"])
def test_full_disk_leaves_nothing(tmp_path, capsys, monkeypatch, cmd):
    monkeypatch.setattr(nth.io._files, "_write_all", _enospc_after(1000))
    out = tmp_path / "out.h5"
    base = {"solve": SOLVE, "kernel": KERNEL, "sweep": SWEEP}[cmd]
    code, _ = run([*base, "--out", out])
    err = capsys.readouterr().err
    assert code == 2 and re.search(r"could not write .*no space left on the device.*nothing was written", err), err
    assert err.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_full_disk_keeps_the_previous_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.h5"
    assert run([*SOLVE, "--out", out])[0] == 0
    before = out.read_bytes()
    monkeypatch.setattr(nth.io._files, "_write_all", _enospc_after(10))
    code, _ = run([*SOLVE, "--out", out, "--force", "--seed", "1"])
    assert code == 2 and "existing file is unchanged" in capsys.readouterr().err
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["out.h5"]


def test_full_tmpfs(tmp_path):
    """A real full disk: a 64 KiB tmpfs mounted in a user namespace (skipped where one cannot be mounted)."""
    _userns_mount_or_skip()
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=64k tmpfs {mnt} || exit 99; "
              f"{sys.executable} -m nth {' '.join(SOLVE)} --save-kernels --n 40 --out {mnt}/out.h5; "
              f"echo status=$?; ls -A {mnt}")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    if "status=" not in proc.stdout and proc.returncode == 99:
        pytest.skip("tmpfs cannot be mounted here")
    assert "status=2" in proc.stdout, proc.stdout + proc.stderr
    assert re.search(r"nth: error: could not write .*no space left on the device", proc.stderr), proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "status=2", proc.stdout  # ls printed nothing: no file left


def _userns_mount_or_skip():
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no user namespaces here")


@pytest.mark.parametrize("cmd", ["solve", "sweep", "kernel", "plot"])
def test_read_only_file_system(tmp_path, cmd):
    """An output on a read-only file system (a tmpfs mounted read-only in a user namespace, so that this runs
    as root too) is refused before any computation, with one line."""
    _userns_mount_or_skip()
    mnt = tmp_path / "ro"
    mnt.mkdir()
    base = {"solve": SOLVE, "kernel": KERNEL, "sweep": SWEEP,
            "plot": ["plot", "kernel-sizes", str(tmp_path / "missing.h5")]}[cmd]
    out = f"{mnt}/out." + ("png" if cmd == "plot" else "h5")
    script = (f"mount -t tmpfs -o ro,size=64k tmpfs {mnt} || exit 99; "
              f"{sys.executable} -m nth {' '.join(base)} --out {out}; echo status=$?")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    if proc.returncode == 99:
        pytest.skip("tmpfs cannot be mounted here")
    assert proc.stdout.strip().splitlines()[-1] == "status=2", proc.stdout + proc.stderr
    assert re.fullmatch(r"nth: error: cannot write .*: directory .* is not writable \(Read-only file system\); "
                        r"choose another --out\n", proc.stderr), proc.stderr


def test_refused_sweep_leaves_no_file_and_the_corrected_command_runs(tmp_path, capsys):
    """A sweep refused by its plan (or failing in its first run) leaves no file and no directory behind, so the
    corrected command is not blocked by "different arguments"."""
    out = tmp_path / "new" / "sweep.h5"
    code, _ = run([*SWEEP[:2], "100000000", *SWEEP[3:], "--out", out])
    assert code == 2 and "over the memory budget" in capsys.readouterr().err
    code, _ = run([*SWEEP[:2], "8", *SWEEP[3:], "--max-steps", "1", "--out", out])
    assert code == 2 and "solve failed" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    assert run([*SWEEP[:2], "8", *SWEEP[3:], "--out", out])[0] == 0


def test_outputs_through_symbolic_links(tmp_path, capsys):
    """Through a link the file it points to is written and the link stays; a read-only sweep file is refused,
    and a replaced file keeps its permissions."""
    store = tmp_path / "store"
    store.mkdir()
    real, link = store / "sweep.h5", tmp_path / "link.h5"
    argv = ["sweep", "--widths", "8", "--seeds", "2", *SWEEP[5:]]
    assert run([*argv, "--out", real])[0] == 0
    with h5py.File(real, "r+") as h:  # a sweep with one run still to do
        del h["runs/m8_s1"]
    os.symlink(real, link)
    assert run([*argv, "--out", link])[0] == 0
    assert os.path.islink(link) and nth.io.finished_runs(str(real)) == {"m8_s0", "m8_s1"}
    if not ROOT:
        os.chmod(real, 0o440)
        assert run([*argv, "--out", link])[0] == 2 and "is read-only" in capsys.readouterr().err
        os.chmod(real, 0o640)
    out = tmp_path / "solve.h5"
    assert run([*SOLVE, "--out", out])[0] == 0
    os.chmod(out, 0o600)
    assert run([*SOLVE, "--out", out, "--force", "--seed", "1"])[0] == 0
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["link.h5", "solve.h5", "store"]


def test_stale_temporaries_and_locks_of_a_killed_writer_are_removed(tmp_path):
    """A killed run leaves its (possibly 0-byte) temporary file and lock file; the next writer of the same
    target removes them and succeeds."""
    out = tmp_path / "out.h5"
    directory, stem = nth.io._files._key(str(out))
    for name in (f"{stem}.999999.dead.tmp", f"{stem}.lock"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "unrelated.tmp").write_bytes(b"keep me")
    assert run([*SOLVE, "--out", out])[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["out.h5", "unrelated.tmp"]


def test_writer_lock_refuses_a_second_writer(tmp_path):
    """In-process view of the lock: a second holder (another process, here simulated by a held flock on the
    lock file) is refused at once with the holder's description."""
    import fcntl

    out = tmp_path / "out.h5"
    directory, stem = nth.io._files._key(str(out))
    lock = os.path.join(directory, stem + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"nth sweep (pid 1)\n")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(nth.errors.WriterBusyError, match=r"being written by nth sweep \(pid 1\)"):
            nth.write_h5(out, {"/a": np.ones(2)})
    finally:
        os.close(fd)
    assert not out.exists()


# --- processes ----------------------------------------------------------------------------------------------

def _start(argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "nth", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("different", [False, True], ids=["same-arguments", "different-arguments"])
def test_two_sweeps_on_one_file(tmp_path, different):
    """Two sweeps started at the same instant on one new file: the file ends up holding exactly one
    configuration's runs, all of them. The other process waits for nothing: while the first one writes, it is
    refused with one line; if it starts only after the first has finished, it finds the file complete and, with
    the same arguments, computes nothing (with different ones it is refused)."""
    out = tmp_path / "sweep.h5"
    one = [*SWEEP[:2], "8", *SWEEP[3:], "--out", out]  # one width, two seeds
    argv = [one, one + (["--sigma-w", "1.2"] if different else [])]
    procs = [_start(a) for a in argv]
    results = [(p.wait(timeout=600), p.stderr.read(), p.stdout.read()) for p in procs]
    codes = [c for c, _, _ in results]
    assert all(c in (0, 2) for c in codes) and 0 in codes, results
    for c, err, _ in results:
        if c == 2:
            assert re.search(r"nth: error: .*(being written by nth sweep|different arguments)", err), err
            assert "Traceback" not in err
    if codes == [0, 0]:  # the later one resumed a finished file: it computed nothing
        assert not different
        assert sum("2 runs were already there, 0 computed now" in o for _, _, o in results) == 1, results
    winners = [a for a, c in zip(argv, codes) if c == 0]
    if different:
        assert sorted(codes) == [0, 2], results
    sw = nth.io.load_sweep(str(out))
    assert sw["config"]["base"]["sigma_w"] == (1.2 if "--sigma-w" in winners[0] else 1.0)
    with h5py.File(out) as h:
        runs = {name: h["runs"][name].attrs["config"] for name in h["runs"]}
    assert sorted(runs) == ["m8_s0", "m8_s1"]
    assert len({re.sub(r'"(seed|width|num_params)": \d+', "", c) for c in runs.values()}) == 1  # one config
    assert sorted(os.listdir(tmp_path)) == ["sweep.h5"]


def test_sigint_during_gradient_flow(tmp_path):
    """Ctrl-C in the gradient-flow stage, several times: exit status 130 with one line, never a crash, and no
    file left."""
    argv = ["solve", "--width", "512", "--depth", "2", "--n", "8", "--p", "2", "--t-max", "4000", "--num-times", "3",
            "--no-inf", "--out", tmp_path / "out.h5"]
    for attempt in range(3):
        proc = _start(argv)
        for line in proc.stderr:
            if "true gradient flow" in line:
                break
        time.sleep(0.3 + 0.4 * attempt)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        err = proc.stderr.read()
        assert code == 130, (attempt, code, err)
        assert "nth: interrupted" in err and "Traceback" not in err and "Segmentation" not in err, err
        assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


# --- damaged sweep files -------------------------------------------------------------------------------------

def _dataset_offset(path, name):
    with h5py.File(path) as h:
        ds = h[name]
        return ds.id.get_offset(), ds.id.get_storage_size()


def test_damaged_sweep_run_is_detected_and_recomputed(tmp_path, capsys):
    out = tmp_path / "sweep.h5"
    argv = [*SWEEP[:2], "8", *SWEEP[3:], "--out", out]  # one width, two seeds
    assert run(argv)[0] == 0
    with h5py.File(out) as h:
        good = h["runs/m8_s1/true/f"][()]
    offset, size = _dataset_offset(out, "runs/m8_s1/true/f")
    with open(out, "r+b") as fh:  # overwrite data bytes in place, as a disk fault or a careless tool would
        fh.seek(offset + size // 2)
        fh.write(b"\x7f" * 8)
    capsys.readouterr()
    code, _ = run(["plot", "error-vs-width", out, "--out", tmp_path / "f.png"])
    err = capsys.readouterr().err
    assert code == 2 and re.search(r"is damaged: 1 run\(s\) fail their checksum \(m8_s1\); run the same nth sweep", err), err
    assert not (tmp_path / "f.png").exists()
    assert run(argv)[0] == 0  # resume: recomputes the damaged run only
    assert "m8_s1" in capsys.readouterr().err.split("damaged run(s)")[-1]
    with h5py.File(out) as h:
        np.testing.assert_array_equal(h["runs/m8_s1/true/f"][()], good)
        assert all(nth.io._hdf5.verify(h["runs"][k]) for k in h["runs"])
        # the root table (for xarray) was rebuilt from the recomputed run
        assert h["max_f_error_p2"][0, 1] == h["runs/m8_s1/nth/p2"].attrs["max_f_error"]


def test_full_disk_in_the_middle_of_a_sweep(tmp_path, capsys, monkeypatch):
    """The disk fills while the second run is committed: the file keeps the first run, intact; no temporary
    file is left; the same command later completes the sweep."""
    real, calls = nth.io._files._write_all, []

    def write_all(fd, data):
        calls.append(len(data))
        if len(calls) == 2:  # 1: the new file with run m8_s0, 2: run m8_s1
            _enospc_after(100)(fd, data)
        real(fd, data)

    monkeypatch.setattr(nth.io._files, "_write_all", write_all)
    out = tmp_path / "sweep.h5"
    argv = [*SWEEP[:2], "8", *SWEEP[3:], "--out", out]
    code, _ = run(argv)
    assert code == 2 and "no space left on the device" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["sweep.h5"]
    with h5py.File(out) as h:
        assert list(h["runs"]) == ["m8_s0"] and nth.io._hdf5.verify(h["runs/m8_s0"])
    monkeypatch.setattr(nth.io._files, "_write_all", real)
    assert run(argv)[0] == 0
    assert sorted(nth.io.finished_runs(str(out))) == ["m8_s0", "m8_s1"]
