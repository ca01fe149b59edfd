"""Input checks shared by the loaders and configurations: messages name the value, the count and the place."""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError, DataError


def check_scales(**values: float) -> None:
    """Raise ConfigError for the first of ``values`` (e.g. sigma_w=1.0) that is not a finite positive number."""
    for name, val in values.items():
        if not (isinstance(val, (int, float, np.number)) and math.isfinite(val) and val > 0):
            raise ConfigError(f"{name} = {val!r} must be a finite positive number")


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
