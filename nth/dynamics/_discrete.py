"""The discrete-time hierarchy: predictions of full-batch gradient descent at a finite learning rate
(docs/math.md section 7; DG Appendix E.2, E.4.2).

A step theta <- theta - lr eta . grad L moves theta by g = -h sum_s chi_s v_s with h = lr / n, chi the loss
gradient in function space (the residual Delta = f - y for mse; docs/math.md section 10) and v_s = eta . grad
f_s; Taylor-expanding every quantity along g gives, with the tensors of :func:`nth.kernel.gd_tensors` over
samples ([.] contracts the trailing slots with Delta_t, which stands for chi(f_t) for any other loss):

    order "p2" (frozen kernel; exact at infinite width):
        Delta_{t+1} = (I - h K) Delta_t
    order "o1m" (every term of order 1/m kept; the dropped ones are O(1/m^2)):
        Delta_{t+1} = Delta_t - h K_t Delta_t + (h^2/2) O11_t[Delta_t, Delta_t] - (h^3/6) O111(0)[Delta_t, Delta_t, Delta_t]
        K_{t+1}     = K_t - h K3_t[Delta_t] + (h^2/2) M(0)[Delta_t, Delta_t]
        K3_{t+1}    = K3_t - h K4(0)[Delta_t]
        O11_{t+1}   = O11_t - h P(0)[Delta_t]

At test inputs the first slot of every object is a test input and f_test moves by the first line's terms
(HY Eq. 22). Stochastic gradient descent (docs/math.md section 10): with the batch B_t of every step
(:func:`nth.batch_schedule`), h = lr / |B_t| and every contraction takes c_t = chi(f_t) masked to the samples
of the inputs in B_t (the tensors stay over every input: the prediction is wanted everywhere). Full-batch, as
lr -> 0 with lr * steps fixed, "o1m" tends to the continuous truncated NTH at p = 4 (the h^2 and h^3 terms vanish
like lr), and "p2" to the frozen-kernel flow.
"""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..errors import ConfigError, SolverError
from ..kernel import GD_TENSORS
from ..losses import MSE, AbstractLoss
from ._batches import check_batches
from ._problem import Problem, check_problem
from ._references import GDSolution, check_steps

ORDERS = ("p2", "o1m")
_NEEDS = {"p2": ((2,), ()), "o1m": ((2, 3, 4), tuple(GD_TENSORS))}
_FROZEN = ("K4", "O111", "M", "P")


def _contract(T: Array, d: Array, times: int) -> Array:
    """T with its last ``times`` slots contracted with d."""
    for _ in range(times):
        T = T @ d
    return T


def _step(order: str, h, objective, frozen, state, mask):
    """One step of the discrete system ``order`` (module docstring; docs/math.md sections 7 and 10: the h, h^2/2
    and h^3/6 terms of the Taylor expansion along the step, contracted with chi, masked to the step's batch
    where ``mask`` is given) for the training and (optionally) test rows."""
    d = objective.chi(state["f"]) if mask is None else objective.chi(state["f"]) * mask
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
def _segment(order: str, h, objective, frozen, state, start, num_steps, masks):
    return jax.lax.fori_loop(0, num_steps, lambda i, s: _step(order, h, objective, frozen, s,
                                                              None if masks is None else masks[start + i]), state)


def _state(order: str, prob: Problem) -> tuple[dict[str, Array], dict[str, Array]]:
    """(frozen, evolving) arrays of the discrete system ``order`` for a checked problem."""
    need_k, need_t = _NEEDS[order]
    state = {"f": prob.f0} | {f"K{r}": prob.kernels[r] for r in need_k} | (prob.tensors or {})
    if prob.f0_test is not None:
        state |= {"f_test": prob.f0_test} | {f"K{r}_test": prob.test_kernels[r] for r in need_k}
        state |= {f"{s}_test": v for s, v in (prob.test_tensors or {}).items()}
    frozen = {key: state.pop(key) for key in [k for k in state if k.split("_")[0] in _FROZEN]}
    return frozen, state


def discrete_nth(
    kernels: Mapping[int, Float[Array, "N ..."]],
    f0: Float[Array, "n *k"],
    y: Array,
    lr: float,
    save_steps,
    *,
    order: str = "o1m",
    loss: AbstractLoss | str = MSE(),
    tensors: Mapping[str, Float[Array, "N ..."]] | None = None,
    test_kernels: Mapping[int, Float[Array, "N1 ..."]] | None = None,
    test_tensors: Mapping[str, Float[Array, "N1 ..."]] | None = None,
    f0_test: Float[Array, "n_test *k"] | None = None,
    batches: Int[Array, "S B"] | None = None,
) -> GDSolution:
    """The discrete-time hierarchy of ``order`` (module docstring; docs/math.md sections 7 and 10) from the kernels
    at t = 0 over samples (``kernels[2]`` for "p2"; K^(2), K^(3), K^(4) and the ``tensors`` O11, O111, M, P of
    :func:`nth.kernel.gd_tensors` for "o1m"), for ``loss`` (default mse; f0 of the model's output shape, y the
    loss's targets), recorded at ``save_steps`` like :func:`gradient_descent` (t = lr * step): full-batch, or
    with ``batches`` (the batch of every step, :func:`nth.batch_schedule`) the prediction of SGD on them.
    ``test_kernels``/``test_tensors``/``f0_test`` (first slot at test inputs) add f_test.
    """
    where = "discrete_nth"
    if order not in ORDERS:
        raise ConfigError(f"{where}: order = {order!r}; accepted: {', '.join(ORDERS)}")
    steps = check_steps(save_steps, lr, where)
    need_k, need_t = _NEEDS[order]
    if not isinstance(kernels, Mapping) or any(k not in kernels for k in need_k):
        got = sorted(kernels) if isinstance(kernels, Mapping) else type(kernels).__name__
        raise ConfigError(f"{where}: order {order!r} needs 'kernels' with {list(need_k)} (nth.kernels(net, X, p=4) "
                          f"and nth.gd_tensors(net, X)); got {got}")
    prob = check_problem(kernels, f0, y, levels=need_k, where=where, loss=loss, test_kernels=test_kernels,
                         f0_test=f0_test, tensors=tensors, test_tensors=test_tensors, tensor_names=need_t,
                         dense_reason="the discrete-time hierarchy needs dense kernels")
    frozen, state = _state(order, prob)
    objective = prob.objective
    masks = None
    if batches is not None:  # 1 on the samples (a, i), s = a k + i, of the inputs a in the step's batch
        batches = jnp.asarray(check_batches(batches, prob.n, int(steps[-1]), where))
        rows = jnp.arange(batches.shape[0])[:, None]
        masks = jnp.zeros((batches.shape[0], prob.n), state["f"].dtype).at[rows, batches].set(1.0)
        masks = jnp.repeat(masks, prob.k, axis=1)
    h = jnp.asarray(lr / (prob.n if batches is None else batches.shape[1]), state["f"].dtype)
    out, done = [], 0
    for s in steps:
        state = _segment(order, h, objective, frozen, state, jnp.asarray(done), jnp.asarray(int(s) - done), masks)
        done = int(s)
        out.append(state)
    f = jnp.stack([o["f"] for o in out])
    if not bool(jnp.isfinite(f).all()):
        raise SolverError(f"{where}: the {order} prediction with lr = {lr:g} diverged (non-finite outputs); the "
                          "largest stable step is nth.stable_lr (2n / lambda_max(K^(2)) for mse)")
    K2 = jnp.stack([o["K2"] for o in out])
    f_test = jnp.stack([o["f_test"] for o in out]) if "f_test" in state else None
    return GDSolution(lr=float(lr), steps=jnp.asarray(steps), ts=lr * jnp.asarray(steps, dtype=f.dtype),
                      f=prob.shaped(f), K2=K2, loss=jax.vmap(objective.value)(f),
                      f_test=None if f_test is None else prob.shaped(f_test, prob.n_test), batches=batches)
