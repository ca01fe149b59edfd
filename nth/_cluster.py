"""Several processes, one computation: JAX's multi-controller runtime (``jax.distributed``; README, Beyond one
machine).

One process runs per host (or per slot of ``nth launch`` on one machine). Every process runs the same command;
each computes its share of the independent pieces (item i of a list goes to process i mod P), the pieces are
gathered into every process round by round, and process 0 alone writes the file, under its usual writer lock
and checksums. The numbers are those a single process computes: every piece is the same computation on the
same inputs, wherever it runs.

How a process learns its cluster, in order:

- the variables that ``nth launch`` sets for each local process it starts: ``NTH_COORDINATOR`` (host:port of
  process 0), ``NTH_NUM_PROCESSES`` and ``NTH_PROCESS_ID``;
- with ``nth ... --distributed`` (``initialize(auto=True)``), ``jax.distributed.initialize()`` with no
  arguments, which reads SLURM's, Open MPI's and the cloud TPU launchers' variables itself;
- neither: one process, and every function here is the identity.

A failure inside a piece (a refused configuration, a solver error) is sent with that round's results, so every
process stops at the end of the round with one line that names the process. A process that dies (killed, out
of memory) stops the others through the runtime's heartbeat (``NTH_HEARTBEAT_SECONDS``, default 100 s); what
process 0 committed before stays in the file, and the same command run again resumes from it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import jax
import numpy as np

from .errors import ClusterError, ConfigError

T = TypeVar("T")
R = TypeVar("R")

ENV_COORDINATOR = "NTH_COORDINATOR"
ENV_NUM_PROCESSES = "NTH_NUM_PROCESSES"
ENV_PROCESS_ID = "NTH_PROCESS_ID"
ENV_HEARTBEAT = "NTH_HEARTBEAT_SECONDS"
#: Seconds without a heartbeat after which the runtime declares a process dead and stops the others.
DEFAULT_HEARTBEAT = 100

def _env_int(name: str, low: int) -> int:
    text = os.environ[name]
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise ConfigError(f"{name} = {text!r} must be an integer >= {low}")
    return value


def launched() -> bool:
    """Whether this process was started by ``nth launch`` (its variables are set)."""
    return ENV_COORDINATOR in os.environ


def initialize(auto: bool = False) -> int:
    """Join the cluster (module docstring): from ``nth launch``'s variables, or with ``auto`` from the cluster's
    launcher (``jax.distributed.initialize()``); neither: nothing. Idempotent. Returns the number of processes.

    On the CPU the processes' collectives go through gloo (``jax_cpu_collectives_implementation``), which must be
    chosen before the runtime starts."""
    if jax.distributed.is_initialized():
        return jax.process_count()
    heartbeat = _env_int(ENV_HEARTBEAT, 1) if ENV_HEARTBEAT in os.environ else DEFAULT_HEARTBEAT
    if launched():
        kwargs: dict[str, Any] = dict(coordinator_address=os.environ[ENV_COORDINATOR],
                                      num_processes=_env_int(ENV_NUM_PROCESSES, 1),
                                      process_id=_env_int(ENV_PROCESS_ID, 0))
        if kwargs["process_id"] >= kwargs["num_processes"]:
            raise ConfigError(f"{ENV_PROCESS_ID} = {kwargs['process_id']} must be below {ENV_NUM_PROCESSES} = "
                              f"{kwargs['num_processes']}")
    elif auto:
        kwargs = {}
    else:
        return 1
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs, heartbeat_timeout_seconds=heartbeat)
    except (RuntimeError, ValueError) as e:
        where = kwargs.get("coordinator_address", "the cluster's launcher (SLURM, Open MPI, ...)")
        raise ClusterError(f"could not join the processes through {where}: {str(e).splitlines()[0]}; start them "
                           "with `nth launch --processes N ...` on one machine, or under srun/mpirun with "
                           "--distributed") from None
    with _stdout_to_stderr():  # gloo announces its connections on stdout, which a --json reader parses
        gather_objects(None)
    return jax.process_count()


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 pointed at descriptor 2 for the duration (what C++ libraries print goes to stderr)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def process_index() -> int:
    """This process's number, 0 .. process_count() - 1 (0 without a cluster)."""
    return jax.process_index()


def process_count() -> int:
    """The number of processes (1 without a cluster)."""
    return jax.process_count()


def is_writer() -> bool:
    """Whether this process writes the files: process 0."""
    return process_index() == 0


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in process order, on every process (pickled, padded to the longest and gathered
    with ``multihost_utils.process_allgather``). One process: ``[obj]``."""
    if process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    blob = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([blob.size], dtype=np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), dtype=np.uint8)
    padded[: blob.size] = blob
    every = np.asarray(multihost_utils.process_allgather(padded))
    return [pickle.loads(every[i, : int(sizes[i])].tobytes()) for i in range(len(sizes))]


class _Outcome:
    """What one process made of its piece: the value, or the failure's one-line message (the exception itself
    stays in the process that raised it, which re-raises it)."""

    def __init__(self, value: Any = None, error: str | None = None):
        self.value, self.error = value, error


def _attempt(fn: Callable[[], Any]) -> tuple[_Outcome, BaseException | None]:
    try:
        return _Outcome(value=fn()), None
    except Exception as e:  # noqa: BLE001 - sent to every process, re-raised here
        return _Outcome(error=f"{type(e).__name__}: {e}".splitlines()[0]), e


def _settle(outcomes: list[_Outcome], mine: BaseException | None) -> list[Any]:
    """The values of a round, or the round's first failure raised on every process (the original exception in
    the process that raised it)."""
    if mine is not None:
        raise mine
    for i, o in enumerate(outcomes):
        if o.error is not None:
            raise ClusterError(f"process {i} of {len(outcomes)} failed: {o.error}")
    return [o.value for o in outcomes]


def from_writer(fn: Callable[[], T]) -> T:
    """``fn()`` computed by process 0 alone and sent to every process; its failure is raised on every process."""
    outcome, mine = _attempt(fn) if is_writer() else (_Outcome(), None)
    return _settle(gather_objects(outcome), mine)[0]


def shared_map(fn: Callable[[T], R], items: Sequence[T], *, share: bool = True) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for every item in order, on every process: item i is computed by process i mod P, in
    rounds of P items, and each round's results are gathered into every process before they are yielded. A
    failure in any piece is raised on every process at the end of its round (module docstring). Without
    ``share`` (or with one process) this process computes every item itself, lazily."""
    if not share or process_count() == 1:
        yield from ((item, fn(item)) for item in items)
        return
    P, me = process_count(), process_index()
    for start in range(0, len(items), P):
        chunk = items[start:start + P]
        outcome, mine = _attempt(lambda chunk=chunk: fn(chunk[me])) if me < len(chunk) else (_Outcome(), None)
        values = _settle(gather_objects(outcome), mine)
        yield from zip(chunk, values[: len(chunk)])
