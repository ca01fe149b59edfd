"""Configurations made of parts: each field is declared once, in the part it belongs to.

A :class:`Composed` configuration (a frozen dataclass) holds parts (frozen dataclasses: the model, the data,
the training, the solver) next to fields of its own. Every field of every part is also reachable by its own
name, ``cfg.width`` for ``cfg.network.width``, and a flat keyword names the field of the one part that declares
it: ``SolveConfig(p=4, width=64)`` is ``SolveConfig(solver=Solver(p=4), network=ModelSpec(width=64))``, and a flat
keyword given with its part replaces that field of the given part (so ``dataclasses.replace(cfg, width=128)``
and :meth:`Composed.replace` work field by field). Field names are distinct across the parts (checked).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any


def part(cls: type, **defaults: Any) -> Any:
    """A dataclass field holding a part of a :class:`Composed` configuration (default: the part with its own
    defaults, or with ``defaults`` where the configuration sets others)."""
    factory = functools.partial(cls, **defaults) if defaults else cls
    return dataclasses.field(default_factory=factory, metadata={"part": cls})


class Composed:
    """Base of a configuration made of parts (module docstring); subclasses are ``@dataclass(frozen=True,
    init=False)`` whose part fields are declared with :func:`part`."""

    def __init__(self, **kwargs: Any):
        cls = type(self)
        owners = cls._owners()
        unknown = sorted(k for k in kwargs if k not in owners and k not in cls._parts() and k not in cls._own())
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(map(repr, unknown))}")
        for f in dataclasses.fields(cls):
            if f.name in kwargs:
                value = kwargs[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                raise TypeError(f"{cls.__name__} needs {f.name!r}")
            if "part" in f.metadata:
                flat = {k: v for k, v in kwargs.items() if owners.get(k) == f.name}
                value = dataclasses.replace(value, **flat) if flat else value
            object.__setattr__(self, f.name, value)

    @classmethod
    def _parts(cls) -> dict[str, type]:
        return {f.name: f.metadata["part"] for f in dataclasses.fields(cls) if "part" in f.metadata}

    @classmethod
    def _own(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if "part" not in f.metadata)

    @classmethod
    @functools.cache
    def _owners(cls) -> dict[str, str]:
        """Field name -> the part that declares it; a name declared twice is a programming error."""
        out: dict[str, str] = {}
        for name, p in cls._parts().items():
            for f in dataclasses.fields(p):
                if f.name in out or f.name in cls._own() or f.name in cls._parts():
                    raise TypeError(f"{cls.__name__}: field {f.name!r} is declared twice ({out.get(f.name, 'own')} "
                                    f"and {name})")
                out[f.name] = name
        return out

    @classmethod
    def flat_fields(cls) -> tuple[dataclasses.Field, ...]:
        """Every field of every part and the configuration's own fields, flat (what options and files name)."""
        return tuple(f for p in cls._parts().values() for f in dataclasses.fields(p)) + tuple(
            f for f in dataclasses.fields(cls) if "part" not in f.metadata)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each flat field's default (a part's as the configuration sets it; a required field has none)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if "part" in f.metadata:
                default = f.default_factory()
                out |= {g.name: getattr(default, g.name) for g in dataclasses.fields(default)}
            elif f.default is not dataclasses.MISSING:
                out[f.name] = f.default
        return out

    def __getattr__(self, name: str) -> Any:
        owner = type(self)._owners().get(name) if not name.startswith("_") else None
        if owner is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(object.__getattribute__(self, owner), name)

    def replace(self, **changes: Any):
        """A copy with ``changes`` (flat field names or whole parts)."""
        return dataclasses.replace(self, **changes)

    def flat(self) -> dict[str, Any]:
        """Every field's value by its flat name (what a file records)."""
        return {f.name: getattr(self, f.name) for f in self.flat_fields()}
