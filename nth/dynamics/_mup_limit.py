"""The infinite-width limit of a one-hidden-layer network under muP: units pushed forward by their own dynamics
(docs/math.md section 12; TP4 Sec. 6.1, Theorem 6.1, Corollary 6.2, App. D.1).

nth's depth-1 network is f(x) = (1/sqrt(m)) sum_i a_i phi(<W1_i, x>). In unit variables u_i = W1_i and
v_i = sqrt(m) a_i it is the average f(x) = (1/m) sum_i v_i phi(<u_i, x>), and gradient flow of an
abc-parametrization (per-layer rates eta_1, eta_2; :mod:`nth.models._param`) moves every unit by

    du_i/dt = -eta_u (1/n) sum_a phi'(<u_i, x_a>) <chi_a, v_i> x_a,     eta_u = eta_1 / m,
    dv_i/dt = -eta_v (1/n) sum_a chi_a phi(<u_i, x_a>),                  eta_v = eta_2,

with chi_a = dl/df at f(x_a). In pre-activation coordinates z_ia = <u_i, x_a> the state of a unit is
(z_i, v_i) in R^(n + k): dz_i/dt = -eta_u (1/n) (X X^T) c_i with c_ia = phi'(z_ia) <chi_a, v_i>, and a test input
x* moves as dz_i*/dt = -eta_u (1/n) (X x*)^T c_i. Units couple only through the outputs, averages over units.
Where the preset makes s_u (the std of u), s_v (of v), eta_u and eta_v independent of m (muP and mean-field at
depth 1: all four are m^0), the law of the units has a limit as m -> inf, and f tends to the deterministic
fbar(x) = E[v phi(<u, x>)] of the initial Gaussian law pushed forward by the unit dynamics driven by fbar itself.

Every expectation here is a weighted sum over *nodes* (z_p, v_p, w_p), one ODE for all of them
(:func:`unit_flow`):

- a finite network's own units, weights 1/m (:func:`units_of`): the same trajectory as nth's gradient flow;
- the limit by a tensor trapezoidal rule in the standard-normal coordinates of (z, v) (``"trapezoid"``; the
  dimension is rank(X) + k, and the rule converges like exp(-c/h) for analytic activations);
- the limit by scrambled Sobol points with antithetic pairs v -> -v (``"sobol"``), or by random antithetic
  particles (``"particles"``), in independent replicates.

A test input's pre-activation splits into the part in the span of the training inputs, which the dynamics
moves, and r = <u, x*_perp> ~ N(0, s_u^2 |x*_perp|^2), independent and constant in time: it enters only at
readout, by a one-dimensional trapezoidal rule. Linear phi has the closed form :func:`linear_limit`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..errors import ConfigError, MemoryBudgetError
from ..kernel import default_memory_budget, format_bytes
from ..losses import MSE, AbstractLoss, loss_from_spec
from ..models import MLP, AbstractActivation
from ..models import activation as make_activation
from ..models._param import preset
from ._batches import check_batches
from ._references import check_steps
from ._odeint import SOLVER_COPIES, SolverSettings, check_times, integrate

#: How the limit's expectation is computed (module docstring).
LIMIT_METHODS = ("auto", "trapezoid", "sobol", "particles")
#: The largest dimension rank(X) + k that ``"auto"`` integrates by the tensor trapezoidal rule.
TRAPEZOID_MAX_DIM = 3
#: Standard-normal coordinates are cut at +-CUT (the Gaussian weight there is below 1e-14).
CUT = 8.0


def check_limit_options(method: str, points: int, h: float) -> None:
    """Refuse a bad method, point count or trapezoidal step before any work."""
    if method not in LIMIT_METHODS:
        raise ConfigError(f"limit method {method!r} is not known; accepted: {', '.join(LIMIT_METHODS)}")
    if not (isinstance(points, (int, np.integer)) and not isinstance(points, bool) and points >= 4
            and points & (points - 1) == 0):
        raise ConfigError(f"limit points = {points!r} must be a power of 2, at least 4 (e.g. 65536)")
    if not (isinstance(h, (int, float)) and not isinstance(h, bool) and 0 < h <= 1):
        raise ConfigError(f"limit h = {h!r} must be a trapezoidal step in (0, 1] (e.g. 0.2)")


class UnitRates(eqx.Module):
    """The constants of the unit dynamics (module docstring): the initial standard deviations ``s_u`` of u (each
    coordinate) and ``s_v`` of v, and the rates ``eta_u``, ``eta_v``."""

    s_u: float
    s_v: float
    eta_u: float
    eta_v: float


def limit_rates(param: str, sigma_w: float = 1.0, sigma_a: float = 1.0) -> UnitRates:
    """The unit constants of the m -> inf limit of ``param`` at depth 1; refused (ConfigError) where any of them
    moves with m, which is a kernel-regime or degenerate parametrization, not a feature-learning one."""
    abc = preset(param, 1)
    if not abc.has_mean_field_limit:
        ex = abc.unit_exponents()
        names = ("s_u", "s_v", "eta_u", "eta_v")
        moving = ", ".join(f"{n} ~ m^{x}" for n, x in zip(names, ex) if x != 0)
        raise ConfigError(f"param {param!r} has no mean-field (muP) limit: in unit variables {moving}; the limit "
                          "exists for 'mup' and 'meanfield' at depth 1 (the kernel-regime limit is the 'inf' row)")
    return UnitRates(s_u=float(sigma_w), s_v=float(sigma_a), eta_u=1.0, eta_v=1.0)


class Nodes(eqx.Module):
    """Weighted units: pre-activations ``z`` (N, n) at the training inputs and ``z_test`` (N, n_test) at the test
    inputs (their part in the span of the training inputs), readouts ``v`` (N, k), weights ``w`` (N,) summing to
    1, and the test inputs' independent part r: ``r_std`` (n_test,), its standard deviation."""

    z: Float[Array, "N n"]
    z_test: Float[Array, "N n_test"]
    v: Float[Array, "N k"]
    w: Float[Array, " N"]
    r_std: Float[Array, " n_test"]


def units_of(model: MLP, X: Float[Array, "n d"], X_test: Float[Array, "n_test d"] | None = None) -> tuple[Nodes, UnitRates]:
    """The m units of a depth-1 MLP as nodes of weight 1/m (u_i = W1_i, v_i = sqrt(m) a_i) and its unit rates at
    this width (eta_u = eta_1 / m, eta_v = eta_2; s_u, s_v are not used by the dynamics and set to NaN)."""
    if not isinstance(model, MLP) or model.depth != 1:
        raise ConfigError("units_of: the unit dynamics are those of a one-hidden-layer MLP (depth 1); deeper muP "
                          "nets need TP4 Secs. 6.2-7")
    m = model.width
    U = model.Ws[0]
    v = jnp.sqrt(jnp.asarray(m, U.dtype)) * model.a.reshape(m, -1)
    Xt = jnp.zeros((0, X.shape[1]), X.dtype) if X_test is None else X_test
    nodes = Nodes(z=U @ X.T, z_test=U @ Xt.T, v=v, w=jnp.full((m,), 1.0 / m, U.dtype),
                  r_std=jnp.zeros((Xt.shape[0],), U.dtype))
    return nodes, UnitRates(s_u=math.nan, s_v=math.nan, eta_u=model.lr(0) / m, eta_v=model.lr(-1))


class LimitSolution(eqx.Module):
    """The unit dynamics at the save times: f (T, n[, k]), f_test (T, n_test[, k]) or None, the kernel K2
    (T, N, N) over the N = n k samples that drives df/dt = -(1/n) K2 chi, the loss (T,); ``method``, ``points``
    (nodes per replicate) and ``replicates``; ``error``, the method's own estimate of max |f - fbar| over times
    and inputs (train and test): the trapezoidal rule at h against 2h, or the standard error over replicates
    (0 for a finite network's own units); ``stats``, the solver's."""

    ts: Float[Array, " T"]
    f: Float[Array, "T n *k"]
    f_test: Float[Array, "T n_test *k"] | None
    K2: Float[Array, "T N N"]
    loss: Float[Array, " T"]
    method: str = eqx.field(static=True)
    points: int = eqx.field(static=True)
    replicates: int = eqx.field(static=True)
    error: float = eqx.field(static=True)
    stats: dict = eqx.field(static=True)


def _readout(phi, zt, r_nodes, r_weights):
    """E_r phi(z + r) for every node and test input (N, n_test), r = r_std * xi on the one-dimensional rule
    (xi, omega); one test input at a time (N x rule nodes in memory)."""
    one = lambda zr: phi(zr[0][:, None] + zr[1][None, :]) @ r_weights  # noqa: E731
    return jax.lax.map(one, (zt.T, r_nodes)).T


def _train_outputs(state, args):
    z, _, v = state
    return jnp.einsum("p,pk,pa->ak", args["w"], v, args["phi"](z))


def _outputs(state, args):
    _, zt, v = state
    Ft = jnp.einsum("p,pk,pj->jk", args["w"], v, _readout(args["phi"], zt, args["r_nodes"], args["r_weights"]))
    return _train_outputs(state, args), Ft


def _chi(F, args):
    n = F.shape[0]
    loss: AbstractLoss = args["loss"]
    out = args["out_shape"]
    return loss.chi(F.reshape((n, *out)), args["y"]).reshape(n, -1)


def _unit_rhs(t, state, args, obs=None):
    """d(z, z_test, v)/dt of every node (module docstring); ``obs`` (n,) weighs the inputs' terms (default 1/n
    each; a minibatch B gives 1/B on its inputs and 0 elsewhere)."""
    z, zt, v = state
    phi = args["phi"]
    F = _train_outputs(state, args)
    n = z.shape[1]
    chi = _chi(F, args) * (jnp.full((n, 1), 1.0 / n, z.dtype) if obs is None else obs[:, None])
    c = phi.derivative(z) * (v @ chi.T)  # c_pb = phi'(z_pb) <chi_b, v_p> / n
    dz = -args["eta_u"] * (c @ args["G"])
    dzt = -args["eta_u"] * (c @ args["G_test"].T)
    dv = -args["eta_v"] * (phi(z) @ chi)
    return dz, dzt, dv


def _kernel(state, args):
    """K2 over samples s = a k + i: delta_ij eta_v E[phi_a phi_b] + eta_u (X X^T)_ab E[v_i v_j phi'_a phi'_b]."""
    z, _, v = state
    w, phi = args["w"], args["phi"]
    P = phi(z)
    n, k = z.shape[1], v.shape[1]
    Dv = (phi.derivative(z)[:, :, None] * v[:, None, :]).reshape(z.shape[0], n * k)
    B = ((Dv * w[:, None]).T @ Dv).reshape(n, k, n, k)
    A = (P * w[:, None]).T @ P
    K = args["eta_u"] * args["G"][:, None, :, None] * B + args["eta_v"] * A[:, None, :, None] * jnp.eye(k)[None, :, None, :]
    return K.reshape(n * k, n * k)


def _save(t, state, args):
    F, Ft = _outputs(state, args)
    n = F.shape[0]
    loss: AbstractLoss = args["loss"]
    out = args["out_shape"]
    return (F.reshape((n, *out)), Ft.reshape((Ft.shape[0], *out)), _kernel(state, args),
            loss.value(F.reshape((n, *out)), args["y"]))


def _args(nodes: Nodes, rates: UnitRates, X, X_test, y, loss, phi, out_shape, r_rule):
    Xt = jnp.zeros((0, X.shape[1]), X.dtype) if X_test is None else X_test
    xi, omega = r_rule
    return {"w": nodes.w, "phi": phi, "G": X @ X.T, "G_test": Xt @ X.T, "y": y, "loss": loss,
            "out_shape": tuple(out_shape), "eta_u": rates.eta_u, "eta_v": rates.eta_v,
            "r_nodes": nodes.r_std[:, None] * xi[None, :], "r_weights": omega}


def unit_flow(nodes: Nodes, rates: UnitRates, X: Float[Array, "n d"], y: Array, ts: Float[Array, " T"], *,
              activation: AbstractActivation | str = "tanh", loss: AbstractLoss | str = MSE(),
              out_shape: tuple[int, ...] = (), X_test: Float[Array, "n_test d"] | None = None,
              solver: SolverSettings = SolverSettings(solver="dopri8", rtol=1e-10, atol=1e-12),
              lr: float | None = None, steps: np.ndarray | None = None, batches: np.ndarray | None = None,
              r_rule=None):
    """The unit dynamics of the weighted ``nodes`` (module docstring) from t = 0, recorded at ``ts``: by Diffrax
    (gradient flow), or with a learning rate ``lr`` at the gradient-descent ``steps`` (forward Euler of the same
    ODE, which is gradient descent's own step in unit variables; on the batch of every step with ``batches``,
    :func:`nth.batch_schedule`). Returns (f, f_test, K2, loss) at the save times and the solver stats."""
    phi = make_activation(activation) if isinstance(activation, str) else activation
    loss = loss_from_spec(loss)
    if r_rule is None or not np.any(np.asarray(nodes.r_std)):  # no independent part: r = 0
        r_rule = (np.zeros(1), np.ones(1))
    args = _args(nodes, rates, X, X_test, y, loss, phi, out_shape, r_rule)
    state = (nodes.z, nodes.z_test, nodes.v)
    if lr is None:
        return integrate(_unit_rhs, state, args, ts, solver, save_fn=_save, what="muP limit (unit dynamics)")
    return (_euler(state, args, float(lr), np.asarray(steps), None if batches is None else np.asarray(batches)),
            {"num_steps": int(np.max(steps))})


def _euler(state, args, lr: float, steps: np.ndarray, batches: np.ndarray | None = None):
    """Gradient descent in unit variables, state <- state + lr * rhs (on the batch of every step where
    ``batches`` (S, B) is given: stochastic gradient descent), saved at ``steps``."""
    step = jax.jit(lambda s, obs: jax.tree_util.tree_map(lambda x, d: x + lr * d, s, _unit_rhs(0.0, s, args, obs)))
    n = state[0].shape[1]
    full = jnp.full((n,), 1.0 / n, state[0].dtype)
    saved, done = [], 0
    for s in steps:
        for i in range(done, int(s)):
            if batches is None:
                obs = full
            else:
                obs = jnp.zeros((n,), state[0].dtype).at[jnp.asarray(batches[i])].add(1.0 / batches.shape[1])
            state = step(state, obs)
        done = int(s)
        saved.append(_save(0.0, state, args))
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *saved)


def _trapezoid_1d(h: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the trapezoidal rule for E g(xi), xi ~ N(0, 1), step h on [-CUT, CUT] (weights
    normalized to sum 1)."""
    J = int(math.ceil(CUT / h))
    xi = h * np.arange(-J, J + 1, dtype=np.float64)
    w = np.exp(-0.5 * xi**2)
    return xi, w / w.sum()


def _tensor_rule(dim: int, h: float) -> tuple[np.ndarray, np.ndarray]:
    """The tensor trapezoidal rule for E g(xi), xi ~ N(0, I_dim): nodes (N, dim), weights (N,)."""
    xi, w = _trapezoid_1d(h)
    grids = np.meshgrid(*([xi] * dim), indexing="ij")
    weights = np.meshgrid(*([w] * dim), indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1), np.prod(np.stack([g.ravel() for g in weights]), axis=0)


def _antithetic(xi: np.ndarray, k: int) -> np.ndarray:
    """The points with their pairs v -> -v (the last k coordinates negated)."""
    flip = xi.copy()
    flip[:, -k:] *= -1
    return np.concatenate([xi, flip])


def _standard_normal_points(method: str, dim: int, k: int, points: int, seed: int) -> np.ndarray:
    """``points`` standard-normal points in dim dimensions, in antithetic pairs: scrambled Sobol (``sobol``) or
    random (``particles``)."""
    half = points // 2
    if method == "sobol":
        from scipy.special import ndtri
        from scipy.stats import qmc

        u = qmc.Sobol(d=dim, scramble=True, seed=np.random.default_rng(seed)).random_base2(int(math.log2(half)))
        xi = ndtri(np.clip(u, 2.0**-53, 1 - 2.0**-53))  # a 30-bit scrambled point may be exactly 0
    else:
        xi = np.random.default_rng(seed).standard_normal((half, dim))
    return _antithetic(xi, k)


def _range(X):
    """The range of X in sample space: eigenvalues and eigenvectors of X X^T and the mask of the nonzero ones."""
    X = np.asarray(X, dtype=np.float64)
    lam, Q = np.linalg.eigh(X @ X.T)
    return lam, Q, np.flatnonzero(lam > 1e-12 * max(lam.max(), 1e-300))


def limit_nodes(X, rates: UnitRates, k: int, xi: np.ndarray, weights: np.ndarray, X_test=None) -> Nodes:
    """Nodes of the initial law of the units (module docstring) at standard-normal points ``xi`` (N, rank(X) + k)
    with ``weights``: z = s_u (X X^T)^(1/2) on the range of X, v = s_v xi_v; a test input's part in the span of
    the training inputs, beta^T z with X^T beta its projection, and the std of the rest, s_u |x*_perp|."""
    X = np.asarray(X, dtype=np.float64)
    lam, Q, keep = _range(X)
    L = rates.s_u * Q[:, keep] * np.sqrt(lam[keep])  # (n, rho): z = L xi_z
    rho = keep.size
    z = xi[:, :rho] @ L.T
    v = rates.s_v * xi[:, rho:]
    if X_test is None:
        zt, r = np.zeros((xi.shape[0], 0)), np.zeros(0)
    else:
        Xt = np.asarray(X_test, dtype=np.float64)
        beta = np.linalg.lstsq(X.T, Xt.T, rcond=None)[0]  # (n, n_test): X^T beta = projection of x*
        zt = z @ beta
        r = rates.s_u * np.linalg.norm(Xt.T - X.T @ beta, axis=0)
    return Nodes(z=jnp.asarray(z), z_test=jnp.asarray(zt), v=jnp.asarray(v), w=jnp.asarray(weights),
                 r_std=jnp.asarray(r))


def limit_bytes(points: int, n: int, n_test: int, k: int, solver: str, rule: int = 1) -> int:
    """Bytes of one limit solve over ``points`` nodes: the node state (z, z_test, v) in the solver's copies, the
    weights, and the work of a right-hand side and of the kernel (a few (points, n k) arrays), in float64; the
    readout of a test input adds (points, ``rule``) per input at a time."""
    return 8 * points * ((SOLVER_COPIES[solver] + 1) * (n + n_test + k) + 4 * n * k + 1 + rule)


class LimitPlan(eqx.Module):
    """What a limit solve will do, decided before anything is allocated (:func:`plan_limit`): the ``method``
    (``auto`` resolved), the ``dimension`` rank(X) + k of a unit's initial law, the ``nodes`` per replicate and
    the predicted ``bytes`` of one solve."""

    method: str
    dimension: int
    nodes: int
    bytes: int


def plan_limit(X, out_shape: tuple[int, ...], n_test: int, *, method: str = "auto", points: int = 2**16,
               h: float = 0.2, solver: str = "dopri8", memory_budget: int | None = None) -> LimitPlan:
    """The plan of :func:`mup_limit` for inputs X (n, d) with ``n_test`` test inputs; refused (ConfigError,
    MemoryBudgetError) where the options are bad, the trapezoidal rule has too many nodes, or one solve would pass
    ``memory_budget`` (default: the device's). The engine calls it before a run's long stages."""
    check_limit_options(method, points, h)
    k = int(np.prod(out_shape)) if out_shape else 1
    dim = _range(X)[2].size + k
    if method == "auto":
        method = "trapezoid" if dim <= TRAPEZOID_MAX_DIM else "sobol"
    if method == "trapezoid":
        nodes = (2 * int(math.ceil(CUT / h)) + 1) ** dim
        if nodes > 2**23:
            raise ConfigError(f"the trapezoidal rule at h = {h:g} in {dim} dimensions (rank(X) + k) has {nodes} "
                              "nodes; use a larger --limit-h or --limit-method sobol")
        rule = _trapezoid_1d(h)[0].size
    else:
        nodes, rule = points, _trapezoid_1d(0.2)[0].size
    need = limit_bytes(nodes, X.shape[0], n_test, k, solver, rule)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    if need > budget:
        fix = "a larger step (--limit-h)" if method == "trapezoid" else "fewer points (--limit-points)"
        raise MemoryBudgetError(f"the {method} limit over {nodes} nodes needs about {format_bytes(need)}, over the "
                                f"memory budget {format_bytes(budget)}; use {fix} or raise the budget")
    return LimitPlan(method=method, dimension=dim, nodes=nodes, bytes=need)


def mup_limit(X: Float[Array, "n d"], y: Array, ts: Float[Array, " T"], rates: UnitRates, *,
              activation: AbstractActivation | str = "tanh", loss: AbstractLoss | str = MSE(),
              out_shape: tuple[int, ...] = (), X_test: Float[Array, "n_test d"] | None = None, method: str = "auto",
              h: float = 0.2, points: int = 2**16, replicates: int = 4, seed: int = 0, lr: float | None = None,
              steps: np.ndarray | None = None, batches: np.ndarray | None = None, memory_budget: int | None = None,
              solver: SolverSettings = SolverSettings(solver="dopri8", rtol=1e-10, atol=1e-12)) -> LimitSolution:
    """fbar, the m -> inf limit of a one-hidden-layer network with unit constants ``rates`` (:func:`limit_rates`),
    trained by gradient flow (or, with ``lr``, gradient descent at ``steps``, on ``batches`` for SGD) on (X, y)
    under ``loss``, with its kernel and loss at ``ts`` (docs/math.md section 12), in float64. ``method``:
    ``"trapezoid"`` (the tensor rule of step ``h`` in rank(X) + k dimensions, and the one-dimensional rule of the
    test inputs' independent part; the error estimated against both rules at step 2h), ``"sobol"`` or
    ``"particles"`` (``replicates`` independent sets of ``points`` antithetic points, a power of 2; the error is the
    standard error of their mean), ``"auto"``: trapezoid up to dimension 3, else sobol. The recorded ``error``
    bounds max |f - fbar| over times and inputs as the method estimates it (the ODE's own error is kept below it
    by the solver's tolerances). Planned by :func:`plan_limit` before anything is allocated."""
    where = "mup_limit"
    if (lr is None) != (steps is None):
        raise ConfigError(f"{where}: gradient descent needs both lr and steps (gradient flow: neither)")
    if lr is not None:
        steps = check_steps(steps, lr, where)
        if batches is not None:
            batches = check_batches(batches, X.shape[0], int(steps[-1]), where)
    elif batches is not None:
        raise ConfigError(f"{where}: batches are the minibatches of gradient descent; give lr and steps too")
    X = jnp.asarray(X, jnp.float64)
    X_test = None if X_test is None else jnp.asarray(X_test, jnp.float64)
    plan = plan_limit(X, out_shape, 0 if X_test is None else X_test.shape[0], method=method, points=points, h=h,
                      solver=solver.solver, memory_budget=memory_budget)
    k = plan.dimension - _range(X)[2].size
    if plan.method == "trapezoid":
        rules = [(_tensor_rule(plan.dimension, g), _trapezoid_1d(g)) for g in (h, 2 * h)]
    else:
        if not (isinstance(replicates, int) and replicates >= 2):
            raise ConfigError(f"replicates = {replicates!r} must be an integer >= 2 (the error needs two)")
        rules = [((_standard_normal_points(plan.method, plan.dimension, k, points, seed + i),
                   np.full(points, 1.0 / points)), _trapezoid_1d(0.2)) for i in range(replicates)]
    loss = loss_from_spec(loss)
    sols, stats = [], []
    for (xi, w), r_rule in rules:
        nodes = limit_nodes(X, rates, k, xi, w, X_test)
        ys, st = unit_flow(nodes, rates, X, y, ts, activation=activation, loss=loss, out_shape=out_shape,
                           X_test=X_test, solver=solver, lr=lr, steps=steps, batches=batches, r_rule=r_rule)
        sols.append([np.asarray(a) for a in ys])
        stats.append(st)
    flat = [np.concatenate([f.reshape(f.shape[0], -1), ft.reshape(ft.shape[0], -1)], axis=1) for f, ft, _, _ in sols]
    if plan.method == "trapezoid":  # the rule at h, its error against the rule at 2h
        error = float(np.max(np.abs(flat[0] - flat[1])))
        f, ft, K2, lo = sols[0]
        replicates = 1
    else:  # the mean of the replicates, its standard error; the loss of the mean outputs
        error = float(np.max(np.stack(flat).std(axis=0, ddof=1)) / math.sqrt(len(sols)))
        f, ft, K2 = (np.mean(np.stack([s[i] for s in sols]), axis=0) for i in range(3))
        lo = np.asarray(jax.vmap(lambda F: loss.value(F, y))(jnp.asarray(f)))
        replicates = len(sols)
    return LimitSolution(ts=jnp.asarray(check_times(ts)), f=jnp.asarray(f),
                         f_test=None if X_test is None else jnp.asarray(ft), K2=jnp.asarray(K2),
                         loss=jnp.asarray(lo), method=plan.method, points=int(rules[0][0][1].size),
                         replicates=replicates, error=error, stats=stats[0])


def linear_limit(X: Float[Array, "n d"], y: Array, ts: Float[Array, " T"], rates: UnitRates, *,
                 loss: AbstractLoss | str = MSE(), out_shape: tuple[int, ...] = (),
                 X_test: Float[Array, "n_test d"] | None = None,
                 solver: SolverSettings = SolverSettings(solver="dopri8", rtol=1e-12, atol=1e-14)):
    """The exact limit for linear phi (TP4 Corollary 6.2, App. D.1): the second moment P = E[(u, v)(u, v)^T] of a
    unit obeys dP/dt = M P + P M^T with M = -[[0, eta_u g], [eta_v g^T, 0]], g = X^T chi / n (d x k), from
    P0 = diag(s_u^2 I_d, s_v^2 I_k), and fbar_j(x) = x^T P[u, v_j]. Returns (f, f_test) at ``ts``."""
    loss = loss_from_spec(loss)
    X = jnp.asarray(X, jnp.float64)
    n, d = X.shape
    k = int(np.prod(out_shape)) if out_shape else 1
    Xt = jnp.zeros((0, d), X.dtype) if X_test is None else jnp.asarray(X_test, jnp.float64)
    P0 = jnp.diag(jnp.concatenate([jnp.full(d, rates.s_u**2), jnp.full(k, rates.s_v**2)]))
    args = {"X": X, "Xt": Xt, "y": y, "loss": loss, "out_shape": tuple(out_shape), "eta_u": rates.eta_u,
            "eta_v": rates.eta_v, "d": d}
    (f, ft), _ = integrate(_linear_rhs, P0, args, ts, solver, save_fn=_linear_save, what="linear muP limit")
    return f, (None if X_test is None else ft)


def _linear_outputs(P, args):
    d, X, Xt = args["d"], args["X"], args["Xt"]
    cross = P[:d, d:]  # (d, k) = E[u v^T]
    return X @ cross, Xt @ cross


def _linear_rhs(t, P, args):
    d = args["d"]
    F, _ = _linear_outputs(P, args)
    n = F.shape[0]
    chi = args["loss"].chi(F.reshape((n, *args["out_shape"])), args["y"]).reshape(n, -1)
    g = args["X"].T @ chi / n  # (d, k)
    k = g.shape[1]
    M = jnp.zeros((d + k, d + k), P.dtype)
    M = M.at[:d, d:].set(-args["eta_u"] * g).at[d:, :d].set(-args["eta_v"] * g.T)
    return M @ P + P @ M.T


def _linear_save(t, P, args):
    F, Ft = _linear_outputs(P, args)
    out = args["out_shape"]
    return F.reshape((F.shape[0], *out)), Ft.reshape((Ft.shape[0], *out))
