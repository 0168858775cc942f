"""MkDocs hook: turn `$...$` / `$$...$$` math into MathML at build time.

`pymdownx.arithmatex` (generic mode) wraps math as `<span class="arithmatex">\\(...\\)</span>`
and `<div class="arithmatex">\\[...\\]</div>`; this hook replaces each with MathML produced by
`latex2mathml`. Browsers render MathML natively, so pages need no JavaScript and no network.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_INLINE = re.compile(r'<span class="arithmatex">\\\((.+?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.+?)\\\]</div>', re.S)


def _mathml(tex: str, display: str) -> str:
    return convert(html.unescape(tex).strip(), display=display)


def on_page_content(content: str, **_) -> str:
    content = _BLOCK.sub(lambda m: f'<div class="math-block">{_mathml(m.group(1), "block")}</div>', content)
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), content)
