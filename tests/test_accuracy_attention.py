"""Attention error of the accuracy lab: the float64 attention is the project's oracle, and errors behave."""

import math

import pytest
import torch

from nvfp4_kvcache.accuracy.attention_error import attention_errors, context_sweep, decode_attention_f64
from nvfp4_kvcache.accuracy.schemes import SCHEMES, bf16_round
from nvfp4_kvcache.attention import decode_attention, ragged_attention
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4


def _data(t=48, hkv=2, hq=4, d=32, m=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, hq, d, generator=g), torch.randn(t, hkv, d, generator=g), torch.randn(t, hkv, d, generator=g))


def test_matches_the_reference_attention():
    q, k, v = _data()
    out, p = decode_attention_f64(q, k, v)
    for i in range(q.shape[0]):
        ref = ragged_attention(q[i:i + 1], k, v, torch.tensor([0, 1]), torch.tensor([0, k.shape[0]]),
                               sm_scale=1 / math.sqrt(q.shape[-1]), causal=False)
        assert torch.allclose(out[i:i + 1], ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(p.sum(-1), torch.ones_like(p.sum(-1)), atol=1e-12)


def test_lab_attention_equals_attention_over_the_oracle_pool():
    """Fake-quantized K/V in the lab == decode attention over an NVFP4 pool holding the same tokens."""
    q, k, v = _data(t=20, hkv=2, hq=4, d=64, m=1, seed=1)
    k, v = bf16_round(k), bf16_round(v)
    pool = MHATokenToKVPoolFP4(size=32, page_size=1, layer_num=1, head_num=2, head_dim=64, recipe="nvfp4")
    loc = torch.arange(1, 21)
    pool.set_kv_buffer(0, loc, k, v)
    ref = decode_attention(q, pool, 0, torch.tensor([0, 20]), loc)
    s = SCHEMES["nvfp4/g1"]
    out, _ = decode_attention_f64(q, s.fake_quantize(k), s.fake_quantize(v))
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_exact_cache_has_no_error_and_v_only_has_no_kl():
    q, k, v = _data()
    e = attention_errors(q, k, v, k, v)
    assert e == {"out_rel_l2": 0.0, "out_max_abs": 0.0, "kl_nats": 0.0}
    e = attention_errors(q, k, v, k, v + 0.1)
    assert e["kl_nats"] == 0.0 and e["out_max_abs"] == pytest.approx(0.1, rel=1e-6)


def test_key_error_moves_the_softmax():
    q, k, v = _data()
    e = attention_errors(q, k, v, k * 1.05, v)
    assert e["kl_nats"] > 0 and e["out_rel_l2"] > 0


def test_kl_hand_example():
    # two keys, logits (0, log 3) vs (0, 0): p = (1/4, 3/4), p_hat = (1/2, 1/2)
    q = torch.tensor([[[1.0]]], dtype=torch.float64)
    k = torch.tensor([[[0.0]], [[math.log(3)]]], dtype=torch.float64)
    ones = torch.ones(2, 1, 1, dtype=torch.float64)
    e = attention_errors(q, k, ones, torch.zeros_like(k), ones)
    want = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert e["kl_nats"] == pytest.approx(want, rel=1e-12)


def test_context_sweep_slices_prefixes():
    q, k, v = _data(t=64)
    kq, vq = k + 0.01, v - 0.01
    r = context_sweep(q, k, v, kq, vq, [16, 64])
    assert [x["context"] for x in r["KV"]] == [16, 64]
    assert r["KV"][0] == {"context": 16, **attention_errors(q, k[:16], v[:16], kq[:16], vq[:16])}
    assert all(x["kl_nats"] == 0.0 for x in r["V"])
    with pytest.raises(ValueError, match="exceeds"):
        context_sweep(q, k, v, kq, vq, [128])
