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
from jaxtyping import Array, Float

from .errors import ConfigError
from .model import MLP, ntk
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
    stats: dict[str, int] = eqx.field(static=True)


def loss(net: MLP, X: Float[Array, "n d"], y: Float[Array, " n"]) -> Float[Array, ""]:
    """L = (1/(2n)) sum_b (f_b - y_b)^2 (HY Eq. 3, MATH.md section 2)."""
    return 0.5 * jnp.mean((net(X) - y) ** 2)


def _flow_rhs(t, u, args):
    net0, X, y = args
    net = jax.tree_util.tree_map(jnp.add, net0, u)
    g = jax.grad(loss)(net, X, y)
    return jax.tree_util.tree_map(jnp.negative, g)


def _save_flow(t, u, args):
    net0, X, y = args
    net = jax.tree_util.tree_map(jnp.add, net0, u)
    f = net(X)
    return f, ntk(net, X), 0.5 * jnp.mean((f - y) ** 2)


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
    progress: bool = False,
    save_params: bool = False,
) -> FlowSolution:
    """Train ``net`` by exact gradient flow on (X, y) and record f, the empirical K^(2) and the loss at ``ts``.

    Diffrax adaptive ``solver`` (default Dopri8, suited to the tight tolerances a reference needs) with a
    PID controller on the max norm of the displacement theta(t) - theta(0). ``save_params`` also returns
    theta at every save time (memory: T times the parameter count). Solver failures raise
    :class:`~nth.errors.SolverError`.
    """
    dtype = net.a.dtype
    X = jnp.asarray(X, dtype=dtype)
    y = jnp.asarray(y, dtype=dtype)
    if X.ndim != 2 or X.shape[1] != net.in_dim or y.shape != (X.shape[0],):
        raise ConfigError(f"X {X.shape} and y {y.shape} must be (n, {net.in_dim}) and (n,)")
    u0 = jax.tree_util.tree_map(jnp.zeros_like, net)
    ys, stats = integrate(_flow_rhs, u0, (net, X, y), ts, save_fn=_save_flow_params if save_params else _save_flow,
                          rtol=rtol, atol=atol, max_steps=max_steps, solver=solver, progress=progress,
                          what="true gradient flow")
    (f, K2, L), params = ys if save_params else (ys, None)
    return FlowSolution(ts=jnp.asarray(ts, dtype=dtype), f=f, K2=K2, loss=L, params=params, stats=stats)
