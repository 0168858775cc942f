"""torchao: `NVFP4Tensor` and `MXTensor` (all four MX scale modes), pure PyTorch on the CPU.

Read from torchao 0.18.0, `torchao/prototype/mx_formats/nvfp4_tensor.py` (`nvfp4_quantize`,
`per_tensor_amax_to_scale`, `NVFP4Tensor.dequantize`) and `mx_tensor.py` (`to_mx`,
`_to_mx_rceil`, `to_dtype`):

* NVFP4 with a per-tensor scale `g = amax / (448 * 6)` (a decode multiplier): block scale
  `fl(amax_b / 6) / g`, clamped to `[2**-6, 448]` (the smallest *normal* E4M3), then cast to E4M3;
  elements `x * fl(fl(1/g) / sf)`, clamped to +-6, rounded to nearest even; decode
  `e2m1 * fl(g * sf)`. `float16` input is refused.
* MX FLOOR (OCP), CEIL (`ceil(log2 amax) - 2`), EVEN (the exponent of `amax` rounded to E2M1's
  mantissa first) compute the exponent from the bits of `amax`; RCEIL is `ceil(log2(amax / 6))`
  with a `float32` logarithm (eager fallback; the CUDA path uses `cvt.rp.satfinite.ue8m0x2.f32`);
  its elements are multiplied by `2**(127 - byte)`, except in a block whose byte is 0, which is
  multiplied by 1.0 (`rcp_fp32` in `_to_mx_rceil`).
"""

from __future__ import annotations

import torch

from peerlab.base import Entry, Peer, PeerResult, finite_amax

SOURCE = "torchao 0.18.0: torchao/prototype/mx_formats/nvfp4_tensor.py, mx_tensor.py"

_MX_RULES = {
    "FLOOR": ("mxfp4", "E = floor(log2 amax) - 2 from amax's exponent bits (OCP)", ""),
    "RCEIL": ("mxfp4_rceil", "E = ceil(log2(fl(amax / 6))) with a float32 log2, clamped to [-127, 127]; elements "
              "x * 2**-E, but x * 1.0 when the byte is 0; byte 255 for NaN, 254 for infinity", ""),
    "EVEN": ("mxfp4", "E = floor(log2 r) - 2 where r is amax with its mantissa rounded to one bit (ties up)",
             "no recipe here implements EVEN: compared with mxfp4 (OCP), whose rule it changes on purpose"),
    "CEIL": ("mxfp4", "E = ceil(log2 amax) - 2 (the exponent of amax, plus one unless amax is a power of two)",
             "no recipe here implements CEIL: compared with mxfp4 (OCP), whose rule it changes on purpose"),
}


def load() -> list[Entry]:
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.mx_tensor import MXTensor
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

    def nvfp4(x: torch.Tensor, g: float | None) -> PeerResult:
        scale = per_tensor_amax_to_scale(finite_amax(x)) if g is None else torch.tensor(g, dtype=torch.float32)
        t = NVFP4Tensor.to_nvfp4(x.contiguous(), per_tensor_scale=scale)
        return PeerResult(t.qdata.view(torch.uint8), t.scale.view(torch.uint8).reshape(x.shape[0], -1),
                          t.dequantize(torch.float32), float(scale))

    entries = [Entry(
        id="torchao/nvfp4",
        recipe="nvfp4",
        rule="sf = E4M3(clamp(fl(amax / 6) / g, 2**-6, 448)); y = x * fl(fl(1/g) / sf), clamped to +-6",
        api="g = per_tensor_amax_to_scale(amax); t = NVFP4Tensor.to_nvfp4(x, per_tensor_scale=g); "
            "t.qdata, t.scale, t.dequantize(torch.float32)",
        source=SOURCE,
        run=nvfp4,
        global_scale="g = per_tensor_amax_to_scale(finite amax) = amax / (448 * 6), passed as per_tensor_scale "
                     "(the decode multiplier)",
        order="div_rcp_g",
        dtypes=("bfloat16", "float32"),
    )]

    for mode, (recipe, rule, note) in _MX_RULES.items():
        def mx(x: torch.Tensor, g: float | None, mode=mode) -> PeerResult:
            t = MXTensor.to_mx(x.contiguous(), torch.float4_e2m1fn_x2, block_size=32,
                               scaling_mode=ScaleCalculationMode[mode])
            return PeerResult(t.qdata.view(torch.uint8), t.scale.view(torch.uint8).reshape(x.shape[0], -1),
                              t.dequantize(torch.float32))

        entries.append(Entry(
            id=f"torchao/mx_{mode.lower()}",
            recipe=recipe,
            rule=rule,
            api=f"t = MXTensor.to_mx(x, torch.float4_e2m1fn_x2, block_size=32, "
                f"scaling_mode=ScaleCalculationMode.{mode}); t.qdata, t.scale, t.dequantize(torch.float32)",
            source=SOURCE,
            run=mx,
            dtypes=("bfloat16", "float32"),
            note=note,
            same_rule=not note,
        ))
    return entries


PEER = Peer("torchao", "torchao", load, "https://github.com/pytorch/ao")
