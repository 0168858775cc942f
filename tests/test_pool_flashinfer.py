"""FlashInfer's NVFP4 paged layout: bytes at the right place, page tables, converters, refusals."""

from __future__ import annotations

import pytest
import torch

from _pool_helpers import fill_random, pool_hash
from nvfp4_kvcache.formats import E4M3
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
from nvfp4_kvcache.pool.flashinfer import (
    FlashInferNVFP4KVCache,
    FlashInferNVFP4MLACache,
    append_slots,
    check_recipe,
    fp8_e4m3_codes,
    from_sglang,
    page_table_from_slots,
    slots_from_page_table,
    to_sglang,
)
import dataclasses

from nvfp4_kvcache.recipes import NVFP4, get_recipe

LAYOUTS = ("NHD", "HND")
DTYPES = (torch.bfloat16, torch.float16)


def _cache(layout="NHD", pages=6, page=4, layers=2, heads=3, dim=32, **kw):
    kw.setdefault("k_scales", [0.37, 2.0])
    kw.setdefault("v_scales", [1.0, 0.05])
    return FlashInferNVFP4KVCache(num_pages=pages, page_size=page, layer_num=layers, head_num=heads,
                                  head_dim=dim, kv_layout=layout, **kw)


def _rows(n, heads=3, dim=32, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (torch.randn(n, heads, dim, generator=g) * torch.logspace(-3, 3, dim)).to(dtype)
    v = (torch.randn(n, heads, dim, generator=g) * 5).to(dtype)
    return k, v


def _at(t: torch.Tensor, layout: str, slot: int, page_size: int) -> torch.Tensor:
    """Row of slot `slot` read with the layout's index arithmetic (written out here, not the cache's)."""
    page, entry = divmod(slot, page_size)
    return t[page, entry] if layout == "NHD" else t[page, :, entry]


# -- bytes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_write_slots_stores_the_recipe_bytes_at_page_entry_head(layout, dtype):
    c = _cache(layout)
    fill_random(c)
    k, v = _rows(5, dtype=dtype)
    slots = [23, 0, 9, 4, 14]
    c.write_slots(1, k, v, torch.tensor(slots))
    qk, qv = NVFP4.quantize(k, c.k_scales[1]), NVFP4.quantize(v, c.v_scales[1])
    for j, s in enumerate(slots):
        assert torch.equal(_at(c.k_cache[1], layout, s, 4), qk.packed[j])
        assert torch.equal(_at(c.v_cache[1], layout, s, 4), qv.packed[j])
        assert torch.equal(_at(c.k_sf[1], layout, s, 4), qk.scales[j])
        assert torch.equal(_at(c.v_sf[1], layout, s, 4), qv.scales[j])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_untouched_slots_and_layers_keep_their_bytes(layout):
    c = _cache(layout)
    fill_random(c, seed=3)
    names = ("k_cache", "v_cache", "k_sf", "v_sf")
    before = {(n, i): t.clone() for n in names for i, t in enumerate(getattr(c, n))}
    k, v = _rows(2)
    c.write_slots(0, k, v, torch.tensor([5, 17]))
    for (n, i), old in before.items():
        new = getattr(c, n)[i]
        if i == 1:
            assert torch.equal(old, new), n
            continue
        changed = {s for s in range(24) if not torch.equal(_at(old, layout, s, 4), _at(new, layout, s, 4))}
        assert changed <= {5, 17} and changed, (n, changed)


def test_padding_slots_are_skipped_and_extra_rows_ignored():
    c = _cache()
    fill_random(c, seed=1)
    k, v = _rows(6)
    ref = _cache()
    fill_random(ref, seed=1)
    c.write_slots(0, k, v, torch.tensor([-1, 8, -7, 3]))          # 6 rows, 4 slots: rows 4, 5 ignored
    ref.write_slots(0, k[[1, 3]], v[[1, 3]], torch.tensor([8, 3]))
    assert pool_hash(c) == pool_hash(ref)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_append_by_page_table_equals_write_by_slot_mapping(layout):
    kv_indptr, kv_indices, last = torch.tensor([0, 2, 3, 3]), torch.tensor([4, 1, 5]), torch.tensor([3, 4, 0])
    batch, pos = torch.tensor([0, 0, 1, 0, 1]), torch.tensor([6, 2, 3, 0, 0])
    k, v = _rows(5, dtype=torch.float16)
    a, b = _cache(layout), _cache(layout)
    a.append(1, k, v, batch, pos, kv_indices, kv_indptr, last)
    b.write_slots(1, k, v, torch.tensor([4 + 2, 16 + 2, 20 + 3, 16 + 0, 20 + 0]))   # page * 4 + entry
    assert pool_hash(a) == pool_hash(b)


# -- page tables ------------------------------------------------------------------------------------
def test_page_table_and_token_slots_round_trip():
    g = torch.Generator().manual_seed(7)
    pages = torch.randperm(50, generator=g)
    lens = [0, 1, 4, 5, 13, 16]
    token_indptr = torch.tensor([0] + torch.cumsum(torch.tensor(lens), 0).tolist())
    slots, used = [], 0
    for n in lens:
        need = (n + 3) // 4
        for j in range(n):
            slots.append(int(pages[used + j // 4]) * 4 + j % 4)
        used += need
    token_slots = torch.tensor(slots)
    kv_indptr, kv_indices, last = page_table_from_slots(token_indptr, token_slots, 4)
    assert kv_indptr.dtype == kv_indices.dtype == last.dtype == torch.int32
    assert last.tolist() == [0, 1, 4, 1, 1, 4]
    back_indptr, back_slots = slots_from_page_table(kv_indptr, kv_indices, last, 4)
    assert torch.equal(back_indptr, token_indptr) and torch.equal(back_slots, token_slots)
    batch = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))
    pos = torch.cat([torch.arange(n) for n in lens])
    assert torch.equal(append_slots(batch, pos, kv_indptr, kv_indices, last, 4), token_slots)


@pytest.mark.parametrize("bad, message", [
    ((torch.tensor([1, 2]), torch.tensor([5, 1]), torch.tensor([1])), "kv_indptr must start at 0"),
    ((torch.tensor([0, 2]), torch.tensor([5]), torch.tensor([1])), "kv_indices must have kv_indptr"),
    ((torch.tensor([0, 2]), torch.tensor([5, 1]), torch.tensor([5])), r"kv_last_page_len\[0\] = 5 must lie in \[1, 4\]"),
    ((torch.tensor([0, 0]), torch.tensor([], dtype=torch.int64), torch.tensor([1])), r"must lie in \[0, 0\]"),
    ((torch.tensor([0, 2]), torch.tensor([5, 1]), torch.tensor([1, 1])), "one per request"),
    ((torch.tensor([0, 2.0]), torch.tensor([5, 1]), torch.tensor([1])), "kv_indptr must have dtype"),
])
def test_malformed_page_tables_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        slots_from_page_table(*bad, 4)


def test_rows_outside_their_request_are_refused():
    table = (torch.tensor([0, 2]), torch.tensor([5, 1]), torch.tensor([2]))
    with pytest.raises(IndexError, match=r"positions\[0\] = 6 is outside request 0's 6 tokens"):
        append_slots(torch.tensor([0]), torch.tensor([6]), *table, 4)
    with pytest.raises(IndexError, match="batch_indices holds request 1"):
        append_slots(torch.tensor([1]), torch.tensor([0]), *table, 4)
    with pytest.raises(IndexError, match="kv_indices holds page 5, outside the cache's pages"):
        append_slots(torch.tensor([0]), torch.tensor([0]), *table, 4, num_pages=5)


# -- converters -------------------------------------------------------------------------------------
def _sglang_pool():
    return MHATokenToKVPoolFP4(size=20, page_size=4, layer_num=2, head_num=3, head_dim=32, recipe="nvfp4",
                               k_scales=[0.37, 2.0], v_scales=[1.0, 0.05], start_layer=3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sglang_pool_and_flashinfer_cache_written_alike_are_the_same_bytes(layout):
    """Both written from the same rows (SGLang by `loc`, FlashInfer by the same numbers as slot
    mapping): converting either way gives the other, byte for byte."""
    pool = _sglang_pool()
    fc = FlashInferNVFP4KVCache(num_pages=6, page_size=4, layer_num=2, head_num=3, head_dim=32, kv_layout=layout,
                                k_scales=[0.37, 2.0], v_scales=[1.0, 0.05], start_layer=3)
    for layer in (3, 4):
        k, v = _rows(9, seed=layer)
        loc = torch.tensor([4, 5, 6, 7, 12, 13, 22, 23, 9])
        pool.set_kv_buffer(layer, loc, k, v)
        fc.write_slots(layer, k, v, loc)
    assert pool_hash(from_sglang(pool, layout)) == pool_hash(fc)
    assert pool_hash(to_sglang(fc)) == pool_hash(pool)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_converters_are_inverse_on_arbitrary_bytes(layout):
    pool = _sglang_pool()
    fill_random(pool, seed=11)
    there = from_sglang(pool, layout)
    assert pool_hash(to_sglang(there)) == pool_hash(pool)
    back = from_sglang(to_sglang(there), layout)
    assert pool_hash(back) == pool_hash(there)
    assert torch.equal(there.k_scales, pool.k_scales) and torch.equal(there.v_scales, pool.v_scales)
    loc = torch.tensor([0, 3, 17, 23])
    for a, b in zip(pool.gather_kv(4, loc), there.gather_kv(4, loc)):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))   # NaN-safe bit equality


def test_converter_with_another_page_size_keeps_slot_numbers():
    pool = _sglang_pool()
    fill_random(pool, seed=5)
    fc = from_sglang(pool, "HND", page_size=8)
    assert fc.num_pages == 3 and fc.page_size == 8
    assert torch.equal(fc.k_cache[1][2, :, 7], pool.k_buffer[1][23])
    with pytest.raises(ValueError, match="page_size 5 must divide the pool's 24 rows"):
        from_sglang(pool, page_size=5)


def test_converter_refuses_what_the_layout_cannot_hold():
    block16 = MHATokenToKVPoolFP4(size=4, page_size=4, layer_num=1, head_num=1, head_dim=16)
    with pytest.raises(ValueError, match="recipe 'fp4_mx_block16' has block size 16 and no global scale"):
        from_sglang(block16)
    with pytest.raises(TypeError, match="pool must be an MHATokenToKVPoolFP4"):
        from_sglang(object())
    with pytest.raises(ValueError, match="at least 2 pages"):
        to_sglang(_cache(pages=1))


# -- paged dequantize -------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_dequantize_paged_matches_gather_and_leaves_the_tail(layout):
    c = _cache(layout)
    k, v = _rows(7, dtype=torch.float16)
    c.write_slots(0, k, v, torch.tensor([20, 21, 22, 4, 5, 6, 7]))
    tables = torch.tensor([[5, 1], [1, 0]], dtype=torch.int32)
    lens = torch.tensor([6, 2], dtype=torch.int32)
    out_k = torch.full((2, 9, 3, 32), float("nan"), dtype=torch.float16)
    out_v = torch.full_like(out_k, float("nan"))
    c.dequantize_paged(0, tables, lens, out_k, out_v)
    gk, gv = c.gather_kv(0, torch.tensor([20, 21, 22, 23, 4, 5]), dtype=torch.float16)
    assert torch.equal(out_k[0, :6], gk) and torch.equal(out_v[0, :6], gv)
    assert torch.equal(out_k[1, :2], c.gather_kv(0, torch.tensor([4, 5]), dtype=torch.float16)[0])
    assert out_k[0, 6:].isnan().all() and out_v[1, 2:].isnan().all()
    new_k, _ = c.dequantize_paged(0, tables, lens, dtype=torch.bfloat16)
    assert new_k.shape == (2, 6, 3, 32) and new_k.dtype == torch.bfloat16


# -- recipes by capability --------------------------------------------------------------------------
def test_any_recipe_with_16_blocks_and_a_global_scale_is_stored():
    # a stand-in for a future NVFP4 variant: only its name and kernel branch differ
    c = _cache(recipe=dataclasses.replace(NVFP4, name="nvfp4_variant_for_tests", kernel_id=99))
    k, v = _rows(2)
    c.write_slots(0, k, v, torch.tensor([1, 2]))
    ref = _cache()
    ref.write_slots(0, k, v, torch.tensor([1, 2]))
    assert pool_hash(c) == pool_hash(ref)
    for name in ("fp4_mx_block16", "mxfp4"):
        with pytest.raises(ValueError, match="FlashInfer's NVFP4 layout stores 16-element blocks"):
            check_recipe(name)
    assert check_recipe(get_recipe("nvfp4")) is NVFP4
    assert check_recipe("nvfp4_4over6").name == "nvfp4_4over6"
    with pytest.raises(ValueError, match="recipe 'mxfp4_rceil' has block size 32"):
        check_recipe("mxfp4_rceil")


# -- refusals leave the cache as it was -------------------------------------------------------------
def _bad_calls(c):
    k, v = _rows(2)
    tbl = (torch.tensor([5, 1]), torch.tensor([0, 2]), torch.tensor([3]))
    return [
        (lambda: c.write_slots(0, k.float(), v, torch.tensor([1, 2])), ValueError, "append_key must be torch.bfloat16 or torch.float16"),
        (lambda: c.write_slots(0, k, v.half(), torch.tensor([1, 2])), ValueError, "same shape and dtype"),
        (lambda: c.write_slots(0, k[:, :2], v[:, :2], torch.tensor([1, 2])), ValueError, r"append_key must have shape \[>= 2, 3, 32\]"),
        (lambda: c.write_slots(0, k[:1], v[:1], torch.tensor([1, 2])), ValueError, "append_key must have shape"),
        (lambda: c.write_slots(0, k, v, torch.tensor([3, 24])), IndexError, r"slot 24, outside the cache's slots \[0, 24\)"),
        (lambda: c.write_slots(0, k, v, torch.tensor([3, 3])), ValueError, r"writes slot\(s\) \[3\] more than once"),
        (lambda: c.write_slots(0, k, v, torch.tensor([3.0, 4.0])), ValueError, "slot_mapping must have dtype"),
        (lambda: c.write_slots(0, k, v, [3, 4]), TypeError, "slot_mapping must be a torch.Tensor"),
        (lambda: c.write_slots(2, k, v, torch.tensor([3, 4])), IndexError, "layer_id 2 out of range"),
        (lambda: c.append(0, k, v, torch.tensor([0, 0]), torch.tensor([0, 0]), *tbl), ValueError, "more than once"),
        (lambda: c.append(0, k, v, torch.tensor([0, 0]), torch.tensor([0, 7]), *tbl), IndexError, "outside request 0's 7 tokens"),
        (lambda: c.append(0, k, v, torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([6, 1]), tbl[1], tbl[2]),
         IndexError, "kv_indices holds page 6"),
        (lambda: c.append(0, k[:1], v[:1], torch.tensor([0, 0]), torch.tensor([0, 1]), *tbl), ValueError, "append_key must have shape"),
        (lambda: c.gather_kv(0, torch.tensor([24])), IndexError, "slots holds slot 24"),
        (lambda: c.gather_kv(0, torch.tensor([1]), dtype=torch.int8), ValueError, "dtype must be one of"),
        (lambda: c.dequantize_paged(0, torch.tensor([[6]]), torch.tensor([1], dtype=torch.int32)), IndexError, "holds page 6"),
        (lambda: c.dequantize_paged(0, torch.tensor([[1]]), torch.tensor([1])), ValueError, "seq_lens must have dtype"),
        (lambda: c.dequantize_paged(0, torch.tensor([[1]]), torch.tensor([5], dtype=torch.int32)), ValueError, r"seq_lens must lie in \[0, 4\]"),
    ]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_input_is_refused_and_the_cache_is_unchanged(layout):
    c = _cache(layout)
    fill_random(c, seed=2)
    before = pool_hash(c)
    for call, exc, message in _bad_calls(c):
        with pytest.raises(exc, match=message):
            call()
        assert pool_hash(c) == before, message


def test_dequantize_paged_refuses_bad_outputs_before_writing():
    c = _cache()
    fill_random(c, seed=4)
    out = torch.full((1, 3, 3, 32), 7.0, dtype=torch.bfloat16)
    tables, lens = torch.tensor([[1]]), torch.tensor([4], dtype=torch.int32)
    for kw, message in [({"out_k": out}, "both out_k and out_v"),
                        ({"out_k": out, "out_v": out.half()}, "one dtype"),
                        ({"out_k": out, "out_v": out.clone()}, "shorter than max"),
                        ({"out_k": out.float(), "out_v": out.float()}, "4-D bfloat16/float16")]:
        with pytest.raises(ValueError, match=message):
            c.dequantize_paged(0, tables, lens, **kw)
        assert (out == 7).all()


@pytest.mark.parametrize("scales, message", [
    ([0.5, 0.0], r"k_scales\[1\] must be a positive, finite, normal float32"),
    ([float("nan"), 1.0], r"k_scales\[0\]"),
    ([1e-40, 1.0], r"k_scales\[0\]"),
    ([float("inf"), 1.0], r"k_scales\[0\]"),
    ([1.0], r"one scale per layer \(2\), got 1"),
    ("1.0", "must be a float, a sequence"),
    (torch.ones(2, dtype=torch.float64), "must be float32"),
])
def test_bad_global_scales_are_refused(scales, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _cache(k_scales=scales)


def test_bad_geometry_is_refused():
    for kw, message in [({"layout": "NDH"}, "kv_layout must be one of"), ({"dim": 24}, "multiple of the block size 16"),
                        ({"pages": 0}, "num_pages must be positive"), ({"heads": 1.5}, "head_num must be an int")]:
        with pytest.raises((TypeError, ValueError), match=message):
            _cache(**kw)


# -- views FlashInfer takes -------------------------------------------------------------------------
def test_flashinfer_views_share_memory_and_have_its_dtypes():
    c = _cache("HND")
    k, v = c.paged_kv_cache(1)
    ks, vs = c.kv_cache_sf(1)
    assert k.dtype == torch.uint8 and ks.dtype == torch.float8_e4m3fn and ks.shape == (6, 3, 4, 2)
    ks[0, 0, 0, 0] = 2.0
    assert c.k_sf[1][0, 0, 0, 0].item() == 0x40
    assert k.data_ptr() == c.k_cache[1].data_ptr() and vs.data_ptr() == c.v_sf[1].data_ptr()


# -- MLA --------------------------------------------------------------------------------------------
def test_fp8_codes_round_trip_every_byte_and_round_ties_to_even():
    codes = torch.arange(256, dtype=torch.uint8)
    values = codes.view(torch.float8_e4m3fn).float()
    got = fp8_e4m3_codes(values)
    nan = values.isnan()
    assert torch.equal(got[~nan], codes[~nan]) and (got[nan] == 0x7F).all()
    mags = torch.tensor(E4M3.magnitudes, dtype=torch.float64)
    mid = ((mags[:-1] + mags[1:]) / 2).float()            # exact in float32
    lower = torch.arange(len(E4M3.magnitudes) - 1)
    expect = torch.where(lower % 2 == 0, lower, lower + 1).to(torch.uint8)
    assert torch.equal(fp8_e4m3_codes(mid), expect)
    assert fp8_e4m3_codes(torch.tensor([464.0, 1e30, -float("inf")])).tolist() == [0x7E, 0x7E, 0xFE]


def test_mla_cache_stores_nvfp4_latent_and_fp8_rope():
    g = torch.Generator().manual_seed(9)
    ckv = (torch.randn(3, 512, generator=g) * 3).to(torch.bfloat16)
    kpe = (torch.randn(3, 64, generator=g) * 40).to(torch.bfloat16)
    c = FlashInferNVFP4MLACache(num_pages=4, page_size=2, ckv_scale=0.37, kpe_scale=0.3)
    c.append(ckv, kpe, torch.tensor([0, 0, 1]), torch.tensor([0, 2, 0]), torch.tensor([3, 1, 0]),
             torch.tensor([0, 2, 3]), torch.tensor([1, 1]))
    q = NVFP4.quantize(ckv, torch.tensor(0.37))
    for row, (page, entry) in enumerate([(3, 0), (1, 0), (0, 0)]):
        assert torch.equal(c.ckv_cache[page, entry], q.packed[row])
        assert torch.equal(c.ckv_sf[page, entry], q.scales[row])
        inv = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(0.3, dtype=torch.float32)
        assert torch.equal(c.kpe_cache[page, entry], fp8_e4m3_codes(kpe[row].float() * inv))
    before = c.state_digest()
    with pytest.raises(ValueError, match=r"append_ckv must have shape \[1, 512\]"):
        c.append(ckv[:1, :256], kpe[:1], torch.tensor([0]), torch.tensor([1]), torch.tensor([2]),
                 torch.tensor([0, 1]), torch.tensor([2]))
    assert c.state_digest() == before
