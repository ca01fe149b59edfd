"""``python -m nth``: the ``nth`` command."""

from .cli import entry

entry()
