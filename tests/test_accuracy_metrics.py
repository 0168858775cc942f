"""Element-level metrics of the accuracy lab, on inputs small enough to check by hand."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nvfp4_kvcache.accuracy.metrics import (
    element_errors,
    flush_to_zero_fraction,
    max_abs_error,
    per_block_sqnr_db,
    per_channel_sqnr_db,
    relative_l2,
    sqnr_db,
)


def test_exact_representation_is_infinite_sqnr_and_zero_error():
    x = torch.tensor([[1.0, -2.0, 0.0, 3.5]])
    assert sqnr_db(x, x.clone()) == math.inf
    assert relative_l2(x, x.clone()) == 0.0
    assert max_abs_error(x, x.clone()) == 0.0
    e = element_errors(x, x.clone(), block=2)
    assert e["sqnr_db"] == math.inf and e["block_sqnr_db_min"] == math.inf and e["ftz_fraction"] == 0.0
    assert e["channel_sqnr_db_min"] == math.inf and e["max_rel_err"] == 0.0


def test_hand_computed_values():
    x = torch.tensor([3.0, 4.0])       # signal energy 25
    xq = torch.tensor([3.0, 3.0])      # noise energy 1
    assert sqnr_db(x, xq) == pytest.approx(10 * math.log10(25))
    assert relative_l2(x, xq) == pytest.approx(0.2)
    assert max_abs_error(x, xq) == 1.0
    assert element_errors(x, xq, block=2)["max_rel_err"] == pytest.approx(0.25)


def test_all_zero_reference():
    z = torch.zeros(4)
    assert sqnr_db(z, z) == math.inf
    assert sqnr_db(z, torch.tensor([0.0, 0.0, 0.0, 1.0])) == -math.inf
    assert relative_l2(z, torch.ones(4)) == math.inf
    assert flush_to_zero_fraction(z, z) == 0.0


def test_flush_to_zero_counts_only_nonzero_references():
    x = torch.tensor([0.0, 0.0, 1e-5, 2e-5, 1.0])
    xq = torch.tensor([0.0, 0.0, 0.0, 2e-5, 0.0])
    assert flush_to_zero_fraction(x, xq) == pytest.approx(2 / 3)


def test_per_block_and_per_channel():
    x = torch.tensor([[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]])
    xq = torch.tensor([[1.0, 1.0, 2.0, 1.0], [1.0, 1.0, 2.0, 2.0]])
    blocks = per_block_sqnr_db(x, xq, block=2)
    assert blocks.shape == (2, 2)
    assert blocks[0, 0] == math.inf and blocks[1, 1] == math.inf
    assert blocks[0, 1].item() == pytest.approx(10 * math.log10(8 / 1))
    channels = per_channel_sqnr_db(x, xq)
    assert channels[:3].tolist() == [math.inf] * 3
    assert channels[3].item() == pytest.approx(10 * math.log10(8 / 1))
    e = element_errors(x, xq, block=2)
    assert e["block_sqnr_db_min"] == pytest.approx(10 * math.log10(8))
    assert e["channel_sqnr_db_median"] == pytest.approx(10 * math.log10(8))  # exact channels left out


def test_errors_on_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        sqnr_db(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="multiple of block"):
        per_block_sqnr_db(torch.ones(1, 6), torch.ones(1, 6), block=4)
    with pytest.raises(TypeError):
        sqnr_db([1.0], torch.ones(1))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=2, max_size=32),
       st.floats(0.001, 0.5))
def test_sqnr_and_relative_l2_agree(values, noise):
    x = torch.tensor(values, dtype=torch.float64)
    if not bool((x != 0).any()):
        return
    xq = x * (1 + noise)
    assert relative_l2(x, xq) == pytest.approx(10 ** (-sqnr_db(x, xq) / 20), rel=1e-9)
    assert relative_l2(x, xq) == pytest.approx(noise, rel=1e-9)
