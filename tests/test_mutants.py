"""Test the tests: plausible wrong oracles, each modelled on a rule a peer library follows, must fail.

Each mutant swaps one rule of the oracle for a wrong one by replacing a name the recipe module
looks up (a format object, a helper, `torch`), runs the named cases and the golden vectors, and
must be caught by at least one of them, including the named case that pins that rule. The E4M3
block scale rounding its ties away from zero used to pass the whole suite: no named case put the
block scale itself on a midpoint (now `nvfp4/scale_tie_even` does).
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path

import pytest
import torch

from nvfp4_kvcache.cases import CASES, case_codes, case_input, case_recipe
from nvfp4_kvcache.packing import unpack_nibbles
from nvfp4_kvcache.recipes import fp4_mx_block16, mxfp4, nvfp4
from nvfp4_kvcache.rounding import Rounding, round_to_table
from nvfp4_kvcache.vectors import check_vectors

GOLDEN = Path(__file__).resolve().parents[1] / "reference_impl" / "golden"


class _Format:
    """A stand-in for a format object: everything delegates, `encode_magnitude` is replaced."""

    def __init__(self, fmt, encode_magnitude) -> None:
        self._fmt, self.encode_magnitude = fmt, encode_magnitude

    def __getattr__(self, name):
        return getattr(self._fmt, name)


def _ties(fmt, mode):
    """`encode_magnitude` whose ties go `mode` ("away" or "zero") instead of to even."""

    def encode(magnitude, rounding, saturate=True):
        table = torch.tensor(fmt.magnitudes, dtype=torch.float64, device=magnitude.device)
        if mode == "away":
            return round_to_table(magnitude.double(), table, Rounding.NEAREST_AWAY).to(torch.uint8)
        up = round_to_table(magnitude.double(), table, Rounding.NEAREST_AWAY)
        mid = (table[up] + table[(up - 1).clamp(min=0)]) / 2
        return torch.where((magnitude.double() == mid) & (up > 0), up - 1, up).to(torch.uint8)   # ties toward zero

    return encode


def _clamped(fmt, low):
    """`encode_magnitude` that clamps its input to `[low, inf)` first (ModelOpt's block-scale clamp)."""
    return lambda magnitude, rounding, saturate=True: fmt.encode_magnitude(magnitude.clamp(min=low), rounding)


class _Torch(types.SimpleNamespace):
    """`torch`, except `signbit`, which reads the sign of zero wrong (`x < 0`, as ModelOpt's NVFP4)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def signbit(t):
        return t < 0


_FLOOR_LOG2 = mxfp4.floor_log2


def _ceil_log2(a):
    floor = _FLOOR_LOG2(a)
    return floor + (a.double() != torch.ldexp(torch.ones_like(a.double()), floor)).long()


MUTANTS = {
    # name: (module, attribute, replacement factory, the named case that must catch it)
    "nvfp4 block scale: E4M3 ties away from zero": (nvfp4, "E4M3", lambda: _Format(nvfp4.E4M3, _ties(nvfp4.E4M3, "away")),
                                                    "nvfp4/scale_tie_even"),
    "nvfp4 block scale: clamped to 2**-9 (ModelOpt)": (nvfp4, "E4M3", lambda: _Format(nvfp4.E4M3, _clamped(nvfp4.E4M3, 2.0**-9)),
                                                       "nvfp4/scale_underflow"),
    "nvfp4 block scale: clamped to 2**-6 (torchao)": (nvfp4, "E4M3", lambda: _Format(nvfp4.E4M3, _clamped(nvfp4.E4M3, 2.0**-6)),
                                                      "nvfp4/scale_subnormal"),
    "nvfp4 elements: E2M1 ties away from zero": (nvfp4, "E2M1", lambda: _Format(nvfp4.E2M1, _ties(nvfp4.E2M1, "away")),
                                                 "nvfp4/ties_even"),
    "nvfp4 elements: sign bit from x < 0 (ModelOpt)": (nvfp4, "torch", lambda: _Torch(), "nvfp4/zero_block"),
    "mxfp4 elements: ties toward zero (ModelOpt's MXFP4)": (mxfp4, "E2M1", lambda: _Format(mxfp4.E2M1, _ties(mxfp4.E2M1, "zero")),
                                                            "mxfp4/ties_even"),
    "mxfp4 scale: exponent rounded up (RCEIL or CEIL)": (mxfp4, "floor_log2", lambda: _ceil_log2, "mxfp4/amax_7_saturates"),
    "fp4_mx_block16 elements: ties toward zero (argmin)": (fp4_mx_block16, "E2M1",
                                              lambda: _Format(fp4_mx_block16.E2M1, _ties(fp4_mx_block16.E2M1, "zero")),
                                              "fp4_mx_block16/ties_away"),
}


@contextlib.contextmanager
def _mutant(name):
    module, attr, make, _ = MUTANTS[name]
    saved = getattr(module, attr)
    setattr(module, attr, make())
    try:
        yield
    finally:
        setattr(module, attr, saved)


def _failing_cases() -> list[str]:
    failing = []
    for case in CASES.values():
        q = case_recipe(case).quantize(case_input(case), case.global_scale)
        if q.scales.flatten().tolist() != [case.scale_byte] or unpack_nibbles(q.packed)[0].tolist() != case_codes(case):
            failing.append(case.name)
    return failing


def test_the_real_oracle_passes_the_named_cases_and_the_golden_vectors():
    assert _failing_cases() == []
    assert check_vectors(GOLDEN) == []


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_caught_by_the_named_cases(name):
    with _mutant(name):
        failing = _failing_cases()
    assert MUTANTS[name][3] in failing, f"{name}: caught by {failing}"


def test_the_e4m3_tie_mutant_is_caught_by_the_golden_vectors_too():
    """The golden named-case set holds the scale-tie block, so a regenerated answer differs."""
    with _mutant("nvfp4 block scale: E4M3 ties away from zero"):
        problems = check_vectors(GOLDEN)
    assert any(p.startswith("nvfp4.quantize.named_cases") for p in problems), problems
