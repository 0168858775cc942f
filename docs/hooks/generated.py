"""MkDocs hook: the one way measured and computed numbers reach a page's prose and tables.

A page writes

* `<!-- generated: NAME -->` alone on a line: replaced by the Markdown that `TABLES[NAME]()`
  returns (a table, or a few tables with their provenance line), indented like the marker (so
  it can sit in an admonition, a collapsible `???` block or a tab);
* `<!-- value: GROUP.KEY -->` inside a sentence: replaced by `VALUES[GROUP]()[KEY]`, one number
  formatted for prose (for example `1.95x`).

Both registries live in `scripts/tables.py`; their functions read `docs/data/` (written by the
scripts in `scripts/`) or the library itself, at build time, so a page cannot drift from its data.
An unknown name fails the build. `python scripts/tables.py NAME` prints a table or a value group in
a terminal. The other way numbers appear on a page is a python block that reads the data and
prints them: its output is on the page as `#>` lines, checked by the tests.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_TABLE = re.compile(r"^([ \t]*)<!-- generated: ([\w.-]+) -->$", re.M)
_VALUE = re.compile(r"<!-- value: ([a-z0-9_]+)\.([a-z0-9_]+) -->")   # lowercase names only


def _registry():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("site_tables", ROOT / "scripts" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TABLES, module.VALUES


def on_page_markdown(markdown: str, page, **_) -> str:
    if "<!-- generated:" not in markdown and "<!-- value:" not in markdown:
        return markdown
    tables, values = _registry()
    where = page.file.src_path

    def table(m: re.Match) -> str:
        indent, name = m.group(1), m.group(2)
        if name not in tables:
            raise KeyError(f"{where}: no generated table {name!r}; known: {sorted(tables)}")
        return "".join(indent + line if line.strip() else line
                       for line in tables[name]().splitlines(keepends=True)).rstrip("\n")

    groups: dict[str, dict[str, str]] = {}

    def value(m: re.Match) -> str:
        group, key = m.group(1), m.group(2)
        if group not in values:
            raise KeyError(f"{where}: no value group {group!r}; known: {sorted(values)}")
        found = groups.setdefault(group, values[group]())
        if key not in found:
            raise KeyError(f"{where}: no value {group}.{key}; known: {sorted(found)}")
        return found[key]

    return _VALUE.sub(value, _TABLE.sub(table, markdown))
