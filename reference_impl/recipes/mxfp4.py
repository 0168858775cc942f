"""`mxfp4`: OCP Microscaling (MX) v1.0 MXFP4: 32 E2M1 elements share one E8M0 scale.

Rules, per block of 32 consecutive values (the conversion of the OCP MX v1.0 specification,
section 6.3, and Algorithm 1 of "Microscaling Data Formats for Deep Learning", arXiv 2310.10537):

1. `amax = max |x|`.
2. Shared exponent `E = floor(log2(amax)) - emax(E2M1)` with `emax(E2M1) = 2`, clamped to
   E8M0's range `[-127, 127]`. `floor(log2(.))` is taken exactly from the binary exponent
   (no floating-point logarithm). A zero block gets the smallest scale, byte 0 (`2**-127`).
   Scale byte `E + 127`.
3. Element code: `E2M1(x / 2**E)`, computed exactly (a power-of-two scaling), round to nearest
   **even**, saturating at +-6: the block's largest value lands in `[4, 8)` and anything in
   `(6, 8)` is clamped to 6. The sign bit is the sign of `x` (`-0.0` gives code 8).
4. Decode: `E2M1[code] * 2**(byte - 127)`; byte `0xFF` is NaN and makes the whole block NaN.

Non-finite input (the spec makes the shared scale NaN; the element codes are ours):
a block containing NaN or +-inf -> scale byte `0xFF`, all codes 0, decodes to NaN.

Subnormal `float32` inputs are quantized by their exact value (`microxcaling` flushes them
to zero, which the spec does not ask for).

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.recipes import MXFP4
    >>> x = torch.zeros(32); x[0] = 7.0; x[1] = 0.3
    >>> q = MXFP4.quantize(x)
    >>> q.scales.tolist()                    # floor(log2 7) - 2 = 0 -> byte 127
    [127]
    >>> MXFP4.dequantize(q)[:2].tolist()      # 7 saturates to 6; 0.3 -> 0.5
    [6.0, 0.5]
"""

from __future__ import annotations

import math

import torch

from nvfp4_kvcache.formats import E2M1, E8M0
from nvfp4_kvcache.recipes.base import Recipe, ScaleRule
from nvfp4_kvcache.rounding import Rounding

__all__ = ["MXFP4", "encode", "encode_elements", "E2M1_EMAX", "floor_log2", "pow2_f64"]

E2M1_EMAX: int = math.frexp(E2M1.max_finite)[1] - 1
"""Exponent of E2M1's largest normal value (`6 = 1.5 * 2**2`): 2."""


def floor_log2(a: torch.Tensor) -> torch.Tensor:
    """Exact `floor(log2(a))` for positive finite `float32`/`float64` (subnormals included).

    Uses `frexp` (`a = m * 2**k` with `0.5 <= m < 1`), so no logarithm rounding is involved.

    Examples:
        >>> import torch
        >>> floor_log2(torch.tensor([1.0, 7.99, 8.0, 2.0**-149])).tolist()
        [0, 2, 3, -149]
    """
    _, k = torch.frexp(a.double())
    return k.to(torch.int64) - 1


def pow2_f64(k: torch.Tensor) -> torch.Tensor:
    """Exact `2.0**k` in `float64` for integer `k` in `[-1022, 1023]`, built from the bits.

    `torch.ldexp` and `torch.pow` are computed as `x * pow(2, k)`, and on CUDA that power
    is not always exact, which moved exact ties; constructing the exponent field cannot round.

    Examples:
        >>> import torch
        >>> pow2_f64(torch.tensor([-127, 0, 125])).tolist() == [2.0**-127, 1.0, 2.0**125]
        True
    """
    return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)


def encode(blocks: torch.Tensor, global_scale: None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rules above: `float32 [n, 32]` -> (`uint8` codes `[n, 32]`, `uint8` scale bytes `[n]`)."""
    amax = blocks.abs().amax(dim=-1)
    finite = torch.isfinite(amax)
    positive = finite & (amax > 0)
    safe = torch.where(positive, amax, torch.ones_like(amax))
    shared = (floor_log2(safe) - E2M1_EMAX).clamp(E8M0.min_exponent, E8M0.max_exponent)
    shared = torch.where(positive, shared, torch.full_like(shared, E8M0.min_exponent))
    scale_bytes = (shared + E8M0.bias).to(torch.uint8)
    scale_bytes = torch.where(finite, scale_bytes, torch.full_like(scale_bytes, E8M0.nan_code))
    return encode_elements(blocks, shared, finite), scale_bytes


def encode_elements(blocks: torch.Tensor, shared: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Step 3: codes `E2M1_RNE,sat(x / 2**shared)` (exact), sign of `x`; all 0 where `ok` is False.

    Args:
        blocks: `float32 [n, B]`.
        shared: `int64 [n]`, exponents in `[-127, 127]`.
        ok: `bool [n]`: blocks whose codes are computed (the others get code 0 everywhere).

    Returns:
        `uint8 [n, B]`.
    """
    x64 = torch.where(ok.unsqueeze(-1), blocks.double(), 0.0)
    y = x64 * pow2_f64(-shared).unsqueeze(-1)  # exact: a power-of-two factor, no rounding
    magnitude = E2M1.encode_magnitude(y.abs(), Rounding.NEAREST_EVEN)
    sign = torch.where(torch.signbit(blocks), E2M1.sign_bit, 0).to(torch.uint8)
    return torch.where(ok.unsqueeze(-1), sign | magnitude, torch.zeros_like(magnitude))


MXFP4 = Recipe(
    name="mxfp4",
    label="OCP MXFP4 (block 32, E8M0 scale floor(log2 amax) - 2)",
    block_size=32,
    element=E2M1,
    element_rounding=Rounding.NEAREST_EVEN,
    scale=E8M0,
    scale_rule=ScaleRule("floor(log2(amax)) - 2, exact", Rounding.FLOOR),
    encode=encode,
    kernel_id=2,
    source="OCP Microscaling Formats (MX) v1.0, section 6.3",
)
"""The recipe (stateless)."""
