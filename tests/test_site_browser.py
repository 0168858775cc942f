"""Open every page of the built site in a real browser (Debian's Chromium, driven by Playwright).

Asserts, for each page: no console error, no page error, no failed request and no request that
leaves 127.0.0.1; math rendered as MathML (no raw ``$$`` or ``\\(`` left in the text); every
mermaid diagram rendered as SVG; every same-site link and anchor resolves. Then the search box
finds a known term. The site is built into a temporary folder by the test itself.

At a 1280-px window (`test_layout_at_1280_px`), every page: no code block and no table scrolls
sideways, except inside an element with the class ``scroll`` (the documented opt-in) and
mkdocstrings' source listings (a file shown as it is); every figure's text is drawn at
``MIN_FIGURE_TEXT_PX`` or more; no raw reST (``:func:``, double backticks, ``====`` tables,
``Command line::``) in the text; no process words or machine paths.

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


WINDOW = {"width": 1280, "height": 900}
MIN_FIGURE_TEXT_PX = 10.0
RAW_REST = [re.compile(p) for p in (
    r":(?:func|class|mod|meth|attr|data|obj|exc|ref|doc|py:\w+):",   # roles (their `name` is code)
    r"``",                                                          # a double backtick left over
    r"={4,}[ \t]+={4,}",                                            # simple-table rules
    r"(?m)\w::[ \t]*$",                                             # literal-block markers
)]
PROCESS_WORDS = [re.compile(p) for p in (
    r"\b[Ii]ssues? \d+\b",            # our own issue numbers (upstream ones are written #123)
    r"\b[Ss]essions?\b",
    r"(?<![\w.])/(?:work|tmp|root|home)/",  # machine paths
)]

# In the page: every overflowing code block and table (outside `.scroll` and source listings),
# and, for each SVG figure, the smallest text size as drawn (the SVG inlined at the image's width).
_LAYOUT_JS = """async () => {
  const exempt = el => el.closest('.scroll, details.mkdocstrings-source');
  const first = el => (el.innerText || '').split('\\n').find(l => l.trim()) || '';
  const out = {code: [], tables: [], figures: []};
  for (const pre of document.querySelectorAll('article pre')) {
    const c = pre.querySelector('code') || pre;
    if (!exempt(pre) && c.scrollWidth > c.clientWidth + 1)
      out.code.push(`${c.scrollWidth - c.clientWidth}px: ${first(c).slice(0, 70)}`);
  }
  for (const t of document.querySelectorAll('article table')) {
    const box = t.closest('.md-typeset__scrollwrap') || t;
    if (!exempt(t) && (box.scrollWidth > box.clientWidth + 1 || t.scrollWidth > t.clientWidth + 1))
      out.tables.push(`${box.scrollWidth - box.clientWidth}px: ${first(t).slice(0, 70)}`);
  }
  for (const img of document.querySelectorAll('article img')) {
    const src = img.getAttribute('src') || '';
    if (!src.endsWith('.svg')) continue;
    const text = await (await fetch(img.src)).text();
    const host = document.createElement('div');
    host.style.cssText = `position:absolute;left:0;top:0;width:${img.getBoundingClientRect().width}px`;
    host.innerHTML = text.slice(text.indexOf('<svg'));
    document.body.appendChild(host);
    const svg = host.querySelector('svg');
    svg.setAttribute('width', '100%'); svg.removeAttribute('height');
    const sizes = [...svg.querySelectorAll('text')].map(t => {
      const m = t.getScreenCTM();
      return parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b);
    });
    host.remove();
    out.figures.push([src, sizes.length, sizes.length ? Math.min(...sizes) : 0]);
  }
  return out;
}"""


def _text_outside_code(page) -> str:
    return page.evaluate("""() => {
        const hidden = [...document.querySelectorAll('article pre, article code, article .highlight')];
        const before = hidden.map(e => e.style.display);
        hidden.forEach(e => { e.style.display = 'none'; });
        const text = document.querySelector('article').innerText;
        hidden.forEach((e, i) => { e.style.display = before[i]; });
        return text; }""")


def test_layout_at_1280_px(site, browser):
    _, base = site
    problems: list[str] = []
    page = browser.new_page(viewport=WINDOW)
    for rel in _pages(site[0]):
        page.goto(urljoin(base, rel.lstrip("/")), wait_until="networkidle")
        page.evaluate("document.fonts.ready")
        found = page.evaluate(_LAYOUT_JS)
        problems += [f"{rel}: code block scrolls sideways by {c}" for c in found["code"]]
        problems += [f"{rel}: table scrolls sideways by {t}" for t in found["tables"]]
        for src, count, smallest in found["figures"]:
            if count == 0:
                problems.append(f"{rel}: figure {src} has no SVG text to measure (draw text as text)")
            elif smallest < MIN_FIGURE_TEXT_PX:
                problems.append(f"{rel}: figure {src} draws text at {smallest:.1f} px (< {MIN_FIGURE_TEXT_PX})")
        text = _text_outside_code(page)
        for rule in RAW_REST:
            for m in rule.finditer(text):
                problems.append(f"{rel}: raw reST {m.group(0)[:40]!r}")
        for rule in PROCESS_WORDS:
            for m in rule.finditer(text):
                problems.append(f"{rel}: process word or machine path {m.group(0)!r}")
    page.close()
    assert not problems, f"{len(problems)} layout problems at 1280 px:\n" + "\n".join(problems)


def test_layout_check_catches_overflow_small_figure_text_and_raw_rest(browser, tmp_path):
    """The layout check is not vacuous: a page with each fault makes it report each fault."""
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="1500pt" height="100pt" viewBox="0 0 1500 100">'
           '<text x="10" y="50" style="font-size: 10px">tiny</text></svg>')
    (tmp_path / "fig.svg").write_text(svg)
    (tmp_path / "index.html").write_text(
        "<html><head><style>pre>code{display:block;overflow:auto}"
        ".md-typeset__scrollwrap{overflow-x:auto}</style></head><body><article>"
        "<pre><code>" + "x" * 300 + "</code></pre>"
        "<div class='scroll'><pre><code>" + "y" * 300 + "</code></pre></div>"
        "<div class='md-typeset__scrollwrap'><table><tr>"
        + "<td>cell_with_a_long_identifier_that_cannot_wrap</td>" * 12 + "</tr></table></div>"
        "<img src='fig.svg' style='max-width:100%'><p>See :func:<code>f</code> and ``g``. Issue 5 set it."
        "</p><p>Command line::</p><p>====  ====</p>"
        "</article></body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = browser.new_page(viewport={"width": 800, "height": 600})
    page.goto(f"http://127.0.0.1:{server.server_port}/", wait_until="networkidle")
    found = page.evaluate(_LAYOUT_JS)
    text = _text_outside_code(page)
    page.close()
    server.shutdown()
    assert len(found["code"]) == 1 and len(found["tables"]) == 1     # the .scroll block is exempt
    (src, count, smallest), = found["figures"]
    assert count == 1 and smallest < MIN_FIGURE_TEXT_PX
    assert all(r.search(text) for r in RAW_REST)
    assert PROCESS_WORDS[0].search(text)


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
# two lines (an identifier broken inside a word; a break at a `<wbr>` that docs/hooks/layout.py put
# after `_`, `.` or `/` is a designed break point, not one inside a word).
_TABLE_REACH_JS = """() => [...document.querySelectorAll('article table')].map((t) => {
  let right = Infinity, el = t;
  while (el && el.tagName !== 'ARTICLE') {
    if (el === t || /auto|scroll|hidden/.test(getComputedStyle(el).overflowX))
      right = Math.min(right, el.getBoundingClientRect().left + el.clientWidth);
    el = el.parentElement;
  }
  const cells = [...t.querySelectorAll('th, td')];
  const reach = Math.max(...cells.map((c) => c.getBoundingClientRect().right)) - right;
  const broken = [...t.querySelectorAll('code')]
    .filter((c) => !/\\s/.test(c.textContent) && !c.querySelector('wbr') && c.getClientRects().length > 1)
    .map((c) => c.textContent);
  return {head: [...t.rows[0].cells].map((c) => c.innerText.trim()).join(' | '), reach, broken};
})"""


@pytest.mark.parametrize("width", [1280, 1440])
def test_backend_matrix_fits_a_laptop_window(site, browser, width):
    """At 1280 px (both sidebars open) no table of the Backends page is cut and no identifier breaks."""
    _, base = site
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(urljoin(base, "backends/"), wait_until="networkidle")
    tables = page.evaluate(_TABLE_REACH_JS)
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
    page.evaluate("document.querySelectorAll('article table code wbr').forEach((w) => w.remove())")
    tables = page.evaluate(_TABLE_REACH_JS)
    page.close()
    assert any(t["reach"] > 2 for t in tables)
    assert any(t["broken"] for t in tables)
