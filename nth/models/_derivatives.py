"""Autodiff building blocks shared by every kernel path: mixed partial derivatives in scalar steps taken along
nested parameter-space directions, and a symmetric Gram product with a cheap tangent (docs/math.md section 2).

K^(r)(., ., b_3, .., b_r) is the mixed partial derivative d^(r-2)/d eps_3 .. d eps_r at eps = 0 of K^(2) at
weights moved along the directions g_(b_3), .., g_(b_r), where the last slot's step is taken at theta and
every earlier slot's direction is evaluated at the weights already moved by the later ones (HY Eq. 10:
K^(s+1)(.., b) = <grad K^(s)(..), grad f_b>, the inner directions being functions of theta themselves).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from jaxtyping import Array

S = TypeVar("S")


def mixed_partial(F: Callable[[tuple], Array], k: int, dtype) -> Array:
    """d^k F / d eps_1 ... d eps_k at eps = 0, for F taking a tuple of k scalar steps (nested JVPs).

    Each step is its own scalar, so JAX propagates a tangent only where that step enters.
    """
    if k == 0:
        return F(())
    zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)

    def outer(e_last):
        return mixed_partial(lambda rest: F(rest + (e_last,)), k - 1, dtype)

    return jax.jvp(outer, (zero,), (one,))[1]


def nested_derivative(start: S, move: Callable[[S, Any, Array], S], evaluate: Callable[[S], Array],
                      directions: Sequence[Any], dtype) -> Array:
    """D^j K[g_1, .., g_j] with the directions nested as the hierarchy nests them (module docstring).

    ``move(state, direction, eps)`` returns the state (weights, or a representation of them) moved by the step
    ``eps`` along ``direction`` evaluated at ``state``; ``evaluate(state)`` is the kernel there.
    """

    return grouped_derivative(start, lambda state, g, eps: move(state, g[0], eps[0]), evaluate,
                              [(d,) for d in directions], dtype)


def grouped_derivative(start: S, move: Callable[[S, Sequence[Any], Sequence[Array]], S],
                       evaluate: Callable[[S], Array], groups: Sequence[Sequence[Any]], dtype) -> Array:
    """The mixed derivative of ``evaluate`` along groups of directions (docs/math.md section 7).

    The last group's steps are taken at ``start``; each earlier group's directions are evaluated at the state
    already moved by the later groups. Within a group every direction is evaluated at the same state, so the
    group's directions are held fixed while it is differentiated: a group of two is D^2 F[u, v] with u, v
    fixed (O11, M), a group of three D^3 F[u, v, w] (O111), and groups [[b, c], [e]] differentiate
    O11(.., b, c) along e with its directions moving (P). Singleton groups are :func:`nested_derivative`.
    ``move(state, directions, steps)`` returns the state moved by sum_j steps_j directions_j(state).
    """
    sizes = [len(g) for g in groups]

    def F(eps):
        state, end = start, len(eps)
        for g, size in zip(reversed(groups), reversed(sizes)):
            state = move(state, g, eps[end - size:end])
            end -= size
        return evaluate(state)

    return mixed_partial(F, sum(sizes), dtype)


def move_along(params: Any, directions: Sequence[Any], steps: Sequence[Array]) -> Any:
    """theta + sum_j steps_j g_j for parameter-shaped trees g_j: the ``move`` of :func:`grouped_derivative` for
    directions held fixed within a group (docs/math.md sections 7 and 8)."""
    return jax.tree_util.tree_map(lambda p, *gs: p + sum(e * g for e, g in zip(steps, gs)), params, *directions)


@jax.custom_jvp
def sym_gram(A: Array) -> Array:
    """A A^T, whose tangent dA A^T + A dA^T = S + S^T is formed from one product S = dA A^T."""
    return A @ A.T


@sym_gram.defjvp
def _sym_gram_jvp(primals, tangents):
    (A,), (dA,) = primals, tangents
    S = dA @ A.T
    return A @ A.T, S + S.T
