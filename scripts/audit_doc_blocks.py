"""Prove that every Python block a reader can see on the built site ran under pytest and passed.

The ground truth is the built HTML: every code block whose language is python/py/python3/pycon
(any case), wherever it sits (admonitions, tabs, lists, docstring examples rendered on API
pages). Each must match, by its normalised source, an item that pytest recorded
(`DOC_BLOCKS_REPORT`, written by `conftest.py`) with outcome `passed`, or `skipped` for
the one allowed reason: a `{.python .gpu}` block on a machine without CUDA.

usage: python scripts/audit_doc_blocks.py SITE_DIR REPORT_JSON
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from doc_blocks import GPU_SKIP_REASON  # noqa: E402

LANGUAGES = {"python", "py", "python3", "pycon"}


@dataclass
class Block:
    page: str
    language: str
    source: str


class _CodeBlocks(HTMLParser):
    """Collects the text of `<div class="language-X ... highlight">` blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []
        self._depth = 0        # div nesting inside the current block
        self._language = None
        self._in_code = False
        self._text: list[str] = []
        self._skip_span = 0    # line-number anchors Material may add
        self._in_source = 0    # inside mkdocstrings' "Source code in ..." (shown code, not examples)

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        if tag == "details" and ("mkdocstrings-source" in cls.split() or self._in_source):
            self._in_source += 1
            return
        if self._in_source or "doc-signature" in cls.split():  # signatures are not examples
            return
        if self._language is None and tag == "div" and "highlight" in cls.split():
            lang = next((c[len("language-"):] for c in cls.split() if c.startswith("language-")), None)
            if lang is not None:
                self._language, self._depth, self._text = lang.lower(), 1, []
            return
        if self._language is not None:
            if tag == "div":
                self._depth += 1
            elif tag == "code":
                self._in_code = True
            elif tag == "span" and ("linenos" in cls or "filename" in cls):
                self._skip_span += 1

    def handle_endtag(self, tag):
        if self._in_source and tag == "details":
            self._in_source -= 1
            return
        if self._language is None:
            return
        if tag == "code":
            self._in_code = False
        elif tag == "span" and self._skip_span:
            self._skip_span -= 1
        elif tag == "div":
            self._depth -= 1
            if self._depth == 0:
                self.blocks.append((self._language, "".join(self._text)))
                self._language = None

    def handle_data(self, data):
        if self._language is not None and self._in_code and not self._skip_span:
            self._text.append(data)


def normalise(source: str) -> str:
    lines = [line.rstrip() for line in html.unescape(source).strip("\n").splitlines()]
    return "\n".join(lines).strip("\n")


def pycon_statements(text: str) -> list[str]:
    """The `>>>` statements of a doctest example, continuation lines joined."""
    statements, current = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(">>>"):
            if current is not None:
                statements.append("\n".join(current))
            current = [stripped[4:] if stripped.startswith(">>> ") else stripped[3:]]
        elif stripped.startswith("...") and current is not None:
            current.append(stripped[4:] if stripped.startswith("... ") else stripped[3:])
        elif current is not None:
            statements.append("\n".join(current))
            current = None
    if current is not None:
        statements.append("\n".join(current))
    return [normalise(s) for s in statements]


def rendered_blocks(site: Path) -> list[Block]:
    blocks = []
    for page in sorted(site.rglob("*.html")):
        parser = _CodeBlocks()
        parser.feed(page.read_text(encoding="utf-8"))
        for language, text in parser.blocks:
            if language not in LANGUAGES:
                continue
            rel = str(page.relative_to(site))
            if language == "pycon" or text.lstrip().startswith(">>>"):
                blocks += [Block(rel, "pycon", s) for s in pycon_statements(text)]
            else:
                blocks.append(Block(rel, language, normalise(text)))
    return blocks


def audit(site: Path, report: dict) -> tuple[list[str], dict[str, int]]:
    """Return (problems, counts). No problems and at least one block means the audit passes."""
    ran: dict[str, list[dict]] = {}
    for item in report.values():
        ran.setdefault(normalise(item["source"]), []).append(item)
    problems, counts = [], {"rendered": 0, "passed": 0, "skipped": 0}
    for block in rendered_blocks(site):
        counts["rendered"] += 1
        items = ran.get(block.source, [])
        outcomes = {i["outcome"] for i in items}
        first_line = block.source.splitlines()[0] if block.source else ""
        if not items:
            problems.append(f"NOT RUN   {block.page}: {first_line!r}")
        elif "failed" in outcomes:
            problems.append(f"FAILED    {block.page}: {first_line!r}")
        elif outcomes == {"passed"}:
            counts["passed"] += 1
        elif all(i["outcome"] == "skipped" and i["reason"] == GPU_SKIP_REASON for i in items):
            counts["skipped"] += 1
        else:
            reasons = sorted({i["reason"] for i in items})
            problems.append(f"SKIPPED   {block.page}: {first_line!r} ({reasons})")
    if counts["rendered"] == 0:
        problems.append("no Python block found in the site: is pymdownx.highlight's pygments_lang_class on?")
    return problems, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path)
    ap.add_argument("report", type=Path)
    args = ap.parse_args()
    problems, counts = audit(args.site, json.loads(args.report.read_text()))
    for p in problems:
        print(p)
    print(
        f"doc blocks: {counts['rendered']} rendered, {counts['passed']} ran and passed, "
        f"{counts['skipped']} skipped ({GPU_SKIP_REASON}), {len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
