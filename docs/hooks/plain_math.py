"""MkDocs hook: the Mathematical reference (docs/math.md) shown as the plain text it is written in.

docs/math.md writes its formulas in ASCII, outside code blocks too: inner products as ``<u, v>`` and
subscripts as ``x_(i,p)``. Markdown would read ``<u, v>`` as an HTML tag (and drop it) and a pair of
underscores as emphasis. In prose (not in fenced code blocks or inline code) this hook escapes ``<`` and
``_`` before Markdown sees the page, so the page shows exactly the characters of the file; the file itself
stays the plain text the code cites.
"""

from __future__ import annotations

import re

PAGES = ("math.md",)
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:.+?)\1")


def _escape_prose(text: str) -> str:
    return text.replace("<", "&lt;").replace("_", "\\_")


def _escape_line(line: str) -> str:
    out, pos = [], 0
    for m in INLINE_CODE.finditer(line):
        out += [_escape_prose(line[pos:m.start()]), m.group(0)]
        pos = m.end()
    out.append(_escape_prose(line[pos:]))
    return "".join(out)


def plain(markdown: str) -> str:
    lines, in_fence = [], False
    for line in markdown.split("\n"):
        if FENCE.match(line):
            in_fence = not in_fence
            lines.append(line)
        else:
            lines.append(line if in_fence else _escape_line(line))
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return plain(markdown) if page.file.src_uri in PAGES else markdown
