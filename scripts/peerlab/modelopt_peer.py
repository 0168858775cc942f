"""NVIDIA ModelOpt: `NVFP4QTensor` and `MXFP4QTensor`, their pure-PyTorch paths (no TensorRT-LLM).

Read from nvidia-modelopt 0.47.0, `modelopt/torch/quantization/qtensor/nvfp4_tensor.py` and
`mxfp4_tensor.py`:

* NVFP4: `g = amax / (6 * 448)` (`get_weights_scaling_factor_2`, a decode multiplier); block
  scale `amax_b / fl(6 * g)`, zero scales replaced by 1.0, clamped to `[2**-9, 448]`, cast to E4M3;
  elements `x / fl(sf * g)` rounded by `searchsorted` over the seven midpoints with the ties at
  0.75, 1.75 and 3.5 moved up (round to nearest even); the sign bit is `x < 0` (so `-0.0` gives
  code 0); decode `e2m1 * fl(sf * g)`.
* MXFP4: `E = ceil(max(log2(fl(amax / 6)), -127))` with a `float32` logarithm (the RCEIL rule);
  elements `x / 2**E` rounded by counting the midpoints they *exceed*, so every tie goes toward
  zero; the sign bit is `(2 - sign(x)) // 2`, which gives code 8 for +0.0 and -0.0 alike. `E` is
  not clamped above and is cast to `uint8` as it is: a NaN or infinite exponent (a block holding a
  NaN or an infinity) becomes byte 0 on the CPU, and the elements `x / 2**E` become signed zeros.
"""

from __future__ import annotations

import torch

from peerlab.base import Entry, Peer, PeerResult, finite_amax

SOURCE = ("nvidia-modelopt 0.47.0: modelopt/torch/quantization/qtensor/nvfp4_tensor.py, "
          "mxfp4_tensor.py")


def load() -> list[Entry]:
    from modelopt.torch.quantization.qtensor import MXFP4QTensor, NVFP4QTensor

    def nvfp4(x: torch.Tensor, g: float | None) -> PeerResult:
        if g is None:
            g2 = NVFP4QTensor.get_weights_scaling_factor_2(finite_amax(x).reshape(1))
        else:
            g2 = torch.tensor(g, dtype=torch.float32)
        qt, sf, g2 = NVFP4QTensor.quantize(x.clone(), 16, weights_scaling_factor_2=g2)
        deq = qt.dequantize(torch.float32, scale=sf, double_scale=g2, block_sizes={-1: 16})
        return PeerResult(qt._quantized_data, sf.view(torch.uint8).reshape(x.shape[0], -1), deq, float(g2))

    def mxfp4(x: torch.Tensor, g: float | None) -> PeerResult:
        qt, e8m0 = MXFP4QTensor.quantize(x.clone(), 32)
        deq = qt.dequantize(torch.float32, scale=e8m0, block_sizes={-1: 32})
        return PeerResult(qt._quantized_data, e8m0.reshape(x.shape[0], -1), deq)

    return [
        Entry(
            id="modelopt/nvfp4",
            recipe="nvfp4",
            rule="sf = E4M3(clamp(amax / fl(6 * g), 2**-9, 448)), 1.0 for a zero block; y = x / fl(sf * g); "
                 "sign bit = x < 0",
            api="g = NVFP4QTensor.get_weights_scaling_factor_2(amax); "
                "qt, sf, g = NVFP4QTensor.quantize(x, 16, weights_scaling_factor_2=g); "
                "qt._quantized_data, sf, qt.dequantize(torch.float32, scale=sf, double_scale=g, block_sizes={-1: 16})",
            source=SOURCE,
            run=nvfp4,
            global_scale="g = get_weights_scaling_factor_2(finite amax) = amax / (6 * 448), passed as "
                         "weights_scaling_factor_2 (the decode multiplier)",
            order="div",
        ),
        Entry(
            id="modelopt/mxfp4",
            recipe="mxfp4_rceil",
            rule="E = ceil(max(log2(fl(amax / 6)), -127)) with a float32 log2, no upper clamp, cast to uint8 "
                 "(a NaN or infinite E becomes byte 0 on the CPU); codes = #{midpoints m : |y| > m} (ties toward "
                 "zero); sign bit = (2 - sign(x)) // 2 (code 8 for +0.0)",
            api="qt, e8m0 = MXFP4QTensor.quantize(x, 32); qt._quantized_data, e8m0, "
                "qt.dequantize(torch.float32, scale=e8m0, block_sizes={-1: 32})",
            source=SOURCE,
            run=mxfp4,
        ),
    ]


PEER = Peer("modelopt", "nvidia-modelopt", load, "https://github.com/NVIDIA/Model-Optimizer")
