"""float64 on request (docs/math.md section 6).

JAX computes in float32 unless its 64-bit mode (``jax_enable_x64``) is on, and that switch holds for the
whole process. Importing nth leaves it alone. It is turned on, for the rest of the process, by

- :func:`enable_float64`, which a program calls once before building arrays of its own in float64;
- the ``nth`` command, at its start;
- the built-in models' constructors, whatever their ``dtype`` (the weights are drawn in float64 and cast, so a
  float32 network is the float64 one rounded, in every process state);
- every nth call asked for float64: a weights file or a user model cast to float64, a run whose configuration
  says ``dtype="float64"`` (the default), the limiting kernels (computed in float64), and the
  correlation-function engine.

Every correctness comparison of this field needs float64; float32 stays available per run (``dtype=``).
"""

from __future__ import annotations

import jax
import numpy as np


def enable_float64() -> None:
    """Turn on JAX's 64-bit mode for this process (``jax_enable_x64``; module docstring). Idempotent."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def float64_if_asked(dtype) -> None:
    """:func:`enable_float64` when ``dtype`` is float64 (a call that computes in it); nothing otherwise."""
    if dtype is not None and np.dtype(dtype) == np.float64:
        enable_float64()
