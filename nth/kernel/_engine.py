"""Higher-order kernels K^(2) ... K^(p) of any model at given weights, by forward mode (docs/math.md section 2).

    K^(2)(s1, s2)           = < grad f_s1, grad f_s2 >_eta
    K^(r+1)(s1..sr, s')     = < grad K^(r)(s1..sr), grad f_s' >_eta         (HY Theorem 2.3, Eqs. 7, 9-10)

so K^(r+1)(..., s') is the directional derivative of theta -> K^(r)(...; theta) along eta . grad f_s'(theta).
The slots run over samples s = (a, i), input a and output i, flattened input first (s = a k + i; docs/math.md
section 10): with N = n k samples K^(r) has shape (N,)*r, and with one output per input (k = 1) a sample is an
input.
Levels nest: inside K^(r) the directions are themselves functions of theta and are differentiated too. One
tuple of directions (b_3..b_r) is computed by a kernel implementation (:mod:`nth.kernel._impl`: the model's
structured path, or nested JVPs through its forward pass). This module is the engine around it: the n^(r-2)
direction tuples go in batches (one compiled, vmapped call per batch; a Python loop over batches with
progress), each batch is sharded across devices when there are several, several models (seeds of one
width) can be computed together, test inputs can fill the first slot (HY Eq. 22), the top level can be
applied matrix-free, and the memory of all of it is planned before anything is allocated.

Only symmetry in the first two slots holds in general (docs/math.md section 3); nothing else is assumed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._cluster import shared_map
from ..checks import check_tree_finite
from ..errors import ConfigError
from ..models import AbstractModel, Direction, as_model, check_inputs as check_model_inputs, num_outputs
from ..models import output_shape, sample_direction
from ..models._base import first_model
from ._impl import AbstractKernelImplementation, implementation as choose_implementation
from ._plan import plan_kernels

KernelFn = Callable[[AbstractModel, Array, Array], Array]


def _index_tuples(n: int, k: int) -> np.ndarray:
    """Every (s_3, ..., s_(k+2)) of n samples in C order (the last slot fastest): shape (n^k, k)."""
    if k == 0:
        return np.zeros((1, 0), dtype=np.int32)
    return np.stack(np.unravel_index(np.arange(n**k), (n,) * k), axis=-1).astype(np.int32)


def _tuple_kernel(impl: AbstractKernelImplementation, model: AbstractModel, X1: Array, X: Array, sym: bool,
                  idx: Array, out_shape: tuple[int, ...], last: Direction | None = None, level: int = 2) -> Array:
    """K^(r)(X1, X, .., s_(level+1), ..) for one tuple of sample indices ``idx`` of the slots after ``level``
    (outputs of per-input shape ``out_shape``), shape (N1, N, (N,) * (level - 2)); ``last`` (if given) fills
    the final slot."""
    dirs = tuple(sample_direction(X, i, out_shape) for i in idx) + (() if last is None else (last,))
    return impl.directional_kernel(model, X1, None if sym else X, level, dirs)


def _assemble(out: Array, n: int, k: int, head: int = 2) -> Array:
    """(..., n^k, *h) in C order over the direction slots -> (..., *h, b_1, ..., b_k), where the ``head`` trailing
    axes h are the slots of the differentiated quantity: (n1, n) for K^(2), (n1,) for the outputs f."""
    lead = out.shape[: out.ndim - 1 - head]
    out = out.reshape(lead + (n,) * k + out.shape[out.ndim - head:])
    nl = len(lead)
    return jnp.moveaxis(out, tuple(range(nl + k, nl + k + head)), tuple(range(nl, nl + head)))


class TensorSpec(NamedTuple):
    """A tensor of the hierarchy computed one direction tuple at a time: ``tuple_fn(model, X1, X, sym, idx,
    out_shape)`` gives its entries for the sample indices ``idx`` of the direction slots (``slots`` of them), with
    ``head`` trailing axes over samples ((N1, N) for a derivative of K^(2), (N1,) for one of the outputs).
    ``label`` names it in progress bars."""

    label: str
    slots: int
    head: int
    tuple_fn: Callable[..., Array]


class _KernelTuple(eqx.Module):
    """K^(r)(X1, X, .., b_(level+1), ..) for one index tuple of the slots after ``level`` by the implementation
    ``impl`` (hashable, so one compiled batch function serves every call)."""

    impl: AbstractKernelImplementation = eqx.field(static=True)
    level: int = eqx.field(static=True, default=2)

    def __call__(self, model, X1, X, sym, idx, out_shape):
        return _tuple_kernel(self.impl, model, X1, X, sym, idx, out_shape, level=self.level)


def _ntk_spec(impl: AbstractKernelImplementation, r: int) -> TensorSpec:
    """K^(r) as a tensor of the engine: the implementation's whole level s in the head, r - s direction slots."""
    s = impl.level(r)
    return TensorSpec(f"K^({r})", r - s, s, _KernelTuple(impl, s))


def ntk(model: AbstractModel, X: Float[Array, "n *in"], X2: Float[Array, "n2 *in"] | None = None, *,
        implementation="auto") -> Float[Array, "N N2"]:
    """The empirical NTK K^(2)(X, X2) = J diag(eta) J2^T over samples (HY Eq. 7; docs/math.md section 10; X2
    defaults to X): shape (n k, n2 k) for k outputs per input. Differentiable in theta to any order. The MLP's
    structured path never forms the Jacobian."""
    model = as_model(model)
    X = check_model_inputs(model, X, where="ntk")
    X2 = None if X2 is None else check_model_inputs(model, X2, "X2", where="ntk")
    check_tree_finite("model", model, where="ntk", what="weights")
    impl = choose_implementation(model, implementation)
    return impl.directional_ntk(model, X, X2, ())


def kernel_fn(r: int, chunk: int | None = None, implementation="auto") -> KernelFn:
    """The function (model, X1, X) -> K^(r)(X1, X, ..., X; theta), shape (N1,) + (N,)*(r-1) over samples
    (N = n k, N1 = n1 k for k outputs per input; HY Eqs. 10, 22).

    The first slot runs over the samples of X1 (the training inputs X itself, or test inputs), every other
    slot over those of the training inputs X. Pure and differentiable in theta to any order (the NTH identity tests
    differentiate it along the flow); ``chunk`` direction tuples are evaluated at once (all if None).
    """
    _check_r(r, "kernel_fn")
    if chunk is not None and (not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk < 1):
        raise ConfigError(f"kernel_fn: chunk = {chunk!r} must be a positive integer (or None for all at once)")

    def fn(model: AbstractModel, X1: Array, X: Array) -> Array:
        model = as_model(model)
        sym = X1 is X
        X = check_model_inputs(model, X, where=f"kernel_fn({r})")
        X1 = X if sym else check_model_inputs(model, X1, "X1", where=f"kernel_fn({r})")
        check_tree_finite("model", model, where=f"kernel_fn({r})", what="weights")
        spec = _ntk_spec(choose_implementation(model, implementation), r)
        out_shape = output_shape(model, X.shape[1:], X.dtype)
        N, k = X.shape[0] * num_outputs(out_shape), spec.slots
        idx = jnp.asarray(_index_tuples(N, k))
        out = jax.lax.map(lambda i: spec.tuple_fn(model, X1, X, sym, i, out_shape), idx,
                          batch_size=chunk or idx.shape[0])
        return _assemble(out, N, k, spec.head)

    return fn


@eqx.filter_jit
def _batch(spec: TensorSpec, model, X1, X, idx, sym: bool, stacked: bool, out_shape: tuple[int, ...]):
    def one(m):
        return jax.vmap(lambda i: spec.tuple_fn(m, X1, X, sym, i, out_shape))(idx)

    return eqx.filter_vmap(one)(model) if stacked else one(model)


def device_mesh(devices, axis: str = "tuples"):
    """A 1-D mesh named ``axis`` over ``devices`` (a list, an int count, or None for every local device), or None
    for one device."""
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
    return jax.sharding.Mesh(np.array(devs), (axis,))


def kernel(model: AbstractModel, X: Float[Array, "n *in"], r: int, *, first: Float[Array, "k *in"] | None = None,
           chunk: int = 1, progress: bool = False, devices=None, implementation="auto",
           stacked: bool = False, share: bool = False) -> Float[Array, "k n ..."]:
    """One dense K^(r)(first, X, ..., X) at the weights of ``model`` (``first`` defaults to X); no budget check.

    The n^(r-2) direction tuples go in batches of ``chunk``; with several ``devices`` (default: every local
    device) each batch is sharded across them along the tuple axis (the kernel's last slots) and the weights
    and inputs are replicated: the same numbers as on one device, computed in parallel. With ``stacked`` the
    model's parameters carry a leading axis (several seeds of one width) and so does the result. With ``share``,
    under several processes (:mod:`nth._cluster`, every process calling with the same arguments) the batches are
    shared out among the processes (batch i to process i mod P, each on its own local devices) and gathered, so
    that every process returns the whole kernel, equal to one process's bit for bit.
    """
    _check_r(r, "kernel")
    model = as_model(model)
    _, one = first_model(model, "kernel") if stacked else (1, model)
    X = check_model_inputs(one, X, where="kernel")
    first = None if first is None else check_model_inputs(one, first, "first", where="kernel")
    check_tree_finite("model", model, where="kernel", what="weights")
    _check_chunk(chunk, "kernel")
    return _kernel(model, X, r, first=first, chunk=chunk, progress=progress, devices=devices,
                   implementation=implementation, stacked=stacked, share=share)


def _check_r(r, where: str) -> None:
    if not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r < 2:
        raise ConfigError(f"{where}: r = {r!r} must be an integer >= 2")


def _check_chunk(chunk, where: str) -> None:
    if not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk < 1:
        raise ConfigError(f"{where}: chunk = {chunk!r} must be a positive integer")


def _kernel(model: AbstractModel, X: Array, r: int, *, first: Array | None, chunk: int, progress: bool, devices,
            implementation, stacked: bool, share: bool = False) -> Array:
    """:func:`kernel` on checked arguments."""
    spec = _ntk_spec(choose_implementation(model, implementation), r)
    return tensor(model, X, spec, first=first, chunk=chunk, progress=progress, devices=devices, stacked=stacked,
                  share=share)


def tensor(model: AbstractModel, X: Array, spec: TensorSpec, *, first: Array | None, chunk: int, progress: bool,
           devices, stacked: bool, rows: Array | None = None, share: bool = False) -> Array:
    """The tensor ``spec`` at the weights of ``model`` on checked arguments (K^(r) of HY Eq. 10 and docs/math.md
    section 2, or a tensor of the discrete-time hierarchy of section 7): its n^slots direction tuples in
    batches of ``chunk`` (one compiled, vmapped call per batch, sharded over ``devices``), assembled with the
    head axes first. The one loop every tensor of the hierarchy goes through (K^(r), and the tensors of the
    discrete-time hierarchy, :mod:`nth.kernel._gd`). ``rows`` (test inputs, with ``first`` None): the head runs
    symmetrically over X followed by them, the direction slots over X alone (:func:`kernels_and_test`).
    ``share``: the batches shared out among the processes and gathered (:func:`kernel`)."""
    sym = first is None
    X1 = X if sym else first
    if rows is not None:
        X1 = jnp.concatenate([X, rows.astype(X.dtype)])
    out_shape = output_shape(model, X.shape[1:], X.dtype, stacked)
    n, k = X.shape[0] * num_outputs(out_shape), spec.slots  # n samples in every direction slot
    idx = _index_tuples(n, k)
    mesh = device_mesh(devices)
    if mesh is not None:
        nd = mesh.devices.size
        chunk = -(-chunk // nd) * nd
        rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        arrays, rest = eqx.partition(model, eqx.is_array)  # only arrays go to the devices (a model may hold functions)
        model = eqx.combine(jax.device_put(arrays, rep), rest)
        X1, X = jax.device_put((X1, X), rep)
    starts = list(range(0, idx.shape[0], chunk))
    it = starts
    if progress and len(starts) > 1:
        from tqdm.auto import tqdm

        it = tqdm(starts, desc=spec.label + ("" if sym and rows is None else " (test)" if rows is None else
                                             " (training and test)"), unit="batch", leave=False)

    def batch(s: int) -> Array:
        ib = idx[s : s + chunk]
        size = ib.shape[0]
        if size < chunk:  # pad so one compiled function serves every batch
            ib = np.concatenate([ib, np.zeros((chunk - size, k), ib.dtype)])
        ib = jnp.asarray(ib)
        if mesh is not None:
            ib = jax.device_put(ib, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tuples")))
        out = _batch(spec, model, X1, X, ib, sym, stacked, out_shape)
        return out[(..., slice(0, size)) + (slice(None),) * spec.head]

    # with share every process computes its share of the batches, gathered into every process (nth._cluster);
    # the progress bar (it) advances as they arrive
    parts = [v for (_, v), _ in zip(shared_map(batch, starts, share=share), it)]
    return _assemble(_concatenate(parts, -1 - spec.head), n, k, spec.head)


def _concatenate(parts: list[Array], axis: int, group: int = 64) -> Array:
    """``jnp.concatenate(parts, axis)`` in a tree of groups of at most ``group`` arrays: XLA's compile time of one
    concatenation grows faster than its operand count (tens of thousands of batches of one tuple took minutes)."""
    while len(parts) > group:
        parts = [jnp.concatenate(parts[i : i + group], axis=axis) for i in range(0, len(parts), group)]
    return jnp.concatenate(parts, axis=axis)


def _prepare(model, X, p, first, memory_budget, chunk, matrix_free, implementation, stacked, share=False):
    """:func:`kernels`' checks and memory plan (refused over the budget): (model, X, first, the per-input output
    shape, the plan)."""
    if stacked and matrix_free:
        raise ConfigError("matrix-free kernels are computed one model at a time; do not batch seeds with it")
    if share and matrix_free:
        raise ConfigError("a matrix-free top level is applied on demand in one process; share the dense levels "
                          "(matrix_free=False) or compute it without share")
    if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 2:
        raise ConfigError(f"kernels: p = {p!r} must be an integer >= 2 (p = 2 is the frozen NTK)")
    model = as_model(model)
    B, one = first_model(model, "kernels") if stacked else (1, model)
    X = check_model_inputs(one, X, where="kernels")
    X1 = None if first is None else check_model_inputs(one, first, "first", where="kernels")
    check_tree_finite("model", model, where="kernels", what="weights")
    one.check_level(p)
    out_shape = output_shape(one, X.shape[1:], X.dtype)
    plan = plan_kernels(one, X.shape[0], p, implementation=implementation, memory_budget=memory_budget,
                        chunk=chunk, first_rows=None if X1 is None else X1.shape[0], matrix_free=matrix_free,
                        models=B, in_shape=tuple(X.shape[1:]), outputs=num_outputs(out_shape))
    return model, X, X1, out_shape, plan


def kernels(
    model: AbstractModel,
    X: Float[Array, "n *in"],
    p: int,
    *,
    first: Float[Array, "k *in"] | None = None,
    memory_budget: int | None = None,
    chunk: int | None = None,
    progress: bool = False,
    devices=None,
    matrix_free: bool = False,
    implementation="auto",
    stacked: bool = False,
    share: bool = False,
) -> dict[int, Array]:
    """K^(2) ... K^(p) at the weights of ``model``: ``{r: array of shape (N,)*r}`` over the N = n k samples of n
    inputs with k outputs each (HY Eqs. 7, 9-10; docs/math.md section 10).

    ``implementation``: ``"auto"`` (the model's structured path if it has one, else ``"factored"``),
    ``"structured"``, ``"factored"``, ``"contraction"`` or ``"jvp"`` (:mod:`nth.kernel._impl`). With ``first``
    (n1 test inputs), the first slot runs over their samples instead: K^(r)(x, X^(r-1)) of shape (n1 k,) +
    (N,)*(r-1), as
    the test-point equations need (HY Eq. 22). Before anything is allocated, the bytes of every K^(r) and of
    one batch of work are predicted and a :class:`~nth.errors.MemoryBudgetError` is raised if they exceed
    ``memory_budget`` (default: half the RAM, or 75% of an accelerator's memory). ``chunk`` sets how many
    direction tuples are evaluated per compiled call; ``devices`` shards them (see :func:`kernel`). With
    ``matrix_free`` the top level is returned as a :class:`KernelOperator` (K^(p) contracted with a vector in
    its last slot on demand) instead of a dense array. With ``stacked`` the model's parameters carry a leading
    seed axis (every result too). ``share``: every level's batches shared out among the processes of a
    multi-process run and gathered (:func:`kernel`; not with ``matrix_free``).
    """
    model, X, X1, out_shape, plan = _prepare(model, X, p, first, memory_budget, chunk, matrix_free, implementation,
                                             stacked, share)
    top = p - 1 if matrix_free else p
    kw = dict(first=X1, chunk=plan.chunk, progress=progress, devices=devices, implementation=implementation,
              stacked=stacked, share=share)
    out: dict[int, Array] = {r: _kernel(model, X, r, **kw) for r in range(2, top + 1)}
    if matrix_free:
        out[p] = KernelOperator(model=model, X=X, X1=X1, r=p, chunk=plan.chunk,
                                impl=choose_implementation(model, implementation), out_shape=out_shape)
    return out


def kernels_and_test(
    model: AbstractModel,
    X: Float[Array, "n *in"],
    X_test: Float[Array, "k *in"],
    p: int,
    *,
    memory_budget: int | None = None,
    chunk: int | None = None,
    progress: bool = False,
    devices=None,
    matrix_free: bool = False,
    implementation="auto",
    stacked: bool = False,
    share: bool = False,
) -> tuple[dict[int, Array], dict[int, Array]]:
    """(:func:`kernels` at X, :func:`kernels` with ``first=X_test``) with one pass where the implementation
    computes K^(2) whole (its level 2): every direction tuple's K^(2)(Z, Z) over Z = [X; X_test] holds the
    training block (rows and columns of X) and the test block (rows of X_test, columns of X), so the per-input
    work of X is done once instead of twice (docs/math.md section 2: K^(r)(x, X, ..) at test inputs is the same
    derivative with x in the first slot, HY Eq. 22). The (n + k)^2 / n^2 larger K^(r) of that pass is predicted
    with the rest and, where it would pass the budget, or for levels computed whole above 2 (whose further head
    slots would grow too), the two are computed apart, as :func:`kernels` does. ``share`` as in :func:`kernels`."""
    kw = dict(memory_budget=memory_budget, chunk=chunk, progress=progress, devices=devices, matrix_free=matrix_free,
              implementation=implementation, stacked=stacked, share=share)
    model, X, Xt, out_shape, plan = _prepare(model, X, p, X_test, memory_budget, chunk, matrix_free,
                                             implementation, stacked, share)
    impl = choose_implementation(first_model(model, "kernels")[1] if stacked else model, implementation)
    N, Nt = X.shape[0] * num_outputs(out_shape), Xt.shape[0] * num_outputs(out_shape)
    levels = range(2, (p - 1 if matrix_free else p) + 1)
    stored = sum(((N + Nt) * N ** (r - 1)) for r in levels)  # both blocks, kept
    largest = max((N + Nt) ** 2 * N ** (r - 2) for r in levels)  # one level's pass, before its blocks are cut
    need = plan.models * ((stored + largest + plan.num_params) * plan.itemsize + plan.work_bytes)
    if impl.closed_level > 2 or need > plan.budget:
        return kernels(model, X, p, **kw), kernels(model, X, p, first=Xt, **kw)
    train: dict[int, Array] = {}
    test: dict[int, Array] = {}
    lead = (slice(None),) if stacked else ()
    for r in levels:  # one pass over [X; X_test] per level
        both = tensor(model, X, _ntk_spec(impl, r), first=None, chunk=plan.chunk, progress=progress,
                      devices=devices, stacked=stacked, rows=Xt, share=share)
        train[r], test[r] = both[lead + (slice(0, N), slice(0, N))], both[lead + (slice(N, None), slice(0, N))]
    if matrix_free:
        for out, X1 in ((train, None), (test, Xt)):
            out[p] = KernelOperator(model=model, X=X, X1=X1, r=p, chunk=plan.chunk, impl=impl, out_shape=out_shape)
    return train, test


class KernelOperator(eqx.Module):
    """K^(r) applied to a vector over samples in its last slot, never stored: c -> sum_s K^(r)(X1, X, .., s) c_s.

    The contraction is the derivative of K^(r-1) along the weighted direction sum_s c_s eta . grad f_s (HY Eq.
    15: d K^(r-1)/dt = -(1/n) K^(r)[chi]), so it costs N^(r-3) direction tuples instead of N^(r-2), and only
    K^(r-1)-sized memory. Used as the frozen top level of a matrix-free truncated NTH. ``X1 = None`` means the
    training inputs in the first slot; ``out_shape`` is the model's per-input output shape (() or (k,)).
    """

    model: AbstractModel
    X: Array
    X1: Array | None
    r: int = eqx.field(static=True)
    chunk: int = eqx.field(static=True, default=1)
    impl: AbstractKernelImplementation | None = eqx.field(static=True, default=None)
    out_shape: tuple[int, ...] = eqx.field(static=True, default=())

    @property
    def shape(self) -> tuple[int, ...]:
        k = num_outputs(self.out_shape)
        n = self.X.shape[0] * k
        return (n if self.X1 is None else self.X1.shape[0] * k,) + (n,) * (self.r - 1)

    def __call__(self, c: Float[Array, " N"]) -> Array:
        impl = self.impl or choose_implementation(self.model)
        level = impl.level(self.r - 1)  # the contracted slot is one more direction after K^(r-1)'s slots
        n, k = self.X.shape[0], self.r - 1 - level
        N = n * num_outputs(self.out_shape)
        sym = self.X1 is None
        X1 = self.X if sym else self.X1
        last = Direction(self.X, c.astype(self.X.dtype).reshape((n,) + self.out_shape))
        idx = jnp.asarray(_index_tuples(N, k))
        out = jax.lax.map(lambda i: _tuple_kernel(impl, self.model, X1, self.X, sym, i, self.out_shape, last, level),
                          idx, batch_size=min(self.chunk, idx.shape[0]))
        return _assemble(out, N, k, level)
