"""The tests' view of `nvfp4_kvcache.upstream`: the same functions, cached under `.cache/`.

Keeping the cache inside the checkout lets a GPU machine without network access reuse the
extracted files (copy `.cache/sglang-0.5.23/src` there with the working tree).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from nvfp4_kvcache import upstream as _up
from nvfp4_kvcache.upstream import KVFP4_TENSOR, SGLANG_VERSION  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"

sglang_wheel = partial(_up.sglang_wheel, cache_dir=CACHE)
sglang_source = partial(_up.sglang_source, cache_dir=CACHE)
load_sglang_module = partial(_up.load_sglang_module, cache_dir=CACHE)
load_kvfp4_tensor = partial(_up.load_kvfp4_tensor, cache_dir=CACHE)
