"""Packaging: the installed import names and the folders they come from.

The repository keeps its folders (`reference_impl/`, `kernels/`); the wheel installs them as
`nvfp4_kvcache` and `nvfp4_kvcache_triton`, names no well-known package uses. pyproject.toml lists
every package explicitly (setuptools cannot discover renamed folders), so a new sub-folder that is
not listed would silently be left out of the wheel: these tests catch that, and any import of the
folder names.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_under_its_installed_name():
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join((name, *rel.parts)))
    assert found == listed


def test_nothing_imports_the_folder_names():
    """`import reference_impl` or `import kernels` would load a second copy of a module (or another
    project's `kernels` package) next to the installed one."""
    out = subprocess.run(
        ["git", "grep", "-nE", r"^\s*(from|import)\s+(reference_impl|kernels)\b", "--", "*.py", "*.md"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout
    assert out == ""
