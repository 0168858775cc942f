"""Docstrings are Markdown for mkdocstrings: no reStructuredText in the code or on the built site.

Two views of the same rule. The source check reads every docstring of the packages and
scripts; the site check reads the built HTML, where reST shows as literal
`:func:` roles, rows of `====`, and "Usage::" paragraphs. Files still in reST are listed in
`NOT_YET_MARKDOWN`; the list only shrinks: a listed file that is clean fails too.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

from _site import ROOT, article, built_site, prose_text, site_pages

SOURCES = ("reference_impl", "kernels", "scripts", "docs/hooks")

NOT_YET_MARKDOWN: set[str] = set()
"""Files whose docstrings are still reST, to be converted; remove each as it is."""

_ROLES = r"(?:func|class|mod|meth|data|attr|exc|obj|const|ref|doc|term|py:\w+)"
DOCSTRING_RULES = {
    "reST role": re.compile(rf":{_ROLES}:`"),
    "double backticks": re.compile(r"(?<!`)``(?!`)"),
    "reST table rule": re.compile(r"^[ \t]*={3,}(?:[ \t]+=+)*[ \t]*$", re.M),
    "reST literal block": re.compile(r"::[ \t]*$", re.M),
    "reST directive": re.compile(r"^[ \t]*\.\. [\w-]+::", re.M),
}
SITE_RULES = {
    "reST role": re.compile(rf":{_ROLES}:(?:\x00|`)"),
    "double backticks": re.compile(r"``"),
    "reST table rule": re.compile(r"={4,}"),
    "reST literal block": re.compile(r"\w::[ \t]*(?:\n|\x00|$)"),
    "reST directive": re.compile(r"\.\. [\w-]+::"),
}
_FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,}).*?^\1\2[ \t]*$", re.M | re.S)
_DOCTEST = re.compile(r"^[ \t]*>>>.*?(?=^[ \t]*$|\Z)", re.M | re.S)   # an example and its output


def docstring_problems(text: str) -> list[str]:
    """reST constructs in one docstring (fenced code and doctest examples with their output are not prose)."""
    prose = _DOCTEST.sub("", _FENCE.sub("", text))
    return [f"{name}: {m.group(0).strip()!r}" for name, rule in DOCSTRING_RULES.items() for m in rule.finditer(prose)]


def python_problems(source: str) -> list[str]:
    """reST constructs in a module's docstrings: module, class, function and attribute docstrings."""
    out = []
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        for stmt in body if isinstance(body, list) else []:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                out += [f"line {stmt.lineno}: {p}" for p in docstring_problems(stmt.value.value)]
    return out


def html_problems(html: str) -> list[str]:
    """reST left in a rendered page's prose (outside code), as literal text."""
    text = prose_text(html)
    return [f"{name}: {text[max(0, m.start() - 40):m.end() + 20].strip()!r}".replace("\\x00", "<code>")
            for name, rule in SITE_RULES.items() for m in rule.finditer(text)]


def _python_files() -> list[Path]:
    return sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


# -- the detectors catch what they must, and pass Markdown ------------------------------------------

MARKDOWN_DOCSTRING = '''"""Quantize `x[..., N]` ([`Recipe`][nvfp4_kvcache.recipes.Recipe]).

| name | what |
|---|---|
| `a` | b |

Usage:

```bash
python -m nvfp4_kvcache.capacity --gpu H100
```

Examples:
    >>> x = [1, 2, 3][::2]
    >>> print("::")
    ::
"""
'''


def test_markdown_docstring_passes():
    assert python_problems(MARKDOWN_DOCSTRING) == []


@pytest.mark.parametrize("rest, name", [
    ("See :func:`quantize`.", "reST role"),
    ("See :class:`~nvfp4_kvcache.recipes.Recipe`.", "reST role"),
    ("Pass ``x``.", "double backticks"),
    ("====  ====\na     b\n====  ====", "reST table rule"),
    ("Command line::\n\n    python -m x", "reST literal block"),
    (".. note::\n\n    careful", "reST directive"),
])
def test_each_rest_construct_is_caught_in_a_docstring(rest, name):
    problems = python_problems(f'"""Summary.\n\n{rest}\n"""\n')
    assert any(p.split(": ", 1)[1].startswith(name) for p in problems), problems


@pytest.mark.parametrize("html, name", [
    ("<p>Raised by :func:<code>quantize</code>.</p>", "reST role"),
    ("<p>==================  ==========</p>", "reST table rule"),
    ("<p>Command line::</p><pre><code>python -m x</code></pre>", "reST literal block"),
    ("<p>Pass ``x``.</p>", "double backticks"),
    ("<p>.. note:: careful</p>", "reST directive"),
])
def test_each_rest_construct_is_caught_on_a_page(html, name):
    assert any(p.startswith(name) for p in html_problems(html))


def test_code_on_a_page_is_not_prose():
    assert html_problems("<p>Slices <code>x[::2]</code> and <code>a == b</code>.</p><pre><code>Usage::\n====</code></pre>") == []


# -- the code ---------------------------------------------------------------------------------------

def test_docstrings_are_markdown():
    found = {str(p.relative_to(ROOT)): python_problems(p.read_text(encoding="utf-8")) for p in _python_files()}
    bad = {f: probs for f, probs in found.items() if probs}
    new = {f: probs[:5] for f, probs in bad.items() if f not in NOT_YET_MARKDOWN}
    assert not new, f"reST in docstrings (write Markdown, Google style): {new}"
    converted = sorted(f for f in NOT_YET_MARKDOWN if f in found and not found[f])
    assert not converted, f"now Markdown: remove from NOT_YET_MARKDOWN: {converted}"
    gone = sorted(f for f in NOT_YET_MARKDOWN if f not in found)
    assert not gone, f"no such file: remove from NOT_YET_MARKDOWN: {gone}"


# -- the built site ---------------------------------------------------------------------------------

_SIGNATURES = re.compile(r'<div class="api-signatures">(.*?)</div>', re.S)
_ROW = re.compile(r"<tr>(.*?)</tr>", re.S)
_ROW_ANCHOR = re.compile(r'href="#((?:nvfp4_kvcache|nvfp4_kvcache_triton)(?:\.\w+)*)"')
_OBJECT_HEADING = re.compile(r'<h[1-6] id="((?:nvfp4_kvcache|nvfp4_kvcache_triton)(?:\.\w+)*)"[^>]*class="doc doc-heading')


@lru_cache(maxsize=None)
def _source_of(identifier: str) -> str:
    """The file whose docstring mkdocstrings rendered for `identifier` (aliases followed)."""
    import griffe

    top, _, rest = identifier.partition(".")
    obj = _package(top)
    if rest:
        obj = obj[rest]
    path = Path(obj.filepath)
    if path.is_dir():
        path = path / "__init__.py"
    return str(path.resolve().relative_to(ROOT))


@lru_cache(maxsize=None)
def _package(name: str):
    import griffe

    return griffe.load(name)


def page_problems(page: str, html: str) -> dict[str, list[str]]:
    """`{source: problems}` for one built page: each API object's prose is charged to its file.

    The signature tables at the top of an API page quote each object's summary line: a row is
    charged to the object it links to.
    """
    body = article(html)
    out: dict[str, list[str]] = {}
    for table in _SIGNATURES.findall(body):
        for row in _ROW.findall(table):
            if (anchor := _ROW_ANCHOR.search(row)) and (problems := html_problems(row)):
                out.setdefault(_source_of(anchor.group(1)), []).extend(problems)
    body = _SIGNATURES.sub("", body)
    cuts = [(m.start(), m.group(1)) for m in _OBJECT_HEADING.finditer(body)]
    spans = [(0, cuts[0][0] if cuts else len(body), None)]
    spans += [(start, cuts[i + 1][0] if i + 1 < len(cuts) else len(body), ident) for i, (start, ident) in enumerate(cuts)]
    for start, end, ident in spans:
        problems = html_problems(body[start:end])
        if problems:
            out.setdefault(_source_of(ident) if ident else page, []).extend(problems)
    return out


def test_page_problems_are_charged_to_the_file_that_holds_the_docstring():
    html = ('<article><p>Intro :mod:<code>x</code>.</p>'
            '<h2 id="nvfp4_kvcache.packing" class="doc doc-heading">packing</h2><p>See :func:<code>a</code>.</p>'
            '<h3 id="nvfp4_kvcache.FP4Quantized" class="doc doc-heading">FP4Quantized</h3><p>====  ====</p></article>')
    found = page_problems("api/x/index.html", html)
    assert sorted(found) == ["api/x/index.html", "reference_impl/packing.py", "reference_impl/recipes/base.py"]
    table = ('<article><div class="api-signatures"><table><tr><th>signature</th></tr>'
             '<tr><td><code><a href="#nvfp4_kvcache.recipes.get_recipe">get_recipe</a>(name)</code></td>'
             '<td>Look up (a :class:<code>Recipe</code> passes).</td></tr></table></div><p>Fine.</p></article>')
    assert sorted(page_problems("api/x/index.html", table)) == ["reference_impl/recipes/__init__.py"]


@pytest.fixture(scope="module")
def pages():
    return site_pages(built_site())


def test_built_pages_show_no_rest(pages):
    api = [p for p in pages if p.startswith("api/")]
    assert len(api) >= 2, sorted(pages)
    found: dict[str, list[str]] = {}
    for page, html in pages.items():
        for source, problems in page_problems(page, html).items():
            found.setdefault(source, []).extend(f"{page}: {p}" for p in problems)
    new = {src: probs[:5] for src, probs in found.items() if src not in NOT_YET_MARKDOWN}
    assert not new, f"raw reST on the built site, by source: {new}"
