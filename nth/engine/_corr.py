"""Monte Carlo over initializations of correlation functions of derivative tensors (docs/math.md sections 8 and
8.1).

A :class:`CorrConfig` names the functions (notation of :mod:`nth.kernel._notation`), the network (DG Eq. 2 =
docs/math.md section 1, the model part :class:`~nth.models.ModelSpec` of every run: depth, activation, weight
scales, seed; and its own input dimension and Gaussian or Rademacher weights, and ``outputs`` k:
with k > 1 the functions are read on samples (input, output), ``f[i](xK)``, DG Eq. 83), the widths and the
number of draws. Input xK is N(0, I_d) from its own key (``input_seed``, K), so it is the same in every
run, width and function. Draw i at width m has its own key (``seed``, m, i), so any range of draws can be computed
again, or added later, with the same numbers. Draws go in vmapped batches (one compiled call per batch,
sharded over devices along the draw axis), every function on the same initializations.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._cluster import from_writer, shared_map
from .._composed import Composed, part
from .._precision import enable_float64
from ..checks import check_seed
from ..compare import moment_fits
from ..errors import ConfigError, MemoryBudgetError
from ..kernel import CorrelationFunction, canonical_correlation as canonical, correlation_value, default_memory_budget
from ..kernel import device_mesh, format_bytes, parse_correlation as parse
from ..models import ACTIVATIONS, ModelSpec, activation as make_activation, check_init, draw_mlp
from ..models import num_params as model_params

#: Activations a measurement accepts: every one nth has, but softplus (whose sharpness is not a CorrConfig field).
CORR_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a != "softplus")
#: The largest batch of draws evaluated by one compiled call.
MAX_BATCH = 64
#: Draws per width and probes per draw accepted (probes are traced one by one into the program).
MAX_DRAWS = 10**8
MAX_PROBES = 64


def _is_int(val, lo: int, hi: int | None = None) -> bool:
    """A Python int (numpy integers are converted by CorrConfig) in lo..hi, not a bool."""
    return isinstance(val, int) and not isinstance(val, bool) and val >= lo and (hi is None or val <= hi)


#: The options of the model part a measurement reads (the MLP of DG Eq. 2); the others keep their defaults.
NETWORK_OPTIONS = ("depth", "activation", "sigma_w", "sigma_a", "seed", "outputs")


@dataclasses.dataclass(frozen=True, init=False)
class CorrConfig(Composed):
    """A correlation-function measurement (module docstring): a ``network`` (:class:`~nth.models.ModelSpec`, the
    MLP of depth 3 by default, as DG; its fields are also given and read by their own names, ``depth=2``,
    ``cfg.activation``) with inputs of dimension ``in_dim`` and ``init`` weights, and the measurement's own
    fields. ``seed`` (the network's) keys the draws. ``probes`` > 0 estimates patterns with cycles by
    that many Hutchinson probes per draw (docs/math.md section 8). ``integrate_output`` replaces, for every
    function made of plain outputs f(xK) only, each draw's value by its exact expectation over the Gaussian
    output weights given the hidden ones (Isserlis; docs/math.md section 8.1): the same mean, a much smaller
    spread, and no longer the integrand's own variance. ``batch``, ``devices`` and ``memory_budget`` change how
    the draws are computed, never their values."""

    network: ModelSpec = part(ModelSpec, depth=3)
    functions: tuple[str, ...]
    widths: tuple[int, ...] = (128, 256, 512, 1024)
    draws: int = 1000
    in_dim: int = 4
    init: str = "gaussian"
    input_seed: int = 0
    probes: int = 0
    integrate_output: bool = False
    batch: int | None = None
    devices: int | None = None
    memory_budget: int | None = None

    def __init__(self, **kwargs):
        """NumPy scalars and lists are taken as the Python values they hold (the file records JSON); a lone
        string of functions stays a string, to be refused by :meth:`validate`."""
        def plain(k, v):
            if isinstance(v, np.integer) and not isinstance(v, bool):
                return int(v)
            if isinstance(v, np.floating):
                return float(v)
            if isinstance(v, (list, tuple)) and k in ("functions", "widths"):
                return tuple(int(w) if isinstance(w, np.integer) else w for w in v)
            return v
        super().__init__(**{k: plain(k, v) for k, v in kwargs.items()})

    @property
    def num_outputs(self) -> int:
        """k, the network's outputs per input."""
        return self.network.outputs or 1

    def parsed(self) -> tuple[CorrelationFunction, ...]:
        return tuple(parse(f, allow_cycles=self.probes > 0) for f in self.functions)

    def validate(self) -> tuple[CorrelationFunction, ...]:
        if not isinstance(self.functions, tuple) or not self.functions:
            raise ConfigError("functions must be a non-empty tuple of correlation functions, e.g. "
                              "('d{mu}f(x1) d{mu}f(x2)',)")
        if not isinstance(self.widths, tuple) or not self.widths or not all(_is_int(w, 1) for w in self.widths):
            raise ConfigError(f"widths = {self.widths!r} must be a non-empty list of positive integers")
        if len(set(self.widths)) != len(self.widths):
            raise ConfigError(f"widths = {list(self.widths)} contain duplicates")
        for name, val, lo, hi in (("draws", self.draws, 2, MAX_DRAWS), ("depth", self.depth, 1, None),
                                  ("in_dim", self.in_dim, 1, None), ("probes", self.probes, 0, MAX_PROBES),
                                  ("outputs", self.num_outputs, 1, None)):
            if not _is_int(val, lo, hi):
                raise ConfigError(f"{name} = {val!r} must be an integer >= {lo}"
                                  + (f" and <= {hi}" if hi is not None else ""))
        if self.activation not in CORR_ACTIVATIONS:
            raise ConfigError(f"activation = {self.activation!r}; accepted: {', '.join(CORR_ACTIVATIONS)}")
        fixed = ModelSpec()
        for f in dataclasses.fields(ModelSpec):
            if f.name not in NETWORK_OPTIONS and getattr(self.network, f.name) != getattr(fixed, f.name):
                raise ConfigError(f"{f.name} = {getattr(self.network, f.name)!r}: a measurement draws the MLP of DG Eq. "
                                  f"2, set by {', '.join(NETWORK_OPTIONS)} (and in_dim, init); leave {f.name} out")
        check_init(self.init)
        if isinstance(self.sigma_w, bool) or isinstance(self.sigma_a, bool):
            raise ConfigError(f"sigma_w = {self.sigma_w!r}, sigma_a = {self.sigma_a!r} must be numbers, not booleans")
        self.network.validate(2)
        check_seed("input_seed", self.input_seed)
        for name, val in (("batch", self.batch), ("devices", self.devices), ("memory_budget", self.memory_budget)):
            if val is not None and not _is_int(val, 1):
                raise ConfigError(f"{name} = {val!r} must be a positive integer (or None for the default)")
        corrs = self.parsed()
        outputs = self.num_outputs
        for c in corrs:
            k = c.num_outputs
            if outputs == 1 and k is not None:
                raise ConfigError(f"{c}: names output {k} (f[i](xK)); the network has one output, so write f(xK), or "
                                  "give it outputs with --outputs K")
            if outputs > 1 and k is None:
                raise ConfigError(f"{c}: the network has {outputs} outputs; name one in every factor, "
                                  "f[i](xK) or d{mu}f[i](xK) with i = 1.." + str(outputs))
            if k is not None and k > outputs:
                raise ConfigError(f"{c}: names output {k}, but the network has {outputs} outputs (i = 1.."
                                  f"{outputs}); raise --outputs or name another output")
        if self.probes > 0 and all(c.is_forest for c in corrs):
            raise ConfigError(f"probes = {self.probes}: no function has a cycle, so there is nothing to estimate; "
                              "leave --probes out (forests are evaluated exactly)")
        if not isinstance(self.integrate_output, bool):
            raise ConfigError(f"integrate_output = {self.integrate_output!r} must be True or False")
        if self.integrate_output:
            if self.init != "gaussian":
                raise ConfigError("integrate_output needs Gaussian output weights (Isserlis' theorem); with "
                                  f"init = {self.init!r} leave it out")
            plain = [c for c in corrs if _integrable(c)]
            if not plain:
                raise ConfigError("integrate_output applies to functions of plain outputs f(x1) f(x2) ... (at most "
                                  f"{MAX_INTEGRATED} factors, no derivatives); none of these is one")
        return corrs

    def inputs(self) -> Float[Array, "K d"]:
        """x1..xK as rows (K the largest input number of any function): xK ~ N(0, I_d) from the key
        (``input_seed``, K), whatever K and the other functions are."""
        K = max(c.num_inputs for c in self.parsed())
        key = jax.random.PRNGKey(self.input_seed)
        return jnp.stack([jax.random.normal(jax.random.fold_in(key, k), (self.in_dim,), dtype=jnp.float64)
                          for k in range(1, K + 1)])

    def to_json(self) -> str:
        """The fields that decide the values of every draw (``widths``, ``draws``, ``batch``, ``devices`` and
        ``memory_budget`` are left out: draw i at width m is the same initialization whatever the others, so a
        file can be extended with more widths and more draws)."""
        owners = self._owners()
        d = {k: v for k, v in self.flat().items() if owners.get(k) != "network" or k in NETWORK_OPTIONS}
        for k in ("widths", "draws", "batch", "devices", "memory_budget"):
            d.pop(k)
        if self.num_outputs == 1:  # a field added later is recorded only when set, so older files still resume
            d.pop("outputs")
        d["functions"] = [canonical(f) for f in self.functions]
        return json.dumps(d, sort_keys=True)


#: Factors of a function whose output-weight expectation is taken exactly ((M - 1)!! pairings: 105 at 8).
MAX_INTEGRATED = 8


def _integrable(corr: CorrelationFunction) -> bool:
    return not corr.edges and corr.num_factors <= MAX_INTEGRATED


def _pairings(items: tuple[int, ...]) -> list[list[tuple[int, int]]]:
    """Every perfect matching of the positions ``items`` (Isserlis' theorem); none for an odd count."""
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    out = []
    for j, other in enumerate(rest):
        for tail in _pairings(rest[:j] + rest[j + 1:]):
            out.append([(first, other)] + tail)
    return out


def output_expectation(model, corr: CorrelationFunction, X: Array, sigma_a: float) -> Array:
    """E over the output weights a ~ N(0, sigma_a^2 I) of prod_k f(x_k), the hidden weights held fixed (docs/math.md
    section 8.1): f(x) = a . x^(H)(x) is Gaussian given them, with covariance G_ij = sigma_a^2 x^(H)(x_i) .
    x^(H)(x_j), so the expectation is the sum over pairings of the factors of prod G (Isserlis), 0 for an odd
    number of factors. With several outputs the columns of a are independent: outputs i and j at x, y have
    covariance delta_ij G(x, y)."""
    feats = model.features(X)[1][-1]  # x^(H) of every input, (K, m)
    G = sigma_a**2 * feats @ feats.T
    inputs = [f.input - 1 for f in corr.factors]
    outs = [f.output for f in corr.factors]
    total = jnp.zeros((), G.dtype)
    for pairing in _pairings(tuple(range(len(inputs)))):
        if any(outs[i] != outs[j] for i, j in pairing):
            continue
        term = jnp.ones((), G.dtype)
        for i, j in pairing:
            term = term * G[inputs[i], inputs[j]]
        total = total + term
    return total


def num_params(cfg: CorrConfig, width: int) -> int:
    """Parameters of the measured network at ``width``, from shapes alone (nothing is drawn)."""
    shape = jax.eval_shape(lambda k: _network(cfg, width, k), jax.random.PRNGKey(0))
    return model_params(shape)


def _network(cfg: CorrConfig, width: int, key: Array):
    return draw_mlp(key, cfg.in_dim, width, cfg.depth, make_activation(cfg.activation), sigma_w=cfg.sigma_w,
                    sigma_a=cfg.sigma_a, init=cfg.init, outputs=cfg.num_outputs)


def draw_bytes(cfg: CorrConfig, width: int) -> int:
    """Predicted peak bytes of one draw: the weights, and per function its messages (one parameter vector per
    summed index) and the tangents of its nested JVPs (2^k at a factor with k derivatives), with the
    forward pass's activations; all functions of a draw are evaluated in one call."""
    vectors = 3 + sum(2 * len(c.edges) + 2 ** max(len(f.indices) for f in c.factors) * max(1, cfg.probes)
                      for c in cfg.parsed())
    K = max(c.num_inputs for c in cfg.parsed())
    return 8 * (vectors * num_params(cfg, width) + 8 * width * cfg.depth * K + K * cfg.in_dim)


def plan_batch(cfg: CorrConfig, width: int) -> int:
    """Draws per compiled call at this width: ``cfg.batch``, or as many as the memory budget holds (at most
    MAX_BATCH). Refuses (MemoryBudgetError) when one draw does not fit."""
    budget = cfg.memory_budget or default_memory_budget()
    one = draw_bytes(cfg, width)
    if one > budget:
        raise MemoryBudgetError(
            f"one draw at width {width} needs about {format_bytes(one)} ({num_params(cfg, width):,} parameters "
            f"and {len(cfg.functions)} function(s)); the memory budget is {format_bytes(budget)}. Reduce the "
            "largest width, measure fewer functions per run, or raise --memory-budget")
    if cfg.batch is not None:
        if cfg.batch * one > budget:
            raise MemoryBudgetError(f"batch = {cfg.batch} draws at width {width} need about "
                                    f"{format_bytes(cfg.batch * one)}; the memory budget is {format_bytes(budget)}. "
                                    f"Use --batch {max(1, budget // one)} or less")
        return cfg.batch
    return int(max(1, min(MAX_BATCH, budget // one)))


def draw_key(cfg: CorrConfig, width: int, draw: Array) -> Array:
    """The key of initialization ``draw`` at ``width``: the same whichever batch or run computes it."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), width), draw)


class _Sampler(eqx.Module):
    """Values of every function at one initialization (hashable: one compiled batch function per width)."""

    corrs: tuple[CorrelationFunction, ...] = eqx.field(static=True)
    width: int = eqx.field(static=True)
    cfg: CorrConfig = eqx.field(static=True)

    def __call__(self, key: Array, X: Array) -> Array:
        c = self.cfg
        model = _network(c, self.width, jax.random.fold_in(key, 0))
        out = []
        for i, corr in enumerate(self.corrs):
            if c.integrate_output and _integrable(corr):
                out.append(output_expectation(model, corr, X, c.sigma_a))
            elif corr.is_forest:
                out.append(correlation_value(model, corr, X))
            else:
                keys = jax.random.split(jax.random.fold_in(key, 1 + i), c.probes)
                out.append(jnp.mean(jnp.stack([correlation_value(model, corr, X, k) for k in keys])))
        return jnp.stack(out)


@eqx.filter_jit
def _batch(sampler: _Sampler, keys: Array, X: Array) -> Array:
    return jax.vmap(lambda k: sampler(k, X))(keys)


def sample(cfg: CorrConfig, width: int, start: int, stop: int, *, share: bool = True,
           on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Draws ``start..stop-1`` at ``width``, in batches: yields (first draw of the batch, values of shape
    (draws in the batch, functions)). Every batch has the same size (the last is padded and trimmed), so
    one compiled call serves a width. Under several processes (:mod:`nth._cluster`) with ``share`` the batches
    are shared out (batch i to process i mod P, the batch size process 0's) and every process yields every
    batch; without ``share`` this process draws them all (a draw depends only on its key, not on who draws it)."""
    corrs = cfg.validate()
    enable_float64()  # draws are made and contracted in float64
    X = cfg.inputs()
    sampler = _Sampler(corrs, int(width), cfg)
    batch = plan_batch(cfg, width)
    mesh = device_mesh(cfg.devices, "draws")
    if mesh is not None:
        batch = -(-batch // mesh.size) * mesh.size
    if share:
        batch = from_writer(lambda: batch)

    def draw(lo: int) -> np.ndarray:
        idx = jnp.arange(lo, lo + batch)
        keys = jax.vmap(lambda i: draw_key(cfg, width, i))(idx)
        if mesh is not None:
            keys = jax.device_put(keys, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("draws")))
        return np.asarray(_batch(sampler, keys, X))[: min(batch, stop - lo)]

    for lo, vals in shared_map(draw, range(start, stop, batch), share=share):
        if on_batch is not None:
            on_batch(len(vals))
        yield lo, vals


def correlation_values(cfg: CorrConfig, width: int, draws: int | None = None, *,
                       share: bool = True) -> Float[np.ndarray, "N F"]:
    """Draws 0..draws-1 (default ``cfg.draws``) at one width, in memory: (draws, functions); ``share`` as in
    :func:`sample`."""
    n = cfg.draws if draws is None else draws
    for name, val in (("width", width), ("draws", n)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < 1:
            raise ConfigError(f"correlation_values: {name} = {val!r} must be a positive integer")
    return np.concatenate([v for _, v in sample(cfg, width, 0, n, share=share)], axis=0)


def check_plan(cfg: CorrConfig) -> None:
    """Everything checkable before any draw: the arguments, and the memory of one batch at the largest width."""
    cfg.validate()
    device_mesh(cfg.devices, "draws")
    plan_batch(cfg, max(cfg.widths))


def summarize(cfg: CorrConfig, values: dict[int, np.ndarray], *, resolve: float = 3.0) -> list[dict[str, object]]:
    """Prediction next to measurement, per function: the cluster graph's n_e, n_o, M and s_C (DG Conjecture 1)
    and 2 s_C (DG Lemma 6), and the mean, variance, standard error and fitted exponents over the first N draws
    of every width, N the fewest any width has (:func:`nth.compare.moment_fits`)."""
    widths = sorted(values)
    n = min(len(values[w]) for w in widths)
    out = []
    for j, corr in enumerate(cfg.parsed()):
        V = np.stack([np.asarray(values[w])[:n, j] for w in widths])
        out.append(corr.summary() | moment_fits(widths, V, resolve=resolve)
                   | {"activation": cfg.activation, "init": cfg.init, "depth": cfg.depth, "in_dim": cfg.in_dim,
                      "outputs": cfg.num_outputs})
    return out
