"""Reference attention over FP4 pools against dense float64 attention on the dequantized cache.

Tolerance: ``rtol = atol = 1e-12``. Both sides compute in float64 from the same dequantized
values (which are exact in float64), so they differ only by float64 rounding in the dot products
and the softmax (about 1e-15 relative for these sizes); 1e-12 leaves headroom yet catches any wrong
slot, mask or head mapping, which move results by far more (checked below).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nvfp4_kvcache.attention import (
    decode_attention,
    extend_attention,
    kv_indices_from_req_to_token,
    mla_decode_attention,
    mla_extend_attention,
    ragged_attention,
)
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4, MLATokenToKVPoolFP4

TOL = dict(rtol=1e-12, atol=1e-12)
HQ, HKV, D = 8, 2, 64


def dense(q, k, v, mask, scale):
    """Plain SDPA in float64: q [m, Hq, D], k/v [n, Hkv, D], mask [m, n] (True = attend)."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                         attn_mask=mask, scale=scale)
    return out.transpose(0, 1)


@pytest.fixture(params=["fp4_mx_block16", "nvfp4"])
def filled(request):
    """A pool with three requests written at scattered slots through a req_to_token table."""
    torch.manual_seed(0)
    recipe = request.param
    pool = MHATokenToKVPoolFP4(size=64, page_size=4, layer_num=2, head_num=HKV, head_dim=D, recipe=recipe,
                               **({"k_scales": [0.02, 0.05], "v_scales": [0.01, 0.03]} if recipe == "nvfp4" else {}))
    lens = [7, 1, 12]
    slots = torch.randperm(64)[:20] + 4          # never the padding page
    req_to_token = torch.zeros(4, 16, dtype=torch.int32)
    start = 0
    for r, n in zip([3, 0, 1], lens):
        req_to_token[r, :n] = slots[start:start + n].to(torch.int32)
        start += n
    for layer in range(2):
        pool.set_kv_buffer(layer, slots.to(torch.int64), torch.randn(20, HKV, D) * 3, torch.randn(20, HKV, D))
    return pool, req_to_token, torch.tensor([3, 0, 1]), torch.tensor(lens)


def test_decode_matches_dense_sdpa_on_dequantized_cache(filled):
    pool, r2t, reqs, lens = filled
    kv_indptr, kv_indices = kv_indices_from_req_to_token(r2t, reqs, lens)
    q = torch.randn(3, HQ, D, dtype=torch.bfloat16)
    out = decode_attention(q, pool, 1, kv_indptr, kv_indices)
    assert out.shape == (3, HQ, D) and out.dtype == torch.float64
    k_all = pool.get_key_buffer(1, dtype=torch.float64)          # the whole-layer read path
    v_all = pool.get_value_buffer(1, dtype=torch.float64)
    for b in range(3):
        idx = r2t[reqs[b], : lens[b]].long()
        want = dense(q[b : b + 1].double(), k_all[idx], v_all[idx], None, 1 / math.sqrt(D))
        torch.testing.assert_close(out[b : b + 1], want, **TOL)


def test_wrong_slot_order_or_layer_is_detected(filled):
    """The comparison can fail: a swapped slot or another layer moves the result by far more than TOL."""
    pool, r2t, reqs, lens = filled
    kv_indptr, kv_indices = kv_indices_from_req_to_token(r2t, reqs, lens)
    q = torch.randn(3, HQ, D)
    ref = decode_attention(q, pool, 1, kv_indptr, kv_indices)
    swapped = kv_indices.clone()
    swapped[[0, 8]] = swapped[[8, 0]]                          # one slot of request 0 <-> one of request 2
    assert (decode_attention(q, pool, 1, kv_indptr, swapped) - ref).abs().max() > 1e-6
    assert (decode_attention(q, pool, 0, kv_indptr, kv_indices) - ref).abs().max() > 1e-6


def test_extend_with_cached_prefix_is_causal(filled):
    pool, r2t, reqs, lens = filled
    kv_indptr, kv_indices = kv_indices_from_req_to_token(r2t, reqs, lens)
    new = torch.tensor([3, 1, 12])                             # request 2: whole prompt new (no prefix)
    qo_indptr = torch.cat([torch.zeros(1, dtype=torch.int64), new.cumsum(0)])
    q = torch.randn(int(new.sum()), HQ, D)
    out = extend_attention(q, pool, 0, qo_indptr, kv_indptr, kv_indices, sm_scale=0.07)
    k_all, v_all = pool.get_key_buffer(0, torch.float64), pool.get_value_buffer(0, torch.float64)
    for b in range(3):
        n, m = int(lens[b]), int(new[b])
        idx = r2t[reqs[b], :n].long()
        positions = torch.arange(n - m, n)                      # absolute positions of the new tokens
        mask = torch.arange(n).unsqueeze(0) <= positions.unsqueeze(1)
        want = dense(q[qo_indptr[b] : qo_indptr[b + 1]].double(), k_all[idx], v_all[idx], mask, 0.07)
        torch.testing.assert_close(out[qo_indptr[b] : qo_indptr[b + 1]], want, **TOL)


def test_decode_equals_extend_of_one_token(filled):
    pool, r2t, reqs, lens = filled
    kv_indptr, kv_indices = kv_indices_from_req_to_token(r2t, reqs, lens)
    q = torch.randn(3, HQ, D)
    a = decode_attention(q, pool, 0, kv_indptr, kv_indices)
    b = extend_attention(q, pool, 0, torch.arange(4), kv_indptr, kv_indices)
    assert torch.equal(a, b)


@pytest.mark.parametrize("recipe", ["fp4_mx_block16", "nvfp4"])
def test_mla_absorbed_equals_unabsorbed_attention(recipe):
    """Absorbed MLA over the FP4 latent == per-head attention with K/V up-projected from the same latent."""
    torch.manual_seed(1)
    heads, rank, rope, nope_dim, v_dim = 4, 64, 16, 32, 32
    pool = MLATokenToKVPoolFP4(size=32, page_size=1, layer_num=1, kv_lora_rank=rank, qk_rope_head_dim=rope,
                               recipe=recipe, **({"kv_scales": [0.01]} if recipe == "nvfp4" else {}))
    slots = torch.tensor([3, 9, 4, 20, 21, 7, 30])
    pool.set_mla_kv_buffer(0, slots, torch.randn(7, 1, rank), torch.randn(7, 1, rope))
    w_uk = torch.randn(heads, nope_dim, rank, dtype=torch.float64) / 8
    w_uv = torch.randn(heads, rank, v_dim, dtype=torch.float64) / 8
    q_nope = torch.randn(2, heads, nope_dim, dtype=torch.float64)
    q_rope = torch.randn(2, heads, rope, dtype=torch.float64)
    kv_indptr, kv_indices = torch.tensor([0, 3, 7]), slots
    scale = 1 / math.sqrt(nope_dim + rope)
    q_abs = torch.einsum("bhd,hdc->bhc", q_nope, w_uk)
    latent_out = mla_decode_attention(q_abs, q_rope, pool, 0, kv_indptr, kv_indices, sm_scale=scale)
    out = torch.einsum("bhc,hcv->bhv", latent_out, w_uv)
    latent = pool.get_key_buffer(0, dtype=torch.float64)[:, 0]
    for b in range(2):
        c = latent[kv_indices[kv_indptr[b] : kv_indptr[b + 1]]]
        k_nope = torch.einsum("nc,hdc->nhd", c[:, :rank], w_uk)
        k = torch.cat([k_nope, c[:, rank:].unsqueeze(1).expand(-1, heads, -1)], -1)
        v = torch.einsum("nc,hcv->nhv", c[:, :rank], w_uv)
        q = torch.cat([q_nope[b : b + 1], q_rope[b : b + 1]], -1)
        torch.testing.assert_close(out[b : b + 1], dense(q, k, v, None, scale), rtol=1e-10, atol=1e-10)


def test_mla_extend_is_causal():
    torch.manual_seed(2)
    pool = MLATokenToKVPoolFP4(size=16, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16)
    slots = torch.arange(1, 7)
    pool.set_kv_buffer(0, slots, torch.randn(6, 1, 48))
    q_nope, q_rope = torch.randn(4, 2, 32), torch.randn(4, 2, 16)
    out = mla_extend_attention(q_nope, q_rope, pool, 0, torch.tensor([0, 4]), torch.tensor([0, 6]), slots, sm_scale=0.2)
    latent = pool.gather_kv(0, slots, torch.float64)
    mask = torch.arange(6).unsqueeze(0) <= torch.arange(2, 6).unsqueeze(1)
    want = dense(torch.cat([q_nope, q_rope], -1).double(), latent, latent[..., :32], mask, 0.2)
    torch.testing.assert_close(out, want, **TOL)


def test_ragged_attention_known_value():
    """softmax of equal scores -> the mean of the values."""
    v = torch.tensor([[[1.0]], [[2.0]], [[6.0]]])
    out = ragged_attention(torch.zeros(1, 1, 4), torch.randn(3, 1, 4), v, torch.tensor([0, 1]),
                           torch.tensor([0, 3]), sm_scale=1.0)
    assert out.item() == 3.0


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda p: decode_attention(torch.randn(2, 3, 16), p, 0, torch.tensor([0, 1, 2]), torch.tensor([1, 2])),
         ValueError, "multiple of KV heads"),
        (lambda p: decode_attention(torch.randn(2, 2, 16), p, 0, torch.tensor([0, 1, 3]), torch.tensor([1, 2])),
         ValueError, r"kv_indptr\[-1\] must equal 2"),
        (lambda p: decode_attention(torch.randn(2, 2, 16), p, 0, torch.tensor([0, 2, 1]), torch.tensor([1])),
         ValueError, "non-decreasing"),
        (lambda p: decode_attention(torch.randn(1, 2, 8), p, 0, torch.tensor([0, 1]), torch.tensor([1])),
         ValueError, "q must have shape"),
        (lambda p: decode_attention(torch.randn(1, 2, 16), p, 0, torch.tensor([0, 1]), torch.tensor([50])),
         IndexError, "slot 50"),
        (lambda p: decode_attention(torch.randn(1, 2, 16), p, 4, torch.tensor([0, 1]), torch.tensor([1])),
         IndexError, "layer_id 4"),
        (lambda p: extend_attention(torch.randn(3, 2, 16), p, 0, torch.tensor([0, 3]), torch.tensor([0, 2]),
                                    torch.tensor([1, 2])), ValueError, "3 queries and 2 keys"),
        (lambda p: mla_decode_attention(torch.randn(1, 2, 16), torch.randn(1, 2, 16), p, 0, torch.tensor([0, 1]),
                                        torch.tensor([1]), sm_scale=1.0), TypeError, "MLATokenToKVPoolFP4"),
    ],
)
def test_bad_attention_input(call, exc, message):
    pool = MHATokenToKVPoolFP4(size=8, page_size=1, layer_num=1, head_num=2, head_dim=16)
    with pytest.raises(exc, match=message):
        call(pool)


def test_req_to_token_bad_row():
    with pytest.raises(IndexError, match="req_pool_indices"):
        kv_indices_from_req_to_token(torch.zeros(2, 4, dtype=torch.int32), torch.tensor([2]), torch.tensor([1]))
