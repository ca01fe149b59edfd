"""Several processes, one computation (nth._cluster, nth launch; README, Beyond one machine).

Two CPU processes on this machine, joined through a loopback coordinator: a sweep, a correlation measurement and
K^(2)..K^(4) must equal a single process's bit for bit; a process killed in the middle of a sweep must stop the
other within the heartbeat, leave the committed runs intact, and a rerun must finish the sweep with the same
numbers. Each child process is bounded by a timeout.
"""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from nth._cluster import (ENV_COORDINATOR, ENV_HEARTBEAT, ENV_NUM_PROCESSES, ENV_PROCESS_ID, from_writer,
                          gather_objects, shared_map)
from nth._launch import free_port
from nth.cli import main
from nth.errors import ConfigError

SWEEP = ["sweep", "--widths", "8,16", "--seeds", "3", "--p", "3", "--no-dg", "--no-inf", "--depth", "1", "--n", "3",
         "--d", "2", "--n-test", "1", "--t-max", "2", "--num-times", "3", "--quiet"]
#: attributes that differ between any two runs of the same computation: when and how fast it ran, and the
#: checksums that cover them
VOLATILE = ("created", "sha256")
#: HDF5 dimension-scale bookkeeping (object references; the dimensions themselves are tested in test_xarray)
REFERENCES = ("DIMENSION_LIST", "REFERENCE_LIST")


def _nth(*args, env=None, timeout=240):
    return subprocess.run([sys.executable, "-m", "nth", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _contents(path):
    """Every run's datasets and attributes, without the volatile ones (when and how fast it ran)."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]
        for k, v in obj.attrs.items():
            if k not in VOLATILE + REFERENCES and not k.startswith("wall_time_"):
                out[f"{name}@{k}"] = v

    with h5py.File(path) as h:
        h["runs"].visititems(visit)
    return out


def _assert_same_runs(a, b):
    A, B = _contents(a), _contents(b)
    assert set(A) == set(B)
    for k in A:
        assert np.array_equal(np.asarray(A[k]), np.asarray(B[k])), k


def _runs(path):
    """Runs committed to a sweep file (0 before it exists; it is replaced whole at each commit)."""
    try:
        with h5py.File(path, "r") as h:
            return len(h["runs"])
    except (OSError, KeyError):
        return 0


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The sweep computed by one process: the reference."""
    out = tmp_path_factory.mktemp("single") / "one.h5"
    assert main([*SWEEP, "--out", str(out)]) == 0
    return out


def test_a_killed_process_stops_the_other_and_the_rerun_resumes(single, tmp_path, capsys):
    """Two processes share a sweep out; process 1 is killed once process 0 has committed the first round (a run of
    each process): process 0 stops within the heartbeat (the file keeps what it committed and nothing else),
    and the same sweep run again by one process finishes it, every run equal to the single-process reference's
    bit for bit, those the two processes computed included."""
    out = tmp_path / "killed.h5"
    env = dict(os.environ, **{ENV_COORDINATOR: f"127.0.0.1:{free_port()}", ENV_NUM_PROCESSES: "2",
                              ENV_HEARTBEAT: "5"})
    cmd = [sys.executable, "-m", "nth", *SWEEP, "--out", str(out)]
    procs = [subprocess.Popen(cmd, env=env | {ENV_PROCESS_ID: str(i)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        deadline = time.monotonic() + 180
        while _runs(out) < 2 and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.05)
        assert _runs(out) >= 2, procs[0].communicate(timeout=60)[1][-2000:]
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        code = procs[0].wait(timeout=120)
        stopped_after = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    # stopped 3.0-4.5 s after the kill with a 5 s heartbeat (three runs; the runtime aborts it, SIGABRT): 30 s
    # leaves room for a loaded CI machine, and a process left waiting in the gather would hit the 120 s wait
    assert code != 0 and stopped_after < 30, stopped_after
    with h5py.File(out) as h:
        committed = len(h["runs"])
    assert 2 <= committed < 6
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")], os.listdir(tmp_path)  # nothing half-written
    assert main([*SWEEP, "--out", str(out)]) == 0  # one process resumes what two began
    assert f"{committed} runs were already there, {6 - committed} computed now" in capsys.readouterr().out
    _assert_same_runs(single, out)


CORR = ["corr", "d{mu}f(x1) d{nu}f(x2) d{mu,nu}f(x3) f(x4)", "--widths", "8,16", "--depth", "2", "--batch", "5",
        "--json"]


def test_two_processes_draw_the_single_process_correlation_file_bit_for_bit(tmp_path, capsys):
    """The batches of draws are shared out and gathered: the stored draws and the printed summary equal one
    process's; a second run with more draws resumes the file (process 0 opens it and sends what it holds)."""
    from nth.io import load_corr

    one = tmp_path / "one.h5"
    assert main([*CORR, "--draws", "24", "--out", str(one)]) == 0
    summary = json.loads(capsys.readouterr().out)
    two = tmp_path / "two.h5"
    first = _nth("launch", "--processes", "2", *CORR, "--draws", "12", "--out", str(two))
    assert first.returncode == 0, first.stderr[-2000:]
    more = _nth("launch", "--processes", "2", *CORR, "--draws", "24", "--out", str(two))
    assert more.returncode == 0, more.stderr[-2000:]
    assert json.loads(more.stdout) == summary  # process 0 prints, the others print nothing
    a, b = load_corr(str(one))["values"], load_corr(str(two))["values"]
    assert sorted(a) == sorted(b) == [8, 16]
    for w in a:
        assert a[w].shape == (24, 1) and np.array_equal(a[w], b[w]), w


def test_nth_kernel_under_launch_writes_the_single_process_file(tmp_path, capsys):
    """`nth kernel --p 4` run as two processes: process 0 writes K^(2)..K^(4) equal to one process's."""
    args = ["kernel", "--p", "4", "--width", "8", "--n", "4", "--d", "2"]
    assert main([*args, "--out", str(tmp_path / "one.h5")]) == 0
    printed = capsys.readouterr().out
    two = _nth("launch", "--processes", "2", *args, "--out", str(tmp_path / "two.h5"))
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote ") == 1 and "K^(4)(0)" in printed  # process 0 reports
    with h5py.File(tmp_path / "one.h5") as a, h5py.File(tmp_path / "two.h5") as b:
        assert sorted(a["kernels"]) == sorted(b["kernels"]) == ["K2", "K3", "K4"]
        for name in a["kernels"]:
            assert np.array_equal(a["kernels"][name][()], b["kernels"][name][()]), name


def test_launch_returns_the_first_failing_status_in_one_line(tmp_path):
    bad = _nth("launch", "--processes", "2", "sweep", "--widths", "8", "--seeds", "0", "--out", str(tmp_path / "x.h5"))
    assert bad.returncode == 2
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("nth launch: process") and "exited with status 2" in last
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("args, says", [
    (["launch", "--processes", "0", "sweep"], "--processes 0 must be an integer >= 1"),
    (["launch", "--processes", "2"], "nth launch needs a command"),
    (["launch", "--processes", "2", "solve", "--width", "8"], "nth launch runs sweep, corr, kernel, not 'solve'"),
    (["launch", "--processes", "2", "--heartbeat", "0", "sweep"], "--heartbeat 0 must be"),
    (["kernel", "--p", "1"], "--p 1: the highest kernel K^(p) must be an integer >= 2"),
    (["kernel", "--p", "3", "--infinite"], "--p 3: K^(3) and higher vanish at infinite width"),
])
def test_launch_refuses_bad_arguments(args, says, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and says in err, err


def test_a_command_run_in_one_process_refuses_the_launch_variables(monkeypatch, capsys):
    monkeypatch.setenv(ENV_COORDINATOR, "127.0.0.1:1")
    assert main(["solve", "--width", "8", "--n", "3", "--d", "2", "--t-max", "1", "--num-times", "2"]) == 2
    assert "nth solve runs in one process" in capsys.readouterr().err


def test_one_process_is_the_identity():
    """Without a cluster the helpers compute in place: every item once, in order, the original exception."""
    assert gather_objects({"a": 1}) == [{"a": 1}]
    assert list(shared_map(lambda x: x * x, [1, 2, 3])) == [(1, 1), (2, 4), (3, 9)]
    assert from_writer(lambda: 7) == 7
    with pytest.raises(ConfigError, match="bad"):
        from_writer(lambda: (_ for _ in ()).throw(ConfigError("bad")))
    with pytest.raises(ConfigError, match="bad"):
        list(shared_map(lambda x: (_ for _ in ()).throw(ConfigError("bad")), [1]))
    import nth

    net = nth.init_mlp(0, 3, 8, 1, "tanh")
    X = nth.default_problem(n=3, d=3, seed=1).X
    with pytest.raises(ConfigError, match="matrix-free top level is applied on demand in one process"):
        nth.kernels(net, X, 3, matrix_free=True, share=True)
