"""SGLang's released files for the benchmarks, read from the checkout's `.cache/` folder.

`nvfp4_kvcache.upstream` extracts single files of the SGLang wheel; the benchmarks keep them in
`.cache/sglang-<version>/src` inside the checkout, so that a GPU machine without network access
finds them when that folder travels with the working tree. The tests use the same folder.
"""

from __future__ import annotations

from functools import partial

import torch

from benchkit.record import ROOT
from nvfp4_kvcache import upstream as _up

CACHE = ROOT / ".cache"
load_sglang_module = partial(_up.load_sglang_module, cache_dir=CACHE)
load_kvfp4_tensor = partial(_up.load_kvfp4_tensor, cache_dir=CACHE)
SGLANG_VERSION = _up.SGLANG_VERSION


class _Envs:
    """Stub of `sglang.srt.environ.envs`: every setting reads as unset."""

    class _V:
        def get(self):
            return None

    def __getattr__(self, name):
        return self._V()


def load_sglang_decode():
    """SGLang's Triton decode-attention module (`sglang/kernels/ops/attention/decode_attention.py`),
    executed standalone with stubs for its SGLang imports."""
    score_mod = load_sglang_module("sglang/kernels/ops/attention/score_mod.py")

    def core_count(i=0):
        return torch.cuda.get_device_properties(i).multi_processor_count if torch.cuda.is_available() else 1

    stubs = {
        "sglang": {}, "sglang.kernels": {}, "sglang.kernels.ops": {}, "sglang.kernels.ops.attention": {},
        "sglang.kernels.ops.attention.score_mod": {"unpack_aux_tensors": score_mod.unpack_aux_tensors},
        "sglang.srt": {}, "sglang.srt.environ": {"envs": _Envs()},
        "sglang.srt.utils": {"get_device_core_count": core_count, "is_gfx95_supported": lambda: False,
                             "is_gfx1250_supported": lambda: False, "is_hip": lambda: False},
    }
    return load_sglang_module("sglang/kernels/ops/attention/decode_attention.py", stubs=stubs)
