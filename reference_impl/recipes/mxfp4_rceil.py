"""`mxfp4_rceil`: the OCP MXFP4 layout with the scale exponent rounded **up** ("RCEIL").

Same bytes as [`mxfp4`][nvfp4_kvcache.recipes.mxfp4] (block 32, one E8M0 scale byte, E2M1
elements rounded to nearest even), but the shared exponent is the smallest one that keeps the
block max at or below 6, so no element is clipped. This is the scale rule of NVIDIA's hardware
conversion (PTX `cvt.rp.satfinite.ue8m0x2.f32` of `amax / 6`, sm_100 and later; cuBLAS's
"Computing scaling and conversion factors for FP8 with UE8M0 scales"), of torchao's
`ScaleCalculationMode.RCEIL` (`torchao/prototype/mx_formats/mx_tensor.py`, `_to_mx_rceil`,
torchao 0.18.0), of NVIDIA ModelOpt's `MXFP4QTensor.quantize`
(`modelopt/torch/quantization/qtensor/mxfp4_tensor.py`, nvidia-modelopt 0.47.0) and of PyTorch's
MX test helper (`to_mxfp` in `torch/testing/_internal/common_quantized.py`, torch 2.13.0).

Rules, per block of 32 consecutive values:

1. `amax = max |x|`.
2. Shared exponent, **exact**: the smallest integer `E` with `amax <= 6 * 2**E`, i.e.
   `E = ceil(log2(amax / 6))` in exact arithmetic. From the bits: with `F = floor(log2 amax) - 2`
   (the `mxfp4` exponent, so that `amax / 2**F` lies in `[4, 8)`), `E = F + 1` when
   `amax > 6 * 2**F` and `E = F` otherwise. Clamped to E8M0's `[-127, 127]`; a zero block gets
   `-127` (byte 0). Scale byte `E + 127`. No float logarithm and no rounded quotient is involved.
3. Element code: `E2M1(x / 2**E)`, exact (a power-of-two scaling), round to nearest **even**;
   the block max lands in `(3, 6]`, so nothing saturates. The sign bit is the sign of `x`
   (`-0.0` gives code 8).
4. Decode: `E2M1[code] * 2**(byte - 127)`; byte `0xFF` is NaN.

Non-finite input (the hardware conversion's rule, `satfinite`):

* a block containing NaN -> scale byte `0xFF` (NaN), all codes 0: it decodes to NaN;
* a block containing +-inf and no NaN -> scale byte `0xFE` (`2**127`, the largest finite E8M0
  scale: `cvt.rp.satfinite` of an infinite `amax / 6`); every element is rounded against that
  scale, so +-inf becomes +-6 (code 7 / 15) and finite values round to `x / 2**127`.

How the implementations compute step 2 differs, and it matters only at a few inputs (the
[Format chapter](../format/recipes.md) lists them with the tests that pin them):

* the hardware rounds the `float32` quotient `fl(amax / 6)` up to a power of two. For a normal
  quotient that is the exact rule (a `float32` `amax` just above `6 * 2**k` never has a quotient
  that rounds down onto `2**k`);
* torchao's eager fallback, ModelOpt and PyTorch's helper take `ceil(log2(fl(amax / 6)))` with a
  `float32` logarithm, which rounds `log2` of a quotient one or a few ulps above `2**k` down to
  exactly `k`: they then pick `E = k`, one less than the exact rule, and the block max clips to 6;
* torchao and PyTorch's helper scale the elements of a byte-0 block by 1.0 instead of `2**127`.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.recipes import MXFP4, MXFP4_RCEIL
    >>> x = torch.zeros(32); x[0] = 7.0; x[1] = 0.3
    >>> MXFP4_RCEIL.quantize(x).scales.tolist(), MXFP4.quantize(x).scales.tolist()
    ([128], [127])
    >>> y = MXFP4_RCEIL.dequantize(MXFP4_RCEIL.quantize(x))
    >>> y[:2].tolist()  # 7/2 = 3.5 -> 4 (ties to even)
    [8.0, 0.0]
"""

from __future__ import annotations

import torch

from nvfp4_kvcache.formats import E2M1, E2M1_MAX, E8M0
from nvfp4_kvcache.recipes.base import Recipe, ScaleRule
from nvfp4_kvcache.recipes.mxfp4 import E2M1_EMAX, encode_elements, floor_log2, pow2_f64
from nvfp4_kvcache.rounding import Rounding

__all__ = ["MXFP4_RCEIL", "encode", "rceil_exponent", "INF_BLOCK_SCALE_BYTE"]

INF_BLOCK_SCALE_BYTE = E8M0.max_exponent + E8M0.bias
"""`0xFE`: the scale byte of a block with +-inf (and no NaN), the largest finite E8M0 scale."""


def rceil_exponent(amax: torch.Tensor) -> torch.Tensor:
    """Step 2 before clamping: the smallest integer `E` with `amax <= 6 * 2**E`, exactly.

    Args:
        amax: positive finite `float32` or `float64` (subnormals included).

    Returns:
        `int64`, same shape.

    Examples:
        >>> import torch
        >>> rceil_exponent(torch.tensor([6.0, 6.000001, 7.0, 12.0, 1.0])).tolist()
        [0, 1, 1, 1, -2]
    """
    floor_e = floor_log2(amax) - E2M1_EMAX                      # amax / 2**floor_e in [4, 8)
    clips = amax.double() > E2M1_MAX * pow2_f64(floor_e)        # exact: a power-of-two product
    return floor_e + clips.to(torch.int64)


def encode(blocks: torch.Tensor, global_scale: None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rules above: `float32 [n, 32]` -> (`uint8` codes `[n, 32]`, `uint8` scale bytes `[n]`)."""
    amax = blocks.abs().amax(dim=-1)  # NaN propagates
    has_nan = torch.isnan(amax)
    finite = torch.isfinite(amax)
    positive = finite & (amax > 0)
    safe = torch.where(positive, amax, torch.ones_like(amax))
    shared = rceil_exponent(safe).clamp(E8M0.min_exponent, E8M0.max_exponent)
    shared = torch.where(positive, shared, torch.full_like(shared, E8M0.min_exponent))
    shared = torch.where(finite, shared, torch.full_like(shared, E8M0.max_exponent))  # inf: 2**127
    scale_bytes = (shared + E8M0.bias).to(torch.uint8)
    scale_bytes = torch.where(has_nan, torch.full_like(scale_bytes, E8M0.nan_code), scale_bytes)
    return encode_elements(blocks, shared, ~has_nan), scale_bytes


MXFP4_RCEIL = Recipe(
    name="mxfp4_rceil",
    label="MXFP4 with the scale exponent rounded up (RCEIL; block 32, E8M0)",
    block_size=32,
    element=E2M1,
    element_rounding=Rounding.NEAREST_EVEN,
    scale=E8M0,
    scale_rule=ScaleRule("ceil(log2(amax / 6)), exact", Rounding.CEIL),
    encode=encode,
    kernel_id=3,
    source="NVIDIA cvt.rp.satfinite.ue8m0x2.f32; torchao 0.18.0 RCEIL; ModelOpt 0.47.0 MXFP4QTensor",
)
"""The recipe (stateless)."""
