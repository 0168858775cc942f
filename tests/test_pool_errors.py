"""Bad input never corrupts a pool: each rejected call raises a named error and leaves every byte as it was."""

from __future__ import annotations

import pytest
import torch

from _pool_helpers import fill_random, pool_hash
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4, MLATokenToKVPoolFP4

H, D, L, R = 2, 32, 64, 16


def mha(recipe="nvfp4"):
    pool = MHATokenToKVPoolFP4(size=16, page_size=4, layer_num=2, head_num=H, head_dim=D, recipe=recipe,
                               device="cpu", start_layer=3)
    fill_random(pool, seed=5)
    return pool


def mla(recipe="fp4_mx_block16"):
    pool = MLATokenToKVPoolFP4(size=16, page_size=4, layer_num=2, kv_lora_rank=L, qk_rope_head_dim=R,
                               recipe=recipe, device="cpu", start_layer=3)
    fill_random(pool, seed=6)
    return pool


def kv(n, dtype=torch.float32):
    return torch.randn(n, H, D).to(dtype)


LOC = torch.tensor([4, 5, 6])
META = torch.device("meta")

MHA_CASES = {
    "layer below start": (lambda p: p.set_kv_buffer(2, LOC, kv(3), kv(3)), IndexError, "layer_id 2 out of range"),
    "layer past end": (lambda p: p.set_kv_buffer(5, LOC, kv(3), kv(3)), IndexError, "layer_id 5 out of range"),
    "layer not int": (lambda p: p.set_kv_buffer(3.0, LOC, kv(3), kv(3)), TypeError, "layer_id must be an int"),
    "slot too large": (lambda p: p.set_kv_buffer(3, torch.tensor([4, 20]), kv(2), kv(2)), IndexError, "slot 20"),
    "slot negative": (lambda p: p.set_kv_buffer(3, torch.tensor([-1, 4]), kv(2), kv(2)), IndexError, "slot -1"),
    "duplicate slot": (lambda p: p.set_kv_buffer(3, torch.tensor([4, 7, 4]), kv(3), kv(3)), ValueError, "repeats slot"),
    "loc float": (lambda p: p.set_kv_buffer(3, LOC.float(), kv(3), kv(3)), ValueError, "loc must have dtype"),
    "loc 2-D": (lambda p: p.set_kv_buffer(3, LOC.reshape(3, 1), kv(3), kv(3)), ValueError, "loc must be 1-D"),
    "loc list": (lambda p: p.set_kv_buffer(3, [4, 5, 6], kv(3), kv(3)), TypeError, "loc must be a torch.Tensor"),
    "loc on meta": (lambda p: p.set_kv_buffer(3, LOC.to(META), kv(3), kv(3)), ValueError, "loc is on meta"),
    "k wrong heads": (lambda p: p.set_kv_buffer(3, LOC, torch.randn(3, 1, D), kv(3)), ValueError, "cache_k must have shape"),
    "v wrong length": (lambda p: p.set_kv_buffer(3, LOC, kv(3), kv(2)), ValueError, "cache_v must have shape"),
    "k int dtype": (lambda p: p.set_kv_buffer(3, LOC, kv(3).to(torch.int32), kv(3)), ValueError, "cache_k must have dtype"),
    "v float64": (lambda p: p.set_kv_buffer(3, LOC, kv(3), kv(3, torch.float64)), ValueError, "cache_v must have dtype"),
    "k on meta": (lambda p: p.set_kv_buffer(3, LOC, kv(3).to(META), kv(3)), ValueError, "cache_k is on meta"),
    "v not tensor": (lambda p: p.set_kv_buffer(3, LOC, kv(3), None), TypeError, "cache_v must be a torch.Tensor"),
    "move duplicate target": (lambda p: p.move_kv_cache(torch.tensor([8, 8]), torch.tensor([4, 5])), ValueError, "repeats slot"),
    "move length mismatch": (lambda p: p.move_kv_cache(torch.tensor([8, 9]), torch.tensor([4])), ValueError, "same length"),
    "move source out of range": (lambda p: p.move_kv_cache(torch.tensor([8]), torch.tensor([99])), IndexError, "slot 99"),
    "load copy without scales": (
        lambda p: p.load_cpu_copy([{k: t for k, t in d.items() if "scale" not in k} for d in p.get_cpu_copy(LOC)], LOC),
        ValueError, "must hold buffers"),
    "load copy wrong rows": (lambda p: p.load_cpu_copy(p.get_cpu_copy(LOC), torch.tensor([1, 2])), ValueError, "of shape"),
    "gather bad dtype": (lambda p: p.gather_kv(3, LOC, dtype=torch.int8), ValueError, "dtype must be one of"),
}


@pytest.mark.parametrize("recipe", ["fp4_mx_block16", "nvfp4"])
@pytest.mark.parametrize("case", sorted(MHA_CASES))
def test_mha_bad_input_raises_and_leaves_bytes_unchanged(case, recipe):
    call, exc, message = MHA_CASES[case]
    pool = mha(recipe)
    before = pool_hash(pool)
    with pytest.raises(exc, match=message):
        call(pool)
    assert pool_hash(pool) == before


def nope(n):
    return torch.randn(n, 1, L)


def rope(n):
    return torch.randn(n, 1, R)


MLA_CASES = {
    "layer past end": (lambda p: p.set_mla_kv_buffer(9, LOC, nope(3), rope(3)), IndexError, "out of range"),
    "slot too large": (lambda p: p.set_mla_kv_buffer(3, torch.tensor([20]), nope(1), rope(1)), IndexError, "slot 20"),
    "duplicate slot": (lambda p: p.set_mla_kv_buffer(3, torch.tensor([5, 5]), nope(2), rope(2)), ValueError, "repeats"),
    "nope wrong width": (lambda p: p.set_mla_kv_buffer(3, LOC, torch.randn(3, 1, 48), rope(3)), ValueError, "cache_k_nope must have shape"),
    "rope wrong tokens": (lambda p: p.set_mla_kv_buffer(3, LOC, nope(3), rope(2)), ValueError, "cache_k_rope must have shape"),
    "rope int": (lambda p: p.set_mla_kv_buffer(3, LOC, nope(3), rope(3).int()), ValueError, "cache_k_rope must have dtype"),
    "nope on meta": (lambda p: p.set_mla_kv_buffer(3, LOC, nope(3).to(META), rope(3)), ValueError, "is on meta"),
    "full latent wrong width": (lambda p: p.set_kv_buffer(3, LOC, torch.randn(3, 1, 70)), ValueError, "cache_k must have shape"),
    "move target out of range": (lambda p: p.move_kv_cache(torch.tensor([20]), torch.tensor([4])), IndexError, "slot 20"),
}


@pytest.mark.parametrize("recipe", ["fp4_mx_block16", "nvfp4"])
@pytest.mark.parametrize("case", sorted(MLA_CASES))
def test_mla_bad_input_raises_and_leaves_bytes_unchanged(case, recipe):
    call, exc, message = MLA_CASES[case]
    pool = mla(recipe)
    before = pool_hash(pool)
    with pytest.raises(exc, match=message):
        call(pool)
    assert pool_hash(pool) == before


def test_hash_detects_a_single_changed_byte():
    """The check above can fail: one flipped scale byte changes the hash."""
    pool = mha()
    before = pool_hash(pool)
    pool.v_scale_buffer[1][7, 0, 0] ^= 1
    assert pool_hash(pool) != before
    pool.v_scale_buffer[1][7, 0, 0] ^= 1
    pool.k_scales[0] = 0.5
    assert pool_hash(pool) != before


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(size=0), ValueError, "size must be positive"),
        (dict(size=10, page_size=4), ValueError, "multiple of page_size"),
        (dict(head_dim=24), ValueError, "multiple of the block size 16"),
        (dict(recipe="mxfp4"), ValueError, "pools store recipes"),
        (dict(recipe="fp8"), ValueError, "unknown recipe"),
        (dict(layer_num=2.0), TypeError, "layer_num must be an int"),
        (dict(device=3), TypeError, "device must be"),
        (dict(k_scales=[1.0]), ValueError, "fp4_mx_block16' has no global scale"),
        (dict(recipe="nvfp4", k_scales=[1.0, 2.0, 3.0]), ValueError, "one scale per layer"),
        (dict(recipe="nvfp4", v_scales=[1.0, 0.0]), ValueError, r"v_scales\[1\] must be a positive"),
        (dict(recipe="nvfp4", k_scales=[1.0, float("nan")]), ValueError, "positive, finite"),
        (dict(recipe="nvfp4", k_scales=torch.ones(2, dtype=torch.float64)), ValueError, "must be float32"),
        (dict(recipe="nvfp4", k_scales="1.0"), TypeError, "k_scales must be"),
    ],
)
def test_bad_construction_is_rejected(kwargs, exc, message):
    args = dict(size=16, page_size=4, layer_num=2, head_num=H, head_dim=D, recipe="fp4_mx_block16", device="cpu")
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        MHATokenToKVPoolFP4(**args)


def test_mla_rejects_dims_that_are_not_block_multiples():
    with pytest.raises(ValueError, match="qk_rope_head_dim must be a multiple"):
        MLATokenToKVPoolFP4(size=4, page_size=1, layer_num=1, kv_lora_rank=512, qk_rope_head_dim=40)


@pytest.mark.parametrize("recipe", ["fp4_mx_block16", "nvfp4"])
def test_empty_calls_are_no_ops(recipe):
    empty = torch.zeros(0, dtype=torch.int64)
    a, b = mha(recipe), mla(recipe)
    before = (pool_hash(a), pool_hash(b))
    a.set_kv_buffer(3, empty, kv(0), kv(0))
    b.set_mla_kv_buffer(4, empty, nope(0), rope(0))
    a.move_kv_cache(empty, empty)
    b.load_cpu_copy(b.get_cpu_copy(empty), empty)
    assert a.gather_kv(3, empty)[0].shape == (0, H, D) and b.gather_kv(3, empty).shape == (0, 1, L + R)
    assert (pool_hash(a), pool_hash(b)) == before
