"""The recipes' rules in exact rational arithmetic: the referee between two implementations.

The oracle computes in `float32`, in the order NVIDIA's kernels use, because its job is to
predict a kernel's bytes. When two implementations disagree, the question "which one follows the
rule?" needs an answer that no floating-point order can give: this module evaluates each rule with
`fractions.Fraction`, where every quotient is exact and a tie is a tie. It is slow (pure Python,
one block at a time) and meant for the few blocks where implementations differ.

Each function returns the bytes the rule gives in exact arithmetic, plus, for every element, the
exact quotient its code rounds and how far that quotient is from the nearest rounding boundary.
Special values follow the oracle's documented choices (a NaN block gets the recipe's NaN scale and
codes 0), since no specification fixes them.

Examples:
    >>> from fractions import Fraction
    >>> from nvfp4_kvcache.exact import exact_block
    >>> block = [6.25] + [0.0] * 15
    >>> exact_block(  # s = 200: tie -> 192
    ...     "nvfp4", block, global_scale=Fraction(14, 2688)
    ... ).scale_byte
    116
    >>> r = exact_block(  # X = 2**-1: 2.5 / 0.5 = 5, a tie -> 4
    ...     "mxfp4", [2.5] + [0.0] * 31
    ... )
    >>> r.scale_byte, r.codes[0], r.elements[0].tie
    (126, 6, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Sequence

from nvfp4_kvcache.formats import E2M1, E4M3, E8M0, MiniFloat
from nvfp4_kvcache.recipes import get_recipe
from nvfp4_kvcache.rounding import Rounding

__all__ = [
    "ExactElement",
    "ExactBlock",
    "to_fraction",
    "to_float32",
    "float32_ulp",
    "round_exact",
    "exact_block",
    "EXACT_RULES",
]

_E4M3_NAN_BYTE = 0x7F
_BLOCK16_FLOOR = Fraction(1e-10)  # upstream clamps fl32(amax / 6) at 1e-10 (a double literal)


def to_fraction(x: float) -> Fraction:
    """The exact value of a finite binary float (`float32`, `bfloat16` and `float16` are exact in `float`).

    Raises:
        ValueError: NaN or infinity.

    Examples:
        >>> to_fraction(0.1)
        Fraction(3602879701896397, 36028797018963968)
    """
    if not math.isfinite(x):
        raise ValueError(f"no exact value for {x}")
    return Fraction(x)


def to_float32(q: Fraction) -> float:
    """`q` rounded once to the nearest `float32` (ties to even), as a Python float; overflow gives +-inf.

    `float(q)` would round to `float64` first, and a second rounding to `float32` can then miss.

    Examples:
        >>> to_float32(Fraction(1, 3)) == float(
        ...     __import__("torch").tensor(1 / 3, dtype=__import__("torch").float32)
        ... )
        True
    """
    if q == 0:
        return 0.0
    sign = -1.0 if q < 0 else 1.0
    a = abs(q)
    e = max(_floor_log2(a), -126)          # subnormals share the exponent of the smallest normal
    m = a / Fraction(2) ** (e - 23)        # in [2**23, 2**24) for normals
    n = m.numerator // m.denominator
    rem = m - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2):
        n += 1
    value = n * Fraction(2) ** (e - 23)
    if value > Fraction(2) ** 128 - Fraction(2) ** 104:
        return sign * math.inf
    return sign * float(value)


def float32_ulp(q: Fraction) -> Fraction:
    """The spacing of `float32` numbers at `|q|` (the ulp of the binade `q` lies in; `2**-149` near 0).

    Examples:
        >>> float32_ulp(Fraction(1)), float32_ulp(Fraction(3, 4))
        (Fraction(1, 8388608), Fraction(1, 16777216))
    """
    q = abs(q)
    if q == 0:
        return Fraction(1, 2**149)
    e = math.floor(math.log2(q.numerator) - math.log2(q.denominator))
    while Fraction(2) ** e > q:  # repair the float logarithm's rounding
        e -= 1
    while Fraction(2) ** (e + 1) <= q:
        e += 1
    return Fraction(2) ** max(e - 23, -149)


@lru_cache(maxsize=None)
def _table(fmt: MiniFloat) -> tuple[Fraction, ...]:
    return tuple(Fraction(v) for v in fmt.magnitudes)


@dataclass(frozen=True)
class ExactElement:
    """One element under a rule, exactly.

    Attributes:
        quotient: the value its code rounds, `|x| / scale` (a `Fraction`; 0 when the code is forced).
        code: the 4-bit code the rule gives.
        tie: the quotient is exactly halfway between two neighbours.
        boundary_distance: `|quotient - m|` for the nearest midpoint `m` between neighbours, in
            `float32` ulps of `m` (`math.inf` past the last one): a near-tie is a small number.
        step: the distance between the quotient's two neighbours, in units of the input.
    """

    quotient: Fraction
    code: int
    tie: bool
    boundary_distance: float
    step: float


@dataclass(frozen=True)
class ExactBlock:
    """A block under a rule, exactly.

    Attributes:
        scale_byte: the scale byte the rule gives.
        scale: the scale it stands for (a `Fraction`, `None` for a NaN scale); for NVFP4 the
            product `sf * g` elements are divided by.
        codes: the 16 or 32 codes.
        elements: one [`ExactElement`][nvfp4_kvcache.exact.ExactElement] per element.
        scale_tie: the block scale's own quotient was exactly halfway between two E4M3 values
            (NVFP4 only; power-of-two rules have no ties).
        scale_boundary_distance: that quotient's distance from the nearest E4M3 midpoint, in
            `float32` ulps (NVFP4 only; `math.inf` otherwise).
    """

    scale_byte: int
    scale: Fraction | None
    codes: tuple[int, ...]
    elements: tuple[ExactElement, ...]
    scale_tie: bool = False
    scale_boundary_distance: float = math.inf


def round_exact(q: Fraction, fmt: MiniFloat, rounding: Rounding) -> tuple[int, bool, float]:
    """Round a non-negative exact value to a magnitude code of `fmt`, saturating.

    Returns:
        `(code, tie, boundary_distance)`: the magnitude code, whether `q` was an exact midpoint,
        and the distance from the nearest midpoint in `float32` ulps of that midpoint.

    Examples:
        >>> round_exact(Fraction(5, 2), E2M1, Rounding.NEAREST_EVEN)
        (4, True, 0.0)
        >>> round_exact(Fraction(5, 2), E2M1, Rounding.NEAREST_AWAY)[0]
        5
    """
    table = _table(fmt)
    mids = [(a + b) / 2 for a, b in zip(table, table[1:])]
    hi = next((i for i, v in enumerate(table) if v >= q), len(table) - 1)
    if q >= table[-1]:
        code, tie = len(table) - 1, False
    elif table[hi] == q:
        code, tie = hi, False
    else:
        lo = hi - 1
        d_lo, d_hi = q - table[lo], table[hi] - q
        tie = d_lo == d_hi
        if tie:
            code = hi if (rounding is Rounding.NEAREST_AWAY or hi % 2 == 0) else lo
        else:
            code = hi if d_hi < d_lo else lo
    nearest = min(mids, key=lambda m: abs(q - m))
    return code, tie, float(abs(q - nearest) / float32_ulp(nearest))


def _step(q: Fraction, fmt: MiniFloat) -> Fraction:
    table = _table(fmt)
    hi = next((i for i, v in enumerate(table) if v > q), len(table) - 1)
    return table[hi] - table[max(hi - 1, 0)]


def _elements(
    values: Sequence[float], scale: Fraction, rounding: Rounding, negative_zero_signed: bool = True
) -> tuple[ExactElement, ...]:
    out = []
    for v in values:
        negative = v < 0 or (negative_zero_signed and math.copysign(1.0, v) < 0)
        q = abs(to_fraction(v)) / scale if (math.isfinite(v) and scale) else Fraction(0) if math.isfinite(v) else None
        if q is None:  # +-inf against a finite scale: saturates
            out.append(ExactElement(Fraction(0), E2M1.magnitude_mask | (E2M1.sign_bit if negative else 0), False, math.inf,
                                    float(_step(_table(E2M1)[-1], E2M1) * scale)))
            continue
        mag, tie, dist = round_exact(q, E2M1, rounding)
        sign = E2M1.sign_bit if negative else 0
        out.append(ExactElement(q, sign | mag, tie, dist, float(_step(q, E2M1) * scale)))
    return tuple(out)


def _forced(values: Sequence[float], scale_byte: int) -> ExactBlock:
    zero = tuple(ExactElement(Fraction(0), 0, False, math.inf, math.nan) for _ in values)
    return ExactBlock(scale_byte, None, tuple(0 for _ in values), zero)


def _amax(values: Sequence[float]) -> float:
    if any(math.isnan(v) for v in values):
        return math.nan
    return max(abs(v) for v in values)


def _nvfp4(values: Sequence[float], global_scale: Fraction) -> ExactBlock:
    amax = _amax(values)
    if math.isnan(amax):
        return _forced(values, _E4M3_NAN_BYTE)
    if math.isinf(amax):
        s, tie, dist = len(_table(E4M3)) - 1, False, math.inf
    else:
        s, tie, dist = round_exact(to_fraction(amax) / (6 * global_scale), E4M3, Rounding.NEAREST_EVEN)
    sf = _table(E4M3)[s]
    elements = _elements(values, sf * global_scale, Rounding.NEAREST_EVEN)
    return ExactBlock(s, sf * global_scale, tuple(e.code for e in elements), elements, tie, dist)


def _power_of_two(values: Sequence[float], rule: str, rounding: Rounding) -> ExactBlock:
    """`rule`: "floor" (OCP), "ceil" (RCEIL), "block16_ceil" (SGLang's block 16: sign bit = x < 0)."""
    amax = _amax(values)
    if math.isnan(amax):
        return _forced(values, E8M0.nan_code if rule != "block16_ceil" else 0)
    if math.isinf(amax):
        if rule == "floor":
            return _forced(values, E8M0.nan_code)
        if rule == "block16_ceil":
            return _forced(values, 0xFF)
        e = E8M0.max_exponent  # RCEIL: satfinite
    elif rule == "block16_ceil":
        ratio = max(to_fraction(amax) / 6, _BLOCK16_FLOOR)
        e = _ceil_log2(ratio)
    elif amax == 0:
        e = E8M0.min_exponent
    elif rule == "floor":
        e = _floor_log2(to_fraction(amax)) - 2
    else:  # ceil of amax / 6
        e = _ceil_log2(to_fraction(amax) / 6)
    if rule != "block16_ceil":
        e = min(max(e, E8M0.min_exponent), E8M0.max_exponent)
    scale = Fraction(2) ** e
    elements = _elements(values, scale, rounding, negative_zero_signed=rule != "block16_ceil")
    return ExactBlock(e + E8M0.bias, scale, tuple(e_.code for e_ in elements), elements)


def _floor_log2(q: Fraction) -> int:
    e = q.numerator.bit_length() - q.denominator.bit_length()
    while Fraction(2) ** e > q:
        e -= 1
    while Fraction(2) ** (e + 1) <= q:
        e += 1
    return e


def _ceil_log2(q: Fraction) -> int:
    e = _floor_log2(q)
    return e if Fraction(2) ** e == q else e + 1


EXACT_RULES: dict[str, str] = {
    "nvfp4": "sf = E4M3_rne(amax / (6 g)) exactly; code = E2M1_rne(x / (sf g)) exactly",
    "mxfp4": "E = floor(log2 amax) - 2 exactly; code = E2M1_rne(x / 2**E)",
    "mxfp4_rceil": "E = ceil(log2(amax / 6)) exactly; code = E2M1_rne(x / 2**E)",
    "fp4_mx_block16": "e = ceil(log2(max(amax / 6, 1e-10))) exactly; code = E2M1_ties_away(x / 2**e)",
}
"""Recipe name -> the rule [`exact_block`][nvfp4_kvcache.exact.exact_block] evaluates."""

_POWER_OF_TWO_RULES: dict[str, tuple[str, Rounding]] = {
    "mxfp4": ("floor", Rounding.NEAREST_EVEN),
    "mxfp4_rceil": ("ceil", Rounding.NEAREST_EVEN),
    "fp4_mx_block16": ("block16_ceil", Rounding.NEAREST_AWAY),
}
"""The single-level recipes of `EXACT_RULES`: how the exponent is chosen, how elements round."""


def exact_block(recipe: str, values: Sequence[float], global_scale: Fraction | float | None = None) -> ExactBlock:
    """Evaluate one recipe's rule on one block in exact arithmetic.

    Args:
        recipe: a name in [`EXACT_RULES`][nvfp4_kvcache.exact.EXACT_RULES].
        values: the block's values (Python floats, so `bfloat16`/`float16`/`float32` exactly).
        global_scale: `nvfp4` only: the exact decode multiplier `g` (a `Fraction`, or a float
            taken at its exact value). A kernel handed the encode scale `G` has `g = 1 / G`
            exactly: pass `1 / Fraction(G)`.

    Returns:
        [`ExactBlock`][nvfp4_kvcache.exact.ExactBlock].

    Raises:
        ValueError: unknown recipe, or a missing or superfluous global scale.
    """
    if recipe not in EXACT_RULES:
        raise ValueError(f"no exact rule for {recipe!r}; known: {sorted(EXACT_RULES)}")
    two_level = get_recipe(recipe).has_global_scale
    if two_level != (global_scale is not None):
        raise ValueError(f"{recipe}: global_scale must be {'given' if two_level else 'None'}")
    values = [float(v) for v in values]
    if two_level:
        g = global_scale if isinstance(global_scale, Fraction) else to_fraction(float(global_scale))
        return _nvfp4(values, g)
    return _power_of_two(values, *_POWER_OF_TWO_RULES[recipe])
