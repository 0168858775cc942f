"""Checks on the Markdown sources of the site that need no build.

* Every line of every fenced block (python, text, bash, ...) is at most `CODE_LINE_MAX`
  characters: at a 1280-px window the article column shows about 87 characters of code, and a
  longer line scrolls sideways (the browser test, `tests/test_site_browser.py`, measures the
  built pages; this check points at the line). Put a long comment on its own line above the code.
  Exempt: `mermaid` diagrams (drawn, not shown as text) and fences with the class `.scroll`
  (`{.python .scroll}`), the documented opt-in for output that is wide by nature.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CODE_LINE_MAX = 84
PAGES = sorted(p for p in DOCS.rglob("*.md") if not {"data", "includes"} & set(p.relative_to(DOCS).parts))
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)")
EXEMPT = re.compile(r"^\s*(mermaid\b|\{[^}]*\.(mermaid|scroll)\b)")


def long_code_lines(text: str, limit: int = CODE_LINE_MAX) -> list[tuple[int, int]]:
    """(line number, length) of each fenced-block line longer than `limit` (indent excluded)."""
    out, fence, indent, exempt = [], None, 0, False
    for number, line in enumerate(text.splitlines(), start=1):
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence, indent = m.group("fence"), len(m.group("indent"))
                exempt = bool(EXEMPT.match(m.group("info")))
            continue
        if m and m.group("fence")[0] == fence[0] and len(m.group("fence")) >= len(fence) \
                and not line[m.end():].strip():
            fence = None
            continue
        body = line[indent:] if line[:indent].strip() == "" else line
        if len(body) > limit and not exempt:
            out.append((number, len(body)))
    return out


def test_the_check_finds_a_long_line():
    long = "x = 1  # " + "y" * 100
    page = (f"text\n\n```python\n{long}\n```\n\n    ```text\n    " + "z" * 84 + "\n    ```\n"
            f"\n```mermaid\n{long}\n```\n\n```{{.python .scroll}}\n{long}\n```\n")
    assert long_code_lines(page) == [(4, 109)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_code_lines_fit_the_column(page):
    long = long_code_lines(page.read_text(encoding="utf-8"))
    assert not long, f"{page.relative_to(ROOT)}: code lines over {CODE_LINE_MAX} characters at " + \
        ", ".join(f"line {n} ({w})" for n, w in long)
