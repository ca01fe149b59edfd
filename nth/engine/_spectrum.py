"""The loss Hessian and the NTK of a configured run (docs/math.md section 11; :func:`nth.spectrum`): at its initial
weights (``nth spectrum``, :func:`nth.engine.spectrum_at_init`) and, with ``spectra``, at every saved time of
its training (a stage of :func:`nth.engine.solve`). The Lanczos start and the probes are seeded by the run's
seed, the same at every saved time (so that differences along training are not probe noise)."""

from __future__ import annotations

from collections.abc import Callable

import jax
from jaxtyping import Array, Float

from ..kernel import Spectrum, spectrum, stack_spectra
from ..losses import AbstractLoss
from ..models import AbstractModel, combine, partition
from ._config import SolveConfig


def spectrum_of(cfg: SolveConfig, model: AbstractModel, X: Float[Array, "n *in"], y: Array, loss: AbstractLoss, *,
                memory_budget: int | None = None, progress: bool = False) -> Spectrum:
    """:func:`nth.spectrum` of ``model`` on (X, y) under ``loss`` with the spectrum options of ``cfg`` (``top``,
    ``probes``, ``spectrum_tol``; seeded by ``cfg.seed``)."""
    return spectrum(model, X, y, loss, top=cfg.top, probes=cfg.probes, seed=cfg.seed, tol=cfg.spectrum_tol,
                    memory_budget=cfg.memory_budget if memory_budget is None else memory_budget, progress=progress)


def spectra_along(cfg: SolveConfig, path: AbstractModel, X: Float[Array, "n *in"], y: Array, loss: AbstractLoss, *,
                  memory_budget: int | None = None, progress: bool = False,
                  say: Callable[[str], None] | None = None) -> Spectrum:
    """:func:`spectrum_of` at every saved time of a trajectory: ``path`` is the model whose trained parameter leaves
    carry a leading time axis (``save_params`` of :func:`nth.gradient_flow` or :func:`nth.gradient_descent`; other
    arrays of the model have none). ``memory_budget`` bounds the Lanczos basis. Returns the spectra stacked along
    that axis (:func:`nth.kernel.stack_spectra`)."""
    params, static = partition(path)  # only the trained parameters carry the time axis
    T = jax.tree_util.tree_leaves(params)[0].shape[0]
    out = []
    for i in range(T):
        at = combine(jax.tree_util.tree_map(lambda x: x[i], params), static)
        out.append(spectrum_of(cfg, at, X, y, loss, memory_budget=memory_budget, progress=progress))
        if say is not None:
            say(f"    spectrum {i + 1}/{T}: top eigenvalue of H {float(out[-1].hessian_top[0]):.6g}, of G "
                f"{float(out[-1].gn_eigenvalues[0]):.6g}; Lanczos {out[-1].lanczos_steps} steps")
    return stack_spectra(out)
