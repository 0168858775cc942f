"""The non-FP4 baselines: FP8 E4M3 with one scale per tensor, and INT4 asymmetric per token group.

**FP8 E4M3, per tensor** (`--kv-cache-dtype fp8_e4m3` in SGLang and vLLM): one `float32`
scale `s` per layer for K and one for V; the cache stores `E4M3(x / s)` and attention reads
`E4M3 * s`. The scale comes from the checkpoint (`k_scale`/`v_scale`, usually
`amax / 448` from calibration) or defaults to 1.0 when there is none. The cast rounds to
nearest even; values beyond +-448 saturate here (we clamp before the cast), and values below
`2**-10` flush to zero.

**INT4 asymmetric, per token group** (the value-cache scheme of KIVI, arXiv 2402.02750, which
groups 32 channels of one token; LMDeploy's `quant_policy=4` uses one group per token and
head): every group of `group` consecutive channels of one token gets a minimum `m` and a
step `d = (max - m) / 15`, both stored in `float16`; the codes are
`q = clamp(round_half_even((x - m) / d), 0, 15)` and decode to `q * d + m`. With the
parameters stored exactly, every element is within `d / 2` of its value. Storage:
`4 + 2 * 16 / group` bits per value (5 for `group = 32`).

Examples:
    >>> import torch
    >>> fp8_e4m3_fake_quantize(torch.tensor([1.0, 300.0, 1000.0]), scale=1.0).tolist()
    [1.0, 288.0, 448.0]
    >>> x = torch.tensor([[0.0, 1.0, 2.0, 15.0]])
    >>> int4_group_fake_quantize(  # step 1: exact
    ...     x, group=4, param_dtype=torch.float32
    ... ).tolist()
    [[0.0, 1.0, 2.0, 15.0]]
"""

from __future__ import annotations

import torch

from nvfp4_kvcache.formats import E4M3_MAX

__all__ = ["fp8_e4m3_fake_quantize", "int4_group_fake_quantize", "int4_bits_per_value", "INT4_LEVELS"]

INT4_LEVELS = 15
"""Largest unsigned 4-bit code: the range `[min, max]` is cut into 15 steps."""


def fp8_e4m3_fake_quantize(x: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Per-tensor FP8 E4M3: `E4M3(clamp(x / scale, -448, 448)) * scale`, computed in `float32`.

    Args:
        x: float tensor, any shape.
        scale: positive per-tensor scale (1.0 = the default when a checkpoint has none;
            `amax / 448` = calibrated).

    Returns:
        `float32` tensor of `x`'s shape.

    Examples:
        >>> import torch
        >>> fp8_e4m3_fake_quantize(  # 1e-4 < 2**-10 flushes
        ...     torch.tensor([1e-4, 0.1]), scale=1.0
        ... ).tolist()
        [0.0, 0.1015625]
        >>> y = fp8_e4m3_fake_quantize(torch.tensor([1e-4]), scale=1e-4 / 448 * 4)
        >>> y.tolist() != [0.0]
        True
    """
    s = torch.as_tensor(scale, dtype=torch.float32)
    if not bool(torch.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    y = (x.detach().to(torch.float32) / s).clamp(-E4M3_MAX, E4M3_MAX)
    return y.to(torch.float8_e4m3fn).to(torch.float32) * s


def int4_group_fake_quantize(
    x: torch.Tensor, group: int = 32, param_dtype: torch.dtype = torch.float16
) -> torch.Tensor:
    """INT4 asymmetric quantization of every `group` consecutive elements of the last dimension.

    Args:
        x: float tensor `[..., N]` with `N % group == 0` (one token's channels last).
        group: channels per group (32 as in KIVI; `head_dim` for LMDeploy's per-head scheme).
        param_dtype: dtype the per-group minimum and step are stored in (`float16` as in the
            engines; `float32` gives the textbook half-step error bound exactly).

    Returns:
        `float32 [..., N]`: the dequantized values.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[0.0, 0.5, 1.0, 1.5]])  # step 1.5 / 15 = 0.1: all on the grid
        >>> int4_group_fake_quantize(x, group=4, param_dtype=torch.float32).tolist()
        [[0.0, 0.5, 1.0, 1.5]]
        >>> int4_group_fake_quantize(
        ...     torch.tensor([[0.0, 0.25, 0.75, 7.5]]), group=4, param_dtype=torch.float32
        ... ).tolist()  # step 0.5: 0.5 and 1.5 steps tie to even
        [[0.0, 0.0, 1.0, 7.5]]
    """
    if x.dim() == 0 or x.shape[-1] % group:
        raise ValueError(f"last dimension must be a multiple of group={group}, got shape {tuple(x.shape)}")
    g = x.detach().to(torch.float32).reshape(*x.shape[:-1], -1, group)
    mn = g.amin(-1, keepdim=True).to(param_dtype).to(torch.float32)
    step = ((g.amax(-1, keepdim=True) - mn) / INT4_LEVELS).to(param_dtype).to(torch.float32)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    q = torch.round((g - mn) / safe).clamp(0, INT4_LEVELS)
    out = torch.where(step > 0, q * step + mn, mn.expand_as(g))
    return out.reshape(x.shape)


def int4_bits_per_value(group: int, param_bits: int = 16) -> float:
    """Storage per element: 4 bits plus a minimum and a step of `param_bits` each per group.

    Examples:
        >>> int4_bits_per_value(32), int4_bits_per_value(128)
        (5.0, 4.25)
    """
    return 4 + 2 * param_bits / group
