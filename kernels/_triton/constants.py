"""Every number the kernels use, derived from `nvfp4_kvcache` and wrapped as `tl.constexpr`.

Nothing numeric is retyped here: the E2M1 midpoints come from `E2M1.magnitudes`, the E4M3 field
widths from `E4M3`, the recipe rules (floor, bias, special bytes) from the recipe modules. The
kernels refer to these module globals, which Triton accepts because each is a `tl.constexpr`.
"""

from __future__ import annotations

import math
import struct

import triton.language as tl

from nvfp4_kvcache.formats import E2M1, E2M1_MAX, E2M1_SIGN_BIT, E4M3, E4M3_MAX, E8M0
from nvfp4_kvcache.recipes import FP4_MX_BLOCK16, MXFP4, MXFP4_RCEIL, NVFP4, NVFP4_4OVER6, RECIPES, Recipe
from nvfp4_kvcache.recipes.fp4_mx_block16 import (
    BLOCK16_SCALE,
    INF_BLOCK_SCALE_BYTE,
    NAN_BLOCK_SCALE_BYTE,
    SCALE_BIAS,
    SCALE_FLOOR,
)
from nvfp4_kvcache.recipes.mxfp4 import E2M1_EMAX
from nvfp4_kvcache.recipes.nvfp4_4over6 import CANDIDATE_RATIO
from nvfp4_kvcache.recipes.mxfp4_rceil import INF_BLOCK_SCALE_BYTE as RCEIL_INF_BLOCK_SCALE_BYTE
from nvfp4_kvcache.recipes.nvfp4 import E4M3_NAN_BYTE


def f32(x: float) -> float:
    """`x` rounded to the nearest `float32` (so a constexpr is exact whatever Triton does with it)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


# -- recipe ids (constexpr switch inside the quantize kernel), read off the recipes ------------
RECIPE_IDS: dict[str, int] = {r.name: r.kernel_id for r in RECIPES.values()}
R_BLOCK16 = tl.constexpr(FP4_MX_BLOCK16.kernel_id)
R_NVFP4 = tl.constexpr(NVFP4.kernel_id)
R_MXFP4 = tl.constexpr(MXFP4.kernel_id)
R_MXFP4_RCEIL = tl.constexpr(MXFP4_RCEIL.kernel_id)
R_NVFP4_4OVER6 = tl.constexpr(NVFP4_4OVER6.kernel_id)

# -- scale decoders (constexpr SCALE of the dequantize kernel), one per scale format -------------
SCALE_IDS: dict[str, int] = {E4M3.name: 0, BLOCK16_SCALE.name: 1, E8M0.name: 2}
S_E4M3 = tl.constexpr(SCALE_IDS[E4M3.name])            # E4M3 value (times the global scale)
S_POW2_INF = tl.constexpr(SCALE_IDS[BLOCK16_SCALE.name])  # 2**(b - 127), byte 255 = +inf
S_E8M0 = tl.constexpr(SCALE_IDS[E8M0.name])            # 2**(b - 127), byte 255 = NaN


def scale_id(recipe: Recipe) -> int:
    """The dequantize kernel's decoder for a recipe's scale format (`SCALE_IDS[recipe.scale.name]`)."""
    return SCALE_IDS[recipe.scale.name]

# -- float32 layout (IEEE 754 binary32) --------------------------------------------------------
F32_MAN_BITS = 23
F32_BIAS = 127

# -- E2M1 ---------------------------------------------------------------------------------------
_MIDS = [(a + b) / 2 for a, b in zip(E2M1.magnitudes, E2M1.magnitudes[1:])]
assert len(_MIDS) == 7 and all(f32(m) == m for m in _MIDS)
# Midpoint i lies between magnitude codes i and i + 1. Ties-to-even sends it to the even code.
# MID0, MID1: the midpoints between magnitude codes 0|1 and 1|2 (0.25, 0.75), the two thresholds
# of ties-away rounding below 1 (above 1 the kernels round by integer arithmetic on the bits).
MID0, MID1 = tl.constexpr(_MIDS[0]), tl.constexpr(_MIDS[1])
E2M1_SIGN = tl.constexpr(E2M1_SIGN_BIT)                      # 0x8
E2M1_MAG_MASK = tl.constexpr(E2M1.magnitude_mask)            # 0x7
E2M1_MAXV = tl.constexpr(E2M1_MAX)                           # 6.0

# -- E4M3 (nvfp4 block scale) -------------------------------------------------------------------
E4M3_MAXV = tl.constexpr(E4M3_MAX)                           # 448.0
E4M3_MAN = tl.constexpr(E4M3.man_bits)                       # 3
E4M3_MAN_MASK = tl.constexpr((1 << E4M3.man_bits) - 1)
E4M3_EXP_MASK = tl.constexpr((1 << E4M3.exp_bits) - 1)
E4M3_DROP = tl.constexpr(F32_MAN_BITS - E4M3.man_bits)       # 20 mantissa bits dropped
E4M3_HALF_M1 = tl.constexpr((1 << (F32_MAN_BITS - E4M3.man_bits - 1)) - 1)  # 0x7FFFF
E4M3_KEEP_MASK = tl.constexpr(-(1 << (F32_MAN_BITS - E4M3.man_bits)))  # 0xFFF00000 as int32
E4M3_REBIAS = tl.constexpr(F32_BIAS - E4M3.bias)             # 120
E4M3_MIN_NORMAL = tl.constexpr(math.ldexp(1.0, 1 - E4M3.bias))  # 2**-6
E4M3_SUB_STEP = tl.constexpr(E4M3.min_subnormal)             # 2**-9
E4M3_SUB_INV = tl.constexpr(1.0 / E4M3.min_subnormal)        # 512
E4M3_SIGN = tl.constexpr(E4M3.sign_bit)                      # 0x80
E4M3_NAN_MAG = tl.constexpr(E4M3.nan_magnitude_codes[0])     # 0x7F
NVFP4_NAN_BYTE = tl.constexpr(E4M3_NAN_BYTE)
RCP_E2M1_MAX = tl.constexpr(f32(1.0 / E2M1_MAX))             # fl(1/6), as the oracle
# (x + 2**23) - 2**23 rounds a float32 in [0, 2**22] to an integer, ties to even
RNE_MAGIC = tl.constexpr(float(1 << F32_MAN_BITS))

# -- fp4_mx_block16 -----------------------------------------------------------------------------
B16_BIAS = tl.constexpr(SCALE_BIAS)                           # 127
B16_FLOOR = tl.constexpr(f32(SCALE_FLOOR))                    # fl(1e-10), torch.clamp's scalar
B16_NAN_BYTE = tl.constexpr(NAN_BLOCK_SCALE_BYTE)             # 0
B16_INF_BYTE = tl.constexpr(INF_BLOCK_SCALE_BYTE)             # 255
assert BLOCK16_SCALE.bias == F32_BIAS  # so 2**(b - 127) is float32 bits b << 23 (b >= 1)
LN2 = tl.constexpr(f32(math.log(2.0)))

# -- mxfp4 / E8M0 --------------------------------------------------------------------------------
MX_EMAX = tl.constexpr(E2M1_EMAX)                             # 2
E8M0_BIAS = tl.constexpr(E8M0.bias)                           # 127
E8M0_MIN_EXP = tl.constexpr(E8M0.min_exponent)               # -127
E8M0_MAX_EXP = tl.constexpr(E8M0.max_exponent)               # 127
E8M0_NAN = tl.constexpr(E8M0.nan_code)                        # 0xFF
assert E8M0.bias == F32_BIAS
# mxfp4_rceil: a normal amax with 2**F = its binade / 4 clips (amax / 2**F > 6) exactly when its
# float32 mantissa field exceeds 6's (0x400000): 4 * (1 + m / 2**23) > 6
RCEIL_CLIP_MAN = tl.constexpr(struct.unpack("<i", struct.pack("<f", E2M1_MAX))[0] & ((1 << F32_MAN_BITS) - 1))
RCEIL_INF_BYTE = tl.constexpr(RCEIL_INF_BLOCK_SCALE_BYTE)     # 0xFE
# 2**-127 (byte 0) is a float32 subnormal: bits 1 << 22
F32_TWO_M127_BITS = tl.constexpr(1 << (F32_MAN_BITS - 1))

# -- nvfp4_4over6 -------------------------------------------------------------------------------
CANDIDATE_RATIO_46 = tl.constexpr(CANDIDATE_RATIO)            # 1.5: the max-to-4 candidate scale
F32_TINY = tl.constexpr(math.ldexp(1.0, 1 - F32_BIAS))         # 2**-126: below it, ftz flushes
F32_SIGN_BITS = tl.constexpr(-(1 << 31))                      # 0x80000000 as int32

F32_QNAN_BITS = tl.constexpr(0x7FC00000)
F32_INF_BITS = tl.constexpr(0x7F800000)
# bfloat16 NaN as torch writes it on CPU (c10::BFloat16 round_to_nearest_even)
BF16_QNAN = tl.constexpr(0x7FC0)

# -- E2M1 by bit manipulation of float32 (see kernels/_triton/fp4.py) ----------------------------
_E2M1_DROP = F32_MAN_BITS - E2M1.man_bits                     # 22 float32 mantissa bits dropped
E2M1_DROP = tl.constexpr(_E2M1_DROP)
E2M1_HALF = tl.constexpr(1 << (_E2M1_DROP - 1))               # 0x200000: half of the kept lsb
E2M1_HALF_M1 = tl.constexpr((1 << (_E2M1_DROP - 1)) - 1)      # 0x1FFFFF
E2M1_KEEP = tl.constexpr(-(1 << _E2M1_DROP))                  # 0xFFC00000 as int32
# rounded float32 bits >> 22 is (exponent field << 1 | mantissa bit); E2M1 code = that - (126 << 1)
E2M1_CODE_OFFSET = tl.constexpr((F32_BIAS - E2M1.bias) << E2M1.man_bits)  # 252
E2M1_MIN_NORMAL = tl.constexpr(math.ldexp(1.0, 1 - E2M1.bias))          # 1.0
E2M1_SUB_INV = tl.constexpr(1.0 / E2M1.min_subnormal)                   # 2.0: |y| * 2 is the code below 2
E2M1_SMALL_MAX = tl.constexpr(2.0 * E2M1_MIN_NORMAL.value)              # 2.0: the fixed step of 0.5 ends here
RNE_MAGIC_BITS = tl.constexpr(struct.unpack("<i", struct.pack("<f", float(1 << F32_MAN_BITS)))[0])  # 0x4B000000
# decode: code bits << 22 read as float32 is the E2M1 value times 2**(E2M1.bias - 127) (code 1 is
# the float32 subnormal 2**-127); one multiply by 2**(127 - E2M1.bias) restores it exactly
E2M1_DECODE_SCALE = tl.constexpr(math.ldexp(1.0, F32_BIAS - E2M1.bias))   # 2**126
# encode, the same alignment backwards: |y| * 2**-126 puts E2M1's smallest normal (1.0) on
# float32's (2**-126), so E2M1's subnormals (step 0.5) are float32 subnormals (a fixed step too)
# and one rounding of the bits at bit 22 gives every code; exact when |y| has few significant bits
E2M1_ENCODE_SCALE = tl.constexpr(math.ldexp(1.0, E2M1.bias - F32_BIAS))   # 2**-126
