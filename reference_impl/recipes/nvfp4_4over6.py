"""`nvfp4_4over6`: NVFP4 with the "4 over 6" block-scale search, as FlashInfer's paged KV writer runs it.

The layout is [`nvfp4`][nvfp4_kvcache.recipes.nvfp4]'s (block 16, one FP8 E4M3 scale byte per
block, a `float32` decode global scale `g` per tensor, E2M1 elements rounded to nearest even),
and so is the decode. The difference is the block scale: besides the one that maps the block max
to 6, the writer tries the one that maps it to 4 (1.5 times larger, so the top of the block lands
on the finer part of the E2M1 grid) and keeps whichever reconstructs the block with the smaller
squared error. The arithmetic below is FlashInfer 0.7.4's (`nvfp4_append_quantize_block` in
`flashinfer/data/include/flashinfer/page.cuh`, compiled with `-DFLASHINFER_NVFP4_APPEND_4OVER6`,
reached through `flashinfer.page.nvfp4_quantize_append_paged_kv_cache_with_slot_mapping(...,
nvfp4_4over6=NVFP44Over6Config(err_mode="MSE"))`, which accepts only the MSE error metric).

vLLM 0.34.0 lists `nvfp4_4over6` as a KV-cache dtype (`vllm/config/cache.py`). Its FlashInfer
backend (`vllm/v1/attention/backends/flashinfer.py`) accepts it only on compute capability 10,
where the TRT-LLM path passes the dtype string to its own compiled `reshape_and_cache_flash`, whose
source the wheel does not hold. On SM8x, SM90 and SM12x it writes through the writer above without
`nvfp4_4over6=` (whose default `None` turns the search off) and refuses `nvfp4_4over6`
(`supports_kv_cache_dtype`).

Rules, per block of 16 (each step one `float32` operation rounded to nearest even; "ftz" flushes
a `float32` subnormal to a zero of the same sign, as FlashInfer's `-use_fast_math` build does for
every operation; `R(v)` is the reciprocal `1 / v`, correctly rounded, `R(0) = +inf`):

1. `x' = ftz(x)`; `amax = max |x'|` over the non-NaN elements (NaN is skipped, as `fmaxf` does),
   starting from 0.
2. `s = fl(amax * R(fl(6 * g)))` (0 when `amax == 0`).
3. Two candidates, each converted to E4M3 with round to nearest even, saturating at 448
   (`+inf -> 448`): `sf6 = E4M3(s)` and `sf4 = E4M3(ftz(fl(s * 1.5)))`.
4. Error of a candidate `sf`: `r = R(ftz(fl(sf * g)))`; for `i = 0 .. 15` in order,
   `q_i = E2M1_RNE,sat(|fl(x'_i * r)|)` (a NaN product gives 0),
   `d_i = ftz(fma(fl(E2M1[q_i] * sf), g, -|x'_i|))` and `err = ftz(fma(d_i, d_i, err))` with
   `err = 0` before element 0 (`fma` is one rounding; a NaN element makes `err` NaN).
5. The block scale is `sf4` if `err(sf4) < err(sf6)`, else `sf6`: an exact tie, and any NaN,
   keep `sf6`.
6. `r = R(ftz(fl(sf * g)))` if `amax > 0` and `sf > 0`, else 0.
7. Element code: `y = fl(x'_i * r)`; a NaN `y` (a NaN element, or `0 * inf`) gives code 0;
   otherwise the sign of `y` (the sign of `x'`, so `-0.0` gives code 8) and
   `E2M1_RNE,sat(|y|)` (`+-inf -> +-6`).
8. Decode as `nvfp4`: `fl(E2M1[code] * sf) * g`.

Where this oracle and the released kernel part (the [Format chapter](../format/recipes.md) has
the details and the GPU comparison):

* `R`: the paged writer for MHA caches is instantiated with `precise_rounding = false`, so under
  `-use_fast_math` its divisions are `div.approx.ftz.f32` (`amax * rcp.approx(6 g)`) and
  `rcp.approx.ftz.f32`. The oracle uses the correctly rounded reciprocal that the same function
  uses with `precise_rounding = true` (FlashInfer's MLA writer, "bit-reproducible under
  -use_fast_math"). An approximate reciprocal can move `s`, a candidate's error or an element
  by one ulp at a rounding boundary; [`encode_with`][nvfp4_kvcache.recipes.nvfp4_4over6.encode_with]
  takes the reciprocal as an argument, so a GPU test can pass the hardware's and compare exactly.
* `fma` and `ftz`: read from the SASS that nvcc 13.0 makes of that function for sm_90
  (`FFMA.FTZ` for `d_i` and for the running sum, every other operation `.FTZ`). Another nvcc may
  contract differently; the GPU comparison is the check.

Non-finite input follows from the rules: a NaN element is skipped by `amax`, makes both errors
NaN (so `sf6` is kept) and gets code 0, while the rest of its block is quantized normally; `+-inf`
makes `amax` infinite, both candidates saturate to 448, `+-inf -> +-6` and the finite elements
round against `448 * g`.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.recipes import NVFP4, NVFP4_4OVER6
    >>> x = torch.tensor([[6.0, 4.5] + [0.0] * 14])
    >>> sf = NVFP4.quantize(x, 1.0).scales.view(torch.float8_e4m3fn)
    >>> sf.item()  # 6 / 6 = 1: 4.5 is off the grid
    1.0
    >>> q = NVFP4_4OVER6.quantize(x, 1.0)  # 1.5: 6 -> 4, 4.5 -> 3, exact
    >>> sf = q.scales.view(torch.float8_e4m3fn).item()
    >>> sf, NVFP4_4OVER6.dequantize(q)[0, :2].tolist()
    (1.5, [6.0, 4.5])
    >>> NVFP4.dequantize(NVFP4.quantize(x, 1.0))[0, :2].tolist()
    [6.0, 4.0]
"""

from __future__ import annotations

from typing import Callable

import torch

from nvfp4_kvcache.formats import E2M1, E2M1_MAX, E4M3
from nvfp4_kvcache.recipes.base import GlobalScale, PoolScaleLayout, Recipe, ScaleRule
from nvfp4_kvcache.rounding import Rounding

__all__ = ["NVFP4_4OVER6", "encode", "encode_with", "exact_reciprocal", "fma_f32", "ftz", "CANDIDATE_RATIO"]

CANDIDATE_RATIO: float = E2M1_MAX / E2M1.magnitudes[-2]
"""1.5 = 6 / 4: the second candidate scale maps the block max to 4 instead of 6."""

_TINY = torch.finfo(torch.float32).tiny


def exact_reciprocal(v: torch.Tensor) -> torch.Tensor:
    """`1 / v` correctly rounded to `float32` (`+inf` for `+0`): the oracle's `R`."""
    return 1.0 / v


def ftz(v: torch.Tensor) -> torch.Tensor:
    """A `float32` subnormal becomes a zero of its sign; everything else passes.

    Examples:
        >>> import torch
        >>> ftz(torch.tensor([2.0**-127, -(2.0**-149), 2.0**-126, -1.0])).tolist()
        [0.0, -0.0, 1.1754943508222875e-38, -1.0]
    """
    return torch.where(v.abs() < _TINY, v * 0.0, v)


def fma_f32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """`fl(a * b + c)`, one rounding to nearest even, for `float32` tensors (what `FFMA` computes).

    `a * b` is exact in `float64`; the sum is rounded to `float64` and its error recovered exactly
    (TwoSum). Rounding that sum "to odd" (moving an even result one `float64` ulp toward the exact
    value when the sum was inexact) and then to `float32` gives the correctly rounded result, since
    `float64` has more than two bits beyond `float32`'s.

    Examples:
        >>> import torch
        >>> a = torch.tensor([1.0 + 2.0**-12]); c = torch.tensor([-1.0 - 2.0**-11])
        >>> fused = (fma_f32(a, a, c) == 2.0**-24).item()  # the product's low bits
        >>> fused, ((a * a + c) == 0).item()
        (True, True)
    """
    p = a.double() * b.double()
    c64 = c.double()
    s = p + c64
    bp = s - p
    err = (p - (s - bp)) + (c64 - bp)
    bits = s.view(torch.int64)
    inexact_even = (err != 0) & (bits & 1 == 0)
    away = (err > 0) == (s > 0)
    bits = torch.where(inexact_even, torch.where(away, bits + 1, bits - 1), bits)
    return bits.view(torch.float64).to(torch.float32)


def _e2m1(y: torch.Tensor) -> torch.Tensor:
    """E2M1 magnitude codes (RNE, saturating) of `|y|`; a NaN `y` gives 0."""
    return E2M1.encode_magnitude(torch.where(torch.isnan(y), 0.0, y.abs()), Rounding.NEAREST_EVEN)


def _e4m3(s: torch.Tensor) -> torch.Tensor:
    """E4M3 bytes, RNE, saturating (`satfinite`): NaN (from `6 g` overflowing, `inf * 0`) -> `0x7F`."""
    nan = torch.isnan(s)
    b = E4M3.encode_magnitude(torch.where(nan, 0.0, s), Rounding.NEAREST_EVEN)
    return torch.where(nan, torch.full_like(b, E4M3.nan_magnitude_codes[0]), b)


def _squared_error(x: torch.Tensor, sf: torch.Tensor, g: torch.Tensor, rcp: Callable) -> torch.Tensor:
    """Step 4 for every block: `x` `float32 [n, 16]` (flushed), `sf` `float32 [n]` -> `float32 [n]`."""
    r = rcp(ftz(sf * g)).unsqueeze(-1)
    level = E2M1.decode_tensor(_e2m1(x * r))
    scaled = (level * sf.unsqueeze(-1)).contiguous()   # exact: 2 x 4 significant bits
    d = ftz(fma_f32(scaled, g.expand_as(scaled), -x.abs()))
    err = torch.zeros_like(sf)
    for i in range(x.shape[-1]):
        err = ftz(fma_f32(d[:, i], d[:, i], err))
    return err


def encode_with(
    blocks: torch.Tensor, global_scale: torch.Tensor, rcp: Callable[[torch.Tensor], torch.Tensor] = exact_reciprocal
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rules above with a chosen reciprocal `R` (default: correctly rounded).

    Args:
        blocks: `float32 [n, 16]`.
        global_scale: `float32` 0-d tensor, the decode multiplier `g`.
        rcp: `float32` tensor -> its reciprocal, elementwise. A GPU test passes the hardware's
            `rcp.approx.ftz.f32` to reproduce FlashInfer's fast-math MHA writer.

    Returns:
        (`uint8` codes `[n, 16]`, `uint8` E4M3 scale bytes `[n]`).
    """
    g = global_scale.to(torch.float32)
    x = ftz(blocks)
    amax = torch.where(torch.isnan(x), 0.0, x.abs()).amax(dim=-1)
    s = amax * rcp(ftz(g * E2M1_MAX).reshape(1))
    b6, b4 = _e4m3(s), _e4m3(ftz(s * CANDIDATE_RATIO))
    sf6, sf4 = E4M3.decode_tensor(b6), E4M3.decode_tensor(b4)
    use4 = _squared_error(x, sf4, g, rcp) < _squared_error(x, sf6, g, rcp)
    sf_bytes = torch.where(use4, b4, b6)
    sf = torch.where(use4, sf4, sf6)
    r = torch.where((amax > 0) & (sf > 0), rcp(ftz(sf * g)), torch.zeros_like(sf))
    y = x * r.unsqueeze(-1)
    sign = torch.where(torch.signbit(y), E2M1.sign_bit, 0).to(torch.uint8)
    codes = torch.where(torch.isnan(y), torch.zeros_like(sign), sign | _e2m1(y))
    return codes, sf_bytes


def encode(blocks: torch.Tensor, global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rules above with the correctly rounded reciprocal: `float32 [n, 16]` and `g` -> (codes, E4M3 bytes)."""
    return encode_with(blocks, global_scale)


NVFP4_4OVER6 = Recipe(
    name="nvfp4_4over6",
    label="NVFP4 with the 4-over-6 block-scale search (FlashInfer's paged writer)",
    block_size=16,
    element=E2M1,
    element_rounding=Rounding.NEAREST_EVEN,
    scale=E4M3,
    scale_rule=ScaleRule("E4M3(amax / (6 g)) or E4M3(1.5 amax / (6 g)), the smaller squared error; "
                         "a tie keeps the first", Rounding.NEAREST_EVEN, candidates=2),
    encode=encode,
    kernel_id=4,
    global_scale=GlobalScale(),
    pool_scale_layout=PoolScaleLayout.PER_HEAD,
    source="FlashInfer 0.7.4 page.cuh (nvfp4_4over6 paged KV writer); vLLM 0.34.0 KV-cache dtype",
)
"""The recipe (stateless; the global scale is an argument)."""
