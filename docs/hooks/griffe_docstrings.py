"""Griffe extension: nth's docstrings rendered as the prose they are written in.

nth's docstrings are plain text with ``double backtick`` code, Sphinx roles (``:func:`~nth.kernels```,
``:class:``, ``:mod:``, ...) and ASCII formulas such as ``<u, v>_eta``. Markdown would show a role as the
literal text ``:func:`` followed by the code, and would read ``<u, v>`` as an HTML tag and drop it. Once the
whole package is loaded, this extension rewrites every docstring:

- ``<`` in prose (not in code spans or indented code blocks) becomes ``&lt;``, so formulas show as written;
- every role becomes an optional mkdocs-autorefs cross-reference: a link where the target is rendered
  somewhere in the site, plain code otherwise (e.g. a private helper). A leading ``~`` shows only the last
  component of the name, as in Sphinx; a name without the package prefix is resolved in the scope of the
  object whose docstring holds it.

Nothing in the source changes; only the text handed to the Markdown renderer.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|type):`(?P<tilde>~?)(?P<target>[^`]+)`")
CODE_SPAN = re.compile(r"(`+).+?\1")


def _identifier(obj: griffe.Object, target: str) -> str:
    head, _, rest = target.partition(".")
    if head == obj.package.name:
        return target
    try:
        resolved = obj.resolve(head)
    except Exception:  # a name griffe cannot resolve: keep it as written (rendered as plain code)
        return target
    return f"{resolved}.{rest}" if rest else resolved


def _escape_prose(line: str) -> str:
    """``<`` outside code spans as ``&lt;`` (roles count as code: their targets hold no ``<``)."""
    out, pos = [], 0
    for m in CODE_SPAN.finditer(line):
        out += [line[pos:m.start()].replace("<", "&lt;"), m.group(0)]
        pos = m.end()
    out.append(line[pos:].replace("<", "&lt;"))
    return "".join(out)


def escape_html(text: str) -> str:
    """Escape ``<`` in every line but those of indented code blocks (4 spaces after a blank line)."""
    lines, in_code, previous_blank = [], False, True
    for line in text.split("\n"):
        blank = not line.strip()
        indented = line.startswith("    ")
        in_code = (indented and (in_code or previous_blank)) or (blank and in_code)
        lines.append(line if in_code or blank else _escape_prose(line))
        previous_blank = blank
    return "\n".join(lines)


def link_roles(obj: griffe.Object, text: str) -> str:
    def sub(match: re.Match) -> str:
        target = match["target"].strip().removesuffix("()")
        title = target.rsplit(".", 1)[-1] if match["tilde"] else target
        identifier = html.escape(_identifier(obj, target), quote=True)
        return f'<autoref identifier="{identifier}" optional>`{title}`</autoref>'

    return ROLE.sub(sub, text)


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class PlainDocstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = link_roles(obj, escape_html(obj.docstring.value))
