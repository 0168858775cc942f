"""SGLang 0.5.23: `FP4MXBlock16KVQuantizeUtil` (`--kv-cache-dtype fp4_mx_block16`), compiled as SGLang runs it.

Loaded from the released wheel without installing SGLang (`nvfp4_kvcache.upstream`), as the
conformance tests do (`tests/test_sglang_conformance.py`); Inductor compiles it on the CPU. Its
NVFP4 quantizer calls FlashInfer CUDA kernels and has no CPU path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from peerlab.base import Entry, Peer, PeerResult

SOURCE = "sglang 0.5.23: sglang/srt/layers/quantization/kvfp4_tensor.py"
CACHE = Path(__file__).resolve().parents[2] / ".cache"


def load() -> list[Entry]:
    from nvfp4_kvcache.upstream import load_kvfp4_tensor

    util = load_kvfp4_tensor(cache_dir=CACHE).FP4MXBlock16KVQuantizeUtil

    def run(x: torch.Tensor, g: float | None) -> PeerResult:
        packed, scales = util.batched_quantize(x.unsqueeze(1))
        deq = util.batched_dequantize(packed, scales, dtype=torch.float32)
        return PeerResult(packed.reshape(x.shape[0], -1), scales.reshape(x.shape[0], -1), deq.reshape(x.shape))

    return [Entry(
        id="sglang/fp4_mx_block16",
        recipe="fp4_mx_block16",
        rule="e = ceil(log2(max(fl(amax / 6), 1e-10))) in float32 (compiled), byte e + 127; codes by counting "
             "midpoints reached (ties away); sign bit = y < 0",
        api="packed, scales = FP4MXBlock16KVQuantizeUtil.batched_quantize(x[:, None]); "
            "FP4MXBlock16KVQuantizeUtil.batched_dequantize(packed, scales, dtype=torch.float32)",
        source=SOURCE,
        run=run,
    )]


def _version() -> str:
    from nvfp4_kvcache.upstream import SGLANG_VERSION
    return SGLANG_VERSION


PEER = Peer("sglang", "sglang", load, "https://github.com/sgl-project/sglang", version=_version())
