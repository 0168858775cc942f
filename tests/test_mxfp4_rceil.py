"""`mxfp4_rceil`: the exact round-up exponent, every scale byte, the decode table, the other
definitions in use (and where they differ), and mutants that the named cases must catch."""

from __future__ import annotations

import dataclasses
import math
import struct
from fractions import Fraction

import pytest
import torch

from nvfp4_kvcache.cases import CASES, case_codes, case_input
from nvfp4_kvcache.formats import E2M1, E8M0
from nvfp4_kvcache.packing import pack_nibbles, unpack_nibbles
from nvfp4_kvcache.recipes import MXFP4, MXFP4_RCEIL
from nvfp4_kvcache.recipes.mxfp4 import encode_elements
from nvfp4_kvcache.recipes.mxfp4_rceil import rceil_exponent
from nvfp4_kvcache.rounding import Rounding

R = MXFP4_RCEIL
MINE = [c for c in CASES.values() if c.recipe == R.name]


def _f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _exact_exponent(a: float) -> int:
    """The smallest integer e with a <= 6 * 2**e, by exact rational arithmetic."""
    q = Fraction(a) / 6
    e = math.floor(math.log2(q)) - 2
    while Fraction(2) ** e < q:
        e += 1
    while Fraction(2) ** (e - 1) >= q:
        e -= 1
    return e


def _boundary_amax() -> torch.Tensor:
    """Every float32 binade (subnormals included), at mantissas around 6's (0x400000) and the ends."""
    mans = [0, 1, 2, 3, 0x3FFFFE, 0x3FFFFF, 0x400000, 0x400001, 0x400002, 0x555555, 0x7FFFFE, 0x7FFFFF]
    bits = [(e << 23) | m for e in range(0, 255) for m in mans if (e << 23) | m]
    return torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)


def test_exponent_is_exact_on_every_binade():
    a = _boundary_amax()
    got = rceil_exponent(a).tolist()
    want = [_exact_exponent(v) for v in a.tolist()]
    assert got == want


def test_every_scale_byte_is_reached_at_its_bound():
    # amax = 6 * 2**e is the largest block max of byte e + 127; one ulp more needs byte e + 128
    for byte in range(0, 253):
        e = byte - 127
        x = torch.zeros(2, 32)
        x[0, 0] = 6.0 * 2.0**e
        x[1, 0] = torch.tensor(6.0 * 2.0**e).nextafter(torch.tensor(math.inf))
        q = R.quantize(x)
        assert q.scales[:, 0].tolist() == [byte, byte + 1], byte
        assert unpack_nibbles(q.packed)[:, 0].tolist() == [7, 5], byte   # 6, and 3 + a little -> 3
    top = torch.zeros(1, 32)
    top[0, 0] = torch.finfo(torch.float32).max
    assert R.quantize(top).scales.item() == 253


def test_block_max_never_clips():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 32, generator=gen) * torch.exp2(torch.randint(-100, 100, (4096, 1), generator=gen).float())
    q = R.quantize(x)
    unit = torch.exp2(q.scales.double() - 127)
    assert (x.abs().amax(-1, keepdim=True).double() / unit <= 6).all()
    assert (x.abs().amax(-1, keepdim=True).double() / unit > 3).all()


def test_decode_table_every_code_every_scale_byte():
    codes = torch.arange(16, dtype=torch.uint8).repeat(256, 2)
    scales = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(256, 1)
    out = R.dequantize_parts(pack_nibbles(codes), scales, None, torch.float64)
    for b in range(255):
        want = torch.tensor([E2M1.decode(c) * 2.0 ** (b - 127) for c in range(16)] * 2, dtype=torch.float32)
        assert torch.equal(out[b].float(), want) and torch.equal(torch.signbit(out[b]), torch.signbit(want.double())), b
    assert torch.isnan(out[255]).all()


def test_representable_blocks_are_fixed_points():
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (512, 32), generator=gen, dtype=torch.uint8)
    codes[:, 0] = 7                               # a 6 in the block: the scale is recovered exactly
    scales = torch.randint(0, 253, (512, 1), generator=gen).to(torch.uint8)   # 6 * 2**126 overflows float32
    x = R.dequantize_parts(pack_nibbles(codes), scales, None, torch.float32)
    q = R.quantize(x)
    assert torch.equal(q.scales, scales)
    nonzero = codes & 7 != 0
    assert torch.equal(unpack_nibbles(q.packed)[nonzero], codes[nonzero])


# ---- the other definitions in use ---------------------------------------------------------------

def _pow2_ceil_of_f32_quotient(a: torch.Tensor) -> torch.Tensor:
    """NVIDIA's hardware rule: fl32(amax / 6), then rounded up to a power of two exactly."""
    q = a / 6.0                                          # float32 quotient, round to nearest even
    e = torch.tensor([_exact_exponent(v * 6) if v > 0 else -127 for v in q.tolist()])  # ceil(log2 q)
    return e.clamp(-127, 127)


def _ceil_f32_log2(a: torch.Tensor) -> torch.Tensor:
    """torchao's eager RCEIL fallback, ModelOpt, PyTorch's to_mxfp: ceil(fl32(log2(fl32(amax / 6))))."""
    return torch.ceil(torch.log2(a / 6.0)).clamp(-127, 127).to(torch.int64)


def test_rounded_quotient_rule_differs_only_below_the_normal_range():
    a = _boundary_amax()
    ours = rceil_exponent(a).clamp(-127, 127)
    hw = _pow2_ceil_of_f32_quotient(a)
    differ = a[ours != hw]
    # only where amax / 6 is a float32 subnormal and rounds down onto 2**-127 (named case
    # mxfp4_rceil/quotient_rounds_onto_power_of_two)
    assert differ.numel() >= 1 and (differ < 6 * 2.0**-126).all()
    assert 6 * 2.0**-127 + 2.0**-148 in differ.tolist()


def test_float32_log2_rule_differs_just_above_powers_of_two():
    a = _boundary_amax()
    a = a[(a > 6 * 2.0**-126) & (a < 6 * 2.0**125)]
    ours = rceil_exponent(a)
    lib = _ceil_f32_log2(a)
    assert (lib <= ours).all()                         # it never rounds up past the exact exponent
    lower = a[lib < ours]
    assert lower.numel() > 0
    # the mantissa of amax / 6 is 1 + 2**-23 (or a few ulps): log2 rounds to the integer below
    assert (lower / 6.0 / torch.exp2(ours[lib < ours].float() - 1) < 1 + 2.0**-20).all()
    assert _ceil_f32_log2(torch.tensor([96.0]).nextafter(torch.tensor(200.0))).item() == 4


# ---- mutants: a wrong rule must fail the named cases ----------------------------------------------

def _encode_with_exponent(exponent_fn, element_rounding=Rounding.NEAREST_EVEN):
    def encode(blocks, g=None):
        amax = blocks.abs().amax(-1)
        nan = torch.isnan(amax)
        finite = torch.isfinite(amax)
        pos = finite & (amax > 0)
        e = exponent_fn(torch.where(pos, amax, torch.ones_like(amax))).clamp(-127, 127)
        e = torch.where(pos, e, torch.full_like(e, -127))
        e = torch.where(finite, e, torch.full_like(e, 127))
        sb = torch.where(nan, torch.full_like(e, 255), e + 127).to(torch.uint8)
        if element_rounding is Rounding.NEAREST_EVEN:
            return encode_elements(blocks, e, ~nan), sb
        y = torch.where((~nan).unsqueeze(-1), blocks.double() * torch.exp2(-e.double()).unsqueeze(-1), 0.0)
        mag = E2M1.encode_magnitude(y.abs(), element_rounding)
        sign = torch.where(torch.signbit(blocks), 8, 0).to(torch.uint8)
        return torch.where((~nan).unsqueeze(-1), sign | mag, torch.zeros_like(mag)), sb
    return encode


MUTANTS = {
    "floor exponent (OCP mxfp4)": _encode_with_exponent(lambda a: torch.floor(torch.log2(a.double())).long() - 2),
    "ceil of float32 log2": _encode_with_exponent(_ceil_f32_log2),
    "ceil of the rounded float32 quotient": _encode_with_exponent(_pow2_ceil_of_f32_quotient),
    "exponent one too high when amax / 6 is a power of two": _encode_with_exponent(
        lambda a: torch.floor(torch.log2(a.double() / 6)).long() + 1),
    "elements ties away": _encode_with_exponent(rceil_exponent, Rounding.NEAREST_AWAY),
    "mxfp4's non-finite rule (inf -> 0xFF)": MXFP4.encode,
}


def _failing_cases(encode) -> list[str]:
    mutant = dataclasses.replace(R, encode=encode)
    bad = []
    for case in MINE:
        q = mutant.quantize(case_input(case))
        if q.scales.tolist() != [[case.scale_byte]] or unpack_nibbles(q.packed)[0].tolist() != case_codes(case):
            bad.append(case.name)
    return bad


def test_the_real_rule_passes_every_named_case():
    assert _failing_cases(R.encode) == []


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a_wrong_rule_fails_a_named_case(name):
    assert _failing_cases(MUTANTS[name]), f"mutant {name!r} passes every named case"


def test_named_cases_cover_every_class():
    kinds = {c.name.split("/")[1] for c in MINE}
    assert {"zero_block", "nan_block", "inf_block", "ties_even", "subnormal_block", "float32_max"} <= kinds
    assert E8M0.max_exponent + E8M0.bias == CASES["mxfp4_rceil/inf_block"].scale_byte
