"""``nth launch --processes N COMMAND ...``: N local processes of one nth command, joined by JAX's
multi-controller runtime through a coordinator on the loopback interface (:mod:`nth._cluster`).

This is the one-machine way to run what a cluster runs with one process per host (README, Beyond one machine):
to use several accelerators of one host each from its own process, or to check a multi-process run before a
cluster. It starts the processes, waits for them, and returns 0 when every one exits with 0; otherwise the first
failing exit status, after stopping the others (SIGTERM, then SIGKILL), with one line that says which process
failed and how to resume.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from ._cluster import ENV_COORDINATOR, ENV_HEARTBEAT, ENV_NUM_PROCESSES, ENV_PROCESS_ID
from .errors import ConfigError

#: The commands that run under several processes (their pieces are shared out; nth._cluster).
DISTRIBUTED_COMMANDS = ("sweep", "corr", "kernel")


def free_port() -> int:
    """A TCP port on the loopback interface that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(code: int) -> int:
    """A child's exit status as a shell reports it (128 + signal for a process killed by a signal)."""
    return 128 - code if code < 0 else code


def launch(command: Sequence[str], processes: int, *, port: int | None = None, heartbeat: int | None = None,
           grace: float = 10.0, log=None) -> int:
    """Run ``nth COMMAND ...`` (``command``) as ``processes`` local processes with a loopback coordinator (module
    docstring); returns 0 or the first failing exit status. ``heartbeat``: seconds after which the runtime
    declares a silent process dead (``NTH_HEARTBEAT_SECONDS``); ``grace``: seconds the others get to stop by
    themselves after a failure before they are terminated."""
    say = log or (lambda s: print(s, file=sys.stderr))
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ConfigError(f"--processes {processes!r} must be an integer >= 1")
    if not command:
        raise ConfigError(f"nth launch needs a command to run, one of {', '.join(DISTRIBUTED_COMMANDS)} "
                          "(e.g. nth launch --processes 2 sweep --widths 64,128)")
    if command[0] not in DISTRIBUTED_COMMANDS:
        raise ConfigError(f"nth launch runs {', '.join(DISTRIBUTED_COMMANDS)}, not {command[0]!r}: the other "
                          "commands compute in one process")
    if heartbeat is not None and (not isinstance(heartbeat, int) or heartbeat < 1):
        raise ConfigError(f"--heartbeat {heartbeat!r} must be a whole number of seconds >= 1")
    address = f"127.0.0.1:{free_port() if port is None else port}"
    env = dict(os.environ, **{ENV_COORDINATOR: address, ENV_NUM_PROCESSES: str(processes)})
    if heartbeat is not None:
        env[ENV_HEARTBEAT] = str(heartbeat)
    children = [subprocess.Popen([sys.executable, "-m", "nth", *command], env=env | {ENV_PROCESS_ID: str(i)})
                for i in range(processes)]
    failed: tuple[int, int] | None = None
    try:
        while True:
            codes = [c.poll() for c in children]
            if failed is None:
                bad = [(i, _status(code)) for i, code in enumerate(codes) if code not in (None, 0)]
                if bad:
                    failed = bad[0]
                    deadline = time.monotonic() + grace
            if all(code is not None for code in codes):
                break
            if failed is not None and time.monotonic() > deadline:
                _stop(children, grace)
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(children, grace)
        say("nth launch: interrupted; the processes were stopped (a sweep keeps its finished runs)")
        return 130
    if failed is not None:
        i, code = failed
        say(f"nth launch: process {i} of {processes} exited with status {code}; the others were stopped. What "
            "process 0 committed stays in the file: run the same command again to resume")
        return code
    return 0


def _stop(children: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM to every child still running, SIGKILL to those still running ``grace`` seconds later."""
    for c in children:
        if c.poll() is None:
            c.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace
    for c in children:
        try:
            c.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
