"""MkDocs hook: the CLI reference, generated at build time from ``nth.cli.build_parser()``.

``docs/cli.md`` holds the placeholder line ``<!-- nth-cli-reference -->``; this hook replaces it with the
``--help`` text of ``nth``, of every subcommand and of every subcommand of a subcommand (``nth plot ...``),
each under its own heading, so the page always states what the installed code accepts.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys

PLACEHOLDER = "<!-- nth-cli-reference -->"
#: Help is wrapped at this many columns whatever the terminal building the docs (argparse reads COLUMNS).
COLUMNS = 100
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _build_parser() -> argparse.ArgumentParser:
    try:
        from nth.cli import build_parser
    except ImportError:  # building from a checkout where nth is not installed: import it from the repository
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        from nth.cli import build_parser
    return build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser``, in the order they were added."""
    action = _subparsers(parser)
    return dict(action.choices) if action is not None else {}


def _summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each subcommand's one-line help, as ``nth --help`` lists it."""
    action = _subparsers(parser)
    return {a.dest: a.help or "" for a in action._choices_actions} if action is not None else {}


def _help(parser: argparse.ArgumentParser) -> str:
    if hasattr(parser, "color"):  # Python >= 3.14 colors help on a terminal: the page wants plain text
        parser.color = False
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(COLUMNS + 2)  # argparse wraps at COLUMNS - 2
    try:
        return ANSI.sub("", parser.format_help()).rstrip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _cell(text: str) -> str:
    """Plain text as a Markdown table cell: no HTML, emphasis or column breaks."""
    text = html.escape(text, quote=False)
    for ch in "\\`*_[]|":
        text = text.replace(ch, "\\" + ch)
    return text


def _anchor(prog: str) -> str:
    return "#" + prog.replace(" ", "-")


def _section(parser: argparse.ArgumentParser, level: int) -> list[str]:
    out = [f"{'#' * level} `{parser.prog}`", "", "```text", _help(parser), "```", ""]
    for sub in _subcommands(parser).values():
        out += _section(sub, level + 1)
    return out


def cli_reference() -> str:
    """The whole reference as Markdown: a table of the subcommands, ``nth --help``, then one section per
    subcommand with its full help (nested for the subcommands of ``nth plot``)."""
    parser = _build_parser()
    subs, summaries = _subcommands(parser), _summaries(parser)
    out = ["| command | what it does |", "|---|---|"]
    for name, sub in subs.items():
        out.append(f"| [`{sub.prog}`]({_anchor(sub.prog)}) | {_cell(summaries.get(name, ''))} |")
    out.append("")
    out += _section(parser, 2)
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, cli_reference())
