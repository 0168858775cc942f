"""Load single modules of upstream SGLang from its released wheel, without importing ``sglang``.

The wheel comes from the package registry with ``pip download`` (once; cached under
``.cache/``), and only the file under test is executed, with stubs for the few names it imports
from the rest of SGLang. That way the tests check the real upstream code, not a memory of it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
import zipfile
from pathlib import Path

SGLANG_VERSION = "0.5.23"
"""The SGLang release the conformance tests run against."""

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / f"sglang-{SGLANG_VERSION}"
KVFP4_TENSOR = "sglang/srt/layers/quantization/kvfp4_tensor.py"


def sglang_wheel() -> Path:
    """Path of the cached SGLang wheel, downloading it on first use."""
    wheels = sorted(CACHE.glob(f"sglang-{SGLANG_VERSION}-*.whl"))
    if not wheels:
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", str(CACHE), f"sglang=={SGLANG_VERSION}"],
            check=True,
        )
        wheels = sorted(CACHE.glob(f"sglang-{SGLANG_VERSION}-*.whl"))
    return wheels[0]


def sglang_source(relpath: str) -> str:
    """Text of one file of the SGLang wheel, e.g. ``sglang/srt/mem_cache/memory_pool.py``."""
    with zipfile.ZipFile(sglang_wheel()) as wheel:
        return wheel.read(relpath).decode("utf-8")


def load_sglang_module(relpath: str, stubs: dict[str, dict[str, object]] | None = None) -> types.ModuleType:
    """Execute one SGLang source file as a standalone module.

    Args:
        relpath: path inside the wheel.
        stubs: module name -> attributes, installed in ``sys.modules`` only while the file runs
            its imports (e.g. ``{"sglang.srt.runtime_context": {"get_platform": ...}}``).
    """
    target = CACHE / "src" / relpath
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(sglang_source(relpath), encoding="utf-8")
    saved = {}
    for name, attrs in (stubs or {}).items():
        saved[name] = sys.modules.get(name)
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    try:
        name = "upstream_" + relpath.replace("/", "_").removesuffix(".py")
        spec = importlib.util.spec_from_file_location(name, target)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return module


def load_kvfp4_tensor() -> types.ModuleType:
    """Upstream ``kvfp4_tensor.py`` (its ``get_platform`` import stubbed: CPU has no SM version)."""

    class _NoGPU:
        is_sm90 = is_sm100 = is_sm120 = False

    return load_sglang_module(
        KVFP4_TENSOR, stubs={"sglang.srt.runtime_context": {"get_platform": lambda: _NoGPU()}}
    )
