"""`nvfp4_4over6`: the exact fma and ftz helpers, the decode table, fixed points over every E4M3
scale byte, mutants (each a plausible misreading of FlashInfer's writer) that the named cases must
catch, and, on a GPU, FlashInfer's paged writer itself.

The GPU tests (`python -m pytest tests/test_nvfp4_4over6.py -m gpu -q -s`) run where CUDA and
FlashInfer (`flashinfer.page.nvfp4_quantize_append_paged_kv_cache_with_slot_mapping`, 0.7.4 or
later) are importable, and skip elsewhere. The writer is the released CUDA kernel (`page.cuh`,
built by FlashInfer's JIT with `-use_fast_math`), so its reciprocals are the hardware's
`rcp.approx.ftz.f32`. The tests compare twice: with that reciprocal passed to the oracle
(`encode_with`), every packed byte and every scale byte must be equal; with the oracle's own
correctly rounded reciprocal, the bytes that differ are counted and printed, not asserted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import struct
from fractions import Fraction

import pytest
import torch

import nvfp4_kvcache.recipes.nvfp4_4over6 as m
from nvfp4_kvcache.cases import CASES, case_codes, case_input
from nvfp4_kvcache.formats import E2M1, E4M3
from nvfp4_kvcache.packing import pack_nibbles, unpack_nibbles
from nvfp4_kvcache.recipes import NVFP4, NVFP4_4OVER6, nvfp4_global_scale
from nvfp4_kvcache.recipes.nvfp4_4over6 import encode_with
from nvfp4_kvcache.rounding import Rounding
from tests._kernel_cases import e4m3_sweep_blocks, random_blocks, special_blocks

GPU = pytest.mark.gpu
GPU_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
R = NVFP4_4OVER6
MINE = [c for c in CASES.values() if c.recipe == R.name]


def _round_f32(q: Fraction) -> float:
    """Exact rational -> float32, round to nearest even (normal range)."""
    if q == 0:
        return 0.0
    sign = -1 if q < 0 else 1
    q = abs(q)
    e = math.floor(math.log2(q))
    while Fraction(2) ** e > q:
        e -= 1
    while Fraction(2) ** (e + 1) <= q:
        e += 1
    scaled = q / Fraction(2) ** (e - 23)          # in [2**23, 2**24)
    n = math.floor(scaled)
    rest = scaled - n
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2):
        n += 1
    return sign * float(Fraction(n) * Fraction(2) ** (e - 23))


def test_fma_is_one_rounding():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4000, generator=gen)
    b = torch.randn(4000, generator=gen)
    c = -(a * b) * (1 + torch.randn(4000, generator=gen) * 2.0**-20)   # heavy cancellation
    c[:1000] = torch.randn(1000, generator=gen) * 2.0 ** torch.randint(-30, 30, (1000,), generator=gen).float()
    got = m.fma_f32(a, b, c)
    for i in range(a.numel()):
        want = _round_f32(Fraction(a[i].item()) * Fraction(b[i].item()) + Fraction(c[i].item()))
        if abs(want) >= 2.0**-126:
            assert got[i].item() == want, (a[i].item(), b[i].item(), c[i].item())
    # ties: a*b + c exactly halfway between two float32 values, with and without a tail
    one = torch.tensor([1.0 + 2.0**-12])
    assert m.fma_f32(one, one, torch.tensor([-1.0])).item() == 2.0**-11 + 2.0**-24


def test_ftz_keeps_the_sign():
    v = torch.tensor([2.0**-149, -(2.0**-127), 2.0**-126, -0.0, math.inf, 1.0])
    out = m.ftz(v)
    assert out.tolist() == [0.0, -0.0, 2.0**-126, -0.0, math.inf, 1.0]
    assert torch.signbit(out).tolist() == [False, True, False, True, False, False]


@pytest.mark.parametrize("g", [1.0, 0.5, 3.0 / 2688.0])
def test_decode_table_is_nvfp4s(g):
    codes = torch.arange(16, dtype=torch.uint8).repeat(256, 1)
    scales = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(256, 1)
    got = R.dequantize_parts(pack_nibbles(codes), scales, g)
    want = NVFP4.dequantize_parts(pack_nibbles(codes), scales, g)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    ok = ~torch.isnan(want)
    assert torch.equal(got[ok].view(torch.int32), want[ok].view(torch.int32))


def test_every_finite_scale_byte_is_a_fixed_point():
    gen = torch.Generator().manual_seed(2)
    bytes_ = torch.arange(1, 0x7F, dtype=torch.int32).to(torch.uint8)      # every finite, non-zero E4M3
    codes = torch.randint(0, 16, (bytes_.numel(), 16), generator=gen, dtype=torch.uint8)
    codes[:, 0] = 7                                                        # the block max is 6 * scale
    x = R.dequantize_parts(pack_nibbles(codes), bytes_.reshape(-1, 1), 1.0)
    q = R.quantize(x, 1.0)
    assert torch.equal(q.scales[:, 0], bytes_)                             # exact: error 0 keeps the first
    assert torch.equal(R.dequantize(q), x)


def test_never_worse_than_nvfp4_on_random_blocks():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2048, 16, generator=gen) * torch.exp2(torch.randint(-8, 8, (2048, 1), generator=gen).float())
    g = torch.tensor(0.01)
    ours = ((R.dequantize(R.quantize(x, g)) - x) ** 2).sum(-1)
    six = ((NVFP4.dequantize(NVFP4.quantize(x, g)) - x) ** 2).sum(-1)
    assert (ours <= six * (1 + 1e-5) + 1e-12).float().mean() > 0.99
    assert (ours < six).any() and (R.quantize(x, g).scales != NVFP4.quantize(x, g).scales).any()


# ---- mutants: a plausible misreading of the upstream kernel must fail a named case ----------------

def _e4m3_ties_away(s):
    nan = torch.isnan(s)
    b = E4M3.encode_magnitude(torch.where(nan, 0.0, s), Rounding.NEAREST_AWAY)
    return torch.where(nan, torch.full_like(b, 0x7F), b)


def _sum_of_abs_errors(x, sf, g, rcp):
    r = rcp(m.ftz(sf * g)).unsqueeze(-1)
    level = E2M1.decode_tensor(m._e2m1(x * r))
    return (level * sf.unsqueeze(-1) * g - x.abs()).abs().sum(-1)


@contextlib.contextmanager
def _patched(**names):
    saved = {k: getattr(m, k) for k in names}
    for k, v in names.items():
        setattr(m, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(m, k, v)


def _mutant(**names):
    def encode(blocks, g):
        with _patched(**names):
            return m.encode_with(blocks, g)
    return encode


MUTANTS = {
    "separate roundings instead of fused multiply-adds": _mutant(fma_f32=lambda a, b, c: a * b + c),
    "candidates rounded to E4M3 with ties away": _mutant(_e4m3=_e4m3_ties_away),
    "no flush of subnormals": _mutant(ftz=lambda v: v),
    "mean absolute error instead of squared": _mutant(_squared_error=_sum_of_abs_errors),
    "nvfp4's rule (one candidate, NaN blocks)": NVFP4.encode,
}


def _tie_to_four(blocks, g):
    """The comparison reversed at ties: the max-to-4 candidate unless it is strictly worse."""
    x = m.ftz(blocks)
    amax = torch.where(torch.isnan(x), 0.0, x.abs()).amax(-1)
    s = amax * m.exact_reciprocal(m.ftz(g * 6.0).reshape(1))
    b6, b4 = m._e4m3(s), m._e4m3(m.ftz(s * 1.5))
    sf6, sf4 = E4M3.decode_tensor(b6), E4M3.decode_tensor(b4)
    use4 = m._squared_error(x, sf4, g, m.exact_reciprocal) <= m._squared_error(x, sf6, g, m.exact_reciprocal)
    sb, sf = torch.where(use4, b4, b6), torch.where(use4, sf4, sf6)
    r = torch.where((amax > 0) & (sf > 0), 1.0 / m.ftz(sf * g), torch.zeros_like(sf))
    y = x * r.unsqueeze(-1)
    sign = torch.where(torch.signbit(y), 8, 0).to(torch.uint8)
    return torch.where(torch.isnan(y), torch.zeros_like(sign), sign | m._e2m1(y)), sb


MUTANTS["a tie picks the max-to-4 candidate"] = _tie_to_four


def _failing_cases(encode) -> list[str]:
    mutant = dataclasses.replace(R, encode=encode)
    bad = []
    for case in MINE:
        q = mutant.quantize(case_input(case), case.global_scale)
        if q.scales.tolist() != [[case.scale_byte]] or unpack_nibbles(q.packed)[0].tolist() != case_codes(case):
            bad.append(case.name)
    return bad


def test_the_real_rule_passes_every_named_case():
    assert _failing_cases(R.encode) == []


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a_wrong_rule_fails_a_named_case(name):
    assert _failing_cases(MUTANTS[name]), f"mutant {name!r} passes every named case"


def test_the_reciprocal_is_a_parameter():
    """A reciprocal one ulp off (as an approximate one can be) moves a boundary case: the GPU test
    passes the hardware's reciprocal through this parameter."""
    x = case_input(CASES["nvfp4_4over6/candidate_ties_to_even"])
    g = torch.tensor(1.0 / 6.0)

    def one_ulp_up(v):
        return torch.nextafter(1.0 / v, torch.tensor(math.inf))

    assert m.encode_with(x, g)[1].item() == 0x36
    assert m.encode_with(x, g, one_ulp_up)[1].item() != 0x36 or not torch.equal(
        m.encode_with(x, g, one_ulp_up)[0], m.encode_with(x, g)[0])


def test_candidate_ratio_is_six_over_four():
    assert m.CANDIDATE_RATIO == 1.5 and struct.unpack("<f", struct.pack("<f", 1.5))[0] == 1.5


# ---- GPU: FlashInfer's paged writer -----------------------------------------------------------

def _flashinfer():
    page = pytest.importorskip("flashinfer.page", reason="needs FlashInfer (the paged 4over6 writer)")
    if not hasattr(page, "nvfp4_quantize_append_paged_kv_cache_with_slot_mapping"):
        pytest.skip("this FlashInfer has no nvfp4_quantize_append_paged_kv_cache_with_slot_mapping")
    from flashinfer.quantization.nvfp4_quantization_utils import NVFP44Over6Config

    return page, NVFP44Over6Config(err_mode="MSE")


def hardware_reciprocal(v: torch.Tensor) -> torch.Tensor:
    """`rcp.approx.ftz.f32` of every element, computed on the GPU (what `-use_fast_math` emits for `1/x`)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _rcp(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=1.0)
        y = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                      is_pure=True, pack=1)
        tl.store(y_ptr + offs, y, mask=mask)

    x = v.detach().to("cuda", torch.float32).contiguous()
    y = torch.empty_like(x)
    if x.numel():
        _rcp[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    return y.to(v.device).reshape(v.shape)


def _write(page, cfg, x: torch.Tensor, g: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashInfer's writer on `x [n, H, D]` (bf16/fp16, CUDA), K = V = x, one slot per row, page 1."""
    n, h, d = x.shape
    kc = torch.zeros(n, 1, h, d // 2, dtype=torch.uint8, device="cuda")
    vc = torch.zeros_like(kc)
    ksf = torch.zeros(n, 1, h, d // 16, dtype=torch.float8_e4m3fn, device="cuda")
    vsf = torch.zeros_like(ksf)
    gt = torch.tensor(g, dtype=torch.float32, device="cuda")
    page.nvfp4_quantize_append_paged_kv_cache_with_slot_mapping(
        x, x, torch.arange(n, dtype=torch.int64, device="cuda"), (kc, vc), (ksf, vsf), gt, gt,
        kv_layout="NHD", nvfp4_4over6=cfg)
    torch.cuda.synchronize()
    assert torch.equal(kc, vc) and torch.equal(ksf.view(torch.uint8), vsf.view(torch.uint8))
    return kc.reshape(n, h, d // 2).cpu(), ksf.view(torch.uint8).reshape(n, h, d // 16).cpu()


def _rows(x: torch.Tensor, width: int = 64) -> torch.Tensor:
    """`[..., 16k]` blocks as `[n, 1, width]` rows (padded with zero blocks)."""
    blocks = x.reshape(-1, 16)
    per_row = width // 16
    pad = (-blocks.shape[0]) % per_row
    blocks = torch.cat([blocks, torch.zeros(pad, 16, dtype=blocks.dtype)])
    return blocks.reshape(-1, 1, width)


def _random(dtype, amax448: bool):
    x = random_blocks((512, 8, 128), dtype, seed=5)
    return x, (nvfp4_global_scale(x.float().abs().amax(), "amax/448").item() if amax448 else 1.0)


SETS = {
    **{f"random-{dt}-{conv}": (lambda dt=dt, conv=conv: _random(getattr(torch, dt), conv == "amax448"))
       for dt in ("bfloat16", "float16") for conv in ("amax448", "g1")},
    **{f"specials-{dt}": (lambda dt=dt: (_rows(special_blocks().to(getattr(torch, dt))), 1.0))
       for dt in ("bfloat16", "float16")},
    **{f"e4m3-sweep-{dt}-g{g}": (lambda dt=dt, g=g: (_rows(e4m3_sweep_blocks().to(getattr(torch, dt))), g))
       for dt in ("bfloat16", "float16") for g in (1.0, 0.5)},
}
"""Input set name -> builder of (`x [n, H, D]` 16-bit, global scale)."""


@GPU
@GPU_ONLY
@pytest.mark.parametrize("name", sorted(SETS))
def test_flashinfer_writer_equals_oracle_with_the_hardware_reciprocal(name):
    page, cfg = _flashinfer()
    x, g = SETS[name]()
    _compare(page, cfg, name, x, g)


@GPU
@GPU_ONLY
def test_named_cases_through_the_flashinfer_writer():
    page, cfg = _flashinfer()
    for c in [c for c in CASES.values() if c.recipe == NVFP4_4OVER6.name]:
        x = case_input(c).to(torch.bfloat16)
        if torch.equal(x.float(), case_input(c)):   # the writer takes 16-bit input; skip blocks bf16 changes
            _compare(page, cfg, c.name, _rows(x), c.global_scale)
def _compare(page, cfg, name, x, g):
    packed, scales = _write(page, cfg, x.cuda(), g)
    blocks = x.float().reshape(-1, 16)
    gt = torch.tensor(g, dtype=torch.float32)
    exact_codes, exact_scales = encode_with(blocks, gt)
    hw_codes, hw_scales = encode_with(blocks, gt, hardware_reciprocal)
    got_codes = unpack_nibbles(packed).reshape(-1, 16)
    got_scales = scales.reshape(-1)
    n_exact = int((got_codes != exact_codes).sum()) + int((got_scales != exact_scales).sum())
    print(f"{name}: {blocks.shape[0]} blocks; vs the oracle's exact reciprocal: {n_exact} bytes differ; "
          f"vs the hardware reciprocal: {int((got_codes != hw_codes).sum())} codes, "
          f"{int((got_scales != hw_scales).sum())} scale bytes")
    assert torch.equal(got_scales, hw_scales), name
    assert torch.equal(got_codes, hw_codes), name
