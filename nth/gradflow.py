"""The reference: true gradient flow of the finite network, integrated in parameter space with Diffrax.

d theta/dt = -grad_theta L(theta),  L = (1/(2n)) sum_b (f_b - y_b)^2   (MATH.md section 2, HY Eqs. 3-5).

The ODE state is the displacement u = theta - theta(0), not theta itself: each parameter moves only
O(1/sqrt(m)) while being O(1), so a relative tolerance on theta would be loose on the change that matters
(MATH.md section 6). Together with the max norm over the parameter pytree (``nth.odeint``) this resolves
every layer, including the output layer and W^(1).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .errors import ConfigError, SolverError
from .model import MLP, ntk, scale_by_lrs
from .odeint import integrate


class FlowSolution(eqx.Module):
    """True gradient flow at the save times: f(t) (T, n), empirical K^(2)(t) (T, n, n), loss(t) (T,).

    ``params`` is theta(t) as an MLP whose leaves have a leading time axis (only with ``save_params``).
    """

    ts: Float[Array, " T"]
    f: Float[Array, "T n"]
    K2: Float[Array, "T n n"]
    loss: Float[Array, " T"]
    params: MLP | None
    f_test: Float[Array, "T k"] | None
    stats: dict[str, int] = eqx.field(static=True)


def loss(net: MLP, X: Float[Array, "n d"], y: Float[Array, " n"]) -> Float[Array, ""]:
    """L = (1/(2n)) sum_b (f_b - y_b)^2 (HY Eq. 3, MATH.md section 2)."""
    return 0.5 * jnp.mean((net(X) - y) ** 2)


def _flow_rhs(t, u, args):
    net0, X, y, _ = args
    net = jax.tree_util.tree_map(jnp.add, net0, u)
    g = scale_by_lrs(net0, jax.grad(loss)(net, X, y))
    return jax.tree_util.tree_map(jnp.negative, g)


def _observe(net: MLP, X, y, X_test):
    """What is recorded along a trajectory: f, K^(2), loss, and f at the test inputs (f itself if none)."""
    f = net(X)
    return f, ntk(net, X), 0.5 * jnp.mean((f - y) ** 2), (f if X_test is None else net(X_test))


def _save_flow(t, u, args):
    net0, X, y, X_test = args
    return _observe(jax.tree_util.tree_map(jnp.add, net0, u), X, y, X_test)


def _save_flow_params(t, u, args):
    return _save_flow(t, u, args), jax.tree_util.tree_map(jnp.add, args[0], u)


def gradient_flow(
    net: MLP,
    X: Float[Array, "n d"],
    y: Float[Array, " n"],
    ts: Float[Array, " T"],
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 100_000,
    solver: str = "dopri8",
    X_test: Float[Array, "k d"] | None = None,
    progress: bool = False,
    save_params: bool = False,
) -> FlowSolution:
    """Train ``net`` by exact gradient flow on (X, y) and record f, the empirical K^(2) and the loss at ``ts``.

    Diffrax adaptive ``solver`` (default Dopri8, suited to the tight tolerances a reference needs) with a
    PID controller on the max norm of the displacement theta(t) - theta(0). ``save_params`` also returns
    theta at every save time (memory: T times the parameter count); ``X_test`` records f at test inputs
    too. Solver failures raise
    :class:`~nth.errors.SolverError`.
    """
    X, y, X_test = _check_data(net, X, y, X_test)
    u0 = jax.tree_util.tree_map(jnp.zeros_like, net)
    ys, stats = integrate(_flow_rhs, u0, (net, X, y, X_test), ts, save_fn=_save_flow_params if save_params else _save_flow,
                          rtol=rtol, atol=atol, max_steps=max_steps, solver=solver, progress=progress,
                          what="true gradient flow")
    (f, K2, L, f_test), params = ys if save_params else (ys, None)
    return FlowSolution(ts=jnp.asarray(ts, dtype=X.dtype), f=f, K2=K2, loss=L, params=params,
                        f_test=None if X_test is None else f_test, stats=stats)


def _check_data(net: MLP, X, y, X_test):
    dtype = net.a.dtype
    X, y = jnp.asarray(X, dtype=dtype), jnp.asarray(y, dtype=dtype)
    if X.ndim != 2 or X.shape[1] != net.in_dim or y.shape != (X.shape[0],):
        raise ConfigError(f"X {X.shape} and y {y.shape} must be (n, {net.in_dim}) and (n,)")
    if X_test is not None:
        X_test = jnp.asarray(X_test, dtype=dtype)
        if X_test.ndim != 2 or X_test.shape[1] != net.in_dim:
            raise ConfigError(f"X_test has shape {X_test.shape}; expected (k, {net.in_dim})")
    return X, y, X_test


class GDSolution(eqx.Module):
    """Full-batch gradient descent at the saved steps: t = lr * step, and f, K^(2), loss, f_test there."""

    lr: float = eqx.field(static=True)
    steps: Int[Array, " T"]
    ts: Float[Array, " T"]
    f: Float[Array, "T n"]
    K2: Float[Array, "T n n"]
    loss: Float[Array, " T"]
    f_test: Float[Array, "T k"] | None


@eqx.filter_jit
def _gd_segment(net: MLP, X, y, lr, num_steps):
    def body(_, nt):
        g = scale_by_lrs(nt, jax.grad(loss)(nt, X, y))
        return jax.tree_util.tree_map(lambda p, gp: p - lr * gp, nt, g)

    return jax.lax.fori_loop(0, num_steps, body, net)


_observe_jit = eqx.filter_jit(_observe)


def stable_lr(K2: Float[Array, "n n"]) -> float:
    """2 n / lambda_max(K^(2)): the largest stable step of gradient descent on L near the kernel regime
    (the Hessian of L is about J^T J / n, whose top eigenvalue is that of K^(2)/n)."""
    K2 = jnp.asarray(K2)
    return float(2 * K2.shape[0] / jnp.linalg.eigvalsh(K2)[-1])


def gradient_descent(
    net: MLP,
    X: Float[Array, "n d"],
    y: Float[Array, " n"],
    lr: float,
    save_steps,
    *,
    X_test: Float[Array, "k d"] | None = None,
) -> GDSolution:
    """Full-batch gradient descent theta <- theta - lr grad L (HY Section 4 item 2), recorded at ``save_steps``.

    Step s corresponds to time t = lr * s of gradient flow; the two agree to O(lr) (Euler's method).
    """
    X, y, X_test = _check_data(net, X, y, X_test)
    steps = np.asarray(save_steps)
    if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer) or steps[0] < 0 \
            or (np.diff(steps) < 0).any():
        raise ConfigError(f"save_steps must be non-decreasing non-negative integers; got {steps[:5]}...")
    if not (np.isfinite(lr) and lr > 0):
        raise ConfigError(f"learning rate lr = {lr!r} must be a finite positive number")
    lr_arr = jnp.asarray(lr, dtype=X.dtype)
    out, done = [], 0
    for s in steps:
        net = _gd_segment(net, X, y, lr_arr, int(s) - done)
        done = int(s)
        out.append(_observe_jit(net, X, y, X_test))
    f, K2, L, f_test = (jnp.stack(z) for z in zip(*out))
    if not bool(jnp.isfinite(f).all()):
        raise SolverError(f"gradient descent with lr = {lr:g} diverged (non-finite outputs); the largest stable "
                          "step is about 2n / lambda_max(K^(2)) (nth.gradflow.stable_lr)")
    return GDSolution(lr=float(lr), steps=jnp.asarray(steps), ts=lr * jnp.asarray(steps, dtype=X.dtype), f=f,
                      K2=K2, loss=L, f_test=None if X_test is None else f_test)
