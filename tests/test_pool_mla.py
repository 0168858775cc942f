"""MLATokenToKVPoolFP4: the 512 + 64 latent layout, separate NoPE/RoPE quantization, round trips."""

from __future__ import annotations

import pytest
import torch

from _pool_helpers import fill_random, pool_hash
from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
from nvfp4_kvcache.recipes import get_recipe
from nvfp4_kvcache.sglang import FP4MXBlock16KVQuantizeUtil

RECIPES = ["fp4_mx_block16", "nvfp4"]


def make(recipe, **kw):
    args = dict(size=16, page_size=2, layer_num=2, kv_lora_rank=512, qk_rope_head_dim=64, recipe=recipe, device="cpu")
    if recipe == "nvfp4":
        args["kv_scales"] = [0.125, 3.0]
    args.update(kw)
    return MLATokenToKVPoolFP4(**args)


@pytest.mark.parametrize("recipe", RECIPES)
def test_deepseek_layout_288_data_and_36_scale_bytes(recipe):
    pool = make(recipe)
    assert pool.kv_buffer[0].shape == (18, 1, 288) and pool.kv_buffer[0].dtype == torch.uint8
    assert pool.kv_scale_buffer[0].shape == (18, 36) and pool.kv_scale_buffer[0].dtype == torch.uint8
    assert pool.layout.bytes_per_token == 324 and pool.nbytes == 2 * 18 * 324


@pytest.mark.parametrize("recipe", RECIPES)
def test_nope_and_rope_are_quantized_separately(recipe):
    pool = make(recipe)
    r = get_recipe(recipe)
    g = pool.kv_scales[0] if recipe == "nvfp4" else None
    # the RoPE part is tiny next to the latent: a shared block would crush it; separate blocks keep it
    nope = torch.randn(3, 1, 512) * 50
    rope = torch.randn(3, 1, 64) * 1e-2
    loc = torch.tensor([2, 3, 17])
    pool.set_mla_kv_buffer(0, loc, nope, rope)
    qn, qr = r.quantize(nope, g), r.quantize(rope, g)
    assert torch.equal(pool.kv_buffer[0][loc, :, :256], qn.packed)
    assert torch.equal(pool.kv_buffer[0][loc, :, 256:], qr.packed)
    assert torch.equal(pool.kv_scale_buffer[0][loc, :32], qn.scales.reshape(3, 32))
    assert torch.equal(pool.kv_scale_buffer[0][loc, 32:], qr.scales.reshape(3, 4))
    latent = pool.gather_kv(0, loc)
    assert torch.equal(latent[..., :512], r.dequantize(qn)) and torch.equal(latent[..., 512:], r.dequantize(qr))
    assert latent[..., 512:].abs().max() > 0   # RoPE survived
    # a block that mixed latent and RoPE values would round the RoPE values to zero
    mixed = r.dequantize(r.quantize(torch.cat([nope[..., :8], rope[..., :8]], -1), g))
    assert mixed[..., 8:].abs().max() == 0
    assert torch.equal(pool.get_key_buffer(0, dtype=torch.float32)[loc], latent)
    assert torch.equal(pool.get_value_buffer(0, dtype=torch.float32)[loc], latent[..., :512])


def test_set_kv_buffer_with_whole_latent_matches_split_write_and_upstream_quantizer():
    a, b = make("fp4_mx_block16"), make("fp4_mx_block16")
    x = torch.randn(4, 1, 576, dtype=torch.bfloat16)
    loc = torch.tensor([2, 5, 6, 9])
    a.set_kv_buffer(0, loc, x, None)
    b.set_mla_kv_buffer(0, loc, x[..., :512], x[..., 512:])
    assert pool_hash(a) == pool_hash(b)
    # SGLang's set_kv_buffer quantizes the whole 576-wide row in one call: same bytes
    packed, sf = FP4MXBlock16KVQuantizeUtil.batched_quantize(x)
    assert torch.equal(a.kv_buffer[0][loc], packed) and torch.equal(a.kv_scale_buffer[0][loc], sf)


def test_nvfp4_global_scale_per_layer_and_raw_view():
    pool = make("nvfp4")
    x = torch.randn(2, 1, 576)
    loc = torch.tensor([2, 3])
    pool.set_kv_buffer(0, loc, x)
    pool.set_kv_buffer(1, loc, x)
    assert not torch.equal(pool.kv_scale_buffer[0][loc], pool.kv_scale_buffer[1][loc])
    data, scales = pool.get_raw_kv_buffer(1)
    assert scales.dtype == torch.float8_e4m3fn and data.data_ptr() == pool.kv_buffer[1].data_ptr()


def test_move_and_cpu_copy_carry_scales():
    pool = make("fp4_mx_block16")
    x = torch.randn(2, 1, 576) * 1000
    pool.set_kv_buffer(1, torch.tensor([4, 5]), x)
    want = pool.gather_kv(1, torch.tensor([4, 5]))
    pool.move_kv_cache(torch.tensor([10, 11]), torch.tensor([4, 5]))
    assert torch.equal(pool.gather_kv(1, torch.tensor([10, 11])), want)
    saved = pool.get_cpu_copy(torch.tensor([10, 11]))
    fill_random(pool)
    pool.load_cpu_copy(saved, torch.tensor([12, 13]))
    assert torch.equal(pool.gather_kv(1, torch.tensor([12, 13])), want)


def test_padding_slot_is_never_written():
    pool = make("fp4_mx_block16")
    fill_random(pool, seed=3)
    slot0 = (pool.kv_buffer[0][0].clone(), pool.kv_scale_buffer[0][0].clone())
    x = torch.randn(3, 1, 576)
    pool.set_kv_buffer(0, torch.tensor([0, 4, 0]), x)
    assert torch.equal(pool.kv_buffer[0][0], slot0[0]) and torch.equal(pool.kv_scale_buffer[0][0], slot0[1])
    assert torch.equal(pool.gather_kv(0, torch.tensor([4]))[0], get_recipe("fp4_mx_block16").dequantize(
        get_recipe("fp4_mx_block16").quantize(x[1])))
