"""One initialization's value of a correlation function, without forming any derivative tensor
(docs/math.md sections 8 and 8.1: rooted trees, and Hutchinson probes for cut cycle indices).

For a contraction pattern without cycles every cluster is a tree. Rooted anywhere, each factor contracts its
k-th derivative with the vectors its neighbours send, all held fixed:

- a factor that is not the root sends its parent the parameter-space vector
  grad_theta D^(k-1) f(x)[g_1, .., g_(k-1)] (a leaf d_mu f(x) sends grad f(x));
- the root gives the scalar D^k f(x)[g_1, .., g_k] (nested JVPs);

so sum_{mu,nu} d_mu f(x1) d_nu f(x2) d_mu d_nu f(x3) = D^2 f(x3)[grad f(x1), grad f(x2)], and the value of
the whole product is the product of its clusters' values (a factor without indices is f(x) itself). A
pattern with cycles is cut into a spanning forest: each cut index is replaced by a random probe z with
E[z z^T] = I (Rademacher entries), sum_mu A_mu B_mu = E_z[(A . z)(B . z)] (Hutchinson), which each endpoint
receives as one more fixed direction. The value is then an unbiased estimate, exact in expectation over the
probes. The plain Euclidean sum over theta is used (DG Definition 1), whatever learning rates a model carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ..models import AbstractModel, combine, grouped_derivative, move_along, partition
from ._notation import CorrelationFunction


def derivative(params: PyTree, static: PyTree, x: Array, directions: Sequence[PyTree],
               output: int | None = None) -> Array:
    """D^k f(x)[g_1, .., g_k] at ``params`` with the directions held fixed: one group of k nested JVPs
    (docs/math.md section 8; k = 0 is f(x)); of output ``output`` (1-based) for a network with several."""
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    pick = (lambda y: y) if output is None else (lambda y: y[output - 1])  # noqa: E731
    return grouped_derivative(params, move_along, lambda p: pick(combine(p, static)(x[None])[0]), [list(directions)],
                              dtype)


def _plan(corr: CorrelationFunction) -> tuple[list[int], dict[int, list[tuple[str, int]]], tuple[str, ...]]:
    """Roots (one per cluster: its highest-order factor, which then needs no gradient), the tree adjacency
    {factor: [(index, neighbour)]} of the spanning forest, and the indices cut into probes."""
    cut = set(corr.cycle_edges)
    adj: dict[int, list[tuple[str, int]]] = {i: [] for i in range(corr.num_factors)}
    for name, a, b in corr.edges:
        if name not in cut:
            adj[a].append((name, b))
            adj[b].append((name, a))
    roots = [max(c, key=lambda i: (len(corr.factors[i].indices), -i)) for c in corr.components()]
    return roots, adj, tuple(name for name, _, _ in corr.edges if name in cut)


def correlation_value(model: AbstractModel, corr: CorrelationFunction, X: Float[Array, "K *in"],
                      probe_key: PRNGKeyArray | None = None) -> Float[Array, ""]:
    """The integrand F_theta of ``corr`` at the weights of ``model`` (docs/math.md section 8; DG Definition 1),
    with input x_K the row K - 1 of X. A pattern with cycles needs ``probe_key``: the value is then one
    Hutchinson estimate (module docstring)."""
    params, static = partition(model)
    roots, adj, cut = _plan(corr)
    probes: dict[str, PyTree] = {}
    if cut:
        if probe_key is None:
            raise ValueError(f"{corr}: a pattern with cycles needs probe_key (random probes for {', '.join(cut)})")
        leaves, treedef = jax.tree_util.tree_flatten(params)
        for e, name in enumerate(cut):
            keys = jax.random.split(jax.random.fold_in(probe_key, e), len(leaves))
            probes[name] = jax.tree_util.tree_unflatten(
                treedef, [jax.random.rademacher(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])

    def fixed(i: int) -> list[PyTree]:
        """Probe directions of factor i (one per cut index it carries, twice for a self-loop)."""
        return [probes[name] for name in corr.factors[i].indices if name in probes]

    def message(i: int, parent: int | None, via: str | None) -> PyTree:
        dirs = [message(j, i, name) for name, j in adj[i] if j != parent or name != via] + fixed(i)
        fac = corr.factors[i]
        return jax.grad(lambda p: derivative(p, static, X[fac.input - 1], dirs, fac.output))(params)

    value = jnp.ones((), jax.tree_util.tree_leaves(params)[0].dtype)
    for r in roots:
        dirs = [message(j, r, name) for name, j in adj[r]] + fixed(r)
        fac = corr.factors[r]
        value = value * derivative(params, static, X[fac.input - 1], dirs, fac.output)
    return value
