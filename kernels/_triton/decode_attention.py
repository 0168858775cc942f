"""Triton bodies of the split-KV paged decode attention (no argument checks here; see
[`nvfp4_kvcache_triton.decode_attention`][nvfp4_kvcache_triton.decode_attention]).

Stage 1 (`decode_stage1`), grid `(batch, kv_heads, splits)`: one program takes **all**
`G = Hq / Hkv` query heads of one KV head (`BLOCK_H = max(16, G)` rows, the rest masked) over
one contiguous range of the request's tokens, so each K/V row of a KV head is read once per
decode step. It walks the range `BLOCK_N` tokens at a time: gather the slots from
`kv_indices`, load and decode the K tile in registers, `q . k`, online softmax (base 2), load
and decode the V tile, `p . v`. It writes the split's normalised partial output and its
log-sum-exp (base 2).

Stage 2 (`decode_stage2`), grid `(batch, q_heads)`: merges the splits by their LSE,
multiplies by the output scale (the V global scale and the power of two of the E2M1 placement)
and writes the output, un-permuting the FP4 even/odd layout.

KV formats (constexpr `KV_FMT`):

* `FMT_BF16`: `[slots, H, D]` bf16 rows, the honest baseline;
* `FMT_FP8`: `[slots, H, D]` `float8_e4m3fn`, one per-tensor K and V scale (folded into the
  softmax scale and the output, as SGLang does);
* `FMT_NVFP4` / `FMT_BLOCK16`: packed E2M1 bytes `[slots, H, D/2]` (element `2i` in the low
  nibble) plus one scale byte per 16 elements (E4M3 bits or a power-of-two byte).

FP4 is never interleaved: the low nibbles (even elements) and high nibbles (odd elements) stay two
`[BLOCK_N, D/2]` tiles; Q is loaded as its even and odd halves (`q . k = q_e . k_e + q_o . k_o`)
and the accumulator is kept as two halves, which stage 2 writes back to `2j` and `2j + 1`.

E2M1 decode by placing bits (`e2m1_to_f32_scaled`): `(c & 7) << 9 | (c & 8) << 12` read as
fp16 is the E2M1 value times `2**-14` exactly (code 1 is the fp16 subnormal `2**-15`). The
`2**-14` is not undone per element: it folds into the softmax scale (K) and the output scale (V).
This is `DECODE="placement"`, pure Triton. Two GPU-only decoders replace it by a PTX `prmt`
lookup table (`E2M1_PRMT_ASM`): `"prmt"` (then the same even/odd fp32 tiles) and
`"prmt_bf16"` (natural-order bf16 tiles, the block scale applied by a packed bf16 multiply; Q and
the output are then not permuted). `"cvt_f16"` (`E2M1_CVT_ASM`) places the
codes as E4M3 bytes, converts them with the hardware `cvt` to even/odd fp16 tiles of
`E2M1 * scale * 2**-6` and runs fp16 dots, Q scaled by a power of two into fp16 range
(`undo_decode_factor` undoes each decoder's power of two once). For power-of-two scales the
tile holds `E2M1 * 2**(b - ref) * 2**-6` relative to the step's largest scale byte `ref`
(`decode_block16_cvt`), whose power of two goes on the fp32 scores (K) and into the softmax
weights (V, `online_softmax_step_voff`).

Dots: on the GPU the tiles are cast to bf16 (fp16 for `cvt_f16`) for `tl.dot` (fp32
accumulation); a decoded FP4 value times its E4M3 or power-of-two scale is exact in bf16. Triton's
interpreter computes bf16 `tl.dot` wrongly, so under it (`INTERP=True`) the operands stay fp32, and
`cvt_f16` decodes with its pure-Triton twin instead of inline PTX.
"""

from __future__ import annotations

import math

import triton
import triton.language as tl

from nvfp4_kvcache_triton._triton.constants import B16_INF_BYTE
from nvfp4_kvcache_triton._triton.fp4 import e4m3_decode, pow2_byte_decode
from nvfp4_kvcache.formats import E2M1, E4M3
from nvfp4_kvcache.recipes import RECIPES
from nvfp4_kvcache.recipes.fp4_mx_block16 import BLOCK16_SCALE

# -- KV formats (constexpr switch) -----------------------------------------------------------
# An FP4 recipe's format is its block scale's decoder (E4M3, or the block-16 power-of-two byte),
# so every block-16 recipe with one of those scales is read by the same code.
_FP4_FMT_BY_SCALE: dict[str, int] = {E4M3.name: 2, BLOCK16_SCALE.name: 3}
FMT_IDS: dict[str, int] = {
    "bf16": 0,
    "fp8_e4m3": 1,
    **{r.name: _FP4_FMT_BY_SCALE[r.scale.name] for r in RECIPES.values()
       if r.block_size == 16 and r.scale.name in _FP4_FMT_BY_SCALE},
}
FMT_BF16 = tl.constexpr(FMT_IDS["bf16"])
FMT_FP8 = tl.constexpr(FMT_IDS["fp8_e4m3"])
FMT_NVFP4 = tl.constexpr(_FP4_FMT_BY_SCALE[E4M3.name])
FMT_BLOCK16 = tl.constexpr(_FP4_FMT_BY_SCALE[BLOCK16_SCALE.name])

# -- E2M1 -> fp16 by placing bits --------------------------------------------------------------
_F16_MAN_BITS, _F16_BIAS = 10, 15
_E2M1_F16_SHIFT = _F16_MAN_BITS - E2M1.man_bits                  # 9: E2M1's exp|man under fp16's
E2M1_F16_SHIFT = tl.constexpr(_E2M1_F16_SHIFT)
E2M1_F16_SIGN_SHIFT = tl.constexpr(15 - (E2M1.bits - 1))         # 12: bit 3 -> bit 15
E2M1_MAG = tl.constexpr(E2M1.magnitude_mask)                     # 0x7
E2M1_SGN = tl.constexpr(E2M1.sign_bit)                           # 0x8
PLACE_EXP = E2M1.bias - _F16_BIAS                                # -14
PLACEMENT_FACTOR: float = math.ldexp(1.0, PLACE_EXP)
"""`2**-14`: a placed code read as fp16 is the E2M1 value times this (exact, subnormals included)."""
UNDO_PLACEMENT = tl.constexpr(math.ldexp(1.0, -PLACE_EXP))       # 2**14, folded into the scales
LOG2E = tl.constexpr(math.log2(math.e))
PLACEMENT = tl.constexpr(PLACEMENT_FACTOR)

# -- E2M1 decoders (constexpr DECODE) -----------------------------------------------------------
DECODE_IDS: dict[str, int] = {"placement": 0, "prmt": 1, "prmt_bf16": 2, "cvt_f16": 3}
DEC_PLACEMENT = tl.constexpr(DECODE_IDS["placement"])
DEC_PRMT = tl.constexpr(DECODE_IDS["prmt"])           # lookup -> fp32 even/odd tiles (GPU only)
DEC_PRMT_BF16 = tl.constexpr(DECODE_IDS["prmt_bf16"])  # lookup -> natural-order bf16 tile, bf16 scale (GPU only)
DEC_CVT_F16 = tl.constexpr(DECODE_IDS["cvt_f16"])     # E2M1 -> E4M3 bits -> cvt f16x2, fp16 MMAs (nvfp4)
ABLATION_IDS: dict[str, int] = {"no_decode": 4}
"""Measurement-only decoders, not offered by [`nvfp4_kvcache_triton.decode_attention.decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4]
(their values are meaningless): `"no_decode"` is `cvt_f16` with the E2M1 work cut out of its
inline PTX (`BYTES_AS_F16_ASM`: the same bytes in, the same four fp16x2 words out, one
`prmt` each instead of 7 bit operations and 4 `cvt`; the same scale `cvt`, scale multiply
and fp16 dots), so that its time minus `cvt_f16`'s is what decoding costs
(`scripts/limits_decode_attention.py`)."""
DEC_NO_DECODE = tl.constexpr(ABLATION_IDS["no_decode"])

# GPU only (the interpreter has no inline asm): one 32-bit word of 4 packed bytes (8 codes) -> four
# bf16x2 words, word j = (code of byte j's low nibble) | (code of its high nibble) << 16. Two
# 8-entry byte tables (the bf16 high and low bytes of the magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6)
# are indexed by the magnitude nibbles through prmt; the signs come from a sign-replicating prmt
# and one lop3. 16 instructions per 8 codes. tests/test_decode_attention_kernel.py emulates prmt
# bit for bit and checks all 2**16 half-words against the E2M1 table.
_E2M1_PRMT_ASM = """
{
.reg .b32 s0, s1, h0, h1, l0, l1, w4, t;
and.b32 s0, $4, 0x7777;
shr.b32 s1, $4, 16;
and.b32 s1, s1, 0x7777;
prmt.b32 h0, 0x3F3F3F00, 0x40404040, s0;
prmt.b32 l0, 0xC0800000, 0xC0804000, s0;
prmt.b32 h1, 0x3F3F3F00, 0x40404040, s1;
prmt.b32 l1, 0xC0800000, 0xC0804000, s1;
shl.b32 w4, $4, 4;
prmt.b32 t, w4, $4, 0xD9C8;
lop3.b32 h0, h0, t, 0x80808080, 0xF8;
prmt.b32 t, w4, $4, 0xFBEA;
lop3.b32 h1, h1, t, 0x80808080, 0xF8;
prmt.b32 $0, l0, h0, 0x5140;
prmt.b32 $1, l0, h0, 0x7362;
prmt.b32 $2, l1, h1, 0x5140;
prmt.b32 $3, l1, h1, 0x7362;
}
"""
E2M1_PRMT_ASM = tl.constexpr(_E2M1_PRMT_ASM)

# GPU only (decode="cvt_f16"): one 32-bit word of 4 packed bytes (8 codes) -> the 4 even codes and
# the 4 odd codes as float16, E2M1 * 2**-6 exactly. An E2M1 code's magnitude bits (e1 e0 m0) moved
# to bits 4..2 of a byte, its sign to bit 7, *are* an E4M3 byte of value E2M1 * 2**-6 (exponent
# bias 7 against 1; the subnormal code 1 lands on the E4M3 subnormal 2**-7): 7 bit operations per
# 8 codes, then sm_89+'s packed `cvt.rn.f16x2.e4m3x2` (one instruction per 2 codes, exact).
# Outputs: $0, $1 = even codes (bytes 0,1 and 2,3); $2, $3 = odd codes.
_E2M1_CVT_ASM = """
{
.reg .b32 a, t, e, o;
.reg .b16 e0, e1, o0, o1;
shr.b32 a, $4, 2;
and.b32 t, $4, 0x80808080;
lop3.b32 o, a, 0x1C1C1C1C, t, 0xEA;
shl.b32 a, $4, 2;
shl.b32 t, $4, 4;
and.b32 t, t, 0x80808080;
lop3.b32 e, a, 0x1C1C1C1C, t, 0xEA;
mov.b32 {e0, e1}, e;
mov.b32 {o0, o1}, o;
cvt.rn.f16x2.e4m3x2 $0, e0;
cvt.rn.f16x2.e4m3x2 $1, e1;
cvt.rn.f16x2.e4m3x2 $2, o0;
cvt.rn.f16x2.e4m3x2 $3, o1;
}
"""
E2M1_CVT_ASM = tl.constexpr(_E2M1_CVT_ASM)
# GPU only, measurement only (ABLATION_IDS["no_decode"]): the same four outputs as E2M1_CVT_ASM
# from the same word, each one prmt moving two bytes into the low bytes of two fp16 halves (tiny
# subnormals, meaningless). One instruction per 2 codes: the least any byte -> fp16 pair can cost.
_BYTES_AS_F16_ASM = """
prmt.b32 $0, $4, 0, 0x7170;
prmt.b32 $1, $4, 0, 0x7372;
prmt.b32 $2, $4, 0, 0x7270;
prmt.b32 $3, $4, 0, 0x7371;
"""
BYTES_AS_F16_ASM = tl.constexpr(_BYTES_AS_F16_ASM)
CVT_EXP = -6
"""The cvt decoder's power of two: an E2M1 code placed as E4M3 reads as `E2M1 * 2**-6`."""
CVT_FACTOR = tl.constexpr(math.ldexp(1.0, CVT_EXP))
UNDO_CVT = tl.constexpr(math.ldexp(1.0, -CVT_EXP))   # 2**6, folded into the scales (decode="cvt_f16")
F16_Q_TOP = tl.constexpr(13)  # decode="cvt_f16": the fp16 query is q * 2**k, max|q| * 2**k in [2**13, 2**14)


@triton.jit
def e2m1_to_f32_scaled(c):
    """E2M1 codes (int32, low 4 bits used) -> float32 `E2M1[c] * 2**-14` (exact; `-0.0` for code 8).

    Three integer operations and one fp16 -> fp32 conversion per element.
    """
    h = ((c & E2M1_MAG) << E2M1_F16_SHIFT) | ((c & E2M1_SGN) << E2M1_F16_SIGN_SHIFT)
    return h.to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def fp4_block_scale(sb, KV_FMT: tl.constexpr):
    """Scale bytes (uint8) -> float32 block scale: E4M3 value (nvfp4) or `2**(b - 127)` (block16)."""
    if KV_FMT == FMT_NVFP4:
        return e4m3_decode(sb)
    else:
        return pow2_byte_decode(sb, False)


@triton.jit
def e2m1x2_to_bf16x2_prmt(p):
    """Packed bytes (uint8) -> uint32 bf16x2 words `E2M1[lo] | E2M1[hi] << 16` (exact values). GPU only."""
    return tl.inline_asm_elementwise(E2M1_PRMT_ASM, "=r,=r,=r,=r,r", [p], dtype=tl.uint32, is_pure=True, pack=4)


@triton.jit
def e2m1x2_to_f16_cvt(p):
    """Packed bytes (uint8) -> (even, odd) float16 `E2M1 * 2**-6` (exact) via E4M3 bits and `cvt`. GPU only."""
    return tl.inline_asm_elementwise(E2M1_CVT_ASM, "=r,=r,=r,=r,r", [p], dtype=(tl.float16, tl.float16),
                                     is_pure=True, pack=4)


@triton.jit
def e2m1x2_to_f16_twin(p):
    """Pure-Triton twin of `e2m1x2_to_f16_cvt` (same values; what the interpreter runs)."""
    c = p.to(tl.int32)
    return ((e2m1_to_f32_scaled(c) * (CVT_FACTOR / PLACEMENT)).to(tl.float16),
            (e2m1_to_f32_scaled(c >> 4) * (CVT_FACTOR / PLACEMENT)).to(tl.float16))


@triton.jit
def load_fp4_raw(data_ptr, scale_ptr, slots, tmask, d_stride, s_stride, D: tl.constexpr):
    """The packed bytes `uint8 [BLOCK_N, D/2]` and scale bytes `uint8 [BLOCK_N, D/16]` of
    `BLOCK_N` tokens of one KV head, undecoded (masked tokens load 0). `data_ptr` and
    `scale_ptr` point at the head's row of slot 0; rows are `d_stride` / `s_stride` apart."""
    D2: tl.constexpr = D // 2
    NB: tl.constexpr = D // 16
    cols = tl.arange(0, D2)
    pb = tl.load(data_ptr + slots[:, None] * d_stride + cols[None, :], mask=tmask[:, None], other=0)
    bcols = tl.arange(0, NB)
    sb = tl.load(scale_ptr + slots[:, None] * s_stride + bcols[None, :], mask=tmask[:, None], other=0)
    return pb, sb


@triton.jit
def load_fp4_rows(data_ptr, scale_ptr, drow, srow, tmask, D: tl.constexpr):
    """`load_fp4_raw` with the rows given as offsets (int64 `[BLOCK_N]`) from `data_ptr`
    and `scale_ptr` instead of slots and strides (any layout, e.g. page blocks)."""
    cols = tl.arange(0, D // 2)
    pb = tl.load(data_ptr + drow[:, None] + cols[None, :], mask=tmask[:, None], other=0)
    bcols = tl.arange(0, D // 16)
    sb = tl.load(scale_ptr + srow[:, None] + bcols[None, :], mask=tmask[:, None], other=0)
    return pb, sb


@triton.jit
def decode_fp4_even_odd(pb, sb, KV_FMT: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
                        DECODE: tl.constexpr = 0, INTERP: tl.constexpr = False):
    """Packed and scale bytes -> (even, odd) tiles `[BLOCK_N, D/2]` of `E2M1 * block_scale * 2**-14`
    (float32; `placement` and `prmt`) or of `E2M1 * block_scale * 2**-6` (float16, `cvt_f16`,
    nvfp4 only: such a product is a multiple of `2**-16` below 43 with at most 6 significant bits,
    exact in fp16; the E4M3 scale bytes go through the same hardware `cvt`). The nvfp4 global
    scale is *not* applied. Masked tokens (bytes 0) decode to 0.
    """
    D2: tl.constexpr = D // 2
    NB: tl.constexpr = D // 16
    if DECODE == DEC_NO_DECODE:  # measurement only: cvt_f16 with the E2M1 work cut out
        if INTERP:
            w = pb.to(tl.uint16)
            lo = w.to(tl.float16, bitcast=True)
            hi = (w << 4).to(tl.float16, bitcast=True)
            scale = e4m3_decode(sb).to(tl.float16)[:, :, None]
        else:
            lo, hi = tl.inline_asm_elementwise(BYTES_AS_F16_ASM, "=r,=r,=r,=r,r", [pb], dtype=(tl.float16, tl.float16),
                                               is_pure=True, pack=4)
            scale = sb.to(tl.float8e4nv, bitcast=True).to(tl.float16)[:, :, None]
    elif DECODE == DEC_CVT_F16:
        if INTERP:
            lo, hi = e2m1x2_to_f16_twin(pb)
            scale = e4m3_decode(sb).to(tl.float16)[:, :, None]
        else:
            lo, hi = e2m1x2_to_f16_cvt(pb)
            scale = sb.to(tl.float8e4nv, bitcast=True).to(tl.float16)[:, :, None]
    elif DECODE == DEC_PRMT:  # exact E2M1 values from the lookup; the 2**-14 goes on the block scale
        w = e2m1x2_to_bf16x2_prmt(pb)
        lo = (w << 16).to(tl.float32, bitcast=True)
        hi = (w & 0xFFFF0000).to(tl.float32, bitcast=True)
        scale = fp4_block_scale(sb, KV_FMT)[:, :, None] * PLACEMENT       # [BLOCK_N, NB, 1]
    else:
        scale = fp4_block_scale(sb, KV_FMT)[:, :, None]
        p = pb.to(tl.int32)
        lo = e2m1_to_f32_scaled(p)
        hi = e2m1_to_f32_scaled(p >> 4)
    ev = tl.reshape(lo, (BLOCK_N, NB, 8)) * scale
    od = tl.reshape(hi, (BLOCK_N, NB, 8)) * scale
    return tl.reshape(ev, (BLOCK_N, D2)), tl.reshape(od, (BLOCK_N, D2))


@triton.jit
def decode_fp4_bf16(pb, sb, KV_FMT: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr):
    """GPU only (`DECODE=prmt_bf16`): one natural-order bf16 tile `[BLOCK_N, D]` of
    `E2M1 * block_scale * 2**-14` (a tensor-core k-pair is one byte's two codes, so no even/odd
    split), the scale applied as a bf16 multiply (exact: at most 6 significant bits)."""
    NB: tl.constexpr = D // 16
    scale = (fp4_block_scale(sb, KV_FMT) * PLACEMENT).to(tl.bfloat16)[:, :, None]
    w = e2m1x2_to_bf16x2_prmt(pb)
    lo = (w & 0xFFFF).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    hi = (w >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    x = tl.reshape(tl.join(lo, hi), (BLOCK_N, NB, 16)) * scale
    return tl.reshape(x, (BLOCK_N, D))


@triton.jit
def block16_tile_ref(sb):
    """`decode="cvt_f16"` over power-of-two scales: the step's reference byte, the largest finite
    scale byte of the tile (int32 scalar from scale bytes `[BLOCK_N, D/16]`; 0 when none is).
    Its power of two `2**(ref - 127)` is taken out of the tile and applied in float32."""
    b = sb.to(tl.int32) & 0xFF
    return tl.max(tl.max(tl.where(b == B16_INF_BYTE, 0, b), 1), 0)


@triton.jit
def decode_block16_cvt(pb, sb, ref, D: tl.constexpr, BLOCK_N: tl.constexpr, INTERP: tl.constexpr = False):
    """`decode="cvt_f16"` over power-of-two scales: (even, odd) float16 tiles `[BLOCK_N, D/2]` of
    `E2M1 * 2**(b - ref) * 2**-6` for scale byte `b` and the step's reference byte `ref`
    (`block16_tile_ref`). The codes go through the same E4M3 placement and hardware `cvt` as
    nvfp4's (the pure-Triton twin under the interpreter); the relative scale `2**(b - ref) <= 1` is
    a float16 power of two, and the product is exact while `b - ref >= -17` (a block at most
    `2**17` below the largest of its step's tile). Further below, float16 keeps the multiples of `2**-24`:
    the error is at most `2**-19` times the tile's largest block scale, under `2**-21` of the
    largest value that block can hold. An infinite block (byte 255)
    gets scale `inf`, so its codes (all 0) decode to NaN, as the oracle's do."""
    NB: tl.constexpr = D // 16
    if INTERP:
        lo, hi = e2m1x2_to_f16_twin(pb)
    else:
        lo, hi = e2m1x2_to_f16_cvt(pb)
    b = sb.to(tl.int32) & 0xFF
    rel = tl.minimum(tl.maximum(b - ref, -126), 0)
    scale = tl.where(b == B16_INF_BYTE, float("inf"), _pow2(rel)).to(tl.float16)[:, :, None]
    ev = tl.reshape(lo, (BLOCK_N, NB, 8)) * scale
    od = tl.reshape(hi, (BLOCK_N, NB, 8)) * scale
    return tl.reshape(ev, (BLOCK_N, D // 2)), tl.reshape(od, (BLOCK_N, D // 2))


@triton.jit
def load_fp4_tile(data_ptr, scale_ptr, slots, tmask, d_stride, s_stride,
                  KV_FMT: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, DECODE: tl.constexpr = 0,
                  INTERP: tl.constexpr = False):
    """Load and decode `BLOCK_N` tokens of one KV head into (even, odd) tiles `[BLOCK_N, D/2]`
    (`load_fp4_raw` then `decode_fp4_even_odd`). `slots` int64 `[BLOCK_N]`."""
    pb, sb = load_fp4_raw(data_ptr, scale_ptr, slots, tmask, d_stride, s_stride, D)
    return decode_fp4_even_odd(pb, sb, KV_FMT, D, BLOCK_N, DECODE, INTERP)


@triton.jit
def load_dense_tile(data_ptr, slots, tmask, d_stride, D: tl.constexpr):
    """`BLOCK_N` tokens of one KV head of a bf16/fp8 cache, in their own dtype `[BLOCK_N, D]`
    (`data_ptr` at the head's row of slot 0)."""
    cols = tl.arange(0, D)
    return tl.load(data_ptr + slots[:, None] * d_stride + cols[None, :],
                   mask=tmask[:, None], other=0.0)


@triton.jit
def load_kv_raw(k_ptr, v_ptr, ks_ptr, vs_ptr, slots, tmask, d_stride, s_stride,
                KV_FMT: tl.constexpr, D: tl.constexpr):
    """Undecoded K and V of `BLOCK_N` tokens: `(k, k_scale_bytes, v, v_scale_bytes)`; for the
    dense formats the tiles themselves and two unused placeholders."""
    if KV_FMT == FMT_NVFP4 or KV_FMT == FMT_BLOCK16:
        kp, ksb = load_fp4_raw(k_ptr, ks_ptr, slots, tmask, d_stride, s_stride, D)
        vp, vsb = load_fp4_raw(v_ptr, vs_ptr, slots, tmask, d_stride, s_stride, D)
    else:
        kp = load_dense_tile(k_ptr, slots, tmask, d_stride, D)
        vp = load_dense_tile(v_ptr, slots, tmask, d_stride, D)
        ksb = tl.zeros((1,), dtype=tl.uint8)
        vsb = tl.zeros((1,), dtype=tl.uint8)
    return kp, ksb, vp, vsb


@triton.jit
def load_kv_rows(k_ptr, v_ptr, ks_ptr, vs_ptr, drow, srow, tmask, KV_FMT: tl.constexpr, D: tl.constexpr):
    """`load_kv_raw` with the rows given as offsets (`token_rows`)."""
    if KV_FMT == FMT_NVFP4 or KV_FMT == FMT_BLOCK16:
        kp, ksb = load_fp4_rows(k_ptr, ks_ptr, drow, srow, tmask, D)
        vp, vsb = load_fp4_rows(v_ptr, vs_ptr, drow, srow, tmask, D)
    else:
        cols = tl.arange(0, D)
        kp = tl.load(k_ptr + drow[:, None] + cols[None, :], mask=tmask[:, None], other=0.0)
        vp = tl.load(v_ptr + drow[:, None] + cols[None, :], mask=tmask[:, None], other=0.0)
        ksb = tl.zeros((1,), dtype=tl.uint8)
        vsb = tl.zeros((1,), dtype=tl.uint8)
    return kp, ksb, vp, vsb


@triton.jit
def token_slots(kv_indices, start, t0, hi, BLOCK_N: tl.constexpr, PAGE: tl.constexpr):
    """Slots (int64 `[BLOCK_N]`) and mask of the request's tokens `t0 .. t0 + BLOCK_N`.

    `PAGE > 1`: the page-table shortcut (`kv_indices` read at each page's first token; the
    slots of a page are consecutive); `PAGE == 1`: every token's slot gathered.
    """
    toks = t0 + tl.arange(0, BLOCK_N)
    tmask = toks < hi
    if PAGE > 1:
        first = tl.load(kv_indices + start + (toks // PAGE) * PAGE, mask=tmask, other=0).to(tl.int64)
        slots = first + (toks % PAGE)
    else:
        slots = tl.load(kv_indices + start + toks, mask=tmask, other=0).to(tl.int64)
    return slots, tmask


@triton.jit
def token_rows(kv_indices, start, t0, hi, d_stride, s_stride, BLOCK_N: tl.constexpr, PAGE: tl.constexpr,
               PAGE_BLOCK: tl.constexpr, ROW: tl.constexpr, SROW: tl.constexpr):
    """Offsets (int64 `[BLOCK_N]`) of the K/V rows and of the FP4 scale rows of the request's
    tokens `t0 .. t0 + BLOCK_N`, and their mask.

    Strided rows (`PAGE_BLOCK` false): `slot * d_stride` and `slot * s_stride`
    (`token_slots`). Page blocks (`PAGE_BLOCK`, needs `PAGE > 1`): token `i` of the
    page holding slot `s` has its `ROW` elements at `(s // PAGE) * d_stride + i * ROW` and
    its `SROW` scale bytes at `(s // PAGE) * s_stride + i * SROW` (from the scale pointer,
    which points `PAGE * ROW` bytes into the same block).
    """
    if PAGE_BLOCK:
        tl.static_assert(PAGE > 1, "page blocks need the page-table shortcut (PAGE > 1)")
        toks = t0 + tl.arange(0, BLOCK_N)
        tmask = toks < hi
        first = tl.load(kv_indices + start + (toks // PAGE) * PAGE, mask=tmask, other=0).to(tl.int64)
        page = first // PAGE
        i = toks % PAGE
        return page * d_stride + i * ROW, page * s_stride + i * SROW, tmask
    else:
        slots, tmask = token_slots(kv_indices, start, t0, hi, BLOCK_N, PAGE)
        return slots * d_stride, slots * s_stride, tmask


@triton.jit
def split_range(kv_indptr, b, split, SPLITS, BLOCK_N: tl.constexpr):
    """Request `b`'s first `kv_indices` entry (int64) and the token range `[lo, hi)` of its
    split `split` of `SPLITS`: equal ranges rounded up to whole `BLOCK_N` steps, the last ones
    possibly empty (`lo >= hi`)."""
    start = tl.load(kv_indptr + b).to(tl.int64)
    n = (tl.load(kv_indptr + b + 1) - start).to(tl.int32)
    per_split = tl.cdiv(tl.cdiv(n, SPLITS), BLOCK_N) * BLOCK_N
    lo = split * per_split
    return start, lo, tl.minimum(lo + per_split, n)


@triton.jit
def online_softmax_step(s, tmask, qk_scale, m_i, l_i):
    """One step of the online softmax (base 2) over raw scores `s [BLOCK_H, BLOCK_N]`: masked
    tokens get weight 0. Returns `(p, alpha, m_new, l_new)`: the step's weights, the factor that
    rescales what was accumulated before, the new running maximum and sum."""
    s = tl.where(tmask[None, :], s * qk_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    return p, alpha, m_new, l_i * alpha + tl.sum(p, 1)


@triton.jit
def online_softmax_step_t(s, tmask, qk_scale, m_i, l_i):
    """`online_softmax_step` over transposed scores `s [BLOCK_N, BLOCK_H]` (tokens along
    axis 0): the same `(p, alpha, m_new, l_new)`, `p` transposed."""
    s = tl.where(tmask[:, None], s * qk_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 0))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[None, :])
    return p, alpha, m_new, l_i * alpha + tl.sum(p, 0)


@triton.jit
def online_softmax_step_voff(s, tmask, qk_scale, m_i, l_i, e_i, m2_i, voff):
    """`online_softmax_step` for a V tile decoded relative to the power of two `2**voff`
    (`decode="cvt_f16"` over power-of-two scales; `voff` an int32 scalar). The normaliser `l`
    runs as before. The weights that multiply V are `p * 2**(voff - e)`, with `e` an integer per
    head: the ceiling of `m2`, the running log2 of the largest `2**(s - m + voff)` so far. So a
    step's largest weight on V is at most 1 whatever the scales (nothing that matters underflows
    float16), and every factor besides `p` is an exact power of two (a one-token request returns
    its V row exactly). Returns `(p_v, alpha_v, m_new, l_new, e_new, m2_new)`; the split's
    output is `acc * 2**e / l`."""
    s = tl.where(tmask[None, :], s * qk_scale, float("-inf"))
    m_step = tl.max(s, 1)
    m_new = tl.maximum(m_i, m_step)
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    m2_new = tl.maximum(m2_i + (m_i - m_new), m_step - m_new + voff)
    e_new = tl.math.ceil(m2_new).to(tl.int32)
    p_v = p * _pow2(tl.minimum(tl.maximum(voff - e_new, -126), 126))[:, None]
    alpha_v = alpha * _pow2(tl.minimum(tl.maximum(e_i - e_new, -126), 126))
    return p_v, alpha_v, m_new, l_i * alpha + tl.sum(p, 1), e_new, m2_new


@triton.jit
def online_softmax_step_voff_t(s, tmask, qk_scale, m_i, l_i, e_i, m2_i, voff):
    """`online_softmax_step_voff` over transposed scores `s [BLOCK_N, BLOCK_H]`."""
    s = tl.where(tmask[:, None], s * qk_scale, float("-inf"))
    m_step = tl.max(s, 0)
    m_new = tl.maximum(m_i, m_step)
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[None, :])
    m2_new = tl.maximum(m2_i + (m_i - m_new), m_step - m_new + voff)
    e_new = tl.math.ceil(m2_new).to(tl.int32)
    p_v = p * _pow2(tl.minimum(tl.maximum(voff - e_new, -126), 126))[None, :]
    alpha_v = alpha * _pow2(tl.minimum(tl.maximum(e_i - e_new, -126), 126))
    return p_v, alpha_v, m_new, l_i * alpha + tl.sum(p, 0), e_new, m2_new


@triton.jit
def voff_inv_l(l_i, e_i, nonempty):
    """`split_inv_l` times `2**e`: what normalises a split accumulated with V offsets."""
    return split_inv_l(l_i, nonempty) * _pow2(tl.minimum(tl.maximum(e_i, -126), 127))


@triton.jit
def split_inv_l(l_i, nonempty):
    """`1 / l`, the factor that normalises a finished split's output; 0 for an empty split (`l = 0`)."""
    return tl.where(nonempty, 1.0 / tl.where(nonempty, l_i, 1.0), 0.0)


@triton.jit
def split_lse(m_i, l_i, nonempty):
    """A finished split's base-2 log-sum-exp `m + log2 l`; `-inf` (weight 0 in the merge) if empty."""
    return tl.where(nonempty, m_i + tl.log2(tl.where(nonempty, l_i, 1.0)), float("-inf"))


@triton.jit
def _dot(a, b, DOT_F32: tl.constexpr, F16: tl.constexpr = False):
    """`a @ b` with float32 accumulation: bf16 (or fp16) operands on the GPU, float32 under the interpreter."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    elif F16:
        return tl.dot(a.to(tl.float16), b.to(tl.float16))
    else:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))


@triton.jit
def _pow2(k):
    """`2.0**k` (float32, exact) for integer `k` in [-126, 127]."""
    return ((k + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def undo_decode_factor(KV_FMT: tl.constexpr, DECODE: tl.constexpr):
    """The power of two the decoded tiles carry, undone once in the softmax scale (K) and the output
    (V): `2**6` for `cvt_f16`, `2**14` for the other FP4 decoders, 1 for BF16/FP8."""
    if KV_FMT == FMT_NVFP4 or KV_FMT == FMT_BLOCK16:
        if DECODE == DEC_CVT_F16:
            return UNDO_CVT
        else:
            return UNDO_PLACEMENT
    else:
        return 1.0


@triton.jit
def decode_stage1(q_ptr, q_sb, q_sh,
                  k_ptr, v_ptr, ks_ptr, vs_ptr, d_stride, d_hstride, s_stride, s_hstride,
                  gk_ptr, kv_indptr, kv_indices,
                  mid_o, mid_lse, sm_scale,
                  G: tl.constexpr, D: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, PAGE: tl.constexpr,
                  KV_FMT: tl.constexpr, INTERP: tl.constexpr, DECODE: tl.constexpr = 0,
                  PREFETCH: tl.constexpr = False, TOKENS_AS_M: tl.constexpr = False,
                  PAGE_BLOCK: tl.constexpr = False):
    """One split of one request for one KV head and its `G` query heads.

    Writes `mid_o[b, h, split, :]` (float32 `[D]`, the split's softmax-normalised output; for
    FP4 the even elements then the odd ones, still times `2**-14`) and `mid_lse[b, h, split]`
    (base-2 log-sum-exp of the scaled scores; `-inf` for an empty split).

    `d_stride` / `d_hstride`: elements between K (and V) rows of consecutive slots / KV heads
    (`H * D` and `D` for a slot-major `[slots, H, D]` buffer; any multiples of the row length
    work, e.g. a head-major buffer); `s_stride` / `s_hstride`: the same for the FP4 scale rows
    (multiples of `D / 16`; 0 for BF16/FP8). With `PAGE_BLOCK` the rows live in page blocks
    (`token_rows`): `d_stride` is then the stride between pages, `d_hstride` between
    the blocks of two KV heads, both multiples of 16 (and `s_stride`, `s_hstride` the same).
    `gk_ptr`: float32 scalar multiplying `sm_scale` (nvfp4 K global scale, FP8 K scale; 1.0 else).
    `PREFETCH`: software pipelining in registers, for `num_stages=1`: each step issues the
    loads of the next step's K/V bytes (and of the slots of the step after) before it decodes its
    own, so every load has a whole step to arrive. Without it, Triton's own pipeliner
    (`num_stages`) decides.
    `TOKENS_AS_M`: the dots put the step's tokens in the tensor cores' `M` dimension and the
    `G` query heads in `N` (scores `k . q^T` of shape `[BLOCK_N, BLOCK_H]`, accumulator
    `[D, BLOCK_H]`), so `BLOCK_H` may be 8: no padded query rows, half the accumulator
    registers and half the MMAs of `BLOCK_H = 16` at `G = 8`. The same sums, in another order.
    """
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    SPLITS = tl.num_programs(2)
    start, lo, hi = split_range(kv_indptr, b, split, SPLITS, BLOCK_N)
    # Every stride is a multiple of its row's length (the launchers check), so (x // n) * n == x. Writing
    # it so tells the compiler that each row starts aligned, which keeps the row loads vectorised (an
    # 8-byte scale row in one load) also when a stride is not a multiple of 16.
    ROW: tl.constexpr = D // 2 if KV_FMT == FMT_NVFP4 or KV_FMT == FMT_BLOCK16 else D
    SROW: tl.constexpr = D // 16
    if PAGE_BLOCK:  # page and head strides of page blocks: multiples of 16 bytes (the launcher checks)
        tl.static_assert(not PREFETCH, "page blocks are read without register prefetch")
        tl.static_assert(KV_FMT == FMT_NVFP4 or KV_FMT == FMT_BLOCK16, "page blocks hold FP4 codes and scales")
        ks_ptr = k_ptr + PAGE * ROW  # a block's scale bytes follow its PAGE rows of codes
        vs_ptr = v_ptr + PAGE * ROW
        d_stride = (d_stride // 16) * 16
        d_hstride = (d_hstride // 16) * 16
        s_stride = (s_stride // 16) * 16
        s_hstride = (s_hstride // 16) * 16
    else:
        d_stride = (d_stride // ROW) * ROW
        d_hstride = (d_hstride // ROW) * ROW
        s_stride = (s_stride // SROW) * SROW
        s_hstride = (s_hstride // SROW) * SROW
    kvh64 = kvh.to(tl.int64)  # this KV head's rows: any [slots, H, ...] strides
    k_ptr += kvh64 * d_hstride
    v_ptr += kvh64 * d_hstride
    ks_ptr += kvh64 * s_hstride
    vs_ptr += kvh64 * s_hstride

    hrow = tl.arange(0, BLOCK_H)
    heads = kvh * G + hrow
    hmask = hrow < G
    qk_scale = sm_scale * tl.load(gk_ptr) * LOG2E
    FP4: tl.constexpr = KV_FMT == FMT_NVFP4 or KV_FMT == FMT_BLOCK16
    qk_scale = qk_scale * undo_decode_factor(KV_FMT, DECODE)

    D2: tl.constexpr = D // 2
    q_base = q_ptr + b.to(tl.int64) * q_sb + heads[:, None] * q_sh
    EVEN_ODD: tl.constexpr = FP4 and DECODE != DEC_PRMT_BF16
    F16: tl.constexpr = (FP4 and (DECODE == DEC_CVT_F16 or DECODE == DEC_NO_DECODE)) or \
        (KV_FMT == FMT_FP8 and DECODE == DEC_CVT_F16)
    if EVEN_ODD:
        c2 = tl.arange(0, D2)
        q_e = tl.load(q_base + 2 * c2[None, :], mask=hmask[:, None], other=0.0).to(tl.float32)
        q_o = tl.load(q_base + 2 * c2[None, :] + 1, mask=hmask[:, None], other=0.0).to(tl.float32)
        if F16:  # fp16 MMAs: bring max|q| to [2**13, 2**14) by a power of two, undone in qk_scale
            qa = tl.maximum(tl.max(tl.max(tl.abs(q_e), 1), 0), tl.max(tl.max(tl.abs(q_o), 1), 0))
            qexp = ((qa.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
            kq = tl.minimum(tl.maximum(F16_Q_TOP - qexp, -126), 126)
            q_e = q_e * _pow2(kq)
            q_o = q_o * _pow2(kq)
            qk_scale = qk_scale * _pow2(-kq)
        if not TOKENS_AS_M:
            acc_e = tl.zeros((BLOCK_H, D2), dtype=tl.float32)
            acc_o = tl.zeros((BLOCK_H, D2), dtype=tl.float32)
    else:
        c = tl.arange(0, D)
        q = tl.load(q_base + c[None, :], mask=hmask[:, None], other=0.0).to(tl.float32)
        if F16:  # as above (FP8 values are exact in fp16)
            qexp = ((tl.max(tl.max(tl.abs(q), 1), 0).to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
            kq = tl.minimum(tl.maximum(F16_Q_TOP - qexp, -126), 126)
            q = q * _pow2(kq)
            qk_scale = qk_scale * _pow2(-kq)
        if not TOKENS_AS_M:
            acc = tl.zeros((BLOCK_H, D), dtype=tl.float32)
    m_i = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
    # cvt_f16 over power-of-two scales: each step's tiles relative to their largest scale (see
    # decode_block16_cvt); K's reference multiplies the fp32 scores, V's joins the softmax weights
    B16_CVT: tl.constexpr = KV_FMT == FMT_BLOCK16 and DECODE == DEC_CVT_F16
    m2_i = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
    e_i = tl.zeros((BLOCK_H,), dtype=tl.int32)

    if TOKENS_AS_M:
        tl.static_assert(not PREFETCH, "TOKENS_AS_M uses Triton's pipeliner, not register prefetch")
        if EVEN_ODD:
            qt_e = tl.trans(q_e)      # [D/2, BLOCK_H]: the dots' B operand
            qt_o = tl.trans(q_o)
            acct_e = tl.zeros((D2, BLOCK_H), dtype=tl.float32)
            acct_o = tl.zeros((D2, BLOCK_H), dtype=tl.float32)
        else:
            qt = tl.trans(q)
            acct = tl.zeros((D, BLOCK_H), dtype=tl.float32)
        for t0 in range(lo, hi, BLOCK_N):
            drow, srow, tmask = token_rows(kv_indices, start, t0, hi, d_stride, s_stride, BLOCK_N, PAGE,
                                           PAGE_BLOCK, ROW, SROW)
            kp, ksb, vp, vsb = load_kv_rows(k_ptr, v_ptr, ks_ptr, vs_ptr, drow, srow, tmask, KV_FMT, D)
            if B16_CVT:
                kref = block16_tile_ref(ksb)
                k_e, k_o = decode_block16_cvt(kp, ksb, kref, D, BLOCK_N, INTERP)
                st = (_dot(k_e, qt_e, INTERP, F16) + _dot(k_o, qt_o, INTERP, F16)) * pow2_byte_decode(kref, False)
            elif EVEN_ODD:
                k_e, k_o = decode_fp4_even_odd(kp, ksb, KV_FMT, D, BLOCK_N, DECODE, INTERP)
                st = _dot(k_e, qt_e, INTERP, F16) + _dot(k_o, qt_o, INTERP, F16)
            else:
                if FP4:
                    k = decode_fp4_bf16(kp, ksb, KV_FMT, D, BLOCK_N)
                else:
                    k = kp
                st = _dot(k, qt, INTERP, F16)
            if B16_CVT:
                vref = block16_tile_ref(vsb)
                pt, alpha, m_i, l_i, e_i, m2_i = online_softmax_step_voff_t(st, tmask, qk_scale, m_i, l_i, e_i,
                                                                           m2_i, vref - 127)
                v_e, v_o = decode_block16_cvt(vp, vsb, vref, D, BLOCK_N, INTERP)
            else:
                pt, alpha, m_i, l_i = online_softmax_step_t(st, tmask, qk_scale, m_i, l_i)
                if EVEN_ODD:
                    v_e, v_o = decode_fp4_even_odd(vp, vsb, KV_FMT, D, BLOCK_N, DECODE, INTERP)
            if EVEN_ODD:
                acct_e = acct_e * alpha[None, :] + _dot(tl.trans(v_e), pt, INTERP, F16)
                acct_o = acct_o * alpha[None, :] + _dot(tl.trans(v_o), pt, INTERP, F16)
            else:
                if FP4:
                    v = decode_fp4_bf16(vp, vsb, KV_FMT, D, BLOCK_N)
                else:
                    v = vp
                acct = acct * alpha[None, :] + _dot(tl.trans(v), pt, INTERP, F16)
        nonempty = hi > lo
        if B16_CVT:
            inv_l = voff_inv_l(l_i, e_i, nonempty)
        else:
            inv_l = split_inv_l(l_i, nonempty)
        mid = mid_o + ((b.to(tl.int64) * (G * tl.num_programs(1)) + heads) * SPLITS + split) * D
        if EVEN_ODD:
            tl.store(mid[None, :] + c2[:, None], acct_e * inv_l[None, :], mask=hmask[None, :])
            tl.store(mid[None, :] + D2 + c2[:, None], acct_o * inv_l[None, :], mask=hmask[None, :])
        else:
            tl.store(mid[None, :] + c[:, None], acct * inv_l[None, :], mask=hmask[None, :])
        tl.store(mid_lse + (b.to(tl.int64) * (G * tl.num_programs(1)) + heads) * SPLITS + split,
                 split_lse(m_i, l_i, nonempty), mask=hmask)
    else:
        if PREFETCH:
            slots, tmask = token_slots(kv_indices, start, lo, hi, BLOCK_N, PAGE)
            kp, ksb, vp, vsb = load_kv_raw(k_ptr, v_ptr, ks_ptr, vs_ptr, slots, tmask, d_stride, s_stride,
                                           KV_FMT, D)
            nslots, nmask = token_slots(kv_indices, start, lo + BLOCK_N, hi, BLOCK_N, PAGE)
        for t0 in range(lo, hi, BLOCK_N):
            if PREFETCH:  # issue the next step's loads first; this step's bytes arrived during the last one
                tmask = (t0 + tl.arange(0, BLOCK_N)) < hi
                nkp, nksb, nvp, nvsb = load_kv_raw(k_ptr, v_ptr, ks_ptr, vs_ptr, nslots, nmask, d_stride, s_stride,
                                                   KV_FMT, D)
                nslots, nmask = token_slots(kv_indices, start, t0 + 2 * BLOCK_N, hi, BLOCK_N, PAGE)
            elif PAGE_BLOCK:
                drow, srow, tmask = token_rows(kv_indices, start, t0, hi, d_stride, s_stride, BLOCK_N, PAGE,
                                               PAGE_BLOCK, ROW, SROW)
                kp, ksb, vp, vsb = load_kv_rows(k_ptr, v_ptr, ks_ptr, vs_ptr, drow, srow, tmask, KV_FMT, D)
            else:
                slots, tmask = token_slots(kv_indices, start, t0, hi, BLOCK_N, PAGE)
                kp, ksb, vp, vsb = load_kv_raw(k_ptr, v_ptr, ks_ptr, vs_ptr, slots, tmask, d_stride, s_stride,
                                               KV_FMT, D)
            if B16_CVT:
                kref = block16_tile_ref(ksb)
                k_e, k_o = decode_block16_cvt(kp, ksb, kref, D, BLOCK_N, INTERP)
                s = (_dot(q_e, tl.trans(k_e), INTERP, F16) + _dot(q_o, tl.trans(k_o), INTERP, F16)) * \
                    pow2_byte_decode(kref, False)
            elif EVEN_ODD:
                k_e, k_o = decode_fp4_even_odd(kp, ksb, KV_FMT, D, BLOCK_N, DECODE, INTERP)
                s = _dot(q_e, tl.trans(k_e), INTERP, F16) + _dot(q_o, tl.trans(k_o), INTERP, F16)
            else:
                if FP4:
                    k = decode_fp4_bf16(kp, ksb, KV_FMT, D, BLOCK_N)
                else:
                    k = kp
                s = _dot(q, tl.trans(k), INTERP, F16)
            if B16_CVT:
                vref = block16_tile_ref(vsb)
                p, alpha, m_i, l_i, e_i, m2_i = online_softmax_step_voff(s, tmask, qk_scale, m_i, l_i, e_i, m2_i,
                                                                        vref - 127)
                v_e, v_o = decode_block16_cvt(vp, vsb, vref, D, BLOCK_N, INTERP)
            else:
                p, alpha, m_i, l_i = online_softmax_step(s, tmask, qk_scale, m_i, l_i)
                if EVEN_ODD:
                    v_e, v_o = decode_fp4_even_odd(vp, vsb, KV_FMT, D, BLOCK_N, DECODE, INTERP)
            if EVEN_ODD:
                acc_e = acc_e * alpha[:, None] + _dot(p, v_e, INTERP, F16)
                acc_o = acc_o * alpha[:, None] + _dot(p, v_o, INTERP, F16)
            else:
                if FP4:
                    v = decode_fp4_bf16(vp, vsb, KV_FMT, D, BLOCK_N)
                else:
                    v = vp
                acc = acc * alpha[:, None] + _dot(p, v, INTERP, F16)
            if PREFETCH:
                kp, ksb, vp, vsb = nkp, nksb, nvp, nvsb

        # split_inv_l and split_lse, written out: through the helpers the compiled fp4_mx_block16 loop
        # changes (register allocation), and that loop is what the benchmark measured
        nonempty = hi > lo
        l_safe = tl.where(nonempty, l_i, 1.0)  # an empty split (lo >= n) has l = 0; its weight is 0 anyway
        inv_l = tl.where(nonempty, 1.0 / l_safe, 0.0)
        if B16_CVT:
            inv_l = inv_l * _pow2(tl.minimum(tl.maximum(e_i, -126), 127))
        mid = mid_o + ((b.to(tl.int64) * (G * tl.num_programs(1)) + heads) * SPLITS + split) * D
        if EVEN_ODD:
            tl.store(mid[:, None] + c2[None, :], acc_e * inv_l[:, None], mask=hmask[:, None])
            tl.store(mid[:, None] + D2 + c2[None, :], acc_o * inv_l[:, None], mask=hmask[:, None])
        else:
            tl.store(mid[:, None] + c[None, :], acc * inv_l[:, None], mask=hmask[:, None])
        lse = tl.where(nonempty, m_i + tl.log2(l_safe), float("-inf"))
        tl.store(mid_lse + (b.to(tl.int64) * (G * tl.num_programs(1)) + heads) * SPLITS + split, lse, mask=hmask)


@triton.jit
def decode_stage2(mid_o, mid_lse, gv_ptr, out_ptr, o_sb, o_sh,
                  SPLITS, D: tl.constexpr, BLOCK_S: tl.constexpr,
                  KV_FMT: tl.constexpr, OUT_BF16: tl.constexpr, DECODE: tl.constexpr = 0,
                  BLOCK_D: tl.constexpr = 0):
    """Merge the splits of one (request, query head) by LSE; apply the output scale; write `out[b, h]`.

    `BLOCK_D = 0`: one program per (request, head) takes all `D` columns; otherwise grid axis 2 runs
    over `D / BLOCK_D` column chunks (smaller register tiles `[BLOCK_S, BLOCK_D]` when there are
    many splits or wide rows, as MLA's 512 latent columns).

    Output scale: `gv * 2**14` for FP4 (V global scale, or 1.0, times the undone E2M1 placement;
    `2**6` for `decode="cvt_f16"`),
    `gv` (FP8 V scale) or 1.0. Empty splits have `lse = -inf` and weight 0.
    """
    b = tl.program_id(0)
    h = tl.program_id(1)
    row = b.to(tl.int64) * tl.num_programs(1) + h
    sp = tl.arange(0, BLOCK_S)
    lse = tl.load(mid_lse + row * SPLITS + sp, mask=sp < SPLITS, other=float("-inf"))
    m = tl.max(lse, 0)
    w = tl.exp2(lse - m)
    w = w / tl.sum(w, 0)
    DC: tl.constexpr = D if BLOCK_D == 0 else BLOCK_D
    cols = tl.program_id(2) * DC + tl.arange(0, DC)
    part = tl.load(mid_o + (row * SPLITS + sp[:, None]) * D + cols[None, :], mask=(sp < SPLITS)[:, None], other=0.0)
    o = tl.sum(part * w[:, None], 0)
    scale = tl.load(gv_ptr) * undo_decode_factor(KV_FMT, DECODE)
    if (KV_FMT == FMT_NVFP4 or KV_FMT == FMT_BLOCK16) and DECODE != DEC_PRMT_BF16:
        # mid holds [even | odd]: element j < D/2 goes to 2j, j >= D/2 to 2(j - D/2) + 1
        dst = tl.where(cols < D // 2, 2 * cols, 2 * (cols - D // 2) + 1)
    else:
        dst = cols
    o = o * scale
    o_base = out_ptr + b.to(tl.int64) * o_sb + h * o_sh
    if OUT_BF16:
        tl.store(o_base + dst, o.to(tl.bfloat16))
    else:
        tl.store(o_base + dst, o)
