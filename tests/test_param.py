"""abc-parametrizations (TP4 Section 3.2, Table 1): classification, nth's mapping, and the dynamical dichotomy."""

from fractions import Fraction as F

import jax.numpy as jnp
import numpy as np
import pytest

import nth
from nth.errors import ConfigError
from nth.models._param import ABC, format_table, preset

# TP4 Table 1, transcribed: r, 2a_(L+1) + c, a_(L+1) + b_(L+1) + r, nontrivial, stable, feature learning, kernel regime
TABLE1 = {
    "standard": (F(1, 2), 1, 1, True, True, False, True),
    "ntk": (F(1, 2), 1, 1, True, True, False, True),
    "meanfield": (F(0), 1, 1, True, True, True, False),
    "mup": (F(0), 1, 1, True, True, True, False),
}


@pytest.mark.parametrize("name", list(TABLE1))
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_presets_reproduce_tp4_table1(name, depth):
    if name == "meanfield" and depth > 1:
        with pytest.raises(ConfigError, match="one hidden layer"):
            preset(name, depth)
        return
    p = preset(name, depth)
    L = depth
    r, twoa_c, abr, nontrivial, stable, fl, kr = TABLE1[name]
    if name == "standard" and depth == 1:
        # Table 1's SP column is for L >= 2: at L = 1, Definition 3.2 gives r = 3/2 (the first layer is the only
        # hidden one and its learning rate is 1/m), still stable, nontrivial and in the kernel regime
        r, abr = F(3, 2), 2
    assert p.r == r
    assert 2 * p.a[L] + p.c == twoa_c and p.a[L] + p.b[L] + p.r == abr
    assert (p.nontrivial, p.stable, p.feature_learning, p.kernel_regime) == (nontrivial, stable, fl, kr)


def test_mapping_onto_nth_network():
    """eta_l = m^(2(s_l - a_l) - c) and std multipliers m^(s_l - a_l - b_l) with s = (0, 1/2, ..., 1/2)."""
    m = 256
    assert preset("ntk", 3).lrs(m) == (1.0,) * 4 and preset("ntk", 3).init_scales(m) == (1.0,) * 4
    assert preset("standard", 2).lrs(m) == pytest.approx((1 / m, 1.0, 1.0))
    assert preset("mup", 3).lrs(m) == pytest.approx((m, m, m, 1.0))
    assert preset("mup", 3).init_scales(m) == pytest.approx((1.0, 1.0, 1.0, m**-0.5))
    # at one hidden layer muP and mean field are the same network trained the same way
    mf, mup = preset("meanfield", 1), preset("mup", 1)
    assert mf.lr_exponents() == mup.lr_exponents() and mf.init_exponents() == mup.init_exponents()


def test_symmetry_leaves_the_mapping_unchanged():
    """TP4 Eq. (5): a_l += theta, b_l -= theta, c -= 2 theta changes nothing, so nth's eta_l and scales agree."""
    p = preset("mup", 2)
    th = F(1, 4)
    q = ABC("shifted", tuple(a + th for a in p.a), tuple(b - th for b in p.b), p.c - 2 * th)
    assert q.lr_exponents() == p.lr_exponents() and q.init_exponents() == p.init_exponents()
    assert (q.r, q.stable, q.feature_learning) == (p.r, p.stable, p.feature_learning)


def test_classification_can_say_no():
    ntk = preset("ntk", 2)
    trivial = ABC("ntk-lr/m", ntk.a, ntk.b, F(1))  # learning rate 1/m: f never moves in the limit
    assert trivial.stable and not trivial.nontrivial and trivial.regime() == "trivial"
    unstable = ABC("ntk-lr*m", ntk.a, ntk.b, F(-1))  # learning rate m: features blow up (r < 0)
    assert unstable.r < 0 and not unstable.stable and unstable.regime() == "unstable"
    with pytest.raises(ConfigError, match="no limiting kernel"):
        trivial.limit_lrs()


def test_params_table_text_and_refusals():
    text = format_table(2)
    assert "mup" in text and "feature learning" in text and "meanfield" not in text
    with pytest.raises(ConfigError, match="accepted: ntk, standard, mup, meanfield"):
        preset("sp", 2)
    with pytest.raises(ConfigError, match="param 'xx'"):
        nth.init_mlp(0, 3, 8, 1, param="xx")
    with pytest.raises(ConfigError, match="no limiting kernel"):
        nth.SolveConfig(param="mup", infinite=True).validate()
    with pytest.raises(ConfigError, match="one hidden layer"):
        nth.SolveConfig(param="meanfield", depth=2).validate()


def _movement(param, m, seed, X, y):
    net = nth.init_mlp(seed, X.shape[1], m, 1, "tanh", param=param)
    flow = nth.gradient_flow(net, X, y, jnp.linspace(0.0, 4.0, 3),
                             solver=nth.SolverSettings(solver="dopri8", rtol=1e-8, atol=1e-10))
    return float(jnp.abs(flow.K2 - flow.K2[0]).max())


def test_dynamical_dichotomy_kernel_movement():
    """TP4 Theorems 3.6/3.8: under ntk the NTK moves by O(1/m) (slope -1 in width); under muP by O(1) (slope 0).
    The committed sweep (scripts/dichotomy.sh, results/dichotomy.png) shows the same with the NTH errors."""
    data = nth.default_problem(n=6, d=4, seed=1)
    X, y = jnp.asarray(data.X), jnp.asarray(data.y)
    widths = (64, 256, 1024, 4096)
    slopes = {}
    for param in ("ntk", "mup"):
        g = [nth.geometric_mean(np.asarray([_movement(param, m, 100 * i + s, X, y) for s in range(12)]))
             for i, m in enumerate(widths)]
        slopes[param] = nth.fit_slope(widths, g)[0]
    assert abs(slopes["ntk"] + 1) < 0.2 and abs(slopes["mup"]) < 0.2, slopes
