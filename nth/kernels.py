"""Higher-order kernels K^(2) ... K^(p) at given weights, by nested forward-mode autodiff.

MATH.md section 2 (HY Theorem 2.3, Eqs. 7 and 9-10):

    K^(2)(a1, a2)           = < grad f_a1, grad f_a2 >
    K^(r+1)(a1..ar, b)      = < grad K^(r)(a1..ar), grad f_b >

so K^(r+1)(..., b) is the directional derivative of theta -> K^(r)(...; theta) along grad f_b(theta): one
JVP per last-slot index b. Levels nest: inside K^(r), the directions grad f_b are themselves functions of
theta, so the JVP of level r differentiates them too, exactly as the definition requires. The outermost
last slot is processed in chunks (a Python loop, with progress) and inner slots by ``jax.lax.map`` in
batches, so peak memory is bounded by the chunk size, not by n^(p-1) directions at once.

Only symmetry in the first two slots holds in general (MATH.md section 3); nothing else is assumed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .errors import ConfigError, MemoryBudgetError
from .model import MLP, check_activation, grad_f, ntk

KernelFn = Callable[[MLP, Float[Array, "k d"], Float[Array, "n d"]], Array]


def format_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(b) < 1024 or unit == "PiB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return f"{b:.1f} PiB"


def kernel_bytes(n: int, r: int, dtype=jnp.float64, first_rows: int | None = None) -> int:
    """Bytes of one dense K^(r): n^r entries, or k n^(r-1) with k rows in the first slot."""
    return (n if first_rows is None else first_rows) * n ** (r - 1) * jnp.dtype(dtype).itemsize


def default_memory_budget() -> int:
    """Default budget: 75% of the accelerator's memory, or half of physical RAM on the CPU."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        try:
            limit = dev.memory_stats().get("bytes_limit")
            if limit:
                return int(0.75 * limit)
        except Exception:  # memory_stats is optional for backends
            pass
    try:
        return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


class KernelPlan(eqx.Module):
    """Predicted memory of a kernel computation, and the chunk size chosen to fit the budget."""

    n: int
    p: int
    itemsize: int
    num_params: int
    chunk: int
    kernel_bytes: dict[int, int]
    work_bytes: int
    budget: int

    @property
    def total_bytes(self) -> int:
        return sum(self.kernel_bytes.values()) + self.work_bytes

    def describe(self) -> str:
        rows = [f"  K^({r}): {format_bytes(b)}" for r, b in self.kernel_bytes.items()]
        rows.append(f"  JVP work (chunk {self.chunk}): {format_bytes(self.work_bytes)}")
        rows.append(f"  total {format_bytes(self.total_bytes)} of budget {format_bytes(self.budget)}")
        return "\n".join(rows)


def _work_bytes(p: int, chunk: int, num_params: int, itemsize: int) -> int:
    # Each direction in flight carries parameter-sized tangents at every nesting level (2^(p-2) of them
    # for p-2 nested JVPs) plus the direction itself; chunk^(p-2) directions are in flight at once.
    if p <= 2:
        return 3 * num_params * itemsize
    return chunk ** (p - 2) * (2 ** (p - 2) + 1) * num_params * itemsize


def plan_kernels(n: int, p: int, num_params: int, dtype=jnp.float64, memory_budget: int | None = None,
                 chunk: int | None = None, first_rows: int | None = None) -> KernelPlan:
    """Predict the bytes of every K^(r), r = 2..p, and of the JVP work; refuse if over ``memory_budget``.

    The chunk size (directions per batch at each nesting level) is chosen, if not given, as the largest
    that keeps the work within a quarter of the budget.
    """
    if not isinstance(p, (int, np.integer)) or p < 2:
        raise ConfigError(f"p = {p!r} must be an integer >= 2 (p = 2 is the frozen NTK)")
    budget = default_memory_budget() if memory_budget is None else int(memory_budget)
    if budget <= 0:
        raise ConfigError(f"memory budget = {memory_budget!r} must be a positive number of bytes")
    itemsize = jnp.dtype(dtype).itemsize
    kb = {r: kernel_bytes(n, r, dtype, first_rows) for r in range(2, p + 1)}
    if chunk is None:
        chunk = n
        while chunk > 1 and _work_bytes(p, chunk, num_params, itemsize) > budget // 4:
            chunk = max(1, chunk // 2)
    elif not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ConfigError(f"chunk = {chunk!r} must be a positive integer")
    chunk = min(int(chunk), n)
    plan = KernelPlan(n=n, p=p, itemsize=itemsize, num_params=num_params, chunk=chunk, kernel_bytes=kb,
                      work_bytes=_work_bytes(p, chunk, num_params, itemsize), budget=budget)
    if plan.total_bytes > budget:
        raise MemoryBudgetError(
            f"kernels up to K^({p}) at n = {n} need about {format_bytes(plan.total_bytes)}, over the memory "
            f"budget of {format_bytes(budget)}:\n{plan.describe()}\n"
            f"Reduce the number of training points n (K^({p}) grows like n^{p}), lower p, use float32 "
            "(--dtype float32), or raise the budget (--memory-budget / memory_budget=)."
        )
    return plan


def _nest(prev: KernelFn, chunk: int) -> KernelFn:
    """theta -> K^(r+1)(theta) from theta -> K^(r)(theta): JVP along grad f_b(theta) for every b."""

    def level(net: MLP, X1: Float[Array, "k d"], X: Float[Array, "n d"]) -> Array:
        def one(xb):
            return jax.jvp(lambda nt: prev(nt, X1, X), (net,), (grad_f(net, xb),))[1]

        out = jax.lax.map(one, X, batch_size=chunk)
        return jnp.moveaxis(out, 0, -1)

    return level


def kernel_fn(r: int, chunk: int = 1) -> KernelFn:
    """The function (net, X1, X) -> K^(r)(X1, X, ..., X; theta), shape (k,) + (n,)*(r-1) (HY Eqs. 10, 22).

    The first slot runs over the rows of X1 (the training inputs X itself, or test inputs), every other
    slot over the training inputs X. Differentiable in theta to any order.
    """
    fn: KernelFn = ntk
    for _ in range(r - 2):
        fn = _nest(fn, chunk)
    return fn


_ntk_jit = eqx.filter_jit(ntk)


@eqx.filter_jit
def _top_chunk(net: MLP, X1: Array, X: Array, Xb: Array, r: int, chunk: int) -> Array:
    """K^(r)(X1, X, ..., b) for the last-slot inputs Xb (a chunk of X): shape (k,) + (n,)*(r-2) + (len(Xb),)."""
    prev = kernel_fn(r - 1, chunk)
    out = jax.vmap(lambda xb: jax.jvp(lambda nt: prev(nt, X1, X), (net,), (grad_f(net, xb),))[1])(Xb)
    return jnp.moveaxis(out, 0, -1)


def kernel(net: MLP, X: Float[Array, "n d"], r: int, *, first: Float[Array, "k d"] | None = None,
           chunk: int = 1, progress: bool = False) -> Array:
    """One dense K^(r)(first, X, ..., X) at the weights of ``net`` (``first`` defaults to X); no budget check."""
    X1 = X if first is None else first
    if r == 2:
        return _ntk_jit(net, X1, X)
    n = X.shape[0]
    starts = list(range(0, n, chunk))
    it = starts
    if progress and len(starts) > 1:
        from tqdm.auto import tqdm

        it = tqdm(starts, desc=f"K^({r})" + ("" if first is None else " (test)"), unit="chunk", leave=False)
    parts = []
    for s in it:
        Xb = X[s : s + chunk]
        if Xb.shape[0] < chunk:  # pad so one compiled function serves every chunk
            Xb = jnp.concatenate([Xb, jnp.broadcast_to(X[:1], (chunk - Xb.shape[0], X.shape[1]))])
        parts.append(_top_chunk(net, X1, X, Xb, r, chunk)[..., : min(chunk, n - s)])
    return jnp.concatenate(parts, axis=-1)


def kernels(
    net: MLP,
    X: Float[Array, "n d"],
    p: int,
    *,
    first: Float[Array, "k d"] | None = None,
    memory_budget: int | None = None,
    chunk: int | None = None,
    progress: bool = False,
) -> dict[int, Array]:
    """K^(2) ... K^(p) at the weights of ``net``: ``{r: array of shape (n,)*r}`` (HY Eqs. 7, 9-10).

    Computed by nested forward-mode JVPs along grad f_b (MATH.md section 2), jit-compiled, on the default
    JAX device. With ``first`` (k test inputs), the first slot runs over those instead: K^(r)(x, X^(r-1)) of
    shape (k,) + (n,)*(r-1), as the test-point equations need (HY Eq. 22). Before anything is allocated, the
    bytes of every K^(r) and of the JVP work are predicted and a :class:`~nth.errors.MemoryBudgetError` is
    raised if they exceed ``memory_budget`` (default: see :func:`default_memory_budget`). ``chunk`` sets how
    many directions are processed at once.
    """
    X = jnp.asarray(X, dtype=net.a.dtype)
    X1 = None if first is None else jnp.asarray(first, dtype=net.a.dtype)
    for name, A in (("X", X), ("first", X1)):
        if A is not None and (A.ndim != 2 or A.shape[1] != net.in_dim):
            raise ConfigError(f"{name} has shape {A.shape}; expected (rows, {net.in_dim}) to match the network's "
                              "input dim")
    check_activation(net.activation, p, net.beta)
    k = None if X1 is None else X1.shape[0]
    plan = plan_kernels(X.shape[0], p, net.num_params, net.a.dtype, memory_budget, chunk, first_rows=k)
    return {r: kernel(net, X, r, first=X1, chunk=plan.chunk, progress=progress) for r in range(2, p + 1)}
