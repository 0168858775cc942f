"""Named inputs for the kernel tests: random data of many shapes and every special the recipes define.

Each builder returns float32 values shaped ``[rows, row_len]`` (``row_len`` a multiple of 32, so
one tensor serves the block-16 and block-32 recipes); the tests cast them to the input dtype.
"""

from __future__ import annotations

import math

import torch

from nvfp4_kvcache.formats import E2M1, E4M3

__all__ = ["random_blocks", "special_blocks", "e4m3_sweep_blocks", "block16_boundary_amax", "equal_values"]


def random_blocks(shape, dtype, seed: int, device="cpu") -> torch.Tensor:
    """Normal values with a per-32-block log-normal magnitude (1e-12 .. 1e12), so scales vary."""
    gen = torch.Generator().manual_seed(seed)
    n = shape[-1]
    x = torch.randn(*shape, generator=gen)
    if n % 32 == 0 and x.numel():
        mag = torch.exp(torch.randn(*shape[:-1], n // 32, 1, generator=gen) * 6.0)
        x = (x.reshape(*shape[:-1], n // 32, 32) * mag).reshape(shape)
    finfo = torch.finfo(dtype)
    return x.clamp(-finfo.max, finfo.max).to(dtype).to(device)


def _grid_values() -> list[float]:
    """All 16 E2M1 values and all 7 midpoints, signed, plus points just beside each midpoint."""
    mags = list(E2M1.magnitudes)
    mids = [(a + b) / 2 for a, b in zip(mags, mags[1:])]
    near = [math.nextafter(m, 0.0) for m in mids] + [math.nextafter(m, 10.0) for m in mids]
    vals = mags + mids + near + [6.5, 7.0, 7.99, 8.0, 100.0]
    return vals + [-v for v in vals]


def special_blocks() -> torch.Tensor:
    """``[rows, 32]`` float32: ties, all codes, zeros, -0, subnormals, Inf, NaN, values past the max.

    Row by row (each row is one 32-block and two 16-blocks):

    * every E2M1 value and midpoint (ties), scaled by powers of two from 2**-140 to 2**120, with
      the block max 6 (fp4_mx_block16's scale is then exactly 2**e) or 4 (mxfp4's 2**s) times it;
    * zeros, -0.0, a lone -0.0 among zeros, tiny negatives that round to zero;
    * float32 subnormals (2**-149 ... 2**-127), blocks whose max is subnormal;
    * +-Inf alone, Inf with finite values, NaN alone, NaN with Inf, values past E2M1 and E4M3 max;
    * float32 max and near-max.
    """
    rows: list[list[float]] = []
    vals = _grid_values()

    def pad(r):
        r = list(r)[:32]
        return r + [0.0] * (32 - len(r))

    for p in list(range(-140, 121, 13)) + [-126, -127, -3, 0, 1, 2, 100, 125]:
        s = 2.0**p
        for lead in (6.0, 4.0, 7.5):
            for start in range(0, len(vals), 15):
                chunk = [v * s for v in vals[start:start + 15]]
                rows.append(pad([lead * s] + chunk[:15] + [lead * s] + chunk[:15]))
    tiny = [2.0**-149, 2.0**-148, 3 * 2.0**-149, 2.0**-130, 2.0**-127, 2.0**-126, 1.5 * 2.0**-126]
    rows += [
        [0.0] * 32,
        [-0.0] * 32,
        [0.0] * 5 + [-0.0] + [0.0] * 26,
        [1.0, -1e-9, -0.0, 1e-9] * 8,
        [6.0, -0.2, -0.25, -0.26, 0.24, 0.25, 0.26] + [-1e-30] * 25,
        pad(tiny + [-t for t in tiny]),
        pad([t * 1024 for t in tiny] + [-t for t in tiny]),
        pad([math.inf] + [1.0] * 31),
        pad([-math.inf, 3.0, -2.0]),
        pad([math.inf, -math.inf]),
        pad([math.nan]),
        pad([math.nan, math.inf, 1.0]),
        pad([1.0] * 16 + [math.nan] + [2.0] * 15),
        pad([1.0] * 16 + [-math.inf] + [2.0] * 15),
        pad([1e38, -3.4028234663852886e38, 1.0, -2.0, 448.0 * 6, 448.0 * 6.5, 65504.0, 65520.0]),
        pad([3.4028234663852886e38] * 3 + [1e30]),
        pad([500.0, 464.0, 449.0, 448.0, 447.0, 480.0]),
        pad([2688.0, 2688.0 * 1.03, 2688.0 * 1.04, 6.0 * 2.0**-6, 6.0 * 2.0**-9, 6.0 * 2.0**-10, 6.0 * 2.0**-11]),
    ]
    return torch.tensor(rows, dtype=torch.float32)


def e4m3_sweep_blocks() -> torch.Tensor:
    """``[rows, 16]``: for every finite E4M3 value and midpoint ``m``, a block whose max is ``6 m``
    nudged by -3..+3 float32 ulps, so nvfp4's block scale lands on, or beside, every E4M3 value and
    tie. The other 15 elements walk the E2M1 grid."""
    mags = list(E4M3.magnitudes)
    targets = mags[1:] + [(a + b) / 2 for a, b in zip(mags, mags[1:])] + [464.0, 500.0]
    body = [v for v in _grid_values() if abs(v) <= 6][:15]
    rows = []
    for t in targets:
        a = torch.tensor(6.0 * t, dtype=torch.float32)
        for k in range(-3, 4):
            ak = a.clone()
            for _ in range(abs(k)):
                ak = torch.nextafter(ak, torch.tensor(math.inf if k > 0 else 0.0))
            rows.append([ak.item()] + [b * t for b in body])
    return torch.tensor(rows, dtype=torch.float32)


def block16_boundary_amax(max_mantissa: int = 40) -> torch.Tensor:
    """float32 ratios ``2**k * (1 + M * 2**-23)`` for every ``k`` in [-126, 127] and ``M`` in
    ``0..max_mantissa`` plus a few large ``M``: where ``ceil(fl32(log2))`` turns from ``k`` to ``k+1``."""
    ks = torch.arange(-126, 128, dtype=torch.int32)
    ms = torch.cat([torch.arange(0, max_mantissa + 1), torch.tensor([1000, 1 << 20, (1 << 23) - 1])]).to(torch.int32)
    bits = ((ks[:, None] + 127) << 23) | ms[None, :]
    return bits.reshape(-1).view(torch.float32)


def equal_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype and shape, same bits everywhere, except that any NaN equals any NaN."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.cpu(), b.cpu()
    na, nb = torch.isnan(a), torch.isnan(b)
    if not torch.equal(na, nb):
        return False
    ints = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16,
            torch.float16: torch.int16}[a.dtype]
    return torch.equal(a[~na].view(ints), b[~nb].view(ints))
