"""Triton stage 1 of MLA decode attention over an FP4 latent pool (absorbed form); no argument
checks here (see [`nvfp4_kvcache_triton.mla_decode_attention`][nvfp4_kvcache_triton.mla_decode_attention]).

One latent row per token holds the NoPE part `c_kv` (`DL` = kv_lora_rank elements) and the
RoPE part `k_pe` (`DR` elements), quantized separately (no block spans the boundary). In the
absorbed form every query head attends to that one row: the score is
`q_nope . c_kv + q_rope . k_pe` and the value is `c_kv` itself, so each step decodes the NoPE
tile once and uses it twice, as K and as V.

Grid `(batch, cdiv(Hq, BLOCK_H), splits)`: a program takes `BLOCK_H` query heads (the rest of
the last group masked) over one split of the request's tokens. It shares with the MHA kernel
(`nvfp4_kvcache_triton._triton.decode_attention`) the split ranges, the slot lookup, the FP4 row loads and
decoders (even/odd tiles, Q and the output permuted), the online softmax and the output format of
`mid_o`/`mid_lse`; stage 2 is the MHA kernel's `decode_stage2`
with `D = DL`.

The same design over a BF16 latent cache (`KV_FMT` bf16, `[slots, DL + DR]` bf16 rows) is the
baseline the FP4 kernel is measured against.
"""

from __future__ import annotations

import triton
import triton.language as tl

from nvfp4_kvcache_triton._triton.decode_attention import (
    DEC_CVT_F16,
    DEC_PRMT_BF16,
    F16_Q_TOP,
    FMT_BLOCK16,
    FMT_NVFP4,
    LOG2E,
    _dot,
    _pow2,
    decode_fp4_bf16,
    decode_fp4_even_odd,
    load_fp4_raw,
    online_softmax_step,
    split_inv_l,
    split_lse,
    split_range,
    token_slots,
    undo_decode_factor,
)


@triton.jit
def _q_even_odd(q_ptr, rows, hmask, DH: tl.constexpr):
    """Even and odd elements of `BLOCK_H` query rows of width `DH` (float32 `[BLOCK_H, DH/2]` each)."""
    c = tl.arange(0, DH // 2)
    q_e = tl.load(q_ptr + rows[:, None] + 2 * c[None, :], mask=hmask[:, None], other=0.0).to(tl.float32)
    q_o = tl.load(q_ptr + rows[:, None] + 2 * c[None, :] + 1, mask=hmask[:, None], other=0.0).to(tl.float32)
    return q_e, q_o


@triton.jit
def _q_rows(q_ptr, rows, hmask, DH: tl.constexpr):
    """`BLOCK_H` query rows of width `DH` in natural order (float32 `[BLOCK_H, DH]`)."""
    c = tl.arange(0, DH)
    return tl.load(q_ptr + rows[:, None] + c[None, :], mask=hmask[:, None], other=0.0).to(tl.float32)


@triton.jit
def _amax2(x):
    return tl.max(tl.max(tl.abs(x), 1), 0)


@triton.jit
def _f16_shift(qa):
    """The power of two `k` that brings `max|q| = qa` to `[2**13, 2**14)` (fp16 dots)."""
    qexp = ((qa.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    return tl.minimum(tl.maximum(F16_Q_TOP - qexp, -126), 126)


@triton.jit
def mla_decode_stage1(qn_ptr, qn_sb, qn_sh, qr_ptr, qr_sb, qr_sh,
                      kv_ptr, kvs_ptr, d_stride, s_stride, g_ptr, kv_indptr, kv_indices,
                      mid_o, mid_lse, sm_scale, HQ,
                      DL: tl.constexpr, DR: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
                      PAGE: tl.constexpr, KV_FMT: tl.constexpr, INTERP: tl.constexpr, DECODE: tl.constexpr = 0):
    """One split of one request for `BLOCK_H` query heads.

    FP4 (`KV_FMT` nvfp4 or fp4_mx_block16): `kv_ptr` / `kvs_ptr` are the layer's packed rows
    (`d_stride` bytes apart, NoPE bytes then RoPE bytes) and scale rows (`s_stride` apart), decoded
    by `DECODE` as in the MHA kernel: `placement` and `cvt_f16` (nvfp4; fp16 dots) give even/odd
    tiles (Q and the output permuted), `prmt_bf16` natural-order bf16 tiles. BF16 (the baseline):
    `kv_ptr` holds `[DL + DR]` bf16 rows `d_stride` elements apart, read as they are; `kvs_ptr`
    is unused. `g_ptr`: float32 scalar, the nvfp4 global scale (1.0 otherwise), folded into the
    softmax scale here and into the output by stage 2. Writes `mid_o[b, h, split, :DL]` (for the
    even/odd decoders the even elements then the odd ones) times the decoder's power of two, and
    `mid_lse[b, h, split]` as the MHA stage 1 does.
    """
    b = tl.program_id(0)
    hg = tl.program_id(1)
    split = tl.program_id(2)
    SPLITS = tl.num_programs(2)
    start, lo, hi = split_range(kv_indptr, b, split, SPLITS, BLOCK_N)
    FP4: tl.constexpr = KV_FMT == FMT_NVFP4 or KV_FMT == FMT_BLOCK16
    EVEN_ODD: tl.constexpr = FP4 and DECODE != DEC_PRMT_BF16
    F16: tl.constexpr = FP4 and DECODE == DEC_CVT_F16
    # the pool's rows are contiguous, so the strides are multiples of the row lengths; saying so
    # ((x // n) * n == x) lets the compiler vectorise the row loads, as in the MHA kernel
    ROW: tl.constexpr = (DL + DR) // 2 if FP4 else DL + DR
    d_stride = (d_stride // ROW) * ROW
    if FP4:
        s_stride = (s_stride // ((DL + DR) // 16)) * ((DL + DR) // 16)

    heads = hg * BLOCK_H + tl.arange(0, BLOCK_H)
    hmask = heads < HQ
    qk_scale = sm_scale * tl.load(g_ptr) * LOG2E * undo_decode_factor(KV_FMT, DECODE)
    qn_base = qn_ptr + b.to(tl.int64) * qn_sb
    qr_base = qr_ptr + b.to(tl.int64) * qr_sb
    if EVEN_ODD:
        qn_e, qn_o = _q_even_odd(qn_base, heads * qn_sh, hmask, DL)
        qr_e, qr_o = _q_even_odd(qr_base, heads * qr_sh, hmask, DR)
        if F16:  # fp16 MMAs: one power of two for both parts, undone in qk_scale
            kq = _f16_shift(tl.maximum(tl.maximum(_amax2(qn_e), _amax2(qn_o)), tl.maximum(_amax2(qr_e), _amax2(qr_o))))
            qn_e, qn_o, qr_e, qr_o = qn_e * _pow2(kq), qn_o * _pow2(kq), qr_e * _pow2(kq), qr_o * _pow2(kq)
            qk_scale = qk_scale * _pow2(-kq)
        acc_e = tl.zeros((BLOCK_H, DL // 2), dtype=tl.float32)
        acc_o = tl.zeros((BLOCK_H, DL // 2), dtype=tl.float32)
    else:
        qn = _q_rows(qn_base, heads * qn_sh, hmask, DL)
        qr = _q_rows(qr_base, heads * qr_sh, hmask, DR)
        acc = tl.zeros((BLOCK_H, DL), dtype=tl.float32)
    m_i = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for t0 in range(lo, hi, BLOCK_N):
        slots, tmask = token_slots(kv_indices, start, t0, hi, BLOCK_N, PAGE)
        if FP4:
            nb, ns = load_fp4_raw(kv_ptr, kvs_ptr, slots, tmask, d_stride, s_stride, DL)
            rb, rs = load_fp4_raw(kv_ptr + DL // 2, kvs_ptr + DL // 16, slots, tmask, d_stride, s_stride, DR)
            if EVEN_ODD:
                c_e, c_o = decode_fp4_even_odd(nb, ns, KV_FMT, DL, BLOCK_N, DECODE, INTERP)
                r_e, r_o = decode_fp4_even_odd(rb, rs, KV_FMT, DR, BLOCK_N, DECODE, INTERP)
                s = (_dot(qn_e, tl.trans(c_e), INTERP, F16) + _dot(qn_o, tl.trans(c_o), INTERP, F16)
                     + _dot(qr_e, tl.trans(r_e), INTERP, F16) + _dot(qr_o, tl.trans(r_o), INTERP, F16))
            else:
                c = decode_fp4_bf16(nb, ns, KV_FMT, DL, BLOCK_N)
                r = decode_fp4_bf16(rb, rs, KV_FMT, DR, BLOCK_N)
                s = _dot(qn, tl.trans(c), INTERP) + _dot(qr, tl.trans(r), INTERP)
        else:
            cl = tl.arange(0, DL)
            cr = tl.arange(0, DR)
            c = tl.load(kv_ptr + slots[:, None] * d_stride + cl[None, :], mask=tmask[:, None], other=0.0)
            r = tl.load(kv_ptr + DL + slots[:, None] * d_stride + cr[None, :], mask=tmask[:, None], other=0.0)
            s = _dot(qn, tl.trans(c), INTERP) + _dot(qr, tl.trans(r), INTERP)
        p, alpha, m_i, l_i = online_softmax_step(s, tmask, qk_scale, m_i, l_i)
        if EVEN_ODD:  # V is the NoPE latent itself
            acc_e = acc_e * alpha[:, None] + _dot(p, c_e, INTERP, F16)
            acc_o = acc_o * alpha[:, None] + _dot(p, c_o, INTERP, F16)
        else:
            acc = acc * alpha[:, None] + _dot(p, c, INTERP)

    nonempty = hi > lo
    inv_l = split_inv_l(l_i, nonempty)
    row = (b.to(tl.int64) * HQ + heads) * SPLITS + split
    if EVEN_ODD:
        c2 = tl.arange(0, DL // 2)
        tl.store(mid_o + row[:, None] * DL + c2[None, :], acc_e * inv_l[:, None], mask=hmask[:, None])
        tl.store(mid_o + row[:, None] * DL + DL // 2 + c2[None, :], acc_o * inv_l[:, None], mask=hmask[:, None])
    else:
        cd = tl.arange(0, DL)
        tl.store(mid_o + row[:, None] * DL + cd[None, :], acc * inv_l[:, None], mask=hmask[:, None])
    tl.store(mid_lse + row, split_lse(m_i, l_i, nonempty), mask=hmask)
