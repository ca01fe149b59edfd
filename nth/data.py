"""Training data: the built-in default problem, user ``.npz`` files, and input normalization.

Inputs are normalized as HY Assumption 2.2 asks (c < |x|_2 <= 1/c); the default projects every input onto
the unit sphere (docs/math.md section 1). The normalization applied is kept on the :class:`Dataset`.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from typing import NamedTuple

import numpy as np
from jaxtyping import Float, Int

import equinox as eqx

from .checks import as_real, check_all_finite
from .errors import DataError

NORMALIZATIONS = ("sphere", "none")


class Dataset(eqx.Module):
    """Training inputs ``X`` (n, ...), targets ``y`` ((n,), (n, k), or integer class labels (n,)), optional test
    inputs ``X_test`` (k, ...): vectors (n, d) for the MLP and the ResNet, any shape for a CNN or the user's own
    model. ``labels`` and ``labels_test``: the class labels 0..C-1 of the training and test inputs, where the
    data have classes (what accuracies are measured against; docs/math.md section 10)."""

    X: Float[np.ndarray, "n *in"]
    y: Float[np.ndarray, "n *k"]
    X_test: Float[np.ndarray, "k *in"] | None = None
    normalization: str = eqx.field(static=True, default="sphere")
    source: str = eqx.field(static=True, default="default")
    has_targets: bool = eqx.field(static=True, default=True)
    labels: Int[np.ndarray, " n"] | None = None
    labels_test: Int[np.ndarray, " k"] | None = None

    @property
    def classes(self) -> int | None:
        """C, the number of classes (from the labels), or None for data without classes."""
        return None if self.labels is None else max(2, int(np.max(self.labels)) + 1)

    @property
    def targets(self) -> int:
        """Targets per input: k for ``y`` of shape (n, k), else 1."""
        return int(self.y.shape[1]) if self.y.ndim == 2 else 1

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        """Entries of one input (its dimension, for vectors)."""
        return int(np.prod(self.X.shape[1:]))

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.X.shape[1:])

    @property
    def k(self) -> int:
        return 0 if self.X_test is None else int(self.X_test.shape[0])


def normalize_inputs(X: np.ndarray, how: str, name: str = "X", source: str = "data") -> np.ndarray:
    """Apply the input normalization ``how`` (HY Assumption 2.2): ``sphere`` maps x -> x / |x|_2 (the norm over all
    entries of one input, whatever its shape)."""
    if how == "none":
        return X
    if how != "sphere":
        raise DataError(f"normalization {how!r} is not known; accepted: {', '.join(NORMALIZATIONS)}")
    flat = X.reshape(X.shape[0], -1)
    scale = np.max(np.abs(flat), axis=1, keepdims=True)
    if (scale == 0).any():
        i = int(np.argwhere(scale.ravel() == 0)[0, 0])
        raise DataError(f"{source}: row {i} of '{name}' is zero and cannot be projected onto the unit sphere "
                        "(HY Assumption 2.2 needs |x| > 0); remove it or use normalization 'none'")
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(flat, axis=1, keepdims=True)
    # |x|^2 overflows above ~1e154 and underflows below ~1e-154: there, |x| = s |x / s| with s = max |x_i|
    extreme = ~np.isfinite(norms) | (norms < 1e-150) | (scale > 1e150)
    if extreme.any():
        norms = np.where(extreme, scale * np.linalg.norm(flat / scale, axis=1, keepdims=True), norms)
    return (flat / norms).reshape(X.shape)


def check_magnitude(X: np.ndarray, name: str, source: str) -> None:
    """Refuse inputs whose squared norm overflows float64 (the network's first layer would return inf or NaN)."""
    with np.errstate(over="ignore"):
        sq = np.sum(np.square(X.reshape(X.shape[0], -1)), axis=1)
    if not np.isfinite(sq).all():
        i = int(np.argwhere(~np.isfinite(sq))[0, 0])
        big = float(np.max(np.abs(X[i])))
        raise DataError(f"{source}: row {i} of '{name}' has entries as large as {big:.3g}: its squared norm overflows "
                        "float64, so the network's outputs would be inf or NaN; rescale the inputs or use normalization "
                        "'sphere' (x -> x/|x|, computed without overflow)")


def _real_array(name: str, value, source: str, what: str) -> np.ndarray:
    """``value`` as a float64 array; complex or non-numeric entries are refused (:func:`nth.checks.as_real`), never
    silently converted."""
    return np.asarray(as_real(name, value, where=source, what=what), dtype=np.float64)


def check_labels(name: str, labels, rows: int, source: str) -> np.ndarray | None:
    """Class labels: ``rows`` non-negative integers (integral floats accepted), or None; DataError naming the
    first entry that is not a label."""
    if labels is None:
        return None
    v = _real_array(name, labels, source, "class labels")
    if v.shape != (rows,):
        raise DataError(f"{source}: {name!r} has shape {v.shape}; expected ({rows},), one class label per input")
    bad = ~np.isfinite(v) | (v != np.round(v)) | (v < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{source}: {name!r} has {int(bad.sum())} entries that are not class labels 0, 1, 2, ..., "
                        f"first at index ({i},) ({v[i]})")
    return v.astype(np.int64)


def make_dataset(X: Float[np.ndarray, "n *in"], y: Float[np.ndarray, "n *k"], X_test: Float[np.ndarray, "k *in"] | None = None,
                 *, normalization: str = "sphere", source: str = "arrays", labels=None,
                 labels_test=None) -> Dataset:
    """Validate and normalize user arrays: ``X`` (n, ...) with n >= 1, ``y`` (n,) or (n, k), ``X_test`` (k, ...)
    shaped like X's rows; optional class ``labels`` (n,) and ``labels_test`` (k,) (non-negative integers)."""
    X, y = _real_array("X", X, source, "inputs"), _real_array("y", y, source, "targets")
    if X.ndim < 2:
        raise DataError(f"{source}: 'X' has shape {X.shape}; expected (n, d) or (n, ...) with one row per input")
    n = X.shape[0]
    if n == 0:
        raise DataError(f"{source}: 'X' has n = 0 rows; at least one training point is needed")
    if X[0].size == 0:
        raise DataError(f"{source}: 'X' has shape {X.shape}; inputs need at least one entry")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise DataError(f"{source}: 'y' has shape {y.shape}; expected ({n},) or ({n}, k) to match 'X' {X.shape} "
                        "(one target per input, or k per input for k outputs)")
    check_all_finite("X", X, where=source, what="inputs")
    check_all_finite("y", y, where=source, what="targets")
    Xt = None
    if X_test is not None:
        Xt = _real_array("X_test", X_test, source, "inputs")
        if Xt.ndim >= 1 and Xt.shape[0] == 0:
            raise DataError(f"{source}: 'X_test' has 0 rows; leave it out of the file for a run without test inputs")
        if Xt.shape[1:] != X.shape[1:]:
            want = ", ".join(map(str, X.shape[1:]))
            raise DataError(f"{source}: 'X_test' has shape {Xt.shape}; expected (k, {want}) to match 'X'")
        check_all_finite("X_test", Xt, where=source, what="inputs")
        if normalization == "none":
            check_magnitude(Xt, "X_test", source)
        Xt = normalize_inputs(Xt, normalization, "X_test", source)
    if normalization == "none":
        check_magnitude(X, "X", source)
    with np.errstate(over="ignore"):
        if not np.isfinite(np.sum(np.square(y))):
            raise DataError(f"{source}: 'y' has entries as large as {float(np.max(np.abs(y))):.3g}: the squared loss "
                            "overflows float64; rescale the targets")
    X = normalize_inputs(X, normalization, "X", source)
    labels = check_labels("labels", labels, n, source)
    if labels_test is not None and Xt is None:
        raise DataError(f"{source}: 'labels_test' is given without 'X_test'")
    labels_test = check_labels("labels_test", labels_test, 0 if Xt is None else Xt.shape[0], source)
    return Dataset(X=X, y=y, X_test=Xt, normalization=normalization, source=source, labels=labels,
                   labels_test=labels_test)


def default_problem(n: int = 16, d: int = 8, seed: int = 0, n_test: int = 0) -> Dataset:
    """The built-in problem: n inputs uniform on the unit sphere S^(d-1) and smooth targets.

    y_b = sin(2 u.x_b) + 0.5 cos(3 v.x_b) with fixed random unit vectors u, v: O(1), smooth, and not a
    function a linear model fits exactly. ``n_test`` test inputs come from the same distribution (from a
    separate random stream, so the training set does not depend on n_test).
    """
    for name, val, lo in (("n", n, 1), ("d", d, 1), ("n_test", n_test, 0)):
        if not isinstance(val, (int, np.integer)) or val < lo:
            raise DataError(f"{name} = {val!r} must be an integer >= {lo} for the default problem")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    u, v = rng.standard_normal((2, d))
    u /= np.linalg.norm(u)
    v /= np.linalg.norm(v)
    Xs = normalize_inputs(X, "sphere")
    y = np.sin(2.0 * Xs @ u) + 0.5 * np.cos(3.0 * Xs @ v)
    X_test = np.random.default_rng([seed, 1]).standard_normal((n_test, d)) if n_test else None
    return make_dataset(X, y, X_test, normalization="sphere",
                        source=f"default(n={n}, d={d}, seed={seed}, n_test={n_test})")


def digits_problem(per_class: int = 10, classes: int | tuple[int, ...] = (0, 1), n_test: int = 0,
                   seed: int = 0, images: bool = False) -> Dataset:
    """Classes of scikit-learn's bundled 8x8 digits (no download): ``classes`` names the digits (a tuple), or an
    int C takes the digits 0..C-1; ``per_class`` training images of each, pixels projected onto the unit sphere
    of R^64 (HY Assumption 2.2), like DG's two-class MNIST experiments. The labels are the classes' positions
    0..C-1 (``labels``, ``labels_test``); the squared-loss targets ``y`` are -1 and +1 for two classes and the
    one-hot vectors (n, C) for more. ``n_test`` further images (the classes in turn) are the test inputs.
    Images are drawn without replacement with ``seed``. ``images``: inputs of shape (8, 8) (for a
    convolutional net) instead of vectors of 64 pixels.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("--data digits needs scikit-learn (its digits images ship with it): "
                        "pip install scikit-learn, or pip install 'nth[digits]'") from None
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if not 2 <= classes <= 10:
            raise DataError(f"classes = {classes!r}: the digits have 2 to 10 classes")
        classes = tuple(range(int(classes)))
    if (not isinstance(classes, tuple) or len(classes) < 2 or len(set(classes)) != len(classes)
            or not all(isinstance(c, (int, np.integer)) and 0 <= c <= 9 for c in classes)):
        raise DataError(f"classes = {classes!r} must be 2 to 10 different digits 0..9 (or their number C)")
    for name, val, lo in (("per_class", per_class, 1), ("n_test", n_test, 0)):
        if not isinstance(val, (int, np.integer)) or val < lo:
            raise DataError(f"{name} = {val!r} must be an integer >= {lo}")
    digits = load_digits()
    rng = np.random.default_rng(seed)
    idx = [rng.permutation(np.flatnonzero(digits.target == c)) for c in classes]
    need = per_class + (n_test + 1) // 2
    if min(len(i) for i in idx) < need:
        raise DataError(f"the digits set has {min(len(i) for i in idx)} images of a class; per_class + n_test/2 = "
                        f"{need} is too many")
    train = np.concatenate([i[:per_class] for i in idx])
    test = np.stack([i[per_class:need] for i in idx], axis=1).ravel()[:n_test]
    shape = (8, 8) if images else (64,)
    X = digits.data[train].reshape((-1,) + shape)
    position = {c: j for j, c in enumerate(classes)}
    labels = np.array([position[c] for c in digits.target[train]])
    y = np.where(labels == 1, 1.0, -1.0) if len(classes) == 2 else np.eye(len(classes))[labels]
    Xt = digits.data[test].reshape((-1,) + shape) if n_test else None
    labels_test = np.array([position[c] for c in digits.target[test]]) if n_test else None
    return make_dataset(X, y, Xt, normalization="sphere", labels=labels, labels_test=labels_test,
                        source=f"digits(classes={classes}, per_class={per_class}, n_test={n_test}, seed={seed}"
                        + (", 8x8 images)" if images else ")"))


def npz_headers(path: str, kind: str = "data") -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The shape and dtype of every array of an ``.npz`` file, read from the headers (nothing is loaded);
    DataError if the file is missing, not an .npz archive, or holds pickled objects."""
    if not os.path.exists(path):
        raise DataError(f"{kind} file {path!r} does not exist")
    if os.path.isdir(path):
        raise DataError(f"{kind} file {path!r} is a directory, not an .npz file")
    if not os.path.isfile(path):  # a FIFO or device would block or never end
        raise DataError(f"{kind} file {path!r} is not a regular file; give an .npz file written by numpy.savez")
    if not zipfile.is_zipfile(path):
        size = os.path.getsize(path)
        raise DataError(f"{kind} file {path!r} ({size} bytes) is not an .npz archive; write one with "
                        "numpy.savez(path, X=..., y=...)")
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fh:
                    major, _ = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                out[info.filename[:-4]] = (tuple(int(s) for s in shape), np.dtype(dtype))
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{kind} file {path!r} is not a readable .npz archive ({type(e).__name__}: {e}); write one "
                        "with numpy.savez(path, X=..., y=...)") from None
    for k, (_, dt) in out.items():
        if dt.kind == "c":
            raise DataError(f"{kind} file {path!r}: '{k}' is complex ({dt}); nth trains real networks on real data, so "
                            f"'{k}' must be real")
    pickled = [k for k, (_, dt) in out.items() if dt.hasobject]
    if pickled:
        raise DataError(f"{kind} file {path!r}: arrays {pickled} hold Python objects; nth reads numeric arrays only "
                        "(it never loads pickled data)")
    return out


def read_npz(path: str, kind: str = "data") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles); a missing or unreadable file is a DataError."""
    npz_headers(path, kind)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{kind} file {path!r} is not a readable .npz archive ({type(e).__name__}: {e})") from None


def _check_members(path: str, found, targets: bool) -> None:
    missing = [k for k in (("X", "y") if targets else ("X",)) if k not in found]
    if missing:
        raise DataError(f"data file {path!r} lacks {missing}; it must hold 'X' (n x d, or n x ... for a cnn or "
                        f"your own model){', ' + repr('y') + ' (n,)' if targets else ''} and optionally 'X_test' "
                        f"(k x ...); found {sorted(found)}")


def load_npz(path: str, normalization: str = "sphere", *, targets: bool = True) -> Dataset:
    """Load ``X`` (n, ...), ``y`` (n,) and optional ``X_test`` (k, ...) from an ``.npz`` file. With
    ``targets=False`` (kernels only) ``y`` may be absent; the dataset then has zero targets and
    ``has_targets`` False."""
    arrays = read_npz(path, "data")
    _check_members(path, arrays, targets)
    y = arrays.get("y")
    if y is None:
        y = np.zeros(np.shape(arrays["X"])[:1])
    ds = make_dataset(arrays["X"], y, arrays.get("X_test"), normalization=normalization, source=str(path),
                      labels=arrays.get("labels"), labels_test=arrays.get("labels_test"))
    return ds if "y" in arrays else dataclasses.replace(ds, has_targets=False)


class ProblemShape(NamedTuple):
    """The sizes of a dataset, known before it is loaded: ``n`` inputs of shape ``in_shape``, ``k`` test inputs."""

    n: int
    in_shape: tuple[int, ...]
    k: int
    source: str
    classes: int | None = None
    targets: int = 1

    @property
    def d(self) -> int:
        return int(np.prod(self.in_shape))


def problem_shape(source: str | None, *, n: int = 16, d: int = 8, n_test: int = 0, digits_per_class: int = 10,
                  images: bool = False, targets: bool = True, classes: int = 2) -> ProblemShape:
    """The sizes of the dataset :func:`load_problem` would return, from the arguments and file headers alone
    (nothing is generated or loaded), so that the memory plan can refuse before any allocation."""
    if source is None:
        for name, val, lo in (("n", n, 1), ("d", d, 1), ("n_test", n_test, 0)):
            if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < lo:
                raise DataError(f"{name} = {val!r} must be an integer >= {lo} for the default problem")
        return ProblemShape(int(n), (int(d),), int(n_test), f"default(n={n}, d={d})")
    if source == "digits":
        return ProblemShape(int(classes) * int(digits_per_class), (8, 8) if images else (64,), int(n_test), "digits",
                            int(classes), 1 if classes == 2 else int(classes))
    heads = npz_headers(source, "data")
    _check_members(source, heads, targets)
    X = heads["X"][0]
    if len(X) < 2:
        raise DataError(f"{source}: 'X' has shape {X}; expected (n, d) or (n, ...) with one row per input")
    k = heads["X_test"][0][0] if "X_test" in heads and len(heads["X_test"][0]) else 0
    y = heads["y"][0] if "y" in heads else (X[0],)
    return ProblemShape(X[0], tuple(X[1:]), k, str(source), _file_classes(source, heads),
                        int(y[1]) if len(y) == 2 else 1)


def _file_classes(path: str, heads) -> int | None:
    """The number of classes of an .npz file: from its 'labels', or from a 'y' of integers 0, 1, 2, ...; None
    for targets that are not labels."""
    name = "labels" if "labels" in heads else "y" if "y" in heads and len(heads["y"][0]) == 1 else None
    if name is None:
        return None
    v = np.asarray(read_npz(path)[name], dtype=np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v != np.round(v)) or np.any(v < 0):
        return None
    return max(2, int(v.max()) + 1)


def load_problem(source: str | None, *, n: int = 16, d: int = 8, seed: int = 0, n_test: int = 0,
                 digits_per_class: int = 10, normalization: str = "sphere", images: bool = False,
                 targets: bool = True, classes: int = 2) -> Dataset:
    """The dataset a command names: the built-in problem (``source`` None; ``n``, ``d``, ``seed``, ``n_test``),
    ``"digits"`` (``classes`` C: the digits 0..C-1; ``digits_per_class``, ``n_test``, ``seed``; 8x8 ``images``
    for a cnn), or an ``.npz`` file (``normalization``; ``targets=False``: ``y`` may be absent; optional
    ``labels``, ``labels_test``)."""
    if source is None:
        return default_problem(n, d, seed=seed, n_test=n_test)
    if source == "digits":
        return digits_problem(digits_per_class, classes=(0, 1) if classes == 2 else classes, n_test=n_test,
                              seed=seed, images=images)
    return load_npz(source, normalization=normalization, targets=targets)
