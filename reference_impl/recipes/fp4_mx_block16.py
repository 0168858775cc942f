"""`fp4_mx_block16`: SGLang's original FP4 KV-cache recipe, bit for bit as it runs in production.

SGLang's first FP4 KV cache (PR #10078 for MLA, PR #12612 for MHA; class `KVFP4QuantizeUtil`,
`FP4MXBlock16KVQuantizeUtil` in `python/sglang/srt/layers/quantization/kvfp4_tensor.py` of
release 0.5.23) is *not* NVFP4: it has no E4M3 scale and no global scale. It is MX-like, with a
block of 16 instead of OCP's 32:

The chapter [The recipes](../format/recipes.md) walks through these rules with examples.

Rules, per block of 16 consecutive values (all arithmetic in `float32`):

1. `amax = max |x|` over the block.
2. `e = ceil(log2(max(amax / 6, 1e-10)))`, where `amax / 6` is an IEEE `float32` division
   and `log2` is the correctly rounded `float32` logarithm. The scale byte is `e + 127`;
   finite inputs give bytes 94 (`amax <= 6e-10`, zero blocks included) to 253.
   The scale is the power of two that `amax / 6` rounds *up* to, so `amax / 2**e <= 6` up to
   rounding: unlike OCP MX (`floor(log2 amax) - 2`), large values are rarely clamped, but the
   grid can be twice as coarse.
3. `y = x / 2**e` (`float32`). Element code: sign bit = `y < 0` (so `-0.0` gives code 0,
   while a small negative that rounds to zero gives code 8), magnitude = the number of thresholds
   `(0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)` that `|y|` reaches: round to nearest, **ties away
   from zero** (`0.25 -> 0.5`, `2.5 -> 3`, `5 -> 6`), saturating at 6.
4. Decode: `E2M1[code] * exp2(byte - 127)` in `float32`, then one cast to the output dtype.
   Byte 255 decodes to `+inf` (not NaN as in E8M0), so code 0 under it gives NaN.

Non-finite blocks (the oracle's definition; upstream turns a NaN or infinite `e + 127` into a
byte by an undefined float-to-uint8 conversion, see the Format chapter):

* a block containing NaN -> scale byte 0, all codes 0: it decodes to zeros (what CUDA does);
* a block containing +-inf and no NaN -> scale byte 255, all codes 0: it decodes to NaN
  (what CUDA does; upstream on x86 CPU writes byte 0 instead and decodes to zeros).

Why `float32` for bf16/fp16 input: upstream decorates `batched_quantize` with
`@torch.compile`, and Inductor computes `amax / 6` and `log2` in `float32`. Eager PyTorch on
`bfloat16` input rounds those intermediates to `bfloat16` and picks a different scale byte in
about 0.6% of random blocks; the oracle follows the compiled production path.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.recipes import FP4_MX_BLOCK16
    >>> x = torch.tensor([[97.0] + [0.0] * 15])
    >>> q = FP4_MX_BLOCK16.quantize(x)
    >>> q.scales.tolist()          # 97/6 = 16.17 rounds up to 2**5: byte 127 + 5
    [[132]]
    >>> hex(q.packed[0, 0].item())  # 97/32 = 3.03 -> code 5 (3.0); element 1 is 0
    '0x5'
    >>> FP4_MX_BLOCK16.dequantize(q)[0, 0].item()
    96.0
"""

from __future__ import annotations

import torch

from nvfp4_kvcache.formats import E2M1, E2M1_MAX, PowerOfTwoScale
from nvfp4_kvcache.recipes.base import PoolScaleLayout, Recipe, ScaleRule
from nvfp4_kvcache.rounding import Rounding

__all__ = ["FP4_MX_BLOCK16", "encode", "scale_exponents", "ceil_log2_f32", "BLOCK16_SCALE", "SCALE_FLOOR", "SCALE_BIAS"]

SCALE_BIAS = 127
"""Scale byte = exponent + 127."""

SCALE_FLOOR = 1e-10
"""Lower clamp of `amax / 6` (as in upstream): zero and tiny blocks get exponent -33, byte 94."""

BLOCK16_SCALE = PowerOfTwoScale("UE8M0 (block16)", bias=SCALE_BIAS, nan_code=None)
"""Block-16 scale byte: `2**(b - 127)` for every byte, 255 -> `2**128` = `+inf` in float32."""

NAN_BLOCK_SCALE_BYTE = 0
"""Scale byte the oracle writes for a block containing NaN (CUDA's float->uint8 of NaN)."""

INF_BLOCK_SCALE_BYTE = 255
"""Scale byte the oracle writes for a block containing +-inf and no NaN (CUDA's saturating cast)."""


def ceil_log2_f32(y: torch.Tensor) -> torch.Tensor:
    """`ceil(log2(y))` with `log2` correctly rounded to `float32`, as PyTorch computes it.

    `float32` rounding matters just above a power of two: `log2(16 * (1 + 2**-23))` is
    `4 + 1.7e-7`, which rounds to exactly `4.0` in `float32`, so the ceiling is 4, not 5.
    PyTorch's `log2` (eager and compiled, CPU) agrees with this function on every such case.

    Args:
        y: positive finite `float32`.

    Returns:
        `float32` integers.
    """
    return torch.ceil(torch.log2(y.double()).to(torch.float32))


def scale_exponents(blocks: torch.Tensor) -> torch.Tensor:
    """Step 2: per-block exponent `e` (`float32`; NaN or inf for non-finite blocks).

    Args:
        blocks: `float32 [n, 16]`.

    Returns:
        `float32 [n]`.
    """
    amax = blocks.abs().amax(dim=-1)  # propagates NaN
    ratio = torch.clamp(amax / E2M1_MAX, min=SCALE_FLOOR)
    finite = torch.isfinite(ratio)
    e = ceil_log2_f32(torch.where(finite, ratio, torch.ones_like(ratio)))
    return torch.where(finite, e, ratio)


def encode(blocks: torch.Tensor, global_scale: None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rules above: `float32 [n, 16]` -> (`uint8` codes `[n, 16]`, `uint8` scale bytes `[n]`)."""
    e = scale_exponents(blocks)
    finite = torch.isfinite(e)
    safe_e = torch.where(finite, e, torch.zeros_like(e))
    scale_bytes = (safe_e + SCALE_BIAS).to(torch.uint8)
    scale_bytes = torch.where(
        finite,
        scale_bytes,
        torch.where(
            torch.isnan(e),
            torch.full_like(scale_bytes, NAN_BLOCK_SCALE_BYTE),
            torch.full_like(scale_bytes, INF_BLOCK_SCALE_BYTE),
        ),
    )
    scaled = blocks / torch.exp2(safe_e).unsqueeze(-1)  # float32, exact power-of-two division
    ok = finite.unsqueeze(-1) & ~torch.isnan(scaled)
    magnitude = E2M1.encode_magnitude(torch.where(ok, scaled.abs(), 0.0), Rounding.NEAREST_AWAY)
    sign = torch.where(scaled < 0, E2M1.sign_bit, 0).to(torch.uint8)
    codes = torch.where(ok, sign | magnitude, torch.zeros_like(magnitude))
    return codes, scale_bytes


FP4_MX_BLOCK16 = Recipe(
    name="fp4_mx_block16",
    label="SGLang block-16 (power-of-two scale rounded up)",
    block_size=16,
    element=E2M1,
    element_rounding=Rounding.NEAREST_AWAY,
    scale=BLOCK16_SCALE,
    scale_rule=ScaleRule("ceil(fl32(log2(max(fl32(amax / 6), 1e-10))))", Rounding.CEIL),
    encode=encode,
    kernel_id=0,
    pool_scale_layout=PoolScaleLayout.FLAT,
    source="SGLang 0.5.23, kvfp4_tensor.py (PR #10078, PR #12612)",
)
"""The recipe (`--kv-cache-dtype fp4_mx_block16`)."""
