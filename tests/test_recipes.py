"""The three recipes: hand-derived named cases, exhaustive decode tables, properties, and errors."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import nvfp4_kvcache as ri
from nvfp4_kvcache.cases import CASES, case_codes, case_input, case_recipe
from nvfp4_kvcache.formats import E2M1, E4M3
from nvfp4_kvcache.packing import pack_nibbles, unpack_nibbles
from nvfp4_kvcache.recipes import FP4_MX_BLOCK16, MXFP4, NVFP4, RECIPES, get_recipe, nvfp4_global_scale

ALL = sorted(RECIPES)


def _g(recipe, value=1.0):
    return value if get_recipe(recipe).needs_global_scale else None


@pytest.mark.parametrize("name", sorted(CASES))
def test_named_case(name):
    case = CASES[name]
    q = case_recipe(case).quantize(case_input(case), case.global_scale)
    assert q.scales.tolist() == [[case.scale_byte]], case.why
    assert unpack_nibbles(q.packed)[0].tolist() == case_codes(case), case.why


def test_every_recipe_has_cases_for_zero_nan_inf():
    for recipe in ALL:
        for kind in ("zero_block", "nan_block", "inf_block"):
            assert f"{recipe}/{kind}" in CASES


# ---- decode: every code under every scale byte ------------------------------------------------

def _all_codes_all_scales(recipe):
    r = get_recipe(recipe)
    codes = torch.arange(16, dtype=torch.uint8).repeat(256, r.block_size // 16)  # [256, block]
    scales = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    return r, codes, scales


def test_block16_decode_table_exhaustive():
    r, codes, scales = _all_codes_all_scales("fp4_mx_block16")
    out = r.dequantize_parts(pack_nibbles(codes), scales.reshape(256, 1), None, torch.float64)
    for b in range(256):
        for c in range(16):
            # float32 arithmetic: 2**128 (byte 255) is +inf and products past 3.4e38 overflow
            want = (torch.tensor(E2M1.decode(c)) * torch.tensor(2.0 ** (b - 127))).item()
            got = out[b, c].item()
            if math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == want and math.copysign(1, got) == math.copysign(1, want), (b, c)


def test_nvfp4_decode_table_exhaustive():
    r, codes, scales = _all_codes_all_scales("nvfp4")
    for g in (1.0, 0.5, 3.0 / 2688.0):
        out = r.dequantize_parts(pack_nibbles(codes), scales.reshape(256, 1), g, torch.float32)
        gf = torch.tensor(g, dtype=torch.float32)
        for b in range(256):
            sf = E4M3.decode(b)
            want = (torch.tensor([E2M1.decode(c) * sf for c in range(16)], dtype=torch.float32) * gf)
            got = out[b]
            if math.isnan(sf):
                assert torch.isnan(got).all()
            else:
                assert torch.equal(got, want) and torch.equal(torch.signbit(got), torch.signbit(want)), (g, b)


def test_mxfp4_decode_table_exhaustive():
    r, codes, scales = _all_codes_all_scales("mxfp4")
    out = r.dequantize_parts(pack_nibbles(codes), scales.reshape(256, 1), None, torch.float64)
    for b in range(255):
        want = torch.tensor([E2M1.decode(c) * 2.0 ** (b - 127) for c in range(16)] * 2, dtype=torch.float32)
        assert torch.equal(out[b].float(), want), b
    assert torch.isnan(out[255]).all()


# ---- properties -------------------------------------------------------------------------------

def _blocks(draw_values, recipe, nblocks):
    n = get_recipe(recipe).block_size
    return torch.tensor(draw_values[: nblocks * n], dtype=torch.float32).reshape(nblocks, n)


finite32 = st.floats(min_value=-(2.0**100), max_value=2.0**100, allow_nan=False, allow_infinity=False, width=32)


# NVFP4 is left out: its E4M3 block scale is re-derived from the block max, so a decoded NVFP4
# block need not quantize back to itself.
@pytest.mark.parametrize("recipe", ["fp4_mx_block16", "mxfp4"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_representable_values_are_fixed_points(recipe, data):
    r = get_recipe(recipe)
    n = r.block_size
    codes = torch.tensor(data.draw(st.lists(st.integers(0, 15), min_size=n, max_size=n)), dtype=torch.uint8)
    lo, hi = (95, 250) if recipe == "fp4_mx_block16" else (3, 250)
    scale = torch.tensor([data.draw(st.integers(lo, hi))], dtype=torch.uint8)
    x = r.dequantize_parts(pack_nibbles(codes).reshape(1, -1), scale.reshape(1, 1), None, torch.float32)
    again = r.dequantize(r.quantize(x))
    assert torch.equal(again, x)


@pytest.mark.parametrize("recipe", ALL)
@settings(max_examples=60, deadline=None)
@given(values=st.lists(finite32, min_size=64, max_size=64))
def test_error_is_at_most_half_a_grid_step(recipe, values):
    r = get_recipe(recipe)
    x = torch.tensor(values, dtype=torch.float32).reshape(-1, r.block_size)
    two_level = r.global_scale is not None
    g = nvfp4_global_scale(x.abs().amax().clamp(min=1e-30), "amax/(6*448)") if two_level else None
    q = r.quantize(x, g)
    err = (r.dequantize(q, torch.float64) - x.double()).abs()
    # the per-block scale that multiplies the E2M1 grid
    unit = r.scale.decode_tensor(q.scales).double().reshape(-1, 1)
    if two_level:
        unit = unit * g.double()
    y = x.double().abs() / unit
    # half of the local grid gap: 0.25 below 2, 0.5 in [2, 4), 1 above 4; beyond 6: the distance to 6
    half_gap = torch.where(y < 2, 0.25, torch.where(y < 4, 0.5, 1.0))
    bound = torch.maximum(half_gap, y - 6) * unit
    # an E4M3 scale can underflow to 0 for a small block: then the whole block is 0; and a recipe
    # whose arithmetic flushes float32 subnormals (nvfp4_4over6) reads a subnormal input as 0
    bound = torch.where(unit == 0, x.double().abs(), bound)
    bound = torch.where(x.abs() < torch.finfo(torch.float32).tiny, torch.maximum(bound, x.double().abs()), bound)
    assert (err <= bound * (1 + 1e-12)).all()


@pytest.mark.parametrize("recipe", ALL)
@settings(max_examples=40, deadline=None)
@given(values=st.lists(finite32.filter(lambda v: v != 0), min_size=32, max_size=32))
def test_sign_symmetry(recipe, values):
    r = get_recipe(recipe)
    x = torch.tensor(values, dtype=torch.float32).reshape(-1, r.block_size)
    g = _g(recipe, 0.75)
    qp, qn = r.quantize(x, g), r.quantize(-x, g)
    assert torch.equal(qp.scales, qn.scales)
    cp, cn = unpack_nibbles(qp.packed), unpack_nibbles(qn.packed)
    if recipe == "fp4_mx_block16":
        # the sign bit is (x / 2**e < 0) in float32: a value whose quotient underflows to -0.0 gets
        # code 0, so only non-zero magnitudes are guaranteed to flip
        assert torch.equal(cp & 0x7, cn & 0x7)
        nonzero = (cp & 0x7) != 0
        assert torch.equal((cp ^ 0x8)[nonzero], cn[nonzero])
    else:
        assert torch.equal(cp ^ 0x8, cn)


@pytest.mark.parametrize("recipe", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(64,), (3, 64), (2, 3, 128), (1, 2, 2, 96)])
def test_shapes_and_dtype_independence(recipe, dtype, shape):
    r = get_recipe(recipe)
    torch.manual_seed(hash((recipe, shape)) % 1000)
    x = (torch.randn(shape) * 10).to(dtype)
    g = _g(recipe)
    q = r.quantize(x, g)
    assert q.packed.shape == (*shape[:-1], shape[-1] // 2) and q.packed.dtype == torch.uint8
    assert q.scales.shape == (*shape[:-1], shape[-1] // r.block_size) and q.scales.dtype == torch.uint8
    q32 = r.quantize(x.float(), g)  # the dtype only matters through the values
    assert torch.equal(q.packed, q32.packed) and torch.equal(q.scales, q32.scales)
    assert r.dequantize(q, torch.bfloat16).shape == shape
    # blocks are independent: quantizing one row alone gives the same bytes
    row = r.quantize(x.reshape(-1, shape[-1])[:1], g)
    assert torch.equal(row.packed[0], q.packed.reshape(-1, shape[-1] // 2)[0])


def test_dequantize_rounds_once_to_bf16():
    x = torch.tensor([[6.0, 1.5] + [0.0] * 14])
    q = FP4_MX_BLOCK16.quantize(x)
    assert torch.equal(FP4_MX_BLOCK16.dequantize(q, torch.bfloat16), FP4_MX_BLOCK16.dequantize(q).to(torch.bfloat16))


def test_global_scale_conventions():
    assert nvfp4_global_scale(2688.0, "amax/(6*448)").item() == 1.0
    assert nvfp4_global_scale(448.0, "amax/448").item() == 1.0
    with pytest.raises(ValueError, match="unknown global-scale convention"):
        nvfp4_global_scale(1.0, "amax/6")
    with pytest.raises(ValueError, match="positive and finite"):
        nvfp4_global_scale(0.0, "amax/448")


# ---- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "x,match",
    [
        (torch.zeros(2, 16, dtype=torch.float64), "must have dtype in"),
        (torch.zeros(2, 16, dtype=torch.int32), "must have dtype in"),
        (torch.zeros(2, 24), "multiple of the block size"),
        (torch.zeros(()), "at least 1 dimension"),
        ([1.0] * 16, "must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("recipe", ["fp4_mx_block16", "nvfp4"])
def test_bad_input_raises(recipe, x, match):
    with pytest.raises((ValueError, TypeError), match=match):
        get_recipe(recipe).quantize(x, _g(recipe))


@pytest.mark.parametrize(
    "g,match",
    [
        (None, "needs a global_scale"),
        (0.0, "positive, finite, normal"),
        (-1.0, "positive, finite, normal"),
        (math.inf, "positive, finite, normal"),
        (math.nan, "positive, finite, normal"),
        (1e-40, "positive, finite, normal"),
        (torch.tensor(1.0, dtype=torch.float64), "must be float32"),
        (torch.ones(2), "one value"),
        ("1.0", "float or a float32 tensor"),
    ],
)
def test_bad_global_scale(g, match):
    with pytest.raises((ValueError, TypeError), match=match):
        NVFP4.quantize(torch.zeros(16), g)


def test_global_scale_on_a_recipe_without_one():
    with pytest.raises(ValueError, match="has no global scale"):
        MXFP4.quantize(torch.zeros(32), 1.0)


def test_dequantize_errors():
    q = FP4_MX_BLOCK16.quantize(torch.zeros(2, 32))
    with pytest.raises(ValueError, match="got data quantized with 'fp4_mx_block16'"):
        MXFP4.dequantize(q)
    with pytest.raises(ValueError, match="scales must have shape"):
        FP4_MX_BLOCK16.dequantize_parts(q.packed, q.scales[:, :1])
    with pytest.raises(ValueError, match="torch.uint8"):
        FP4_MX_BLOCK16.dequantize_parts(q.packed.float(), q.scales)
    with pytest.raises(ValueError, match="same device"):
        FP4_MX_BLOCK16.dequantize_parts(q.packed, q.scales.to("meta"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        FP4_MX_BLOCK16.dequantize(q, torch.int8)
    with pytest.raises(ValueError, match="unknown recipe"):
        ri.quantize(torch.zeros(16), "nvfp8")


def test_non_finite_blocks_do_not_leak_into_neighbours():
    x = torch.randn(4, 32)
    x[1, 3] = math.nan
    x[2, 17] = math.inf
    for recipe in ALL:
        r = get_recipe(recipe)
        clean = r.quantize(x[[0, 3]], _g(recipe))
        dirty = r.quantize(x, _g(recipe))
        assert torch.equal(dirty.packed[[0, 3]], clean.packed) and torch.equal(dirty.scales[[0, 3]], clean.scales)


# ---- every scale byte is reachable, and lands where the rule says -----------------------------

def test_block16_every_finite_scale_byte():
    # amax = 6 * 2**e gives exactly e (amax/6 is a power of two, log2 exact), for every e a finite
    # float32 amax allows: bytes 94 (the clamp) .. 253
    for byte in range(94, 254):
        e = byte - 127
        x = torch.zeros(1, 16)
        # 6 * 2**126 overflows float32; its largest value, 3.4e38 = 4 * 2**126 (1 - 2**-24), needs e = 126
        x[0, 0] = 6.0 * 2.0**e if e < 126 else torch.finfo(torch.float32).max
        q = FP4_MX_BLOCK16.quantize(x)
        assert q.scales.item() == byte, byte
        assert unpack_nibbles(q.packed)[0, 0] == (7 if e < 126 else 6)


def test_mxfp4_every_scale_byte():
    # amax = 2**(e + 2) gives floor(log2) - 2 = e; float32 reaches e = 125 (byte 252), so bytes 253
    # and 254 only arise from wider inputs
    for byte in range(0, 253):
        x = torch.zeros(1, 32)
        x[0, 0] = 2.0 ** (byte - 127 + 2)
        q = MXFP4.quantize(x)
        assert q.scales.item() == byte, byte
        assert unpack_nibbles(q.packed)[0, 0] == 6  # the value is 4 * 2**e


def test_nvfp4_every_finite_block_scale():
    # amax = 6 * v for every finite E4M3 value v (g = 1): the block scale is v exactly
    values = [E4M3.decode(b) for b in range(0x7F)]
    x = torch.zeros(len(values), 16)
    x[:, 0] = torch.tensor(values) * 6
    q = NVFP4.quantize(x, 1.0)
    assert q.scales[:, 0].tolist() == list(range(0x7F))
