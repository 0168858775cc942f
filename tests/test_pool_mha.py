"""MHATokenToKVPoolFP4: buffers, round trips equal to the recipe's own quantize/dequantize, reads."""

from __future__ import annotations

import pytest
import torch

from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
from nvfp4_kvcache.recipes import get_recipe
from nvfp4_kvcache.sglang import FP4MXBlock16KVQuantizeUtil, NVFP4KVQuantizeUtil
from _pool_helpers import fill_random, pool_hash

RECIPES = ["fp4_mx_block16", "nvfp4"]


def make(recipe, **kw):
    args = dict(size=32, page_size=4, layer_num=3, head_num=2, head_dim=64, recipe=recipe, device="cpu")
    if recipe == "nvfp4":
        args.update(k_scales=[0.5, 0.03125, 2.0], v_scales=[1.0, 0.25, 0.75])
    args.update(kw)
    return MHATokenToKVPoolFP4(**args)


@pytest.mark.parametrize("recipe", RECIPES)
def test_buffer_shapes_and_dtypes(recipe):
    pool = make(recipe)
    assert pool.rows == 36 and len(pool.k_buffer) == 3
    for bufs in (pool.k_buffer, pool.v_buffer):
        assert all(b.shape == (36, 2, 32) and b.dtype == torch.uint8 for b in bufs)
    scale_shape = (36, 2, 4) if recipe == "nvfp4" else (36, 8)
    for bufs in (pool.k_scale_buffer, pool.v_scale_buffer):
        assert all(b.shape == scale_shape and b.dtype == torch.uint8 for b in bufs)
    # 36 rows x 3 layers x (2 x 64 data + 2 x 8 scale bytes)
    assert pool.nbytes == 36 * 3 * (128 + 16)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_write_then_read_equals_recipe_roundtrip(recipe, dtype):
    pool = make(recipe)
    r = get_recipe(recipe)
    torch.manual_seed(1)
    loc = torch.tensor([4, 9, 35, 17, 6])
    k = (torch.randn(5, 2, 64) * torch.logspace(-3, 3, 5).reshape(5, 1, 1)).to(dtype)
    v = torch.randn(5, 2, 64).to(dtype)
    pool.set_kv_buffer(1, loc, k, v)
    gk = pool.k_scales[1] if recipe == "nvfp4" else None
    gv = pool.v_scales[1] if recipe == "nvfp4" else None
    qk, qv = r.quantize(k, gk), r.quantize(v, gv)
    # stored bytes are the recipe's bytes
    assert torch.equal(pool.k_buffer[1][loc], qk.packed)
    assert torch.equal(pool.v_buffer[1][loc], qv.packed)
    assert torch.equal(pool.k_scale_buffer[1][loc].reshape(5, 2, 4), qk.scales)
    assert torch.equal(pool.v_scale_buffer[1][loc].reshape(5, 2, 4), qv.scales)
    # gather, whole-layer read and the recipe's dequantize agree bit for bit
    k_g, v_g = pool.gather_kv(1, loc, dtype=torch.float32)
    assert torch.equal(k_g, r.dequantize(qk, torch.float32))
    assert torch.equal(v_g, r.dequantize(qv, torch.float32))
    assert torch.equal(pool.get_key_buffer(1)[loc], r.dequantize(qk, torch.bfloat16))
    assert torch.equal(pool.get_value_buffer(1, dtype=torch.float32)[loc], v_g)
    # other layers untouched (still zero)
    assert not pool.k_buffer[0].any() and not pool.v_scale_buffer[2].any()


def test_block16_bytes_equal_the_sglang_quantizer_layout():
    """Flattened [rows, H*D/16] scales are exactly what FP4MXBlock16KVQuantizeUtil returns."""
    pool = make("fp4_mx_block16")
    k, v = torch.randn(3, 2, 64, dtype=torch.bfloat16), torch.randn(3, 2, 64, dtype=torch.bfloat16)
    loc = torch.tensor([5, 6, 7])
    pool.set_kv_buffer(0, loc, k, v)
    packed, sf = FP4MXBlock16KVQuantizeUtil.batched_quantize(k)
    assert torch.equal(pool.k_buffer[0][loc], packed) and torch.equal(pool.k_scale_buffer[0][loc], sf)
    raw_k, _, raw_ks, _ = pool.get_raw_kv_buffer(0)
    assert raw_ks.dtype == torch.uint8 and raw_k.data_ptr() == pool.k_buffer[0].data_ptr()
    assert torch.equal(pool.get_key_buffer(0)[loc], FP4MXBlock16KVQuantizeUtil.batched_dequantize(packed, sf))


def test_nvfp4_uses_per_layer_global_scales():
    pool = make("nvfp4")
    x = torch.randn(2, 2, 64)
    loc = torch.tensor([4, 5])
    for layer in range(3):
        pool.set_kv_buffer(layer, loc, x, x)
    for layer, (gk, gv) in enumerate(zip([0.5, 0.03125, 2.0], [1.0, 0.25, 0.75])):
        data, sf, g = NVFP4KVQuantizeUtil.quantize(x, gk)
        assert torch.equal(pool.k_buffer[layer][loc], data)
        assert torch.equal(pool.get_raw_kv_buffer(layer)[2][loc].view(torch.uint8), sf.view(torch.uint8))
        _, _, _, vs = pool.get_raw_kv_buffer(layer)
        assert vs.dtype == torch.float8_e4m3fn
        k_g, v_g = pool.gather_kv(layer, loc)
        assert torch.equal(k_g, NVFP4KVQuantizeUtil.dequantize(data, sf, gk, torch.float32))
        assert torch.equal(v_g, NVFP4KVQuantizeUtil.dequantize(*NVFP4KVQuantizeUtil.quantize(x, gv), torch.float32))
    # a different global scale changes the stored scale bytes (the scale really is used)
    assert not torch.equal(pool.k_scale_buffer[0][loc], pool.k_scale_buffer[1][loc])


def test_nvfp4_default_global_scale_is_one():
    pool = MHATokenToKVPoolFP4(size=4, page_size=1, layer_num=2, head_num=1, head_dim=16, recipe="nvfp4")
    assert pool.k_scales.tolist() == [1.0, 1.0] and pool.v_scales.dtype == torch.float32


def test_padding_slot_may_repeat_and_last_write_wins():
    pool = make("fp4_mx_block16")
    k = torch.stack([torch.full((2, 64), float(i + 1)) for i in range(4)])
    pool.set_kv_buffer(0, torch.tensor([0, 5, 0, 0]), k, k)
    k0, _ = pool.gather_kv(0, torch.tensor([0, 5]))
    assert torch.equal(k0[0], torch.full((2, 64), 4.0)) and torch.equal(k0[1], torch.full((2, 64), 2.0))


def test_gather_reads_only_the_asked_slots_and_allows_repeats():
    pool = make("fp4_mx_block16")
    fill_random(pool)
    before = pool_hash(pool)
    k, v = pool.gather_kv(2, torch.tensor([7, 7, 1]), dtype=torch.float64)
    assert k.shape == (3, 2, 64) and k.dtype == torch.float64 and torch.equal(k[0], k[1])
    full = pool.get_key_buffer(2, dtype=torch.float64)
    assert torch.equal(full[torch.tensor([7, 7, 1])].nan_to_num(), k.nan_to_num())
    assert pool_hash(pool) == before   # reads never write


def test_layer_ids_are_global_with_start_layer():
    pool = make("fp4_mx_block16", start_layer=10)
    x = torch.ones(1, 2, 64)
    pool.set_kv_buffer(12, torch.tensor([3]), x, x)
    assert pool.k_buffer[2][3].any() and not pool.k_buffer[0][3].any()

    class Layer:
        layer_id = 11

    pool.set_kv_buffer(Layer(), torch.tensor([3]), x, x)
    assert pool.k_buffer[1][3].any()


@pytest.mark.parametrize("recipe", RECIPES)
def test_move_kv_cache_moves_scales_with_data(recipe):
    pool = make(recipe)
    x = torch.randn(3, 2, 64) * 100
    pool.set_kv_buffer(0, torch.tensor([4, 5, 6]), x, -x)
    before = pool.gather_kv(0, torch.tensor([4, 5, 6]))
    pool.move_kv_cache(torch.tensor([20, 21, 22]), torch.tensor([4, 5, 6]))
    after = pool.gather_kv(0, torch.tensor([20, 21, 22]))
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


@pytest.mark.parametrize("recipe", RECIPES)
def test_cpu_copy_roundtrip_restores_values(recipe):
    pool = make(recipe)
    x = torch.randn(2, 2, 64) * 7
    loc = torch.tensor([8, 9])
    for layer in range(3):
        pool.set_kv_buffer(layer, loc, x, x)
    saved = pool.get_cpu_copy(loc)
    want = [pool.gather_kv(layer, loc) for layer in range(3)]
    pool.set_kv_buffer(1, loc, torch.zeros(2, 2, 64), torch.zeros(2, 2, 64))
    pool.load_cpu_copy(saved, torch.tensor([12, 13]))
    for layer in range(3):
        got = pool.gather_kv(layer, torch.tensor([12, 13]))
        assert torch.equal(got[0], want[layer][0]) and torch.equal(got[1], want[layer][1])


from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=25, deadline=None)
@given(
    recipe=st.sampled_from(RECIPES),
    ops=st.lists(
        st.tuples(st.lists(st.integers(1, 12), min_size=1, max_size=5, unique=True), st.integers(0, 2**31 - 1)),
        min_size=1, max_size=6,
    ),
)
def test_random_write_sequences_match_a_dict_model(recipe, ops):
    """Any sequence of writes leaves each slot holding the recipe round trip of its last write."""
    pool = MHATokenToKVPoolFP4(size=12, page_size=1, layer_num=1, head_num=1, head_dim=16, recipe=recipe,
                               **({"k_scales": 0.01, "v_scales": 0.02} if recipe == "nvfp4" else {}))
    r = get_recipe(recipe)
    model = {}
    for slots, seed in ops:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(len(slots), 1, 16, generator=g) * 2.0 ** torch.randint(-6, 6, (1,), generator=g).item()
        loc = torch.tensor(slots, dtype=torch.int32)
        pool.set_kv_buffer(0, loc, x, -x)
        model.update({s: x[i] for i, s in enumerate(slots)})
    for s, x in model.items():
        k, v = pool.gather_kv(0, torch.tensor([s]))
        assert torch.equal(k[0], r.dequantize(r.quantize(x, pool.k_scales[0] if pool.k_scales is not None else None)))
        assert torch.equal(v[0], r.dequantize(r.quantize(-x, pool.v_scales[0] if pool.v_scales is not None else None)))
    untouched = torch.tensor(sorted(set(range(13)) - set(model)), dtype=torch.int64)
    assert not pool.k_buffer[0][untouched].any() and not pool.v_scale_buffer[0][untouched].any()
