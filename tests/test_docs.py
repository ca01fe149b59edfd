"""The documentation site: ``mkdocs build --strict`` succeeds, and the generated pages hold what they are generated
from (the CLI reference from the argument parser, the API pages and the schema page from the docstrings)."""

from __future__ import annotations

import ast
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def page_text(site: Path, page: str) -> str:
    """The visible text of a built page, whitespace collapsed."""
    raw = (site / page / "index.html" if page else site / "index.html").read_text(encoding="utf-8")
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", raw)).split())


def plain(doc: str) -> str:
    """A docstring line as the site shows it: Sphinx roles and backticks removed, whitespace collapsed."""
    doc = re.sub(r":[a-z]+:`~[^`]*?([^.`]+)`", r"\1", doc)  # ~a.b.C shows C
    doc = re.sub(r":[a-z]+:`([^`]+)`", r"\1", doc).replace("``", "")
    return " ".join(doc.split())


def module_docstring(relpath: str) -> str:
    return ast.get_docstring(ast.parse((ROOT / relpath).read_text(encoding="utf-8")))


def test_build_is_strict_clean(site):
    for page in ("", "tutorial", "math", "cli", "hdf5", "api/models", "api/kernels", "api/dynamics", "api/engine",
                 "api/io", "api/compare", "api/plot", "api/errors"):
        assert (site / page / "index.html").is_file(), page
    # the committed figure is published with the site, not copied into docs/
    assert (site / "assets/results/sweep_tanh_d1_f_error_vs_width.png").is_file()


def test_cli_reference_is_generated_from_the_parser(site):
    from nth.cli import build_parser

    text = page_text(site, "cli")
    assert "nth-cli-reference" not in text

    def check(parser):
        assert f"usage: {parser.prog}" in text, parser.prog
        for action in parser._actions:
            if action.choices and hasattr(action, "_choices_actions"):  # subcommands: each has its own section
                for sub in action.choices.values():
                    check(sub)

    check(build_parser())
    # one option's help, as argparse wraps it
    assert "--fit-widths FIT_WIDTHS" in text and "fit on these widths of the sweep only" in text


def test_api_pages_render_docstrings(site):
    import nth

    text = page_text(site, "api/dynamics")
    assert plain(nth.truncated_nth.__doc__.splitlines()[0]) in text
    assert "Solve the truncated NTH at level p (HY Eq. 15; docs/math.md sections 2 and 10)" in text
    assert plain(nth.slope_with_ci.__doc__.splitlines()[0]) in page_text(site, "api/compare")
    assert plain(nth.SolveConfig.__doc__.splitlines()[0]) in page_text(site, "api/engine")
    # Sphinx roles become links or code, never literal text
    assert ":func:" not in text and ":class:" not in text


def test_schema_page_renders_the_schema_modules(site):
    text = page_text(site, "hdf5")
    for module in ("nth/io/_schema.py", "nth/io/_sweep.py", "nth/io/_corr.py"):
        assert plain(module_docstring(module).splitlines()[0]) in text, module
    from nth.io import SCHEMA_VERSION

    assert f"The HDF5 schema (version {SCHEMA_VERSION})" in text


def test_pages_include_the_files_they_show(site):
    index = page_text(site, "")
    assert "pip install -e . && nth solve --p 4" in index  # README's quickstart, included by snippet
    tutorial = page_text(site, "tutorial")
    example = (ROOT / "examples/sweep_and_figure.py").read_text(encoding="utf-8")
    assert plain(module_docstring("examples/sweep_and_figure.py").splitlines()[0]) in tutorial
    assert "nth.run_sweep(" in example and "nth.run_sweep(" in tutorial


# ---- the mathematical reference holds every equation, theorem and section of the papers that the code cites ----

KIND = r"(Eqs?\.|Equations?|Theorems?|Thm\.?|Lemmas?|Corollary|Corollaries|Definitions?|Def\.|Sections?|Sec\.|Tables?|Conjecture|Appendix|Propositions?)"
NUMBER = r"[A-Z]?\d+(?:\.\d+)*"
NUMLIST = rf"{NUMBER}(?:\s*(?:-|,|and)\s*{NUMBER}(?![\w.]*\s*[(=]))*"
ITEM = rf"{KIND}\s*{NUMLIST}"
SOURCES = r"(HY|DG|TP2b|TP4)"
CANON = {"eq": "Eq", "equation": "Eq", "theorem": "Theorem", "thm": "Theorem", "lemma": "Lemma",
         "corollary": "Corollary", "corollarie": "Corollary", "definition": "Definition", "def": "Definition",
         "section": "Section", "sec": "Section", "table": "Table", "conjecture": "Conjecture", "appendix": "Appendix",
         "proposition": "Proposition"}


def _items(text: str) -> set[tuple[str, str]]:
    """(kind, number) of every item cited in ``text``: 'Eqs. 9-10' gives Eq 9 and Eq 10, 'Theorems 3.3, 3.4'
    gives both."""
    out = set()
    for m in re.finditer(rf"{KIND}\s*({NUMLIST})", text):
        kind = CANON[m.group(1).rstrip(".").lower().rstrip("s")]
        for part in re.split(r"\s*(?:,|and)\s*", m.group(2)):
            ends = re.split(r"\s*-\s*", part)
            if len(ends) == 2 and ends[0].isdigit() and ends[1].isdigit():
                out.update((kind, str(k)) for k in range(int(ends[0]), int(ends[1]) + 1))
            else:
                out.update((kind, e) for e in ends)
    return out


def code_citations() -> dict[tuple[str, str, str], str]:
    """{(paper, kind, number): file} for every citation of a paper in the package's source ('HY Eq. 10', 'TP4
    Definition 3.2, Theorems 3.3, 3.4', ...)."""
    cites = {}
    for path in sorted((ROOT / "nth").rglob("*.py")):
        text = " ".join(path.read_text(encoding="utf-8").replace("#", " ").split())
        for m in re.finditer(rf"\b{SOURCES}\s+({ITEM}(?:\s*[,;]\s*{ITEM})*)", text):
            for kind, number in _items(m.group(2)):
                cites.setdefault((m.group(1), kind, number), str(path.relative_to(ROOT)))
    return cites


def test_math_reference_holds_every_citation_of_the_code():
    """Each paper citation in nth/ (docstrings and comments) appears in docs/math.md, in a paragraph that names
    the same paper, so the reference the docs site publishes states everything the code cites."""
    text = (ROOT / "docs" / "math.md").read_text(encoding="utf-8")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    found = {(src, *item) for p in paragraphs for src in set(re.findall(rf"\b{SOURCES}\b", p)) for item in _items(p)}
    cites = code_citations()
    assert len(cites) > 30 and ("HY", "Eq", "10") in cites and ("TP4", "Theorem", "3.8") in cites
    missing = {c: f for c, f in cites.items() if c not in found}
    assert not missing, "cited in the code but not in docs/math.md: " + "; ".join(
        f"{' '.join(c)} ({f})" for c, f in sorted(missing.items()))
    sections = set(re.findall(r"^#+ (\d+(?:\.\d+)?)\.? ", text, re.M))
    for path in sorted((ROOT / "nth").rglob("*.py")):
        for number in re.findall(r"docs/math\.md,? sections? (\d+(?:\.\d+)?)", path.read_text(encoding="utf-8")):
            assert number in sections, f"{path.name} cites docs/math.md section {number}, which does not exist"
