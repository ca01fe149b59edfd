"""The loss Hessian and the NTK at given weights, without P x P matrices (docs/math.md section 11; DG App. E.3).

With L(theta) = (1/n) sum_a l(f_a, y_a), J the (n k) x P Jacobian of the outputs and H0 the per-input loss
Hessians at the outputs (section 10),

    H = (1/n) (J^T H0 J + B),        B = sum_s chi_s d^2 f_s / d theta^2,

and the nonzero eigenvalues of the Gauss-Newton part (1/n) J^T H0 J are those of the (n k) x (n k) matrix
G = (1/n) H0^(1/2) K H0^(1/2) (:meth:`~nth.losses.AbstractLoss.gauss_newton`). With per-layer learning rates eta
(muP) the matrix the flow sees is eta^(1/2) H eta^(1/2), whose Gauss-Newton part has G's eigenvalues with the
eta-weighted K; every operator here is that one (eta = 1 in NTK parametrization, where it is H itself).

Every operator acts on flat parameter vectors:

- H v by forward-over-reverse (a JVP of the gradient);
- (1/n) J^T H0 J v by a JVP of the outputs, the loss Hessian's action, and a VJP;
- B v / n as their difference.

The top eigenvalues of H come from Lanczos iterations with full reorthogonalization (:func:`lanczos_top`), the
moments Tr(H^j), j = 1..4, and Tr(B^2) from Hutchinson's estimator with Rademacher probes (:func:`hutchinson`),
each with its standard error; G's eigenvalues and moments are exact.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from ..errors import ConfigError, MemoryBudgetError, SolverError
from ..losses import AbstractLoss, loss_from_spec
from ..models import AbstractModel, as_model, check_inputs, combine, output_shape, partition
from ._engine import ntk
from ._impl import _eta_leaves
from ._plan import default_memory_budget, format_bytes

#: Moments Tr(A^j) reported, j = 1..MOMENTS.
MOMENTS = 4


class HessianOperators(eqx.Module):
    """The loss Hessian of ``model`` on (X, Y) and its two parts as actions on flat parameter vectors
    (docs/math.md section 11, H = (1/n)(J^T H0 J + B); module docstring): ``hessian(v)`` = H v, ``gauss_newton(v)`` = (1/n) J^T H0 J v, ``b(v)`` = B v / n = H v - that, all
    eta-weighted (eta^(1/2) . eta^(1/2)). ``size`` is P, the number of parameters."""

    model: AbstractModel
    X: Array
    Y: Array
    loss: AbstractLoss
    root_eta: Array

    @property
    def size(self) -> int:
        return int(self.root_eta.shape[0])

    def _flat(self):
        params, static = partition(self.model)
        theta, unravel = ravel_pytree(params)
        return theta, lambda t: combine(unravel(t), static)

    def _outputs(self, t):
        _, build = self._flat()
        return build(t)(self.X)

    def _loss(self, t):
        return self.loss.value(self._outputs(t), self.Y)

    @eqx.filter_jit
    def hessian(self, v: Float[Array, " P"]) -> Float[Array, " P"]:
        """H v (eta-weighted): forward-over-reverse, a JVP of the gradient."""
        theta, _ = self._flat()
        hv = jax.jvp(jax.grad(self._loss), (theta,), (self.root_eta * v,))[1]
        return self.root_eta * hv

    @eqx.filter_jit
    def gauss_newton(self, v: Float[Array, " P"]) -> Float[Array, " P"]:
        """(1/n) J^T H0 J v (eta-weighted): J v by a JVP of the outputs, H0 by the loss, J^T by a VJP."""
        theta, _ = self._flat()
        F, Jv = jax.jvp(self._outputs, (theta,), (self.root_eta * v,))
        _, pull = jax.vjp(self._outputs, theta)
        return self.root_eta * pull(self.loss.hvp(F, self.Y, Jv) / F.shape[0])[0]

    @eqx.filter_jit
    def both(self, v: Float[Array, " P"]) -> tuple[Float[Array, " P"], Float[Array, " P"]]:
        """(H v, B v / n) at once."""
        hv = self.hessian(v)
        return hv, hv - self.gauss_newton(v)


def hessian_operators(model: AbstractModel, X: Float[Array, "n *in"], Y: Array,
                      loss: AbstractLoss | str = "mse") -> HessianOperators:
    """The operators of :class:`HessianOperators` (docs/math.md section 11) for ``model`` on inputs X and targets
    Y (as ``loss.targets`` takes them: values for mse, labels for cross-entropy; checked here)."""
    model = as_model(model)
    loss = loss_from_spec(loss)
    X = check_inputs(model, X, where="hessian_operators")
    Y = loss.targets(Y, X.shape[0], output_shape(model, X.shape[1:], X.dtype), where="hessian_operators",
                     dtype=X.dtype if not loss.takes_labels else None)
    params, _ = partition(model)
    leaves = jax.tree_util.tree_leaves(params)
    etas = _eta_leaves(model)
    root = jnp.concatenate([jnp.full((leaf.size,), math.sqrt(float(e)), leaf.dtype) for e, leaf in zip(etas, leaves)])
    return HessianOperators(model=model, X=X, Y=Y, loss=loss, root_eta=root)


class Lanczos(eqx.Module):
    """Result of :func:`lanczos_top`: the ``k`` largest eigenvalues (decreasing), their residual norms
    |A u - lambda u| (bounds from the Lanczos recurrence), the steps taken, whether every residual met the
    tolerance, and whether the memory budget capped the steps."""

    eigenvalues: Float[Array, " k"]
    residuals: Float[Array, " k"]
    steps: int
    converged: bool
    capped: bool = False


#: Rows of one block of the Lanczos basis: the basis is a list of such blocks, each allocated when the steps reach
#: it and filled in place, so that it holds only the vectors made so far (never a grown copy).
LANCZOS_BLOCK = 32


def lanczos_bytes(size: int, steps: int, itemsize: int = 8) -> int:
    """Bytes of a Lanczos basis of ``steps`` vectors of ``size`` entries (:data:`LANCZOS_BLOCK` rows per block; the
    last block holds only the steps left)."""
    return size * steps * itemsize


def lanczos_top(matvec: Callable[[Array], Array], size: int, k: int, *, seed: int = 0, tol: float = 1e-10,
                max_steps: int | None = None, dtype=jnp.float64, memory_budget: int | None = None,
                progress: bool = False) -> Lanczos:
    """The ``k`` largest (algebraic) eigenvalues of the symmetric operator ``matvec`` on vectors of ``size``
    entries, by Lanczos iterations with full reorthogonalization from a seeded Gaussian start (docs/math.md
    section 11).

    Step j: w = A q_j - beta_(j-1) q_(j-1), alpha_j = q_j^T w, w -= alpha_j q_j (the three-term recurrence), then
    one classical Gram-Schmidt pass against every basis vector, and a second one where that pass shrank w by more
    than 1/sqrt(2) (the Daniel-Gragg-Kaufman-Stewart criterion: orthogonality to working precision at the cost of
    about one pass). After each step the Ritz values of the tridiagonal matrix T_j are checked: the residual of
    Ritz pair i is beta_j |s_(j,i)| (s_i T_j's eigenvector), and the iteration stops when the top k residuals are
    at most ``tol`` times the largest |Ritz value| (the eigenvalues are then accurate to about residual^2 / gap),
    or at ``max_steps`` (default min(size, 30 k + 100)) with ``converged`` False. The basis is kept in blocks of
    :data:`LANCZOS_BLOCK` vectors, allocated as the steps reach them and filled in place; the steps are capped
    where it would pass ``memory_budget`` (:func:`lanczos_bytes`), and a budget that holds fewer than k + 1
    vectors is refused before anything is allocated.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= size:
        raise ConfigError(f"top = {k!r} eigenvalues: must be an integer from 1 to the number of parameters ({size})")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ConfigError(f"tol = {tol!r} must be a finite positive number (e.g. 1e-10)")
    steps = min(size, 30 * k + 100) if max_steps is None else int(max_steps)
    if steps < k:
        raise ConfigError(f"max_steps = {max_steps!r} must be at least top = {k}")
    budget = default_memory_budget() if memory_budget is None else memory_budget
    itemsize = jnp.dtype(dtype).itemsize
    fits = budget // lanczos_bytes(size, 1, itemsize)
    if fits < min(k + 1, steps):
        raise MemoryBudgetError(f"a Lanczos basis for the top {k} eigenvalues of {size} parameters needs at least "
                                f"{format_bytes(lanczos_bytes(size, k + 1, itemsize))}, over the budget "
                                f"{format_bytes(budget)}; ask for fewer eigenvalues (--top) or raise the budget")
    capped = fits < steps
    steps = min(steps, int(fits))
    blocks: list[Array] = []
    q = jax.random.normal(jax.random.PRNGKey(seed), (size,), dtype)
    q = q / jnp.linalg.norm(q)
    q_prev = jnp.zeros_like(q)
    alphas: list[float] = []
    betas: list[float] = []
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="Lanczos", unit="step", leave=False)
    for j in it:
        row = j % LANCZOS_BLOCK
        if row == 0:
            blocks.append(jnp.zeros((min(LANCZOS_BLOCK, steps - j), size), dtype))
        blocks[-1] = _put(blocks[-1], row, q)
        w, a = _three_term(matvec(q), q, q_prev, betas[-1] if betas else 0.0)
        a = float(a)
        w, b = _orthogonalize(blocks, row, w)
        alphas.append(a)
        if not np.isfinite(a) or not np.isfinite(b):
            raise SolverError(f"Lanczos step {j + 1} produced a non-finite value; check the weights and data")
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        vals, vecs = np.linalg.eigh(T)
        order = np.argsort(vals)[::-1][: min(k, j + 1)]
        theta, res = vals[order], b * np.abs(vecs[-1, order])
        scale = max(float(np.abs(vals).max()), np.finfo(np.float64).tiny)
        if j + 1 >= k and (np.all(res <= tol * scale) or b <= tol * scale):
            return Lanczos(eigenvalues=jnp.asarray(theta), residuals=jnp.asarray(res), steps=j + 1, converged=True,
                           capped=capped)
        betas.append(b)
        q_prev, q = q, w / b
    return Lanczos(eigenvalues=jnp.asarray(theta), residuals=jnp.asarray(res), steps=steps, converged=False,
                   capped=capped)


@functools.partial(jax.jit, donate_argnums=0)
def _put(block: Array, row: Array, q: Array) -> Array:
    """``block`` with ``q`` as its row ``row``, written in place (the block is donated)."""
    return block.at[row].set(q)


@jax.jit
def _three_term(w: Array, q: Array, q_prev: Array, beta: Array) -> tuple[Array, Array]:
    """The Lanczos recurrence: (A q_j - beta q_(j-1) - alpha q_j, alpha) with alpha = q_j^T (A q_j - beta q_(j-1))."""
    w = w - beta * q_prev
    a = q @ w
    return w - a * q, a


@jax.jit
def _project(block: Array, used: Array, w: Array) -> Array:
    """w minus its projection on the first ``used`` rows of ``block`` (one classical Gram-Schmidt pass)."""
    mask = (jnp.arange(block.shape[0]) <= used).astype(w.dtype)
    return w - block.T @ ((block @ w) * mask)


def _orthogonalize(blocks: list[Array], row: int, w: Array) -> tuple[Array, float]:
    """w orthogonalized against the basis (every row of the full blocks, rows 0..``row`` of the last) by one
    classical Gram-Schmidt pass over the blocks, repeated once where it shrank w by more than 1/sqrt(2)
    (Daniel-Gragg-Kaufman-Stewart), and its norm."""
    last = len(blocks) - 1
    before = float(jnp.linalg.norm(w))
    for _ in range(2):
        for i, block in enumerate(blocks):
            w = _project(block, jnp.asarray(row if i == last else block.shape[0] - 1), w)
        after = float(jnp.linalg.norm(w))
        if after > before / math.sqrt(2):
            break
        before = after
    return w, after


class Estimate(eqx.Module):
    """A Hutchinson estimate: the mean over probes and its standard error (sample standard deviation /
    sqrt(probes))."""

    mean: Float[Array, "..."]
    stderr: Float[Array, "..."]


def _estimate(samples: np.ndarray) -> Estimate:
    s = np.asarray(samples, dtype=np.float64)
    N = s.shape[0]
    err = s.std(axis=0, ddof=1) / math.sqrt(N) if N > 1 else np.full(s.shape[1:], np.inf)
    return Estimate(mean=jnp.asarray(s.mean(axis=0)), stderr=jnp.asarray(err))


def hutchinson(ops: HessianOperators, probes: int, *, seed: int = 0, progress: bool = False
               ) -> tuple[Estimate, Estimate]:
    """(Tr(H^j) for j = 1..4, Tr(B^2)) by Hutchinson's estimator with ``probes`` Rademacher vectors v (seeded):
    v^T H v, |H v|^2, (H v)^T H (H v), |H^2 v|^2, and |B v|^2 with B = sum_s chi_s d^2 f_s / d theta^2 (so n^2 times
    |(B/n) v|^2; docs/math.md section 11). Two operator applications per probe."""
    if not isinstance(probes, (int, np.integer)) or isinstance(probes, bool) or probes < 2:
        raise ConfigError(f"probes = {probes!r} must be an integer >= 2 (the standard error needs two)")
    n = ops.X.shape[0]
    keys = jax.random.split(jax.random.PRNGKey(seed), probes)
    it = range(probes)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="probes", unit="probe", leave=False)
    moments, b2 = [], []
    for i in it:
        v = jax.random.rademacher(keys[i], (ops.size,), ops.root_eta.dtype)
        h1, bv = ops.both(v)
        h2 = ops.hessian(h1)
        moments.append([float(v @ h1), float(h1 @ h1), float(h1 @ h2), float(h2 @ h2)])
        b2.append(n**2 * float(bv @ bv))
    return _estimate(np.asarray(moments)), _estimate(np.asarray(b2))


class Spectrum(eqx.Module):
    """The Hessian and the NTK at one set of weights (docs/math.md section 11): ``hessian_top`` (the top
    eigenvalues of H, decreasing) with their Lanczos ``residuals``, ``gn_eigenvalues`` (all of G's, decreasing),
    ``moments_H`` (Hutchinson, j = 1..4) and ``moments_G`` (exact), ``trace_B2`` (Hutchinson), ``rms_B`` =
    sqrt(Tr(B^2) / P), and the sizes: ``num_params`` P, ``probes``, ``lanczos_steps``. Spectra at several weights
    (:func:`stack_spectra`) carry a leading axis on every array and on ``lanczos_steps``."""

    hessian_top: Float[Array, " k"]
    residuals: Float[Array, " k"]
    gn_eigenvalues: Float[Array, " N"]
    moments_H: Estimate
    moments_G: Float[Array, " 4"]
    trace_B2: Estimate
    rms_B: Float[Array, ""]
    num_params: int
    probes: int
    lanczos_steps: int | Int[Array, " T"]

    def as_dict(self) -> dict:
        """Plain numbers, the keys of ``nth spectrum --json``."""
        tolist = lambda a: np.asarray(a, dtype=np.float64).tolist()  # noqa: E731
        return {"hessian_top": tolist(self.hessian_top), "hessian_residuals": tolist(self.residuals),
                "gn_eigenvalues": tolist(self.gn_eigenvalues), "moments_H": tolist(self.moments_H.mean),
                "moments_H_stderr": tolist(self.moments_H.stderr), "moments_G": tolist(self.moments_G),
                "trace_B2": float(self.trace_B2.mean), "trace_B2_stderr": float(self.trace_B2.stderr),
                "rms_B": float(self.rms_B), "num_params": self.num_params, "probes": self.probes,
                "lanczos_steps": self.lanczos_steps}


def spectrum(model: AbstractModel, X: Float[Array, "n *in"], Y: Array, loss: AbstractLoss | str = "mse", *,
             top: int = 4, probes: int = 100, seed: int = 0, tol: float = 1e-10, max_steps: int | None = None,
             memory_budget: int | None = None, progress: bool = False) -> Spectrum:
    """The top ``top`` eigenvalues of the loss Hessian H (Lanczos to relative residual ``tol``), G's eigenvalues and
    moments, and Hutchinson estimates of Tr(H^j) and Tr(B^2) from ``probes`` Rademacher probes (``seed`` seeds the
    Lanczos start and the probes), for ``model`` on inputs X and targets Y under ``loss`` (docs/math.md section
    11). Y as the loss takes it (``loss.targets``: values for mse, labels or one-hot rows for cross-entropy).
    A Lanczos run that does not meet ``tol`` within its steps raises :class:`~nth.errors.SolverError`."""
    loss = loss_from_spec(loss)
    ops = hessian_operators(model, X, Y, loss)
    lz = lanczos_top(ops.hessian, ops.size, top, seed=seed, tol=tol, max_steps=max_steps,
                     dtype=ops.root_eta.dtype, memory_budget=memory_budget, progress=progress)
    if not lz.converged:
        raise SolverError(f"Lanczos did not reach the relative residual {tol:g} for the top {top} eigenvalues in "
                          f"{lz.steps} steps (largest residual {float(jnp.max(lz.residuals)):.2g}); "
                          + ("the memory budget capped the steps: raise it (--memory-budget) or ask for fewer "
                             "eigenvalues (--top)" if lz.capped else "loosen the tolerance (--spectrum-tol) or raise max_steps "
                             "(nth.spectrum)"))
    G = loss.gauss_newton(ntk(ops.model, ops.X), ops.model(ops.X), ops.Y)
    g = np.sort(np.linalg.eigvalsh(np.asarray(G, dtype=np.float64)))[::-1]
    mH, b2 = hutchinson(ops, probes, seed=seed + 1, progress=progress)
    return Spectrum(hessian_top=lz.eigenvalues, residuals=lz.residuals, gn_eigenvalues=jnp.asarray(g),
                    moments_H=mH, moments_G=jnp.asarray([np.sum(g**j) for j in range(1, MOMENTS + 1)]),
                    trace_B2=b2, rms_B=jnp.sqrt(jnp.maximum(b2.mean, 0.0) / ops.size), num_params=ops.size,
                    probes=probes, lanczos_steps=lz.steps)


def stack_spectra(spectra: list[Spectrum]) -> Spectrum:
    """Spectra at several weights (of one model, with the same probes) as one :class:`Spectrum` whose arrays and
    ``lanczos_steps`` carry a leading axis in the given order."""
    first = spectra[0]
    stack = lambda *xs: jnp.stack([jnp.asarray(x) for x in xs])  # noqa: E731
    arrays = jax.tree_util.tree_map(stack, *[dataclasses.replace(s, num_params=0, probes=0) for s in spectra])
    return dataclasses.replace(arrays, num_params=first.num_params, probes=first.probes)


def separated_top(hessian_top: Float[np.ndarray, " k"], gn_eigenvalues: Float[np.ndarray, " N"]) -> int:
    """How many of G's leading eigenvalues stand apart from the rest of H's spectrum (docs/math.md section 11): the
    largest s such that lambda_i(G) > lambda_(i+1)(H) for every i <= s, with s < k (the k computed eigenvalues of
    H). For such i no eigenvalue of H below the i-th reaches G's i-th, and lambda_i(H) - lambda_i(G) is the
    perturbation DG Eq. 76 bounds; past s, G's eigenvalues lie inside the cloud that B spreads the P - nk zero
    eigenvalues of the Gauss-Newton part into, and H's ordered eigenvalues there are B's, not G's. Where G's top
    eigenvalues come in near-equal copies (k outputs, DG Fig. 9b), lambda_(i+1)(H) may be the partner of G's
    (i+1)-th rather than the cloud's, and an index is then counted unseparated once the perturbation exceeds the
    spacing of the copies: a conservative count."""
    top = np.asarray(hessian_top, dtype=np.float64)
    gn = np.asarray(gn_eigenvalues, dtype=np.float64)
    m = min(top.size - 1, gn.size)
    above = gn[:m] > top[1 : m + 1]
    return int(m if above.all() else np.argmin(above))


class SpectrumLaw(eqx.Module):
    """A quantity of a width study of spectra (``top_gap`` of each separated index, ``nth plot spectrum``; the
    others :func:`nth.io.spectrum_summary`'s names, without ``_init`` or ``_final``) with its ``title`` and the exponent s of its predicted law ~ m^s at initialization for a network
    of ``depth`` hidden layers (docs/math.md section 11; DG Eq. 76, Eq. 80, Fig. 10b). ``measured_only``: where
    DG's bound is weaker than what they measure (depth 1: the top-eigenvalue gap is proven O(m^(-1/2)), measured
    O(1/m), their footnote 12)."""

    name: str
    title: str
    shallow: float | None
    deep: float | None
    measured_only: float | None = None

    def exponent(self, depth: int | None) -> float | None:
        """The predicted exponent at this depth (None: no prediction, or an unknown depth)."""
        if depth is None:
            return None
        return self.shallow if depth == 1 else self.deep


#: What a width study of spectra fits (docs/math.md section 11).
SPECTRUM_LAWS = (
    SpectrumLaw("top_gap", "lambda_i(H) - lambda_i(G), each separated top eigenvalue i", -0.5, -1.0,
                measured_only=-1.0),
    SpectrumLaw("rms_B", "RMS eigenvalue of B, sqrt(Tr(B^2) / P)", -0.5, -1.0),
    *(SpectrumLaw(f"moment_reldiff_{j}", f"(Tr H^{j} - Tr G^{j}) / Tr G^{j}", *((0.0, 0.0) if j == 2 else (-1.0, -1.0)))
      for j in range(1, MOMENTS + 1)),
)
