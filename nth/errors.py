"""Exceptions raised by nth.

Every error a user can cause (bad configuration, bad input files, a memory budget that is too small, a
solver that fails) is an :class:`NTHError` with a message that names the bad value and what would be
accepted. The CLI prints these without a traceback.
"""

from __future__ import annotations


class NTHError(Exception):
    """Base class of every error nth raises on purpose."""


class ConfigError(NTHError, ValueError):
    """An option or argument has a value nth cannot accept."""


class DataError(NTHError, ValueError):
    """Input data or weights are malformed (shape, non-finite values, empty)."""


class MemoryBudgetError(NTHError, MemoryError):
    """A predicted allocation exceeds the configured memory budget."""


class SolverError(NTHError, RuntimeError):
    """A Diffrax solve did not succeed (max_steps reached, non-finite state, ...)."""


class OutputExistsError(NTHError, FileExistsError):
    """The output file already exists and overwriting was not requested."""


class OutputWriteError(NTHError, OSError):
    """An output file could not be written (full disk, quota, I/O error); nothing partial was left."""


class WriterBusyError(NTHError, BlockingIOError):
    """Another process is writing the same output file (a file has one writer at a time)."""


class DamagedFileError(NTHError, OSError):
    """A results file fails its checksums or cannot be read as what it claims to be."""


class ClusterError(NTHError, RuntimeError):
    """The processes of a multi-process run could not start together, or one of them failed (nth._cluster)."""
