"""Docs blocks work for a reader who copies them: outside the repository, and one at a time.

* Every page's python blocks, pasted in page order into one script, run in a temporary folder
  (the working directory) with ``python -I``: no repository folder on ``sys.path``, so only the
  installed ``nvfp4_kvcache`` / ``nvfp4_kvcache_triton`` can be imported, and data files are
  reached through `nvfp4_kvcache.docs_data`. Each run has a time limit (a block that walks the
  file system looking for the repository would hang), and the script's output must be the
  page's ``#>`` lines.
* A page's first block needs nothing from elsewhere; a later block that uses names from earlier
  blocks lists them on a ``# from above: a, b`` line, and lists nothing it does not use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sybil import Document

from doc_blocks import (PYTHON_LANGUAGES, FenceParser, declared_reuse, fence_classes, free_names,
                        is_output_line)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if not {"data", "includes"} & set(p.relative_to(DOCS).parts))
TIME_LIMIT_S = 900

try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    HAS_CUDA = False


def python_blocks(page: Path) -> list[tuple[int, str, frozenset[str]]]:
    """(line, source, classes) of each python fence of a page, in page order."""
    document = Document(page.read_text(encoding="utf-8"), str(page))
    blocks = []
    for region in FenceParser().lexer(document):
        if region.lexemes["language"].lower() in PYTHON_LANGUAGES:
            line = document.text.count("\n", 0, region.start) + 1
            blocks.append((line, str(region.lexemes["source"]), fence_classes(region.lexemes["info"])))
    return blocks


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p)]
IDS = [str(p.relative_to(DOCS)) for p in PAGES_WITH_CODE]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=IDS)
def test_blocks_say_what_they_reuse(page):
    problems = []
    for i, (line, source, _) in enumerate(python_blocks(page)):
        free, declared = free_names(source), declared_reuse(source)
        if i == 0 and free:
            problems.append(f"line {line}: the page's first block uses undefined names {sorted(free)}")
        elif i and free != declared:
            problems.append(f"line {line}: uses {sorted(free)} from earlier blocks, "
                            f"but its '# from above:' line lists {sorted(declared)}")
    assert not problems, "\n".join(problems)


def _script(page: Path) -> tuple[str, list[str]]:
    """The page's blocks as one script, and the output lines its #> comments show."""
    parts, shown = [f"# {page.name}, every python block in page order\n"], []
    for line, source, classes in python_blocks(page):
        if "gpu" in classes and not HAS_CUDA:
            continue
        parts.append(f"\n# --- block at line {line}\n{source}")
        shown += [ln.strip()[2:].removeprefix(" ") for ln in source.splitlines() if is_output_line(ln)]
    parts.append("\nimport sys as _sys\n"
                 "_leaked = sorted(m for m in ('kernels', 'reference_impl', 'tables', 'doc_blocks') "
                 "if m in _sys.modules)\n"
                 "assert not _leaked, f'imported from the repository, not the installed packages: {_leaked}'\n")
    return "".join(parts), shown


def run_outside(page: Path, folder: Path, time_limit_s: float = TIME_LIMIT_S):
    """Run the page's blocks as one script in `folder`; (completed process or None on timeout, #> lines)."""
    script, shown = _script(page)
    path = folder / "page.py"
    path.write_text(script, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NVFP4_KVCACHE_DOCS_DATA")}
    if not HAS_CUDA:
        env["TRITON_INTERPRET"] = "1"
    try:
        run = subprocess.run([sys.executable, "-I", str(path)], cwd=folder, env=env, capture_output=True,
                             text=True, timeout=time_limit_s)
    except subprocess.TimeoutExpired:
        return None, shown
    return run, shown


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=IDS)
def test_page_runs_outside_the_repository(page, tmp_path):
    run, shown = run_outside(page, tmp_path)
    name = page.relative_to(ROOT)
    assert run is not None, f"{name}: still running after {TIME_LIMIT_S} s outside the repository"
    assert run.returncode == 0, f"{name} failed outside the repository:\n{run.stderr[-4000:]}"
    printed = [ln.rstrip() for ln in run.stdout.splitlines()]
    assert sorted(printed) == sorted(s.rstrip() for s in shown), (
        f"{name}: output outside the repository differs from the page's #> lines")


def test_the_outside_run_catches_repository_imports_hangs_and_stale_output(tmp_path):
    def page(body: str) -> Path:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        (folder / "page.md").write_text(f"# page\n\n```python\n{body}```\n")
        return folder / "page.md"

    run, _ = run_outside(page("import tables\n"), tmp_path)           # scripts/ is not importable
    assert run.returncode != 0 and "ModuleNotFoundError" in run.stderr
    walk = "from pathlib import Path\nroot = Path.cwd()\nwhile not (root / 'kernels').is_dir():\n    root = root.parent\n"
    run, _ = run_outside(page(walk), tmp_path, time_limit_s=5)          # the old set-up blocks: a hang
    assert run is None
    run, shown = run_outside(page("print(1)\n#> 2\n"), tmp_path)
    assert run.returncode == 0 and sorted(run.stdout.split()) != sorted(shown)
    run, _ = run_outside(page("from nvfp4_kvcache import docs_data\ndocs_data.read_json('no/such.json')\n"),
                         tmp_path)
    assert run.returncode != 0 and "no 'no/such.json'" in run.stderr
