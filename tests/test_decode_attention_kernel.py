"""The split-KV paged decode-attention kernel (`nvfp4_kvcache_triton.decode_attention`) against the float64 oracle.

* every case: `|kernel - nvfp4_kvcache.attention.decode_attention| <= tolerance(...)` below;
* the dequantized values themselves are exact: a probe kernel runs the stage-1 tile decoder on every
  code and scale byte, and length-1 requests (softmax weight exactly 1) return V rows bit for bit;
* the BF16 and FP8 baselines (same kernel, other `KV_FMT`) against float64 attention on their values;
* every bad argument raises the oracle's exception type;
* `scripts/bench_decode_attention.py --smoke` runs (CPU, interpreter);
* `-m gpu`: the same at full size on a GPU (bf16 dots: the GPU tolerance).

Run: `TRITON_INTERPRET=1 python -m pytest -q tests/test_decode_attention_kernel.py`.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from nvfp4_kvcache_triton._triton import decode_attention as kd
from nvfp4_kvcache_triton.decode_attention import (
    FP4KVLayer,
    attention_close,
    attention_tolerance,
    decode_attention_dense,
    decode_attention_fp4,
    fp4_layer,
)
from nvfp4_kvcache.attention import decode_attention, ragged_attention
from nvfp4_kvcache.formats import E2M1
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
from nvfp4_kvcache.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # the interpreter evaluates masked lanes
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # numpy, inside the interpreter


# The tolerance is nvfp4_kvcache_triton.decode_attention.attention_tolerance (its docstring says why).
tolerance = attention_tolerance


def _paged_indices(lens: list[int], page: int, n_pages: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """kv_indptr/kv_indices as SGLang's paged allocator makes them: whole pages in random order
    (page 0 is the padding page, never used), consecutive slots within a page."""
    need = sum(math.ceil(n / page) for n in lens)
    assert need <= n_pages
    pages = torch.randperm(n_pages, generator=gen)[:need] + 1
    idx, p = [], 0
    for n in lens:
        k = math.ceil(n / page)
        slots = (pages[p : p + k, None] * page + torch.arange(page)).reshape(-1)[:n]
        idx.append(slots)
        p += k
    indptr = torch.zeros(len(lens) + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.tensor(lens), 0)
    return indptr, torch.cat(idx)


def _pool(recipe: str, hkv: int, d: int, page: int, size: int, gen: torch.Generator, gk=0.37, gv=1.9, device="cpu"):
    kw = dict(k_scales=[gk], v_scales=[gv]) if recipe == "nvfp4" else {}
    pool = MHATokenToKVPoolFP4(size=size, page_size=page, layer_num=1, head_num=hkv, head_dim=d, recipe=recipe,
                               device=device, **kw)
    loc = torch.arange(page, size + page)
    # per-channel and per-token magnitudes so block scales vary (several binades)
    mag = torch.exp2(torch.randint(-3, 4, (size, hkv, d // 16, 1), generator=gen).float())
    k = (torch.randn(size, hkv, d // 16, 16, generator=gen) * mag).reshape(size, hkv, d)
    v = (torch.randn(size, hkv, d // 16, 16, generator=gen) * mag.flip(0)).reshape(size, hkv, d)
    if recipe == "nvfp4":  # keep values inside the (e4m3 * g) range
        k, v = k * gk * 6, v * gv * 6
    pool.set_kv_buffer(0, loc.to(device), k.to(device), v.to(device))
    return pool


def _gpu_and_cpu_pools(recipe, hkv, d, page, size, gen):
    """The same bytes in a CUDA pool (quantized there: fast) and a CPU pool (for the oracle)."""
    gpu = _pool(recipe, hkv, d, page, size, gen, device="cuda")
    kw = dict(k_scales=[0.37], v_scales=[1.9]) if recipe == "nvfp4" else {}
    cpu = MHATokenToKVPoolFP4(size=size, page_size=page, layer_num=1, head_num=hkv, head_dim=d, recipe=recipe, **kw)
    for name, t in gpu.layer_tensors(0).items():
        cpu.layer_tensors(0)[name].copy_(t.cpu())
    return gpu, cpu


def _check_case(recipe, hq, hkv, d, page, lens, splits, seed, sm_scale=None, use_page_shortcut=True):
    gen = torch.Generator().manual_seed(seed)
    size = page * (sum(math.ceil(n / page) for n in lens) + 2)
    pool = _pool(recipe, hkv, d, page, size, gen)
    indptr, idx = _paged_indices(lens, page, size // page, gen)
    q = torch.randn(len(lens), hq, d, generator=gen)
    out = decode_attention_fp4(q, pool, 0, indptr, idx, sm_scale=sm_scale, num_kv_splits=splits,
                               page_size=page if use_page_shortcut else 1)
    ref = decode_attention(q, pool, 0, indptr, idx, sm_scale=sm_scale)
    k, v = pool.gather_kv(0, idx, dtype=torch.float64)
    tol = tolerance(q, k, v, sm_scale or 1 / math.sqrt(d), max(lens), gpu=False)
    err = float((out.double() - ref).abs().max())
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert err <= tol, f"max abs err {err:.3g} > tolerance {tol:.3g}"
    return err, tol


# ---------------------------------------------------------------------------------------------
# correctness vs the oracle (interpreter, small shapes)
# ---------------------------------------------------------------------------------------------
GQA = [(2, 2), (8, 2), (16, 2)]  # ratios 1, 4, 8


@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
@pytest.mark.parametrize("hq,hkv", GQA, ids=lambda x: str(x))
@pytest.mark.parametrize("d,page", [(64, 1), (128, 16)])
def test_matches_oracle(recipe, hq, hkv, d, page):
    # ragged: length 1, lengths not multiples of the split size or of BLOCK_N, one longer request
    lens = [1, 37, 100]
    splits = {1: 3, 16: 4}[page] + (hq // hkv == 8)
    _check_case(recipe, hq, hkv, d, page, lens, splits, seed=hq * 1000 + d + page)


@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
def test_head_dim_128_gathered_slots(recipe):
    # page 16 pool, but every slot gathered (page_size=1), GQA 8
    _check_case(recipe, 16, 2, 128, 16, [1, 37, 100], 5, seed=128, use_page_shortcut=False)


@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
def test_head_dim_256(recipe):
    _check_case(recipe, 8, 1, 256, 16, [5, 70], 2, seed=256)


@pytest.mark.parametrize("splits", [1, 2, 7, 16])
def test_splits_and_page64(splits):
    # more splits than tokens (empty splits), page 64, an explicit sm_scale
    _check_case("nvfp4", 8, 2, 64, 64, [3, 130], splits, seed=splits, sm_scale=0.3)


@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
def test_head_major_buffers_give_the_same_result(recipe):
    """The kernel reads rows through their strides: the same pool copied head-major ([H, slots, ...]
    storage, viewed as [slots, H, ...]) gives bit-identical outputs, FP4 and the dense baselines."""
    gen = torch.Generator().manual_seed(3)
    hq, hkv, d, page, lens = 8, 2, 64, 16, [40, 7]
    size = page * (sum(math.ceil(n / page) for n in lens) + 2)
    pool = _pool(recipe, hkv, d, page, size, gen)
    indptr, idx = _paged_indices(lens, page, size // page, gen)
    q = torch.randn(len(lens), hq, d, generator=gen)
    fl = fp4_layer(pool, 0)

    def head_major(t):
        t = t.reshape(t.shape[0], hkv, -1)
        return t.transpose(0, 1).contiguous().transpose(0, 1)

    hm = FP4KVLayer(*(head_major(getattr(fl, n)) for n in ("k", "v", "k_scale", "v_scale")), fl.recipe,
                    fl.k_global, fl.v_global)
    assert hm.k.stride(1) == hm.k.shape[0] * d // 2 and hm.k_scale.stride(0) == d // 16  # head-major
    base = decode_attention_fp4(q, fl, None, indptr, idx, num_kv_splits=2, page_size=page)
    assert torch.equal(decode_attention_fp4(q, hm, None, indptr, idx, num_kv_splits=2, page_size=page), base)
    k, v = pool.gather_kv(0, torch.arange(size + page), dtype=torch.float32)
    dense = decode_attention_dense(q, k.bfloat16(), v.bfloat16(), indptr, idx, page_size=page)
    assert torch.equal(decode_attention_dense(q, head_major(k.bfloat16()), head_major(v.bfloat16()), indptr, idx,
                                              page_size=page), dense)
    with pytest.raises(ValueError, match="same shape and strides"):
        decode_attention_fp4(q, FP4KVLayer(fl.k, fl.v, fl.k_scale, hm.v_scale, fl.recipe, fl.k_global, fl.v_global),
                             None, indptr, idx)
    with pytest.raises(ValueError, match="multiples of the row length"):
        decode_attention_fp4(q, FP4KVLayer(fl.k[:, :, 1:], fl.v[:, :, 1:], fl.k_scale, fl.v_scale, fl.recipe,
                                           fl.k_global, fl.v_global), None, indptr, idx)
    odd = torch.zeros(fl.k_scale.shape[0], hkv, d // 16 + 1, dtype=torch.uint8)[:, :, 1:]
    with pytest.raises(ValueError, match="multiples of the scale row length"):
        decode_attention_fp4(q, FP4KVLayer(fl.k, fl.v, odd, odd, fl.recipe, fl.k_global, fl.v_global), None, indptr, idx)
    with pytest.raises(ValueError, match="multiples of D"):
        wide = torch.zeros(k.shape[0], hkv, d + 1, dtype=torch.bfloat16)[:, :, 1:]
        decode_attention_dense(q, wide, wide, indptr, idx)
    with pytest.raises(ValueError, match="contiguous rows"):
        decode_attention_fp4(q, FP4KVLayer(fl.k.transpose(1, 2).contiguous().transpose(1, 2), fl.v, fl.k_scale,
                                           fl.v_scale, fl.recipe, fl.k_global, fl.v_global), None, indptr, idx)


def test_page_shortcut_equals_gather():
    gen = torch.Generator().manual_seed(5)
    pool = _pool("fp4_mx_block16", 2, 64, 16, 256, gen)
    indptr, idx = _paged_indices([33, 70], 16, 16, gen)
    q = torch.randn(2, 8, 64, generator=gen)
    a = decode_attention_fp4(q, pool, 0, indptr, idx, page_size=16, num_kv_splits=3)
    b = decode_attention_fp4(q, pool, 0, indptr, idx, page_size=1, num_kv_splits=3)
    assert torch.equal(a, b)


def test_global_scales_fold_not_per_element():
    """nvfp4 with non-1 global scales: scaling k_scales by 2 must equal scaling sm_scale by 2, and
    scaling v_scales by 2 doubles the output exactly (the scales are folded, not per element)."""
    gen = torch.Generator().manual_seed(9)
    pool = _pool("nvfp4", 2, 64, 1, 64, gen, gk=0.37, gv=1.9)
    indptr, idx = torch.tensor([0, 20, 50]), torch.arange(1, 51)
    q = torch.randn(2, 4, 64, generator=gen)
    base = decode_attention_fp4(q, pool, 0, indptr, idx, num_kv_splits=2)
    fl = fp4_layer(pool, 0)
    fl2 = FP4KVLayer(fl.k, fl.v, fl.k_scale, fl.v_scale, "nvfp4", fl.k_global * 2, fl.v_global * 2)
    out2 = decode_attention_fp4(q, fl2, None, indptr, idx, num_kv_splits=2, sm_scale=0.5 / 8)
    assert torch.equal(out2, base * 2)


# ---------------------------------------------------------------------------------------------
# the dequantized values are exact
# ---------------------------------------------------------------------------------------------
@triton.jit
def _tile_probe(data_ptr, scale_ptr, slots_ptr, out_e, out_o, d_stride, s_stride, n,
                KV_FMT: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr):
    t = tl.arange(0, BLOCK_N)
    tmask = t < n
    slots = tl.load(slots_ptr + t, mask=tmask, other=0).to(tl.int64)
    ev, od = kd.load_fp4_tile(data_ptr + D // 2, scale_ptr + D // 16, slots, tmask, d_stride, s_stride, KV_FMT, D,
                              BLOCK_N)  # head 1
    c = tl.arange(0, D // 2)
    tl.store(out_e + t[:, None] * (D // 2) + c[None, :], ev, mask=tmask[:, None])
    tl.store(out_o + t[:, None] * (D // 2) + c[None, :], od, mask=tmask[:, None])


@triton.jit
def _tile_probe_dec(data_ptr, scale_ptr, slots_ptr, out_e, out_o, d_stride, s_stride, n,
                    KV_FMT: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, DECODE: tl.constexpr,
                    INTERP: tl.constexpr = False):
    t = tl.arange(0, BLOCK_N)
    tmask = t < n
    slots = tl.load(slots_ptr + t, mask=tmask, other=0).to(tl.int64)
    ev, od = kd.load_fp4_tile(data_ptr + D // 2, scale_ptr + D // 16, slots, tmask, d_stride, s_stride, KV_FMT, D,
                              BLOCK_N, DECODE, INTERP)  # head 1
    c = tl.arange(0, D // 2)
    tl.store(out_e + t[:, None] * (D // 2) + c[None, :], ev, mask=tmask[:, None])
    tl.store(out_o + t[:, None] * (D // 2) + c[None, :], od, mask=tmask[:, None])


@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
def test_tile_decoder_exact_every_code_and_scale_byte(recipe):
    """The stage-1 tile decoder on every (code, code) byte under every scale byte the recipe can
    store, against the recipe's own decode: equal bit for bit (up to the folded 2**-14)."""
    d, h = 128, 2
    r = get_recipe(recipe)
    sbytes = [b for b in range(256) if (b & 0x7F) != 0x7F] if recipe == "nvfp4" else list(range(0, 255))
    n = len(sbytes)
    data = torch.zeros(n, h, d // 2, dtype=torch.uint8)
    data[:, 1] = (torch.arange(n)[:, None] * 7 + torch.arange(d // 2)) % 256  # every byte, shifted per row
    scales = torch.zeros(n, h, d // 16, dtype=torch.uint8)
    scales[:, 1] = torch.tensor(sbytes, dtype=torch.uint8)[:, None].roll(1, 0).expand(n, d // 16).clone()
    scales[:, 1, ::2] = torch.tensor(sbytes, dtype=torch.uint8)[:, None]
    slots = torch.arange(n)
    ev = torch.empty(n, d // 2)
    od = torch.empty(n, d // 2)
    fmt = kd.FMT_IDS[recipe]
    _tile_probe[(1,)](data, scales, slots, ev, od, h * d // 2, h * d // 16, n,
                      KV_FMT=fmt, D=d, BLOCK_N=triton.next_power_of_2(n))
    g = torch.tensor(1.0) if recipe == "nvfp4" else None
    want = r.dequantize_parts(data[:, 1], scales[:, 1], g, torch.float32)  # [n, d]
    got = torch.stack([ev, od], -1).reshape(n, d) / kd.PLACEMENT_FACTOR
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # -0.0 and NaN-free: bitwise


@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
@pytest.mark.parametrize("hq,hkv", [(2, 2), (8, 2)])
def test_length_one_requests_return_v_rows_exactly(recipe, hq, hkv):
    """A request of one token has softmax weight exactly 1: the output is that slot's V row, which
    must equal the oracle's dequantized value bit for bit (float32), global scale included."""
    gen = torch.Generator().manual_seed(3)
    pool = _pool(recipe, hkv, 64, 1, 48, gen)
    slots = torch.randperm(48, generator=gen)[:12] + 1
    q = torch.randn(12, hq, 64, generator=gen)
    out = decode_attention_fp4(q, pool, 0, torch.arange(13), slots, num_kv_splits=2)
    _, v = pool.gather_kv(0, slots, dtype=torch.float32)
    assert torch.equal(out, v.repeat_interleave(hq // hkv, dim=1))


def _run_ptx(asm: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute the straight-line b32 PTX of the GPU-only decoders on numpy uint32 arrays.

    Supports exactly what they use: `and`, `shr`, `shl`, `prmt` (default mode: selector
    nibble bit 3 replicates the selected byte's sign bit), `lop3` (any truth table), `mov.b32`
    into two 16-bit halves and `cvt.rn.f16x2.e4m3x2` (through torch's E4M3 -> fp16).
    """
    regs = dict(inputs)

    def val(tok):
        tok = tok.strip()
        return regs[tok] if tok in regs else np.uint32(int(tok, 16) if tok.startswith("0x") else int(tok))

    for line in asm.splitlines():
        line = line.strip().rstrip(";")
        if not line or line[0] in "{}." or line.startswith(".reg"):
            continue
        op, args = line.split(None, 1)
        if op == "mov.b32":  # mov.b32 {lo, hi}, src: split into 16-bit halves
            lo_, hi_ = [x.strip(" {}") for x in args.split("}")[0].split(",")]
            w = val(args.split("}")[1].strip(" ,"))
            regs[lo_] = np.asarray(w & np.uint32(0xFFFF), dtype=np.uint32)
            regs[hi_] = np.asarray(w >> np.uint32(16), dtype=np.uint32)
            continue
        dst, *src = [a.strip() for a in args.split(",")]
        v = [np.asarray(val(a), dtype=np.uint32) for a in src]
        if op == "and.b32":
            r = v[0] & v[1]
        elif op == "shr.b32":
            r = v[0] >> v[1]
        elif op == "shl.b32":
            r = (v[0].astype(np.uint64) << v[1].astype(np.uint64)).astype(np.uint32)
        elif op == "prmt.b32":
            both = (v[1].astype(np.uint64) << np.uint64(32)) | v[0].astype(np.uint64)
            r = np.zeros(np.broadcast(*v).shape, dtype=np.uint32)
            for i in range(4):
                sel = (v[2] >> np.uint32(4 * i)) & np.uint32(0xF)
                byte = ((both >> ((sel & np.uint32(7)).astype(np.uint64) * np.uint64(8))) & np.uint64(0xFF)).astype(np.uint32)
                rep = np.where(byte & np.uint32(0x80), np.uint32(0xFF), np.uint32(0))
                r = r | (np.where(sel & np.uint32(8), rep, byte).astype(np.uint32) << np.uint32(8 * i))
        elif op == "cvt.rn.f16x2.e4m3x2":  # two E4M3 bytes -> two fp16 halves, byte i -> half i
            def f16(byte):
                x = torch.from_numpy((byte & np.uint32(0xFF)).astype(np.uint8)).view(torch.float8_e4m3fn)
                return x.to(torch.float16).view(torch.int16).numpy().astype(np.uint16).astype(np.uint32)
            r = f16(v[0]) | (f16(v[0] >> np.uint32(8)) << np.uint32(16))
        elif op == "lop3.b32":
            a, b, c, lut = v
            r = np.zeros(np.broadcast(a, b, c).shape, dtype=np.uint32)
            for i in range(8):
                if (int(lut) >> i) & 1:
                    r = r | ((a if i & 4 else ~a) & (b if i & 2 else ~b) & (c if i & 1 else ~c))
        else:
            raise NotImplementedError(op)
        regs[dst] = np.asarray(r, dtype=np.uint32)
    return regs


def test_prmt_decoder_ptx_emulated_exhaustively():
    """The inline PTX of decode='prmt'/'prmt_bf16' (GPU only), executed by an emulator on every
    16-bit half-word and 2**16 random words: each output word j is bf16(E2M1[byte j & 15]) |
    bf16(E2M1[byte j >> 4]) << 16, bit for bit (-0.0 included)."""
    halves = np.arange(1 << 16, dtype=np.uint32)
    words = np.concatenate([halves, halves << np.uint32(16),
                            np.random.default_rng(0).integers(0, 2**32, 1 << 16, dtype=np.uint64).astype(np.uint32)])
    regs = _run_ptx(kd._E2M1_PRMT_ASM, {"$4": words})
    table = np.array(E2M1.table, dtype=np.float32).view(np.uint32)
    for j in range(4):
        out = regs[f"${j}"]
        byte = (words >> np.uint32(8 * j)) & np.uint32(0xFF)
        assert np.array_equal((out & np.uint32(0xFFFF)) << np.uint32(16), table[byte & np.uint32(15)])
        assert np.array_equal(out & np.uint32(0xFFFF0000), table[byte >> np.uint32(4)])


def test_cvt_decoder_ptx_emulated_exhaustively():
    """The inline PTX of decode='cvt_f16' (GPU only), executed by the emulator (`cvt` through
    torch's E4M3 -> fp16) on every 16-bit half-word and 2**16 random words: $0/$1 are the fp16 of
    the low nibbles (even elements) of bytes 0,1 / 2,3, $2/$3 of the high nibbles, each exactly
    `E2M1 * 2**-6` (-0.0 included)."""
    halves = np.arange(1 << 16, dtype=np.uint32)
    words = np.concatenate([halves, halves << np.uint32(16),
                            np.random.default_rng(1).integers(0, 2**32, 1 << 16, dtype=np.uint64).astype(np.uint32)])
    regs = _run_ptx(kd._E2M1_CVT_ASM, {"$4": words})
    want16 = torch.tensor([x * 2.0**kd.CVT_EXP for x in E2M1.table], dtype=torch.float16)
    want16 = want16.view(torch.int16).numpy().astype(np.uint16).astype(np.uint32)
    for out, nib in (("$0", 0), ("$1", 0), ("$2", 4), ("$3", 4)):
        first = 0 if out in ("$0", "$2") else 2   # bytes feeding this output's low and high halves
        for half in (0, 1):
            byte = (words >> np.uint32(8 * (first + half))) & np.uint32(0xFF)
            code = (byte >> np.uint32(nib)) & np.uint32(15)
            got = (regs[out] >> np.uint32(16 * half)) & np.uint32(0xFFFF)
            assert np.array_equal(got, want16[code]), (out, half)


def _nvfp4_every_code_and_scale(d: int, h: int):
    """Head 1 of `n` slots: every packed byte (shifted per row) under every finite E4M3 scale byte,
    two scale bytes per row (alternating blocks). Returns `(data, scales, n)`."""
    sbytes = torch.tensor([b for b in range(256) if (b & 0x7F) != 0x7F], dtype=torch.uint8)
    n = sbytes.numel()
    data = torch.zeros(n, h, d // 2, dtype=torch.uint8)
    data[:, 1] = (torch.arange(n)[:, None] * 7 + torch.arange(d // 2)) % 256
    scales = torch.zeros(n, h, d // 16, dtype=torch.uint8)
    scales[:, 1] = sbytes[:, None].roll(1, 0).expand(n, d // 16).clone()
    scales[:, 1, ::2] = sbytes[:, None]
    return data, scales, n


def test_cvt_f16_tile_decoder_exact_every_code_and_scale_byte():
    """decode='cvt_f16' (nvfp4): the tile decoder's pure-Triton twin (what the interpreter runs) on
    every (code, code) byte under every finite E4M3 scale byte gives `E2M1 * scale * 2**-6` in
    fp16, bit for bit the recipe's decode (fp16 holds every such product exactly)."""
    d, h = 128, 2
    data, scales, n = _nvfp4_every_code_and_scale(d, h)
    ev = torch.empty(n, d // 2, device=DEV)
    od = torch.empty(n, d // 2, device=DEV)
    _tile_probe_dec[(1,)](data.to(DEV), scales.to(DEV), torch.arange(n, device=DEV), ev, od, h * d // 2, h * d // 16,
                          n, KV_FMT=kd.FMT_IDS["nvfp4"], D=d, BLOCK_N=triton.next_power_of_2(n),
                          DECODE=kd.DECODE_IDS["cvt_f16"], INTERP=True)
    want = get_recipe("nvfp4").dequantize_parts(data[:, 1], scales[:, 1], torch.tensor(1.0), torch.float32)
    got = torch.stack([ev, od], -1).reshape(n, d).cpu() / 2.0**kd.CVT_EXP
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


def test_no_scale_is_one_cached_tensor():
    """A call without scales copies nothing to the device (so it can be captured in a CUDA graph):
    `None` resolves to one cached `1.0` per device; a float is a fresh tensor every time."""
    from nvfp4_kvcache_triton.decode_attention import _scale_tensor

    dev = torch.device(DEV)
    one = _scale_tensor(None, "k_scale", dev)
    assert one is _scale_tensor(None, "v_scale", dev) and float(one) == 1.0 and one.dtype == torch.float32
    assert _scale_tensor(0.5, "k_scale", dev) is not _scale_tensor(0.5, "k_scale", dev)


@triton.jit
def _block16_cvt_probe(data_ptr, scale_ptr, out_e, out_o, out_ref, D: tl.constexpr):
    """One program per row: a two-token step whose second token is masked (it loads zeros)."""
    r = tl.program_id(0)
    t = r + tl.arange(0, 2)
    tmask = tl.arange(0, 2) < 1
    pb, sb = kd.load_fp4_raw(data_ptr, scale_ptr, t.to(tl.int64), tmask, D // 2, D // 16, D)
    ref = kd.block16_tile_ref(sb)
    ev, od = kd.decode_block16_cvt(pb, sb, ref, D, 2, True)
    c = tl.arange(0, D // 2)
    tl.store(out_e + t[:, None] * (D // 2) + c[None, :], ev.to(tl.float32), mask=tmask[:, None])
    tl.store(out_o + t[:, None] * (D // 2) + c[None, :], od.to(tl.float32), mask=tmask[:, None])
    tl.store(out_ref + r, ref)


def _block16_rows(d: int):
    """Rows of 8 blocks: every packed byte (shifted per row), under scale bytes that span 0 to 17
    binades below the row's largest (exact) and 18 to 159 (rounded), plus rows with byte-0 blocks
    (NaN blocks; nonzero codes under them are 127 binades down) and infinite (byte 255) blocks.
    Returns `(data, scales)`."""
    nb = d // 16
    rows = []
    for top in (100, 127, 140, 253):
        for spread in list(range(0, 18)) + [18, 20, 24, 30, 60, 159]:
            low = max(top - spread, 94)
            rows.append([top] + [low + (top - low) * j // (nb - 2) for j in range(nb - 1)])
    rows += [[127, 0, 126, 125, 0, 127, 120, 110], [127, 255, 126, 0, 127, 127, 120, 110], [0] * nb, [255] * nb]
    scales = torch.tensor(rows, dtype=torch.uint8)
    n = scales.shape[0]
    data = ((torch.arange(n)[:, None] * 7 + torch.arange(d // 2)) % 256).to(torch.uint8)
    return data, scales


def test_cvt_f16_power_of_two_tile_decoder_exact_within_17_binades():
    """decode='cvt_f16' over power-of-two scales (fp4_mx_block16): a step's tile is decoded
    relative to its largest finite scale byte (here a one-token step per row). Times
    `2**(ref - 127)` and the cvt path's `2**6`, it equals the recipe's decode bit for bit while
    a block lies at most 17 binades below the largest (NaN blocks: zeros; infinite blocks: NaN, as
    the oracle's). Further below it is off by at most `2**-19` times the largest block scale (the
    float16 tile keeps multiples of `2**-24`, and the cvt path's `2**6` is undone)."""
    d = 128
    data, scales = _block16_rows(d)
    n = data.shape[0]
    ev = torch.empty(n, d // 2)
    od = torch.empty(n, d // 2)
    ref = torch.empty(n, dtype=torch.int32)
    _block16_cvt_probe[(n,)](data, scales, ev, od, ref, D=d)
    want = get_recipe("fp4_mx_block16").dequantize_parts(data, scales.reshape(n, -1), None, torch.float32)
    finite = torch.where(scales == 255, 0, scales.int())
    assert torch.equal(ref, finite.amax(1).int())
    # in float32, as the recipe decodes: the largest scale bytes overflow to inf for codes >= 4
    got = torch.stack([ev, od], -1).reshape(n, d) * torch.exp2(ref.float() - 127)[:, None] * 2.0 ** -kd.CVT_EXP
    assert torch.isinf(want).any()
    below = (ref[:, None] - scales.int()).repeat_interleave(16, 1)     # binades under the token's largest
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan)
    assert nan.any() and (want[~nan] == 0).any()
    exact = (below <= 17) | nan
    assert torch.equal(got[exact & ~nan], want[exact & ~nan])
    far = ~exact
    assert far.any() and (got[far] != want[far]).any()           # the window is real
    bound = 2.0 ** -19 * torch.exp2(ref.double() - 127)[:, None].expand(n, d)
    assert ((got[far].double() - want[far].double()).abs() <= bound[far]).all()


@pytest.mark.parametrize("recipe,decode", [("nvfp4", "placement"), ("nvfp4", "cvt_f16"),
                                           ("fp4_mx_block16", "placement"), ("fp4_mx_block16", "cvt_f16")])
@pytest.mark.parametrize("page", [1, 16])
def test_register_prefetch_is_the_same_computation(recipe, decode, page):
    """`prefetch=1` (software pipelining in registers) only moves loads earlier: the output is
    bit for bit the output without it, and within the tolerance of the oracle; requests shorter
    than one step, exactly one step and several steps long."""
    gen = torch.Generator().manual_seed(21)
    hq, hkv, d, lens = 8, 2, 64, [1, 32, 33, 150]
    size = 16 * (sum(math.ceil(n / 16) for n in lens) + 2)
    pool = _pool(recipe, hkv, d, 16, size, gen)
    indptr, idx = _paged_indices(lens, 16, size // 16 - 1, gen)
    q = torch.randn(len(lens), hq, d, generator=gen)
    outs = [decode_attention_fp4(q, pool, 0, indptr, idx, num_kv_splits=2, page_size=page, decode=decode,
                                 prefetch=pf) for pf in (0, 1)]
    assert torch.equal(outs[0], outs[1])
    ref = decode_attention(q, pool, 0, indptr, idx)
    k, v = pool.gather_kv(0, idx, dtype=torch.float64)
    assert float((outs[1].double() - ref).abs().max()) <= tolerance(q, k, v, 1 / math.sqrt(d), max(lens), gpu=False)


@pytest.mark.parametrize("tokens_as_m", [0, 1])
def test_cvt_f16_power_of_two_scales_far_apart(tokens_as_m):
    """decode='cvt_f16' over power-of-two scales when one step's block scales lie far apart: a
    block 2**-23 below the others (rounded on its way into float16), a token whose V is 1e6 times
    smaller than its neighbours' but which takes almost all the softmax weight, and one with a
    1000x larger V and almost none. Within the oracle's tolerance in both MMA orientations, and
    the small token's V is what comes out (its weight does not underflow)."""
    gen = torch.Generator().manual_seed(5)
    hq, hkv, d, n = 4, 1, 64, 40
    pool = MHATokenToKVPoolFP4(size=64, page_size=16, layer_num=1, head_num=hkv, head_dim=d, recipe="fp4_mx_block16")
    k = torch.randn(n, hkv, d, generator=gen)
    v = torch.randn(n, hkv, d, generator=gen)
    q = torch.randn(1, hq, d, generator=gen)
    k[2, 0, :16] *= 2.0 ** -23
    k[5] = 4 * q[0, :1] / q[0, :1].norm()           # token 5 takes almost all the weight of head 0
    v[5] *= 1e-6
    v[9] *= 1e3
    k[9] = -k[5]
    pool.set_kv_buffer(0, torch.arange(16, 16 + n), k, v)
    indptr, idx = torch.tensor([0, n]), torch.arange(16, 16 + n)
    out = decode_attention_fp4(q, pool, 0, indptr, idx, num_kv_splits=1, decode="cvt_f16", block_n=16,
                               tokens_as_m=tokens_as_m)
    ref = decode_attention(q, pool, 0, indptr, idx)
    kk, vv = pool.gather_kv(0, idx, dtype=torch.float64)
    assert float((out.double() - ref).abs().max()) <= tolerance(q, kk, vv, 1 / math.sqrt(d), n, gpu=False)
    assert float((out[0, 0].double() - ref[0, 0]).abs().max()) <= 1e-3 * float(ref[0, 0].abs().max())


@pytest.mark.parametrize("tokens_as_m", [0, 1])
def test_cvt_f16_power_of_two_scales_one_token_requests_exact(tokens_as_m):
    """Weight-1 requests (one token each) return their V rows bit for bit through the
    power-of-two cvt path: every factor besides the softmax weight is an exact power of two."""
    gen = torch.Generator().manual_seed(8)
    hq, hkv, d = 8, 2, 64
    pool = MHATokenToKVPoolFP4(size=48, page_size=16, layer_num=1, head_num=hkv, head_dim=d, recipe="fp4_mx_block16")
    v = torch.randn(6, hkv, d, generator=gen) * torch.logspace(-8, 8, 6)[:, None, None]
    pool.set_kv_buffer(0, torch.arange(16, 22), torch.randn(6, hkv, d, generator=gen), v)
    q = torch.randn(6, hq, d, generator=gen)
    out = decode_attention_fp4(q, pool, 0, torch.arange(7), torch.arange(16, 22), decode="cvt_f16",
                               tokens_as_m=tokens_as_m, block_n=16)
    _, rows = pool.gather_kv(0, torch.arange(16, 22), dtype=torch.float32)
    assert torch.equal(out, rows.repeat_interleave(hq // hkv, dim=1))


def test_prmt_bf16_refuses_16_token_steps():
    """`prmt_bf16` at 16 tokens per step computes wrong outputs on an H200 with Triton 3.6 (the GPU
    test over every launch tile found it): the launcher refuses it with a clear error, before any
    kernel runs (also here, where the interpreter would refuse the inline PTX later)."""
    pool, q, indptr, idx = _small()
    with pytest.raises(ValueError, match="block_n >= 32"):
        decode_attention_fp4(q, pool, 0, indptr, idx, decode="prmt_bf16", block_n=16)


@pytest.mark.skipif(CUDA, reason="the interpreter's refusal")
@pytest.mark.parametrize("decode", ["prmt", "prmt_bf16"])
def test_inline_ptx_decoders_refused_by_the_interpreter(decode):
    pool, q, indptr, idx = _small()
    with pytest.raises(ValueError, match="inline PTX"):
        decode_attention_fp4(q, pool, 0, indptr, idx, decode=decode)
    with pytest.raises(ValueError, match="decode must be one of"):
        decode_attention_fp4(q, pool, 0, indptr, idx, decode="lut")


# ---------------------------------------------------------------------------------------------
# the BF16 / FP8 baselines (same kernel design)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["bf16", "fp8"])
@pytest.mark.parametrize("hq,hkv", [(4, 4), (16, 2)], ids=str)
def test_dense_baselines(fmt, hq, hkv):
    gen = torch.Generator().manual_seed(11)
    d, rows = 128, 300
    k = torch.randn(rows, hkv, d, generator=gen)
    v = torch.randn(rows, hkv, d, generator=gen)
    if fmt == "bf16":
        kb, vb, ks, vs, kd_, vd_ = k.bfloat16(), v.bfloat16(), None, None, 1.0, 1.0
    else:
        ks, vs = 0.05, 0.02
        kb, vb = (k / ks).to(torch.float8_e4m3fn), (v / vs).to(torch.float8_e4m3fn)
        kd_, vd_ = ks, vs
    indptr, idx = _paged_indices([1, 45, 130], 16, rows // 16 - 1, gen)
    q = torch.randn(3, hq, d, generator=gen)
    out = decode_attention_dense(q, kb, vb, indptr, idx, k_scale=ks, v_scale=vs, num_kv_splits=3, page_size=16)
    kk = kb[idx].double() * kd_
    vv = vb[idx].double() * vd_
    ref = ragged_attention(q, kk, vv, torch.arange(4), indptr, sm_scale=1 / math.sqrt(d), causal=False)
    tol = tolerance(q, kk, vv, 1 / math.sqrt(d), 130, gpu=False)
    assert float((out.double() - ref).abs().max()) <= tol


# ---------------------------------------------------------------------------------------------
# errors: the oracle's exception types
# ---------------------------------------------------------------------------------------------
def _small():
    pool = MHATokenToKVPoolFP4(size=16, page_size=1, layer_num=1, head_num=2, head_dim=64)
    pool.set_kv_buffer(0, torch.arange(1, 17), torch.randn(16, 2, 64), torch.randn(16, 2, 64))
    return pool, torch.randn(2, 4, 64), torch.tensor([0, 3, 5]), torch.tensor([1, 2, 3, 4, 5])


BAD = {
    "q int": (lambda q, p, i: (q.int(), p, i), ValueError),
    "q 2-D": (lambda q, p, i: (q[0], p, i), ValueError),
    "q wrong dim": (lambda q, p, i: (q[..., :32], p, i), ValueError),
    "q not a tensor": (lambda q, p, i: (q.tolist(), p, i), (TypeError, ValueError)),
    "slot out of range": (lambda q, p, i: (q, p, torch.tensor([1, 2, 3, 4, 17])), IndexError),
    "negative slot": (lambda q, p, i: (q, p, torch.tensor([1, 2, -1, 4, 5])), IndexError),
    "indices float": (lambda q, p, i: (q, p, i.float()), ValueError),
    "indptr short": (lambda q, p, i: (q, p[:2], i), ValueError),
    "indptr wrong total": (lambda q, p, i: (q, torch.tensor([0, 3, 4]), i), ValueError),
    "empty request": (lambda q, p, i: (q, torch.tensor([0, 0, 5]), i), ValueError),
    "heads not a multiple": (lambda q, p, i: (q[:, :3], p, i), ValueError),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_raise_like_the_oracle(case):
    pool, q, indptr, idx = _small()
    make, exc = BAD[case]
    args = make(q, indptr, idx)
    with pytest.raises(exc):
        decode_attention(args[0], pool, 0, args[1], args[2])
    with pytest.raises(exc):
        decode_attention_fp4(args[0], pool, 0, args[1], args[2])


def test_other_bad_arguments():
    pool, q, indptr, idx = _small()
    with pytest.raises(IndexError):
        decode_attention_fp4(q, pool, 3, indptr, idx)              # layer out of range
    with pytest.raises(TypeError):
        decode_attention_fp4(q, object(), 0, indptr, idx)
    with pytest.raises(ValueError, match="num_kv_splits"):
        decode_attention_fp4(q, pool, 0, indptr, idx, num_kv_splits=0)
    with pytest.raises(ValueError, match="on meta"):
        decode_attention_fp4(q, pool, 0, indptr.to("meta"), idx)  # device mismatch
    with pytest.raises(ValueError, match="page-contiguous"):
        decode_attention_fp4(q, pool, 0, indptr, torch.tensor([1, 5, 3, 4, 2]), page_size=4)
    with pytest.raises(ValueError, match="out_dtype"):
        decode_attention_fp4(q, pool, 0, indptr, idx, out_dtype=torch.float16)
    fl = fp4_layer(pool, 0)
    with pytest.raises(ValueError, match="layer must be None"):
        decode_attention_fp4(q, fl, 0, indptr, idx)
    bad = FP4KVLayer(fl.k, fl.v, fl.k_scale, fl.v_scale, "fp4_mx_block16", torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="no global scale"):
        decode_attention_fp4(q, bad, None, indptr, idx)
    bad = FP4KVLayer(fl.k.float(), fl.v, fl.k_scale, fl.v_scale, "fp4_mx_block16")
    with pytest.raises(ValueError, match="uint8"):
        decode_attention_fp4(q, bad, None, indptr, idx)
    bad = FP4KVLayer(fl.k, fl.v, fl.k_scale[:, :4], fl.v_scale, "fp4_mx_block16")
    with pytest.raises(ValueError, match="k_scale must have shape"):
        decode_attention_fp4(q, bad, None, indptr, idx)
    with pytest.raises(ValueError, match="k_scale/v_scale"):
        decode_attention_dense(q, torch.zeros(6, 2, 64).bfloat16(), torch.zeros(6, 2, 64).bfloat16(), indptr, idx,
                               k_scale=2.0)
    with pytest.raises(ValueError, match="bfloat16 or float8"):
        decode_attention_dense(q, torch.zeros(6, 2, 64), torch.zeros(6, 2, 64), indptr, idx)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or CUDA, reason="CPU without the interpreter only")
def test_cpu_tensor_without_interpreter_is_refused(monkeypatch):
    pool, q, indptr, idx = _small()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="need a CUDA tensor"):
        decode_attention_fp4(q, pool, 0, indptr, idx)


# ---------------------------------------------------------------------------------------------
# the benchmark script stays alive
# ---------------------------------------------------------------------------------------------
def _smoke(script: str, tmp_path) -> dict:
    """Run `scripts/<script> --smoke` under the interpreter; its JSON."""
    import json

    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_bench_script_smoke(tmp_path):
    data = _smoke("bench_decode_attention.py", tmp_path)
    assert {"device", "versions", "date", "command", "rows", "summary", "correctness"} <= set(data)
    assert all(c["ok"] for c in data["correctness"]) and not data["dropped_variants"]
    assert set(data["summary"]) == set(data["summary_page_blocks"]) == {"nvfp4", "fp4_mx_block16"}
    assert data["completed_stage"] == "done" and data["timing"]["fallbacks"] == 0
    head = [r for r in data["rows"] if r["kind"] == "headline"]
    assert {r["format"] for r in head} == set(data["variants"])
    # every launch tried passed the oracle check first, in both orientations
    assert all("ms" in t and t["max_rel_rms_err"] < 1e-5 for r in head for t in r["tried"])
    assert {t["tokens_as_m"] for r in head for t in r["tried"]} == {0, 1}
    # the upstream path at its pool size, and page-block variants left out of the page-1 shapes
    assert [u["pool_tokens"] for u in data["upstream_dequantize_then_bf16"]] == [56, 56]
    assert {r["format"] for r in data["shapes"]} == {v for v in data["sweep_formats"] if "@pages" not in v}
    assert data["flashinfer"]["available"] is False and "no CUDA device" in data["flashinfer"]["reason"]


def test_bench_flashinfer_summary():
    """The FlashInfer hook: our time over FlashInfer's NVFP4 decode per recipe, and FlashInfer's own
    BF16 over its NVFP4."""
    import bench_decode_attention as bda

    summary = {"nvfp4": {"ms": 0.1}, "fp4_mx_block16": {"ms": 0.2}}
    fi = {"available": True, "ran": True, "rows": [{"format": "bf16", "ms": 0.3}, {"format": "nvfp4", "ms": 0.15}]}
    bda.flashinfer_summary(summary, fi)
    assert summary["nvfp4"]["speedup_vs_flashinfer_nvfp4"] == pytest.approx(1.5)
    assert summary["fp4_mx_block16"]["speedup_vs_flashinfer_nvfp4"] == pytest.approx(0.75)
    assert fi["speedup_vs_bf16"] == pytest.approx(2.0)
    untouched = {"nvfp4": {"ms": 0.1}}
    bda.flashinfer_summary(untouched, {"available": False})
    assert untouched == {"nvfp4": {"ms": 0.1}}


def test_bench_compile_warm_up_worker():
    """The parallel compile warm-up runs each (shape, variant, launch) once on tiny caches and
    reports what fails, without raising."""
    import bench_decode_attention as bda
    from benchkit.kvcaches import Shape

    shape = Shape(True)
    items = [(bda.tiny(shape), "nvfp4+cvt_f16", {"num_kv_splits": 2, "block_n": 16, "tokens_as_m": 1}),
             (bda.tiny(shape, PAGE=1), "bf16", {"num_kv_splits": 2, "block_n": 16}),
             (bda.tiny(shape), "nvfp4+cvt_f16@pages", {"num_kv_splits": 3, "block_n": 16}),
             (bda.tiny(shape), "nvfp4+lut", {"num_kv_splits": 2})]
    errors = bda._warm_worker(items)
    assert len(errors) == 1 and "nvfp4+lut" in errors[0] and "decode must be one of" in errors[0]
    every = bda.headline_items(bda.VARIANTS, Shape(False))
    tiles = {(v, tuple(sorted(bda.tile(launch).items()))) for _, v, launch in every}
    assert tiles == {(v, tuple(sorted(bda.tile(launch).items()))) for v in bda.VARIANTS for launch in bda.launches(v, False)}


def test_limits_script_smoke(tmp_path):
    """The where-the-time-goes script runs end to end; its gather kernel reads exactly the words
    stage 1 reads (checksums against torch), for every format."""
    data = _smoke("limits_decode_attention.py", tmp_path)
    assert data["completed_stage"] == "done"
    assert set(data["checksums"]) == {f"{lay}/{f}" for lay in ("slot_major", "head_major") for f in ("bf16", "fp8", "nvfp4")}
    assert all(c["ok"] for c in data["checksums"].values())
    hm = data["layouts"]["head_major"]
    assert all(same for f, same in hm["identical_to_slot_major"].items() if "no_decode" not in f)
    for lay in data["layouts"].values():
        assert set(lay["kernels"]) == {"bf16", "fp8", "fp8+cvt_f16", "nvfp4+no_decode", "nvfp4+cvt_f16"}
        split = lay["summary"]["nvfp4_split_ms"]
        assert sum(v for k, v in split.items() if k != "total") == pytest.approx(split["total"])


def test_shape_tuning_script_smoke(tmp_path):
    """The head-dim launch tuner runs end to end; every launch agrees with the default launch."""
    data = _smoke("tune_shapes_decode_attention.py", tmp_path)
    assert data["completed_stage"] == "done" and not data["truncated"]
    assert {r["format"] for r in data["rows"]} == {"bf16", "fp8", "nvfp4+cvt_f16"}
    assert all(r["max_rel_rms_vs_default_launch"] < 1e-5 and "speedup_vs_bf16" in r for r in data["rows"])


def test_measurement_decoder_is_not_public():
    """`no_decode` (meaningless values, for the limits script) is refused by the public function."""
    from nvfp4_kvcache_triton._triton.decode_attention import ABLATION_IDS, DECODE_IDS

    assert not set(ABLATION_IDS) & set(DECODE_IDS)
    gen = torch.Generator().manual_seed(0)
    pool = _pool("nvfp4", 1, 64, 16, 32, gen)
    with pytest.raises(ValueError, match="decode must be one of"):
        decode_attention_fp4(torch.randn(1, 2, 64), pool, 0, torch.tensor([0, 3]), torch.arange(16, 19),
                             decode="no_decode")


# ---------------------------------------------------------------------------------------------
# GPU: full size (skipped without CUDA)
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("decode", ["placement", "prmt_bf16", "cvt_f16"])
@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
@pytest.mark.parametrize("d,page", [(64, 1), (128, 16), (256, 64)])
def test_gpu_full_size(recipe, d, page, decode):
    """Every page size and head dim of the issue at 32k tokens, for the plain decoder and the two
    fastest (each recipe's best in the benchmark)."""
    gen = torch.Generator().manual_seed(d)
    hq, hkv, lens = 64, 8, [1, 1000, 4097, 32768]
    size = page * (sum(math.ceil(n / page) for n in lens) + 2)
    gpu, pool = _gpu_and_cpu_pools(recipe, hkv, d, page, size, gen)
    indptr, idx = _paged_indices(lens, page, size // page, gen)
    q = torch.randn(len(lens), hq, d, generator=gen)
    out = decode_attention_fp4(q.cuda().bfloat16(), gpu, 0, indptr.cuda(), idx.cuda(), num_kv_splits=16,
                               page_size=page, decode=decode)
    qb = q.bfloat16().float()
    ref = decode_attention(qb, pool, 0, indptr, idx)
    k, v = pool.gather_kv(0, idx, dtype=torch.float64)
    tol = tolerance(qb, k, v, 1 / math.sqrt(d), max(lens), gpu=True)
    ok, err, rel = attention_close(out.cpu(), ref, tol, gpu=True)
    assert ok, f"max abs {err} (bound {tol}), relative rms {rel}"
    # one-token requests: V rows exactly, also on the GPU (weight 1, no bf16 rounding of V)
    nq = q.shape[0]
    one = decode_attention_fp4(q.cuda(), gpu, 0, torch.arange(nq + 1, device="cuda"), idx[:nq].cuda(), decode=decode)
    _, vq = pool.gather_kv(0, idx[:nq], dtype=torch.float32)
    assert torch.equal(one.cpu(), vq.repeat_interleave(hq // hkv, dim=1))


@pytest.mark.gpu
@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
def test_gpu_prmt_tile_decoder_equals_the_pure_twin(recipe):
    """decode='prmt': the stage-1 tile decoder (inline PTX) on every code under every scale byte,
    bit for bit the pure-Triton decoder run on the same GPU, and the recipe's decode."""
    d, h = 128, 2
    r = get_recipe(recipe)
    sbytes = [b for b in range(256) if (b & 0x7F) != 0x7F] if recipe == "nvfp4" else list(range(0, 255))
    n = len(sbytes)
    data = torch.zeros(n, h, d // 2, dtype=torch.uint8)
    data[:, 1] = (torch.arange(n)[:, None] * 7 + torch.arange(d // 2)) % 256
    scales = torch.zeros(n, h, d // 16, dtype=torch.uint8)
    scales[:, 1] = torch.tensor(sbytes, dtype=torch.uint8)[:, None].expand(n, d // 16)
    got = {}
    for dec in ("placement", "prmt"):
        ev = torch.empty(n, d // 2, device="cuda")
        od = torch.empty(n, d // 2, device="cuda")
        _tile_probe_dec[(1,)](data.cuda(), scales.cuda(), torch.arange(n, device="cuda"), ev, od, h * d // 2,
                              h * d // 16, n, KV_FMT=kd.FMT_IDS[recipe], D=d, BLOCK_N=triton.next_power_of_2(n),
                              DECODE=kd.DECODE_IDS[dec])
        got[dec] = torch.stack([ev, od], -1).reshape(n, d).cpu() / kd.PLACEMENT_FACTOR
    want = r.dequantize_parts(data[:, 1], scales[:, 1], torch.tensor(1.0) if recipe == "nvfp4" else None, torch.float32)
    assert torch.equal(got["placement"].view(torch.int32), want.view(torch.int32))
    assert torch.equal(got["prmt"].view(torch.int32), want.view(torch.int32))


@pytest.mark.gpu
def test_gpu_cvt_tile_decoder_equals_the_pure_twin():
    """decode='cvt_f16': the inline-PTX tile decoder on every code under every finite scale byte,
    bit for bit its pure-Triton twin on the same GPU and the recipe's decode."""
    d, h = 128, 2
    data, scales, n = _nvfp4_every_code_and_scale(d, h)
    got = {}
    for interp in (True, False):
        ev = torch.empty(n, d // 2, device="cuda")
        od = torch.empty(n, d // 2, device="cuda")
        _tile_probe_dec[(1,)](data.cuda(), scales.cuda(), torch.arange(n, device="cuda"), ev, od, h * d // 2,
                              h * d // 16, n, KV_FMT=kd.FMT_IDS["nvfp4"], D=d, BLOCK_N=triton.next_power_of_2(n),
                              DECODE=kd.DECODE_IDS["cvt_f16"], INTERP=interp)
        got[interp] = torch.stack([ev, od], -1).reshape(n, d).cpu() / 2.0**kd.CVT_EXP
    want = get_recipe("nvfp4").dequantize_parts(data[:, 1], scales[:, 1], torch.tensor(1.0), torch.float32)
    assert torch.equal(got[True].view(torch.int32), want.view(torch.int32))
    assert torch.equal(got[False].view(torch.int32), want.view(torch.int32))


@pytest.mark.gpu
@pytest.mark.parametrize("prefetch", [0, 1])
@pytest.mark.parametrize("decode", ["prmt", "prmt_bf16", "cvt_f16"])
@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
def test_gpu_inline_ptx_decoders_match_oracle(recipe, decode, prefetch):
    gen = torch.Generator().manual_seed(7)
    hq, hkv, d, page, lens = 64, 8, 128, 16, [1, 333, 5000]
    size = page * (sum(math.ceil(n / page) for n in lens) + 2)
    gpu, pool = _gpu_and_cpu_pools(recipe, hkv, d, page, size, gen)
    indptr, idx = _paged_indices(lens, page, size // page, gen)
    q = torch.randn(len(lens), hq, d, generator=gen).bfloat16()
    out = decode_attention_fp4(q.cuda(), gpu, 0, indptr.cuda(), idx.cuda(), page_size=page, decode=decode,
                               prefetch=prefetch)
    ref = decode_attention(q.float(), pool, 0, indptr, idx)
    k, v = pool.gather_kv(0, idx, dtype=torch.float64)
    tol = tolerance(q.float(), k, v, 1 / math.sqrt(d), max(lens), gpu=True)
    assert attention_close(out.cpu(), ref, tol, gpu=True)[0]
    nq = q.shape[0]  # weight-1 requests: V rows exactly
    one = decode_attention_fp4(q.cuda(), gpu, 0, torch.arange(nq + 1, device="cuda"), idx[:nq].cuda(), decode=decode,
                               prefetch=prefetch)
    _, vq = pool.gather_kv(0, idx[:nq], dtype=torch.float32)
    assert torch.equal(one.cpu(), vq.repeat_interleave(hq // hkv, dim=1))


@pytest.mark.gpu
@pytest.mark.parametrize("tokens_as_m", [0, 1])
@pytest.mark.parametrize("block_n,num_warps", [(16, 1), (32, 1), (32, 2), (64, 2), (64, 4)])
@pytest.mark.parametrize("decode", ["placement", "prmt", "prmt_bf16", "cvt_f16"])
@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
def test_gpu_every_launch_tile_matches_oracle(recipe, decode, block_n, num_warps, tokens_as_m):
    """Every decoder at every stage-1 tile the benchmark tries, in both MMA orientations: within
    the oracle's tolerance (a launch that computes garbage must fail here, not in a benchmark)."""
    if decode == "prmt_bf16" and block_n < 32:
        pytest.skip("refused by the launcher (test_prmt_bf16_refuses_16_token_steps)")
    gen = torch.Generator().manual_seed(block_n + num_warps)
    hq, hkv, d, page, lens = 16, 2, 128, 16, [1, 77, 700]
    size = page * (sum(math.ceil(n / page) for n in lens) + 2)
    gpu, pool = _gpu_and_cpu_pools(recipe, hkv, d, page, size, gen)
    indptr, idx = _paged_indices(lens, page, size // page, gen)
    q = torch.randn(len(lens), hq, d, generator=gen).bfloat16()
    out = decode_attention_fp4(q.cuda(), gpu, 0, indptr.cuda(), idx.cuda(), page_size=page, decode=decode,
                               num_kv_splits=3, block_n=block_n, num_warps=num_warps, num_stages=2,
                               tokens_as_m=tokens_as_m)
    ref = decode_attention(q.float(), pool, 0, indptr, idx)
    k, v = pool.gather_kv(0, idx, dtype=torch.float64)
    tol = tolerance(q.float(), k, v, 1 / math.sqrt(d), max(lens), gpu=True)
    assert attention_close(out.cpu(), ref, tol, gpu=True)[0]


@pytest.mark.gpu
def test_gpu_dense_baselines():
    gen = torch.Generator().manual_seed(1)
    d, hkv, hq, rows = 128, 8, 64, 70000
    k = torch.randn(rows, hkv, d, generator=gen)
    v = torch.randn(rows, hkv, d, generator=gen)
    indptr, idx = _paged_indices([7, 30000, 33333], 16, rows // 16 - 1, gen)
    q = torch.randn(3, hq, d, generator=gen)
    for fmt in ("bf16", "fp8"):
        if fmt == "bf16":
            kb, vb, ks, vs, kf, vf = k.bfloat16(), v.bfloat16(), None, None, 1.0, 1.0
        else:
            ks, vs = 0.05, 0.02
            kb, vb, kf, vf = (k / ks).to(torch.float8_e4m3fn), (v / vs).to(torch.float8_e4m3fn), ks, vs
        out = decode_attention_dense(q.cuda(), kb.cuda(), vb.cuda(), indptr.cuda(), idx.cuda(), k_scale=ks,
                                     v_scale=vs, num_kv_splits=16, page_size=16)
        kk, vv = kb[idx].double() * kf, vb[idx].double() * vf
        qb = q.bfloat16().float()
        ref = ragged_attention(qb, kk, vv, torch.arange(4), indptr, sm_scale=1 / math.sqrt(d), causal=False)
        tol = tolerance(qb, kk, vv, 1 / math.sqrt(d), 33333, gpu=True)
        assert attention_close(out.cpu(), ref, tol, gpu=True)[0], fmt
