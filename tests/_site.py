"""The built site for tests that read its HTML: `build/site`, rebuilt only when it is out of date.

`make test` builds the site (strict) just before pytest, so the tests read that build. Run alone,
a test builds it once (`mkdocs build --strict`), under a file lock so that pytest-xdist workers
share one build. Out of date means: a file the site is made from (pages, data, hooks, the code the
API pages document, `mkdocs.yml`) is newer than the built `index.html`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "site"
_INPUTS = ("docs", "reference_impl", "kernels", "scripts", "mkdocs.yml")
_SKIP_PARTS = {"__pycache__", ".cache"}


def _newest_input() -> float:
    newest = 0.0
    for name in _INPUTS:
        path = ROOT / name
        files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())
        for f in files:
            if not _SKIP_PARTS.intersection(f.parts) and f.suffix != ".pyc":
                newest = max(newest, f.stat().st_mtime)
    return newest


@contextlib.contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, builds may repeat
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def built_site() -> Path:
    """Path of an up-to-date strict build of the site (building it if needed)."""
    SITE.parent.mkdir(parents=True, exist_ok=True)
    with _lock(SITE.parent / ".site.lock"):
        index = SITE / "index.html"
        if not index.exists() or index.stat().st_mtime < _newest_input():
            subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(SITE)],
                           cwd=ROOT, check=True)
    return SITE


def site_pages(site: Path) -> dict[str, str]:
    """`{path relative to the site: HTML}` for every page (not the vendored assets, not the 404 page)."""
    return {str(p.relative_to(site)): p.read_text(encoding="utf-8") for p in sorted(site.rglob("*.html"))
            if "assets" not in p.relative_to(site).parts and p.name != "404.html"}


class _ProseText(HTMLParser):
    """The article's text outside code: `<code>`, `<pre>`, `<script>`, `<style>` become one NUL each."""

    _CODE = {"code", "pre", "script", "style", "svg", "math"}
    _BLOCK = {"p", "li", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "div", "dd", "dt", "br", "tr", "summary",
              "label"}   # a tab's label: tabs are labels side by side, one word each

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self._CODE:
            if self.depth == 0:
                self.parts.append("\x00")
            self.depth += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._CODE:
            self.depth = max(0, self.depth - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.depth == 0:
            self.parts.append(data)


def article(html: str) -> str:
    """The page's main content (Material's `<article>`), or the whole page if it has none."""
    start = html.find("<article")
    end = html.rfind("</article>")
    return html[start:end] if start >= 0 and end > start else html


def prose_text(html: str) -> str:
    """Text of an HTML fragment outside code elements; each code element leaves one NUL character."""
    parser = _ProseText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)
