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
    online_softmax_step_t,
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
def _q_part(q_base, rows, hmask, off, W: tl.constexpr, EVEN_ODD: tl.constexpr):
    """Query columns `[off, off + W)` of `BLOCK_H` rows (float32): `(even, odd)` `[BLOCK_H, W/2]`
    each for the even/odd decoders, else `(natural [BLOCK_H, W], the same again)`."""
    if EVEN_ODD:
        return _q_even_odd(q_base + off, rows, hmask, W)
    else:
        q = _q_rows(q_base + off, rows, hmask, W)
        return q, q


@triton.jit
def _latent_tile(kv_ptr, kvs_ptr, slots, tmask, d_stride, s_stride, off, W: tl.constexpr, BLOCK_N: tl.constexpr,
                 KV_FMT: tl.constexpr, DECODE: tl.constexpr, INTERP: tl.constexpr):
    """Latent columns `[off, off + W)` of `BLOCK_N` tokens, in the dots' layout: FP4 through the
    decoder (`(even, odd)` `[BLOCK_N, W/2]`, or for `prmt_bf16` a natural-order tile twice), BF16
    rows as they are (twice). `off` is a multiple of 16 (whole FP4 blocks)."""
    if KV_FMT == FMT_NVFP4 or KV_FMT == FMT_BLOCK16:
        pb, sb = load_fp4_raw(kv_ptr + off // 2, kvs_ptr + off // 16, slots, tmask, d_stride, s_stride, W)
        if DECODE != DEC_PRMT_BF16:
            return decode_fp4_even_odd(pb, sb, KV_FMT, W, BLOCK_N, DECODE, INTERP)
        else:
            x = decode_fp4_bf16(pb, sb, KV_FMT, W, BLOCK_N)
            return x, x
    else:
        cols = tl.arange(0, W)
        x = tl.load(kv_ptr + off + slots[:, None] * d_stride + cols[None, :], mask=tmask[:, None], other=0.0)
        return x, x


@triton.jit
def _dot_dtype(x, INTERP: tl.constexpr, F16: tl.constexpr):
    """`x` in the dots' operand type (float32 under the interpreter, else fp16 / bf16), converted once."""
    if INTERP:
        return x.to(tl.float32)
    elif F16:
        return x.to(tl.float16)
    else:
        return x.to(tl.bfloat16)


@triton.jit
def _scores(qa, qb, ca, cb, k, EVEN_ODD: tl.constexpr, TOKENS_AS_M: tl.constexpr, INTERP: tl.constexpr,
            F16: tl.constexpr, SPLIT: tl.constexpr):
    """One part's share of the scores: `q . c^T` `[BLOCK_H, BLOCK_N]`, or with `TOKENS_AS_M`
    `c . q^T` `[BLOCK_N, BLOCK_H]` (then `qa`, `qb` are already transposed).

    `SPLIT`: each dot scaled by `k` (the softmax scale, a run-time value) before the sum, so that
    the compiler keeps them as independent accumulation chains instead of folding the sum into one
    dot's accumulator (one chain of tensor-core instructions as long as the whole width)."""
    if TOKENS_AS_M:
        sa = _dot(ca, qa, INTERP, F16)
        if SPLIT:
            sa = sa * k
        if EVEN_ODD:
            sb = _dot(cb, qb, INTERP, F16)
            if SPLIT:
                sa = sa + sb * k
            else:
                sa += sb
    else:
        sa = _dot(qa, tl.trans(ca), INTERP, F16)
        if SPLIT:
            sa = sa * k
        if EVEN_ODD:
            sb = _dot(qb, tl.trans(cb), INTERP, F16)
            if SPLIT:
                sa = sa + sb * k
            else:
                sa += sb
    return sa


@triton.jit
def mla_decode_stage1(qn_ptr, qn_sb, qn_sh, qr_ptr, qr_sb, qr_sh,
                      kv_ptr, kvs_ptr, d_stride, s_stride, g_ptr, kv_indptr, kv_indices,
                      mid_o, mid_lse, sm_scale, HQ,
                      DL: tl.constexpr, DR: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
                      PAGE: tl.constexpr, KV_FMT: tl.constexpr, INTERP: tl.constexpr, DECODE: tl.constexpr = 0,
                      V_PARTS: tl.constexpr = 1, TOKENS_AS_M: tl.constexpr = False,
                      SPLIT_SCORES: tl.constexpr = False):
    """One split of one request for `BLOCK_H` query heads (and one of `V_PARTS` parts of the output).

    FP4 (`KV_FMT` nvfp4 or fp4_mx_block16): `kv_ptr` / `kvs_ptr` are the layer's packed rows
    (`d_stride` bytes apart, NoPE bytes then RoPE bytes) and scale rows (`s_stride` apart), decoded
    by `DECODE` as in the MHA kernel: `placement` and `cvt_f16` (nvfp4; fp16 dots) give even/odd
    tiles (Q and the output permuted), `prmt_bf16` natural-order bf16 tiles. BF16 (the baseline):
    `kv_ptr` holds `[DL + DR]` bf16 rows `d_stride` elements apart, read as they are; `kvs_ptr`
    is unused. `g_ptr`: float32 scalar, the nvfp4 global scale (1.0 otherwise), folded into the
    softmax scale here and into the output by stage 2. Writes `mid_o[b, h, split, :DL]` (for the
    even/odd decoders the even elements then the odd ones) times the decoder's power of two, and
    `mid_lse[b, h, split]` as the MHA stage 1 does.

    Grid axis 1 runs over head groups times `V_PARTS`: with `V_PARTS = 2` a program computes
    the full scores but accumulates only its half of the NoPE columns (`p . c[:, half]`), half
    the accumulator registers, and writes only that half of `mid_o` (both parts compute the
    same `mid_lse`, so part 0 writes it). The query is converted to the dots' type once, before the loop.
    `TOKENS_AS_M`: the step's tokens are the dots' `M` (scores `c . q^T` `[BLOCK_N, BLOCK_H]`,
    output `c^T . p^T`), the query heads `N`, as the MHA kernel's `TOKENS_AS_M`.
    `SPLIT_SCORES`: the score's parts (each NoPE part's even and odd halves, the RoPE part) are
    independent dots, scaled and then summed, instead of one chain of dependent tensor-core
    instructions over all 576 columns (see `_scores`).
    """
    b = tl.program_id(0)
    hg = tl.program_id(1) // V_PARTS
    part = tl.program_id(1) % V_PARTS
    split = tl.program_id(2)
    SPLITS = tl.num_programs(2)
    start, lo, hi = split_range(kv_indptr, b, split, SPLITS, BLOCK_N)
    FP4: tl.constexpr = KV_FMT == FMT_NVFP4 or KV_FMT == FMT_BLOCK16
    EVEN_ODD: tl.constexpr = FP4 and DECODE != DEC_PRMT_BF16
    F16: tl.constexpr = FP4 and DECODE == DEC_CVT_F16
    DV: tl.constexpr = DL // V_PARTS            # NoPE columns this program accumulates
    AW: tl.constexpr = DV // 2 if EVEN_ODD else DV   # accumulator width (per even/odd half)
    tl.static_assert(V_PARTS == 1 or V_PARTS == 2, "V_PARTS is 1 or 2")
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
    own = part * DV                               # first NoPE column of this program's part
    other = (1 - part) * DV                       # the other part's (V_PARTS = 2; scores only)
    q1a, q1b = _q_part(qn_base, heads * qn_sh, hmask, own, DV, EVEN_ODD)
    q3a, q3b = _q_part(qr_base, heads * qr_sh, hmask, 0, DR, EVEN_ODD)
    if V_PARTS == 2:
        q2a, q2b = _q_part(qn_base, heads * qn_sh, hmask, other, DV, EVEN_ODD)
    if F16:  # fp16 MMAs: one power of two for every part, undone in qk_scale
        qa = tl.maximum(tl.maximum(_amax2(q1a), _amax2(q1b)), tl.maximum(_amax2(q3a), _amax2(q3b)))
        if V_PARTS == 2:
            qa = tl.maximum(qa, tl.maximum(_amax2(q2a), _amax2(q2b)))
        kq = _f16_shift(qa)
        q1a, q1b, q3a, q3b = q1a * _pow2(kq), q1b * _pow2(kq), q3a * _pow2(kq), q3b * _pow2(kq)
        if V_PARTS == 2:
            q2a, q2b = q2a * _pow2(kq), q2b * _pow2(kq)
        qk_scale = qk_scale * _pow2(-kq)
    q1a, q1b = _dot_dtype(q1a, INTERP, F16), _dot_dtype(q1b, INTERP, F16)
    q3a, q3b = _dot_dtype(q3a, INTERP, F16), _dot_dtype(q3b, INTERP, F16)
    if V_PARTS == 2:
        q2a, q2b = _dot_dtype(q2a, INTERP, F16), _dot_dtype(q2b, INTERP, F16)
    if TOKENS_AS_M:  # the dots' B operand [W, BLOCK_H]
        q1a, q1b, q3a, q3b = tl.trans(q1a), tl.trans(q1b), tl.trans(q3a), tl.trans(q3b)
        if V_PARTS == 2:
            q2a, q2b = tl.trans(q2a), tl.trans(q2b)
        acc_a = tl.zeros((AW, BLOCK_H), dtype=tl.float32)
        acc_b = tl.zeros((AW, BLOCK_H), dtype=tl.float32)
    else:
        acc_a = tl.zeros((BLOCK_H, AW), dtype=tl.float32)
        acc_b = tl.zeros((BLOCK_H, AW), dtype=tl.float32)
    if SPLIT_SCORES:  # the scores come out scaled (see `_scores`)
        k_soft = 1.0
    else:
        k_soft = qk_scale
    m_i = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for t0 in range(lo, hi, BLOCK_N):
        slots, tmask = token_slots(kv_indices, start, t0, hi, BLOCK_N, PAGE)
        c1a, c1b = _latent_tile(kv_ptr, kvs_ptr, slots, tmask, d_stride, s_stride, own, DV, BLOCK_N, KV_FMT,
                                DECODE, INTERP)
        c3a, c3b = _latent_tile(kv_ptr, kvs_ptr, slots, tmask, d_stride, s_stride, DL, DR, BLOCK_N, KV_FMT,
                                DECODE, INTERP)
        s = _scores(q1a, q1b, c1a, c1b, qk_scale, EVEN_ODD, TOKENS_AS_M, INTERP, F16, SPLIT_SCORES)
        if V_PARTS == 2:  # (own + other) + rope: the same float sum, bit for bit, in both parts
            c2a, c2b = _latent_tile(kv_ptr, kvs_ptr, slots, tmask, d_stride, s_stride, other, DV, BLOCK_N, KV_FMT,
                                    DECODE, INTERP)
            s = s + _scores(q2a, q2b, c2a, c2b, qk_scale, EVEN_ODD, TOKENS_AS_M, INTERP, F16, SPLIT_SCORES)
        s = s + _scores(q3a, q3b, c3a, c3b, qk_scale, EVEN_ODD, TOKENS_AS_M, INTERP, F16, SPLIT_SCORES)
        # V is this part's NoPE latent itself
        if TOKENS_AS_M:
            p, alpha, m_i, l_i = online_softmax_step_t(s, tmask, k_soft, m_i, l_i)
            acc_a = acc_a * alpha[None, :] + _dot(tl.trans(c1a), p, INTERP, F16)
            if EVEN_ODD:
                acc_b = acc_b * alpha[None, :] + _dot(tl.trans(c1b), p, INTERP, F16)
        else:
            p, alpha, m_i, l_i = online_softmax_step(s, tmask, k_soft, m_i, l_i)
            acc_a = acc_a * alpha[:, None] + _dot(p, c1a, INTERP, F16)
            if EVEN_ODD:
                acc_b = acc_b * alpha[:, None] + _dot(p, c1b, INTERP, F16)

    nonempty = hi > lo
    inv_l = split_inv_l(l_i, nonempty)
    row = (b.to(tl.int64) * HQ + heads) * SPLITS + split
    c2 = tl.arange(0, AW)
    # even/odd: this part's even elements go to mid columns own/2 + j, its odd ones to DL/2 + own/2 + j
    col_a = own // 2 + c2 if EVEN_ODD else own + c2
    if TOKENS_AS_M:
        tl.store(mid_o + row[None, :] * DL + col_a[:, None], acc_a * inv_l[None, :], mask=hmask[None, :])
        if EVEN_ODD:
            tl.store(mid_o + row[None, :] * DL + DL // 2 + col_a[:, None], acc_b * inv_l[None, :],
                     mask=hmask[None, :])
    else:
        tl.store(mid_o + row[:, None] * DL + col_a[None, :], acc_a * inv_l[:, None], mask=hmask[:, None])
        if EVEN_ODD:
            tl.store(mid_o + row[:, None] * DL + DL // 2 + col_a[None, :], acc_b * inv_l[:, None],
                     mask=hmask[:, None])
    tl.store(mid_lse + row, split_lse(m_i, l_i, nonempty), mask=hmask & (part == 0))  # equal in every part
