"""PyTorch's own MX helper: `to_mxfp` in `torch/testing/_internal/common_quantized.py`.

It is test code inside the torch wheel (importable from an installed torch; not a public API).
Read from torch 2.13.0: the scale is RCEIL, `ceil(log2(fl(amax / 6)))` with a `float32`
logarithm, clamped to `[-127, 127]`; a block whose scale byte is 0 is multiplied by 1.0 instead of
`2**127`; the scaled elements are clamped to +-6, **rounded to `bfloat16`**, and only then to
E2M1 (`_bfloat16_to_float4_e2m1fn_x2`), so a value just off an E2M1 midpoint that rounds onto it
in `bfloat16` is then rounded as a tie. The helper has no MXFP4 dequantize: the oracle's decoder
reads its bytes. `float16` input is refused.
"""

from __future__ import annotations

import torch

from peerlab.base import Entry, Peer, PeerResult

SOURCE = "torch 2.13.0: torch/testing/_internal/common_quantized.py (to_mxfp, _bfloat16_to_float4_e2m1fn_x2)"


def load() -> list[Entry]:
    from torch.testing._internal.common_quantized import to_mxfp

    def run(x: torch.Tensor, g: float | None) -> PeerResult:
        scales, packed = to_mxfp(x.contiguous(), block_size=32, format="mxfp4")
        return PeerResult(packed.view(torch.uint8), scales.view(torch.uint8).reshape(x.shape[0], -1), None)

    return [Entry(
        id="torch_mx/mxfp4",
        recipe="mxfp4_rceil",
        rule="E = clamp(ceil(log2(fl(amax / 6))), -127, 127) with a float32 log2; y = x * 2**-E (x * 1.0 when the "
             "byte is 0), clamped to +-6, rounded to bfloat16, then to E2M1",
        api="scales, packed = to_mxfp(x, block_size=32, format='mxfp4'); packed.view(torch.uint8), "
            "scales.view(torch.uint8)",
        source=SOURCE,
        run=run,
        dtypes=("bfloat16", "float32"),
        note="its scale rule is RCEIL, so it is compared with mxfp4_rceil; the bfloat16 step is a second rounding of "
             "the elements, not another recipe (no recipe rounds twice). The helper has no MXFP4 dequantize: decoded "
             "values are the oracle's decode of its bytes",
    )]


PEER = Peer("torch_mx", "torch", load, "https://github.com/pytorch/pytorch")
