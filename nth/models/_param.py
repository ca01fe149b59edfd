"""abc-parametrizations (TP4 Section 3.2, Table 1) and their exact mapping onto nth's network.

TP4 writes an L-hidden-layer MLP as h^1 = W^1 xi, x^l = phi(h^l), h^(l+1) = W^(l+1) x^l, f = W^(L+1) x^L with
W^l = n^(-a_l) w^l, trainable w^l_ij ~ N(0, n^(-2 b_l)) and learning rate eta n^(-c) (n = width). nth's network
(docs/math.md section 1) puts 1/sqrt(m) between layers instead, h^(l) = W^(l) x^(l-1), x^(l) = phi(h^(l))/sqrt(m),
f = a^T x^(H), and trains theta = (W^(1), .., W^(H), a). Write s_l = 0 for l = 1 and 1/2 for l >= 2 (the
power of m absorbed into nth's weights: W_TP4^l = m^(-s_l) theta_l). Then theta_l = m^(s_l - a_l) w^l, and
TP4's gradient flow dw^l/dt = -m^(-c) grad_(w^l) L is, exactly,

    d theta_l / dt = -eta_l grad_(theta_l) L,    eta_l = m^(2 (s_l - a_l) - c),
    theta_l(0) ~ N(0, sigma_l^2 m^(2 (s_l - a_l - b_l))),

with sigma_l = sigma_w (hidden) or sigma_a (output). So an abc-parametrization is nth's network with
per-layer learning rates eta_l and per-layer initial scales; every kernel of the hierarchy then uses the
weighted inner product <u, v>_eta = sum_l eta_l <u_l, v_l> (the flow direction of theta is
-eta . grad L), and the equations of docs/math.md section 2 keep their form. NTK parametrization is
eta_l = 1 with unit scales: nth's default network unchanged.

The classification (TP4 Definition 3.2, Theorems 3.3, 3.4, 3.6, 3.8) is computed in exact rational
arithmetic from (a, b, c).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from ..errors import ConfigError

PRESETS = ("ntk", "standard", "mup", "meanfield")
_HALF = Fraction(1, 2)


@dataclasses.dataclass(frozen=True)
class ABC:
    """An abc-parametrization of a depth-L MLP (TP4 Eq. 1): exponents a_l, b_l for l = 1..L+1 and c.

    ``a[l-1]`` and ``b[l-1]`` belong to layer l (``a[-1]``, ``b[-1]`` to the output layer W^(L+1)).
    """

    name: str
    a: tuple[Fraction, ...]
    b: tuple[Fraction, ...]
    c: Fraction

    @property
    def depth(self) -> int:
        return len(self.a) - 1

    # --- TP4 quantities -------------------------------------------------------------------------------
    @property
    def r(self) -> Fraction:
        """r = min(a_(L+1) + b_(L+1), 2 a_(L+1) + c) + c - 1 + min_l [2 a_l + I(l = 1)] (TP4 Definition 3.2):
        Delta x^L_t = Theta(n^-r)."""
        aL, bL, c = self.a[-1], self.b[-1], self.c
        hidden = min(2 * self.a[l] + (1 if l == 0 else 0) for l in range(self.depth))
        return min(aL + bL, 2 * aL + self.c) + c - 1 + hidden

    @property
    def stable(self) -> bool:
        """TP4 Theorem 3.3: a_1 + b_1 = 0; a_l + b_l = 1/2 (2 <= l <= L); a_(L+1) + b_(L+1) >= 1/2; r >= 0;
        2 a_(L+1) + c >= 1; a_(L+1) + b_(L+1) + r >= 1."""
        a, b, L = self.a, self.b, self.depth
        init = a[0] + b[0] == 0 and all(a[l] + b[l] == _HALF for l in range(1, L)) and a[L] + b[L] >= _HALF
        return init and self.r >= 0 and 2 * a[L] + self.c >= 1 and a[L] + b[L] + self.r >= 1

    @property
    def nontrivial(self) -> bool:
        """TP4 Theorem 3.4 (for a stable parametrization): a_(L+1) + b_(L+1) + r = 1 or 2 a_(L+1) + c = 1."""
        L = self.depth
        return self.stable and (self.a[L] + self.b[L] + self.r == 1 or 2 * self.a[L] + self.c == 1)

    @property
    def feature_learning(self) -> bool:
        """TP4 Theorem 3.6: a nontrivial stable parametrization learns features iff r = 0."""
        return self.nontrivial and self.r == 0

    @property
    def kernel_regime(self) -> bool:
        """TP4 Theorem 3.8: a nontrivial stable parametrization is in the kernel regime iff r > 0."""
        return self.nontrivial and self.r > 0

    def regime(self) -> str:
        if not self.stable:
            return "unstable"
        if not self.nontrivial:
            return "trivial"
        return "feature learning" if self.feature_learning else "kernel regime"

    # --- mapping onto nth's network ---------------------------------------------------------------------
    def _s(self, l: int) -> Fraction:
        return Fraction(0) if l == 0 else _HALF

    def lr_exponents(self) -> tuple[Fraction, ...]:
        """e_l with eta_l = m^(e_l): e_l = 2 (s_l - a_l) - c, for W^(1)..W^(L) and a (module docstring)."""
        return tuple(2 * (self._s(l) - self.a[l]) - self.c for l in range(self.depth + 1))

    def init_exponents(self) -> tuple[Fraction, ...]:
        """g_l with std(theta_l) = sigma_l m^(g_l): g_l = s_l - a_l - b_l."""
        return tuple(self._s(l) - self.a[l] - self.b[l] for l in range(self.depth + 1))

    def lrs(self, width: int) -> tuple[float, ...]:
        """Per-layer learning rates eta_l = m^(e_l) of nth's network at this width."""
        return tuple(float(width) ** float(e) for e in self.lr_exponents())

    def init_scales(self, width: int) -> tuple[float, ...]:
        """Per-layer multipliers m^(g_l) of the initial standard deviations sigma_w, ..., sigma_w, sigma_a."""
        return tuple(float(width) ** float(g) for g in self.init_exponents())

    @property
    def has_kernel_limit(self) -> bool:
        """Kernel regime (TP4 Theorem 3.8) with an O(1) output layer at initialization and no learning rate that
        grows with width: training follows a deterministic limiting kernel (NTK and standard here)."""
        return self.kernel_regime and self.init_exponents()[-1] == 0 and all(e <= 0 for e in self.lr_exponents())

    def unit_exponents(self) -> tuple[Fraction, Fraction, Fraction, Fraction]:
        """At depth 1, the powers of m in the unit constants (s_u, s_v, eta_u, eta_v) of docs/math.md section 12:
        in unit variables u = W1, v = sqrt(m) a the network is f = (1/m) sum_i v_i phi(<u_i, x>), theta_l(0) has
        std sigma_l m^(g_l) and rate m^(e_l), so u has std m^(g_1) and rate m^(e_1 - 1) (the readout's 1/m), v std
        m^(g_2 + 1/2) and rate m^(e_2)."""
        if self.depth != 1:
            raise ConfigError(f"unit variables describe one hidden layer, not depth {self.depth}")
        g, e = self.init_exponents(), self.lr_exponents()
        return g[0], g[1] + _HALF, e[0] - 1, e[1]

    @property
    def has_mean_field_limit(self) -> bool:
        """One hidden layer whose unit constants do not move with m (muP and mean-field): the law of the units,
        and with it f, has the limit of docs/math.md section 12 (TP4 Theorem 6.1)."""
        return self.depth == 1 and all(x == 0 for x in self.unit_exponents())

    def limit_lrs(self) -> tuple[float, ...]:
        """lim_(m -> inf) eta_l: the per-layer weights of the limiting kernel Kbar^(2) (0 or 1 per layer).

        Raises ConfigError unless :attr:`has_kernel_limit` (elsewhere the kernel has no deterministic limit that
        training follows, TP4 Theorem 3.8).
        """
        if not self.has_kernel_limit:
            raise ConfigError(
                f"parametrization {self.name!r} ({self.regime()}, r = {self.r}) has no limiting kernel that training "
                "follows (TP4 Theorem 3.8: only nontrivial stable parametrizations with r > 0 are in the kernel "
                "regime); use param 'ntk' or 'standard'")
        return tuple(1.0 if e == 0 else 0.0 for e in self.lr_exponents())

    def table_row(self) -> dict[str, object]:
        """The TP4 Table 1 quantities and nth's mapping, as plain values (for printing and HDF5 attributes)."""
        L = self.depth
        return {"param": self.name, "depth": L, "a": [str(v) for v in self.a], "b": [str(v) for v in self.b],
                "c": str(self.c), "r": str(self.r), "2a_out+c": str(2 * self.a[L] + self.c),
                "a_out+b_out+r": str(self.a[L] + self.b[L] + self.r), "stable": self.stable,
                "nontrivial": self.nontrivial, "feature_learning": self.feature_learning,
                "kernel_regime": self.kernel_regime, "regime": self.regime(),
                "eta_exponents": [str(e) for e in self.lr_exponents()],
                "init_exponents": [str(g) for g in self.init_exponents()]}


def preset(name: str, depth: int) -> ABC:
    """TP4 Table 1 for a depth-``depth`` MLP: ``ntk`` (NTP), ``standard`` (SP with learning rate 1/n), ``mup``
    (maximal update) and ``meanfield`` (MFP, one hidden layer only).

    ========== ============================== ============================ ======
    preset     a_l (l = 1, 2..L, L+1)          b_l (l = 1, 2..L, L+1)        c
    ========== ============================== ============================ ======
    standard   0, 0, 0                         0, 1/2, 1/2                  1
    ntk        0, 1/2, 1/2                     0, 0, 0                      0
    meanfield  0, -, 1  (L = 1)                0, -, 0                      -1
    mup        -1/2, 0, 1/2                    1/2, 1/2, 1/2                0
    ========== ============================== ============================ ======
    """
    if not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"depth = {depth!r} must be a positive integer")
    L, h, z = depth, _HALF, Fraction(0)
    if name == "ntk":
        a, b, c = (z,) + (h,) * L, (z,) * (L + 1), z
    elif name == "standard":
        a, b, c = (z,) * (L + 1), (z,) + (h,) * L, Fraction(1)
    elif name == "mup":
        a, b, c = (-h,) + (z,) * (L - 1) + (h,), (h,) * (L + 1), z
    elif name == "meanfield":
        if L != 1:
            raise ConfigError(f"param 'meanfield' is defined for one hidden layer (TP4 Table 1), not depth {L}; "
                              "use param 'mup', which coincides with it at depth 1 and extends it to any depth")
        a, b, c = (z, Fraction(1)), (z, z), Fraction(-1)
    else:
        check_param(name)
    return ABC(name=name, a=a, b=b, c=c)


def check_param(name: str) -> None:
    """Refuse an unknown preset name before any work is done."""
    if name not in PRESETS:
        raise ConfigError(f"param {name!r} is not known; accepted: {', '.join(PRESETS)}")


def format_table(depth: int) -> str:
    """TP4 Table 1 for this depth as nth computes it (``nth params``), with the eta_l / init mapping."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ConfigError(f"depth = {depth!r} must be a positive integer (hidden layers L >= 1)")
    rows = []
    for name in PRESETS:
        try:
            rows.append(preset(name, depth).table_row())
        except ConfigError:
            continue
    head = (f"{'param':>10} {'c':>4} {'r':>5} {'2a+c':>5} {'a+b+r':>6} {'stable':>7} {'nontriv':>8} "
            f"{'regime':>17}   eta_l = m^e (W1..W{depth}, a)   init std x m^g")
    lines = [f"abc-parametrizations of a depth-{depth} MLP (TP4 Table 1; nth's mapping in nth/models/_param.py)", head]
    for r in rows:
        lines.append(f"{r['param']:>10} {r['c']:>4} {r['r']:>5} {r['2a_out+c']:>5} {r['a_out+b_out+r']:>6} "
                     f"{'yes' if r['stable'] else 'no':>7} {'yes' if r['nontrivial'] else 'no':>8} "
                     f"{r['regime']:>17}   e = ({', '.join(r['eta_exponents'])})   g = ({', '.join(r['init_exponents'])})")
    return "\n".join(lines)


