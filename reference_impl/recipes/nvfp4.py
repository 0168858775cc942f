"""`nvfp4`: NVIDIA NVFP4 with two-level scaling, `x ~= e2m1 * block_scale * global_scale`.

Per block of 16 consecutive values: one FP8 E4M3 block scale; per tensor (for a KV cache: per
layer, one for K and one for V): one `float32` **global scale** `g`, the *decode* multiplier.

Rules (all `float32`; "fl" is one IEEE round-to-nearest-even rounding):

1. `amax = max |x|` over the block.
2. `s = fl(fl(amax * fl(1/6)) * fl(1/g))`: the block scale before rounding. This is the product
   form NVIDIA's kernels use (FlashInfer `nvfp4_kv_quantize`, TensorRT-LLM and vLLM
   `cvt_warp_fp16_to_fp4`), with correctly rounded reciprocals where the kernels use
   `rcp.approx.ftz`. Those approximate reciprocals can move `s` or the element product by one
   ulp, so a GPU kernel can differ from this oracle at a rounding boundary; see the Format chapter.
3. Block scale `sf = E4M3(s)`: round to nearest even, **saturating** at 448 (`+inf` -> 448);
   values below `2**-10` become 0. Stored as the E4M3 bit pattern (a `uint8` byte).
4. `r = fl(1 / fl(sf * g))` if `sf != 0` else 0 (NVIDIA guards on `amax != 0` instead;
   the two differ only when `sf` underflows to 0 with `amax > 0`, where NVIDIA writes code
   +-6 and the oracle +-0: both decode to 0).
5. Element code: `E2M1(fl(x * r))`, round to nearest **even**, saturating at +-6; the sign bit is
   the sign of `x`, so `-0.0` and negative values that round to zero give code 8.
6. Decode: `fl(E2M1[code] * sf) * g` (the first product is exact), then one cast to the output
   dtype.

Non-finite input (the oracle's definition, matching the `satfinite` conversions above):

* a block containing NaN -> block-scale byte `0x7F` (E4M3 NaN), all codes 0: decodes to NaN;
* +-inf (no NaN) -> `amax = inf`, `sf` saturates to 448, the infinite elements saturate to
  +-6 (decoding to `+-6 * 448 * g`) and the finite ones round against that scale.

Global-scale conventions (never implicit here; `nvfp4_global_scale` takes one by name):

* `"amax/(6*448)"`: the generic NVFP4 convention (ModelOpt weights and activations). The
  largest block of the tensor gets block scale 448 and element 6.
* `"amax/448"`: the KV-cache convention of ModelOpt's unified FP8/NVFP4 export, FlashInfer's
  `nvfp4_quantize_paged_kv_cache` default and TensorRT-LLM's XQA kernels. Block scales stay
  at or below `448/6`, so `e2m1 * sf` fits in FP8 E4M3 for attention kernels that upcast to FP8.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.recipes import NVFP4, nvfp4_global_scale
    >>> x = torch.linspace(-3.0, 3.0, 16)
    >>> g = nvfp4_global_scale(x.abs().amax(), "amax/(6*448)")
    >>> q = NVFP4.quantize(x, g)
    >>> q.scales.view(torch.float8_e4m3fn).float().item()   # this block holds the tensor max
    448.0
    >>> err = (NVFP4.dequantize(q) - x).abs().max().item()
    >>> err <= 0.5   # half the top binade's grid step (2) times sf * g = 448 * 3/2688
    True
"""

from __future__ import annotations

import torch

from nvfp4_kvcache.formats import E2M1, E2M1_MAX, E4M3, E4M3_MAX
from nvfp4_kvcache.recipes.base import GlobalScale, PoolScaleLayout, Recipe, ScaleRule, check_global_scale_tensor
from nvfp4_kvcache.rounding import Rounding

__all__ = ["NVFP4", "encode", "block_scale_f32", "check_global_scale_tensor", "GLOBAL_SCALE_CONVENTIONS", "nvfp4_global_scale", "E4M3_NAN_BYTE"]

E4M3_NAN_BYTE = 0x7F
"""Block-scale byte of a block that contained NaN (E4M3's positive NaN)."""

GLOBAL_SCALE_CONVENTIONS: dict[str, float] = {
    "amax/(6*448)": E2M1_MAX * E4M3_MAX,
    "amax/448": E4M3_MAX,
}
"""Name -> divisor: `global_scale = amax / divisor`."""

_RCP_E2M1_MAX = torch.tensor(1.0 / E2M1_MAX, dtype=torch.float32)  # fl(1/6)


def nvfp4_global_scale(amax: torch.Tensor | float, convention: str) -> torch.Tensor:
    """The `float32` decode global scale for a tensor whose largest magnitude is `amax`.

    Args:
        amax: the tensor's (or layer's, or calibration's) largest magnitude; positive, finite.
        convention: `"amax/(6*448)"` or `"amax/448"`; there is no default on purpose.

    Returns:
        0-d `float32` tensor `fl(amax / divisor)`.

    Raises:
        ValueError: unknown convention, or `amax` not positive and finite.

    Examples:
        >>> nvfp4_global_scale(2688.0, "amax/(6*448)").item()
        1.0
        >>> nvfp4_global_scale(448.0, "amax/448").item()
        1.0
    """
    if convention not in GLOBAL_SCALE_CONVENTIONS:
        raise ValueError(
            f"unknown global-scale convention {convention!r}; use one of {sorted(GLOBAL_SCALE_CONVENTIONS)}"
        )
    a = torch.as_tensor(amax, dtype=torch.float32).reshape(())
    if not (torch.isfinite(a) and a > 0):
        raise ValueError(f"amax must be positive and finite, got {a.item()}")
    return a / GLOBAL_SCALE_CONVENTIONS[convention]


def block_scale_f32(amax: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Step 2: `fl(fl(amax * fl(1/6)) * fl(1/g))` (`float32`)."""
    rcp6 = _RCP_E2M1_MAX.to(amax.device)
    return (amax * rcp6) * (1.0 / g)


def encode(blocks: torch.Tensor, global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rules above: `float32 [n, 16]` and `g` -> (`uint8` codes `[n, 16]`, `uint8` E4M3 bytes `[n]`)."""
    g = global_scale
    amax = blocks.abs().amax(dim=-1)  # NaN propagates
    has_nan = torch.isnan(amax)
    s = block_scale_f32(torch.where(has_nan, 0.0, amax), g)
    sf_bytes = E4M3.encode_magnitude(s, Rounding.NEAREST_EVEN)  # step 3: RNE, saturating
    sf = E4M3.decode_tensor(sf_bytes)
    recip = torch.where(sf != 0, 1.0 / (sf * g), torch.zeros_like(sf))
    y = blocks * recip.unsqueeze(-1)  # float32
    y = torch.where(torch.isnan(y), 0.0, y)  # only in NaN blocks (or inf * 0): codes forced below
    magnitude = E2M1.encode_magnitude(y.abs(), Rounding.NEAREST_EVEN)
    sign = torch.where(torch.signbit(blocks), E2M1.sign_bit, 0).to(torch.uint8)
    codes = sign | magnitude
    codes = torch.where(has_nan.unsqueeze(-1), torch.zeros_like(codes), codes)
    sf_bytes = torch.where(has_nan, torch.full_like(sf_bytes, E4M3_NAN_BYTE), sf_bytes)
    return codes, sf_bytes


NVFP4 = Recipe(
    name="nvfp4",
    label="NVIDIA NVFP4 (block 16, E4M3 scale, float32 global scale)",
    block_size=16,
    element=E2M1,
    element_rounding=Rounding.NEAREST_EVEN,
    scale=E4M3,
    scale_rule=ScaleRule("E4M3(amax / 6 / g), round to nearest even, saturating", Rounding.NEAREST_EVEN),
    encode=encode,
    kernel_id=1,
    global_scale=GlobalScale(),
    pool_scale_layout=PoolScaleLayout.PER_HEAD,
    source="NVIDIA NVFP4 (FlashInfer, TensorRT-LLM and vLLM quantizers); SGLang 0.5.23 NVFP4KVCacheMethod",
)
"""The recipe (stateless; the global scale is an argument)."""
