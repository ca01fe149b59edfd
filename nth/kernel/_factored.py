"""K^(2) and its directional derivatives for any model from the factors of its linear maps (docs/math.md
section 2, "Factored kernels of any model"): the structured derivatives of neural-tangents, found in the
model's own program.

A parameter W that enters the model through one linear map only (a matrix product or a convolution of an
activation, possibly after a transpose or reshape of W) has the per-input gradient

    grad_W f_i(x) = sum_s delta_i(x)[s]^T X(x)[s]                                    (HY Eq. 7 per position)

over the positions s of the map's output: X(x)[s] is what the map multiplies at s (the activation row of a
matrix product; the patch under the window of a convolution) and delta_i(x)[s] = d f_i / d out[s] the backward
signal there. Its block of K^(2) is then

    eta_W sum_(s, s') (X_a[s] . X_b[s']) (delta_a[s] . delta_b[s'])   or   eta_W <delta_a^T X_a, delta_b^T X_b>_F

whichever costs fewer operations. A step eps along a direction eta sum_q c_q grad f(x_q) moves W by a matrix of
rank <= q S, and the map then gives

    out = X W^T + eps eta_W (X X_Q^T) D_Q,          X_Q = (X(x_q)[s])_(q,s),  D_Q = (sum_i c_qi delta_i(x_q)[s])_(q,s)

which is applied in this form (the MLP's rank-one path, :mod:`nth.models._mlp_structured`, for any model)
where it costs less than moving W itself. Every other parameter (biases, weights used twice, anything not
multiplied into an activation) has its per-input gradient formed whole. The program is traced once for a single
input and interpreted with zero perturbations ("taps") added to the outputs of its linear maps: the gradients
in the taps are the backward signals, one backward pass per input and output. Directions nest as in every
kernel path (:func:`nth.models.nested_derivative`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..models import AbstractModel, Direction, nested_derivative, sym_gram
from ..models._base import is_param
from ..models._patches import patches

#: Primitives that relabel the entries of a weight without changing them (a weight seen through a chain of these
#: is still one linear map's weight).
_VIEWS = ("transpose", "reshape", "squeeze", "expand_dims", "copy", "convert_element_type")
#: Call primitives whose inner program is inlined before the linear maps are found.
_CALLS = ("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint")


class _DotSite(NamedTuple):
    """A matrix product ``dot_general`` of an activation x with a weight (no batch dimensions), as rows: X (S, C)
    the activation with its free dimensions first and its contracted ones last, out (S, O) the product with x's
    free dimensions first."""

    weight_arg: int  # 0: the weight is the left operand, 1: the right one
    x_free: tuple[int, ...]
    x_contract: tuple[int, ...]
    out_shape: tuple[int, ...]
    n_w_free: int

    @property
    def _perm(self) -> tuple[int, ...]:
        """Axes of out that put x's free dimensions first."""
        nx, nw = len(self.x_free), self.n_w_free
        return tuple(range(nx)) + tuple(range(nx, nx + nw)) if self.weight_arg == 1 else \
            tuple(range(nw, nw + nx)) + tuple(range(nw))

    def apply(self, eqn, X: Array, x: Array, w: Array) -> Array:
        """The map itself, as the program has it."""
        args = (x, w) if self.weight_arg == 1 else (w, x)
        return eqn.primitive.bind(*args, **eqn.primitive.get_bind_params(eqn.params))

    def activation(self, x: Array) -> Float[Array, "S C"]:
        S = math.prod(x.shape[a] for a in self.x_free)
        return jnp.transpose(x, self.x_free + self.x_contract).reshape(S, -1)

    def rows(self, out: Array) -> Float[Array, "S O"]:
        S = math.prod(self.out_shape[a] for a in self._perm[: len(self.x_free)])
        return jnp.transpose(out, self._perm).reshape(S, -1)

    def unrows(self, rows: Array) -> Array:
        shape = tuple(self.out_shape[a] for a in self._perm)
        return jnp.transpose(rows.reshape(shape), np.argsort(self._perm))


class _ConvSite(NamedTuple):
    """A convolution ``conv_general_dilated`` of an activation (left) with a weight (right), one group, as rows:
    X (S, C) the patches under the window at the S output positions (gathered by strided slices of the padded,
    dilated input), out (S, O) the output with its feature dimension last. The convolution is evaluated as the
    matrix product of its patches with the weight (O, C): XLA's CPU convolutions are several times slower than
    its matrix products, and a weight moved differently per direction tuple is then a batched matrix product
    instead of a grouped convolution."""

    lhs_spec: tuple[int, ...]
    rhs_spec: tuple[int, ...]
    out_spec: tuple[int, ...]
    window: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def weight_arg(self) -> int:
        return 1

    def apply(self, eqn, X: Array, x: Array, w: Array) -> Array:
        """The convolution from its patches X: X W^T with W as (O, C) in the patches' order (input feature, then
        the window's offsets)."""
        W = jnp.transpose(w, self.rhs_spec).reshape(w.shape[self.rhs_spec[0]], -1)
        return self.unrows(X @ W.T)

    def activation(self, x: Array) -> Float[Array, "S C"]:
        x = jnp.transpose(x, self.lhs_spec)  # (N, C, spatial...)
        out_sp = tuple(self.out_shape[a] for a in self.out_spec[2:])
        P = patches(x, self.window, self.strides, self.padding, self.lhs_dilation, self.rhs_dilation, out_sp)
        return P.reshape(math.prod(P.shape[: 1 + len(self.window)]), -1)

    def rows(self, out: Array) -> Float[Array, "S O"]:
        out = jnp.transpose(out, self.out_spec)  # (N, O, spatial...)
        out = jnp.moveaxis(out, 1, -1)
        return out.reshape(-1, out.shape[-1])

    def unrows(self, rows: Array) -> Array:
        shape = tuple(self.out_shape[a] for a in self.out_spec)
        out = rows.reshape((shape[0],) + shape[2:] + (shape[1],))
        return jnp.transpose(jnp.moveaxis(out, -1, 1), np.argsort(self.out_spec))


def _dot_site(eqn, weight_arg: int):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if lb or rb:
        return None
    x = eqn.invars[1 - weight_arg]
    contract = tuple(lc if weight_arg == 1 else rc)
    free = tuple(a for a in range(len(x.aval.shape)) if a not in contract)
    w_rank = len(eqn.invars[weight_arg].aval.shape)
    return _DotSite(weight_arg, free, contract, tuple(eqn.outvars[0].aval.shape), w_rank - len(contract))


def _conv_site(eqn, weight_arg: int):
    p = eqn.params
    if weight_arg != 1 or p["feature_group_count"] != 1 or p["batch_group_count"] != 1:
        return None
    dn = p["dimension_numbers"]
    w_shape = eqn.invars[1].aval.shape
    return _ConvSite(tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec), tuple(w_shape[a] for a in dn.rhs_spec[2:]),
                     tuple(p["window_strides"]), tuple(tuple(q) for q in p["padding"]), tuple(p["lhs_dilation"]),
                     tuple(p["rhs_dilation"]), tuple(eqn.outvars[0].aval.shape))


#: The linear maps whose weight gradients are factored, by primitive.
_SITES = {"dot_general": _dot_site, "conv_general_dilated": _conv_site}


class Site(NamedTuple):
    """One linear map of the program: the equation, the parameter leaf it multiplies, its rows form, and the
    sizes of one input's rows (S positions, C multiplied entries, O outputs per position)."""

    eqn: int
    leaf: int
    form: Any
    S: int
    C: int
    O: int


class Program(NamedTuple):
    """A model's single-input program with its linear maps found: ``jaxpr`` takes the model's array leaves (trained
    or not, :func:`array_leaves`) then the input; ``params`` are the trained ones, ``sites`` (by equation index)
    the linear maps, ``dense`` the trained leaves that are no site's weight."""

    jaxpr: Any
    consts: tuple
    sites: dict[int, Site]
    dense: tuple[int, ...]
    params: tuple[int, ...]


def _interpret(jaxpr, consts, args, evaluate) -> list:
    """Evaluate ``jaxpr`` on ``args`` equation by equation; ``evaluate(j, eqn, invals)`` gives the list of
    outputs of equation j (the one interpreter behind :func:`_inline` and :func:`run`)."""
    env: dict = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))

    def read(v):
        return v.val if isinstance(v, jax_core.Literal) else env[v]

    for j, eqn in enumerate(jaxpr.eqns):
        env.update(zip(eqn.outvars, evaluate(j, eqn, [read(v) for v in eqn.invars])))
    return [read(v) for v in jaxpr.outvars]


def _bind(eqn, invals) -> list:
    out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
    return out if eqn.primitive.multiple_results else [out]


def _inline(jaxpr, consts, *args):
    """Evaluate ``jaxpr`` with every call primitive's inner program evaluated in place (so that, traced, the
    result is one flat program)."""

    def evaluate(j, eqn, invals):
        inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        if eqn.primitive.name in _CALLS and inner is not None:
            closed = hasattr(inner, "consts")
            return _inline(inner.jaxpr if closed else inner, inner.consts if closed else (), *invals)
        return _bind(eqn, invals)

    return _interpret(jaxpr, consts, args, evaluate)


def is_array(x) -> bool:
    """An array leaf, or its shape alone (a model from ``eqx.filter_eval_shape``)."""
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def array_leaves(model: AbstractModel) -> tuple[list, Any, Any]:
    """(leaves, treedef, static): every array leaf of the model, trained or not (an integer leaf may differ
    between stacked seeds, so it is an input of the program, never a constant), and the rest."""
    arrays, static = eqx.partition(model, is_array)
    leaves, treedef = jax.tree_util.tree_flatten(arrays)
    return leaves, treedef, static


def trace(model: AbstractModel, x_shape: tuple[int, ...], dtype) -> Program:
    """The program of ``model`` on one input of shape ``x_shape`` (outputs flattened to (k,)), with its linear
    maps found (module docstring). A leaf is a site's weight when it reaches exactly one matrix product or
    convolution operand through relabelling primitives only, each value on the way used once."""
    leaves, treedef, static = array_leaves(model)
    trained = tuple(i for i, leaf in enumerate(leaves) if is_param(leaf))

    def f1(leaves, x):
        out = eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)(x[None])
        return out.reshape(-1)

    shapes = [jax.ShapeDtypeStruct(l.shape, l.dtype) for l in leaves]
    x = jax.ShapeDtypeStruct(tuple(x_shape), dtype)
    nested = jax.make_jaxpr(f1)(shapes, x)
    flat = jax.make_jaxpr(lambda ls, z: _inline(nested.jaxpr, nested.consts, *ls, z)[0])(shapes, x)
    jp = flat.jaxpr
    uses: dict = {}
    for eqn in jp.eqns:
        for v in eqn.invars:
            if not isinstance(v, jax_core.Literal):
                uses[v] = uses.get(v, 0) + 1
    for v in jp.outvars:
        if not isinstance(v, jax_core.Literal):
            uses[v] = uses.get(v, 0) + 1
    view_of = {jp.invars[i]: i for i in trained if uses.get(jp.invars[i], 0) == 1}
    sites: dict[int, Site] = {}
    for j, eqn in enumerate(jp.eqns):
        ins = [v for v in eqn.invars if not isinstance(v, jax_core.Literal)]
        if eqn.primitive.name in _VIEWS and len(ins) == 1 and ins[0] in view_of:
            same = eqn.primitive.name != "convert_element_type" or eqn.outvars[0].aval.dtype == ins[0].aval.dtype
            if same and uses.get(eqn.outvars[0], 0) == 1:
                view_of[eqn.outvars[0]] = view_of[ins[0]]
            continue
        make = _SITES.get(eqn.primitive.name)
        if make is None or len(eqn.invars) != 2:
            continue
        weights = [a for a, v in enumerate(eqn.invars) if not isinstance(v, jax_core.Literal) and v in view_of]
        if len(weights) != 1:
            continue
        form = make(eqn, weights[0])
        if form is None:
            continue
        x_aval = eqn.invars[1 - weights[0]].aval
        X = jax.eval_shape(form.activation, jax.ShapeDtypeStruct(x_aval.shape, x_aval.dtype))
        out = jax.eval_shape(form.rows, jax.ShapeDtypeStruct(eqn.outvars[0].aval.shape, x_aval.dtype))
        sites[j] = Site(j, view_of[eqn.invars[weights[0]]], form, X.shape[0], X.shape[1], out.shape[1])
    weighted = {s.leaf for s in sites.values()}
    dense = tuple(i for i in trained if i not in weighted)
    return Program(jp, tuple(flat.consts), sites, dense, trained)


class Term(NamedTuple):
    """A step ``eps`` along a direction, for the sites moved in factored form: per site, the rows X_Q (q S, C) of
    the direction's inputs and D_Q (q S, O) = eta sum_i c_qi delta_i (module docstring)."""

    eps: Array
    factors: dict[int, tuple[Array, Array]]


class State(NamedTuple):
    """Weights moved by steps: ``leaves`` (moved in place for every leaf not in ``factored``) and the factored
    ``terms``."""

    leaves: tuple[Array, ...]
    terms: tuple[Term, ...]


def run(prog: Program, state: State, x: Array, taps: dict[int, Array]) -> tuple[Array, dict[int, Array]]:
    """f(x) (shape (k,)) at the moved weights of ``state`` with ``taps`` added to the outputs of their linear maps,
    and the rows X (S, C) of every linear map; a factored site's output is X W^T + sum_j eps_j (X X_Q^T) D_Q
    (docs/math.md section 2, "Factored kernels of any model")."""
    acts = {}

    def evaluate(j, eqn, invals):
        site = prog.sites.get(j)
        if site is None:
            return _bind(eqn, invals)
        x, w = invals[1 - site.form.weight_arg], invals[site.form.weight_arg]
        X = site.form.activation(x)
        out = site.form.apply(eqn, X, x, w)
        acts[j] = X
        steps = [t.eps * ((X @ t.factors[j][0].T) @ t.factors[j][1]) for t in state.terms if j in t.factors]
        if steps:
            out = out + site.form.unrows(sum(steps[1:], steps[0]))
        if j in taps:
            out = out + taps[j]
        return [out]

    out = _interpret(prog.jaxpr, prog.consts, tuple(state.leaves) + (x,), evaluate)
    return out[0], acts


def _taps(prog: Program, which, lead: tuple[int, ...] = ()) -> dict[int, Array]:
    out = {}
    for j in which:
        aval = prog.jaxpr.eqns[j].outvars[0].aval
        out[j] = jnp.zeros(lead + tuple(aval.shape), aval.dtype)
    return out


def factored_sites(prog: Program, rows: int, steps: bool | None = None) -> frozenset[int]:
    """The sites whose steps are applied in factored form when the kernel is evaluated on ``rows`` inputs: by
    default those where the product (X X_Q^T) D_Q costs less than moving the weight (rows S (C + O) < O C, the
    q S of a direction cancelling); ``steps`` True or False: every site or none (for cross-tests)."""
    if steps is not None:
        return frozenset(prog.sites) if steps else frozenset()
    return frozenset(j for j, s in prog.sites.items() if rows * s.S * (s.C + s.O) < s.O * s.C)


def move(prog: Program, etas: dict[int, Array], factored: frozenset[int], state: State, direction: Direction,
         eps: Array) -> State:
    """The weights of ``state`` moved by ``eps`` along eta . grad sum_(q,i) c_(q,i) f_i(X_q), the direction taken at
    ``state``: the leaves in place (their gradient by one backward pass), the ``factored`` sites as a Term."""
    moved = [i for i in prog.params if i not in {prog.sites[j].leaf for j in factored}]
    q = direction.X.shape[0]
    c = direction.c.reshape(q, -1)

    def value(vals, taps):
        leaves = list(state.leaves)
        for i, v in zip(moved, vals):
            leaves[i] = v
        st = State(tuple(leaves), state.terms)
        out, acts = jax.vmap(lambda x, t: run(prog, st, x, t))(direction.X, taps)
        return jnp.sum(c * out), acts

    vals = [state.leaves[i] for i in moved]
    _, pull, acts = jax.vjp(value, vals, _taps(prog, factored, (q,)), has_aux=True)
    g_vals, g_taps = pull(jnp.ones((), c.dtype))
    leaves = list(state.leaves)
    for i, g in zip(moved, g_vals):
        leaves[i] = leaves[i] + eps * etas[i] * g
    factors = {}
    for j in factored:
        site = prog.sites[j]
        D = jax.vmap(site.form.rows)(g_taps[j]).reshape(-1, site.O)
        factors[j] = (acts[j].reshape(-1, site.C), etas[site.leaf] * D)
    return State(tuple(leaves), state.terms + ((Term(eps, factors),) if factors else ()))


def per_sample(prog: Program, state: State, X: Array, k: int):
    """For every input of X at the weights of ``state``: the rows X (N, S, C) and backward signals (N, k, S, O) of
    every site, and the gradients (N, k, *shape) of every dense leaf, one backward pass per input and output."""

    def one(x):
        def value(vals, taps):
            leaves = list(state.leaves)
            for i, v in zip(prog.dense, vals):
                leaves[i] = v
            return run(prog, State(tuple(leaves), state.terms), x, taps)

        vals = [state.leaves[i] for i in prog.dense]
        _, pull, acts = jax.vjp(value, vals, _taps(prog, prog.sites), has_aux=True)
        g_vals, g_taps = jax.vmap(pull)(jnp.eye(k, dtype=X.dtype))
        deltas = {j: jax.vmap(prog.sites[j].form.rows)(g) for j, g in g_taps.items()}
        return acts, deltas, g_vals

    return jax.vmap(one)(X)


def _by_pairs(s: Site, n1: int, n: int, k: int) -> bool:
    """Whether a site's block of K^(2) over n1 x n inputs with k outputs is computed by position pairs (fewer
    operations than per-input weight gradients)."""
    pairs = n1 * n * s.S**2 * (s.C + k * k * s.O + k * k)
    grads = (n1 + n) * k * s.S * s.O * s.C + n1 * n * k * k * s.O * s.C
    return pairs < grads


def gram_entries(s: Site, n1: int, n: int, k: int) -> int:
    """Entries of the intermediates of a site's block of K^(2) (:func:`_site_gram`), for the memory plan."""
    if _by_pairs(s, n1, n, k):
        return n1 * n * s.S**2 * (1 + k * k)
    return (n1 + n) * k * s.O * s.C


def _site_gram(s: Site, A1: Array, D1: Array, A: Array | None, D: Array | None) -> Array:
    """eta-free block of one site, over samples (n1 k, n k): by position pairs or by per-input weight gradients,
    whichever costs fewer operations (module docstring); A = None is the symmetric case."""
    n1, k = D1.shape[0], D1.shape[1]
    n = n1 if A is None else A.shape[0]
    if _by_pairs(s, n1, n, k):
        A, D = (A1, D1) if A is None else (A, D)
        XX = jnp.einsum("asc,btc->asbt", A1, A)
        DD = jnp.einsum("aiso,bjto->aisbjt", D1, D)
        return jnp.einsum("asbt,aisbjt->aibj", XX, DD).reshape(n1 * k, n * k)
    G1 = jnp.einsum("aiso,asc->aioc", D1, A1).reshape(n1 * k, -1)
    if A is None:
        return sym_gram(G1)
    return G1 @ jnp.einsum("aiso,asc->aioc", D, A).reshape(n * k, -1).T


def ntk_at(prog: Program, etas: dict[int, Array], state: State, X1: Array, X: Array | None, k: int) -> Array:
    """K^(2)(X1, X) over samples at the weights of ``state``: the sites' blocks from rows and backward signals,
    the dense leaves' from their per-input gradients (module docstring); X = None is symmetric."""
    A1, D1, G1 = per_sample(prog, state, X1, k)
    A, D, G = (None, None, None) if X is None else per_sample(prog, state, X, k)
    K = 0.0
    for j, s in prog.sites.items():
        K = K + etas[s.leaf] * _site_gram(s, A1[j], D1[j], None if X is None else A[j], None if X is None else D[j])
    for pos, i in enumerate(prog.dense):
        R1 = G1[pos].reshape(X1.shape[0] * k, -1)
        K = K + etas[i] * (sym_gram(R1) if X is None else R1 @ G[pos].reshape(X.shape[0] * k, -1).T)
    return K


def directional_ntk(model: AbstractModel, etas: Sequence[Array], X1: Float[Array, "n1 *in"],
                    X: Float[Array, "n *in"] | None, directions: tuple[Direction, ...],
                    steps: bool | None = None) -> Float[Array, "N1 N"]:
    """D^j K^(2)(X1, X)[g_1, .., g_j] over samples with the directions nested as the hierarchy nests them
    (:func:`nth.models.nested_derivative`; ``etas``: eta per trained leaf, in the order of the parameter tree),
    every step applied through the factors of the linear maps where that
    is cheaper (module docstring; ``steps``: see :func:`factored_sites`)."""
    prog = trace(model, tuple(X1.shape[1:]), X1.dtype)
    leaves = array_leaves(model)[0]
    eta = dict(zip(prog.params, etas))
    k = int(np.prod(jax.eval_shape(model, X1[:1]).shape[1:], dtype=int))
    rows = X1.shape[0] + (0 if X is None else X.shape[0])
    factored = factored_sites(prog, rows, steps)
    return nested_derivative(State(tuple(leaves), ()), lambda st, d, eps: move(prog, eta, factored, st, d, eps),
                             lambda st: ntk_at(prog, eta, st, X1, X, k), directions, X1.dtype)
