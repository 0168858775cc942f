"""The formats module against hand-written tables and independent implementations."""

import math

import ml_dtypes
import numpy as np
import pytest
import torch

from nvfp4_kvcache.formats import E2M1, E4M3, E8M0, E2M1_MAX, E4M3_MAX, PowerOfTwoScale
from nvfp4_kvcache.rounding import Rounding

# Hand-written, with bit strings: bit 3 = sign, bits 2..1 = exponent, bit 0 = mantissa.
E2M1_HAND = {
    0b0000: 0.0, 0b0001: 0.5, 0b0010: 1.0, 0b0011: 1.5,
    0b0100: 2.0, 0b0101: 3.0, 0b0110: 4.0, 0b0111: 6.0,
    0b1000: -0.0, 0b1001: -0.5, 0b1010: -1.0, 0b1011: -1.5,
    0b1100: -2.0, 0b1101: -3.0, 0b1110: -4.0, 0b1111: -6.0,
}


def test_e2m1_table_matches_hand_table_including_negative_zero():
    for code, value in E2M1_HAND.items():
        got = E2M1.decode(code)
        assert got == value and math.copysign(1, got) == math.copysign(1, value), (code, got)


def test_derived_constants():
    assert (E2M1_MAX, E4M3_MAX) == (6.0, 448.0)
    assert E2M1.min_subnormal == 0.5
    assert E4M3.min_subnormal == 2.0**-9
    assert E2M1.sign_bit == 0x8 and E2M1.magnitude_mask == 0x7
    assert len(E4M3.magnitudes) == 127


def test_e4m3_all_256_codes_match_torch_float8():
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    torch_values = codes.view(torch.float8_e4m3fn).float()
    ours = E4M3.decode_tensor(codes)
    assert torch.equal(torch.isnan(ours), torch.isnan(torch_values))
    finite = ~torch.isnan(ours)
    assert torch.equal(ours[finite], torch_values[finite])
    assert torch.equal(torch.signbit(ours[finite]), torch.signbit(torch_values[finite]))
    assert torch.isnan(ours).sum() == 2  # 0x7F and 0xFF


def test_e8m0_all_256_codes():
    for b in range(256):
        v = E8M0.decode(b)
        if b == 0xFF:
            assert math.isnan(v)
        else:
            assert v == 2.0 ** (b - 127)
    t = E8M0.decode_tensor(torch.arange(256).to(torch.uint8))
    assert t[0].item() == 2.0**-127  # a float32 subnormal, exact
    assert torch.isnan(t[255])
    assert torch.equal(t.view(torch.int32)[:255], torch.arange(255).to(torch.uint8).view(torch.float8_e8m0fnu).float().view(torch.int32))


@pytest.mark.parametrize("fmt", [E2M1, E4M3])
def test_encode_decode_roundtrip_every_code(fmt):
    codes = [c for c in range(1 << fmt.bits) if not math.isnan(fmt.decode(c))]
    values = torch.tensor([fmt.decode(c) for c in codes], dtype=torch.float64)
    for rounding in Rounding:
        mags = fmt.encode_magnitude(values.abs(), rounding)
        signs = torch.signbit(values).to(torch.uint8) * fmt.sign_bit
        assert (mags | signs).tolist() == codes


def _midpoints_and_neighbours(fmt):
    mags = torch.tensor(fmt.magnitudes, dtype=torch.float64)
    mids = (mags[1:] + mags[:-1]) / 2
    pts = torch.cat([mags, mids, mids.nextafter(torch.tensor(math.inf, dtype=torch.float64)),
                     mids.nextafter(torch.tensor(0.0, dtype=torch.float64))])
    pts = pts.to(torch.float32)  # all exactly representable in float32 (nextafter in f64 rounds back: keep f32 ones)
    near = torch.cat([pts, pts.nextafter(torch.tensor(math.inf)), pts.nextafter(torch.tensor(0.0))])
    return torch.cat([near, -near])


def test_e2m1_nearest_even_matches_ml_dtypes_at_every_tie_and_neighbour():
    x = _midpoints_and_neighbours(E2M1)
    x = torch.cat([x, torch.tensor([6.5, 7.0, 100.0, 1e30, -1e30, 3e-45])])
    ours = E2M1.encode_magnitude(x.abs(), Rounding.NEAREST_EVEN) | (torch.signbit(x).to(torch.uint8) << 3)
    theirs = torch.from_numpy(x.numpy().astype(ml_dtypes.float4_e2m1fn).view(np.uint8).copy())
    assert torch.equal(ours, theirs)


def test_e2m1_nearest_even_and_packing_match_pytorchs_own_float4_helper():
    from torch.testing._internal.common_quantized import _bfloat16_to_float4_e2m1fn_x2

    x = _midpoints_and_neighbours(E2M1).to(torch.bfloat16)
    x = x[: x.numel() // 2 * 2]
    x = x[x.float().abs() <= 6]  # the helper clamps; compare the in-range part
    x = x[: x.numel() // 2 * 2]
    theirs = _bfloat16_to_float4_e2m1fn_x2(x).view(torch.uint8)
    from nvfp4_kvcache.packing import pack_nibbles
    ours = pack_nibbles(E2M1.encode_magnitude(x.float().abs(), Rounding.NEAREST_EVEN) | (torch.signbit(x).to(torch.uint8) << 3))
    assert torch.equal(ours, theirs)


def test_e4m3_nearest_even_saturating_matches_torch_cast_near_every_value():
    x = _midpoints_and_neighbours(E4M3)
    x = x[~torch.signbit(x)]
    x = torch.cat([x, torch.tensor([448.0, 449.0, 464.0, 480.0, 1e9, math.inf, 2.0**-10, 2.0**-11, 1e-30])])
    ours = E4M3.encode_magnitude(x, Rounding.NEAREST_EVEN)
    theirs = x.clamp(max=448.0).to(torch.float8_e4m3fn).view(torch.uint8)
    assert torch.equal(ours, theirs)


def test_bad_codes_raise():
    with pytest.raises(ValueError, match="code must be in"):
        E2M1.decode(16)
    with pytest.raises(ValueError, match="code must be in"):
        E8M0.decode(256)


def test_power_of_two_scale_without_nan_code():
    s = PowerOfTwoScale("test", nan_code=None)
    assert s.decode(255) == 2.0**128 and s.max_exponent == 128
