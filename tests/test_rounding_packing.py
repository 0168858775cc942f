"""Rounding modes at every tie, and the nibble order."""

import pytest
import torch
from hypothesis import given, strategies as st

from nvfp4_kvcache.formats import E2M1
from nvfp4_kvcache.packing import pack_nibbles, unpack_nibbles
from nvfp4_kvcache.rounding import Rounding, round_to_table

TIES = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
# RNE: the neighbour with even code (mantissa 0); away: the larger one.
EVEN = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
AWAY = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


@pytest.mark.parametrize("rounding,expected", [(Rounding.NEAREST_EVEN, EVEN), (Rounding.NEAREST_AWAY, AWAY)])
def test_every_e2m1_tie(rounding, expected):
    codes = E2M1.encode_magnitude(torch.tensor(TIES), rounding)
    assert [E2M1.decode(int(c)) for c in codes] == expected


def test_nearest_away_equals_threshold_counting():
    # SGLang's rule: code = number of thresholds t with |y| >= t (thresholds = E2M1 midpoints).
    thresholds = torch.tensor(TIES, dtype=torch.float32)
    y = torch.cat([torch.linspace(0, 8, 20001), torch.tensor(TIES), torch.tensor(TIES).nextafter(torch.tensor(0.0))])
    counted = (y.unsqueeze(-1) >= thresholds).sum(-1).to(torch.uint8)
    assert torch.equal(E2M1.encode_magnitude(y, Rounding.NEAREST_AWAY), counted)


def test_round_to_table_rejects_nan_and_non_f64():
    table = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN"):
        round_to_table(torch.tensor([float("nan")], dtype=torch.float64), table, Rounding.NEAREST_EVEN)
    with pytest.raises(ValueError, match="float64"):
        round_to_table(torch.tensor([0.5]), table, Rounding.NEAREST_EVEN)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False, width=32))
def test_rounding_is_nearest(v):
    mags = torch.tensor(E2M1.magnitudes, dtype=torch.float64)
    for rounding in (Rounding.NEAREST_EVEN, Rounding.NEAREST_AWAY):  # FLOOR and CEIL are the exponent roundings
        c = int(E2M1.encode_magnitude(torch.tensor([v]), rounding))
        best = (mags - v).abs().min()
        assert abs(mags[c] - v) == best or v > 6
    # the directed modes: the neighbour on their side (saturating past 6)
    up = int(E2M1.encode_magnitude(torch.tensor([v]), Rounding.CEIL))
    down = int(E2M1.encode_magnitude(torch.tensor([v]), Rounding.FLOOR))
    assert mags[down] == mags[mags <= v].max()
    assert v > 6 or mags[up] == mags[mags >= v].min()


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False, width=32), min_size=2, max_size=50))
def test_encode_is_monotonic(vs):
    vs = sorted(vs)
    for rounding in Rounding:
        codes = E2M1.encode_magnitude(torch.tensor(vs), rounding).tolist()
        assert codes == sorted(codes)


def test_bit_diagram():
    # byte = code[2i+1] << 4 | code[2i]
    codes = torch.tensor([[0x3, 0xA, 0x0, 0xF]], dtype=torch.uint8)
    assert pack_nibbles(codes).tolist() == [[0xA3, 0xF0]]


@given(st.lists(st.integers(0, 15), min_size=1, max_size=64).filter(lambda v: len(v) % 2 == 0))
def test_pack_unpack_roundtrip(vals):
    codes = torch.tensor(vals, dtype=torch.uint8)
    assert torch.equal(unpack_nibbles(pack_nibbles(codes)), codes)


def test_packing_errors():
    with pytest.raises(ValueError, match="uint8"):
        pack_nibbles(torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="even last dimension"):
        pack_nibbles(torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="above 15"):
        pack_nibbles(torch.tensor([16, 0], dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        unpack_nibbles(torch.zeros(2))
