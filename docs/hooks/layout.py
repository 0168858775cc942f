"""MkDocs hook: let identifiers in table cells wrap at their natural joints, not mid-word.

Material lets inline code break anywhere (`word-break: break-word`), so a narrow column shows
`fp4_mx_blo` / `ck16`. `docs/stylesheets/extra.css` turns that off inside tables; this hook adds
the break opportunities back where a reader expects them: a `<wbr>` after `_`, `.`, `/`, `,`,
`+`, `(` and `[` in the text of every `<code>` inside a `<table>` (tags and attributes untouched).
"""

from __future__ import annotations

import re

_TABLE = re.compile(r"<table\b.*?</table>", re.S)
_CODE = re.compile(r"(<code\b[^>]*>)(.*?)(</code>)", re.S)
_TAG = re.compile(r"(<[^>]+>|&[#\w]+;)")
_JOINT = re.compile(r"([_./,+(\[])(?=\w)")


def add_breaks(text: str) -> str:
    """`<wbr>` after each joint character in `text`, outside tags and character references."""
    return "".join(part if _TAG.fullmatch(part) else _JOINT.sub(r"\1<wbr>", part)
                   for part in _TAG.split(text))


def _code(m: re.Match) -> str:
    return m.group(1) + add_breaks(m.group(2)) + m.group(3)


def on_page_content(html: str, **_) -> str:
    return _TABLE.sub(lambda t: _CODE.sub(_code, t.group(0)), html)
