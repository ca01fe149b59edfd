"""``nth kernel`` as a library call: the empirical K^(2)(0) of a seeded network (any built-in architecture) and/or
the limiting NTK Kbar^(2) and NNGP kernel of the MLP (docs/math.md section 5), their gap, and an optional HDF5
file in the schema of :mod:`nth.io._schema`."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._composed import Composed, part
from ..data import Dataset, load_problem, problem_shape
from ..errors import ConfigError, MemoryBudgetError
from ..kernel import LimitingKernels, check_infinite_options, kernels, limiting_kernels
from ..kernel._plan import default_memory_budget, format_bytes, kernel_bytes, plan_kernels
from ..models import DEFAULT_ORDER, ModelSpec, activation
from ..engine._config import DEFAULT_WIDTH, ProblemSpec
from ._files import file_writer
from ._hdf5 import write_h5
from ._schema import dataset_axes, kernel_file


@dataclasses.dataclass(frozen=True, init=False)
class KernelRequest(Composed):
    """What ``nth kernel`` computes for a ``network`` (:class:`~nth.models.ModelSpec`) on a ``problem``
    (:class:`~nth.engine.ProblemSpec`; its fields are also given and read by their own names, as in
    :class:`~nth.engine.SolveConfig`): Kbar^(2) and NNGP with ``infinite`` (Gaussian expectations by ``method``,
    quadrature of ``quadrature_order``), K^(2)(0) .. K^(p)(0) with a ``width`` (default 1024 when not ``infinite``;
    HY Eqs. 7, 10); with
    ``outputs`` k > 1 both over the n k samples (input, output): the network with k outputs, and the limiting
    kernels times the identity on outputs (docs/math.md section 10)."""

    network: ModelSpec = part(ModelSpec)
    problem: ProblemSpec = part(ProblemSpec)
    p: int = 2
    infinite: bool = False
    method: str = "auto"
    quadrature_order: int = DEFAULT_ORDER

    @property
    def finite_width(self) -> int | None:
        return self.width if self.width is not None or self.infinite else DEFAULT_WIDTH

    @property
    def k(self) -> int:
        """Outputs per input."""
        return self.outputs or 1

    @property
    def resolved_depth(self) -> int:
        return self.network.resolved_depth

    def validate(self) -> None:
        if not isinstance(self.p, int) or isinstance(self.p, bool) or self.p < 2:
            raise ConfigError(f"--p {self.p!r}: the highest kernel K^(p) must be an integer >= 2")
        if self.p > 2 and self.finite_width is None:
            raise ConfigError(f"--p {self.p}: K^(3) and higher vanish at infinite width; give --width for the "
                              "finite-width kernels")
        self.network.validate(self.p)
        self.problem.validate()
        if self.weights is not None or self.model is not None:
            raise ConfigError("nth kernel computes the kernels of a built-in architecture (no --model, --weights)")
        if self.infinite:
            if self.arch != "mlp":
                raise ConfigError(f"--infinite: the limiting kernels' layer recursion exists for the mlp only, not "
                                  f"the {self.arch}")
            check_infinite_options(self.activation, self.method, self.quadrature_order, self.beta)


@dataclasses.dataclass
class KernelReport:
    """What ``nth kernel`` computed: the data, the limiting kernels, and the finite-width K^(r)(0) ({r: array},
    r = 2..p; empty without a width)."""

    data: Dataset
    limiting: LimitingKernels | None
    finite: dict[int, np.ndarray]
    wall: dict[str, float]

    @property
    def K2(self) -> np.ndarray | None:
        return self.finite.get(2)


def compute_kernels(req: KernelRequest) -> KernelReport:
    """The kernels of ``req`` (every check runs first). Under several processes (:mod:`nth._cluster`) the finite
    kernels' direction tuples are shared out among them (:func:`nth.kernels` with ``share``)."""
    req.validate()
    sizes = req.problem.sizes(images=req.arch == "cnn")
    shape = problem_shape(req.data, **sizes, targets=False)
    if req.finite_width is not None:  # refused from sizes alone, before the data exist
        plan_kernels(eqx.filter_eval_shape(lambda: req.network.build(seed=req.seed, width=req.finite_width,
                                                                  in_shape=shape.in_shape, outputs=req.k)),
                     shape.n, req.p, in_shape=shape.in_shape, outputs=req.k)
    elif 4 * kernel_bytes(shape.n * req.k, 2) > default_memory_budget():  # Kbar, NNGP, the recursion's copies
        raise MemoryBudgetError(f"the limiting kernels at n = {shape.n} need about "
                                f"{format_bytes(4 * kernel_bytes(shape.n * req.k, 2))}, over the memory budget "
                                f"of {format_bytes(default_memory_budget())}; reduce n")
    data = load_problem(req.data, seed=req.data_seed, normalization=req.normalization, **sizes, targets=False)
    X = jnp.asarray(data.X)
    wall: dict[str, float] = {}
    lim, finite = None, {}
    if req.infinite:
        t = time.perf_counter()
        lim = jax.block_until_ready(limiting_kernels(
            X, depth=req.resolved_depth, activation=req.activation, sigma_w=req.sigma_w, sigma_a=req.sigma_a, beta=req.beta,
            param=req.param, method=req.method, order=req.quadrature_order))
        if req.k > 1:  # over samples s = a k + i: Kbar x I_k
            eye = jnp.eye(req.k, dtype=lim.ntk.dtype)
            lim = dataclasses.replace(lim, nngp=jnp.kron(lim.nngp, eye), ntk=jnp.kron(lim.ntk, eye))
        wall["limiting"] = time.perf_counter() - t
    if req.finite_width is not None:
        t = time.perf_counter()
        model = req.network.build(seed=req.seed, width=req.finite_width, in_shape=data.in_shape, outputs=req.k)
        finite = {r: np.asarray(K) for r, K in kernels(model, X, req.p, share=True).items()}
        wall["empirical"] = time.perf_counter() - t
    return KernelReport(data=data, limiting=lim, finite=finite, wall=wall)


def _describe(name: str, K: np.ndarray) -> str:
    ev = np.linalg.eigvalsh((K + K.T) / 2)
    return (f"{name:<44} shape {K.shape}, diagonal mean {np.mean(np.diag(K)):.6g}, eigenvalues "
            f"[{ev[0]:.4g}, {ev[-1]:.4g}]")


def kernel_report(req: KernelRequest, out: str | os.PathLike | None = None, *, force: bool = False) -> str:
    """Compute the kernels of ``req``, write them to ``out`` (atomically; config and versions as attributes) and
    return the text ``nth kernel`` prints. Under several processes process 0 alone writes ``out``."""
    if out is None:
        return _report(req, None, force)
    with file_writer(out, "nth kernel", force=force) as mine:
        return _report(req, mine, force)


def _report(req: KernelRequest, out: str | None, force: bool) -> str:
    rep = compute_kernels(req)
    lines = [f"{rep.data.source}: n = {rep.data.n}, inputs {rep.data.in_shape}"
             + (f", {req.k} outputs each ({rep.data.n * req.k} samples)" if req.k > 1 else "")
             + f"; {req.arch}, depth {req.resolved_depth}, "
             f"{req.activation}, sigma_w {req.sigma_w:g}, sigma_a {req.sigma_a:g}"
             + (f", {req.param} parametrization" if req.arch == "mlp" else "")]

    if rep.limiting is not None:
        nngp, kbar = np.asarray(rep.limiting.nngp), np.asarray(rep.limiting.ntk)
        closed = activation(req.activation, req.beta).has_closed_form
        how = req.method if req.method != "auto" else ("closed form" if closed else f"Gauss-Hermite order {req.quadrature_order}")
        lines += [_describe("NNGP (m = inf)", nngp), _describe(f"Kbar^(2) (m = inf, {how})", kbar)]

    if rep.K2 is not None:
        lines.append(_describe(f"K^(2)(0) (m = {req.finite_width}, seed {req.seed})", rep.K2))
    for r, K in sorted(rep.finite.items()):
        if r > 2:
            lines.append(f"{f'K^({r})(0)':<44} shape {K.shape}, mean |entry| {np.mean(np.abs(K)):.6g}, max |entry| "
                         f"{np.max(np.abs(K)):.6g}")

    if rep.limiting is not None and rep.K2 is not None:
        kbar = np.asarray(rep.limiting.ntk)
        gap = np.linalg.norm(rep.K2 - kbar) / np.linalg.norm(kbar)
        lines.append(f"|K^(2)(0) - Kbar^(2)|_F / |Kbar^(2)|_F = {gap:.4g} (O(1/sqrt(m)); "
                     f"{gap * math.sqrt(req.finite_width):.3g} / sqrt(m))")
    show = next(K for K in (None if rep.limiting is None else np.asarray(rep.limiting.ntk), rep.K2) if K is not None)
    k = min(4, show.shape[0])
    lines.append(f"top-left {k} x {k} block of " + ("Kbar^(2)" if rep.limiting is not None else "K^(2)(0)") + ":")
    lines += ["  " + " ".join(f"{v:10.6f}" for v in row) for row in show[:k, :k]]
    lines.append("wall time: " + ", ".join(f"{k_} {v:.2f} s" for k_, v in rep.wall.items()))
    if out is not None:
        lim = rep.limiting
        ds, attrs = kernel_file(rep.data, req.flat() | {"arch_options": req.network.describe()}, finite=rep.finite,
                                nngp=None if lim is None else lim.nngp, ntk=None if lim is None else lim.ntk)
        axes = functools.partial(dataset_axes, out_shape=() if req.k == 1 else (req.k,))
        lines.append(f"wrote {write_h5(out, ds, attrs, force=force, axes=axes)}")
    return "\n".join(lines)
