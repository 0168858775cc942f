"""Element-level error of a quantized tensor `xq` against its reference `x`.

All metrics are computed in `float64` from the two tensors as given (the lab passes the
BF16-rounded K/V as `x` and the dequantized cache as `xq`).

* **SQNR** (signal-to-quantization-noise ratio), in dB:
  $10 \\log_{10}(\\sum x^2 / \\sum (x - x_q)^2)$; `inf` when `xq == x` exactly.
  Each bit of a uniform quantizer is worth about 6.02 dB.
* **relative L2**: $\\lVert x - x_q \\rVert_2 / \\lVert x \\rVert_2$ (`= 10**(-SQNR/20)`).
* **max error**: $\\max |x - x_q|$.
* **flushed-to-zero fraction**: the share of nonzero `x` whose `xq` is exactly 0.
* **per block** / **per channel**: SQNR of each block of `block` consecutive elements of the
  last dimension, or of each index of the last dimension over all other dimensions.

Examples:
    >>> import torch
    >>> x = torch.tensor([3.0, 4.0, 0.0, 1.0])
    >>> xq = torch.tensor([3.0, 4.0, 0.0, 0.0])
    >>> round(sqnr_db(x, xq), 4)                 # 26 / 1
    14.1497
    >>> relative_l2(x, xq) == 1 / 26 ** 0.5
    True
    >>> max_abs_error(x, xq), flush_to_zero_fraction(x, xq)
    (1.0, 0.3333333333333333)
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "sqnr_db",
    "relative_l2",
    "max_abs_error",
    "flush_to_zero_fraction",
    "per_block_sqnr_db",
    "per_channel_sqnr_db",
    "element_errors",
]


def _pair(x: torch.Tensor, xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not isinstance(xq, torch.Tensor):
        raise TypeError("x and xq must be tensors")
    if x.shape != xq.shape:
        raise ValueError(f"x and xq must have the same shape, got {tuple(x.shape)} and {tuple(xq.shape)}")
    return x.detach().to(torch.float64), xq.detach().to(torch.float64)


def _db(signal: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`10 log10(signal / noise)` elementwise; `inf` where noise is 0 (`0/0` counts as exact)."""
    out = 10 * torch.log10(signal / noise)
    return torch.where(noise == 0, torch.full_like(out, math.inf), out)


def sqnr_db(x: torch.Tensor, xq: torch.Tensor) -> float:
    """SQNR in dB over the whole tensor.

    Args:
        x: reference, any float dtype and shape.
        xq: quantized version, same shape.

    Returns:
        `float`; `inf` when `xq` equals `x`, `-inf` when `x` is all zero and `xq` not.

    Examples:
        >>> import torch
        >>> sqnr_db(torch.ones(8), torch.ones(8))
        inf
        >>> round(sqnr_db(torch.tensor([10.0]), torch.tensor([9.0])), 6)   # 100 / 1
        20.0
    """
    a, b = _pair(x, xq)
    return float(_db((a * a).sum(), ((a - b) ** 2).sum()))


def relative_l2(x: torch.Tensor, xq: torch.Tensor) -> float:
    """`||x - xq|| / ||x||` (`float`; `inf` for an all-zero `x` with `xq != x`, 0 if equal).

    Examples:
        >>> import torch
        >>> relative_l2(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0]))
        0.2
    """
    a, b = _pair(x, xq)
    err, ref = torch.linalg.vector_norm(a - b), torch.linalg.vector_norm(a)
    if err == 0:
        return 0.0
    return float(err / ref) if ref > 0 else math.inf


def max_abs_error(x: torch.Tensor, xq: torch.Tensor) -> float:
    """`max |x - xq|` (`float`; 0 for empty tensors).

    Examples:
        >>> import torch
        >>> max_abs_error(torch.tensor([1.0, -2.0]), torch.tensor([1.5, -4.0]))
        2.0
    """
    a, b = _pair(x, xq)
    return float((a - b).abs().max()) if a.numel() else 0.0


def flush_to_zero_fraction(x: torch.Tensor, xq: torch.Tensor) -> float:
    """Share of the nonzero reference values that the quantizer turned into exactly 0.

    Returns:
        `float` in `[0, 1]`; 0 when `x` has no nonzero value.

    Examples:
        >>> import torch
        >>> flush_to_zero_fraction(
        ...     torch.tensor([0.0, 1e-3, 2.0, 3.0]), torch.tensor([0.0, 0.0, 2.0, 0.0])
        ... )
        0.6666666666666666
    """
    a, b = _pair(x, xq)
    nonzero = a != 0
    n = int(nonzero.sum())
    return float(((b == 0) & nonzero).sum()) / n if n else 0.0


def per_block_sqnr_db(x: torch.Tensor, xq: torch.Tensor, block: int = 16) -> torch.Tensor:
    """SQNR of every block of `block` consecutive elements of the last dimension.

    Args:
        x: `[..., N]` with `N % block == 0`.
        xq: same shape.
        block: block length (16 for NVFP4 and block-16, 32 for MXFP4).

    Returns:
        `float64 [..., N // block]`; `inf` for exact blocks (all-zero blocks included),
        `-inf` for an all-zero block that did not stay zero.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[1.0, 1.0, 2.0, 0.0]])
        >>> per_block_sqnr_db(x, torch.tensor([[1.0, 1.0, 1.0, 0.0]]), block=2).tolist()
        [[inf, 6.020599913279624]]
    """
    a, b = _pair(x, xq)
    if a.dim() == 0 or a.shape[-1] % block:
        raise ValueError(f"last dimension must be a multiple of block={block}, got shape {tuple(a.shape)}")
    a = a.reshape(*a.shape[:-1], -1, block)
    b = b.reshape(*b.shape[:-1], -1, block)
    return _db((a * a).sum(-1), ((a - b) ** 2).sum(-1))


def per_channel_sqnr_db(x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """SQNR of each channel (index of the last dimension) over all other dimensions.

    Returns:
        `float64 [N]`.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
        >>> per_channel_sqnr_db(x, torch.tensor([[1.0, 2.0], [1.0, 0.0]])).tolist()
        [inf, 3.010299956639812]
    """
    a, b = _pair(x, xq)
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return _db((a * a).sum(0), ((a - b) ** 2).sum(0))


def _finite_stat(t: torch.Tensor, fn) -> float:
    finite = t[torch.isfinite(t)]
    if finite.numel() == 0:
        return math.inf if bool((t == math.inf).all()) else -math.inf
    return float(fn(finite))


def element_errors(x: torch.Tensor, xq: torch.Tensor, block: int = 16) -> dict[str, float]:
    """Every element-level metric at once, as plain floats (for JSON).

    Args:
        x: reference `[..., N]`.
        xq: quantized, same shape.
        block: block length of the per-block statistics.

    Returns:
        dict with `sqnr_db`, `rel_l2`, `max_abs_err`, `max_rel_err` (max error over
        `max |x|`), `ftz_fraction`, `block_sqnr_db_p1` (the 1st percentile of per-block SQNR,
        exact blocks left out, `inf` if all are exact), `block_sqnr_db_min`,
        `channel_sqnr_db_min` and `channel_sqnr_db_median` (channels that are exact left out).

    Examples:
        >>> import torch
        >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> e = element_errors(x, x, block=2)
        >>> e["sqnr_db"], e["rel_l2"], e["block_sqnr_db_min"], e["ftz_fraction"]
        (inf, 0.0, inf, 0.0)
    """
    blocks = per_block_sqnr_db(x, xq, block).reshape(-1)
    channels = per_channel_sqnr_db(x, xq)
    amax = float(x.detach().abs().max()) if x.numel() else 0.0
    mae = max_abs_error(x, xq)
    return {
        "sqnr_db": sqnr_db(x, xq),
        "rel_l2": relative_l2(x, xq),
        "max_abs_err": mae,
        "max_rel_err": mae / amax if amax > 0 else (0.0 if mae == 0 else math.inf),
        "ftz_fraction": flush_to_zero_fraction(x, xq),
        "block_sqnr_db_p1": _finite_stat(blocks, lambda t: torch.quantile(t, 0.01)),
        "block_sqnr_db_min": float(blocks.min()) if blocks.numel() else math.inf,
        "channel_sqnr_db_min": float(channels.min()) if channels.numel() else math.inf,
        "channel_sqnr_db_median": _finite_stat(channels, torch.median),
    }
