"""The lab's inputs: one generator per class of input, the same for every peer.

Every class returns a `[rows, 64]` tensor of the requested dtype (64 = two MX blocks, four NVFP4
or block-16 blocks), built from a seeded generator so a run is reproducible. A class that needs
a grid (ties, scale boundaries) builds it for the recipe under test: an exact tie for NVFP4 needs
a power-of-two global scale, for MX a power-of-two block scale. Each class says what it isolates.

Global scales are not chosen here: each peer derives its own from the tensor (its convention,
over the finite values), and the oracle is handed that same number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from nvfp4_kvcache.formats import E2M1, E4M3

__all__ = ["InputClass", "INPUT_CLASSES", "DTYPES", "make_input", "WIDTH"]

WIDTH = 64
"""Elements per row."""

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

_MIDS = [(a + b) / 2 for a, b in zip(E2M1.magnitudes, E2M1.magnitudes[1:])]   # 0.25 ... 5.0
_E4M3_VALUES = [v for v in E4M3.magnitudes if v > 0]
_E4M3_MIDS = [(a + b) / 2 for a, b in zip(E4M3.magnitudes, E4M3.magnitudes[1:])]


@dataclass(frozen=True)
class InputClass:
    """A class of input.

    Attributes:
        name: short id, used in the data files.
        what: one sentence: what the class isolates.
        make: `(rows, block_size, global_scaled, generator, dtype) -> float64 [rows, WIDTH]`;
            values are rounded to the dtype afterwards (so a class may ask for what the dtype
            cannot hold).
    """

    name: str
    what: str
    make: Callable[[int, int, bool, torch.Generator, torch.dtype], torch.Tensor]


def _row_scales(rows: int, lo: int, hi: int, gen: torch.Generator) -> torch.Tensor:
    return torch.exp2(torch.randint(lo, hi + 1, (rows, 1), generator=gen).double())


def _normal(rows, block, gs, gen, dtype):
    return torch.randn(rows, WIDTH, generator=gen, dtype=torch.float64) * _row_scales(rows, -4, 4, gen)


def _heavy(rows, block, gs, gen, dtype):
    z = torch.randn(rows, WIDTH, generator=gen, dtype=torch.float64)
    chi = torch.randn(rows, WIDTH, 2, generator=gen, dtype=torch.float64).pow(2).mean(-1)
    return z / chi.sqrt() * _row_scales(rows, -2, 2, gen)     # Student's t with 2 degrees of freedom


def _ties(rows, block, gs, gen, dtype):
    """Every element on an exact E2M1 midpoint of its block's grid; for NVFP4 half the blocks put
    the block scale itself on an E4M3 midpoint. The tensor's largest block is 2688 * 2**j so that
    a global scale of amax / (6 * 448) (or its reciprocal) is a power of two."""
    out = torch.zeros(rows, WIDTH, dtype=torch.float64)
    nb = WIDTH // block
    mids = torch.tensor(_MIDS, dtype=torch.float64)
    for r in range(rows):
        for b in range(nb):
            sl = slice(b * block, (b + 1) * block)
            if gs:
                if (r + b) % 2:   # the block scale on an E4M3 midpoint, the elements anywhere
                    m = _E4M3_MIDS[int(torch.randint(1, len(_E4M3_MIDS), (1,), generator=gen))]
                    vals = torch.rand(block, generator=gen, dtype=torch.float64) * 6 * m
                    vals[0] = 6 * m
                else:             # an E4M3 block scale, the elements on E2M1 midpoints of it
                    sf = _E4M3_VALUES[int(torch.randint(8, len(_E4M3_VALUES), (1,), generator=gen))]
                    vals = mids[torch.randint(0, len(_MIDS), (block,), generator=gen)] * sf
                    vals[0] = 6 * sf
            else:
                k = int(torch.randint(-6, 7, (1,), generator=gen))
                vals = mids[torch.randint(0, len(_MIDS), (block,), generator=gen)] * 2.0**k
                vals[0] = 6 * 2.0**k  # floor(log2 amax) - 2 = k = ceil(log2(amax / 6)): both MX rules agree
            sign = torch.where(torch.rand(block, generator=gen) < 0.5, -1.0, 1.0).double()
            out[r, sl] = vals * sign
    if gs:
        out[0, :block] = 0
        out[0, 0] = 2688.0           # the tensor max: g = 1 under amax / (6 * 448)
    return out


def _zeros(rows, block, gs, gen, dtype):
    """Blocks of +0.0, of -0.0, mixed signed zeros, and one value among zeros with small negatives."""
    out = torch.zeros(rows, WIDTH, dtype=torch.float64)
    nb = WIDTH // block
    for r in range(rows):
        for b in range(nb):
            sl = slice(b * block, (b + 1) * block)
            kind = (r * nb + b) % 4
            if kind == 1:
                out[r, sl] = -0.0
            elif kind == 2:
                out[r, sl] = torch.where(torch.rand(block, generator=gen) < 0.5, -0.0, 0.0).double()
            elif kind == 3:
                vals = torch.where(torch.rand(block, generator=gen) < 0.5, -0.0, 0.0).double()
                vals[0] = 6.0
                vals[1] = -0.1     # rounds to zero: keeps its sign (code 8) in the oracle
                out[r, sl] = vals
    out[0, 0] = 6.0   # a finite tensor max for the global scale
    return out


def _tiny(rows, block, gs, gen, dtype):
    """NVFP4: block scales that underflow E4M3 (amax / 6 / g < 2**-10) or are subnormal (< 2**-6),
    under g = 1 (the tensor max 2688); MX: amax down to float32's subnormals (scales near 2**-127)."""
    out = torch.zeros(rows, WIDTH, dtype=torch.float64)
    nb = WIDTH // block
    for r in range(rows):
        for b in range(nb):
            sl = slice(b * block, (b + 1) * block)
            if gs:
                s = 2.0 ** (-14 + 9 * float(torch.rand(1, generator=gen)))     # 2**-14 .. 2**-5
            else:
                s = 2.0 ** (-150 + 30 * float(torch.rand(1, generator=gen)))   # 2**-150 .. 2**-120
            vals = torch.randn(block, generator=gen, dtype=torch.float64)
            out[r, sl] = vals / vals.abs().max() * 6 * s
    if gs:
        out[0, :block] = 0
        out[0, 0] = 2688.0
    return out


def _pow2_minus_ulp(rows, block, gs, gen, dtype):
    """Blocks whose amax is one ulp of the input dtype below, exactly at, or one ulp above 2**k or
    6 * 2**k: where floor(log2), ceil(log2(amax / 6)) and the E4M3 rounding turn."""
    out = torch.randn(rows, WIDTH, generator=gen, dtype=torch.float64)
    nb = WIDTH // block
    for r in range(rows):
        for b in range(nb):
            sl = slice(b * block, (b + 1) * block)
            k = int(torch.randint(-8, 9, (1,), generator=gen))
            base = torch.tensor((6.0 if (r + b) % 2 else 1.0) * 2.0**k, dtype=dtype)
            where = (r * nb + b) % 3   # 0: one ulp below, 1: exact, 2: one ulp above
            target = {0: 0.0, 1: float(base), 2: math.inf}[where]
            amax = base if where == 1 else torch.nextafter(base, torch.tensor(target, dtype=dtype))
            out[r, sl] = out[r, sl].clamp(-1, 1) * float(base) * 0.9
            out[r, b * block] = float(amax)
    return out


def _wide(rows, block, gs, gen, dtype):
    """Blocks whose magnitudes span 2**-30 .. 2**10 (random mantissas and signs)."""
    e = torch.rand(rows, WIDTH, generator=gen, dtype=torch.float64) * 40 - 30
    m = 1 + torch.rand(rows, WIDTH, generator=gen, dtype=torch.float64)
    s = torch.where(torch.rand(rows, WIDTH, generator=gen) < 0.5, -1.0, 1.0).double()
    return s * m * torch.exp2(torch.floor(e))


def _nan(rows, block, gs, gen, dtype):
    out = _normal(rows, block, gs, gen, dtype)
    nb = WIDTH // block
    for r in range(rows):
        for b in range(nb):
            if (r + b) % 2 == 0:
                out[r, b * block + int(torch.randint(0, block, (1,), generator=gen))] = math.nan
    return out


def _inf(rows, block, gs, gen, dtype):
    out = _normal(rows, block, gs, gen, dtype)
    nb = WIDTH // block
    for r in range(rows):
        for b in range(nb):
            if (r + b) % 2 == 0:
                i = int(torch.randint(0, block, (1,), generator=gen))
                out[r, b * block + i] = math.inf if (r * nb + b) % 4 == 0 else -math.inf
    return out


INPUT_CLASSES: dict[str, InputClass] = {c.name: c for c in (
    InputClass("normal", "Gaussian rows, scaled by 2**-4 .. 2**4 per row", _normal),
    InputClass("heavy_tailed", "Student's t (2 degrees of freedom): a few large values per block", _heavy),
    InputClass("ties", "every element on an exact E2M1 midpoint of its block's grid; NVFP4 block scales on E4M3 midpoints", _ties),
    InputClass("zeros", "blocks of +0.0, of -0.0, of mixed signed zeros, and a value among zeros with a small negative", _zeros),
    InputClass("tiny_scales", "NVFP4 block scales that underflow or are E4M3 subnormals; MX scales near 2**-127", _tiny),
    InputClass("pow2_minus_ulp", "amax one ulp below, at, or one ulp above 2**k or 6 * 2**k", _pow2_minus_ulp),
    InputClass("wide_range", "blocks spanning 2**-30 .. 2**10", _wide),
    InputClass("nan", "half the blocks hold one NaN", _nan),
    InputClass("inf", "half the blocks hold one +inf or -inf", _inf),
)}
"""Every input class, by name, in the order the data files list them."""


def make_input(name: str, dtype: str, rows: int, block_size: int, global_scaled: bool, seed: int) -> torch.Tensor:
    """The input of one class: `[rows, WIDTH]` of `dtype` (values the dtype cannot hold round or overflow).

    Args:
        name: a key of `INPUT_CLASSES`.
        dtype: `"bfloat16"`, `"float16"` or `"float32"`.
        rows: number of rows.
        block_size: the recipe's block size (16 or 32).
        global_scaled: the recipe has a global scale (NVFP4): grids are built for it.
        seed: generator seed (the same seed gives the same tensor for every peer).
    """
    gen = torch.Generator().manual_seed(seed)
    x = INPUT_CLASSES[name].make(rows, block_size, global_scaled, gen, DTYPES[dtype])
    return x.to(torch.float32).to(DTYPES[dtype])
