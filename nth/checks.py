"""Input checks shared by the data and weight loaders: messages name the array, the count and the place."""

from __future__ import annotations

import numpy as np

from .errors import DataError


def check_finite(name: str, arr: np.ndarray, source: str, what: str = "values") -> None:
    """Raise DataError if ``arr`` holds NaN or inf, naming the first offending index."""
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{source}: '{name}' has non-numeric dtype {arr.dtype}")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{source}: '{name}' has {int(bad.sum())} non-finite value(s), first at index {idx} "
                        f"({arr[idx]!r}); all {what} must be finite")
