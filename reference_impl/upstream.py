"""Run single files of upstream SGLang from its released wheel, without installing or importing SGLang.

The wheel is fetched once from the package registry with `pip download` into a cache folder,
and only the file you ask for is executed, with small stub modules standing in for the names it
imports from the rest of SGLang. That is how this project tests its oracle against the real
upstream code, and how you can put upstream's quantizer next to your own kernel in a test.

Examples:
    >>> from nvfp4_kvcache.upstream import SGLANG_VERSION, KVFP4_TENSOR
    >>> SGLANG_VERSION, KVFP4_TENSOR
    ('0.5.23', 'sglang/srt/layers/quantization/kvfp4_tensor.py')
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
import zipfile
from pathlib import Path

__all__ = ["SGLANG_VERSION", "KVFP4_TENSOR", "default_cache_dir", "sglang_wheel", "sglang_source",
           "load_sglang_module", "load_kvfp4_tensor"]

SGLANG_VERSION = "0.5.23"
"""The SGLang release this project's conformance tests run against."""

KVFP4_TENSOR = "sglang/srt/layers/quantization/kvfp4_tensor.py"
"""Path, inside the wheel, of SGLang's FP4 KV quantizer module."""


def default_cache_dir() -> Path:
    """`~/.cache/nvfp4-kvcache`: where wheels and extracted files are kept."""
    return Path.home() / ".cache" / "nvfp4-kvcache"


def _dir(cache_dir: Path | None, version: str) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"sglang-{version}"


def sglang_wheel(version: str = SGLANG_VERSION, cache_dir: Path | None = None) -> Path:
    """Path of the cached SGLang wheel, downloaded (`pip download --no-deps`) on first use."""
    folder = _dir(cache_dir, version)
    wheels = sorted(folder.glob(f"sglang-{version}-*.whl"))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", str(folder), f"sglang=={version}"],
            check=True,
        )
        wheels = sorted(folder.glob(f"sglang-{version}-*.whl"))
    return wheels[0]


def sglang_source(relpath: str, version: str = SGLANG_VERSION, cache_dir: Path | None = None) -> str:
    """Text of one file of the wheel, e.g. `sglang/srt/mem_cache/memory_pool.py`."""
    with zipfile.ZipFile(sglang_wheel(version, cache_dir)) as wheel:
        return wheel.read(relpath).decode("utf-8")


def load_sglang_module(
    relpath: str,
    stubs: dict[str, dict[str, object]] | None = None,
    version: str = SGLANG_VERSION,
    cache_dir: Path | None = None,
) -> types.ModuleType:
    """Execute one SGLang source file as a standalone module.

    Args:
        relpath: path inside the wheel.
        stubs: module name -> attributes, placed in `sys.modules` only while the file runs its
            imports (e.g. `{"sglang.srt.runtime_context": {"get_platform": ...}}`).
        version: SGLang release.
        cache_dir: cache folder (default [`default_cache_dir`][nvfp4_kvcache.upstream.default_cache_dir]). Once a file is extracted
            there, the wheel is no longer needed (useful on machines without network access).
    """
    target = _dir(cache_dir, version) / "src" / relpath
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(sglang_source(relpath, version, cache_dir), encoding="utf-8")
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


def load_kvfp4_tensor(
    version: str = SGLANG_VERSION, cache_dir: Path | None = None, sm: int | None = None
) -> types.ModuleType:
    """Upstream `kvfp4_tensor.py`, with its `get_platform` import stubbed.

    Args:
        version: SGLang release.
        cache_dir: cache folder.
        sm: the GPU architecture the stub reports (90, 100, 120), or `None` for none. With
            `sm=90`, `NVFP4KVQuantizeUtil.dequantize` takes its pure-PyTorch branch.
    """

    class _Platform:
        is_sm90 = sm == 90
        is_sm100 = sm == 100
        is_sm120 = sm == 120

    return load_sglang_module(
        KVFP4_TENSOR, stubs={"sglang.srt.runtime_context": {"get_platform": lambda: _Platform()}},
        version=version, cache_dir=cache_dir,
    )
