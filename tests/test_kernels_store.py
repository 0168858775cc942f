"""Fused quantize-and-store into a pool layer, and gather-dequantize, against reference quantize + indexing.

Buffers have SGLang 0.5.23's MHA FP4 shapes: data `[size + page_size, H, D/2]`; scales
`[size + page_size, H*D/16]` (fp4_mx_block16) or `[size + page_size, H, D/16]` (nvfp4); mxfp4
(not upstream) is tested in both scale layouts. Buffers start as random bytes, so a slot written
wrongly, or a slot written that should not be, shows.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import nvfp4_kvcache_triton  # noqa: E402
import nvfp4_kvcache_triton.reference  # noqa: E402
import nvfp4_kvcache as ri  # noqa: E402
from nvfp4_kvcache.recipes import RECIPES, PoolScaleLayout, nvfp4_global_scale  # noqa: E402
from tests._kernel_cases import equal_values, random_blocks, special_blocks  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:divide by zero:RuntimeWarning")
IMPLS = {"triton": nvfp4_kvcache_triton, "torch": nvfp4_kvcache_triton.reference}
DEVICES = [
    pytest.param("cpu", id="interp", marks=pytest.mark.skipif(not INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1")),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
]
# (recipe, flat scales?)  flat = [slots, H*D/B] (SGLang fp4_mx_block16), else [slots, H, D/B] (SGLang nvfp4):
# each recipe in its pool's layout; a recipe no pool stores in both
LAYOUTS = [(name, flat) for name, r in RECIPES.items()
           for flat in ((True, False) if r.pool_scale_layout is None else (r.pool_scale_layout is PoolScaleLayout.FLAT,))]


def make_layer(recipe, flat, slots, h, d, device, seed=0):
    bs = RECIPES[recipe].block_size
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (slots, h, d // 2), generator=gen).to(torch.uint8)
    shape = (slots, h * d // bs) if flat else (slots, h, d // bs)
    scales = torch.randint(0, 256, shape, generator=gen).to(torch.uint8)
    return data.to(device), scales.to(device)


def expected_store(recipe, k, v, loc, k_data, v_data, k_scales, v_scales, gk, gv):
    """Reference quantize (CPU oracle) + index assignment, on CPU copies of the buffers."""
    out = []
    for x, g, data, scales in ((k, gk, k_data, k_scales), (v, gv, v_data, v_scales)):
        q = ri.quantize(x.cpu(), recipe, global_scale=None if g is None else g.cpu())
        data, scales = data.cpu().clone(), scales.cpu().clone()
        data[loc.cpu().long()] = q.packed
        scales[loc.cpu().long()] = q.scales.reshape(scales[loc.cpu().long()].shape)
        out += [data, scales]
    return out


def _sizes(device):
    if device == "cpu":
        return dict(tokens=13, heads=3, dim=64, slots=40, page=4)
    return dict(tokens=2048, heads=8, dim=128, slots=65536, page=16)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS.values(), ids=IMPLS.keys())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("recipe,flat", LAYOUTS)
def test_store_kv_byte_for_byte(recipe, flat, dtype, impl, device):
    z = _sizes(device)
    t, h, d, m = z["tokens"], z["heads"], z["dim"], z["slots"] + z["page"]
    # K and V as slices of one fused QKV output: strided rows, contiguous heads
    qkv = random_blocks((t, 4 * h, d), dtype, seed=1, device=device)
    k, v = qkv[:, 2 * h:3 * h], qkv[:, 3 * h:]
    gen = torch.Generator().manual_seed(2)
    loc = torch.randperm(m, generator=gen)[:t].to(device)
    for loc_dtype in (torch.int64, torch.int32):
        kd, ks = make_layer(recipe, flat, m, h, d, device, seed=3)
        vd, vs = make_layer(recipe, flat, m, h, d, device, seed=4)
        gk = gv = None
        if RECIPES[recipe].global_scale is not None:
            gk = nvfp4_global_scale(k.float().abs().amax(), "amax/448").to(device)
            gv = nvfp4_global_scale(v.float().abs().amax(), "amax/(6*448)").to(device)
        want = expected_store(recipe, k, v, loc, kd, vd, ks, vs, gk, gv)
        impl.store_kv(k, v, loc.to(loc_dtype), kd, vd, ks, vs, recipe, gk, gv)
        for got, exp, name in zip((kd, ks, vd, vs), want, ("k_data", "k_scales", "v_data", "v_scales")):
            assert torch.equal(got.cpu(), exp), f"{name}: {(got.cpu() != exp).sum().item()} bytes differ"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe,flat", LAYOUTS)
def test_store_kv_specials(recipe, flat, device):
    x = special_blocks()  # [rows, 32]
    t = x.shape[0] // 4
    k = x[: 4 * t].reshape(t, 2, 64).to(device)
    v = (-k).flip(0).contiguous()
    m = 2 * t + 8
    loc = torch.arange(m - 1, m - 1 - 2 * t, -2).to(device)
    kd, ks = make_layer(recipe, flat, m, 2, 64, device, seed=5)
    vd, vs = make_layer(recipe, flat, m, 2, 64, device, seed=6)
    g = torch.tensor(0.75, device=device) if RECIPES[recipe].global_scale is not None else None
    want = expected_store(recipe, k, v, loc, kd, vd, ks, vs, g, g)
    nvfp4_kvcache_triton.store_kv(k, v, loc, kd, vd, ks, vs, recipe, g, g)
    for got, exp in zip((kd, ks, vd, vs), want):
        assert torch.equal(got.cpu(), exp)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS.values(), ids=IMPLS.keys())
@pytest.mark.parametrize("recipe,flat", LAYOUTS)
def test_gather_dequantize(recipe, flat, impl, device):
    z = _sizes(device)
    m, h, d = z["slots"] + z["page"], z["heads"], z["dim"]
    data, scales = make_layer(recipe, flat, m, h, d, device, seed=7)
    if RECIPES[recipe].scale.torch_dtype is torch.float8_e4m3fn:  # keep E4M3 scale bytes finite, as a pool written by store_kv holds them
        scales = scales & 0x77
    gen = torch.Generator().manual_seed(8)
    n = z["tokens"]
    loc = torch.randint(0, m, (n,), generator=gen).to(device)  # repeats allowed when reading
    g = torch.tensor(0.01, device=device) if RECIPES[recipe].global_scale is not None else None
    bs = RECIPES[recipe].block_size
    for dtype in (torch.bfloat16, torch.float32, torch.float16):
        got = impl.gather_dequantize(data, scales, loc.int(), recipe, g, dtype)
        want = RECIPES[recipe].dequantize_parts(
            data.cpu()[loc.cpu()], scales.cpu()[loc.cpu()].reshape(n, h, d // bs),
            None if g is None else g.cpu(), dtype)
        assert got.shape == (n, h, d) and equal_values(got, want), (recipe, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_store_then_gather_round_trip(device):
    """What store_kv writes, gather_dequantize reads back as the oracle's dequantize(quantize(x))."""
    k = random_blocks((9, 2, 32), torch.bfloat16, seed=9, device=device)
    v = random_blocks((9, 2, 32), torch.bfloat16, seed=10, device=device)
    loc = torch.tensor([3, 17, 5, 8, 0, 1, 2, 30, 31], device=device)
    for recipe, flat in LAYOUTS:
        kd, ks = make_layer(recipe, flat, 36, 2, 32, device, seed=11)
        vd, vs = make_layer(recipe, flat, 36, 2, 32, device, seed=12)
        g = torch.tensor(0.02, device=device) if RECIPES[recipe].global_scale is not None else None
        nvfp4_kvcache_triton.store_kv(k, v, loc, kd, vd, ks, vs, recipe, g, g)
        for x, data, scales in ((k, kd, ks), (v, vd, vs)):
            got = nvfp4_kvcache_triton.gather_dequantize(data, scales, loc, recipe, g, torch.bfloat16)
            want = ri.dequantize(ri.quantize(x.cpu(), recipe, global_scale=None if g is None else g.cpu()),
                                 torch.bfloat16)
            assert equal_values(got, want), recipe


def _bad_store_calls():
    k = torch.randn(4, 2, 32)
    loc = torch.arange(4)
    kd, ks = make_layer("fp4_mx_block16", True, 8, 2, 32, "cpu")
    yield dict(k=k, v=k, loc=loc.float(), k_data=kd, v_data=kd, k_scales=ks, v_scales=ks, recipe="fp4_mx_block16")
    yield dict(k=k, v=k, loc=loc[:3], k_data=kd, v_data=kd, k_scales=ks, v_scales=ks, recipe="fp4_mx_block16")
    yield dict(k=k, v=k[:, :1], loc=loc, k_data=kd, v_data=kd, k_scales=ks, v_scales=ks, recipe="fp4_mx_block16")
    yield dict(k=k, v=k, loc=loc, k_data=kd, v_data=kd, k_scales=ks[:, :2], v_scales=ks, recipe="fp4_mx_block16")
    yield dict(k=k, v=k, loc=loc, k_data=kd.float(), v_data=kd, k_scales=ks, v_scales=ks, recipe="fp4_mx_block16")
    yield dict(k=k, v=k, loc=loc, k_data=kd[:, :1], v_data=kd, k_scales=ks, v_scales=ks, recipe="fp4_mx_block16")
    yield dict(k=k.int(), v=k, loc=loc, k_data=kd, v_data=kd, k_scales=ks, v_scales=ks, recipe="fp4_mx_block16")
    yield dict(k=k, v=k, loc=loc, k_data=kd, v_data=kd, k_scales=ks, v_scales=ks, recipe="nvfp4")
    yield dict(k=k, v=k, loc=loc, k_data=kd, v_data=kd, k_scales=ks.reshape(8, 2, 2), v_scales=ks,
               recipe="nvfp4", k_global_scale=torch.tensor([1.0, 2.0]), v_global_scale=1.0)
    yield dict(k=k, v=k, loc=loc, k_data=kd, v_data=kd, k_scales=ks, v_scales=ks, recipe="mxfp4")


@pytest.mark.parametrize("case", list(_bad_store_calls()), ids=lambda c: c["recipe"])
def test_store_errors_are_the_same_for_both(case):
    with pytest.raises((TypeError, ValueError)) as want:
        nvfp4_kvcache_triton.reference.store_kv(**case)
    with pytest.raises(want.type) as got:
        nvfp4_kvcache_triton.store_kv(**case)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_store_kv_equals_reference_pool_set_kv_buffer(recipe, device):
    """nvfp4_kvcache_triton.store_kv on a layer's buffers == nvfp4_kvcache.pool's set_kv_buffer, byte for byte."""
    pool_mod = pytest.importorskip("nvfp4_kvcache.pool")
    kw = dict(size=40, page_size=4, layer_num=2, head_num=2, head_dim=64, recipe=recipe)
    if RECIPES[recipe].global_scale is not None:
        kw.update(k_scales=[0.02, 0.5], v_scales=[0.01, 0.25])
    try:
        pool = pool_mod.MHATokenToKVPoolFP4(**kw)
    except (TypeError, ValueError) as e:  # a recipe this pool does not offer
        pytest.skip(f"reference pool: {e}")
    k = random_blocks((11, 2, 64), torch.bfloat16, seed=13)
    v = random_blocks((11, 2, 64), torch.bfloat16, seed=14)
    loc = torch.tensor([4, 9, 10, 11, 12, 30, 31, 32, 33, 40, 43])
    layer = 1
    bufs = {name: t.clone().to(device) for name, t in pool.layer_tensors(layer).items()}
    g = pool.global_scale_tensors()
    gk = g["k_scales"].reshape(-1)[layer].to(device) if g else None
    gv = g["v_scales"].reshape(-1)[layer].to(device) if g else None
    pool.set_kv_buffer(layer, loc, k, v)
    nvfp4_kvcache_triton.store_kv(k.to(device), v.to(device), loc.to(device), bufs["k"], bufs["v"], bufs["k_scale"],
                     bufs["v_scale"], recipe, gk, gv)
    for name, want in pool.layer_tensors(layer).items():
        assert torch.equal(bufs[name].cpu(), want), name


@pytest.mark.parametrize("impl", IMPLS.values(), ids=IMPLS.keys())
@pytest.mark.parametrize("bad_loc,error", [
    ([0, 1, 2, 8], IndexError),     # slot 8 is past the 8-row layer
    ([0, 1, -1, 3], IndexError),
    ([1, 2, 2, 3], ValueError),     # a repeated real slot: the writes would race
])
def test_bad_slots_raise_and_write_nothing(impl, bad_loc, error):
    k = torch.randn(4, 2, 32)
    kd, ks = make_layer("fp4_mx_block16", True, 8, 2, 32, "cpu", seed=21)
    before = (kd.clone(), ks.clone())
    with pytest.raises(error, match="loc"):
        impl.store_kv(k, k, torch.tensor(bad_loc), kd, kd, ks, ks, "fp4_mx_block16")
    assert torch.equal(kd, before[0]) and torch.equal(ks, before[1])
    if error is IndexError:
        with pytest.raises(IndexError, match="loc must hold slots"):
            impl.gather_dequantize(kd, ks, torch.tensor(bad_loc), "fp4_mx_block16")


@pytest.mark.parametrize("impl", IMPLS.values(), ids=IMPLS.keys())
def test_padding_slot_may_repeat_and_checks_can_be_skipped(impl):
    k = torch.randn(4, 2, 32)
    kd, ks = make_layer("fp4_mx_block16", True, 8, 2, 32, "cpu", seed=22)
    impl.store_kv(k, k, torch.tensor([0, 5, 0, 6]), kd, kd, ks, ks, "fp4_mx_block16")
    impl.store_kv(k, k, torch.tensor([1, 2, 3, 4]), kd, kd, ks, ks, "fp4_mx_block16", check_slots=False)
    want = ri.quantize(k, "fp4_mx_block16")
    assert torch.equal(kd[1:5], want.packed)
