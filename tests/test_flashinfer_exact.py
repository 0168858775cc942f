"""The exact-arithmetic referee of the FlashInfer conformance run (scripts/flashinfer_exact.py)."""

from __future__ import annotations

import doctest
import math
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

import flashinfer_exact as fe
from nvfp4_kvcache.cases import CASES, case_input
from nvfp4_kvcache.packing import unpack_nibbles
from nvfp4_kvcache.recipes import NVFP4


def test_docstring_examples_run():
    assert doctest.testmod(fe).failed == 0


def _random_doubles(n, seed=0):
    rng = np.random.default_rng(seed)
    mant = rng.uniform(1, 2, n)
    exps = rng.integers(-160, 140, n)
    x = np.ldexp(mant, exps) * rng.choice([-1.0, 1.0], n)
    ties = np.ldexp(np.float64(1) + np.ldexp(rng.integers(0, 2**23, n // 4), -23) + 2.0**-24, exps[: n // 4])
    return np.concatenate([x, ties, [2.0**-149 * 1.5, 2.0**-150, 2.0**-151, 3.4028235677973366e38]])


@pytest.mark.parametrize("name, np_dtype", [("float32", np.float32), ("float16", np.float16),
                                            ("bfloat16", ml_dtypes.bfloat16)])
def test_round_binary_agrees_with_correctly_rounded_casts(name, np_dtype):
    """numpy's float64 -> float32 / float16 casts round once to nearest even, so the exact
    rounding must agree on every value, subnormals, ties and overflow included. ml_dtypes casts
    float64 to bfloat16 through float32 (two roundings), so bfloat16 is checked on float32 inputs,
    which is what the kernels round."""
    xs = _random_doubles(4000)
    if name == "bfloat16":
        with np.errstate(over="ignore"):
            xs = xs.astype(np.float32).astype(np.float64)
    with np.errstate(over="ignore"):
        ref = xs.astype(np_dtype).astype(np.float64)
    for x, r in zip(xs.tolist(), ref.tolist()):
        got = fe.round_binary(fe.to_fraction(x), fe.FORMATS[name])
        assert got == r, (x, got, r)


def _blocks(n, seed, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-6, 6, n, dtype=torch.float64).to(torch.float32).unsqueeze(1)
    return (torch.randn(n, 16, generator=g) * scale).to(dtype).float()


@pytest.mark.parametrize("g", [1.0, 0.37, 2.0**-20, 1 / 448, 3.0e3])
def test_oracle_model_is_the_oracle(g):
    """The model of the oracle's documented arithmetic gives the oracle's bytes (a wrong model, or
    an oracle that drifts from its docstring, fails here)."""
    x = _blocks(300, seed=int(g * 1000) % 97)
    q = NVFP4.quantize(x, torch.tensor(g, dtype=torch.float32))
    codes = unpack_nibbles(q.packed)
    gf = torch.tensor(g, dtype=torch.float32).item()
    for i in range(x.shape[0]):
        sb, c = fe.oracle_block(x[i].tolist(), gf)
        assert sb == q.scales[i].item() and c == codes[i].tolist(), i


def test_oracle_model_on_the_named_cases():
    checked = 0
    for case in CASES.values():
        if case.recipe != "nvfp4" or case.order is not None:  # another order's bytes: not this model's
            continue
        x = case_input(case).float()[0].tolist()
        if any(math.isnan(v) for v in x):
            with pytest.raises(ValueError, match="NaN has no E2M1 code"):
                fe.oracle_block(x, case.global_scale)
            continue
        sb, codes = fe.oracle_block(x, case.global_scale)
        assert sb == case.scale_byte, case.name
        assert codes == [case.codes.get(j, 0) for j in range(16)], case.name
        checked += 1
    assert checked >= 5


def test_exact_model_ties_go_to_even():
    # amax / 6 = 0.59375 is halfway between E4M3 0.5625 (code 0x31, odd) and 0.625 (0x32, even)
    sb, _ = fe.exact_block([0.59375 * 6] + [0.0] * 15, 1.0)
    assert sb == 0x32
    # element 0.25 * sf g is halfway between codes 0 and 1: to 0 (even); 0.75: to 2 (1.0)
    sb, codes = fe.exact_block([6.0, 0.25, 0.75, -0.25, -0.75] + [0.0] * 11, 1.0)
    assert sb == 0x38 and codes[:5] == [7, 0, 2, 8, 10]


def test_exact_model_saturates_and_underflows():
    sb, codes = fe.exact_block([1e6, -3.0] + [0.0] * 14, 1.0)     # amax / 6 past 448
    assert sb == 0x7E and codes[:2] == [7, 8]                      # 3 / 448 rounds to 0, sign kept
    sb, codes = fe.exact_block([6 * 2.0**-10] + [-0.0] * 15, 1.0)  # exactly half the smallest scale
    assert sb == 0 and codes == [0] + [8] * 15
    sb, codes = fe.exact_block([math.inf, 1000.0] + [0.0] * 14, 1.0)
    assert sb == 0x7E and codes[:2] == [7, 4]                       # inf -> 6; 1000 / 448 = 2.23 -> 2 (code 4)


def test_four_over_six_keeps_the_scale_with_the_smaller_error():
    xs = [4.0] * 16
    assert fe.exact_block(xs, 1.0)[0] == 0x33                        # E4M3(4/6) = 0.6875 = 1.375 * 2**-1
    sb, codes = fe.exact_block(xs, 1.0, four_over_six=True)
    assert sb == 0x38 and codes == [6] * 16                          # scale 1.0: every 4 exact
    sb, codes = fe.flashinfer_block(xs, 1.0, four_over_six=True)
    assert sb == 0x38 and codes == [6] * 16
    flat = [6.0] + [0.0] * 15                                        # 6 is exact with scale 1.0
    assert fe.exact_block(flat, 1.0, four_over_six=True)[0] == 0x38


def test_flashinfer_model_of_a_zero_scale_follows_the_kernel():
    tiny = [2.0**-140] * 16                                         # amax / 6 far below 2**-10
    sb, codes = fe.flashinfer_block(tiny, 1.0, four_over_six=True)
    assert sb == 0 and codes == [0] * 16


def _search(model_a, model_b, n=4000, seed=3):
    x = _blocks(n, seed)
    for g in (0.37, 0.1, 1.7, 1 / 3):
        for i in range(n):
            xs = x[i].tolist()
            if model_a(xs, g) != model_b(xs, g):
                return xs, g
    return None


def test_division_and_product_forms_differ_somewhere_and_decide_names_who_is_exact():
    found = _search(fe.oracle_block, lambda xs, g: fe.flashinfer_block(xs, g))
    assert found is not None, "random search should find a block where fl(amax/fl(6g)) and the product form differ"
    xs, g = found
    fi, orc = fe.flashinfer_block(xs, g), fe.oracle_block(xs, g)
    out = fe.decide(xs, g, fi, orc)
    assert "flashinfer_ieee" in out["gpu_matches"] and "oracle" in out["oracle_matches"]
    exact = fe.exact_block(xs, g)
    assert out["verdict"] == {(True, False): "flashinfer right", (False, True): "oracle right",
                              (False, False): "neither right"}[(fi == exact, orc == exact)]
    rep = {"inputs_f32_hex": [fe.f32_hex(v) for v in xs], "global_scale_f32_hex": fe.f32_hex(g),
           "flashinfer": {"scale_byte": fi[0], "codes": fi[1]}, "oracle": {"scale_byte": orc[0], "codes": orc[1]}}
    assert fe.decide_reproducer(rep)["verdict"] == out["verdict"]


def test_nan_blocks_are_undefined_not_decided():
    xs = [math.nan] + [1.0] * 15
    assert fe.decide(xs, 1.0, (0, [0] * 16), (0x7F, [0] * 16))["verdict"] == "undefined: NaN in block"


def test_hex_round_trip_keeps_signed_zero_and_nan():
    for v in (-0.0, 1.5, float("inf"), 2.0**-149):
        assert fe.f32_hex(fe.from_f32_hex(fe.f32_hex(v))) == fe.f32_hex(v)
    assert math.isnan(fe.from_f32_hex(fe.f32_hex(float("nan"))))


def test_the_committed_scan_reproducers_decide_as_stored():
    """The Pool chapter prints the committed formula scan: each stored reproducer, re-decided from
    its bytes by exact arithmetic, gets the verdict the scan recorded."""
    import json

    scan = json.loads((Path(__file__).resolve().parents[1] / "docs/data/peers/flashinfer_formula.json").read_text())
    reproducers = [r[form]["reproducer"] for r in scan["rows"]
                   for form in ("flashinfer_division", "flashinfer_precise") if r[form]["reproducer"]]
    assert reproducers
    for rep in reproducers:
        assert fe.decide_reproducer(rep)["verdict"] == rep["verdict"]
