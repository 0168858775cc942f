"""Named cases: one block each, with the codes and scale byte worked out by hand.

These are the semantic corner cases every FP4 quantizer must get right (zero blocks, ties,
saturation, scale underflow and overflow, NaN, infinity, negative zero). The expected bytes were
derived by hand from each recipe's written rules, not by running the oracle, so the tests that
compare the oracle with them can fail. Kernel tests and the docs use the same list.

Each `Case` is one block: `values` lists the non-zero positions (every other element
is `+0.0`), `codes` the expected non-zero nibbles (every other code is 0).

Examples:
    >>> from nvfp4_kvcache.cases import CASES, case_input
    >>> case = CASES["fp4_mx_block16/ties_away"]
    >>> case.scale_byte, case.codes[1]
    (127, 1)
    >>> case_input(case).shape
    torch.Size([1, 16])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from nvfp4_kvcache.recipes import get_recipe
from nvfp4_kvcache.recipes.nvfp4 import nvfp4_with_order

__all__ = ["Case", "CASES", "case_input", "case_codes", "case_recipe"]

_F32_MAX = torch.finfo(torch.float32).max
_G14 = (torch.tensor(14.0) / 2688.0).item()   # fl(14 / 2688) = 0x1.555556p-8: amax/(6*448) of a tensor max of 14
_G11 = (torch.tensor(11.0) / 2688.0).item()   # fl(11 / 2688) = 0x1.0c30c4p-8
_G_ENCODE = 45.559322357177734                # a float32 encode scale 2688 / amax (compressed-tensors' convention)


def _next_up(v: float) -> float:
    return torch.tensor(v, dtype=torch.float32).nextafter(torch.tensor(math.inf)).item()


def _next_down(v: float) -> float:
    return torch.tensor(v, dtype=torch.float32).nextafter(torch.tensor(0.0)).item()


@dataclass(frozen=True)
class Case:
    """One block and the bytes its recipe must produce for it.

    Attributes:
        name: `"<recipe>/<what>"`.
        recipe: recipe name.
        values: `{position: float32 value}`; other positions hold `+0.0`.
        scale_byte: expected scale byte (E4M3 bits for `nvfp4`).
        codes: `{position: expected 4-bit code}`; other positions expect code 0.
        why: the rule the case pins, in one sentence.
        global_scale: `nvfp4` only.
        dtype: input dtype.
        order: `nvfp4` only: the `float32` order of operations the bytes are for (a name in
            `nvfp4_kvcache.recipes.nvfp4.ORDERS`), or `None` for the default.
    """

    name: str
    recipe: str
    values: dict[int, float]
    scale_byte: int
    codes: dict[int, int]
    why: str
    global_scale: float | None = None
    dtype: torch.dtype = field(default=torch.float32)
    order: str | None = None


def case_input(case: Case) -> torch.Tensor:
    """The case's block as a `[1, block_size]` tensor of `case.dtype`."""
    n = get_recipe(case.recipe).block_size
    x = torch.zeros(1, n, dtype=torch.float32)
    for i, v in case.values.items():
        x[0, i] = v
    return x.to(case.dtype)


def case_recipe(case: Case):
    """The recipe object the case's bytes are for (its order of operations applied)."""
    return nvfp4_with_order(case.order) if case.order else get_recipe(case.recipe)


def case_codes(case: Case) -> list[int]:
    """The expected codes of the whole block, position by position."""
    n = get_recipe(case.recipe).block_size
    return [case.codes.get(i, 0) for i in range(n)]


_TIES = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]

_LIST = [
    # ---- fp4_mx_block16: e = ceil(log2(max(amax/6, 1e-10))), byte e+127, ties away, sign = (y < 0)
    Case("fp4_mx_block16/zero_block", "fp4_mx_block16", {}, 94, {},
         "amax 0 is clamped to 1e-10: e = ceil(log2 1e-10) = -33, byte 94, all codes 0"),
    Case("fp4_mx_block16/amax_is_6", "fp4_mx_block16", {0: 6.0}, 127, {0: 7},
         "amax/6 = 1 = 2**0 exactly: byte 127 and 6 maps to code 7"),
    Case("fp4_mx_block16/amax_is_12", "fp4_mx_block16", {0: 12.0, 1: -3.0}, 128, {0: 7, 1: 0xB},
         "amax/6 = 2: byte 128; 12/2 = 6 (code 7), -3/2 = -1.5 (code 0xB)"),
    Case("fp4_mx_block16/ties_away", "fp4_mx_block16",
         {0: 6.0, **{i + 1: t for i, t in enumerate(_TIES)}, 8: -0.25, 9: -2.5}, 127,
         {0: 7, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 0x9, 9: 0xD},
         "every midpoint rounds away from zero: 0.25->0.5, 0.75->1, 1.25->1.5, 1.75->2, 2.5->3, 3.5->4, 5->6"),
    Case("fp4_mx_block16/just_below_ties", "fp4_mx_block16",
         {0: 6.0, **{i + 1: _next_down(t) for i, t in enumerate(_TIES)}}, 127,
         {0: 7, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6},
         "one float32 ulp below a midpoint rounds down"),
    Case("fp4_mx_block16/negative_zero_and_tiny_negative", "fp4_mx_block16", {0: 6.0, 1: -0.0, 2: -0.1}, 127,
         {0: 7, 2: 0x8},
         "-0.0 gives code 0 (the sign test is y < 0), but -0.1 rounds to zero and keeps its sign: code 8"),
    Case("fp4_mx_block16/just_above_6", "fp4_mx_block16", {0: _next_up(6.0)}, 128, {0: 5},
         "amax/6 is one ulp above 1, log2 is positive: e = 1, and 6.0000005/2 = 3.0000002 rounds to 3 (code 5)"),
    Case("fp4_mx_block16/log2_rounds_to_integer", "fp4_mx_block16", {0: _next_up(96.0)}, 131, {0: 7},
         "amax/6 = 16*(1+2**-23), whose float32 log2 rounds to exactly 4.0: e = 4 (byte 131) where exact "
         "math says 5, and 96.00001/16 saturates to code 7"),
    Case("fp4_mx_block16/bf16_97", "fp4_mx_block16", {0: 97.0}, 132, {0: 5},
         "97/6 = 16.17 rounds up to 2**5 (byte 132) and 97/32 = 3.03 -> 3 (code 5); eager bf16 upstream picks 131/7",
         dtype=torch.bfloat16),
    Case("fp4_mx_block16/tiny_block", "fp4_mx_block16", {0: 5e-10, 1: 1e-12}, 94, {0: 6},
         "amax/6 < 1e-10 is clamped: e = -33; 5e-10 * 2**33 = 4.29 -> 4 (code 6), 1e-12 * 2**33 = 0.0086 -> 0"),
    Case("fp4_mx_block16/float32_max", "fp4_mx_block16", {0: _F32_MAX}, 253, {0: 6},
         "the largest finite input: e = 126 (byte 253); 3.4e38 / 2**126 = 4.0 -> code 6"),
    Case("fp4_mx_block16/nan_block", "fp4_mx_block16", {0: math.nan, 1: 3.0}, 0, {},
         "a NaN block gets scale byte 0 and all codes 0 (CUDA's float->uint8 of NaN): it decodes to zeros"),
    Case("fp4_mx_block16/inf_block", "fp4_mx_block16", {0: math.inf, 1: -3.0}, 255, {},
         "an infinite block gets scale byte 255 and all codes 0 (CUDA's saturating cast): it decodes to NaN"),
    # ---- nvfp4: sf = E4M3_rne_sat(amax * fl(1/6) * fl(1/g)), r = 1/(sf*g), code = E2M1_rne_sat(x*r)
    Case("nvfp4/zero_block", "nvfp4", {1: -0.0}, 0x00, {1: 0x8},
         "amax 0: block scale 0, codes +-0 (the sign of -0.0 is kept: code 8)", global_scale=1.0),
    Case("nvfp4/amax_is_6x448", "nvfp4", {0: 2688.0, 1: -448.0}, 0x7E, {0: 7, 1: 0xA},
         "amax = 6*448 with g = 1: block scale 448 (0x7E); 2688/448 = 6 (code 7), -448/448 = -1 (code 0xA)",
         global_scale=1.0),
    Case("nvfp4/ties_even", "nvfp4", {0: 6.0, **{i + 1: t for i, t in enumerate(_TIES)}, 8: -0.25, 9: -2.5}, 0x38,
         {0: 7, 1: 0, 2: 2, 3: 2, 4: 4, 5: 4, 6: 6, 7: 6, 8: 0x8, 9: 0xC},
         "block scale 1.0 (0x38); midpoints go to the even code: 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, "
         "3.5->4, 5->4; -0.25 -> -0 (code 8)", global_scale=1.0),
    Case("nvfp4/scale_underflow", "nvfp4", {0: 1e-4, 1: -1e-4}, 0x00, {1: 0x8},
         "amax/6 = 1.7e-5 is below half the smallest E4M3 subnormal (2**-10): block scale 0, codes +-0",
         global_scale=1.0),
    Case("nvfp4/scale_subnormal", "nvfp4", {0: 0.06}, 0x05, {0: 7},
         "amax/6 = 0.01 rounds to the E4M3 subnormal 5 * 2**-9 (byte 0x05); 0.06 / 0.0098 = 6.14 saturates to 6",
         global_scale=1.0),
    Case("nvfp4/scale_saturates", "nvfp4", {0: 1e4, 1: 448.0}, 0x7E, {0: 7, 1: 2},
         "amax/6 = 1667 > 448: block scale saturates at 448; 1e4/448 = 22 saturates to 6, 448/448 = 1",
         global_scale=1.0),
    Case("nvfp4/global_scale", "nvfp4", {0: 3.0, 1: 0.5}, 0x7E, {0: 7, 1: 2},
         "g = 3/2688 (the amax/(6*448) convention for amax 3): block scale 448, 3 -> 6 (code 7), 0.5 -> 1 (code 2)",
         global_scale=3.0 / 2688.0),
    Case("nvfp4/nan_block", "nvfp4", {0: math.nan, 1: 3.0}, 0x7F, {},
         "a NaN anywhere makes the block scale E4M3 NaN (0x7F) and all codes 0: the block decodes to NaN",
         global_scale=1.0),
    Case("nvfp4/inf_block", "nvfp4", {0: math.inf, 1: 1.0, 2: -math.inf}, 0x7E, {0: 7, 2: 0xF},
         "inf saturates: block scale 448, +-inf -> +-6, 1/448 -> 0", global_scale=1.0),
    # ---- mxfp4: E = clamp(floor(log2 amax) - 2, -127, 127), byte E+127, RNE, sign = signbit(x)
    Case("mxfp4/zero_block", "mxfp4", {3: -0.0}, 0, {3: 0x8},
         "a zero block gets the smallest scale 2**-127 (byte 0); -0.0 keeps its sign (code 8)"),
    Case("mxfp4/amax_7_saturates", "mxfp4", {0: 7.0, 1: 0.3}, 127, {0: 7, 1: 1},
         "floor(log2 7) - 2 = 0: byte 127; 7 saturates to 6, 0.3 -> 0.5"),
    Case("mxfp4/amax_8", "mxfp4", {0: 8.0, 1: -1.0}, 128, {0: 6, 1: 0x9},
         "floor(log2 8) - 2 = 1: byte 128; 8/2 = 4 (code 6), -1/2 = -0.5 (code 9)"),
    Case("mxfp4/ties_even", "mxfp4", {0: 4.0, **{i + 1: t for i, t in enumerate(_TIES)}}, 127,
         {0: 6, 1: 0, 2: 2, 3: 2, 4: 4, 5: 4, 6: 6, 7: 6},
         "X = 1: the midpoints go to the even code"),
    Case("mxfp4/subnormal_input", "mxfp4", {0: 2.0**-125, 1: 2.0**-130}, 0, {0: 6},
         "floor(log2 2**-125) - 2 = -127: byte 0; 2**-125 / 2**-127 = 4 (code 6), 2**-130 / 2**-127 = 0.125 -> 0"),
    Case("mxfp4/huge", "mxfp4", {0: 2.0**127}, 252, {0: 6},
         "floor(log2 2**127) - 2 = 125: byte 252; the value is 4 * 2**125 (code 6)"),
    Case("mxfp4/nan_block", "mxfp4", {0: math.nan}, 0xFF, {},
         "NaN makes the shared scale NaN (0xFF), all codes 0"),
    Case("mxfp4/inf_block", "mxfp4", {0: -math.inf, 1: 1.0}, 0xFF, {},
         "infinity makes the shared scale NaN (0xFF), all codes 0"),
    # ---- mxfp4_rceil: E = clamp(min{E : amax <= 6 * 2**E}, -127, 127), byte E+127, RNE, sign = signbit(x)
    Case("mxfp4_rceil/zero_block", "mxfp4_rceil", {3: -0.0}, 0, {3: 0x8},
         "a zero block gets the smallest scale 2**-127 (byte 0); -0.0 keeps its sign (code 8)"),
    Case("mxfp4_rceil/amax_is_6", "mxfp4_rceil", {0: 6.0, 1: 0.2, 2: -0.2}, 127, {0: 7, 2: 0x8},
         "amax = 6 * 2**0 exactly: E = 0 (byte 127), 6 is code 7; +-0.2 round to +-0 (the sign is kept)"),
    Case("mxfp4_rceil/amax_just_above_6", "mxfp4_rceil", {0: _next_up(6.0)}, 128, {0: 5},
         "amax one float32 ulp above 6 would clip at E = 0: E = 1 (byte 128), 6.0000005 / 2 = 3.0000002 -> 3 (code 5)"),
    Case("mxfp4_rceil/amax_7", "mxfp4_rceil", {0: 7.0, 1: 0.3}, 128, {0: 6},
         "OCP's floor rule gives byte 127 and clips 7 to 6; rounding up gives byte 128: 7/2 = 3.5 ties to 4 "
         "(even code 6), 0.3/2 = 0.15 -> 0"),
    Case("mxfp4_rceil/ties_even", "mxfp4_rceil",
         {0: 6.0, **{i + 1: t for i, t in enumerate(_TIES)}, 8: -0.25, 9: -2.5}, 127,
         {0: 7, 1: 0, 2: 2, 3: 2, 4: 4, 5: 4, 6: 6, 7: 6, 8: 0x8, 9: 0xC},
         "E = 0: the midpoints go to the even code: 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4"),
    Case("mxfp4_rceil/log2_float32_rounds_down", "mxfp4_rceil", {0: _next_up(96.0)}, 132, {0: 5},
         "amax/6 = 16 (1 + 2**-23): exactly above 2**4, so E = 5 (byte 132) and 96.00001/32 -> 3 (code 5); a "
         "float32 log2 rounds to 4.0 and picks byte 131, clipping to 6"),
    Case("mxfp4_rceil/subnormal_block", "mxfp4_rceil", {0: 5 * 2.0**-127, 1: -(2.0**-128)}, 0, {0: 6, 1: 0x9},
         "a subnormal amax clamps to E = -127 (byte 0); elements scale by 2**127 exactly: 5 ties to 4 (code 6), "
         "-0.5 is code 9"),
    Case("mxfp4_rceil/quotient_rounds_onto_power_of_two", "mxfp4_rceil", {0: 6 * 2.0**-127 + 2.0**-148}, 1, {0: 5},
         "amax = 6 * 2**-127 + 2**-148 exceeds 6 * 2**-127: E = -126 (byte 1) and amax / 2**-126 = 3 + 2**-22 -> 3; "
         "the float32 quotient amax/6 rounds down onto the subnormal 2**-127, which a rounded-quotient rule maps to byte 0"),
    Case("mxfp4_rceil/float32_max", "mxfp4_rceil", {0: _F32_MAX}, 253, {0: 6},
         "the largest finite input: E = 126 (byte 253); 3.4e38 / 2**126 = 3.9999998 -> 4 (code 6)"),
    Case("mxfp4_rceil/nan_block", "mxfp4_rceil", {0: math.nan, 1: 3.0}, 0xFF, {},
         "NaN makes the shared scale NaN (0xFF), all codes 0"),
    Case("mxfp4_rceil/inf_block", "mxfp4_rceil", {0: -math.inf, 1: 1.0, 2: 1.75 * 2.0**127}, 0xFE, {0: 0xF, 2: 4},
         "infinity saturates the scale to 2**127 (byte 0xFE, as cvt.rp.satfinite); -inf -> -6 (code 0xF), "
         "1.0 / 2**127 -> 0, 1.75 * 2**127 / 2**127 = 1.75 ties to 2 (code 4)"),
    # ---- nvfp4_4over6: candidates E4M3(amax * R(6g)) and E4M3(1.5 * that), the smaller squared
    # error wins (a tie keeps the first), ftz on every float32 step, NaN elements skipped
    Case("nvfp4_4over6/zero_block", "nvfp4_4over6", {1: -0.0}, 0x00, {1: 0x8},
         "amax 0: both candidates 0 with equal errors; every element scales by 0 and keeps its sign (code 8)",
         global_scale=1.0),
    Case("nvfp4_4over6/four_wins", "nvfp4_4over6", {0: 6.0, 1: 4.5}, 0x3C, {0: 6, 1: 5},
         "E4M3(6/6) = 1 leaves 4.5 -> 4 (error 0.25); the 1.5 scale maps 6 -> 4 and 4.5 -> 3 exactly (error 0): "
         "block scale 1.5 (0x3C)", global_scale=1.0),
    Case("nvfp4_4over6/six_wins", "nvfp4_4over6", {0: 6.0, 1: 1.0}, 0x38, {0: 7, 1: 2},
         "scale 1 is exact; scale 1.5 turns 1 into 0.75 (error 0.0625): block scale 1.0 (0x38)", global_scale=1.0),
    Case("nvfp4_4over6/tie_keeps_six", "nvfp4_4over6", {0: 6.0}, 0x38, {0: 7},
         "6 is exact under both scales (6 -> code 7 at 1.0, 4 at 1.5): equal errors keep the max-to-6 scale",
         global_scale=1.0),
    Case("nvfp4_4over6/ties_even", "nvfp4_4over6",
         {0: 6.0, **{i + 1: t for i, t in enumerate(_TIES)}, 8: -0.25, 9: -2.5, **{i: 4.0 for i in range(10, 16)}},
         0x38, {0: 7, 1: 0, 2: 2, 3: 2, 4: 4, 5: 4, 6: 6, 7: 6, 8: 0x8, 9: 0xC, **{i: 6 for i in range(10, 16)}},
         "six 4.0s (off the 1.5 grid) keep scale 1.0; the midpoints go to the even code: 0.25->0, 0.75->1, "
         "1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4; -0.25 -> -0 (code 8)", global_scale=1.0),
    Case("nvfp4_4over6/four_rescues_underflow", "nvfp4_4over6", {0: 5.5 * 2.0**-10}, 0x01, {0: 5},
         "amax/6 = 0.92 * 2**-10 rounds to scale 0 (error amax**2), 1.5 times it to 2**-9: 5.5 * 2**-10 / 2**-9 "
         "= 2.75 -> 3 (code 5), error 2**-22: the smallest subnormal scale (0x01) wins", global_scale=1.0),
    Case("nvfp4_4over6/scale_underflow", "nvfp4_4over6", {0: 1e-4, 1: -1e-4}, 0x00, {1: 0x8},
         "amax/6 = 1.7e-5 and 1.5 times it are below 2**-10: both candidates 0, codes +-0", global_scale=1.0),
    Case("nvfp4_4over6/subnormal_input_flushed", "nvfp4_4over6", {0: 3 * 2.0**-128}, 0x00, {},
         "a float32 subnormal is flushed to 0 before anything (nvfp4 would give scale 2**-9 and code 7 at "
         "g = 2**-120)", global_scale=2.0**-120),
    Case("nvfp4_4over6/scale_saturates", "nvfp4_4over6", {0: 1e4, 1: 448.0}, 0x7E, {0: 7, 1: 2},
         "amax/6 = 1667 and 1.5 times it saturate at 448 (0x7E); 1e4/448 = 22 -> 6, 448/448 = 1", global_scale=1.0),
    Case("nvfp4_4over6/global_scale", "nvfp4_4over6", {0: 3.0, 1: 0.5}, 0x38, {0: 7, 1: 2},
         "g = 0.5: s = 3 * R(3) rounds to 1.0; at 1.5, 0.5 -> 0.375 (error 2**-6) loses to scale 1.0 (exact)",
         global_scale=0.5),
    Case("nvfp4_4over6/nan_block", "nvfp4_4over6", {0: math.nan, 1: 6.0, 2: -1.0}, 0x38, {1: 7, 2: 0xA},
         "NaN is skipped by amax and gets code 0; both errors are NaN, so the max-to-6 scale (1.0) is kept and "
         "the other elements quantize normally", global_scale=1.0),
    Case("nvfp4_4over6/inf_block", "nvfp4_4over6", {0: math.inf, 1: 1.0, 2: -math.inf}, 0x7E, {0: 7, 2: 0xF},
         "inf saturates both candidates to 448: +-inf -> +-6, 1/448 -> 0", global_scale=1.0),
    # two blocks found by search (their bytes are the oracle's; the tests check that a plausible
    # wrong rule changes them): the choice hangs on a rounding of the error, or of a candidate
    Case("nvfp4_4over6/error_sum_is_fused", "nvfp4_4over6",
         dict(enumerate([-0.09375, 0.484375, 1.203125, -1.15625, 1.0, 1.328125, -1.1875, -0.90625, 0.015625,
                         -1.40625, 0.859375, 1.0, 0.578125, -0.21875, 0.109375, -0.171875])),
         0x39, {0: 0x9, 1: 0x3, 2: 0x6, 3: 0xD, 4: 0x5, 5: 0x6, 6: 0xE, 7: 0xD, 9: 0xE, 10: 0x5, 11: 0x5,
                12: 0x3, 13: 0x9, 14: 0x1, 15: 0x9},
         "g = fl(0.3): the two candidates' errors are within a rounding of each other; with each d_i and each "
         "running sum a fused multiply-add the max-to-6 scale (0x39) wins, with separate roundings 0x34 would",
         global_scale=0.3),
    Case("nvfp4_4over6/candidate_ties_to_even", "nvfp4_4over6",
         dict(enumerate([0.875, -0.546875, -0.71875, -0.359375, -0.515625, -0.234375, -0.40625, 0.484375,
                         0.34375, 0.0, 0.53125, 0.3125, -0.796875, -0.265625, -0.1875, -0.859375])),
         0x36, {0: 0x7, 1: 0xE, 2: 0xE, 3: 0xC, 4: 0xE, 5: 0xB, 6: 0xD, 7: 0x5, 8: 0x4, 10: 0x6, 11: 0x4,
                12: 0xF, 13: 0xC, 14: 0xB, 15: 0xF},
         "g = fl(1/6) makes R(6g) = 1, so s = amax = 0.875 (0x36) and 1.5 s = 1.3125, the E4M3 midpoint of 1.25 "
         "and 1.375: ties to even give 1.25, which loses to 0.875; rounding the tie away (1.375) would win",
         global_scale=1.0 / 6.0),
    # ==== cases from the peer conformance lab (scripts/peer_conformance.py): one per class of input a
    # peer library gets wrong or computes in another order; which peer, and its bytes, in `why` ====
    Case("nvfp4/scale_tie_even", "nvfp4", {0: 6.375, 1: 3.1875}, 0x38, {0: 7, 1: 5},
         "amax/6 = 1.0625 exactly (fl(6.375 * fl(1/6)) rounds back onto it): the midpoint of the E4M3 values "
         "1.0 (0x38, even) and 1.125 (0x39) goes to even; 6.375 saturates to 6, 3.1875 -> 3. A block scale "
         "rounded with ties away from zero gives 0x39", global_scale=1.0),
    Case("nvfp4/order_scale_near_tie", "nvfp4", {0: 6.25}, 0x75, {0: 7},
         "g = fl(14/2688): exactly, amax/(6g) = 199.99999 is just below the E4M3 midpoint 200, so 192 (0x74); "
         "the default order computes fl(fl(6.25 * fl(1/6)) * fl(1/g)) = 200.00002, above it: 208 (0x75), and "
         "6.25 / 216.67g -> 6 (code 7). ModelOpt's division (order 'div') and exact arithmetic give 0x74",
         global_scale=_G14, dtype=torch.bfloat16),
    Case("nvfp4/order_scale_near_tie_div", "nvfp4", {0: 6.25}, 0x74, {0: 7},
         "the same block in ModelOpt's order: amax / fl(6 * g) = 6.25 / 2**-5 = 200 exactly, a tie: 192 (0x74, even)",
         global_scale=_G14, dtype=torch.bfloat16, order="div"),
    Case("nvfp4/order_element_near_tie", "nvfp4", {0: 6.0, 1: 3.4375}, 0x77, {0: 7, 1: 6},
         "g = fl(11/2688), block scale 240 (0x77); exactly, 3.4375 / (240 g) = 3.4999998, below the midpoint 3.5 "
         "(code 5), but the default order's fl(3.4375 * fl(1 / fl(240 g))) = 3.5 exactly, a tie: 4 (code 6). "
         "Division (order 'div') gives 3.4999998 and code 5", global_scale=_G11, dtype=torch.bfloat16),
    Case("nvfp4/order_element_near_tie_div", "nvfp4", {0: 6.0, 1: 3.4375}, 0x77, {0: 7, 1: 5},
         "the same block in ModelOpt's order: fl(3.4375 / fl(240 g)) = 3.4999998 -> 3 (code 5), as exact arithmetic",
         global_scale=_G11, dtype=torch.bfloat16, order="div"),
    Case("nvfp4/nan_block_bfloat16", "nvfp4", {0: math.nan, 1: 3.0}, 0x7F, {},
         "the NaN block on bfloat16 input: scale byte 0x7F (E4M3 NaN) and all codes 0, whatever the input dtype. "
         "compressed-tensors writes code 8 in every position of a bfloat16 NaN block (0 for float16 and float32)",
         global_scale=1.0, dtype=torch.bfloat16),
    Case("nvfp4/negative_zero_in_block", "nvfp4", {0: 6.0, 1: -0.0}, 0x38, {0: 7, 1: 0x8},
         "block scale 1.0 (0x38); -0.0 keeps its sign: code 8. ModelOpt and compressed-tensors write 0 (the sign "
         "taken from x < 0); both decode to zero", global_scale=1.0),
    Case("nvfp4/block_scale_from_bf16_quotient", "nvfp4", {0: -3.03125}, 0x5C, {0: 0xF},
         "encode scale G = 45.559322 (order 'encode_div'): s = G * fl(3.03125 / 6) = 23.017, above the E4M3 "
         "midpoint 23: 24 (0x5C); -3.03125 / (24 / G) = -5.75 -> -6 (code 0xF). compressed-tensors divides "
         "amax by 6 in bfloat16 (0.50390625), so s = 22.958: 22 (0x5B)",
         global_scale=_G_ENCODE, dtype=torch.bfloat16, order="encode_div"),
]

CASES: dict[str, Case] = {c.name: c for c in _LIST}
"""All cases by name."""
