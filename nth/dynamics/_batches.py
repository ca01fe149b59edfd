"""Minibatch schedules of stochastic gradient descent (docs/math.md section 10).

A schedule is the batch of every step 0..S-1 as an (S, B) integer array: epochs of a seeded permutation of the
n training inputs, each cut into floor(n / B) batches of B consecutive entries. The n mod B inputs left at the
end of an epoch's permutation sit that epoch out (every step then has |B_t| = B, so the step h = lr / B in
function space and the stable step 2B / lambda_max hold at every step); the next epoch draws a fresh
permutation. Each batch is sorted, so B = n gives the batch 0..n-1 at every step: full-batch gradient descent.
The same array drives the real network's SGD and every prediction of it, and the files record it.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Int

from ..checks import check_seed
from ..errors import ConfigError


def batch_schedule(n: int, batch_size: int, steps: int, seed: int = 0) -> Int[np.ndarray, "S B"]:
    """The batches of steps 0..``steps``-1 (module docstring): epochs of permutations of range(n) from
    ``numpy.random.default_rng(seed)``, each cut into floor(n / B) sorted batches of ``batch_size`` B."""
    for name, v in (("n", n), ("batch_size", batch_size), ("steps", steps)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (0 if name == "steps" else 1):
            raise ConfigError(f"batch_schedule: {name} = {v!r} must be a {'non-negative' if name == 'steps' else 'positive'}"
                              " integer")
    if batch_size > n:
        raise ConfigError(f"batch_size = {batch_size} is larger than the n = {n} training inputs; use 1..{n} "
                          f"(B = {n} is full-batch gradient descent)")
    check_seed("batch_seed", seed)
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    out = np.empty((epochs * per_epoch, batch_size), dtype=np.int64)
    for e in range(epochs):
        perm = rng.permutation(n)[: per_epoch * batch_size].reshape(per_epoch, batch_size)
        out[e * per_epoch:(e + 1) * per_epoch] = np.sort(perm, axis=1)
    return out[:steps]


def check_batches(batches, n: int, steps: int, where: str) -> Int[np.ndarray, "S B"]:
    """A schedule for ``steps`` steps over n inputs: an (S, B) integer array, S >= steps, entries in 0..n-1,
    distinct within each batch."""
    b = np.asarray(batches)
    if b.ndim != 2 or b.shape[1] < 1 or not np.issubdtype(b.dtype, np.integer):
        raise ConfigError(f"{where}: 'batches' must be an (S, B) integer array (the batch of every step, "
                          f"nth.batch_schedule); got {'dtype ' + str(b.dtype) if b.ndim == 2 else 'shape ' + str(b.shape)}")
    if b.shape[0] < steps:
        raise ConfigError(f"{where}: 'batches' holds {b.shape[0]} steps; the last saved step is {steps}")
    if b.size and (b.min() < 0 or b.max() >= n):
        raise ConfigError(f"{where}: 'batches' entries must be input indices 0..{n - 1}; got {b.min()}..{b.max()}")
    if (np.diff(np.sort(b[:steps], axis=1), axis=1) == 0).any():
        raise ConfigError(f"{where}: a batch of 'batches' holds an input twice; each batch is a set of inputs")
    return b[:steps]
