"""MkDocs hook: replace `<!-- generated: NAME -->` markers with tables computed by `scripts/tables.py`.

Tables on the site are produced from the code (or from data files written by scripts) at build
time, so they cannot drift from what the code does. Run `python scripts/tables.py NAME` to see
any of them in a terminal.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_MARKER = re.compile(r"^<!-- generated: ([\w.-]+) -->$", re.M)


def _tables():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("site_tables", ROOT / "scripts" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TABLES


def on_page_markdown(markdown: str, page, **_) -> str:
    if "<!-- generated:" not in markdown:
        return markdown
    tables = _tables()

    def render(m: re.Match) -> str:
        name = m.group(1)
        if name not in tables:
            raise KeyError(f"{page.file.src_path}: no generated table {name!r}; known: {sorted(tables)}")
        return tables[name]()

    return _MARKER.sub(render, markdown)
