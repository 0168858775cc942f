"""The number formats of 4-bit KV caches, each defined once.

Three small formats appear in every FP4 KV-cache recipe:

* **E2M1** (FP4): the element format. 1 sign bit, 2 exponent bits, 1 mantissa bit, exponent bias 1,
  no infinity and no NaN. Sixteen codes, eight magnitudes: `0, 0.5, 1, 1.5, 2, 3, 4, 6`.
* **E4M3** (`float8_e4m3fn`): NVFP4's block-scale format. 1 sign, 4 exponent, 3 mantissa bits,
  bias 7, no infinity, one NaN pattern per sign (`S.1111.111`); largest finite value 448.
* **E8M0** (OCP "UE8M0"): MXFP4's block-scale format and, with a twist, SGLang's block-16 scale.
  8 exponent bits, no sign, no mantissa, bias 127: byte `b` means `2**(b - 127)`; `0xFF` is NaN.

The [Format chapter](../format/index.md) explains them with tables generated from this module.

Everything numeric about a format (its value table, its largest finite value, its smallest
subnormal) is *derived* here from the bit layout by formula and checked in the tests against a
hand-written table. Kernels import these constants instead of retyping `6.0` or `448.0`.

Examples:
    >>> from nvfp4_kvcache.formats import E2M1, E4M3, E8M0
    >>> E2M1.max_finite, E4M3.max_finite
    (6.0, 448.0)
    >>> E2M1.magnitudes
    (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    >>> E2M1.decode(0b1011)     # sign bit set, magnitude code 3
    -1.5
    >>> E8M0.decode(127), E8M0.decode(130)
    (1.0, 8.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from nvfp4_kvcache.rounding import Rounding, round_to_table

__all__ = [
    "MiniFloat",
    "PowerOfTwoScale",
    "E2M1",
    "E4M3",
    "E8M0",
    "E2M1_MAX",
    "E4M3_MAX",
    "E2M1_SIGN_BIT",
    "E2M1_MAGNITUDE_MASK",
]


@dataclass(frozen=True)
class MiniFloat:
    """A small sign-magnitude binary floating-point format.

    Codes are `sign << (exp_bits + man_bits) | exponent << man_bits | mantissa`. An exponent
    field of 0 encodes subnormals `(mantissa / 2**man_bits) * 2**(1 - bias)`; any other field
    encodes normals `(1 + mantissa / 2**man_bits) * 2**(exponent - bias)`.

    Attributes:
        name: Human-readable name, e.g. `"E2M1"`.
        exp_bits: Number of exponent bits.
        man_bits: Number of mantissa bits.
        bias: Exponent bias.
        nan_magnitude_codes: Magnitude codes (sign bit cleared) that mean NaN. `()` for a
            format with no NaN (E2M1); `(0x7F,)` for `float8_e4m3fn`. No format here has
            an infinity.
        torch_dtype: the PyTorch dtype whose bytes are this format's codes, if any (a view
            of the stored `uint8` bytes as that dtype reads the same values).
    """

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    nan_magnitude_codes: tuple[int, ...] = ()
    torch_dtype: torch.dtype | None = None

    @property
    def bits(self) -> int:
        """Total width in bits, sign included."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def sign_bit(self) -> int:
        """The mask of the sign bit (`0x8` for E2M1, `0x80` for E4M3)."""
        return 1 << (self.exp_bits + self.man_bits)

    @property
    def magnitude_mask(self) -> int:
        """The mask of the exponent and mantissa bits."""
        return self.sign_bit - 1

    def _magnitude_of(self, code: int) -> float:
        exponent = code >> self.man_bits
        mantissa = code & ((1 << self.man_bits) - 1)
        if exponent == 0:
            return math.ldexp(mantissa, 1 - self.bias - self.man_bits)
        return math.ldexp((1 << self.man_bits) + mantissa, exponent - self.bias - self.man_bits)

    @cached_property
    def magnitudes(self) -> tuple[float, ...]:
        """Non-negative finite values, indexed by magnitude code (ascending, NaN codes left out)."""
        return tuple(
            self._magnitude_of(c)
            for c in range(self.sign_bit)
            if c not in self.nan_magnitude_codes
        )

    @property
    def max_finite(self) -> float:
        """Largest finite value: 6.0 for E2M1, 448.0 for E4M3."""
        return self.magnitudes[-1]

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value: 0.5 for E2M1, 2**-9 for E4M3."""
        return self.magnitudes[1]

    def decode(self, code: int) -> float:
        """The value of one code (`-0.0` for the negative zero, `nan` for NaN codes)."""
        if not 0 <= code < (1 << self.bits):
            raise ValueError(f"{self.name} code must be in [0, {1 << self.bits}), got {code}")
        magnitude_code = code & self.magnitude_mask
        if magnitude_code in self.nan_magnitude_codes:
            return math.nan
        value = self._magnitude_of(magnitude_code)
        return -value if code & self.sign_bit else value

    @cached_property
    def table(self) -> tuple[float, ...]:
        """All codes decoded, indexed by code: the decode oracle as a table."""
        return tuple(self.decode(c) for c in range(1 << self.bits))

    def decode_tensor(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode a `uint8` tensor of codes to `float32` by table lookup.

        Every value of these formats is exact in `float32`.
        """
        lut = torch.tensor(self.table, dtype=torch.float32, device=codes.device)
        return lut[codes.long()]

    def encode_magnitude(
        self, magnitude: torch.Tensor, rounding: Rounding, saturate: bool = True
    ) -> torch.Tensor:
        """Round non-negative values to the nearest magnitude code (`uint8`).

        The comparison runs in `float64`, where every input of `float32` or narrower and
        every midpoint between two table values is exact, so ties are decided exactly.

        Args:
            magnitude: Non-negative, non-NaN values of any floating dtype and shape.
            rounding: How to break an exact tie between two neighbours.
            saturate: Clamp values above [`max_finite`][nvfp4_kvcache.formats.MiniFloat.max_finite] to it (the only mode the recipes use).

        Returns:
            `uint8` magnitude codes of the same shape (sign bit clear).
        """
        if not saturate:
            raise NotImplementedError("only saturating conversion is defined for these formats")
        table = torch.tensor(self.magnitudes, dtype=torch.float64, device=magnitude.device)
        return round_to_table(magnitude.double(), table, rounding).to(torch.uint8)


@dataclass(frozen=True)
class PowerOfTwoScale:
    """An exponent-only scale byte: `b` means `2**(b - bias)`.

    This is OCP MX's E8M0 (`bias=127`, byte `0xFF` is NaN). SGLang's block-16 recipe stores
    the same kind of byte but decodes it with `exp2(b - 127)`, so `0xFF` decodes to `+inf`
    there instead of NaN: see [`nvfp4_kvcache.recipes.fp4_mx_block16`][nvfp4_kvcache.recipes.fp4_mx_block16].
    """

    name: str
    bias: int = 127
    nan_code: int | None = 0xFF
    torch_dtype: torch.dtype | None = None

    @property
    def bits(self) -> int:
        """Width in bits: one byte."""
        return 8

    @property
    def min_exponent(self) -> int:
        """Smallest exponent a byte can hold (byte 0)."""
        return -self.bias

    @property
    def max_exponent(self) -> int:
        """Largest finite exponent (byte 254 for E8M0)."""
        top = 0xFE if self.nan_code == 0xFF else 0xFF
        return top - self.bias

    def decode(self, code: int) -> float:
        """The scale a byte stands for."""
        if not 0 <= code <= 0xFF:
            raise ValueError(f"{self.name} code must be in [0, 256), got {code}")
        if code == self.nan_code:
            return math.nan
        return math.ldexp(1.0, code - self.bias)

    def decode_tensor(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode a `uint8` tensor to `float32` (exact: `2**-127` is a float32 subnormal)."""
        lut = torch.tensor(
            [self.decode(c) for c in range(256)], dtype=torch.float32, device=codes.device
        )
        return lut[codes.long()]


E2M1 = MiniFloat("E2M1", exp_bits=2, man_bits=1, bias=1)
"""FP4 element format: 16 codes, magnitudes `0, 0.5, 1, 1.5, 2, 3, 4, 6`, no Inf/NaN."""

E4M3 = MiniFloat("E4M3", exp_bits=4, man_bits=3, bias=7, nan_magnitude_codes=(0x7F,), torch_dtype=torch.float8_e4m3fn)
"""FP8 `float8_e4m3fn`: NVFP4's block scale. Max 448, min subnormal `2**-9`, NaN `0x7F`/`0xFF`."""

E8M0 = PowerOfTwoScale("E8M0", torch_dtype=torch.float8_e8m0fnu)
"""OCP MX shared scale: `2**(b - 127)` for `b` in 0..254, `0xFF` is NaN."""

E2M1_MAX: float = E2M1.max_finite
"""6.0, the largest E2M1 magnitude. Kernels take it from here."""

E4M3_MAX: float = E4M3.max_finite
"""448.0, the largest finite E4M3 value. Kernels take it from here."""

E2M1_SIGN_BIT: int = E2M1.sign_bit
"""0x8: bit 3 of a nibble is the sign."""

E2M1_MAGNITUDE_MASK: int = E2M1.magnitude_mask
"""0x7: bits 2..0 of a nibble are the magnitude code."""
