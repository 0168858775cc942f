"""The API pages' signature tables (`docs/hooks/api_tables.py`) agree with the code they are read from."""

from __future__ import annotations

import enum
import importlib
import importlib.util
import inspect
import re

import pytest

from _site import ROOT, built_site

_spec = importlib.util.spec_from_file_location("api_tables", ROOT / "docs" / "hooks" / "api_tables.py")
api_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(api_tables)

API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))
_KIND = {inspect.Parameter.POSITIONAL_ONLY: "positional-only", inspect.Parameter.POSITIONAL_OR_KEYWORD: "",
         inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.KEYWORD_ONLY: "keyword-only",
         inspect.Parameter.VAR_KEYWORD: "**"}


def _directives() -> list[tuple[str, list[str] | None]]:
    out = []
    for page in API_PAGES:
        text = page.read_text()
        assert "<!-- api-signatures -->" in text, f"{page.name}: no signature table"
        for m in api_tables._DIRECTIVE.finditer(text):
            members = re.search(r"members: \[([^\]]*)\]", m.group(2))
            out.append((m.group(1), [n.strip() for n in members.group(1).split(",")] if members else None))
    return out


def _expected(params: list[inspect.Parameter]) -> str:
    """The hook's parameter list rebuilt from `inspect` (defaults as `=`, without their text)."""
    parts, star = [], False
    for i, p in enumerate(params):
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star:
            parts.append("*")
        star = star or p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_POSITIONAL)
        prefix = {"*": "*", "**": "**"}.get(_KIND[p.kind], "")
        parts.append(prefix + p.name + ("=" if p.default is not inspect.Parameter.empty else ""))
        nxt = params[i + 1] if i + 1 < len(params) else None
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and (nxt is None or nxt.kind is not p.kind):
            parts.append("/")
    return ", ".join(parts)


def _shape(sig: str) -> str:
    """`f(a, b=1, *, c=None) -> R` -> `a, b=, *, c=` (names, markers and whether there is a default)."""
    inner = sig[sig.index("(") + 1: sig.rindex(")")]
    depth, parts, cur = 0, [], ""
    for ch in inner:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts += [cur.strip()] if cur.strip() else []
    return ", ".join(p.split("=")[0] + ("=" if "=" in p else "") for p in parts)


DIRECTIVES = _directives()


def test_every_api_page_directive_is_read():
    modules = [d for d, _ in DIRECTIVES]
    assert "nvfp4_kvcache.pool" in modules and "nvfp4_kvcache_triton.decode_attention" in modules


@pytest.mark.parametrize("module_path, members", DIRECTIVES, ids=[d for d, _ in DIRECTIVES])
def test_rows_are_the_public_callables_with_their_real_signatures(module_path, members):
    module = importlib.import_module(module_path)
    if not inspect.ismodule(module):
        pytest.skip(f"{module_path} is not a module")
    rows = {anchor: sig for anchor, sig, _ in api_tables.rows(module_path, members)}
    names = members if members is not None else list(getattr(module, "__all__", []))
    for name in names:
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if obj.__name__ != name:
            continue        # another name for a class documented under its own
        if "<locals>" in obj.__qualname__:
            continue        # made by a factory at import time: documented as an attribute
        anchor = f"{module_path}.{name}"
        assert anchor in rows, f"{anchor} missing from the signature table"
        if inspect.isclass(obj) and issubclass(obj, enum.Enum):
            assert rows[anchor] == f"{name} (enum: {', '.join(obj.__members__)})"
            continue
        params = list(inspect.signature(obj).parameters.values())
        assert _shape(rows[anchor]) == _expected(params), (anchor, rows[anchor])
        if inspect.isfunction(obj) and obj.__doc__:
            assert api_tables.summary(api_tables._object(anchor)) == " ".join(
                inspect.cleandoc(obj.__doc__).split("\n\n")[0].split())


def test_signature_text_for_a_known_function():
    (row,) = [r for r in api_tables.rows("nvfp4_kvcache", ["quantize"])]
    assert row[:2] == ("nvfp4_kvcache.quantize", "quantize(x, recipe, *, global_scale=None) -> FP4Quantized")


def test_built_api_pages_carry_the_tables_linked_to_their_entries():
    site = built_site()
    for page in API_PAGES:
        html = (site / "api" / page.stem / "index.html").read_text()
        tables = re.search(r'<div class="api-signatures">(.*?)</div>', html, re.S)
        assert tables, page.name
        anchors = re.findall(r'<td><code><a href="#([\w.]+)">', tables.group(1))
        assert len(anchors) >= 10, page.name
        missing = [a for a in anchors if f'id="{a}"' not in html]
        assert not missing, f"{page.name}: table rows link to no entry: {missing}"
