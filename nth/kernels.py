"""Higher-order kernels K^(2) ... K^(p) at given weights, by forward mode through a structured K^(2).

MATH.md section 2 (HY Theorem 2.3, Eqs. 7 and 9-10):

    K^(2)(a1, a2)           = < grad f_a1, grad f_a2 >
    K^(r+1)(a1..ar, b)      = < grad K^(r)(a1..ar), grad f_b >

so K^(r+1)(..., b) is the directional derivative of theta -> K^(r)(...; theta) along grad f_b(theta). Levels
nest: inside K^(r) the directions grad f_b are themselves functions of theta and are differentiated too.

How it is computed (``nth.tangents``): K^(2) comes from per-layer factors (backpropagated vectors and layer
outputs), never from a Jacobian; every direction grad f_b is rank one per layer and is applied through its
factors, so no m x m tangent is ever formed; K^(r)(., ., b_3..b_r) is the mixed partial derivative, in r - 2
scalar steps, of K^(2) at the weights moved along grad f_(b_3)..grad f_(b_r), taken by nested JVPs; the
Gram matrices use the symmetry of K^(r) in its first two slots. The n^(r-2) direction tuples (b_3..b_r) are
processed in batches (one compiled, vmapped call per batch; a Python loop over batches, with progress) and,
with several devices, each batch is sharded across them.

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
from .model import MLP, check_activation
from .tangents import Direction, directional_ntk

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



#: Upper bound on the direction tuples of one compiled batch, per platform (measured by ``nth bench``: on a
#: CPU larger batches only add memory traffic; an accelerator wants wide batches).
MAX_BATCH = {"cpu": 16}
MAX_BATCH_ACCELERATOR = 256


def max_batch() -> int:
    return MAX_BATCH.get(jax.devices()[0].platform, MAX_BATCH_ACCELERATOR)


class KernelPlan(eqx.Module):
    """Predicted memory of a kernel computation, and the batch size chosen to fit the budget.

    ``kernel_bytes`` maps r to the bytes of the dense K^(r) that will be stored (the top level is absent when
    it is applied matrix-free); ``work_bytes`` is the peak of one batch of direction tuples.
    """

    n: int
    p: int
    itemsize: int
    num_params: int
    chunk: int
    kernel_bytes: dict[int, int]
    work_bytes: int
    budget: int
    matrix_free: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(self.kernel_bytes.values()) + self.work_bytes + self.num_params * self.itemsize

    def describe(self) -> str:
        rows = [f"  K^({r}): {format_bytes(b)}" for r, b in self.kernel_bytes.items()]
        if self.matrix_free:
            rows.append(f"  K^({self.p}): not stored (matrix-free: contracted with the residual in the ODE)")
        rows.append(f"  weights: {format_bytes(self.num_params * self.itemsize)}")
        rows.append(f"  work per batch ({self.chunk} direction tuples): {format_bytes(self.work_bytes)}")
        rows.append(f"  total {format_bytes(self.total_bytes)} of budget {format_bytes(self.budget)}")
        return "\n".join(rows)


def num_params(width: int, depth: int, in_dim: int) -> int:
    """Parameter count of the MLP of MATH.md section 1: m d + (H - 1) m^2 + m."""
    return width * in_dim + (depth - 1) * width * width + width


def work_bytes(r: int, batch: int, n: int, width: int, depth: int, itemsize: int,
               first_rows: int | None = None, contracted: bool = False) -> int:
    """Predicted peak bytes of one batch of ``batch`` direction tuples for K^(r) (see :mod:`nth.tangents`).

    Per tuple, each of the 2^(r-2) tangent components of the nested JVPs carries the layer factors of the
    (k + n) inputs (one array of width m per layer and row) and the k x n Gram matrices (3 per layer); a
    contracted last slot adds the factors of its n direction inputs. XLA's own memory analysis of the
    compiled batch comes to 0.5-0.75 of this (``nth bench`` prints both).
    """
    k = n if first_rows is None else first_rows
    rows = k + n + (n if contracted else 0)
    per_component = rows * width * (depth + 1) + 3 * (depth + 1) * k * n
    return batch * 2 ** max(r - 2, 0) * per_component * itemsize


def plan_kernels(n: int, p: int, *, width: int, depth: int, in_dim: int, dtype=jnp.float64,
                 memory_budget: int | None = None, chunk: int | None = None, first_rows: int | None = None,
                 matrix_free: bool = False) -> KernelPlan:
    """Predict the bytes of every K^(r), r = 2..p, the weights and one batch of work; refuse if over budget.

    Nothing is allocated. The batch size (direction tuples per compiled call) is chosen, if not given, as the
    largest power of two up to :func:`max_batch` whose work fits in a quarter of the budget. With
    ``matrix_free``, K^(p) is not stored: the plan covers K^(2)..K^(p-1) and one contraction of K^(p).
    Raises :class:`~nth.errors.MemoryBudgetError` with the itemized plan and the ways out.
    """
    if not isinstance(p, (int, np.integer)) or p < 2:
        raise ConfigError(f"p = {p!r} must be an integer >= 2 (p = 2 is the frozen NTK)")
    if matrix_free and p < 3:
        raise ConfigError(f"matrix-free needs p >= 3 (at p = {p} the top kernel is K^(2) itself)")
    budget = default_memory_budget() if memory_budget is None else int(memory_budget)
    if budget <= 0:
        raise ConfigError(f"memory budget = {memory_budget!r} must be a positive number of bytes")
    itemsize = jnp.dtype(dtype).itemsize
    top = p - 1 if matrix_free else p
    kb = {r: kernel_bytes(n, r, dtype, first_rows) for r in range(2, top + 1)}
    tuples = n ** (p - 3) if matrix_free else n ** (p - 2)

    def work(b):
        return work_bytes(p, b, n, width, depth, itemsize, first_rows, contracted=matrix_free)

    if chunk is None:
        chunk = 1
        while chunk * 2 <= min(max_batch(), tuples) and work(chunk * 2) <= budget // 4:
            chunk *= 2
    elif not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ConfigError(f"chunk = {chunk!r} must be a positive integer (direction tuples per batch)")
    chunk = max(1, min(int(chunk), tuples))
    plan = KernelPlan(n=n, p=p, itemsize=itemsize, num_params=num_params(width, depth, in_dim), chunk=chunk,
                      kernel_bytes=kb, work_bytes=work(chunk), budget=budget, matrix_free=matrix_free)
    if plan.total_bytes > budget:
        way_out = ("" if matrix_free or p < 3 else
                   f" apply K^({p}) matrix-free (--matrix-free / matrix_free=True: memory then grows like "
                   f"n^{p - 1}),")
        raise MemoryBudgetError(
            f"kernels up to K^({p}) at n = {n} need about {format_bytes(plan.total_bytes)}, over the memory "
            f"budget of {format_bytes(budget)}:\n{plan.describe()}\n"
            f"Reduce the number of training points n (K^({p}) grows like n^{p}),{way_out} lower p, use float32 "
            "(--dtype float32), or raise the budget (--memory-budget / memory_budget=)."
        )
    return plan


def _index_tuples(n: int, k: int) -> np.ndarray:
    """Every (b_3, ..., b_(k+2)) in C order (the last slot fastest): shape (n^k, k)."""
    if k == 0:
        return np.zeros((1, 0), dtype=np.int32)
    return np.stack(np.unravel_index(np.arange(n**k), (n,) * k), axis=-1).astype(np.int32)


def _tuple_kernel(net: MLP, X1: Array, X: Array, sym: bool, idx: Array, last: Direction | None = None) -> Array:
    """K^(r)(X1, X, b_3, ..) for one index tuple ``idx``; ``last`` (if given) fills the final slot."""
    ones = jnp.ones((1,), X.dtype)
    dirs = tuple(Direction(X[i][None, :], ones) for i in idx) + (() if last is None else (last,))
    return directional_ntk(net, X1, None if sym else X, dirs)


def _assemble(out: Array, n: int, k: int) -> Array:
    """(n^k, n1, n) in C order over (b_3..) -> (n1, n, b_3, ..., b_(k+2))."""
    out = out.reshape((n,) * k + out.shape[1:])
    return jnp.moveaxis(out, (k, k + 1), (0, 1))


def kernel_fn(r: int, chunk: int | None = None) -> KernelFn:
    """The function (net, X1, X) -> K^(r)(X1, X, ..., X; theta), shape (k,) + (n,)*(r-1) (HY Eqs. 10, 22).

    The first slot runs over the rows of X1 (the training inputs X itself, or test inputs), every other
    slot over the training inputs X. Pure and differentiable in theta to any order (the NTH identity tests
    differentiate it along the flow); ``chunk`` direction tuples are evaluated at once (all if None).
    """
    if r < 2:
        raise ConfigError(f"r = {r!r} must be >= 2")

    def fn(net: MLP, X1: Array, X: Array) -> Array:
        n, k = X.shape[0], r - 2
        sym = X1 is X
        idx = jnp.asarray(_index_tuples(n, k))
        out = jax.lax.map(lambda i: _tuple_kernel(net, X1, X, sym, i), idx, batch_size=chunk or idx.shape[0])
        return _assemble(out, n, k)

    return fn


@eqx.filter_jit
def _batch(net: MLP, X1: Array, X: Array, idx: Array, sym: bool) -> Array:
    return jax.vmap(lambda i: _tuple_kernel(net, X1, X, sym, i))(idx)


def _mesh(devices):
    """A 1-D mesh over ``devices`` (a list, an int count, or None for every local device), or None for one."""
    all_devs = jax.local_devices()
    if devices is None:
        devs = all_devs
    elif isinstance(devices, (int, np.integer)):
        if not 1 <= devices <= len(all_devs):
            raise ConfigError(f"devices = {devices!r}: this process sees {len(all_devs)} device(s) "
                              f"({all_devs[0].platform}); pass 1..{len(all_devs)}")
        devs = all_devs[:devices]
    else:
        devs = list(devices)
    if len(devs) <= 1:
        return None
    return jax.sharding.Mesh(np.array(devs), ("tuples",))


def kernel(net: MLP, X: Float[Array, "n d"], r: int, *, first: Float[Array, "k d"] | None = None,
           chunk: int = 1, progress: bool = False, devices=None) -> Array:
    """One dense K^(r)(first, X, ..., X) at the weights of ``net`` (``first`` defaults to X); no budget check.

    The n^(r-2) direction tuples go in batches of ``chunk``; with several ``devices`` (default: every local
    device) each batch is sharded across them along the tuple axis (the kernel's last slots) and the weights
    and inputs are replicated: the same numbers as on one device, computed in parallel.
    """
    sym = first is None
    X1 = X if sym else first
    n, k = X.shape[0], r - 2
    idx = _index_tuples(n, k)
    mesh = _mesh(devices)
    if mesh is not None:
        nd = mesh.devices.size
        chunk = -(-chunk // nd) * nd
        rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        net, X1, X = jax.device_put((net, X1, X), rep)
    starts = list(range(0, idx.shape[0], chunk))
    it = starts
    if progress and len(starts) > 1:
        from tqdm.auto import tqdm

        it = tqdm(starts, desc=f"K^({r})" + ("" if sym else " (test)"), unit="batch", leave=False)
    parts = []
    for s in it:
        ib = idx[s : s + chunk]
        size = ib.shape[0]
        if size < chunk:  # pad so one compiled function serves every batch
            ib = np.concatenate([ib, np.zeros((chunk - size, k), ib.dtype)])
        ib = jnp.asarray(ib)
        if mesh is not None:
            ib = jax.device_put(ib, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tuples")))
        parts.append(_batch(net, X1, X, ib, sym)[:size])
    return _assemble(jnp.concatenate(parts, axis=0), n, k)


def check_inputs(net: MLP, X, first=None) -> tuple[Array, Array | None]:
    """Cast inputs to the network's dtype and check their shapes (rows, d)."""
    X = jnp.asarray(X, dtype=net.a.dtype)
    X1 = None if first is None else jnp.asarray(first, dtype=net.a.dtype)
    for name, A in (("X", X), ("first", X1)):
        if A is not None and (A.ndim != 2 or A.shape[1] != net.in_dim):
            raise ConfigError(f"{name} has shape {A.shape}; expected (rows, {net.in_dim}) to match the network's "
                              "input dim")
    return X, X1


def plan_for(net: MLP, n: int, p: int, **kw) -> KernelPlan:
    """:func:`plan_kernels` for the shape of ``net``."""
    return plan_kernels(n, p, width=net.width, depth=net.depth, in_dim=net.in_dim, dtype=net.a.dtype, **kw)


def kernels(
    net: MLP,
    X: Float[Array, "n d"],
    p: int,
    *,
    first: Float[Array, "k d"] | None = None,
    memory_budget: int | None = None,
    chunk: int | None = None,
    progress: bool = False,
    devices=None,
    matrix_free: bool = False,
) -> dict[int, Array]:
    """K^(2) ... K^(p) at the weights of ``net``: ``{r: array of shape (n,)*r}`` (HY Eqs. 7, 9-10).

    Computed by forward mode through the structured K^(2) (module docstring), jit-compiled, on the default
    JAX device(s). With ``first`` (k test inputs), the first slot runs over those instead: K^(r)(x, X^(r-1)) of
    shape (k,) + (n,)*(r-1), as the test-point equations need (HY Eq. 22). Before anything is allocated, the
    bytes of every K^(r) and of one batch of work are predicted and a :class:`~nth.errors.MemoryBudgetError`
    is raised if they exceed ``memory_budget`` (default: see :func:`default_memory_budget`). ``chunk`` sets how
    many direction tuples are evaluated per compiled call; ``devices`` shards them (see :func:`kernel`).
    With ``matrix_free`` the top level is returned as a :class:`KernelOperator` (K^(p) contracted with a
    vector in its last slot on demand) instead of a dense array.
    """
    X, X1 = check_inputs(net, X, first)
    check_activation(net.activation, p, net.beta)
    k = None if X1 is None else X1.shape[0]
    plan = plan_for(net, X.shape[0], p, memory_budget=memory_budget, chunk=chunk, first_rows=k,
                    matrix_free=matrix_free)
    top = p - 1 if matrix_free else p
    out: dict[int, Array] = {r: kernel(net, X, r, first=X1, chunk=plan.chunk, progress=progress, devices=devices)
                             for r in range(2, top + 1)}
    if matrix_free:
        out[p] = KernelOperator(net=net, X=X, X1=X1, r=p, chunk=plan.chunk)
    return out


class KernelOperator(eqx.Module):
    """K^(r) applied to a vector in its last slot, never stored: c -> sum_b K^(r)(X1, X, .., b) c_b.

    The contraction is the derivative of K^(r-1) along the weighted direction sum_b c_b grad f(x_b) (HY Eq. 15:
    d K^(r-1)/dt = -(1/n) K^(r)[Delta]), so it costs n^(r-3) direction tuples instead of n^(r-2), and only
    K^(r-1)-sized memory. Used as the frozen top level of a matrix-free truncated NTH. ``X1 = None`` means
    the training inputs in the first slot.
    """

    net: MLP
    X: Array
    X1: Array | None
    r: int = eqx.field(static=True)
    chunk: int = eqx.field(static=True, default=1)

    @property
    def shape(self) -> tuple[int, ...]:
        n = self.X.shape[0]
        return (n if self.X1 is None else self.X1.shape[0],) + (n,) * (self.r - 1)

    def __call__(self, c: Float[Array, " n"]) -> Array:
        n, k = self.X.shape[0], self.r - 3
        sym = self.X1 is None
        X1 = self.X if sym else self.X1
        last = Direction(self.X, c.astype(self.X.dtype))
        idx = jnp.asarray(_index_tuples(n, k))
        out = jax.lax.map(lambda i: _tuple_kernel(self.net, X1, self.X, sym, i, last), idx,
                          batch_size=min(self.chunk, idx.shape[0]))
        return _assemble(out, n, k)
