"""Build a trimmed copy of FlashInfer's released wheel that holds only its NVFP4 KV paths.

The GPU machine has no network and carries at most 64 MiB with the working tree, while the
`flashinfer-python` wheel is about 100 MB (most of it CUDA sources and headers of unrelated
kernels). This script, run once on a machine with network access, writes
`build/flashinfer/` (git-ignored):

* `flashinfer.tar.xz`: the trimmed package (see below), extracted on the GPU machine;
* `wheels/`: the Python dependencies the trimmed package imports, as `cp312` /
  `manylinux x86_64` wheels (none of FlashInfer's other declared dependencies are needed);
* `manifest.json`: version, the wheel's SHA-256, every kept file with its size, the imported
  modules and dependencies (measured, see below), and the sizes.

What the trimmed package keeps, and how it is measured rather than guessed:

1. **Python files.** FlashInfer's `flashinfer/__init__.py` (and `flashinfer/jit/__init__.py`,
   `flashinfer/quantization/__init__.py`) import nearly every subpackage, so importing
   `flashinfer.page` would pull fused MoE, GEMM and experimental kernels. Those package
   `__init__` files are replaced by generated ones that export the same names lazily (PEP 562
   `__getattr__`, from the original file's own `from .x import y as z` lines): nothing is
   imported until asked for. The entry modules (`ENTRY_MODULES`) are then imported in a child
   process and every FlashInfer module that actually loads is kept, plus every module imported
   *inside* a function of the NVFP4 call paths (`CALL_PATHS`), found by reading the source.
2. **JIT sources.** The `.cu` files and Jinja templates of the page, NVFP4 dequantize, batch
   prefill (FA2, the tensor-core decode path) and batch decode (CUDA cores) modules
   (`JIT_SOURCES`), and every header they can reach through `#include` (a superset: the scan
   follows both branches of every `#if`), resolved against FlashInfer's include directories.
3. **Dependencies.** The top-level modules outside the standard library that the child process
   loaded, minus those the GPU machine already has (`torch` and what `torch` requires).

Usage:

```text
python scripts/flashinfer_bundle.py                 # download the pinned wheel, build the bundle
python scripts/flashinfer_bundle.py --wheel PATH    # use a wheel already downloaded
python scripts/flashinfer_bundle.py --check         # only print what the bundle holds
```

On the GPU machine, `bash scripts/flashinfer_install.sh` installs it (no network needed).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "build" / "flashinfer"
CACHE = ROOT / ".cache" / "flashinfer"

FLASHINFER_VERSION = "0.7.4"
"""The pinned release (the latest on PyPI when the bundle was written; `pip index versions`)."""

TARGET_PYTHON = "3.12"
TARGET_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

ENTRY_MODULES = (
    "flashinfer.page",                          # the NVFP4 paged writers
    "flashinfer.decode",                        # BatchDecodeWithPagedKVCacheWrapper
    "flashinfer.prefill",                       # the FA2 module the tensor-core decode runs
    "flashinfer.quantization.fp4_quantization",  # nvfp4_kv_dequantize_paged
    "flashinfer.jit.page",
    "flashinfer.jit.fp4_kv_dequantization",
    "flashinfer.jit.attention.modules",
    "flashinfer.jit.core",
)
"""Modules the conformance and decode harnesses import (each is imported in the measurement)."""

CALL_PATHS = {
    "flashinfer.page": ("get_page_module", "get_batch_indices_positions",
                        "nvfp4_quantize_append_paged_kv_cache",
                        "nvfp4_quantize_append_paged_kv_cache_with_slot_mapping",
                        "nvfp4_quantize_append_paged_mla_kv_cache", "_nvfp4_quantize_append_paged_kv_cache_kernel",
                        "_nvfp4_quantize_append_paged_kv_cache_with_slot_mapping_kernel",
                        "_nvfp4_quantize_append_paged_mla_kv_cache_kernel"),
    "flashinfer.quantization.fp4_quantization": ("get_fp4_kv_dequantization_module", "nvfp4_kv_dequantize_paged",
                                                 "nvfp4_kv_dequantize"),
    "flashinfer.decode": ("BatchDecodeWithPagedKVCacheWrapper", "get_batch_decode_module"),
    "flashinfer.prefill": ("get_batch_prefill_module",),
    "flashinfer.utils": ("get_compute_capability", "device_support_pdl", "determine_attention_backend"),
}
"""Functions (or classes) on the NVFP4 paths whose function-level imports are kept too."""

OTHER_BACKENDS = ("flashinfer.cute_dsl", "flashinfer.attention.kernels.cutile")
"""Imported inside `BatchDecodeWithPagedKVCacheWrapper` only on its `backend="cute-dsl"` and
`backend="cutile"` branches (`flashinfer/decode.py`), which the harness never selects; they
need `nvidia-cutlass-dsl` and `cuda-python`, so they are left out."""

LAZY_PACKAGES = ("flashinfer", "flashinfer.jit", "flashinfer.quantization", "flashinfer.jit.attention")
"""Packages whose `__init__` is replaced by a lazy one."""

JIT_SOURCES = (
    # page module (flashinfer/jit/page.py): the writers
    "csrc/page.cu",
    "csrc/flashinfer_page_binding.cu",
    # NVFP4 dequantize (flashinfer/jit/fp4_kv_dequantization.py)
    "csrc/fp4_kv_dequantization.cu",
    # batch prefill, FA2 (flashinfer/jit/attention/modules.py, gen_customize_batch_prefill_module)
    "csrc/batch_prefill.cu",
    "csrc/batch_prefill_jit_binding.cu",
    "csrc/batch_prefill_paged.cu",
    "csrc/batch_prefill_paged.cuh",
    "csrc/batch_prefill_paged_jit_binding.cu",
    "csrc/batch_prefill_customize_config.jinja",
    "csrc/batch_prefill_paged_kernel_inst.jinja",
    "csrc/batch_prefill_ragged_kernel_inst.jinja",
    # batch decode on CUDA cores (gen_customize_batch_decode_module): the BF16 / FP8 anchors
    "csrc/batch_decode.cu",
    "csrc/batch_decode_jit_binding.cu",
    "csrc/batch_decode_customize_config.jinja",
    "csrc/batch_decode_kernel_inst.jinja",
)
"""CUDA sources and templates of the modules the harnesses build, relative to `flashinfer/data`."""

INCLUDE_DIRS = ("include", "csrc", "cutlass/include", "cutlass/tools/util/include", "spdlog/include",
                "cccl/cub", "cccl/libcudacxx/include", "cccl/thrust")
"""FlashInfer's include directories (`flashinfer/jit/env.py` and `cpp_ext.py`), under `data`."""

WHOLE_TREES = ("cccl/libcudacxx/include",)
"""Kept entirely: the CUDA toolkit's own headers (`cuda_fp16.h`, `cuda_bf16.h`, ...) include
`<nv/target>` and other libcu++ headers, and FlashInfer's `-I` puts its copy of libcu++ first,
so the compiler reads FlashInfer's copy through includes the scan below cannot see (it does not
read the toolkit's headers). A partial copy could mix two libcu++ versions."""

PRESENT_ON_GPU_MACHINE = frozenset({
    "torch", "triton", "jinja2", "markupsafe", "filelock", "typing_extensions", "sympy", "mpmath",
    "networkx", "fsspec", "setuptools",
})
"""Distributions the GPU machine's torch install brings (torch and what it requires)."""

OPTIONAL_IMPORTS = frozenset({"numpy", "ml_dtypes"})
"""Imported only inside `try: ... except ImportError` (torch and `tvm_ffi/_dtype.py`): not bundled."""

PROBE_REQUIREMENTS = ("apache-tvm-ffi", "nvidia-ml-py", "tqdm", "packaging", "filelock", "typing_extensions")
"""Installed for *this* interpreter before the measurement; a module still missing is added and
the measurement repeated (see `measure_with_deps`)."""


# -- lazy package __init__ ------------------------------------------------------------------------
LAZY_TEMPLATE = '''"""Lazy stand-in for `{name}/__init__.py` of flashinfer-python {version}.

Generated by scripts/flashinfer_bundle.py: the original imports nearly every subpackage; this
file exports the same names, each imported on first access (PEP 562).
"""

import importlib as _importlib

_EXPORTS = {exports!r}


def __getattr__(name):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {{__name__!r}} has no attribute {{name!r}}") from None
    value = _importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
'''


def lazy_exports(source: str) -> dict[str, tuple[str, str | None]]:
    """Exported name -> (relative module, attribute or `None`) from a package `__init__`'s
    top-level `from .x import y as z` and `from . import x` statements.

    Examples:
        >>> lazy_exports("from .a import f as g\\nfrom . import b\\nfrom .c.d import h")
        {'g': ('.a', 'f'), 'b': ('.b', None), 'h': ('.c.d', 'h')}
    """
    exports: dict[str, tuple[str, str | None]] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.ImportFrom) and node.level >= 1):
            continue
        dots = "." * node.level
        for alias in node.names:
            if alias.name == "*":
                raise ValueError(f"star import from {dots}{node.module or ''} cannot be made lazy")
            if node.module is None:
                exports[alias.asname or alias.name] = (dots + alias.name, None)
            else:
                exports[alias.asname or alias.name] = (dots + node.module, alias.name)
    return exports


def lazy_init_source(source: str, package: str) -> str:
    """The generated lazy `__init__.py` for `package` whose original text is `source`."""
    return LAZY_TEMPLATE.format(name=package.replace(".", "/"), version=FLASHINFER_VERSION,
                                exports=lazy_exports(source))


# -- imports inside functions -----------------------------------------------------------------------
def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """Absolute module name of `from {'.' * level}{target} import ...` written in `module`.

    Examples:
        >>> resolve_relative("flashinfer.page", False, 1, "jit.page")
        'flashinfer.jit.page'
        >>> resolve_relative("flashinfer.jit", True, 2, "utils")
        'flashinfer.utils'
    """
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def function_imports(source: str, module: str, is_package: bool, names: tuple[str, ...]) -> set[str]:
    """Absolute names of the FlashInfer modules imported inside the named top-level functions or
    classes of a module (`from .x import y` may name a module `x.y` or an attribute of `x`:
    both candidates are returned; the caller keeps the ones that exist)."""
    found: set[str] = set()
    for node in ast.parse(source).body:
        if not (isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.name in names):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom):
                if sub.level:
                    base = resolve_relative(module, is_package, sub.level, sub.module)
                elif (sub.module or "").startswith("flashinfer"):
                    base = sub.module
                else:
                    continue
                found.add(base)
                found.update(f"{base}.{a.name}" for a in sub.names)
            elif isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names if a.name.startswith("flashinfer"))
    return found


# -- #include closure -----------------------------------------------------------------------------
_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def include_closure(data: Path, sources: list[str], include_dirs: tuple[str, ...]) -> tuple[set[Path], set[str]]:
    """Files under `data` reachable from `sources` through `#include` (every branch of every
    `#if` is followed, so this is a superset of what the compiler opens).

    Returns:
        `(files, unresolved)`: the reachable files (absolute paths) and the include names found in
        none of `include_dirs` nor next to their includer (CUDA's, the C++ library's, tvm_ffi's).
    """
    dirs = [data / d for d in include_dirs]
    seen: set[Path] = set()
    unresolved: set[str] = set()
    todo = [data / s for s in sources]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        text = path.read_text(errors="replace")
        for name in _INCLUDE.findall(text):
            for d in [path.parent, *dirs]:
                cand = (d / name)
                if cand.is_file():
                    todo.append(cand.resolve())
                    break
            else:
                unresolved.add(name)
    return seen, unresolved


# -- the measurement (child process) --------------------------------------------------------------
_PROBE = r'''
import importlib, json, os, sys
root = os.path.realpath(sys.argv[1])
before = set(sys.modules)
loaded, errors = [], {}
for name in sys.argv[2].split(","):
    try:
        importlib.import_module(name)
    except Exception as exc:  # recorded: the harness must not need this module
        errors[name] = f"{type(exc).__name__}: {exc}"
files = sorted({os.path.realpath(m.__file__) for m in list(sys.modules.values())
                if getattr(m, "__file__", None) and os.path.realpath(m.__file__).startswith(root)})
import importlib.metadata as md, sysconfig
stdlib = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
dists = md.packages_distributions()
third = {}
for n in sorted(set(sys.modules) - before):
    top = n.split(".")[0]
    f = getattr(sys.modules.get(top), "__file__", None)
    if top.startswith("flashinfer") or top in sys.stdlib_module_names or not f:
        continue
    f = os.path.realpath(f)
    if any(f.startswith(s + os.sep) and "site-packages" not in f for s in stdlib):
        continue
    third[top] = sorted(dists.get(top, [top]))
print(json.dumps({"files": files, "third_party": third, "errors": errors}))
'''


def measure_imports(tree: Path, dep_path: Path | None, modules: tuple[str, ...]) -> dict:
    """Import `modules` from `tree` in a child process; report the files it loaded, the
    distributions outside the standard library it imported, and the imports that failed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (tree, dep_path) if p)
    env.setdefault("FLASHINFER_CUDA_ARCH_LIST", "9.0a")   # no GPU here: name the target instead
    env["FLASHINFER_WORKSPACE_BASE"] = tempfile.mkdtemp(prefix="fi-ws-")
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tree), ",".join(modules)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def module_file(tree: Path, name: str) -> Path | None:
    base = tree.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand.resolve()
    return None


def python_closure(tree: Path, dep_path: Path | None) -> tuple[set[Path], dict]:
    """The `.py` files to keep: those the entry imports load, plus the call paths' own imports
    (and what those load in turn)."""
    report = measure_imports(tree, dep_path, ENTRY_MODULES)
    keep = {Path(f) for f in report["files"]}
    extra: set[str] = set()
    for module, names in CALL_PATHS.items():
        f = module_file(tree, module)
        if f is not None:
            extra |= function_imports(f.read_text(), module, f.name == "__init__.py", names)
    existing = tuple(sorted(n for n in extra if module_file(tree, n) is not None
                            and not n.startswith(OTHER_BACKENDS)))
    report["call_path_modules"] = list(existing)
    if existing:
        more = measure_imports(tree, dep_path, existing)
        keep |= {Path(f) for f in more["files"]}
        report["third_party"].update(more["third_party"])
        report["errors"].update(more["errors"])
    # every package on the way to a kept module needs its __init__
    for f in list(keep):
        p = f.parent
        while p != tree and p.is_relative_to(tree):
            if (p / "__init__.py").is_file():
                keep.add((p / "__init__.py").resolve())
            p = p.parent
    return keep, report


def missing_modules(errors: dict[str, str]) -> set[str]:
    """Top-level module names from `ModuleNotFoundError` messages (outside FlashInfer)."""
    names = {m.split(".")[0] for m in re.findall(r"No module named '([^']+)'", " ".join(errors.values()))}
    return {n for n in names if not n.startswith("flashinfer")}


# -- build ----------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_download(args: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), *args], check=True)


def fetch_wheel(cache: Path) -> Path:
    """The pinned `flashinfer-python` wheel, downloaded once into `.cache/flashinfer`."""
    name = f"flashinfer_python-{FLASHINFER_VERSION}-py3-none-any.whl"
    path = cache / name
    if not path.is_file():
        pip_download([f"flashinfer-python=={FLASHINFER_VERSION}"], cache)
    return path


def target_wheels(requirements: list[str], dest: Path) -> list[Path]:
    """Wheels of `requirements` for the GPU machine (`cp312`, `manylinux x86_64`)."""
    if not requirements:
        return []
    before = set(dest.glob("*.whl")) if dest.exists() else set()
    plat = [a for p in TARGET_PLATFORMS for a in ("--platform", p)]
    pip_download(["--only-binary=:all:", "--python-version", TARGET_PYTHON, *plat, *requirements], dest)
    return sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob("*.whl"))


def local_deps(requirements: list[str], dest: Path) -> Path:
    """`requirements` installed for *this* interpreter into `dest` (only to run the import
    measurement here; the bundle gets `cp312` wheels)."""
    stamp = dest / ".requirements"
    if not stamp.is_file() or stamp.read_text() != "\n".join(requirements):
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(dest),
                        *requirements], check=True)
        stamp.write_text("\n".join(requirements))
    return dest


def requirement_pins(wheel: Path) -> dict[str, str]:
    """Distribution -> the requirement string flashinfer-python declares for it (its METADATA)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    pins = {}
    for line in text.splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            req = line.split(":", 1)[1].strip()
            name = re.split(r"[<>=!~ ;\[]", req, maxsplit=1)[0]
            pins[name.lower()] = req.split(";")[0].strip()
    return pins


def build(wheel: Path, out: Path) -> dict:
    """Extract `wheel`, generate the lazy inits, measure, and write the bundle into `out`."""
    pins = requirement_pins(wheel)
    work = Path(tempfile.mkdtemp(prefix="fi-trim-"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(work, [n for n in z.namelist() if n.startswith("flashinfer/")])
    tree = work
    pkg = tree / "flashinfer"
    for package in LAZY_PACKAGES:
        init = tree.joinpath(*package.split("."), "__init__.py")
        init.write_text(lazy_init_source(init.read_text(), package))

    requirements = list(PROBE_REQUIREMENTS)
    for _ in range(5):   # add what the measurement finds missing, then measure again
        deps = local_deps([pins.get(d.lower(), d) for d in requirements], CACHE / "probe-deps")
        py_files, report = python_closure(tree, deps)
        missing = missing_modules(report["errors"]) - set(requirements)
        if not missing:
            break
        requirements += sorted(missing)
    data = pkg / "data"
    sources = [s for s in JIT_SOURCES if (data / s).is_file()]
    missing_sources = sorted(set(JIT_SOURCES) - set(sources))
    headers, unresolved = include_closure(data, sources, INCLUDE_DIRS)
    for whole in WHOLE_TREES:
        headers |= {f.resolve() for f in (data / whole).rglob("*") if f.is_file()}

    kept = sorted(py_files | headers)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:
        for f in kept:
            info = tar.gettarinfo(str(f), arcname=str(f.relative_to(tree)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with f.open("rb") as fh:
                tar.addfile(info, fh)
    (out / "flashinfer.tar.xz").write_bytes(buf.getvalue())

    dists = sorted({d for top, ds in report["third_party"].items() if top not in OPTIONAL_IMPORTS
                    for d in ds if d.lower() not in PRESENT_ON_GPU_MACHINE})
    wheel_dir = out / "wheels"
    shutil.rmtree(wheel_dir, ignore_errors=True)
    target_wheels([pins.get(d.lower(), d) for d in dists], wheel_dir)

    manifest = {
        "flashinfer_version": FLASHINFER_VERSION,
        "wheel": wheel.name,
        "wheel_sha256": sha256(wheel),
        "wheel_bytes": wheel.stat().st_size,
        "entry_modules": list(ENTRY_MODULES),
        "call_path_modules": report.get("call_path_modules", []),
        "import_errors": report["errors"],
        "third_party_imported": report["third_party"],
        "dependencies": dists,
        "wheels": {w.name: w.stat().st_size for w in sorted(wheel_dir.glob("*.whl"))},
        "jit_sources": sources,
        "jit_sources_missing": missing_sources,
        "unresolved_includes": sorted(unresolved),
        "files": {str(f.relative_to(tree)): f.stat().st_size for f in kept},
        "sizes": {
            "python_files": len(py_files),
            "python_bytes": sum(f.stat().st_size for f in py_files),
            "header_and_source_files": len(headers),
            "header_and_source_bytes": sum(f.stat().st_size for f in headers),
            "tar_xz_bytes": (out / "flashinfer.tar.xz").stat().st_size,
        },
    }
    manifest["sizes"]["bundle_bytes"] = manifest["sizes"]["tar_xz_bytes"] + sum(manifest["wheels"].values())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def summary(manifest: dict) -> str:
    s = manifest["sizes"]
    mib = 1 << 20
    lines = [
        f"flashinfer-python {manifest['flashinfer_version']} ({manifest['wheel_bytes'] / mib:.1f} MiB wheel)",
        f"  python files: {s['python_files']} ({s['python_bytes'] / mib:.1f} MiB)",
        f"  headers + JIT sources: {s['header_and_source_files']} ({s['header_and_source_bytes'] / mib:.1f} MiB)",
        f"  flashinfer.tar.xz: {s['tar_xz_bytes'] / mib:.2f} MiB",
        f"  dependency wheels: {', '.join(manifest['wheels'])} ({sum(manifest['wheels'].values()) / mib:.2f} MiB)",
        f"  bundle total: {s['bundle_bytes'] / mib:.2f} MiB",
    ]
    if manifest["import_errors"]:
        lines.append(f"  import errors (CPU machine): {manifest['import_errors']}")
    if manifest["jit_sources_missing"]:
        lines.append(f"  MISSING JIT sources: {manifest['jit_sources_missing']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help="a downloaded flashinfer_python wheel (default: download the pin)")
    ap.add_argument("--out", type=Path, default=BUNDLE)
    ap.add_argument("--check", action="store_true", help="print the existing bundle's manifest summary")
    args = ap.parse_args(argv)
    if args.check:
        print(summary(json.loads((args.out / "manifest.json").read_text())))
        return 0
    wheel = args.wheel or fetch_wheel(CACHE)
    manifest = build(wheel, args.out)
    print(summary(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
