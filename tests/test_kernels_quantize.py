"""Triton quantize / dequantize against the oracle: packed bytes and scale bytes equal, zero tolerance.

On CPU the kernels run in Triton's interpreter on small shapes; `@pytest.mark.gpu` cases run the
same checks on CUDA at full size (the oracle always runs on the CPU: it is the definition).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # before triton is imported anywhere
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import nvfp4_kvcache_triton  # noqa: E402
import nvfp4_kvcache_triton.reference  # noqa: E402
import nvfp4_kvcache as ri  # noqa: E402
from nvfp4_kvcache_triton._triton import fp4  # noqa: E402
from nvfp4_kvcache.cases import CASES, case_codes, case_input  # noqa: E402
from nvfp4_kvcache.recipes import OUTPUT_DTYPES, RECIPES, nvfp4_global_scale  # noqa: E402
from nvfp4_kvcache.recipes.fp4_mx_block16 import ceil_log2_f32  # noqa: E402
from nvfp4_kvcache.rounding import Rounding  # noqa: E402
from tests._kernel_cases import (  # noqa: E402
    block16_boundary_amax,
    e4m3_sweep_blocks,
    equal_values,
    random_blocks,
    special_blocks,
)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# The interpreter evaluates masked-off lanes too (inf * 0 in a NaN block, say): numpy warns, harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:divide by zero:RuntimeWarning")
RECIPE_NAMES = sorted(RECIPES)
IN_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
IMPLS = {"triton": nvfp4_kvcache_triton, "torch": nvfp4_kvcache_triton.reference}

DEVICES = [
    pytest.param("cpu", id="interp", marks=pytest.mark.skipif(not INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1")),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
]


def _has_g(recipe: str) -> bool:
    return RECIPES[recipe].global_scale is not None


def _g(recipe: str, x: torch.Tensor, convention: str = "amax/(6*448)"):
    if not _has_g(recipe):
        return None
    finite = x.float().abs()
    finite = finite[torch.isfinite(finite)]
    amax = finite.max().item() if finite.numel() else 1.0
    return nvfp4_global_scale(max(amax, 1e-30), convention).to(x.device)


def _check_quantize(impl, x: torch.Tensor, recipe: str, g=None):
    """impl's quantize of x (on its device) equals the CPU oracle, byte for byte."""
    q = impl.quantize(x, recipe, global_scale=g)
    r = ri.quantize(x.cpu(), recipe, global_scale=None if g is None else g.cpu())
    assert q.packed.dtype == torch.uint8 and q.scales.dtype == torch.uint8
    assert q.packed.shape == r.packed.shape and q.scales.shape == r.scales.shape
    bad_p = (q.packed.cpu() != r.packed).sum().item()
    bad_s = (q.scales.cpu() != r.scales).sum().item()
    assert bad_p == 0 and bad_s == 0, f"{recipe} {x.dtype}: {bad_p} packed and {bad_s} scale bytes differ"
    return q, r


# -- random data, many shapes ---------------------------------------------------------------------
SHAPES_SMALL = [(32,), (3, 64), (5, 3, 96), (7, 2, 128), (2, 576), (33, 1, 32), (1, 8, 256), (0, 4, 64)]
SHAPES_FULL = [(4096, 8, 128), (1000, 3, 96), (257, 576), (16384, 1, 64), (3, 5, 8, 256)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", IN_DTYPES, ids=str)
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_quantize_random_bit_exact(recipe, dtype, device):
    shapes = SHAPES_SMALL if device == "cpu" else SHAPES_FULL
    for i, shape in enumerate(shapes):
        x = random_blocks(shape, dtype, seed=i, device=device)
        for convention in ("amax/(6*448)", "amax/448"):
            _check_quantize(nvfp4_kvcache_triton, x, recipe, _g(recipe, x, convention))
            if not _has_g(recipe) or device == "cuda":
                break


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_quantize_non_contiguous_and_strided_input(recipe, device):
    x = random_blocks((6, 4, 128), torch.bfloat16, seed=7, device=device)
    for view in (x[:, 1:3], x.transpose(0, 1), x[::2]):
        _check_quantize(nvfp4_kvcache_triton, view, recipe, _g(recipe, view))


@pytest.mark.parametrize("impl", IMPLS.values(), ids=IMPLS.keys())
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_twins_agree_on_random_data(recipe, impl):
    if impl is nvfp4_kvcache_triton and not INTERPRET and not torch.cuda.is_available():
        pytest.skip("no Triton backend")
    device = "cuda" if not INTERPRET else "cpu"
    x = random_blocks((5, 2, 64), torch.float16, seed=3, device=device)
    g = _g(recipe, x)
    q, r = _check_quantize(impl, x, recipe, g)
    assert equal_values(impl.dequantize(q, torch.bfloat16).cpu(), ri.dequantize(r, torch.bfloat16))


# -- specials: ties, all codes, zeros, subnormals, Inf, NaN, past the max -------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", IN_DTYPES, ids=str)
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_quantize_specials_bit_exact(recipe, dtype, device):
    x = special_blocks().to(dtype).to(device)
    gs = [None] if not _has_g(recipe) else [torch.tensor(v, device=device) for v in (1.0, 2.0**-20, 3.0, 2.0**40)]
    for g in gs:
        _check_quantize(nvfp4_kvcache_triton, x, recipe, g)


def every_16bit_value_blocks(dtype: torch.dtype, shifts=(0, 2, 5, 9, 13)) -> torch.Tensor:
    """Every finite value of a 16-bit dtype, 30 consecutive bit patterns per row of 32, each row
    led (elements 0 and 16) by its amax times `2**j`: the values meet every code, tie and
    underflow to code 0 at block scales up to `2**13` times their own magnitude."""
    v = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype).float()
    v = v[torch.isfinite(v)]
    v = v[: v.numel() // 30 * 30].reshape(-1, 30)
    amax = v.abs().amax(1, keepdim=True)
    rows = []
    for j in shifts:
        lead = (amax * 2.0**j).to(dtype).float()
        lead = torch.where(torch.isfinite(lead), lead, amax)
        rows.append(torch.cat([lead, v[:, :15], lead, v[:, 15:]], 1))
    return torch.cat(rows).to(dtype)


POW2_RECIPES = [n for n, r in RECIPES.items() if r.global_scale is None]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("recipe", POW2_RECIPES)
def test_every_16bit_value_at_many_block_scales(recipe, dtype, device):
    """The power-of-two recipes round 16-bit inputs by `e2m1_magnitude_short` (exact because
    `x * 2**-e` is short): every bf16 / fp16 value, at block scales 1 .. 2**13 above it."""
    if device == "cpu" and (dtype is torch.float16 or recipe not in ("mxfp4", "fp4_mx_block16")):
        pytest.skip("CI: the two tie rules on bf16; the rest on a GPU (about a minute each interpreted)")
    shifts = (0, 2, 5, 9, 13) if device == "cpu" else tuple(range(14))
    _check_quantize(nvfp4_kvcache_triton, every_16bit_value_blocks(dtype, shifts).to(device), recipe)


E4M3_RECIPES = [n for n, r in RECIPES.items() if r.scale.torch_dtype is torch.float8_e4m3fn]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", E4M3_RECIPES)
def test_every_e4m3_scale_and_tie(recipe, device):
    x = e4m3_sweep_blocks().to(device)
    for g in (1.0, 0.5, 1.0 / 3.0, 7.0):
        _check_quantize(nvfp4_kvcache_triton, x, recipe, torch.tensor(g, dtype=torch.float32, device=device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_named_cases(recipe, device):
    """Every named case of the recipe, one block per row, against its hand-derived bytes. The
    kernels compute in the recipe's default order; a case for another order of operations (a
    peer's, `case.order`) is the oracle's alone."""
    cases = [c for c in CASES.values() if c.recipe == recipe and c.order is None]
    assert cases
    for case in cases:
        g = None if case.global_scale is None else torch.tensor(case.global_scale, dtype=torch.float32, device=device)
        q = nvfp4_kvcache_triton.quantize(case_input(case).to(device), recipe, global_scale=g)
        assert q.scales.cpu().tolist() == [[case.scale_byte]], case.name
        assert ri.packing.unpack_nibbles(q.packed.cpu())[0].tolist() == case_codes(case), case.name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_all_16_codes_round_trip(recipe, device):
    """Every (code, scale) pair decodes to a value that quantizes back to the same code."""
    r = RECIPES[recipe]
    gen = torch.Generator().manual_seed(5)
    codes = torch.randint(0, 16, (64, r.block_size), generator=gen, dtype=torch.uint8)
    codes[:, 0] = 7  # the block max is 6 * scale, so the scale is recovered exactly
    codes[:16, 1] = torch.arange(16, dtype=torch.uint8)
    if r.scale.torch_dtype is torch.float8_e4m3fn:
        scale = torch.tensor([0x38] * 64, dtype=torch.uint8)  # E4M3 1.0
    else:  # power-of-two bytes
        scale = torch.randint(100, 240, (64,), generator=gen).to(torch.uint8)
    if r.scale_rule.rounding is Rounding.FLOOR:
        codes[:, 0] = 6  # floor(log2 amax) - 2: a max of 4 * 2**s keeps the shared exponent
    from nvfp4_kvcache.packing import pack_nibbles

    packed = pack_nibbles(codes)
    g = torch.tensor(1.0) if _has_g(recipe) else None
    x = r.dequantize_parts(packed, scale[:, None], g, torch.float32).to(device)
    q, _ = _check_quantize(nvfp4_kvcache_triton, x, recipe, None if g is None else g.to(device))
    nonzero = codes & 7 != 0  # -0 and +0 both quantize to the sign of the input's zero
    assert torch.equal(ri.packing.unpack_nibbles(q.packed.cpu())[nonzero], codes[nonzero])


# -- fp4_mx_block16: the exponent at values just above powers of two -----------------------------
@triton.jit
def _exp_probe(r_ptr, e_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    r = tl.load(r_ptr + offs, mask=m, other=1.0)
    tl.store(e_ptr + offs, fp4._block16_exponent(r), mask=m)


@pytest.mark.parametrize("device", DEVICES)
def test_block16_exponent_equals_oracle_ceil_log2_above_powers_of_two(device):
    """The kernel's exact bit formula equals ceil(fl32(log2 y)) for every binade, at y = 2**k (1 + M 2**-23).

    The oracle's float32 rounding of log2 keeps ceil = k for small M when |k| is large: e.g.
    `16 (1 + 2**-23)` -> 4 (not 5), while `2**-4 (1 + 2**-23)` -> -3: below a negative power of
    two the float32 grid is twice as fine.
    """
    ratios = block16_boundary_amax()
    expected = ceil_log2_f32(ratios).to(torch.int32)
    got = torch.empty_like(expected).to(device)
    n = ratios.numel()
    _exp_probe[(triton.cdiv(n, 4096),)](ratios.to(device), got, n, BLOCK=4096)
    bad = (got.cpu() != expected).nonzero().flatten()
    assert bad.numel() == 0, [(ratios[i].item(), got[i].item(), expected[i].item()) for i in bad[:5]]
    # the half-ulp of float32 at k = 64 is 2**(6-24): M <= 22 stays at 64, M = 23 moves to 65
    near = torch.tensor([16 * (1 + 2.0**-23), 2.0**-4 * (1 + 2.0**-23), 2.0**64 * (1 + 22 * 2.0**-23),
                         2.0**64 * (1 + 23 * 2.0**-23), 64 * (1 + 2.0**-23)], dtype=torch.float32)
    assert ceil_log2_f32(near).tolist() == [4.0, -3.0, 64.0, 65.0, 6.0]


@pytest.mark.parametrize("device", DEVICES)
def test_block16_scale_boundary_end_to_end(device):
    """Blocks whose amax / 6 lands on and just above every power of two: scale bytes equal the oracle."""
    ratios = block16_boundary_amax(max_mantissa=24)
    ratios = ratios[(ratios > 1e-9) & (ratios < 3e37)]
    x = torch.zeros(ratios.numel(), 16)
    x[:, 0] = ratios * 6.0
    x[:, 1] = -ratios * 2.5
    x[:, 2] = ratios * 6.0 * (1 - 2.0**-20)
    _check_quantize(nvfp4_kvcache_triton, x.to(device), "fp4_mx_block16")


# -- dequantize: every scale byte, every code, every output dtype ---------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_dequantize_all_scale_bytes_all_codes(recipe, device):
    r = RECIPES[recipe]
    gen = torch.Generator().manual_seed(11)
    scales = torch.arange(256, dtype=torch.int32).to(torch.uint8).repeat(2)[:, None]  # [512, 1]
    packed = torch.randint(0, 256, (512, r.block_size // 2), generator=gen).to(torch.uint8)
    packed[:256, :8] = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(32, 8).repeat(8, 1)[:256]
    gs = [None] if not _has_g(recipe) else [1.0, 2.0**-30, 1.7e30]
    for g in gs:
        for dtype in OUTPUT_DTYPES:
            want = r.dequantize_parts(packed, scales, g, dtype)
            got = nvfp4_kvcache_triton.dequantize_parts(packed.to(device), scales.to(device), recipe,
                                           None if g is None else torch.tensor(g, device=device), dtype)
            assert equal_values(got, want), (recipe, g, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_dequantize_random_round_trip(recipe, device):
    shapes = SHAPES_SMALL[:4] if device == "cpu" else SHAPES_FULL[:2]
    for i, shape in enumerate(shapes):
        x = random_blocks(shape, torch.bfloat16, seed=20 + i, device=device)
        g = _g(recipe, x)
        q = nvfp4_kvcache_triton.quantize(x, recipe, global_scale=g)
        r = ri.quantize(x.cpu(), recipe, global_scale=None if g is None else g.cpu())
        for dtype in OUTPUT_DTYPES:
            assert equal_values(nvfp4_kvcache_triton.dequantize(q, dtype), ri.dequantize(r, dtype)), (shape, dtype)


# -- same errors as the oracle --------------------------------------------------------------------
def _bad_quantize_calls():
    x = torch.randn(4, 32)
    yield (x.to(torch.int32), "nvfp4", 1.0)
    yield (torch.randn(4, 24), "fp4_mx_block16", None)
    yield (torch.randn(4, 48), "mxfp4", None)
    yield (x, "nvfp4", None)
    yield (x, "nvfp4", torch.tensor([1.0, 2.0]))
    yield (x, "nvfp4", torch.tensor(1.0, dtype=torch.float64))
    yield (x, "nvfp4", -1.0)
    yield (x, "fp4_mx_block16", 1.0)
    yield (x, "fp8", None)
    yield ("not a tensor", "mxfp4", None)


@pytest.mark.parametrize("case", list(_bad_quantize_calls()), ids=lambda c: f"{c[1]}")
def test_quantize_errors_match_oracle(case):
    x, recipe, g = case
    with pytest.raises((TypeError, ValueError)) as want:
        ri.quantize(x, recipe, global_scale=g)
    for impl in IMPLS.values():
        with pytest.raises(want.type) as got:
            impl.quantize(x, recipe, global_scale=g)
        assert str(got.value) == str(want.value)


def test_dequantize_errors_match_oracle():
    p = torch.zeros(4, 8, dtype=torch.uint8)
    cases = [
        (p.float(), torch.zeros(4, 1, dtype=torch.uint8), "fp4_mx_block16", None, torch.float32),
        (p, torch.zeros(4, 2, dtype=torch.uint8), "fp4_mx_block16", None, torch.float32),
        (p, torch.zeros(4, 1, dtype=torch.uint8), "fp4_mx_block16", None, torch.int8),
        (p, torch.zeros(4, 1, dtype=torch.uint8), "nvfp4", None, torch.float32),
        (p, torch.zeros(4, 1, dtype=torch.uint8), "mxfp4", None, torch.float32),
    ]
    for packed, scales, recipe, g, dtype in cases:
        with pytest.raises((TypeError, ValueError)) as want:
            RECIPES[recipe].dequantize_parts(packed, scales, g, dtype)
        for impl in IMPLS.values():
            with pytest.raises(want.type) as got:
                impl.dequantize_parts(packed, scales, recipe, g, dtype)
            assert str(got.value) == str(want.value)


@pytest.mark.skipif(INTERPRET, reason="checks the error for CPU tensors without the interpreter")
def test_cpu_tensor_without_interpreter_is_refused():
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        nvfp4_kvcache_triton.quantize(torch.randn(2, 32), "mxfp4")
