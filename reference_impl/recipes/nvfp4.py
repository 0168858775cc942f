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
    >>> q.scales.view(torch.float8_e4m3fn).float().item()  # the tensor max's block
    448.0
    >>> err = (NVFP4.dequantize(q) - x).abs().max().item()
    >>> err <= 0.5   # half the top binade's grid step (2) times sf * g = 448 * 3/2688
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from nvfp4_kvcache.formats import E2M1, E2M1_MAX, E4M3, E4M3_MAX
from nvfp4_kvcache.recipes.base import GlobalScale, PoolScaleLayout, Recipe, ScaleRule, check_global_scale_tensor
from nvfp4_kvcache.rounding import Rounding

__all__ = ["NVFP4", "encode", "block_scale_f32", "Order", "ORDERS", "DEFAULT_ORDER", "get_order", "nvfp4_with_order",
           "check_global_scale_tensor", "GLOBAL_SCALE_CONVENTIONS", "nvfp4_global_scale", "E4M3_NAN_BYTE"]

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


def _decode_mul_rcp(values: torch.Tensor, sf: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (values * sf.unsqueeze(-1)) * g


@dataclass(frozen=True)
class Order:
    """The `float32` arithmetic of one NVFP4 kernel: steps 2, 4-5 and 6 in the order it does them.

    Exact arithmetic gives the same bytes in every order; `float32` does not when a quotient lies
    within an ulp or two of a rounding boundary (an E4M3 or E2M1 midpoint), which `bfloat16`
    input reaches often. A caller names the order of the kernel under test, and the oracle
    reproduces its bytes; the order of NVIDIA's kernels, `"mul_rcp"`, is the default.

    Attributes:
        name: the key in [`ORDERS`][nvfp4_kvcache.recipes.nvfp4.ORDERS].
        formula: the three steps in one line ("fl" is one `float32` rounding).
        global_scale: `"decode"` when the kernel takes the decode multiplier `g`, `"encode"` when
            it takes its reciprocal `G = 1/g` (then `global_scale` means `G` everywhere,
            decoding included).
        used_by: implementations known to compute this way (release and file).
        block_scale: `(amax float32 [n], scale 0-d) -> s float32 [n]`, the block scale before
            its E4M3 rounding.
        scaled: `(x float32 [n, 16], sf float32 [n], scale 0-d) -> y float32 [n, 16]`, the value
            each element code rounds (blocks with `sf == 0` are set to 0 afterwards).
        decode: `(E2M1 values float32 [n, 16], sf float32 [n], scale 0-d) -> float32 [n, 16]`.
    """

    name: str
    formula: str
    global_scale: str
    used_by: str
    block_scale: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)
    scaled: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)
    decode: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)


ORDERS: dict[str, Order] = {
    o.name: o
    for o in (
        Order(
            "mul_rcp",
            "s = amax * fl(1/6) * fl(1/g); y = x * fl(1 / fl(sf * g)); decode fl(e2m1 * sf) * g",
            "decode",
            "NVIDIA's kernels (FlashInfer nvfp4_kv_quantize, TensorRT-LLM and vLLM cvt_warp_fp16_to_fp4), "
            "with exact reciprocals for rcp.approx.ftz",
            lambda amax, g: (amax * _RCP_E2M1_MAX.to(amax.device)) * (1.0 / g),
            lambda x, sf, g: x * (1.0 / (sf * g)).unsqueeze(-1),
            _decode_mul_rcp,
        ),
        Order(
            "div",
            "s = amax / fl(6 * g); y = x / fl(sf * g); decode e2m1 * fl(sf * g)",
            "decode",
            "NVIDIA ModelOpt NVFP4QTensor.quantize / dequantize (modelopt/torch/quantization/qtensor/"
            "nvfp4_tensor.py, nvidia-modelopt 0.47.0)",
            lambda amax, g: amax / (E2M1_MAX * g),
            lambda x, sf, g: x / (sf * g).unsqueeze(-1),
            lambda v, sf, g: v * (sf * g).unsqueeze(-1),
        ),
        Order(
            "div_rcp_g",
            "s = fl(amax / 6) / g; y = x * fl(fl(1/g) / sf); decode e2m1 * fl(g * sf)",
            "decode",
            "torchao nvfp4_quantize and NVFP4Tensor.dequantize with a per-tensor scale (torchao/prototype/"
            "mx_formats/nvfp4_tensor.py, torchao 0.18.0)",
            lambda amax, g: (amax / E2M1_MAX) / g,
            lambda x, sf, g: x * ((1.0 / g) / sf).unsqueeze(-1),
            lambda v, sf, g: v * (g * sf).unsqueeze(-1),
        ),
        Order(
            "encode_div",
            "s = G * fl(amax / 6); y = x / fl(sf / G); decode e2m1 * fl(sf / G), with G = 1/g passed",
            "encode",
            "compressed-tensors calculate_qparams / quantize / dequantize with a global scale "
            "(compressed_tensors/quantization, compressed-tensors 0.20.1; float32 input)",
            lambda amax, G: G * (amax / E2M1_MAX),
            lambda x, sf, G: x / (sf / G).unsqueeze(-1),
            lambda v, sf, G: v * (sf / G).unsqueeze(-1),
        ),
    )
}
"""The orders a caller can name, by name. `"mul_rcp"` is the documented default."""

DEFAULT_ORDER = "mul_rcp"
"""The order the oracle uses unless told otherwise (NVIDIA's kernels)."""


def get_order(order: str | Order) -> Order:
    """Look an order up by name (an [`Order`][nvfp4_kvcache.recipes.nvfp4.Order] passes through).

    Raises:
        ValueError: unknown name; the message lists the known ones.

    Examples:
        >>> get_order("div").formula
        's = amax / fl(6 * g); y = x / fl(sf * g); decode e2m1 * fl(sf * g)'
    """
    if isinstance(order, Order):
        return order
    try:
        return ORDERS[order]
    except (KeyError, TypeError):
        raise ValueError(f"unknown NVFP4 order {order!r}; known orders: {sorted(ORDERS)}") from None


def _encoder(order: Order):
    """The rules above in `order`: `float32 [n, 16]` and `g` -> (`uint8` codes `[n, 16]`, E4M3 bytes `[n]`)."""

    def encode(blocks: torch.Tensor, global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = global_scale
        amax = blocks.abs().amax(dim=-1)  # NaN propagates
        has_nan = torch.isnan(amax)
        s = order.block_scale(torch.where(has_nan, 0.0, amax), g)
        sf_bytes = E4M3.encode_magnitude(s, Rounding.NEAREST_EVEN)  # step 3: RNE, saturating
        sf = E4M3.decode_tensor(sf_bytes)
        y = order.scaled(blocks, torch.where(sf != 0, sf, 1.0), g)  # float32
        y = torch.where((sf != 0).unsqueeze(-1) & ~torch.isnan(y), y, 0.0)  # sf = 0: codes +-0; NaN blocks: below
        magnitude = E2M1.encode_magnitude(y.abs(), Rounding.NEAREST_EVEN)
        sign = torch.where(torch.signbit(blocks), E2M1.sign_bit, 0).to(torch.uint8)
        codes = sign | magnitude
        codes = torch.where(has_nan.unsqueeze(-1), torch.zeros_like(codes), codes)
        sf_bytes = torch.where(has_nan, torch.full_like(sf_bytes, E4M3_NAN_BYTE), sf_bytes)
        return codes, sf_bytes

    return encode


def _decoder(order: Order):
    """Step 6 in `order`: (`uint8` codes `[n, 16]`, E4M3 bytes `[n]`, `g`) -> `float32 [n, 16]`."""

    def decode(codes: torch.Tensor, scale_bytes: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
        return order.decode(E2M1.decode_tensor(codes), E4M3.decode_tensor(scale_bytes), global_scale)

    return decode


_encode_default = _encoder(ORDERS[DEFAULT_ORDER])


def encode(blocks: torch.Tensor, global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rules above in the default order: `float32 [n, 16]` and `g` -> (`uint8` codes `[n, 16]`, E4M3 bytes `[n]`)."""
    return _encode_default(blocks, global_scale)

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
    order=ORDERS[DEFAULT_ORDER],
    source="NVIDIA NVFP4 (FlashInfer, TensorRT-LLM and vLLM quantizers); SGLang 0.5.23 NVFP4KVCacheMethod",
)
"""The recipe (stateless; the global scale is an argument; order `"mul_rcp"`)."""


def nvfp4_with_order(order: str | Order) -> Recipe:
    """The `nvfp4` recipe computed in another `float32` order (same name, same bytes in exact math).

    Args:
        order: a name in [`ORDERS`][nvfp4_kvcache.recipes.nvfp4.ORDERS]. With an `"encode"`
            order, `global_scale` means the encode scale `G` in every call.

    Returns:
        A recipe object to pass wherever a recipe name is accepted.

    Raises:
        ValueError: unknown order.

    Examples:
        A bf16 block with amax 6.25 in a tensor whose amax is 14: exactly, `s = 6.25 / 6 * 2688 / 14
        = 200`, the midpoint of the E4M3 neighbours 192 (byte 0x74, even) and 208 (0x75). The
        default order's `fl(1/6)` and `fl(1/g)` land one ulp above it, ModelOpt's division on it:

        >>> import torch
        >>> from nvfp4_kvcache.recipes.nvfp4 import nvfp4_global_scale
        >>> x = torch.zeros(1, 16, dtype=torch.bfloat16); x[0, 0] = 6.25
        >>> g = nvfp4_global_scale(14.0, "amax/(6*448)")
        >>> [
        ...     hex(nvfp4_with_order(o).quantize(x, g).scales.item())
        ...     for o in ("mul_rcp", "div")
        ... ]
        ['0x75', '0x74']
    """
    o = get_order(order)
    return NVFP4 if o.name == DEFAULT_ORDER else replace(NVFP4, encode=_encoder(o), decode=_decoder(o), order=o)
