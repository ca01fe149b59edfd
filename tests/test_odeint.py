"""nth.dynamics._odeint: integrate against known solutions, its max-norm error control, batching of independent
problems, readable failures, and the validation of settings and save times."""

import re

import diffrax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
import scipy.linalg

import nth
from nth.dynamics._odeint import check_times, integrate

TS = np.linspace(0.0, 3.0, 7)


# Module-level right-hand sides and save functions, data through ``args`` (as integrate's docstring asks), so
# that one compiled solve serves every test with the same shapes.
def linear_rhs(t, y, args):
    """dy/dt = -s A y on both leaves of y = (vector, matrix)."""
    A, s = args
    v, M = y
    return (-s * (A @ v), -s * (A @ M))


def decay_rhs(t, y, args):
    """Two independent scalar decay rates, one per leaf."""
    a, b = args
    return (-a * y[0], -b * y[1])


def square_rhs(t, y, c):
    """dy/dt = c y^2: y = y0 / (1 - c y0 t) blows up at t = 1 / (c y0)."""
    return c * y * y


def save_state(t, y, args):
    return y


def save_probe(t, y, args):
    """save_fn decides what is saved: one entry of the big leaf and the whole small leaf."""
    return y[0][0], y[1]


def linear_problem():
    """A symmetric positive definite A (eigenvalues 0.5..3, not diagonal) and a (vector, matrix) initial state."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    A = Q @ np.diag([0.5, 1.0, 2.0, 3.0]) @ Q.T
    return A, (rng.normal(size=4), rng.normal(size=(4, 3)))


def expm_reference(A, s, y0, ts):
    """The exact solution expm(-s t A) y0 per leaf, by scipy's expm (independent of any ODE solver)."""
    E = [scipy.linalg.expm(-s * t * A) for t in ts]
    return np.stack([e @ y0[0] for e in E]), np.stack([e @ y0[1] for e in E])


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("solver", ["tsit5", "dopri5", "dopri8"])
def test_linear_decay_matches_expm(solver):
    """dy/dt = -A y on a pytree state (vector, matrix) equals expm(-tA) y0 at every saved time to ~1e-8 relative,
    at rtol 1e-10, for every solver nth offers (measured: tsit5 2e-12, dopri5 2e-12, dopri8 3e-10)."""
    A, y0 = linear_problem()
    settings = nth.SolverSettings(solver=solver, rtol=1e-10, atol=1e-12)
    ys, stats = integrate(linear_rhs, tuple(map(jnp.asarray, y0)), (jnp.asarray(A), jnp.asarray(1.0)), TS,
                          settings, save_fn=save_state)
    ref_v, ref_M = expm_reference(A, 1.0, y0, TS)
    assert ys[0].shape == (7, 4) and ys[1].shape == (7, 4, 3)
    assert rel(ys[0], ref_v) < 1e-8
    assert rel(ys[1], ref_M) < 1e-8
    assert rel(ys[0][0], y0[0]) == 0.0  # t = 0 is the initial state itself
    assert stats["num_steps"] > 0 and stats["num_steps"] == stats["num_accepted_steps"] + stats["num_rejected_steps"]


def test_max_norm_resolves_a_small_leaf_next_to_a_huge_one():
    """State (1e6 * y_big, y_small): a slowly decaying leaf of 10^4 entries of size 1e6 next to one fast scalar.
    Diffrax scales each entry's error by atol + rtol |y|, so the size does not matter but the count does: an
    RMS norm divides the fast scalar's error by ~sqrt(10^4), and under-resolves it (measured ~3e-8 relative
    at rtol 1e-10), while nth's max norm keeps it at the tolerance (~3e-10). docs/math.md section 6."""
    N, a, b = 10_000, 0.05, 2.0
    ts = np.linspace(0.0, 4.0, 5)
    y0 = (1e6 * jnp.ones(N), jnp.ones(()))
    args = (jnp.asarray(a), jnp.asarray(b))
    exact_small = np.exp(-b * ts)
    exact_big = 1e6 * np.exp(-a * ts)
    ys, _ = integrate(decay_rhs, y0, args, ts, nth.SolverSettings(rtol=1e-10, atol=1e-12), save_fn=save_probe)
    assert ys[0].shape == (5,) and ys[1].shape == (5,)  # only what save_fn picked was saved
    max_err = float(np.max(np.abs(np.asarray(ys[1]) - exact_small) / exact_small))
    assert max_err < 1e-8
    assert rel(ys[0], exact_big) < 1e-12
    # the same solve with diffrax's default RMS norm, everything else equal
    rms = diffrax.diffeqsolve(diffrax.ODETerm(decay_rhs), diffrax.Tsit5(), t0=0.0, t1=4.0, dt0=None, y0=y0, args=args,
                              saveat=diffrax.SaveAt(ts=jnp.asarray(ts), fn=save_probe), max_steps=100_000,
                              stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12, norm=optx.rms_norm))
    rms_err = float(np.max(np.abs(np.asarray(rms.ys[1]) - exact_small) / exact_small))
    assert rms_err > 1e-8
    assert rms_err > 20 * max_err


def batch_problem():
    """B = 3 independent linear decays: different initial states and rates s_b, shared A."""
    A, _ = linear_problem()
    rng = np.random.default_rng(1)
    v0, M0 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4, 3))
    return A, np.array([0.5, 1.0, 2.5]), (v0, M0)


def test_batch_equals_separate_solves():
    """batch_axes: three problems with different rates solved in one vmapped solve equal three separate solves
    to 1e-12 (each problem keeps its own step size: same step counts as alone), and match expm."""
    A, s, (v0, M0) = batch_problem()
    settings = nth.SolverSettings()
    ys, stats = integrate(linear_rhs, (jnp.asarray(v0), jnp.asarray(M0)), (jnp.asarray(A), jnp.asarray(s)), TS,
                          settings, save_fn=save_state, batch_axes=(None, 0), labels=["a", "b", "c"])
    assert ys[0].shape == (3, 7, 4) and ys[1].shape == (3, 7, 4, 3)
    assert isinstance(stats, list) and len(stats) == 3
    steps = []
    for b in range(3):
        one, st = integrate(linear_rhs, (jnp.asarray(v0[b]), jnp.asarray(M0[b])), (jnp.asarray(A), jnp.asarray(s[b])),
                            TS, settings, save_fn=save_state)
        assert rel(ys[0][b], one[0]) < 1e-12
        assert rel(ys[1][b], one[1]) < 1e-12
        assert stats[b]["num_steps"] == st["num_steps"]
        steps.append(st["num_steps"])
        ref = expm_reference(A, s[b], (v0[b], M0[b]), TS)
        assert rel(ys[0][b], ref[0]) < 1e-8 and rel(ys[1][b], ref[1]) < 1e-8
    assert len(set(steps)) == 3  # faster rates took more steps: the step sizes were not shared


def test_batch_of_one_is_the_unbatched_solve():
    """A batch of one is solved unbatched: exactly the same numbers (and stats) as the plain solve, with a
    leading axis of one."""
    A, s, (v0, M0) = batch_problem()
    settings = nth.SolverSettings()
    ys, stats = integrate(linear_rhs, (jnp.asarray(v0[1:2]), jnp.asarray(M0[1:2])),
                          (jnp.asarray(A), jnp.asarray(s[1:2])), TS, settings, save_fn=save_state,
                          batch_axes=(None, 0), labels=["only"])
    one, st = integrate(linear_rhs, (jnp.asarray(v0[1]), jnp.asarray(M0[1])), (jnp.asarray(A), jnp.asarray(s[1])),
                        TS, settings, save_fn=save_state)
    assert ys[0].shape == (1, 7, 4) and ys[1].shape == (1, 7, 4, 3)
    assert np.array_equal(np.asarray(ys[0][0]), np.asarray(one[0]))
    assert np.array_equal(np.asarray(ys[1][0]), np.asarray(one[1]))
    assert stats == [st]


def test_max_steps_raises_readable_error():
    """Too few steps: a SolverError that names the solve (``what``), max_steps and the hint with its value,
    instead of a silently truncated trajectory."""
    A, y0 = linear_problem()
    with pytest.raises(nth.SolverError) as e:
        integrate(linear_rhs, tuple(map(jnp.asarray, y0)), (jnp.asarray(A), jnp.asarray(1.0)), TS,
                  nth.SolverSettings(max_steps=5), save_fn=save_state, what="decay under test",
                  advice=" (advice appended)")
    msg = str(e.value)
    assert msg.startswith("decay under test solve failed before t = 3")
    assert "max_steps" in msg
    assert "Hint: raise max_steps (now 5)" in msg
    assert msg.endswith("(advice appended)")


def test_blow_up_raises_instead_of_returning_garbage():
    """dy/dt = y^2 from y0 = 1 blows up at t = 1 < t_max = 2: a SolverError (failed step or non-finite values),
    never a returned trajectory; a batch of one names its label."""
    with pytest.raises(nth.SolverError, match=r"blow-up solve (failed|produced .* non-finite)"):
        integrate(square_rhs, jnp.ones(()), jnp.asarray(1.0), [0.0, 0.5, 2.0], nth.SolverSettings(max_steps=4096),
                  save_fn=save_state, what="blow-up")
    with pytest.raises(nth.SolverError, match=re.escape("blow-up [seed 7] solve")):
        integrate(square_rhs, jnp.ones((1,)), jnp.asarray([1.0]), [0.0, 0.5, 2.0], nth.SolverSettings(max_steps=4096),
                  save_fn=save_state, what="blow-up", batch_axes=0, labels=["seed 7"])


def test_batch_failure_names_the_failing_problem():
    """In a batch, only the problem that blows up (c = 1: singular at t = 1) is named, by its label; the others
    (c = 0.1, 0.2: y(2) = 1.25, 1.67) are fine."""
    with pytest.raises(nth.SolverError) as e:
        integrate(square_rhs, jnp.ones(3), jnp.asarray([0.1, 1.0, 0.2]), [0.0, 0.5, 2.0],
                  nth.SolverSettings(max_steps=4096), save_fn=save_state, what="blow-up", batch_axes=0,
                  labels=["seed 0", "seed 1", "seed 2"])
    msg = str(e.value)
    assert "blow-up [seed 1]" in msg
    assert "seed 0" not in msg and "seed 2" not in msg


@pytest.mark.parametrize("kw, name", [
    (dict(solver="rk4"), "rk4"),
    (dict(rtol=0.0), "rtol = 0.0"),
    (dict(rtol=-1e-8), "rtol = -1e-08"),
    (dict(rtol=float("inf")), "rtol = inf"),
    (dict(atol=float("nan")), "atol = nan"),
    (dict(max_steps=0), "max_steps = 0"),
    (dict(max_steps=1.5), "max_steps = 1.5"),
    (dict(max_steps=True), "max_steps = True"),
])
def test_solver_settings_refuse_bad_values(kw, name):
    """SolverSettings checks itself when made: a ConfigError naming the bad value."""
    with pytest.raises(nth.ConfigError, match=re.escape(name)):
        nth.SolverSettings(**kw)


def test_solver_settings_accept_good_values():
    """The refusals above are not blanket: valid settings are kept and described."""
    s = nth.SolverSettings(solver="dopri8", rtol=1e-6, atol=1, max_steps=np.int64(10))
    assert s.describe() == "dopri8, rtol 1e-06, atol 1"
    with pytest.raises(nth.ConfigError, match="accepted: tsit5, dopri5, dopri8"):
        nth.SolverSettings(solver="Tsit5")


@pytest.mark.parametrize("ts, what", [
    (np.zeros((2, 2)) + [0.0, 1.0], "1-D"),
    ([], "non-empty"),
    ([0.0, 2.0, 1.0], "non-decreasing"),
    ([-1.0, 1.0], ">= 0"),
    ([0.0, float("nan")], "finite"),
    ([0.0, float("inf")], "finite"),
    ([0.0, 0.0], "t_max = 0"),
])
def test_check_times_refuses_bad_save_times(ts, what):
    """Save times must be a non-empty, finite, non-decreasing 1-D array from t >= 0 ending after 0."""
    with pytest.raises(nth.ConfigError, match=re.escape(what)):
        check_times(ts)


def test_check_times_accepts_and_integrate_checks():
    """Valid times come back as float64 (repeats allowed); integrate refuses bad times before solving."""
    out = check_times([0, 0, 1, 2.5])
    assert out.dtype == np.float64 and out.tolist() == [0.0, 0.0, 1.0, 2.5]
    assert check_times([0.5, 1.0]).tolist() == [0.5, 1.0]
    with pytest.raises(nth.ConfigError, match="non-decreasing"):
        integrate(square_rhs, jnp.ones(()), jnp.asarray(1.0), [0.0, 2.0, 1.0], nth.SolverSettings(),
                  save_fn=save_state)
