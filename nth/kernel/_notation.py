"""Correlation functions of derivative tensors: their notation, cluster graph and predicted width exponent
(docs/math.md section 8; DG Definition 1 and Conjecture 1).

A correlation function is written as factors separated by spaces. A factor is ``f(xK)``, optionally preceded
by derivative indices ``d{mu,nu,...}``: the derivative tensor T^(k)(x_K) = d^k f(x_K) / d theta_mu .. d theta_nu.
An index that appears in exactly two places is summed over every parameter (two factors; twice in one factor
is a trace over theta, a cycle); ``x1``, ``x2``, ... name distinct
random inputs (the same name twice is the same input). A network with k outputs is read on samples (input,
output): ``f[i](xK)`` is its output i = 1..k at x_K (DG Eq. 83), and every factor names its output. For
example::

    d{mu}f(x1) d{nu}f(x2) d{mu,nu}f(x3) f(x4)   =  sum_{mu,nu} E[ d_mu f(x1) d_nu f(x2) d_mu d_nu f(x3) f(x4) ]

The cluster graph has a vertex per factor and an edge per summed index. With n_e connected components of
even size, n_o of odd size and M factors, DG Conjecture 1 predicts C = O(m^s_C), s_C = n_e + n_o / 2 - M / 2,
and DG Lemma 6 a variance O(m^(2 s_C)) over initializations.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction

from ..errors import ConfigError

_FACTOR = re.compile(r"(?:d\{(?P<idx>[^{}]*)\})?f(?:\[(?P<out>[^\[\]]*)\])?\((?P<x>[^()]*)\)$")
_OUTPUT = re.compile(r"[1-9][0-9]*$")
_INDEX = re.compile(r"[A-Za-z][A-Za-z0-9_]*$")
_INPUT = re.compile(r"x([1-9][0-9]*)$")
#: Derivative order per factor nth accepts (nested JVPs cost about 2^k forward passes each).
MAX_ORDER = 6
#: Factors per function, and the largest input number, nth accepts (each factor is traced into the program).
MAX_FACTORS = 32
MAX_INPUT = 1000


@dataclasses.dataclass(frozen=True)
class Factor:
    """One derivative tensor T^(k)(x_input): its index names (k = len(indices)), its input number (1-based) and,
    for a network with several outputs, its output number (1-based; None for a scalar output)."""

    indices: tuple[str, ...]
    input: int
    output: int | None = None

    def __str__(self) -> str:
        out = "" if self.output is None else f"[{self.output}]"
        return (f"d{{{','.join(self.indices)}}}" if self.indices else "") + f"f{out}(x{self.input})"


@dataclasses.dataclass(frozen=True)
class CorrelationFunction:
    """A parsed correlation function (module docstring): its factors and the edges (index name, factor a,
    factor b) of its cluster graph, a < b, or a == b for an index used twice by one factor (a trace)."""

    factors: tuple[Factor, ...]
    edges: tuple[tuple[str, int, int], ...]

    def __str__(self) -> str:
        return " ".join(map(str, self.factors))

    @property
    def num_factors(self) -> int:
        """M: the number of derivative tensors in the product."""
        return len(self.factors)

    @property
    def num_outputs(self) -> int | None:
        """The largest output number the factors name, or None for a function of a scalar output."""
        named = [f.output for f in self.factors if f.output is not None]
        return max(named) if named else None

    @property
    def num_inputs(self) -> int:
        """The largest input number K (inputs x1..xK are drawn, also those no factor names)."""
        return max(f.input for f in self.factors)

    def _forest(self) -> tuple[list[int], tuple[str, ...]]:
        """Union-find over the edges in the order written: each factor's cluster representative, and the
        indices whose edge joins a factor to its own cluster (closing a cycle)."""
        parent = list(range(self.num_factors))

        def root(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        cycles = []
        for name, a, b in self.edges:
            ra, rb = root(a), root(b)
            if ra == rb:
                cycles.append(name)
            else:
                parent[ra] = rb
        return [root(i) for i in range(self.num_factors)], tuple(cycles)

    def components(self) -> list[list[int]]:
        """The connected components (clusters) of the cluster graph, as sorted lists of factor positions."""
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(self._forest()[0]):
            groups.setdefault(r, []).append(i)
        return sorted(groups.values())

    @property
    def n_e(self) -> int:
        """Number of clusters with an even number of factors."""
        return sum(len(c) % 2 == 0 for c in self.components())

    @property
    def n_o(self) -> int:
        """Number of clusters with an odd number of factors."""
        return sum(len(c) % 2 == 1 for c in self.components())

    @property
    def s_C(self) -> Fraction:
        """DG Conjecture 1, Eq. 4 (docs/math.md section 8): C = O(m^s_C) with s_C = n_e + n_o / 2 - M / 2."""
        return self.n_e + Fraction(self.n_o, 2) - Fraction(self.num_factors, 2)

    @property
    def cycle_edges(self) -> tuple[str, ...]:
        """Indices whose edge closes a cycle (a trace over theta: a self-loop, a repeated pair, a longer loop),
        in the order a spanning forest built from the edges in order meets them; empty for a forest (the cut
        indices become probes, docs/math.md section 8.1)."""
        return self._forest()[1]

    @property
    def is_forest(self) -> bool:
        """Whether the contraction pattern has no cycle, so that one draw is evaluated exactly by directional
        derivatives (docs/math.md section 8)."""
        return not self.cycle_edges

    def summary(self) -> dict[str, object]:
        """The prediction as plain values: factors, n_e, n_o, s_C (DG Conjecture 1) and the variance exponent 2 s_C
        (DG Lemma 6), as floats and exact strings."""
        return {"function": str(self), "factors": self.num_factors, "n_e": self.n_e, "n_o": self.n_o,
                "s_C": float(self.s_C), "s_C_exact": str(self.s_C), "variance_exponent": float(2 * self.s_C),
                "clusters": [[str(self.factors[i]) for i in c] for c in self.components()],
                "forest": self.is_forest}


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"correlation function {text!r}: {why}")


def canonical(text: str) -> str:
    """The function as nth writes it (single spaces), checked: ``parse(text)`` with cycles allowed, printed."""
    return str(parse(text, allow_cycles=True))


def parse(text: str, *, allow_cycles: bool = False) -> CorrelationFunction:
    """Parse the notation of the module docstring; refuse malformed factors, indices used once or more than
    twice, and (unless ``allow_cycles``, for an estimate by random probes) contraction patterns with cycles,
    each with a one-line reason (the notation and its refusals: docs/math.md section 8.1)."""
    if not isinstance(text, str):
        raise ConfigError(f"a correlation function must be a string such as 'd{{mu}}f(x1) d{{mu}}f(x2)', "
                          f"not {type(text).__name__}")
    words = text.split()
    if not words:
        raise _bad(text, "it has no factors; write factors such as 'f(x1) f(x2)' or 'd{mu}f(x1) d{mu}f(x2)'")
    if len(words) > MAX_FACTORS:
        raise _bad(text, f"it has {len(words)} factors; at most {MAX_FACTORS} are supported")
    factors: list[Factor] = []
    for pos, word in enumerate(words, 1):
        m = _FACTOR.match(word)
        if m is None:
            raise _bad(text, f"factor {pos} {word!r} is not of the form f(xK), d{{mu,nu,...}}f(xK) or, with several "
                             "outputs, d{mu,...}f[i](xK) (no spaces inside a factor)")
        if m["out"] is not None and not _OUTPUT.match(m["out"]):
            raise _bad(text, f"factor {pos} {word!r}: the output {m['out']!r} must be a positive integer i = 1..k "
                             "(f[1](x1) is output 1 at x1)")
        xm = _INPUT.match(m["x"])
        if xm is None or int(xm[1]) > MAX_INPUT:
            raise _bad(text, f"factor {pos} {word!r}: the input {m['x']!r} must be x1, x2, ..., x{MAX_INPUT} (x "
                             "followed by a positive integer without leading zeros)")
        idx: tuple[str, ...] = ()
        if m["idx"] is not None:
            if not m["idx"]:
                raise _bad(text, f"factor {pos} {word!r}: d{{}} names no index; write f(xK) for no derivative")
            idx = tuple(s.strip() for s in m["idx"].split(","))
            for name in idx:
                if not _INDEX.match(name):
                    raise _bad(text, f"factor {pos} {word!r}: index {name!r} is not a name (ASCII letters, digits "
                                     "and _, starting with a letter)")
            if len(idx) > MAX_ORDER:
                raise _bad(text, f"factor {pos} {word!r} has {len(idx)} derivatives; at most {MAX_ORDER} are "
                                 "supported")
        factors.append(Factor(idx, int(xm[1]), None if m["out"] is None else int(m["out"])))
    if len({f.output is None for f in factors}) > 1:
        raise _bad(text, "some factors name an output (f[i](xK)) and some do not; with several outputs every factor "
                         "names one")
    where: dict[str, list[int]] = {}
    for i, fac in enumerate(factors):
        for name in fac.indices:
            where.setdefault(name, []).append(i)
    edges = []
    for name, places in where.items():
        if len(places) == 1:
            raise _bad(text, f"index {name!r} appears once (factor {places[0] + 1}); every index must appear in "
                             "exactly two places, where it is summed")
        if len(places) > 2:
            raise _bad(text, f"index {name!r} appears {len(places)} times; every index must appear in exactly "
                             "two places")
        edges.append((name, places[0], places[1]))
    corr = CorrelationFunction(tuple(factors), tuple(edges))
    if not allow_cycles and not corr.is_forest:
        cyc = corr.cycle_edges
        raise _bad(text, f"the contraction of {', '.join(map(repr, cyc))} closes a cycle (a trace over all "
                         "parameters), which one draw cannot give exactly; estimate it with random probes "
                         "(--probes N) or choose a pattern without cycles")
    return corr
