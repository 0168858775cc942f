"""Triton bodies of the FP4 quantize, store and dequantize kernels (no argument checks here).

Every rule is the oracle's ([`nvfp4_kvcache.recipes`][nvfp4_kvcache.recipes]), restated with integer and float32
arithmetic that gives the same bits on a GPU and under `TRITON_INTERPRET=1`:

* no float -> fp8 casts (the interpreter rounds them wrongly): E4M3 scales and E2M1 codes are
  rounded by integer arithmetic on the float32 bits; bf16 outputs likewise under the interpreter
  (`HW_CAST=False`), by the hardware's `cvt.rn.bf16` on the GPU;
* bf16 inputs are read as raw 32-bit words (two elements) and widened by shifts (the interpreter
  flushes bf16 subnormals to zero);
* divisions that the oracle does in IEEE arithmetic use `tl.math.div_rn` (`/` is approximate
  on the GPU);
* `ceil(log2(.))` of fp4_mx_block16 is computed exactly from the float bits (see
  `_block16_exponent`), never with a floating-point logarithm.

Tile: a program owns `TOK` rows of `ROW` elements (`ROWP` = `ROW` rounded up to a power of
two, the rest masked). Elements are handled as (even, odd) pairs, the two nibbles of one packed
byte, and the packed byte is `code_even | code_odd << 4`. Both lay a tile out as
`[TOK, NB, BS // 2]` pairs (`NB` blocks per row).
"""

from __future__ import annotations

import triton
import triton.language as tl

from nvfp4_kvcache_triton._triton.constants import (
    B16_BIAS,
    B16_FLOOR,
    B16_INF_BYTE,
    B16_NAN_BYTE,
    BF16_QNAN,
    E2M1_MAXV,
    E2M1_SIGN,
    E4M3_DROP,
    E4M3_EXP_MASK,
    E4M3_HALF_M1,
    E4M3_KEEP_MASK,
    E4M3_MAN,
    E4M3_MAN_MASK,
    E4M3_MAXV,
    E4M3_MIN_NORMAL,
    E4M3_NAN_MAG,
    E4M3_REBIAS,
    E4M3_SIGN,
    E4M3_SUB_INV,
    E4M3_SUB_STEP,
    E8M0_BIAS,
    E8M0_MAX_EXP,
    E8M0_MIN_EXP,
    E8M0_NAN,
    F32_INF_BITS,
    F32_QNAN_BITS,
    F32_TWO_M127_BITS,
    LN2,
    MID0,
    MID1,
    MX_EMAX,
    NVFP4_NAN_BYTE,
    R_BLOCK16,
    R_MXFP4,
    R_MXFP4_RCEIL,
    R_NVFP4_4OVER6,
    CANDIDATE_RATIO_46,
    F32_SIGN_BITS,
    F32_TINY,
    R_NVFP4,
    RCEIL_CLIP_MAN,
    RCEIL_INF_BYTE,
    RCP_E2M1_MAX,
    S_E4M3,
    S_E8M0,
    RNE_MAGIC,
    RNE_MAGIC_BITS,
    E2M1_DROP,
    E2M1_HALF,
    E2M1_HALF_M1,
    E2M1_KEEP,
    E2M1_CODE_OFFSET,
    E2M1_MIN_NORMAL,
    E2M1_SUB_INV,
    E2M1_DECODE_SCALE,
    E2M1_ENCODE_SCALE,
    E2M1_SMALL_MAX,
    E2M1_MAG_MASK,
)

# output kinds (constexpr OUT_KIND) and input kinds (IN_KIND)
OUT_F32: tl.constexpr = tl.constexpr(0)
OUT_BF16: tl.constexpr = tl.constexpr(1)
OUT_F16: tl.constexpr = tl.constexpr(2)
OUT_F64: tl.constexpr = tl.constexpr(3)
IN_F32: tl.constexpr = tl.constexpr(0)
IN_BF16: tl.constexpr = tl.constexpr(1)   # read as int32 words, two bf16 each
IN_F16: tl.constexpr = tl.constexpr(2)    # read as int32 words, two fp16 each


# ---------------------------------------------------------------------------------------------
# element helpers
# ---------------------------------------------------------------------------------------------
@triton.jit
def e2m1_magnitude(m, TIES_AWAY: tl.constexpr):
    """`|y|` (float32, >= 0, not NaN) -> E2M1 magnitude code 0..7 (int32), saturating at 6.

    `|y| >= 1` (E2M1 normals): round the float32 mantissa to E2M1's one bit by integer
    arithmetic on the bits (add half an ulp, plus the kept lsb for ties-to-even; a carry rolls
    into the exponent), then `bits >> 22` is `exponent << 1 | mantissa` and the code is that
    minus `126 << 1` (`normal`). `|y| < 2` (a fixed step of 0.5): ties-to-even is
    `2|y| + 2**23` rounded by the float32 FMA (`small`, from `min(|y|, 2)`, so at most 4);
    ties-away counts the two midpoints 0.25 and 0.75 below 1. Ties-to-even needs no select:
    below 1 `normal` rounds on a coarser grid at a lower exponent and is at most `small`, from 1
    to 2 the two agree, above 2 `small` is 4 and `normal` at least 4, so the code is
    `max(small, normal)`.
    """
    m = tl.minimum(m, E2M1_MAXV)
    b = m.to(tl.int32, bitcast=True)
    if TIES_AWAY:
        r = (b + E2M1_HALF) >> E2M1_DROP
        small = (m >= MID0).to(tl.int32) + (m >= MID1).to(tl.int32)
        return tl.where(m >= E2M1_MIN_NORMAL, r - E2M1_CODE_OFFSET, small)
    else:
        normal = ((b + (E2M1_HALF_M1 - (E2M1_CODE_OFFSET << E2M1_DROP)) + ((b >> E2M1_DROP) & 1)) >> E2M1_DROP)
        small = (tl.minimum(m, E2M1_SMALL_MAX) * E2M1_SUB_INV + RNE_MAGIC).to(tl.int32, bitcast=True) - RNE_MAGIC_BITS
        return tl.maximum(small, normal)


@triton.jit
def e2m1_magnitude_short(a, TIES_AWAY: tl.constexpr):
    """`|y|` (float32, >= 0, maybe +inf) with at most 11 significant bits -> E2M1 magnitude code 0..7.

    `a * 2**-126` lines E2M1 up with float32 (see `E2M1_ENCODE_SCALE`): E2M1 normals become
    float32 normals of the same exponent step, E2M1 subnormals float32 subnormals. Rounding the
    bits at bit 22 (add half, plus the kept lsb for ties-to-even) then gives every code, the
    carry into the next exponent included, as `bits >> 22`; codes past 7 (|y| >= 7, inf)
    saturate. No select between a normal and a subnormal path.

    Exact when the multiply is: `a` of at most 11 significant bits (the exact `x * 2**-e` of a
    bf16 or fp16 `x`) keeps its bits down to `2**-23` whenever `a >= 2**-12`; a smaller `a`
    gives code 0 however the multiply rounds.
    """
    b = (a * E2M1_ENCODE_SCALE).to(tl.int32, bitcast=True)
    if TIES_AWAY:
        r = b + E2M1_HALF
    else:
        r = b + E2M1_HALF_M1 + ((b >> E2M1_DROP) & 1)
    return tl.minimum(r >> E2M1_DROP, E2M1_MAG_MASK)


@triton.jit
def e2m1_decode(c):
    """E2M1 code (int32, low 4 bits used) -> float32 value, `-0.0` for code 8.

    `(c & 7) << 22` read as float32 is the E2M1 magnitude times 2**-126 (the exponent and
    mantissa fields line up; code 1 lands on the float32 subnormal 2**-127); the sign bit goes to
    bit 31, and one exact multiply by 2**126 restores the value. Needs float32 subnormals (the
    kernels are compiled without flush-to-zero; `scripts/compile_sm90.py` checks the PTX).
    """
    bits = ((c & E2M1_MAG_MASK) << E2M1_DROP) | ((c & E2M1_SIGN) << 28)
    return bits.to(tl.float32, bitcast=True) * E2M1_DECODE_SCALE


@triton.jit
def e4m3_encode(s):
    """float32 `s` (>= 0, maybe +inf, not NaN) -> (E4M3 byte as int32, its float32 value): RNE, saturating at 448.

    Normal range (`s >= 2**-6`): round the float32 mantissa to 3 bits by integer arithmetic
    (add `0x7FFFF` plus the lowest kept bit, clear the dropped bits; a carry rolls into the
    exponent by itself). Subnormal range: `s * 512` rounded to an integer (`+ 2**23 - 2**23`,
    ties to even); 8 is the smallest normal 2**-6, whose byte is also 8.
    """
    s = tl.minimum(s, E4M3_MAXV)
    b = s.to(tl.int32, bitcast=True)
    rb = (b + E4M3_HALF_M1 + ((b >> E4M3_DROP) & 1)) & E4M3_KEEP_MASK
    nbyte = (((rb >> 23) - E4M3_REBIAS) << E4M3_MAN) | ((rb >> E4M3_DROP) & E4M3_MAN_MASK)
    t = (s * E4M3_SUB_INV + RNE_MAGIC) - RNE_MAGIC
    normal = s >= E4M3_MIN_NORMAL
    byte = tl.where(normal, nbyte, t.to(tl.int32))
    val = tl.where(normal, rb.to(tl.float32, bitcast=True), t * E4M3_SUB_STEP)
    return byte, val


@triton.jit
def e4m3_decode(sb):
    """E4M3 byte (any int) -> float32 value (NaN for 0x7F/0xFF, negative for bytes >= 0x80)."""
    b = sb.to(tl.int32) & 0xFF
    e = (b >> E4M3_MAN) & E4M3_EXP_MASK
    m = b & E4M3_MAN_MASK
    normal = ((e + E4M3_REBIAS) << 23) | (m << E4M3_DROP)
    sub = (m.to(tl.float32) * E4M3_SUB_STEP).to(tl.int32, bitcast=True)
    v = tl.where(e > 0, normal, sub)
    v = tl.where((b & E4M3_NAN_MAG) == E4M3_NAN_MAG, F32_QNAN_BITS, v)
    return (v | ((b & E4M3_SIGN) << 24)).to(tl.float32, bitcast=True)


@triton.jit
def pow2_byte_decode(sb, BYTE255_NAN: tl.constexpr):
    """Byte `b` -> `2**(b - 127)` (float32; byte 0 is the subnormal 2**-127). Byte 255 is +inf
    (fp4_mx_block16) or NaN (E8M0, when `BYTE255_NAN`)."""
    b = sb.to(tl.int32) & 0xFF
    bits = tl.where(b > 0, b << 23, F32_TWO_M127_BITS)
    if BYTE255_NAN:
        bits = tl.where(b == 255, F32_QNAN_BITS, bits)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _block16_exponent(ratio):
    """`ceil(fl32(log2(ratio)))` for positive normal float32 `ratio`, exactly, from its bits.

    With `ratio = 2**k * (1 + M * 2**-23)`: `M == 0` gives `k`. Otherwise
    `log2 = k + d`, `0 < d < 1`, and the ceiling is `k + 1` unless float32 rounds
    `k + d` back to `k`: that happens when `d` is under half an ulp at `k`, i.e. when
    `2 * M < ln2 * 2**j` with `2**j` the largest power of two <= `n`, `n = k` for `k > 0`
    and `n = -k - 1` for `k < 0` (below a power of two the ulp halves). `k = 0` or `-1`:
    never. Example: `16 * (1 + 2**-23)` gives 4, `2**-4 * (1 + 2**-23)` gives -3.
    """
    rb = ratio.to(tl.int32, bitcast=True)
    k = (rb >> 23) - 127
    man = rb & 0x7FFFFF
    n = tl.maximum(tl.where(k > 0, k, -k - 1), 0)
    p2 = (n.to(tl.float32).to(tl.int32, bitcast=True) & 0x7F800000).to(tl.float32, bitcast=True)
    keep = (man == 0) | ((2 * man).to(tl.float32) < LN2 * p2)
    return k + tl.where(keep, 0, 1)


@triton.jit
def block_scale(amax, has_nan, g_ptr, RECIPE: tl.constexpr):
    """Per block: amax (float32, NaN blocks flagged) -> (scale byte, element multiplier, byte mask).

    The multiplier is what an element is multiplied by before E2M1 rounding: `fl(1/fl(sf*g))`
    (nvfp4), `2**-e` (fp4_mx_block16), `2**-shared` (mxfp4); the last two are exact.
    The byte mask (int32, 0..0xFF) keeps the bits of a packed byte (two codes) that the oracle
    does not force to 0: `0xFF`, or 0 for a block whose codes are all 0 (NaN, or fp4_mx_block16's
    infinite block); nvfp4 also has `0x88` (signs only) for a block whose multiplier is 0
    (`sf * g` overflowed, so `y = x * 0`, NaN for an infinite `x`; the oracle keeps the signs).
    Masking a pair's byte (one `LOP3`) replaces a per-element NaN test and select, and makes
    whatever a NaN `y` would give irrelevant.
    """
    amax = tl.where(has_nan, 0.0, amax)
    if RECIPE == R_NVFP4:
        g = tl.load(g_ptr)
        rcp_g = tl.math.div_rn(1.0, g)
        s = (amax * RCP_E2M1_MAX) * rcp_g
        sbyte, sf = e4m3_encode(s)
        den = tl.where(sf != 0.0, sf * g, 1.0)
        mult = tl.where(sf != 0.0, tl.math.div_rn(1.0, den), 0.0)
        sbyte = tl.where(has_nan, NVFP4_NAN_BYTE, sbyte)
        bmask = tl.where(has_nan, 0, tl.where(mult == 0.0, 0x88, 0xFF))
    elif RECIPE == R_BLOCK16:
        ratio = tl.maximum(tl.math.div_rn(amax, E2M1_MAXV), B16_FLOOR)
        is_inf = ratio.to(tl.int32, bitcast=True) == F32_INF_BITS
        ok = (~has_nan) & (~is_inf)
        e = _block16_exponent(tl.where(ok, ratio, 1.0))
        sbyte = tl.where(has_nan, B16_NAN_BYTE, tl.where(is_inf, B16_INF_BYTE, e + B16_BIAS))
        mult = ((127 - e) << 23).to(tl.float32, bitcast=True)  # 2**-e, exact: e in [-33, 126]
        bmask = tl.where(ok, 0xFF, 0)
    elif RECIPE == R_MXFP4_RCEIL:
        # exact ceil(log2(amax / 6)): the mxfp4 exponent of a normal amax, plus one when its
        # mantissa exceeds 6's; subnormal and zero amax clamp to -127; inf -> byte 0xFE (2**127)
        abits = amax.to(tl.int32, bitcast=True)
        is_inf = (~has_nan) & (abits == F32_INF_BITS)
        ef = abits >> 23
        e = ef - 127 - MX_EMAX + ((abits & 0x7FFFFF) > RCEIL_CLIP_MAN).to(tl.int32)
        shared = tl.minimum(tl.maximum(tl.where(ef > 0, e, E8M0_MIN_EXP), E8M0_MIN_EXP), E8M0_MAX_EXP)
        sbyte = tl.where(has_nan, E8M0_NAN, tl.where(is_inf, RCEIL_INF_BYTE, shared + E8M0_BIAS))
        # 2**-shared, exact; an infinite block's 2**-127 is the float32 subnormal (bits 1 << 22)
        mult = tl.where(is_inf, F32_TWO_M127_BITS, (127 - shared) << 23).to(tl.float32, bitcast=True)
        bmask = tl.where(has_nan, 0, 0xFF)
    else:
        tl.static_assert(RECIPE == R_MXFP4)
        abits = amax.to(tl.int32, bitcast=True)
        ok = (~has_nan) & (abits < F32_INF_BITS)
        abits = tl.where(ok, abits, 0)
        ef = abits >> 23
        man = abits & 0x7FFFFF
        k_sub = ((man.to(tl.float32).to(tl.int32, bitcast=True) >> 23) - 127) - 149
        k = tl.where(ef > 0, ef - 127, k_sub)  # floor(log2(amax)), exact, subnormals included
        shared = tl.minimum(tl.maximum(k - MX_EMAX, E8M0_MIN_EXP), E8M0_MAX_EXP)
        shared = tl.where(abits > 0, shared, E8M0_MIN_EXP)
        sbyte = tl.where(ok, shared + E8M0_BIAS, E8M0_NAN)
        mult = ((127 - shared) << 23).to(tl.float32, bitcast=True)  # 2**-shared, exact
        bmask = tl.where(ok, 0xFF, 0)
    return sbyte, mult, bmask


@triton.jit
def encode_elements(x, mult, RECIPE: tl.constexpr, SHORT: tl.constexpr):
    """float32 elements -> E2M1 codes (int32, 0..15) before the block's byte mask (see `block_scale`);
    `mult` broadcasts to `x`.

    The sign is that of `x` (`-0.0` included), except for fp4_mx_block16, which follows the
    oracle's `scaled < 0` (`-0.0` gives +0). A NaN `y` (masked off later) gives any code.
    `SHORT`: `y` has at most 11 significant bits (a power-of-two `mult` and a 16-bit input), so
    `e2m1_magnitude_short` is exact.
    """
    y = x * mult
    if RECIPE == R_BLOCK16:
        sign = tl.where(y < 0.0, E2M1_SIGN, 0)
    else:
        sign = (x.to(tl.int32, bitcast=True) >> 28) & E2M1_SIGN
    if SHORT:
        mag = e2m1_magnitude_short(tl.abs(y), RECIPE == R_BLOCK16)
    else:
        mag = e2m1_magnitude(tl.abs(y), RECIPE == R_BLOCK16)
    return sign | mag


# ---------------------------------------------------------------------------------------------
# nvfp4_4over6: the block-scale search of FlashInfer's paged writer (see the oracle's docstring)
# ---------------------------------------------------------------------------------------------
@triton.jit
def _ftz(v):
    """A float32 subnormal -> a zero of its sign (what the fast-math build's `.ftz` does)."""
    sign = (v.to(tl.int32, bitcast=True) & F32_SIGN_BITS).to(tl.float32, bitcast=True)
    return tl.where(tl.abs(v) < F32_TINY, sign, v)


@triton.jit
def _fma(a, b, c, HW_FMA: tl.constexpr):
    """`fl(a * b + c)` with one rounding: the GPU's `fma.rn.f32`, or (`HW_FMA=False`, the
    interpreter, whose `tl.fma` rounds twice) the oracle's float64 TwoSum rounded to odd."""
    if HW_FMA:
        return tl.fma(a, b, c)
    else:
        p = a.to(tl.float64) * b.to(tl.float64)
        c64 = c.to(tl.float64)
        s = p + c64
        bp = s - p
        err = (p - (s - bp)) + (c64 - bp)
        bits = s.to(tl.int64, bitcast=True)
        fix = (err != 0.0) & ((bits & 1) == 0)
        away = (err > 0.0) == (s > 0.0)
        bits = tl.where(fix, tl.where(away, bits + 1, bits - 1), bits)
        return bits.to(tl.float64, bitcast=True).to(tl.float32)


@triton.jit
def _columns8(t, T: tl.constexpr, N: tl.constexpr):
    """`[T, N, 8]` -> its 8 columns `[T, N]`, in order."""
    e, o = tl.split(tl.reshape(t, (T, N, 4, 2)))
    e0, e1 = tl.split(tl.reshape(e, (T, N, 2, 2)))
    o0, o1 = tl.split(tl.reshape(o, (T, N, 2, 2)))
    c0, c4 = tl.split(e0)
    c2, c6 = tl.split(e1)
    c1, c5 = tl.split(o0)
    c3, c7 = tl.split(o1)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _acc(err, d, HW_FMA: tl.constexpr):
    return _ftz(_fma(d, d, err, HW_FMA))


@triton.jit
def _squared_error(lo, hi, sf, g, T: tl.constexpr, N: tl.constexpr, HW_FMA: tl.constexpr):
    """The candidate's error, element by element in block order (`lo[j]` is element `2j`)."""
    r = tl.math.div_rn(1.0, _ftz(sf * g))[:, :, None]
    s3 = sf[:, :, None]
    y_lo = lo * r
    y_hi = hi * r
    v_lo = e2m1_decode(e2m1_magnitude(tl.where(y_lo != y_lo, 0.0, tl.abs(y_lo)), False)) * s3
    v_hi = e2m1_decode(e2m1_magnitude(tl.where(y_hi != y_hi, 0.0, tl.abs(y_hi)), False)) * s3
    g3 = g + tl.zeros_like(lo)
    d_lo = _ftz(_fma(v_lo, g3, -tl.abs(lo), HW_FMA))
    d_hi = _ftz(_fma(v_hi, g3, -tl.abs(hi), HW_FMA))
    l0, l1, l2, l3, l4, l5, l6, l7 = _columns8(d_lo, T, N)
    h0, h1, h2, h3, h4, h5, h6, h7 = _columns8(d_hi, T, N)
    err = _ftz(l0 * l0)
    err = _acc(err, h0, HW_FMA)
    err = _acc(_acc(err, l1, HW_FMA), h1, HW_FMA)
    err = _acc(_acc(err, l2, HW_FMA), h2, HW_FMA)
    err = _acc(_acc(err, l3, HW_FMA), h3, HW_FMA)
    err = _acc(_acc(err, l4, HW_FMA), h4, HW_FMA)
    err = _acc(_acc(err, l5, HW_FMA), h5, HW_FMA)
    err = _acc(_acc(err, l6, HW_FMA), h6, HW_FMA)
    err = _acc(_acc(err, l7, HW_FMA), h7, HW_FMA)
    return err


@triton.jit
def _e4m3_or_nan(s):
    """`e4m3_encode` that maps a NaN `s` to the NaN byte (and value)."""
    byte, val = e4m3_encode(tl.where(s != s, 0.0, s))
    return tl.where(s != s, E4M3_NAN_MAG, byte), tl.where(s != s, s, val)


@triton.jit
def block_scale_4over6(lo, hi, g_ptr, T: tl.constexpr, N: tl.constexpr, HW_FMA: tl.constexpr):
    """Flushed element pairs `[T, N, 8]` -> (E4M3 byte `[T, N]`, element multiplier `[T, N]`)."""
    g = tl.load(g_ptr)
    amax = tl.max(tl.maximum(tl.where(lo != lo, 0.0, tl.abs(lo)), tl.where(hi != hi, 0.0, tl.abs(hi))), axis=2)
    s = amax * tl.math.div_rn(1.0, _ftz(g * E2M1_MAXV))
    b6, sf6 = _e4m3_or_nan(s)
    b4, sf4 = _e4m3_or_nan(_ftz(s * CANDIDATE_RATIO_46))
    use4 = _squared_error(lo, hi, sf4, g, T, N, HW_FMA) < _squared_error(lo, hi, sf6, g, T, N, HW_FMA)
    sbyte = tl.where(use4, b4, b6)
    sf = tl.where(use4, sf4, sf6)
    mult = tl.where((amax > 0.0) & (sf > 0.0), tl.math.div_rn(1.0, _ftz(sf * g)), 0.0)
    return sbyte, mult


@triton.jit
def encode_elements_4over6(x, mult):
    """`y = x * mult`: a NaN `y` gives code 0, else the sign of `y` and E2M1 RNE, saturating."""
    y = x * mult
    sign = (y.to(tl.int32, bitcast=True) >> 28) & E2M1_SIGN
    return tl.where(y != y, 0, sign | e2m1_magnitude(tl.abs(y), False))


# ---------------------------------------------------------------------------------------------
# tiles
# ---------------------------------------------------------------------------------------------
@triton.jit
def _max_nan(a, b):
    """max that propagates NaN (`max.NaN.f32`); plain `tl.maximum` drops NaN on the GPU."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _load_pairs(ptr, rows, x_stride, n_rows, IN_KIND: tl.constexpr, ROW: tl.constexpr, ROWP: tl.constexpr,
                TOK: tl.constexpr):
    """Rows `[TOK, ROWP]` of the input as (even, odd) float32 element pairs, each `[TOK, ROWP // 2]`."""
    rmask = rows < n_rows
    if IN_KIND == IN_F32:
        cols = tl.arange(0, ROWP)
        x = tl.load(ptr + rows.to(tl.int64)[:, None] * x_stride + cols[None, :],
                    mask=rmask[:, None] & (cols < ROW)[None, :], other=0.0)
        lo, hi = tl.split(tl.reshape(x, (TOK, ROWP // 2, 2)))
    else:  # one int32 word holds elements 2i (low half) and 2i+1 (high half); x_stride in words
        wc = tl.arange(0, ROWP // 2)
        w = tl.load(ptr + rows.to(tl.int64)[:, None] * x_stride + wc[None, :],
                    mask=rmask[:, None] & (wc < ROW // 2)[None, :], other=0)
        if IN_KIND == IN_BF16:  # bf16 -> f32 is a shift: exact, subnormals kept
            lo = (w << 16).to(tl.float32, bitcast=True)
            hi = (w & -65536).to(tl.float32, bitcast=True)
        else:
            lo = (w & 0xFFFF).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)
            hi = ((w >> 16) & 0xFFFF).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)
    return lo, hi


@triton.jit
def _quantize_tile(x_ptr, x_stride, q_ptr, q_stride, s_ptr, s_stride, g_ptr, loc_ptr, n_rows, pid,
                   RECIPE: tl.constexpr, BS: tl.constexpr, ROW: tl.constexpr, ROWP: tl.constexpr,
                   TOK: tl.constexpr, IN_KIND: tl.constexpr, HAS_LOC: tl.constexpr, HW_FMA: tl.constexpr):
    NB: tl.constexpr = ROWP // BS
    HB: tl.constexpr = BS // 2
    rows = pid * TOK + tl.arange(0, TOK)
    rmask = rows < n_rows
    lo, hi = _load_pairs(x_ptr, rows, x_stride, n_rows, IN_KIND, ROW, ROWP, TOK)
    lo = tl.reshape(lo, (TOK, NB, HB))
    hi = tl.reshape(hi, (TOK, NB, HB))
    if RECIPE == R_NVFP4_4OVER6:
        tl.static_assert(HB == 8)
        lo = _ftz(lo)
        hi = _ftz(hi)
        sbyte, mult = block_scale_4over6(lo, hi, g_ptr, TOK, NB, HW_FMA)
        c_lo = encode_elements_4over6(lo, mult[:, :, None])
        c_hi = encode_elements_4over6(hi, mult[:, :, None]) << 4
    else:
        amax = tl.reduce(_max_nan(tl.abs(lo), tl.abs(hi)), 2, _max_nan)  # NaN if the block holds one
        has_nan = amax != amax
        sbyte, mult, bmask = block_scale(amax, has_nan, g_ptr, RECIPE)
        mult = mult[:, :, None]
        # power-of-two multipliers on 16-bit inputs: y = x * 2**-e is exact and short
        SHORT: tl.constexpr = (RECIPE != R_NVFP4) and (IN_KIND != IN_F32)
        c_lo = encode_elements(lo, mult, RECIPE, SHORT)
        c_hi = encode_elements(hi, mult, RECIPE, SHORT) << 4
        c_lo = (c_lo | c_hi) & bmask[:, :, None]  # the byte mask, on both codes of a pair at once
        c_hi = 0
    packed = tl.reshape(c_lo | c_hi, (TOK, ROWP // 2)).to(tl.uint8)  # element 2i in the low nibble
    if HAS_LOC:
        slots = tl.load(loc_ptr + rows, mask=rmask, other=0).to(tl.int64)
    else:
        slots = rows.to(tl.int64)
    qc = tl.arange(0, ROWP // 2)
    tl.store(q_ptr + slots[:, None] * q_stride + qc[None, :], packed,
             mask=rmask[:, None] & (qc < ROW // 2)[None, :])
    bc = tl.arange(0, NB)
    tl.store(s_ptr + slots[:, None] * s_stride + bc[None, :], sbyte.to(tl.uint8),
             mask=rmask[:, None] & (bc < ROW // BS)[None, :])


@triton.jit
def quantize_kernel(x0, xs0, q0, qs0, s0, ss0, g0,
                    x1, xs1, q1, qs1, s1, ss1, g1,
                    loc_ptr, n_rows,
                    RECIPE: tl.constexpr, BS: tl.constexpr, ROW: tl.constexpr, ROWP: tl.constexpr,
                    TOK: tl.constexpr, IN_KIND: tl.constexpr, HAS_LOC: tl.constexpr, HW_FMA: tl.constexpr = True):
    """Quantize rows of `x` into `q` (packed) and `s` (scale bytes), row `r` going to slot
    `loc[r]` (or `r`). Grid `(cdiv(n_rows, TOK), n)`: axis 1 picks tensor 0 (K) or 1 (V)."""
    pid = tl.program_id(0)
    if tl.program_id(1) == 0:
        _quantize_tile(x0, xs0, q0, qs0, s0, ss0, g0, loc_ptr, n_rows, pid,
                       RECIPE, BS, ROW, ROWP, TOK, IN_KIND, HAS_LOC, HW_FMA)
    else:
        _quantize_tile(x1, xs1, q1, qs1, s1, ss1, g1, loc_ptr, n_rows, pid,
                       RECIPE, BS, ROW, ROWP, TOK, IN_KIND, HAS_LOC, HW_FMA)


@triton.jit
def _to_bf16_bits(v, HW_CAST: tl.constexpr):
    """float32 -> bf16 bit pattern (int32, low 16 bits), round to nearest even."""
    if HW_CAST:  # GPU: cvt.rn.bf16 (the interpreter would truncate)
        r = v.to(tl.bfloat16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    else:
        u = v.to(tl.int32, bitcast=True)
        r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
        r = tl.where(v != v, BF16_QNAN, r)
    return r


@triton.jit
def dequantize_kernel(q_ptr, q_stride, s_ptr, s_stride, g_ptr, loc_ptr, o_ptr, n_rows,
                      SCALE: tl.constexpr, BS: tl.constexpr, ROW: tl.constexpr, ROWP: tl.constexpr,
                      TOK: tl.constexpr, OUT_KIND: tl.constexpr, HAS_LOC: tl.constexpr,
                      HW_CAST: tl.constexpr):
    """Decode rows (slot `loc[r]`, or `r`) of packed codes + scale bytes into row `r` of `o`.

    Decoding depends on the recipe's scale format only (`SCALE`, see `constants.scale_id`):
    `S_E4M3` is `fl(E2M1 * sf) * g`, the power-of-two bytes are `E2M1 * 2**(b - 127)`.

    Each packed byte is decoded as a pair (low nibble = element 2i, high = 2i+1). 16-bit outputs
    are written as int32 words holding both elements of a pair, so no interleave is needed.
    """
    NB: tl.constexpr = ROWP // BS
    HB: tl.constexpr = BS // 2
    pid = tl.program_id(0)
    rows = pid * TOK + tl.arange(0, TOK)
    rmask = rows < n_rows
    if HAS_LOC:
        slots = tl.load(loc_ptr + rows, mask=rmask, other=0).to(tl.int64)
    else:
        slots = rows.to(tl.int64)
    qc = tl.arange(0, ROWP // 2)
    pmask = rmask[:, None] & (qc < ROW // 2)[None, :]
    p = tl.load(q_ptr + slots[:, None] * q_stride + qc[None, :], mask=pmask, other=0).to(tl.int32)
    bc = tl.arange(0, NB)
    sb = tl.load(s_ptr + slots[:, None] * s_stride + bc[None, :],
                 mask=rmask[:, None] & (bc < ROW // BS)[None, :], other=0)
    p3 = tl.reshape(p, (TOK, NB, HB))
    v_lo = e2m1_decode(p3)
    v_hi = e2m1_decode(p3 >> 4)
    if SCALE == S_E4M3:
        sf = e4m3_decode(sb)[:, :, None]
        g = tl.load(g_ptr)
        v_lo = (v_lo * sf) * g
        v_hi = (v_hi * sf) * g
    else:
        scale = pow2_byte_decode(sb, SCALE == S_E8M0)[:, :, None]
        v_lo = v_lo * scale
        v_hi = v_hi * scale
    v_lo = tl.reshape(v_lo, (TOK, ROWP // 2))
    v_hi = tl.reshape(v_hi, (TOK, ROWP // 2))
    rows64 = rows.to(tl.int64)
    if OUT_KIND == OUT_BF16 or OUT_KIND == OUT_F16:  # o_ptr is int32 words: (odd << 16) | even
        if OUT_KIND == OUT_BF16:
            if SCALE == S_E4M3:
                b_lo = _to_bf16_bits(v_lo, HW_CAST)
                b_hi = _to_bf16_bits(v_hi, HW_CAST)
            else:  # E2M1 * 2**k has 2 significant bits: exact in bf16, so RNE = the top half
                b_lo = (v_lo.to(tl.int32, bitcast=True) >> 16) & 0xFFFF
                b_hi = v_hi.to(tl.int32, bitcast=True) & -65536
                b_hi = b_hi >> 16
        else:
            b_lo = v_lo.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
            b_hi = v_hi.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        tl.store(o_ptr + rows64[:, None] * (ROW // 2) + qc[None, :], b_lo | (b_hi << 16), mask=pmask)
    else:
        out = tl.interleave(v_lo, v_hi)
        cols = tl.arange(0, ROWP)
        offs = rows64[:, None] * ROW + cols[None, :]
        omask = rmask[:, None] & (cols < ROW)[None, :]
        if OUT_KIND == OUT_F64:
            tl.store(o_ptr + offs, out.to(tl.float64), mask=omask)
        else:
            tl.store(o_ptr + offs, out, mask=omask)
