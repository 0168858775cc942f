"""FP8 E4M3 per-tensor and INT4 per-token-group baselines, against hand-worked examples and bounds."""

import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from nvfp4_kvcache.accuracy.baselines import fp8_e4m3_fake_quantize, int4_bits_per_value, int4_group_fake_quantize


def test_fp8_hand_examples():
    # [256, 512) has step 32: 400 is a tie between 384 (mantissa 100) and 416 (101): even wins
    assert fp8_e4m3_fake_quantize(torch.tensor([400.0, 401.0])).tolist() == [384.0, 416.0]
    assert fp8_e4m3_fake_quantize(torch.tensor([1e4, -1e4])).tolist() == [448.0, -448.0]      # saturates
    assert fp8_e4m3_fake_quantize(torch.tensor([2.0 ** -10, 2.0 ** -9])).tolist() == [0.0, 2.0 ** -9]  # tie to 0
    # scale 2: 600 / 2 = 300 lies between 288 and 320 (step 32) and is nearer 288: 288 * 2
    assert fp8_e4m3_fake_quantize(torch.tensor([600.0]), scale=2.0).tolist() == [576.0]


def test_fp8_rejects_bad_scale():
    with pytest.raises(ValueError):
        fp8_e4m3_fake_quantize(torch.ones(2), scale=0.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1000, 1000, allow_nan=False, width=32), min_size=1, max_size=64))
def test_fp8_calibrated_relative_error_bound(values):
    x = torch.tensor(values)
    amax = float(x.abs().max())
    # the calibrated scale amax / 448 must be a normal float32 (for amax below 448 * 2**-126 it is
    # subnormal or 0, which the function rightly refuses or cannot divide by exactly)
    assume(amax / 448 >= 2.0 ** -126)
    xq = fp8_e4m3_fake_quantize(x, amax / 448)
    scaled = x.abs() * 448 / amax
    normal = scaled >= 2.0 ** -6
    # normals: half an ulp of a 3-bit mantissa = 2**-4 relative (plus float32 rounding of the scale)
    assert bool(((xq - x).abs() <= x.abs() * (2.0 ** -4 + 1e-6))[normal].all())
    # subnormals: half the subnormal step 2**-9, in scaled units
    assert bool(((xq - x).abs() * 448 / amax <= 2.0 ** -10 * (1 + 1e-6))[~normal].all())


def test_int4_hand_examples():
    x = torch.tensor([[0.0, 0.25, 0.75, 7.5]])       # step 7.5 / 15 = 0.5
    assert int4_group_fake_quantize(x, 4, torch.float32).tolist() == [[0.0, 0.0, 1.0, 7.5]]  # ties to even
    neg = torch.tensor([[-3.0, -1.0, 0.0, 12.0]])    # step 1, min -3: all on the grid
    assert int4_group_fake_quantize(neg, 4, torch.float32).tolist() == neg.tolist()
    const = torch.full((1, 8), 0.3)                  # max == min: exact (the min itself, in float16)
    assert int4_group_fake_quantize(const, 8, torch.float32).tolist() == const.tolist()


def test_int4_groups_are_independent():
    x = torch.tensor([[0.0, 1.0, 100.0, 115.0]])
    out = int4_group_fake_quantize(x, 2, torch.float32)
    assert out.tolist() == [[0.0, 1.0, 100.0, 115.0]]


def test_int4_shape_check_and_bits():
    with pytest.raises(ValueError, match="multiple of group"):
        int4_group_fake_quantize(torch.ones(2, 48), 32)
    assert int4_bits_per_value(32) == 5.0 and int4_bits_per_value(64) == 4.5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=32, max_size=32))
@example([50.0] * 31 + [49.999996])
def test_int4_error_is_at_most_half_a_step(values):
    x = torch.tensor([values])
    out = int4_group_fake_quantize(x, 32, torch.float32)
    step = (x.max() - x.min()) / 15
    ulps = 2.0 ** -21 * float(x.abs().max()) + 1e-30     # a few float32 roundings of q * step + min
    assert bool(((out - x).abs() <= step / 2 * (1 + 1e-5) + ulps).all())
    assert bool((out >= x.min() - ulps).all() and (out <= x.max() + step * 1e-5 + ulps).all())


def test_int4_float16_parameters_cost_little():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 128, generator=g)
    out = int4_group_fake_quantize(x, 32)                  # float16 min and step
    groups = x.reshape(64, 4, 32)
    step = ((groups.amax(-1) - groups.amin(-1)) / 15).repeat_interleave(32, -1).reshape(64, 128)
    assert bool(((out - x).abs() <= step * 0.51 + 2e-3).all())
