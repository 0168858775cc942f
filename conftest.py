"""pytest set-up: doc pages and docstring examples are collected as tests (Sybil).

* ``docs/**/*.md``: every python fence runs, in page order, in one namespace per page, and what
  it prints must equal its ``#>`` lines (``UPDATE_DOC_OUTPUT=1`` rewrites them instead);
* ``reference_impl/**/*.py``, ``kernels/**/*.py``: every ``>>>`` docstring example runs;
* Triton kernels run in Triton's CPU interpreter when there is no GPU;
* each doc item's source and outcome is recorded for the audit (``DOC_BLOCKS_REPORT``).
"""

from __future__ import annotations

import doctest
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT / "tests"))

try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    HAS_CUDA = False

if not HAS_CUDA:
    # Must happen before triton is first imported anywhere.
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    from doc_blocks import GPU_SKIP_REASON, FenceParser, is_gpu_example, write_pending_updates
    from sybil import Sybil
    from sybil.document import PythonDocStringDocument
    from sybil.parsers.rest import DocTestParser
except ImportError:  # a GPU machine's image without the docs stack: the tests run, the docs blocks do not
    # (`make test` installs sybil, and its doc-block audit fails when blocks did not run)
    print("conftest: sybil is not installed; docs blocks and docstring examples are not collected", file=sys.stderr)
    GPU_SKIP_REASON = "needs a CUDA GPU"

    def write_pending_updates() -> list:
        return []
else:
    _docs = Sybil(parsers=[FenceParser()], path=str(ROOT / "docs"), patterns=["*.md"], name="docs")
    _docstrings = Sybil(
        parsers=[DocTestParser(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)],
        path=str(ROOT),
        patterns=["reference_impl/*.py", "reference_impl/**/*.py", "kernels/*.py", "kernels/**/*.py"],
        name="docstrings",
        document_types={".py": PythonDocStringDocument},
    )
    pytest_collect_file = (_docs + _docstrings).pytest()

_DOC_ITEMS: dict[str, dict] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped with a reason without one)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        example = getattr(item, "example", None)
        if example is None:
            if item.get_closest_marker("gpu") and not HAS_CUDA:
                item.add_marker(pytest.mark.skip(reason=GPU_SKIP_REASON))
            continue
        parsed = example.parsed
        source = parsed.source if isinstance(parsed, doctest.Example) else str(parsed)
        item.user_properties.append(("doc_source", source))
        if is_gpu_example(example):
            item.add_marker(pytest.mark.gpu)
            if not HAS_CUDA:
                item.add_marker(pytest.mark.skip(reason=GPU_SKIP_REASON))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    if "doc_source" not in props or not (report.when == "call" or report.skipped):
        return
    reason = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2].removeprefix("Skipped: ")
    _DOC_ITEMS[report.nodeid] = {"outcome": report.outcome, "reason": reason, "source": props["doc_source"]}


def pytest_sessionfinish(session: pytest.Session) -> None:
    for path in write_pending_updates():            # UPDATE_DOC_OUTPUT=1: rewritten #> lines
        print(f"\nrewrote printed output (#> lines) in {path}")
    out = os.environ.get("DOC_BLOCKS_REPORT")
    if out and not hasattr(session.config, "workerinput"):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(_DOC_ITEMS, indent=1, sort_keys=True))
