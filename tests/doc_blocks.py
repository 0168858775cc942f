"""Sybil parsers for the code fences this site uses, and the record of which ran.

Every fence whose language is ``python``/``py``/``python3`` (any case), plain or in the brace form
``{.python .gpu}``, becomes one pytest item. Items of one page run in page order and share one
namespace, like a tutorial. A fence with the class ``.gpu`` needs CUDA: on a machine without it
the item is skipped with the reason :data:`GPU_SKIP_REASON`, the only skip the audit allows.
``pycon`` fences and ``>>>`` lines in docstrings run as doctests (their output is compared).

The audit (``scripts/audit_doc_blocks.py``) compares what the built site shows with what ran.
"""

from __future__ import annotations

import re

from sybil import Document, Region
from sybil.evaluators.doctest import DocTestEvaluator
from sybil.evaluators.python import PythonEvaluator
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
        self.python = PythonEvaluator()
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
