"""Input checks shared by the loaders, the configurations and the library's entry points: messages name the
function, the argument, the count and the place.

The array checks (:func:`check_array` and its parts :func:`as_real`, :func:`check_all_finite`,
:func:`match_sizes`, :func:`check_tree_finite`) never break tracing: shapes and dtypes are static and are
always checked, while values (NaN, inf) are checked only on concrete arrays, one ``isfinite(x).all()`` (one
device -> host transfer) per argument, and skipped for JAX tracers (inside ``jit``, ``vmap``, ``grad``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError, DataError

#: An expected shape: sizes, or names (str) for sizes that are free (printed as given, e.g. ("n", 3)).
Shape = tuple


def check_scales(**values: float) -> None:
    """Raise ConfigError for the first of ``values`` (e.g. sigma_w=1.0) that is not a finite positive number."""
    for name, val in values.items():
        if not (isinstance(val, (int, float, np.number)) and math.isfinite(val) and val > 0):
            raise ConfigError(f"{name} = {val!r} must be a finite positive number")


# ---- array arguments of library functions ------------------------------------------------------------


def is_traced(x: Any) -> bool:
    """True for a JAX tracer (an argument inside ``jit``, ``vmap``, ``grad``, ...): its values are unknown."""
    return isinstance(x, jax.core.Tracer)


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def format_shape(shape: Sequence) -> str:
    """A shape as Python prints a tuple, with names allowed: (8,), (n, 3), (B, n, n)."""
    parts = [str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def as_real(name: str, x: Any, *, where: str = "", what: str = "values"):
    """``x`` as an array: a JAX array or tracer as is, a NumPy array as is, anything else through
    ``np.asarray``. Refuses None, non-numeric and complex entries (a DataError naming ``name``); static (no
    values are read), so it is also safe on tracers. Booleans and integers pass (they convert exactly)."""
    if x is None:
        raise DataError(f"{_at(where)}'{name}' is None; expected an array")
    if not (is_traced(x) or isinstance(x, (jax.Array, np.ndarray))):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as e:
            msg = str(e).splitlines()[0] if str(e) else ""
            raise DataError(f"{_at(where)}'{name}' cannot be read as an array of numbers ({type(e).__name__}: "
                            f"{msg})") from None
    dtype = np.dtype(x.dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise DataError(f"{_at(where)}'{name}' is complex ({dtype}); {what} must be real")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise DataError(f"{_at(where)}'{name}' has non-numeric dtype {dtype}; expected an array of real numbers")
    return x


def check_all_finite(name: str, x: Any, *, where: str = "", what: str = "values") -> None:
    """DataError if the concrete array ``x`` holds NaN or inf, naming the count and the first index. One
    ``isfinite(x).all()`` (one transfer) when all is well; nothing at all for a tracer or an exact dtype."""
    if is_traced(x) or not np.issubdtype(np.dtype(x.dtype), np.inexact):
        return
    ok = np.isfinite(x).all() if isinstance(x, np.ndarray) else jnp.isfinite(x).all()
    if not bool(ok):
        raise DataError(f"{_at(where)}'{name}' has {_non_finite(x)}; {what} must be finite")


def _non_finite(x, place: str = "") -> str:
    """'3 non-finite value(s){place}, first at index (1, 2) (nan)' for an array known to hold some."""
    arr = np.asarray(x)
    bad = ~np.isfinite(arr)
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"{int(bad.sum())} non-finite value(s){place}, first at index {idx} ({float(arr[idx])})"


def shape_fits(shape: Sequence[int], expected: Shape) -> bool:
    """``shape`` equals ``expected``, where a name (str) in ``expected`` stands for any size."""
    return len(shape) == len(expected) and all(isinstance(e, str) or int(s) == e for s, e in zip(shape, expected))


def check_array(name: str, x: Any, *, where: str = "", shape: Shape | None = None, ndim: int | None = None,
                why: str = "", finite: bool = True, what: str = "values", dtype=None):
    """``x`` checked and returned as an array (of ``dtype`` if given: then always a JAX array).

    Refused with a :class:`~nth.errors.DataError` that names ``where`` (the function) and ``name`` (the
    argument): None, non-numeric or complex entries; a shape other than ``shape`` (names in it are free
    sizes) or a number of axes other than ``ndim`` (``why`` is appended, e.g. "to match 'y' (8,)"); and, if
    ``finite`` and ``x`` is concrete, NaN or inf (``what`` names the entries: "inputs must be finite").
    Inside ``jit``/``vmap``/``grad`` only the static checks run.
    """
    x = as_real(name, x, where=where, what=what)
    tail = f" {why}" if why else ""
    if ndim is not None and x.ndim != ndim:
        raise DataError(f"{_at(where)}'{name}' has shape {format_shape(x.shape)}; expected a {ndim}-D array{tail}")
    if shape is not None and not shape_fits(x.shape, shape):
        raise DataError(f"{_at(where)}'{name}' has shape {format_shape(x.shape)}; expected "
                        f"{format_shape(shape)}{tail}")
    if finite:
        check_all_finite(name, x, where=where, what=what)
    return x if dtype is None else jnp.asarray(x, dtype=dtype)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def match_sizes(where: str, entries: Sequence[tuple], *, symbol: str = "n", hint: str = "") -> int:
    """The size (``symbol``) that several arrays must share, checked: ``entries`` are (name, shape, axis,
    template) or (name, shape, axis, template, per): the size is read from ``shape[axis]`` (divided by ``per``,
    e.g. the outputs per input of an axis over samples) and ``template(size)`` is the shape the array must have.

    The size is the one most entries agree on (ties: the earliest entry), so the message blames the odd one
    out: "truncated_nth: 'f0' has shape (7,); expected (8,) to match 'kernels[2]' (8, 8) and 'y' (8,)". Raises
    a DataError for the first entry (in order) whose shape is not its template; ``hint`` is appended.
    """
    def vote(s, a, per):
        size = int(s[a])
        return size // per if size % per == 0 else None

    votes = [(vote(e[1], e[2], e[4] if len(e) > 4 else 1), i) for i, e in enumerate(entries)
             if -len(e[1]) <= e[2] < len(e[1])]
    votes = [(v, i) for v, i in votes if v is not None]
    if not votes:
        raise DataError(f"{_at(where)}{_and([repr(e[0]) for e in entries])} have no axis of size {symbol}")
    count = Counter(v for v, _ in votes)
    first = {}
    for v, i in votes:
        first.setdefault(v, i)
    size = max(count, key=lambda v: (count[v], -first[v]))
    fits = [(e[0], tuple(e[1])) for e in entries if tuple(int(d) for d in e[1]) == tuple(e[3](size))]
    for name, s, _, template, *_ in entries:
        want = tuple(template(size))
        if tuple(int(d) for d in s) != want:
            others = [f"'{o}' {format_shape(os)}" for o, os in fits if o != name][:2]
            why = f" to match {_and(others)}" if others else f" ({symbol} = {size})"
            raise DataError(f"{_at(where)}'{name}' has shape {format_shape(s)}; expected {format_shape(want)}"
                            f"{why}{hint}")
    return size


def check_tree_finite(name: str, tree: Any, *, where: str = "", what: str = "values") -> None:
    """DataError if a concrete inexact array leaf of ``tree`` (e.g. a model's weights) holds NaN or inf, naming
    the leaf by its path. One transfer in all when every leaf is finite; tracer leaves are skipped."""
    leaves = [(path, x) for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
              if isinstance(x, (jax.Array, np.ndarray)) and not is_traced(x)
              and np.issubdtype(np.dtype(x.dtype), np.inexact)]
    if not leaves:
        return
    if bool(jnp.stack([jnp.isfinite(x).all() for _, x in leaves]).all()):
        return
    for path, x in leaves:
        if not np.isfinite(np.asarray(x)).all():
            place = f" in {jax.tree_util.keystr(path) or 'its array'}"
            raise DataError(f"{_at(where)}'{name}' has {_non_finite(x, place)}; {what} must be finite")


#: Seeds are integers in 0..2^63 - 1 (what numpy's and JAX's generators both accept).
MAX_SEED = 2**63 - 1


def check_seed(name: str, value) -> None:
    """Raise ConfigError unless ``value`` is an integer seed in 0..MAX_SEED."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} = {value!r} must be an integer in 0..2^63-1")
