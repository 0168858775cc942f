"""Open every page of the built site in a real browser (Debian's Chromium, driven by Playwright).

Asserts, for each page: no console error, no page error, no failed request and no request that
leaves 127.0.0.1; math rendered as MathML (no raw ``$$`` or ``\\(`` left in the text); every
mermaid diagram rendered as SVG; every same-site link and anchor resolves. Then the search box
finds a known term. The site is built into a temporary folder by the test itself.

Chromium comes from Debian's package (``make test`` installs it); Playwright never downloads a
browser here. Where no browser can be found the test is skipped with a loud reason.
"""

from __future__ import annotations

import functools
import re
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="LOUD SKIP: no chromium on this machine (apt-get install chromium); site not browser-tested"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
                   cwd=ROOT, check=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _pages(site_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(site_dir).parent).replace(".", "") + "/"
                  for p in site_dir.rglob("index.html") if "assets" not in p.parts)


def test_every_page_renders_offline(site, browser):
    site_dir, base = site
    pages = _pages(site_dir)
    assert len(pages) >= 5
    problems: list[str] = []
    links: set[str] = set()
    for rel in pages:
        url = urljoin(base, rel.lstrip("/"))
        page = browser.new_page()
        page.on("console", lambda m, rel=rel: m.type == "error" and problems.append(f"{rel}: console: {m.text}"))
        page.on("pageerror", lambda e, rel=rel: problems.append(f"{rel}: page error: {e}"))
        page.on("requestfailed", lambda r, rel=rel: problems.append(f"{rel}: failed request {r.url}"))
        page.on("request", lambda r, rel=rel: urlparse(r.url).hostname not in ("127.0.0.1", None)
                and not r.url.startswith("data:") and problems.append(f"{rel}: off-host request {r.url}"))
        page.goto(url, wait_until="networkidle")
        text = page.inner_text("article")
        if "$$" in text or "\\(" in text or "\\[" in text:
            problems.append(f"{rel}: raw TeX left in the page")
        if page.locator(".arithmatex").count():
            problems.append(f"{rel}: arithmatex span not converted to MathML")
        if page.locator("pre.mermaid, div.mermaid").count():
            page.wait_for_function("document.querySelectorAll('pre.mermaid').length == 0", timeout=15000)
            hosts = page.locator("div.mermaid").count()
            drawn = page.evaluate("[...document.querySelectorAll('div.mermaid')].filter(d => d.getBoundingClientRect().height > 20).length")
            if drawn != hosts:
                problems.append(f"{rel}: {hosts - drawn} mermaid diagram(s) not rendered")
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            if urlparse(href).hostname == "127.0.0.1":
                links.add(href)
        page.close()
    # every same-site link and anchor resolves (read from the built files: one navigation per link is slow)
    ids: dict[Path, set[str]] = {}
    for href in sorted(links):
        target, anchor = urldefrag(href)
        path = site_dir / unquote(urlparse(target).path).lstrip("/")
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            problems.append(f"broken link {href}")
            continue
        if anchor and path.suffix == ".html":
            if path not in ids:
                ids[path] = set(re.findall(r'\bid="([^"]+)"', path.read_text(encoding="utf-8")))
            if unquote(anchor) not in ids[path]:
                problems.append(f"missing anchor {href}")
    assert not problems, "\n".join(problems)


def test_math_is_mathml(site, browser):
    _, base = site
    page = browser.new_page()
    page.goto(urljoin(base, "format/recipes/"))
    assert page.locator("article math").count() >= 5
    page.close()


def test_search_finds_a_known_term(site, browser):
    _, base = site
    page = browser.new_page()
    page.goto(base, wait_until="networkidle")
    page.locator("input.md-search__input").focus()
    page.keyboard.type("ties")
    page.wait_for_selector(".md-search-result__item", timeout=15000)
    results = page.inner_text(".md-search-result")
    assert "recipe" in results.lower() or "rounding" in results.lower()
    page.close()


# Per table: how far its rightmost cell reaches past the visible edge of the nearest scrolling box
# (0 or less: every column shows), and the code spans without a space that the browser split over
# two lines (an identifier broken inside a word).
_LAYOUT_JS = """() => [...document.querySelectorAll('article table')].map((t) => {
  let right = Infinity, el = t;
  while (el && el.tagName !== 'ARTICLE') {
    if (el === t || /auto|scroll|hidden/.test(getComputedStyle(el).overflowX))
      right = Math.min(right, el.getBoundingClientRect().left + el.clientWidth);
    el = el.parentElement;
  }
  const cells = [...t.querySelectorAll('th, td')];
  const reach = Math.max(...cells.map((c) => c.getBoundingClientRect().right)) - right;
  const broken = [...t.querySelectorAll('code')]
    .filter((c) => !/\\s/.test(c.textContent) && c.getClientRects().length > 1).map((c) => c.textContent);
  return {head: [...t.rows[0].cells].map((c) => c.innerText.trim()).join(' | '), reach, broken};
})"""


@pytest.mark.parametrize("width", [1280, 1440])
def test_backend_matrix_fits_a_laptop_window(site, browser, width):
    """At 1280 px (both sidebars open) no table of the Backends page is cut and no identifier breaks."""
    _, base = site
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(urljoin(base, "backends/"), wait_until="networkidle")
    tables = page.evaluate(_LAYOUT_JS)
    page.close()
    assert len(tables) >= 8
    assert [t for t in tables if t["reach"] > 2] == []
    assert [t for t in tables if t["broken"]] == []


def test_layout_check_sees_a_cut_column(site, browser):
    """The check above fails on a page whose matrix is too wide for the window (a narrow one)."""
    _, base = site
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.goto(urljoin(base, "backends/"), wait_until="networkidle")
    page.add_style_tag(content=".md-typeset table:not([class]) th { min-width: 9rem; }"
                               ".md-typeset table:not([class]) code { word-break: break-all; }")
    tables = page.evaluate(_LAYOUT_JS)
    page.close()
    assert any(t["reach"] > 2 for t in tables)
    assert any(t["broken"] for t in tables)
