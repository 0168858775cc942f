"""Rounding modes, named precisely, and one exact round-to-table routine.

"Round to nearest" is not a rounding mode until it says what happens at a tie. Elements and
E4M3 scales use two:

* [`Rounding.NEAREST_EVEN`][nvfp4_kvcache.rounding.Rounding.NEAREST_EVEN]: IEEE 754 roundTiesToEven. At an exact midpoint between two
  representable values pick the one whose code is even (mantissa bit 0). This is what PTX
  `cvt.rn` does and what NVFP4 and OCP MXFP4 elements use. Example for E2M1: `0.25 -> 0`,
  `0.75 -> 1.0`, `2.5 -> 2.0`, `5.0 -> 4.0`.
* [`Rounding.NEAREST_AWAY`][nvfp4_kvcache.rounding.Rounding.NEAREST_AWAY]: roundTiesToAway. At an exact midpoint pick the value of
  larger magnitude. SGLang's block-16 recipe gets this from counting thresholds
  (`code = #{t : |x| >= t}` over the seven midpoints): `0.25 -> 0.5`, `2.5 -> 3.0`,
  `5.0 -> 6.0`.

Power-of-two scales round an exponent instead, with [`Rounding.FLOOR`][nvfp4_kvcache.rounding.Rounding.FLOOR]
(OCP MX) or [`Rounding.CEIL`][nvfp4_kvcache.rounding.Rounding.CEIL] (SGLang's block-16 recipe,
`mxfp4_rceil`); `round_to_table` implements all four.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.rounding import Rounding, round_to_table
    >>> table = torch.tensor(
    ...     [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64
    ... )
    >>> x = torch.tensor([0.25, 2.5, 5.0, 5.1, 99.0], dtype=torch.float64)
    >>> round_to_table(x, table, Rounding.NEAREST_EVEN).tolist()
    [0, 4, 6, 7, 7]
    >>> round_to_table(x, table, Rounding.NEAREST_AWAY).tolist()
    [1, 5, 7, 7, 7]
    >>> up = round_to_table(x, table, Rounding.CEIL).tolist()
    >>> up, round_to_table(x, table, Rounding.FLOOR).tolist()
    ([1, 5, 7, 7, 7], [0, 4, 6, 6, 7])
"""

from __future__ import annotations

import enum

import torch

__all__ = ["Rounding", "round_to_table"]


class Rounding(enum.Enum):
    """How a value between two representable neighbours is resolved."""

    NEAREST_EVEN = "nearest-even"
    """Nearest; an exact tie goes to the even code (IEEE roundTiesToEven)."""

    NEAREST_AWAY = "nearest-away"
    """Nearest; an exact tie goes to the larger magnitude (IEEE roundTiesToAway)."""

    CEIL = "ceil"
    """Up, toward +infinity: `ceil(v)`. Power-of-two scales round their exponent this way when
    the block max must not exceed the element's largest value (`2**ceil(log2(amax / 6))`)."""

    FLOOR = "floor"
    """Down, toward -infinity: `floor(v)`. OCP MX's shared exponent, `floor(log2(amax)) - 2`."""


def round_to_table(x: torch.Tensor, table: torch.Tensor, rounding: Rounding) -> torch.Tensor:
    """Index of the nearest entry of an ascending table, saturating at both ends.

    Args:
        x: `float64` values, not NaN, any shape. Values below `table[0]` map to index 0,
            values above `table[-1]` to the last index (saturation).
        table: `float64`, 1-D, strictly ascending. When the table holds the magnitudes of a
            sign-magnitude format, the index *is* the magnitude code, so "even index" is
            "even code".
        rounding: Tie rule (nearest modes) or direction (`CEIL`, `FLOOR`).

    Returns:
        `int64` indices, same shape as `x`.

    Raises:
        ValueError: if `x` or `table` is not `float64` or `x` contains NaN.
    """
    if x.dtype != torch.float64 or table.dtype != torch.float64:
        raise ValueError(f"round_to_table works in float64, got {x.dtype} and {table.dtype}")
    if torch.isnan(x).any():
        raise ValueError("round_to_table got NaN; NaN handling belongs to the recipe")
    last = table.numel() - 1
    hi = torch.searchsorted(table, x).clamp(max=last)  # first entry >= x (or the last one)
    if rounding is Rounding.CEIL:
        return hi
    if rounding is Rounding.FLOOR:
        return (torch.searchsorted(table, x, right=True) - 1).clamp(min=0)
    lo = (hi - 1).clamp(min=0)
    d_lo = x - table[lo]
    d_hi = table[hi] - x
    if rounding is Rounding.NEAREST_EVEN:
        tie_to_hi = hi % 2 == 0
    elif rounding is Rounding.NEAREST_AWAY:
        tie_to_hi = torch.ones_like(hi, dtype=torch.bool)
    else:  # pragma: no cover - exhaustive over the enum
        raise ValueError(f"unknown rounding {rounding!r}")
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & tie_to_hi)
    return torch.where(pick_hi, hi, lo)
