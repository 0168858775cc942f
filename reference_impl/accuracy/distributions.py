"""Seeded K/V-shaped test data, `float32 [tokens, heads, head_dim]`, chosen to break quantizers.

| name | what it stresses |
|---|---|
| `gaussian` | nothing: N(0, 1), the easy case every scheme is tuned for |
| `laplace` | sharper peak, exponential tails (unit variance) |
| `student_t3` | heavy tails: Student-t with 3 degrees of freedom (rare values 10-30x sigma) |
| `outlier_channels` | keys as real LLMs produce them: a few fixed channels per head carry a large offset and spread (x8 to x20), so one block holds most of a token's energy |
| `rope_keys` | `outlier_channels` after rotary position embedding (NeoX half-split, base 10000): the outliers leak into their partner channels and oscillate with the position |
| `tiny_blocks` | a quarter of the 16-element blocks are 10^4 x smaller than the rest: a per-tensor scale set by the large blocks must still resolve them |
| `small_tensor` | the whole tensor is small (sigma 0.002), as some layers' V are: only a calibrated per-tensor scale avoids the bottom of the scale format |
| `one_huge` | a quarter of the 16-element blocks hold one value 30 to 100x sigma: the other 15 share its scale |

Examples:
    >>> from nvfp4_kvcache.accuracy.distributions import generate, DISTRIBUTIONS
    >>> x = generate("gaussian", tokens=8, heads=2, head_dim=64, seed=0)
    >>> tuple(x.shape), str(x.dtype)
    ((8, 2, 64), 'torch.float32')
    >>> again = generate("gaussian", 8, 2, 64, seed=0)
    >>> bool((again == x).all())  # seeded: reproducible
    True
    >>> len(DISTRIBUTIONS)
    8
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["DISTRIBUTIONS", "generate", "rope_rotate", "outlier_channel_profile"]

BLOCK = 16
"""The block length the block-level distributions act on (NVFP4's and block-16's)."""


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def outlier_channel_profile(heads: int, head_dim: int, seed: int, n_outliers: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, offset) of keys with outlier channels.

    Returns:
        Two `float32 [heads, head_dim]` tensors: most channels have scale 1 and offset 0;
        `n_outliers` random channels per head get a scale in `[8, 20]` and an offset of
        `+-(1 .. 2) x` that scale.

    Examples:
        >>> s, o = outlier_channel_profile(2, 64, seed=0)
        >>> int((s > 1).sum()), float(s.max()) <= 20
        (8, True)
    """
    g = _gen(seed + 1)
    scale = torch.ones(heads, head_dim)
    offset = torch.zeros(heads, head_dim)
    for h in range(heads):
        idx = torch.randperm(head_dim, generator=g)[:n_outliers]
        s = 8 + 12 * torch.rand(n_outliers, generator=g)
        sign = torch.where(torch.rand(n_outliers, generator=g) < 0.5, -1.0, 1.0)
        scale[h, idx] = s
        offset[h, idx] = sign * s * (1 + torch.rand(n_outliers, generator=g))
    return scale, offset


def rope_rotate(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding, NeoX "half-split" layout (channel `i` pairs with `i + D/2`).

    Args:
        x: `float32 [tokens, heads, D]` (`D` even).
        positions: `int64 [tokens]`.
        base: RoPE base (10000 in Llama 2; larger in newer models).

    Returns:
        `float32 [tokens, heads, D]`; norms per (token, head, pair) are preserved.

    Examples:
        >>> import torch
        >>> x = torch.zeros(2, 1, 4); x[:, 0, 0] = 1.0
        >>> y = rope_rotate(x, torch.tensor([0, 1]))
        >>> y[0, 0].tolist()                      # position 0: unchanged
        [1.0, 0.0, 0.0, 0.0]
        >>> round(float(y[1, 0].norm()), 6)       # rotation keeps the norm
        1.0
    """
    d = x.shape[-1]
    half = d // 2
    inv_freq = base ** (-torch.arange(half, dtype=torch.float64) * 2 / d)
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]          # [T, D/2]
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]       # [T, 1, D/2]
    a, b = x[..., :half].double(), x[..., half:].double()
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1).to(torch.float32)


def _gaussian(t, h, d, g):
    return torch.randn(t, h, d, generator=g)


def _laplace(t, h, d, g):
    u = torch.rand(t, h, d, generator=g, dtype=torch.float64) - 0.5
    b = 1 / math.sqrt(2)
    return (-b * torch.sign(u) * torch.log1p(-2 * u.abs())).to(torch.float32)


def _student_t3(t, h, d, g):
    z = torch.randn(t, h, d, generator=g, dtype=torch.float64)
    chi2 = (torch.randn(t, h, d, 3, generator=g, dtype=torch.float64) ** 2).sum(-1)
    return (z / torch.sqrt(chi2 / 3)).to(torch.float32)


def _outliers(t, h, d, g, seed):
    scale, offset = outlier_channel_profile(h, d, seed)
    return torch.randn(t, h, d, generator=g) * scale + offset


def _block_mask(t, h, d, g, p=0.25):
    m = torch.rand(t, h, d // BLOCK, generator=g) < p
    return m.repeat_interleave(BLOCK, dim=-1)


def _tiny_blocks(t, h, d, g):
    x = torch.randn(t, h, d, generator=g)
    return torch.where(_block_mask(t, h, d, g), x * 1e-4, x)


def _one_huge(t, h, d, g):
    x = torch.randn(t, h, d, generator=g)
    nb = d // BLOCK
    has = torch.rand(t, h, nb, generator=g) < 0.25
    pos = torch.randint(0, BLOCK, (t, h, nb), generator=g)
    mag = (30 + 70 * torch.rand(t, h, nb, generator=g)) * torch.where(torch.rand(t, h, nb, generator=g) < 0.5, -1.0, 1.0)
    blocks = x.reshape(t, h, nb, BLOCK)
    onehot = torch.nn.functional.one_hot(pos, BLOCK).bool() & has[..., None]
    return torch.where(onehot, mag[..., None], blocks).reshape(t, h, d)


DISTRIBUTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian": lambda t, h, d, g, s: _gaussian(t, h, d, g),
    "laplace": lambda t, h, d, g, s: _laplace(t, h, d, g),
    "student_t3": lambda t, h, d, g, s: _student_t3(t, h, d, g),
    "outlier_channels": lambda t, h, d, g, s: _outliers(t, h, d, g, s),
    "rope_keys": lambda t, h, d, g, s: rope_rotate(_outliers(t, h, d, g, s), torch.arange(t)),
    "tiny_blocks": lambda t, h, d, g, s: _tiny_blocks(t, h, d, g),
    "small_tensor": lambda t, h, d, g, s: _gaussian(t, h, d, g) * 0.002,
    "one_huge": lambda t, h, d, g, s: _one_huge(t, h, d, g),
}
"""Name -> generator `(tokens, heads, head_dim, torch.Generator, seed) -> float32 tensor`."""


def generate(name: str, tokens: int, heads: int, head_dim: int, seed: int = 0) -> torch.Tensor:
    """Draw `float32 [tokens, heads, head_dim]` from the named distribution.

    Args:
        name: a key of [`DISTRIBUTIONS`][nvfp4_kvcache.accuracy.distributions.DISTRIBUTIONS].
        tokens: first dimension of the shape.
        heads: second dimension.
        head_dim: last dimension (a multiple of 32 for every recipe).
        seed: the same seed gives the same tensor on every machine (CPU generator).

    Raises:
        ValueError: unknown name or a `head_dim` that is not a multiple of 16.

    Examples:
        >>> x = generate("one_huge", 64, 1, 64, seed=1)
        >>> bool(x.abs().max() > 30)
        True
    """
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {name!r}; known: {sorted(DISTRIBUTIONS)}")
    if head_dim % BLOCK:
        raise ValueError(f"head_dim must be a multiple of {BLOCK}, got {head_dim}")
    return DISTRIBUTIONS[name](tokens, heads, head_dim, _gen(seed), seed).contiguous()
