"""MkDocs hook: a signature table per documented module, read from the code at build time.

An API page writes `<!-- api-signatures -->` once; the hook replaces it with one table per
`::: module` directive on that page, in page order. Each row is a public function, class or
method (signature with defaults and return type, first paragraph of its docstring), its name
linked to its full entry further down the same page. The members are the ones the directive documents: its `members:` option if
it has one, else the module's `__all__`. Parameter annotations are left to the full entries.

The code is read by griffe, the library mkdocstrings itself uses, so the tables and the entries
cannot disagree, and nothing here is typed by hand.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

import yaml

_MARKER = "<!-- api-signatures -->"
_DIRECTIVE = re.compile(r"^::: ([\w.]+)[ \t]*\n((?:[ \t]+\S.*\n?)*)", re.M)


@lru_cache(maxsize=None)
def _package(name: str):
    import griffe

    return griffe.load(name)


def _object(path: str):
    top, _, rest = path.partition(".")
    obj = _package(top)
    return obj[rest] if rest else obj


def _target(obj):
    return obj.final_target if obj.is_alias else obj


def signature(obj, *, skip_first: bool = False) -> str:
    """`name(a, b=1, *, c=None) -> R` for a griffe function or class (parameters unannotated).

    An enumeration shows its members instead: `Rounding (enum: NEAREST_EVEN, ...)`.

    Args:
        obj: a griffe `Function` or `Class` (aliases followed).
        skip_first: drop the first parameter (`self` of a method).

    Returns:
        The signature as plain text.
    """
    obj = _target(obj)
    if obj.is_class and any(str(b).split(".")[-1].endswith("Enum") for b in obj.bases):
        return f"{obj.name} (enum: {', '.join(n for n, m in obj.members.items() if m.is_attribute and not n.startswith('_'))})"
    params = list(obj.parameters)
    if skip_first or (obj.is_class and params and params[0].name == "self"):
        params = params[1:]
    parts, star_done, slash_pending = [], False, False
    for p in params:
        kind = p.kind.value
        if slash_pending and kind != "positional-only":
            parts.append("/")
            slash_pending = False
        if kind == "positional-only":
            slash_pending = True
        if kind == "keyword-only" and not star_done:
            parts.append("*")
            star_done = True
        if kind == "variadic positional":
            parts.append(f"*{p.name}")
            star_done = True
        elif kind == "variadic keyword":
            parts.append(f"**{p.name}")
        else:
            parts.append(p.name if p.default is None else f"{p.name}={p.default}")
    if slash_pending:
        parts.append("/")
    text = f"{obj.name}({', '.join(parts)})"
    returns = getattr(obj, "returns", None)
    if obj.is_function and returns is not None and str(returns) != "None":
        text += f" -> {returns}"
    return text


def summary(obj) -> str:
    """First paragraph of the docstring, on one line (Markdown, as written)."""
    doc = _target(obj).docstring
    if doc is None:
        return ""
    return " ".join(doc.value.strip().split("\n\n", 1)[0].split())


def rows(module_path: str, members: list[str] | None = None) -> list[tuple[str, str, str]]:
    """`(anchor, signature, summary)` for each public function, class and method a directive documents.

    Args:
        module_path: the directive's identifier, for example `"nvfp4_kvcache.pool"`.
        members: the directive's `members:` option, if any.

    Returns:
        One row per callable, in the module's export order; a class is followed by its public
        methods. Anchors are the identifiers mkdocstrings gives the entries on the page.
    """
    module = _object(module_path)
    names = members if members is not None else list(module.exports or [])
    if not names:
        names = [n for n, m in module.members.items() if not n.startswith("_") and not m.is_alias]
    out = []
    for name in names:
        obj = module.members.get(name)
        if obj is None:
            continue
        target = _target(obj)
        if target.is_function:
            out.append((f"{module_path}.{name}", signature(target), summary(target)))
        elif target.is_class:
            out.append((f"{module_path}.{name}", signature(target), summary(target)))
            for mname, meth in target.members.items():
                meth = _target(meth)
                if mname.startswith("_") or not meth.is_function or meth.docstring is None:
                    continue
                static = "staticmethod" in meth.labels
                out.append((f"{module_path}.{name}.{mname}", signature(meth, skip_first=not static)
                            .replace(f"{mname}(", f"{name}.{mname}(", 1), summary(meth)))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(module_path: str, members: list[str] | None = None) -> str:
    """The Markdown table for one directive (empty when it documents no callable)."""
    body = rows(module_path, members)
    if not body:
        return ""
    lines = [f"**[`{module_path}`][{module_path}]**", "", "| signature | summary |", "|---|---|"]
    for anchor, sig, doc in body:
        name, paren, rest = sig.partition("(")
        code = f'<code><a href="#{anchor}">{html.escape(name)}</a>{html.escape(paren + rest)}</code>'
        lines.append(f"| {code.replace('|', '&#124;')} | {_cell(doc)} |")
    return "\n".join(lines) + "\n"


def page_tables(markdown: str) -> str:
    """Every table for a page, in the order of its `:::` directives."""
    out = ['<div class="api-signatures" markdown>', ""]
    for m in _DIRECTIVE.finditer(markdown):
        options = (yaml.safe_load(m.group(2)) or {}).get("options", {}) if m.group(2).strip() else {}
        members = options.get("members")
        if _object(m.group(1)).is_module and (text := table(m.group(1), members if isinstance(members, list) else None)):
            out.append(text)
    return "\n".join(out + ["</div>", ""])


def on_page_markdown(markdown: str, page, **_) -> str:
    if _MARKER not in markdown:
        return markdown
    return markdown.replace(_MARKER, page_tables(markdown), 1)
