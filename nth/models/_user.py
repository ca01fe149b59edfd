"""The user's own model: ``make_model(width, key)`` from a Python file or an importable module.

``--model FILE.py:make_model`` or ``--model package.module:make_model`` names a function that takes the width
(an int) and a JAX PRNG key and returns an Equinox module mapping inputs (n, ...) to outputs (n,); its
inexact-array leaves are the trained parameters. The file is executed as ordinary Python (it is the user's
own code, named explicitly on the command line).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

import jax

from ..errors import ConfigError
from ._base import AbstractModel, as_model


def load_factory(spec: str, what: str = "model") -> Callable[..., Any]:
    """The function named by ``spec`` (``FILE.py:func`` or ``package.module:func``); ConfigError if it cannot be
    loaded, with the reason in one line (``what`` it is: "model" for make_model, "loss" for a per-input loss)."""
    func = "make_model" if what == "model" else "fn"
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(f"{what} = {spec!r}: expected FILE.py:{func} or package.module:{func}")
    where, name = spec.split(":")
    try:
        if where.endswith(".py") or os.sep in where:
            if not os.path.isfile(where):
                raise ConfigError(f"{what} file {where!r} does not exist")
            mod_name = f"nth_user_{what}_" + hashlib.sha1(os.path.abspath(where).encode()).hexdigest()[:12]
            module = sys.modules.get(mod_name)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(mod_name, where)
                if loader_spec is None or loader_spec.loader is None:
                    raise ConfigError(f"{what} file {where!r} cannot be loaded as Python")
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[mod_name] = module
                try:
                    loader_spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[mod_name]
                    raise
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as e:  # the user's file failed to import: say why in one line
        raise ConfigError(f"{what} {spec!r}: importing {where!r} failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        raise ConfigError(f"{what} {spec!r}: {where!r} has no function {name!r}")
    return fn


def build_user_model(spec: str, width: int, seed: int, in_shape: tuple[int, ...] | None = None) -> AbstractModel:
    """``make_model(width, jax.random.PRNGKey(seed))`` from ``spec``, as an nth model (:func:`as_model`) taking
    inputs of shape ``in_shape``."""
    fn = load_factory(spec)
    try:
        model = fn(width, jax.random.PRNGKey(seed))
    except Exception as e:
        raise ConfigError(f"model {spec!r}: make_model({width}, key) raised {type(e).__name__}: {e}") from None
    return as_model(model, width=width, source=spec, in_shape=in_shape)
