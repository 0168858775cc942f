"""Variants of the decode-attention kernel that must compute the same function as the first one.

* `tokens_as_m=1`: the dots put the step's tokens in the tensor cores' M dimension; the output is
  within the oracle's tolerance, and length-1 requests still return the oracle's V rows bit for bit;
* page blocks (`nvfp4_kvcache_triton.page_blocks`): the converter is a bijection on the bytes, and
  the kernel reads page blocks with bit-identical results to the slot-major pool;
* FP8 through the hardware's E4M3 -> fp16 `cvt` and fp16 dots (`decode="cvt_f16"`);
* every bad argument of the new options raises a clear error.

Run: `TRITON_INTERPRET=1 python -m pytest -q tests/test_decode_attention_variants.py`.
"""

from __future__ import annotations

import math

import pytest
import torch

from nvfp4_kvcache.attention import decode_attention, ragged_attention
from nvfp4_kvcache_triton.decode_attention import (
    FP4KVLayer,
    attention_close,
    attention_tolerance,
    decode_attention_dense,
    decode_attention_fp4,
    fp4_layer,
)
from nvfp4_kvcache_triton.page_blocks import FP4PageBlocks, block_bytes, from_page_blocks, to_page_blocks
from test_decode_attention_kernel import _gpu_and_cpu_pools, _paged_indices, _pool

pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # the interpreter evaluates masked lanes
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _case(recipe, hq, hkv, d, page, lens, seed):
    gen = torch.Generator().manual_seed(seed)
    size = page * (sum(math.ceil(n / page) for n in lens) + 2)
    pool = _pool(recipe, hkv, d, page, size, gen)
    indptr, idx = _paged_indices(lens, page, size // page, gen)
    q = torch.randn(len(lens), hq, d, generator=gen)
    return pool, indptr, idx, q


# ---------------------------------------------------------------------------------------------
# tokens as M
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe,decode", [("nvfp4", "placement"), ("nvfp4", "cvt_f16"),
                                           ("fp4_mx_block16", "placement")])
@pytest.mark.parametrize("hq,hkv", [(2, 2), (8, 2), (16, 2), (32, 2)], ids=str)
@pytest.mark.parametrize("d,page", [(64, 16), (128, 1)])
def test_tokens_as_m_matches_oracle(recipe, decode, hq, hkv, d, page):
    """GQA 1, 4, 8, 16 (query heads padded to 8 when fewer), ragged lengths, empty splits."""
    lens = [1, 37, 100]
    pool, indptr, idx, q = _case(recipe, hq, hkv, d, page, lens, seed=hq + d + page)
    out = decode_attention_fp4(q, pool, 0, indptr, idx, num_kv_splits=5, page_size=page, decode=decode,
                               tokens_as_m=1)
    ref = decode_attention(q, pool, 0, indptr, idx)
    k, v = pool.gather_kv(0, idx, dtype=torch.float64)
    tol = attention_tolerance(q, k, v, 1 / math.sqrt(d), max(lens), gpu=False)
    err = float((out.double() - ref).abs().max())
    assert out.shape == ref.shape and err <= tol, f"{err} > {tol}"


@pytest.mark.parametrize("recipe,decode", [("nvfp4", "placement"), ("nvfp4", "cvt_f16"),
                                           ("fp4_mx_block16", "placement")])
def test_tokens_as_m_length_one_requests_return_v_rows_exactly(recipe, decode):
    """Weight exactly 1: the V rows the oracle dequantizes, bit for bit, global scale included."""
    gen = torch.Generator().manual_seed(4)
    pool = _pool(recipe, 2, 64, 1, 48, gen)
    slots = torch.randperm(48, generator=gen)[:12] + 1
    q = torch.randn(12, 16, 64, generator=gen)
    out = decode_attention_fp4(q, pool, 0, torch.arange(13), slots, num_kv_splits=2, decode=decode, tokens_as_m=1)
    _, v = pool.gather_kv(0, slots, dtype=torch.float32)
    assert torch.equal(out, v.repeat_interleave(8, dim=1))


@pytest.mark.parametrize("fmt,decode", [("bf16", "bf16"), ("fp8", "bf16"), ("fp8", "cvt_f16")])
@pytest.mark.parametrize("tokens_as_m", [0, 1])
def test_dense_baselines_both_orientations(fmt, decode, tokens_as_m):
    """BF16 and FP8 (bf16 dots, or the hardware's E4M3 -> fp16 `cvt` and fp16 dots) against
    float64 attention on the cache's values."""
    gen = torch.Generator().manual_seed(12)
    d, rows, hq, hkv = 64, 300, 16, 2
    k = torch.randn(rows, hkv, d, generator=gen)
    v = torch.randn(rows, hkv, d, generator=gen)
    if fmt == "bf16":
        kb, vb, ks, vs, kf, vf = k.bfloat16(), v.bfloat16(), None, None, 1.0, 1.0
    else:
        ks, vs = 0.05, 0.02
        kb, vb, kf, vf = (k / ks).to(torch.float8_e4m3fn), (v / vs).to(torch.float8_e4m3fn), ks, vs
    indptr, idx = _paged_indices([1, 45, 130], 16, rows // 16 - 1, gen)
    q = torch.randn(3, hq, d, generator=gen) * 50  # large: the fp16 path scales q into range
    out = decode_attention_dense(q, kb, vb, indptr, idx, k_scale=ks, v_scale=vs, num_kv_splits=3, page_size=16,
                                 decode=decode, tokens_as_m=tokens_as_m)
    kk, vv = kb[idx].double() * kf, vb[idx].double() * vf
    ref = ragged_attention(q, kk, vv, torch.arange(4), indptr, sm_scale=1 / math.sqrt(d), causal=False)
    assert float((out.double() - ref).abs().max()) <= attention_tolerance(q, kk, vv, 1 / math.sqrt(d), 130, gpu=False)


def test_dense_decode_argument():
    k = torch.zeros(20, 1, 64).bfloat16()
    q, indptr, idx = torch.randn(1, 2, 64), torch.tensor([0, 3]), torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="decode must be one of"):
        decode_attention_dense(q, k, k, indptr, idx, decode="prmt")
    with pytest.raises(ValueError, match="FP8"):
        decode_attention_dense(q, k, k, indptr, idx, decode="cvt_f16")


def test_register_prefetch_only_with_the_first_kernel():
    pool, indptr, idx, q = _case("nvfp4", 8, 2, 64, 16, [20], seed=1)
    with pytest.raises(ValueError, match="prefetch"):
        decode_attention_fp4(q, pool, 0, indptr, idx, page_size=16, prefetch=1, tokens_as_m=1)
    with pytest.raises(ValueError, match="prefetch"):
        decode_attention_fp4(q, to_page_blocks(fp4_layer(pool, 0), 16), None, indptr, idx, page_size=16, prefetch=1)


# ---------------------------------------------------------------------------------------------
# page blocks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
def test_page_blocks_round_trip_bit_for_bit(recipe):
    """`from_page_blocks(to_page_blocks(x)) == x` on every byte, both scale layouts; a block holds
    its page's codes then its scale bytes, token by token."""
    gen = torch.Generator().manual_seed(8)
    pool = _pool(recipe, 3, 64, 8, 64, gen)
    fl = fp4_layer(pool, 0)
    blocks = to_page_blocks(fl, 8)
    assert blocks.k.shape == (72 // 8, 3, block_bytes(8, 64)) and blocks.head_dim == 64 and blocks.recipe == recipe
    slot, head = 8 * 5 + 3, 2  # token 3 of page 5
    assert torch.equal(blocks.v[5, head, 3 * 32 : 4 * 32], fl.v[slot, head])
    assert torch.equal(blocks.v[5, head, 8 * 32 + 3 * 4 : 8 * 32 + 4 * 4], fl.v_scale.view(torch.uint8).reshape(72, 3, 4)[slot, head])
    back = from_page_blocks(blocks)
    for name in ("k", "v", "k_scale", "v_scale"):
        want = getattr(fl, name).view(torch.uint8).reshape(72, 3, -1)
        assert torch.equal(getattr(back, name), want), name
    assert back.k_global is fl.k_global and back.recipe == recipe


@pytest.mark.parametrize("recipe,decode", [("nvfp4", "placement"), ("nvfp4", "cvt_f16"),
                                           ("fp4_mx_block16", "placement")])
@pytest.mark.parametrize("tokens_as_m", [0, 1])
def test_page_blocks_give_the_same_result(recipe, decode, tokens_as_m):
    """The kernel reads page blocks through their pages: bit-identical outputs to the slot-major
    pool, at every split count, GQA 4, requests that end inside a page."""
    pool, indptr, idx, q = _case(recipe, 8, 2, 64, 16, [1, 40, 77], seed=5)
    blocks = to_page_blocks(fp4_layer(pool, 0), 16)
    for splits in (1, 3):
        a = decode_attention_fp4(q, pool, 0, indptr, idx, num_kv_splits=splits, page_size=16, decode=decode,
                                 tokens_as_m=tokens_as_m)
        b = decode_attention_fp4(q, blocks, None, indptr, idx, num_kv_splits=splits, page_size=16, decode=decode,
                                 tokens_as_m=tokens_as_m)
        assert torch.equal(a, b)


def test_page_blocks_bad_arguments():
    pool, indptr, idx, q = _case("nvfp4", 4, 2, 64, 16, [20], seed=2)
    fl = fp4_layer(pool, 0)
    blocks = to_page_blocks(fl, 16)
    with pytest.raises(ValueError, match="page_size=16"):
        decode_attention_fp4(q, blocks, None, indptr, idx)                      # the gather default, page_size=1
    with pytest.raises(ValueError, match="layer must be None"):
        decode_attention_fp4(q, blocks, 0, indptr, idx, page_size=16)
    with pytest.raises(ValueError, match="page-contiguous"):
        decode_attention_fp4(q, blocks, None, indptr, idx.flip(0), page_size=16)
    with pytest.raises(IndexError):
        decode_attention_fp4(q, blocks, None, indptr, idx + 16 * 64, page_size=16)   # past the last page
    bad = FP4PageBlocks(blocks.k.float(), blocks.v, 16, "nvfp4", fl.k_global, fl.v_global)
    with pytest.raises(ValueError, match="uint8"):
        decode_attention_fp4(q, bad, None, indptr, idx, page_size=16)
    bad = FP4PageBlocks(blocks.k[:, :, :-16], blocks.v[:, :, :-16], 16, "nvfp4", fl.k_global, fl.v_global)
    with pytest.raises(ValueError, match="do not hold"):
        decode_attention_fp4(q, bad, None, indptr, idx, page_size=16)
    bad = FP4PageBlocks(blocks.k, blocks.v, 16, "nvfp4")
    with pytest.raises(ValueError, match="k_global"):
        decode_attention_fp4(q, bad, None, indptr, idx, page_size=16)
    bad = FP4PageBlocks(blocks.k, blocks.v, 16, "mxfp8", fl.k_global, fl.v_global)
    with pytest.raises(ValueError, match="recipe"):
        decode_attention_fp4(q, bad, None, indptr, idx, page_size=16)
    with pytest.raises(ValueError, match="page_size must be an int >= 2"):
        to_page_blocks(fl, 1)
    with pytest.raises(ValueError, match="not a multiple of page_size"):
        to_page_blocks(fl, 64)
    with pytest.raises(ValueError, match="multiples of 16"):
        to_page_blocks(FP4KVLayer(fl.k[:48], fl.v[:48], fl.k_scale[:48], fl.v_scale[:48], "nvfp4"), 2)


# ---------------------------------------------------------------------------------------------
# GPU: full size (skipped without CUDA)
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("decode", ["placement", "prmt_bf16", "cvt_f16"])
@pytest.mark.parametrize("recipe", ["nvfp4", "fp4_mx_block16"])
@pytest.mark.parametrize("d,page", [(64, 16), (128, 16), (256, 64)])
def test_gpu_tokens_as_m_and_page_blocks_full_size(recipe, d, page, decode):
    """64 query heads, 8 KV heads, up to 32k tokens: tokens as M within the GPU tolerance, page
    blocks bit-identical to the slot-major pool, weight-1 requests the V rows exactly."""
    gen = torch.Generator().manual_seed(d + 1)
    hq, hkv, lens = 64, 8, [1, 1000, 4097, 32768]
    size = page * (sum(math.ceil(n / page) for n in lens) + 2)
    gpu, pool = _gpu_and_cpu_pools(recipe, hkv, d, page, size, gen)
    indptr, idx = _paged_indices(lens, page, size // page, gen)
    q = torch.randn(len(lens), hq, d, generator=gen)
    qc, ipc, ixc = q.cuda().bfloat16(), indptr.cuda(), idx.cuda()
    out = decode_attention_fp4(qc, gpu, 0, ipc, ixc, num_kv_splits=16, page_size=page, decode=decode, tokens_as_m=1,
                               block_n=32, num_warps=1)
    qb = q.bfloat16().float()
    ref = decode_attention(qb, pool, 0, indptr, idx)
    k, v = pool.gather_kv(0, idx, dtype=torch.float64)
    ok, err, rel = attention_close(out.cpu(), ref, attention_tolerance(qb, k, v, 1 / math.sqrt(d), max(lens), gpu=True),
                                   gpu=True)
    assert ok, f"max abs {err}, relative rms {rel}"
    blocks = to_page_blocks(fp4_layer(gpu, 0), page)
    for tm in (0, 1):
        a = decode_attention_fp4(qc, gpu, 0, ipc, ixc, num_kv_splits=16, page_size=page, decode=decode, tokens_as_m=tm)
        b = decode_attention_fp4(qc, blocks, None, ipc, ixc, num_kv_splits=16, page_size=page, decode=decode,
                                 tokens_as_m=tm)
        assert torch.equal(a, b)
    nq = q.shape[0]
    one = decode_attention_fp4(q.cuda(), gpu, 0, torch.arange(nq + 1, device="cuda"), ixc[:nq], decode=decode,
                               tokens_as_m=1)
    _, vq = pool.gather_kv(0, idx[:nq], dtype=torch.float32)
    assert torch.equal(one.cpu(), vq.repeat_interleave(hq // hkv, dim=1))


@pytest.mark.gpu
@pytest.mark.parametrize("tokens_as_m", [0, 1])
def test_gpu_fp8_through_fp16_dots(tokens_as_m):
    gen = torch.Generator().manual_seed(2)
    d, hkv, hq, rows = 128, 8, 64, 70000
    k = torch.randn(rows, hkv, d, generator=gen)
    v = torch.randn(rows, hkv, d, generator=gen)
    indptr, idx = _paged_indices([7, 30000, 33333], 16, rows // 16 - 1, gen)
    q = torch.randn(3, hq, d, generator=gen)
    ks, vs = 0.05, 0.02
    kb, vb = (k / ks).to(torch.float8_e4m3fn), (v / vs).to(torch.float8_e4m3fn)
    out = decode_attention_dense(q.cuda().bfloat16(), kb.cuda(), vb.cuda(), indptr.cuda(), idx.cuda(), k_scale=ks,
                                 v_scale=vs, num_kv_splits=16, page_size=16, decode="cvt_f16", tokens_as_m=tokens_as_m)
    kk, vv = kb[idx].double() * ks, vb[idx].double() * vs
    qb = q.bfloat16().float()
    ref = ragged_attention(qb, kk, vv, torch.arange(4), indptr, sm_scale=1 / math.sqrt(d), causal=False)
    tol = attention_tolerance(qb, kk, vv, 1 / math.sqrt(d), 33333, gpu=True)
    assert attention_close(out.cpu(), ref, tol, gpu=True)[0]


