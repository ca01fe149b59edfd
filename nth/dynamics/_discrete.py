"""The discrete-time hierarchy: predictions of full-batch gradient descent at a finite learning rate
(docs/math.md section 7; DG Appendix E.2, E.4.2).

A step theta <- theta - lr eta . grad L moves theta by g = -h sum_b Delta_b v_b with h = lr / n and
v_b = eta . grad f_b; Taylor-expanding every quantity along g gives, with the tensors of
:func:`nth.kernel.gd_tensors` ([.] contracts the trailing slots with Delta_t):

    order "p2" (frozen kernel; exact at infinite width):
        Delta_{t+1} = (I - h K) Delta_t
    order "o1m" (every term of order 1/m kept; the dropped ones are O(1/m^2)):
        Delta_{t+1} = Delta_t - h K_t Delta_t + (h^2/2) O11_t[Delta_t, Delta_t] - (h^3/6) O111(0)[Delta_t, Delta_t, Delta_t]
        K_{t+1}     = K_t - h K3_t[Delta_t] + (h^2/2) M(0)[Delta_t, Delta_t]
        K3_{t+1}    = K3_t - h K4(0)[Delta_t]
        O11_{t+1}   = O11_t - h P(0)[Delta_t]

At test inputs the first slot of every object is a test input and f_test moves by the first line's terms
(HY Eq. 22). As lr -> 0 with lr * steps fixed, "o1m" tends to the continuous truncated NTH at p = 4 (the h^2
and h^3 terms vanish like lr), and "p2" to the frozen-kernel flow.
"""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_array
from ..errors import ConfigError, SolverError
from ._references import GDSolution, check_steps

ORDERS = ("p2", "o1m")
_NEEDS = {"p2": ((2,), ()), "o1m": ((2, 3, 4), ("O11", "O111", "M", "P"))}


def _contract(T: Array, d: Array, times: int) -> Array:
    """T with its last ``times`` slots contracted with d."""
    for _ in range(times):
        T = T @ d
    return T


def _step(order: str, h, frozen, state):
    """One step of the discrete system ``order`` (module docstring; docs/math.md section 7: the h, h^2/2 and h^3/6
    terms of the Taylor expansion along the step) for the training and (optionally) test rows."""
    d = state["f"] - frozen["y"]
    new = {}
    for rows in ("", "_test"):
        if "f" + rows not in state:
            continue
        K = state["K2" + rows]
        f = state["f" + rows] - h * (K @ d)
        if order == "o1m":
            f = f + (h**2 / 2) * _contract(state["O11" + rows], d, 2) \
                - (h**3 / 6) * _contract(frozen["O111" + rows], d, 3)
            new["K2" + rows] = K - h * _contract(state["K3" + rows], d, 1) \
                + (h**2 / 2) * _contract(frozen["M" + rows], d, 2)
            new["K3" + rows] = state["K3" + rows] - h * _contract(frozen["K4" + rows], d, 1)
            new["O11" + rows] = state["O11" + rows] - h * _contract(frozen["P" + rows], d, 1)
        else:
            new["K2" + rows] = K
        new["f" + rows] = f
    return new


@eqx.filter_jit
def _segment(order: str, h, frozen, state, num_steps):
    return jax.lax.fori_loop(0, num_steps, lambda _, s: _step(order, h, frozen, s), state)


def _inputs(order, kernels, tensors, f0, y, test_kernels, test_tensors, f0_test, where):
    need_k, need_t = _NEEDS[order]
    for name, table, keys in (("kernels", kernels, need_k), ("tensors", tensors, need_t)):
        if keys and (not isinstance(table, Mapping) or any(k not in table for k in keys)):
            got = sorted(table) if isinstance(table, Mapping) else type(table).__name__
            raise ConfigError(f"{where}: order {order!r} needs '{name}' with {list(keys)} (nth.kernels(net, X, p=4) "
                              f"and nth.gd_tensors(net, X)); got {got}")
    y = check_array("y", y, where=where, ndim=1, what="targets")
    n = y.shape[0]
    f0 = check_array("f0", f0, where=where, shape=(n,), why=f" to match 'y' ({n},)", what="outputs")
    frozen, state = {"y": y}, {"f": f0}
    shapes = {2: (n, n), 3: (n,) * 3, 4: (n,) * 4, "O11": (n,) * 3, "O111": (n,) * 4, "M": (n,) * 4, "P": (n,) * 4}
    for r in need_k:
        state[f"K{r}"] = check_array(f"kernels[{r}]", kernels[r], where=where, shape=shapes[r],
                                     why=f" (n = {n})", what="kernel entries")
    for s in need_t:
        state[s] = check_array(f"tensors[{s!r}]", tensors[s], where=where, shape=shapes[s], why=f" (n = {n})",
                               what="tensor entries")
    if (test_kernels is None) != (f0_test is None) or (need_t and (test_tensors is None) != (f0_test is None)):
        raise ConfigError(f"{where}: test-point predictions need f0_test, test_kernels"
                          + (" and test_tensors" if need_t else "") + " together (first slot at the test inputs)")
    if f0_test is not None:
        f0_test = check_array("f0_test", f0_test, where=where, ndim=1, what="outputs")
        k = f0_test.shape[0]
        state["f_test"] = f0_test
        for r in need_k:
            state[f"K{r}_test"] = check_array(f"test_kernels[{r}]", test_kernels[r], where=where,
                                              shape=(k,) + shapes[r][1:], why=f" (k = {k}, n = {n})",
                                              what="kernel entries")
        for s in need_t:
            state[f"{s}_test"] = check_array(f"test_tensors[{s!r}]", test_tensors[s], where=where,
                                             shape=(k,) + shapes[s][1:], why=f" (k = {k}, n = {n})",
                                             what="tensor entries")
    for key in ("K4", "O111", "M", "P", "K4_test", "O111_test", "M_test", "P_test"):
        if key in state:
            frozen[key] = state.pop(key)
    dtype = jnp.result_type(*[v for v in state.values()], float)
    cast = lambda t: {k_: jnp.asarray(v, dtype) for k_, v in t.items()}  # noqa: E731
    return cast(frozen), cast(state)


def discrete_nth(
    kernels: Mapping[int, Float[Array, "n ..."]],
    f0: Float[Array, " n"],
    y: Float[Array, " n"],
    lr: float,
    save_steps,
    *,
    order: str = "o1m",
    tensors: Mapping[str, Float[Array, "n ..."]] | None = None,
    test_kernels: Mapping[int, Float[Array, "k ..."]] | None = None,
    test_tensors: Mapping[str, Float[Array, "k ..."]] | None = None,
    f0_test: Float[Array, " k"] | None = None,
) -> GDSolution:
    """The discrete-time hierarchy of ``order`` (module docstring; docs/math.md section 7) from the kernels at
    t = 0 (``kernels[2]`` for "p2"; K^(2), K^(3), K^(4) and the ``tensors`` O11, O111, M, P of
    :func:`nth.kernel.gd_tensors` for "o1m"), recorded at ``save_steps`` like :func:`gradient_descent`
    (t = lr * step). ``test_kernels``/``test_tensors``/``f0_test`` (first slot at k test inputs) add f_test.
    """
    where = "discrete_nth"
    if order not in ORDERS:
        raise ConfigError(f"{where}: order = {order!r}; accepted: {', '.join(ORDERS)}")
    steps = check_steps(save_steps, lr, where)
    frozen, state = _inputs(order, kernels, tensors, f0, y, test_kernels, test_tensors, f0_test, where)
    n = state["f"].shape[0]
    h = jnp.asarray(lr / n, state["f"].dtype)
    out, done = [], 0
    for s in steps:
        state = _segment(order, h, frozen, state, jnp.asarray(int(s) - done))
        done = int(s)
        out.append(state)
    f = jnp.stack([o["f"] for o in out])
    if not bool(jnp.isfinite(f).all()):
        raise SolverError(f"{where}: the {order} prediction with lr = {lr:g} diverged (non-finite outputs); the "
                          "largest stable step is about 2n / lambda_max(K^(2)) (nth.stable_lr)")
    K2 = jnp.stack([o["K2"] for o in out])
    loss = 0.5 * jnp.mean((f - frozen["y"]) ** 2, axis=-1)
    f_test = jnp.stack([o["f_test"] for o in out]) if "f_test" in state else None
    return GDSolution(lr=float(lr), steps=jnp.asarray(steps), ts=lr * jnp.asarray(steps, dtype=f.dtype), f=f, K2=K2,
                      loss=loss, f_test=f_test)

