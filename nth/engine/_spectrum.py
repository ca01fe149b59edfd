"""``nth spectrum``: the loss Hessian and the NTK of one configured network at its initial weights
(docs/math.md section 11; :func:`nth.spectrum`). The problem, model and loss are those of a run
(:class:`~nth.engine.SolveConfig`), built by the same functions as :func:`nth.engine.solve`."""

from __future__ import annotations

import jax.numpy as jnp

from ..kernel import Spectrum, spectrum
from ..models import output_shape
from ._config import DTYPES, SolveConfig
from ._run import build_model, load_data, run_targets


def spectrum_at_init(cfg: SolveConfig, *, top: int = 4, probes: int = 100, tol: float = 1e-10,
                     progress: bool = False) -> Spectrum:
    """:func:`nth.spectrum` of the network of ``cfg`` (seed ``cfg.seed``) on its training data and targets under
    its loss: the top ``top`` Hessian eigenvalues (Lanczos to relative residual ``tol``), G's eigenvalues and
    moments, and Hutchinson estimates from ``probes`` probes seeded by ``cfg.seed``."""
    data = load_data(cfg)
    dtype = DTYPES[cfg.dtype]
    X = jnp.asarray(data.X, dtype=dtype)
    model = build_model(cfg, data, cfg.seed)
    y = run_targets(cfg, data, output_shape(model, data.in_shape, dtype))
    return spectrum(model, X, y, cfg.loss_fn, top=top, probes=probes, seed=cfg.seed, tol=tol,
                    memory_budget=cfg.memory_budget, progress=progress)
