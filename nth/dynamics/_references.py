"""The references: true gradient flow of the finite model (integrated in parameter space with Diffrax), and
full-batch gradient descent at a finite learning rate.

    d theta/dt = -eta . grad_theta L(theta),  L = (1/n) sum_a l(f_a, y_a)   (docs/math.md sections 2 and 10, HY Eqs. 3-5)

with l the per-input loss (default mse, l = (1/2)|f_a - y_a|^2; :mod:`nth.losses`), eta the model's per-group learning rates (1 unless a parametrization sets them). The ODE state is the
displacement u = theta - theta(0), not theta itself: each parameter moves only O(1/sqrt(m)) while being
O(1), so a relative tolerance on theta would be loose on the change that matters (docs/math.md section 6).
Together with the max norm over the parameter pytree (:mod:`nth.dynamics._odeint`) this resolves every
parameter group, including the output layer and the first layer. Works for any model (its inexact-array
leaves are theta); several seeds of one architecture can be integrated together (``stacked``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..checks import as_real, check_array, check_tree_finite, format_shape
from ..errors import ConfigError, SolverError
from ..kernel import ntk
from ..losses import MSE, AbstractLoss, loss_from_spec
from ..models import AbstractModel, as_model, check_inputs, combine, output_shape, partition
from ..models._base import first_model
from ._batches import check_batches
from ._odeint import FLOW_SOLVER, SolverSettings, check_times, integrate
from ._problem import check_problem


class FlowSolution(eqx.Module):
    """True gradient flow at the save times: f(t) (T, n[, k]) (the model's output shape), empirical K^(2)(t)
    (T, N, N) over the N = n k samples, loss(t) (T,).

    ``params`` is theta(t) as a model whose parameter leaves have a leading time axis (only with
    ``save_params``). With ``stacked`` models every array has a leading seed axis and ``stats`` is a list.
    """

    ts: Float[Array, " T"]
    f: Float[Array, "T n *k"]
    K2: Float[Array, "T N N"]
    loss: Float[Array, " T"]
    params: AbstractModel | None
    f_test: Float[Array, "T n_test *k"] | None
    stats: dict[str, int] | list[dict[str, int]] = eqx.field(static=True)


def training_loss(model: AbstractModel, X: Float[Array, "n *in"], y: Array, loss: AbstractLoss = MSE()
                  ) -> Float[Array, ""]:
    """L(theta) = (1/n) sum_a l(f_a, y_a) (HY Eq. 3, docs/math.md sections 2 and 10); mse: (1/(2n)) |f - y|^2."""
    return loss.value(model(X), y)


def _flow_rhs(t, u, args):
    """-eta . grad L at theta(0) + u."""
    params0, static, X, y, _, loss = args
    model = combine(jax.tree_util.tree_map(jnp.add, params0, u), static)
    p, s = partition(model)
    g = jax.grad(lambda q: training_loss(combine(q, s), X, y, loss))(p)
    return jax.tree_util.tree_map(jnp.negative, model.apply_learning_rates(g))


def _observe(model: AbstractModel, X, y, X_test, loss: AbstractLoss):
    """What is recorded along a trajectory: f, K^(2), loss, and f at the test inputs (f itself if none)."""
    f = model(X)
    return f, ntk(model, X), loss.value(f, y), (f if X_test is None else model(X_test))


def _moved(u, args):
    params0, static = args[0], args[1]
    return combine(jax.tree_util.tree_map(jnp.add, params0, u), static)


def _save_flow(t, u, args):
    _, _, X, y, X_test, loss = args
    return _observe(_moved(u, args), X, y, X_test, loss)


def _save_flow_params(t, u, args):
    return _save_flow(t, u, args), jax.tree_util.tree_map(jnp.add, args[0], u)


def gradient_flow(
    model: AbstractModel,
    X: Float[Array, "n *in"],
    y: Array,
    ts: Float[Array, " T"],
    *,
    loss: AbstractLoss | str = MSE(),
    solver: SolverSettings = FLOW_SOLVER,
    X_test: Float[Array, "k *in"] | None = None,
    save_params: bool = False,
    stacked: bool = False,
    labels: list[str] | None = None,
) -> FlowSolution:
    """Train ``model`` by exact gradient flow on (X, y) with ``loss`` (default mse; a
    :class:`~nth.losses.AbstractLoss` or its name) and record f, the empirical K^(2) over samples and the loss at
    ``ts``.

    ``solver`` (default Dopri8 at rtol 1e-10, atol 1e-12, suited to the tight tolerances a reference needs)
    with a PID controller on the max norm of the displacement theta(t) - theta(0). ``save_params`` also
    returns theta at every save time (memory: T times the parameter count); ``X_test`` records f at test
    inputs too. With ``stacked`` the model's parameters carry a leading seed axis and the seeds are solved
    together (one vmapped solve; ``labels`` name them in errors). Solver failures raise
    :class:`~nth.errors.SolverError`.
    """
    where = "gradient_flow"
    model = as_model(model)
    B, one = first_model(model, where) if stacked else (1, model)
    ts = check_times(ts, where)
    loss = loss_from_spec(loss)
    X, y, X_test = _check_data(one, X, y, X_test, loss, where)
    check_tree_finite("model", model, where=where, what="weights")
    if labels is not None and stacked and len(labels) != B:
        raise ConfigError(f"{where}: 'labels' has {len(labels)} entries; expected one per seed (B = {B})")
    params0, static = partition(model)
    u0 = jax.tree_util.tree_map(jnp.zeros_like, params0)
    # with stacked seeds every array leaf carries the seed axis: the parameters, and any other arrays of the model
    static_axes = jax.tree_util.tree_map(lambda x: 0 if eqx.is_array(x) else None, static)
    ys, stats = integrate(_flow_rhs, u0, (params0, static, X, y, X_test, loss), ts, solver,
                          save_fn=_save_flow_params if save_params else _save_flow, what="true gradient flow",
                          batch_axes=(0, static_axes, None, None, None, None) if stacked else None, labels=labels)
    (f, K2, L, f_test), params = ys if save_params else (ys, None)
    return FlowSolution(ts=jnp.asarray(ts, dtype=X.dtype), f=f, K2=K2, loss=L,
                        params=None if params is None else combine(params, static),
                        f_test=None if X_test is None else f_test, stats=stats)


def _check_data(model: AbstractModel, X, y, X_test, loss: AbstractLoss, where: str):
    """X (and X_test) against the model's input shape, y against X and the model's outputs as ``loss`` takes its
    targets; all real and finite (DataError naming them)."""
    X = check_inputs(model, X, where=where)
    out_shape = output_shape(model, X.shape[1:], X.dtype)
    y = as_real("y", y, where=where, what="targets")
    want = loss.target_shape(X.shape[0], out_shape, tuple(y.shape))
    check_array("y", y, where=where, shape=want, what="targets", why=f"to match 'X' {format_shape(X.shape)}",
                finite=False)
    y = loss.targets(y, X.shape[0], out_shape, where=where, dtype=X.dtype)
    if X_test is not None:
        X_test = check_inputs(model, X_test, "X_test", where=where)
    return X, y, X_test


class GDSolution(eqx.Module):
    """A trajectory on gradient-descent steps (real, or predicted by :func:`nth.dynamics.discrete_nth`): t = lr *
    step, and f (T, n[, k]), K^(2) (T, N, N), loss, f_test at the saved steps; under SGD ``batches`` (S, B), the
    batch of every step (:func:`nth.batch_schedule`), None for full-batch gradient descent."""

    lr: float = eqx.field(static=True)
    steps: Int[Array, " T"]
    ts: Float[Array, " T"]
    f: Float[Array, "T n *k"]
    K2: Float[Array, "T N N"]
    loss: Float[Array, " T"]
    f_test: Float[Array, "T n_test *k"] | None
    batches: Int[Array, "S B"] | None = None
    params: AbstractModel | None = None


def check_steps(save_steps, lr, where: str) -> np.ndarray:
    """The saved steps (non-decreasing non-negative integers, 1-D) and a finite positive learning rate."""
    steps = np.asarray(save_steps)
    if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer) or steps[0] < 0 \
            or (np.diff(steps) < 0).any():
        raise ConfigError(f"{where}: 'save_steps' must be non-decreasing non-negative integers (a 1-D array); got "
                          f"{steps.ravel()[:5]}{'...' if steps.size > 5 else ''}")
    if not (np.ndim(lr) == 0 and np.isrealobj(lr) and np.issubdtype(np.asarray(lr).dtype, np.number)
            and np.isfinite(lr) and lr > 0):
        raise ConfigError(f"{where}: learning rate lr = {lr!r} must be a finite positive number")
    return steps


@eqx.filter_jit
def _gd_segment(params, static, X, y, lr, start, num_steps, loss, batches):
    """Steps start..start+num_steps-1: theta <- theta - lr eta . grad L_t, L_t the loss over the batch of the
    step (``batches[t]``; every input when ``batches`` is None)."""
    def body(i, p):
        Xb, yb = (X, y) if batches is None else (X[batches[start + i]], y[batches[start + i]])
        g = combine(p, static).apply_learning_rates(jax.grad(lambda q: training_loss(combine(q, static), Xb, yb,
                                                                                     loss))(p))
        return jax.tree_util.tree_map(lambda a, ga: a - lr * ga, p, g)

    return jax.lax.fori_loop(0, num_steps, body, params)


_observe_jit = eqx.filter_jit(_observe)


def stable_lr(K2: Float[Array, "N N"], n: int | None = None, *, loss: AbstractLoss | str = MSE(),
              f0: Float[Array, "n *k"] | None = None, y: Array | None = None, batch_size: int | None = None) -> float:
    """The largest stable step of gradient descent near the kernel regime: 2 / lambda_max of the Gauss-Newton
    matrix (1/n) J^T H0 J at the initial weights, i.e. eta_max = 2n / lambda_max(H0^(1/2) K^(2) H0^(1/2)) with n
    the training inputs and H0 the per-input loss Hessians at the outputs f0 (docs/math.md sections 7 and 10).

    For mse (H0 = I) this is 2n / lambda_max(K^(2)); n is read from ``f0`` (shape (n,) or (n, k)) when given, else
    it is ``n``, else one sample per input (n = K2.shape[0]). Any other loss needs ``f0`` and the targets ``y``,
    checked with K2 as every prediction's problem is (:func:`~nth.dynamics.check_problem`).

    Stochastic gradient descent on batches of ``batch_size`` B: B replaces n (h = lr / B per step; K^(2) and H0
    stay over all n inputs, which is conservative: docs/math.md section 10).
    """
    where = "stable_lr"
    loss = loss_from_spec(loss)
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
                                   or batch_size < 1):
        raise ConfigError(f"{where}: batch_size = {batch_size!r} must be a positive integer")
    if f0 is None and y is None and isinstance(loss, MSE):
        K2 = check_array("K2", K2, where=where, ndim=2, what="kernel entries")
        B = batch_size or (K2.shape[0] if n is None else n)
        return float(2 * B / jnp.linalg.eigvalsh(jnp.asarray(K2))[-1])
    if f0 is None or y is None:
        raise ConfigError(f"{where}: the {loss.describe()} loss needs 'f0' and 'y' (its Hessian at the initial "
                          "outputs enters the stable step)" if not isinstance(loss, MSE) else
                          f"{where}: give 'f0' and 'y' together (or neither, with n)")
    prob = check_problem({2: K2}, f0, y, levels=(2,), where=where, loss=loss)
    if n is not None and n != prob.n:
        raise ConfigError(f"{where}: n = {n!r} but 'f0' holds {prob.n} inputs; give one of them")
    K = np.asarray(prob.kernels[2], dtype=np.float64)
    B = batch_size or prob.n
    if isinstance(loss, MSE):
        return float(2 * B / np.linalg.eigvalsh(K)[-1])
    G = np.asarray(loss.gauss_newton(jnp.asarray(K), prob.shaped(prob.f0), prob.y), dtype=np.float64)
    return float(2 * B / (prob.n * np.linalg.eigvalsh(G)[-1]))


def gradient_descent(
    model: AbstractModel,
    X: Float[Array, "n *in"],
    y: Array,
    lr: float,
    save_steps,
    *,
    loss: AbstractLoss | str = MSE(),
    X_test: Float[Array, "k *in"] | None = None,
    batches: Int[Array, "S B"] | None = None,
    save_params: bool = False,
) -> GDSolution:
    """Gradient descent theta <- theta - lr eta . grad L with ``loss`` (default mse; HY Section 4 item 2,
    docs/math.md section 10), recorded at ``save_steps``: full-batch, or with ``batches`` (the batch of every
    step, :func:`nth.batch_schedule`) stochastic gradient descent on L_t = (1/B) sum_(a in batch t) l(f_a, y_a).
    Step s corresponds to time t = lr * s of gradient flow; full-batch descent and the flow agree to O(lr)
    (Euler). ``save_params`` also returns theta at every saved step (memory: T times the parameter count)."""
    where = "gradient_descent"
    model = as_model(model)
    loss = loss_from_spec(loss)
    X, y, X_test = _check_data(model, X, y, X_test, loss, where)
    check_tree_finite("model", model, where=where, what="weights")
    steps = check_steps(save_steps, lr, where)
    if batches is not None:
        batches = jnp.asarray(check_batches(batches, X.shape[0], int(steps[-1]), where))
    lr_arr = jnp.asarray(lr, dtype=X.dtype)
    params, static = partition(model)
    out, saved, done = [], [], 0
    for s in steps:
        params = _gd_segment(params, static, X, y, lr_arr, jnp.asarray(done), int(s) - done, loss, batches)
        done = int(s)
        out.append(_observe_jit(combine(params, static), X, y, X_test, loss))
        if save_params:
            saved.append(params)
    f, K2, L, f_test = (jnp.stack(z) for z in zip(*out))
    if not bool(jnp.isfinite(f).all()):
        raise SolverError(f"gradient descent with lr = {lr:g} diverged (non-finite outputs); the largest stable "
                          "step is about 2n / lambda_max(K^(2)) (nth.stable_lr)")
    return GDSolution(lr=float(lr), steps=jnp.asarray(steps), ts=lr * jnp.asarray(steps, dtype=X.dtype), f=f,
                      K2=K2, loss=L, f_test=None if X_test is None else f_test, batches=batches,
                      params=combine(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *saved), static)
                      if save_params else None)
