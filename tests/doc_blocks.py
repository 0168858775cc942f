"""Sybil parsers for the code fences this site uses, and the record of which ran.

Every fence whose language is ``python``/``py``/``python3`` (any case), plain or in the brace form
``{.python .gpu}``, becomes one pytest item. Items of one page run in page order and share one
namespace, like a tutorial. A fence with the class ``.gpu`` needs CUDA: on a machine without it
the item is skipped with the reason `GPU_SKIP_REASON`, the only skip the audit allows.
``pycon`` fences and ``>>>`` lines in docstrings run as doctests (their output is compared).

**Printed output is part of the block** (the convention of pydantic's docs): whatever a python
block writes to stdout while it runs must follow, as ``#> `` comment lines, the statement that
wrote it, and the item fails when they differ. The site shows those lines, so a reader sees what
the block prints. ``UPDATE_DOC_OUTPUT=1 pytest docs/...`` rewrites the ``#>`` lines in place
instead of failing (written once the test run ends; review the diff).

The audit (``scripts/audit_doc_blocks.py``) compares what the built site shows with what ran.
"""

from __future__ import annotations

import ast
import difflib
import io
import os
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

from sybil import Document, Region
from sybil.evaluators.doctest import DocTestEvaluator
from sybil.evaluators.python import pad
from sybil.parsers.abstract.doctest import DocTestStringParser
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

GPU_SKIP_REASON = "needs a CUDA GPU"
"""The one skip reason the audit accepts on a machine without CUDA."""

PYTHON_LANGUAGES = ("python3", "python", "py")

_INFO = re.compile(
    r"(?P<info>\{?[ \t]*\.?(?P<language>[A-Za-z0-9_+-]+)(?=[\s{}]|$)[^\n]*)$\n", re.MULTILINE
)


def fence_classes(info: str) -> frozenset[str]:
    """``.gpu``-style classes of a fence info string such as ``{.python .gpu}``."""
    return frozenset(w[1:] for w in re.split(r"[\s{}]+", info)[1:] if w.startswith("."))


class FenceParser:
    """Yield a region per ``python`` fence (exec'd) and per ``>>>`` example of a ``pycon`` fence."""

    def __init__(self) -> None:
        self.lexer = RawFencedCodeBlockLexer(info_pattern=_INFO)
        self.python = PrintCheckEvaluator()
        self.doctest = DocTestStringParser(DocTestEvaluator())

    def __call__(self, document: Document):
        for region in self.lexer(document):
            language = region.lexemes["language"].lower()
            classes = fence_classes(region.lexemes["info"])
            source = region.lexemes["source"]
            if language in PYTHON_LANGUAGES and not source.lstrip().startswith(">>>"):
                region.parsed = source
                region.evaluator = self.python
                region.lexemes["classes"] = classes
                yield region
            elif language in PYTHON_LANGUAGES + ("pycon",):
                for sub in self.doctest(source, document.path):
                    sub.adjust(region, source)
                    sub.lexemes = {"classes": classes}
                    yield sub


def is_gpu_example(example) -> bool:
    """True for items cut from a fence with the ``.gpu`` class."""
    region: Region = example.region
    return "gpu" in region.lexemes.get("classes", ())


# ------------------------------------------------------------------ printed output as #> lines

OUTPUT_PREFIX = "#>"
UPDATE_ENV = "UPDATE_DOC_OUTPUT"
_PENDING: dict[str, list[tuple[int, int, str]]] = {}   # path -> (start, end, new text) to write


def is_output_line(line: str) -> bool:
    """True for a ``#>`` line: printed output recorded in the block, not code."""
    return line.lstrip().startswith(OUTPUT_PREFIX)


def strip_output(source: str) -> str:
    """The block without its ``#>`` lines."""
    return "".join(line for line in source.splitlines(keepends=True) if not is_output_line(line))


class _Capture(io.TextIOBase):
    """A stdout that files every write under the block line that caused it.

    The line is that of the outermost frame running this block's code (compiled under the page's
    path, at the block's own line numbers): output from a call, into a library or into a function
    the block defines, is filed under the block's statement that made the call.
    """

    def __init__(self, filename: str, first: int, last: int) -> None:
        self.filename, self.first, self.last = filename, first, last
        self.writes: list[tuple[int | None, str]] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        frame, line = sys._getframe(1), None
        while frame is not None:
            if frame.f_code.co_filename == self.filename and self.first <= frame.f_lineno <= self.last:
                line = frame.f_lineno - self.first + 1
            frame = frame.f_back
        self.writes.append((line, text))
        return len(text)


def _statements(tree: ast.AST) -> list[ast.stmt]:
    """Every simple (non-compound) statement of a module, nested ones included."""
    compound = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try,
                ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Match)
    if sys.version_info >= (3, 11):
        compound += (ast.TryStar,)
    return [n for n in ast.walk(tree) if isinstance(n, ast.stmt) and not isinstance(n, compound)]


def with_output(source: str, writes: list[tuple[int | None, str]]) -> str:
    """``source`` with its ``#>`` lines replaced by ``writes`` (block line, text), each group of
    output placed after the statement that wrote it, at that statement's indentation."""
    lines = source.splitlines()
    simple = _statements(ast.parse(source))
    groups: dict[tuple[int, int], list[str]] = {}
    for line, text in writes:
        if line is None:
            raise AssertionError(f"output not written by this block's code: {text!r}")
        owner = min((s for s in simple if s.lineno <= line <= (s.end_lineno or s.lineno)),
                    key=lambda s: (s.end_lineno or s.lineno) - s.lineno, default=None)
        key = (line, 0) if owner is None else (owner.end_lineno or owner.lineno, owner.col_offset)
        groups.setdefault(key, []).append(text)
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        if is_output_line(line):
            continue
        out.append(line)
        for (end, col), texts in sorted(groups.items()):
            if end == number:
                printed = "".join(texts)
                printed = printed[:-1] if printed.endswith("\n") else printed
                out += [(" " * col + f"{OUTPUT_PREFIX} {p}").rstrip() for p in printed.split("\n")]
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


class PrintCheckEvaluator:
    """Run a python block in the page's namespace and check its ``#>`` lines (see the module)."""

    def __call__(self, example) -> None:
        __tracebackhide__ = True
        source = str(example.parsed)
        first = example.line + example.parsed.line_offset + 1       # the block's first line in the page
        code = compile(pad(source, first - 1), example.path, "exec", dont_inherit=True)
        capture = _Capture(example.path, first, first + source.count("\n"))
        with redirect_stdout(capture):
            exec(code, example.namespace)
        example.namespace.pop("__builtins__", None)
        expected = with_output(source, capture.writes)
        if expected == source:
            return
        if os.environ.get(UPDATE_ENV) == "1":
            _queue_update(example, expected)
            return
        diff = "".join(difflib.unified_diff(source.splitlines(True), expected.splitlines(True),
                                            "block as written", "block with what it printed"))
        raise AssertionError(f"printed output differs from the block's #> lines "
                             f"(set {UPDATE_ENV}=1 to rewrite them):\n{diff}")


def _queue_update(example, new_source: str) -> None:
    text = example.document.text
    start = example.region.start + example.parsed.offset
    end = text.rfind("\n", start, example.region.end) + 1     # the closing fence's line
    prefix = re.match(r"[ \t>]*", text[example.region.start:]).group(0)
    body = "".join(prefix + line if line.strip() else line for line in new_source.splitlines(True))
    _PENDING.setdefault(example.path, []).append((start, end, body))


def write_pending_updates() -> list[str]:
    """Write every queued ``#>`` rewrite (bottom up, so offsets stay valid); return the paths."""
    written = []
    for path, edits in sorted(_PENDING.items()):
        text = Path(path).read_text(encoding="utf-8")
        for start, end, body in sorted(edits, reverse=True):
            text = text[:start] + body + text[end:]
        Path(path).write_text(text, encoding="utf-8")
        written.append(path)
    _PENDING.clear()
    return written


# ------------------------------------------------------------------ blocks copied on their own

REUSE = re.compile(r"^#\s*from above:\s*(?P<names>[\w, ]*)$", re.M)
"""A block that uses names from earlier blocks of its page says so on a leading comment line,
``# from above: pool, q``, so that a reader who copies it alone knows what it needs."""


def free_names(source: str) -> set[str]:
    """Names a block reads but neither defines, imports nor gets from builtins."""
    import builtins
    import symtable

    table = symtable.symtable(source, "<block>", "exec")
    bound = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    used: set[str] = set()

    def visit(t, top):
        for sym in t.get_symbols():
            if sym.is_referenced() and (top or sym.is_global()):
                used.add(sym.get_name())
        for child in t.get_children():
            visit(child, False)

    visit(table, True)
    return {n for n in used - bound if not hasattr(builtins, n)}


def declared_reuse(source: str) -> set[str]:
    """The names listed on the block's ``# from above:`` lines (before its first code line)."""
    names: set[str] = set()
    for line in source.splitlines():
        if line.strip() and not line.startswith("#"):
            break
        m = REUSE.match(line)
        if m:
            names |= {n.strip() for n in m.group("names").split(",") if n.strip()}
    return names
