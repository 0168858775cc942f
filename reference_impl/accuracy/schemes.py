"""Every KV-cache scheme the lab compares, as a fake-quantizer: quantize, then dequantize.

A scheme maps K or V of one layer, `x[..., N]` (channels last; the lab rounds it to BF16
first, as an unquantized cache would hold it), and that tensor's calibration `amax` to the
`float32` values attention would read back.

* `fp8_e4m3/scale1`: FP8 E4M3 with per-tensor scale 1.0 (no checkpoint scales), 8 bits;
* `fp8_e4m3/calibrated`: FP8 E4M3 with per-tensor scale `amax / 448`, 8 bits;
* `int4_g32`: INT4 asymmetric per token group of 32, float16 min and step, 5 bits;
* one scheme per FP4 recipe of `RECIPES` without a global scale, named after the recipe;
* three per recipe with a global scale: `NAME/g1` (global scale 1.0, SGLang's default),
  `NAME/amax6x448` (`g = amax / (6 * 448)`, the generic NVFP4 convention) and `NAME/amax448`
  (`g = amax / 448`, the KV-cache convention).

The FP4 schemes' labels, blocks and bits per value are read off the recipes; the Accuracy
chapter's scheme table is generated from this registry.

The bits count the scales (one byte per block, 2 x 16 bits per INT4 group) but not the
per-tensor `float32` scales.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.accuracy.schemes import SCHEMES
    >>> list(SCHEMES)[:3]
    ['fp8_e4m3/scale1', 'fp8_e4m3/calibrated', 'int4_g32']
    >>> x = torch.tensor([[0.5, -1.0, 2.0, 6.0] * 8])  # on the E2M1 grid with scale 1
    >>> bool((SCHEMES["mxfp4"].fake_quantize(x) == x).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from nvfp4_kvcache.accuracy.baselines import fp8_e4m3_fake_quantize, int4_bits_per_value, int4_group_fake_quantize
from nvfp4_kvcache.formats import E4M3_MAX
from nvfp4_kvcache.recipes import RECIPES, Recipe, nvfp4_global_scale

__all__ = ["Scheme", "SCHEMES", "FP4_SCHEMES", "bf16_round"]


def bf16_round(x: torch.Tensor) -> torch.Tensor:
    """What a BF16 cache holds: `x` rounded to `bfloat16` (RNE), returned as `float32`.

    Examples:
        >>> import torch
        >>> bf16_round(torch.tensor([1.0 + 2.0 ** -9])).item()    # 8 significant bits
        1.0
    """
    return x.detach().to(torch.bfloat16).to(torch.float32)


@dataclass(frozen=True)
class Scheme:
    """One KV-cache storage scheme.

    Attributes:
        name: registry key (used in the JSON files and on the page).
        label: short human-readable description.
        bits_per_value: storage per element, block scales included.
        block: elements sharing one scale along the last dimension (for per-block statistics).
        uses_amax: whether the per-tensor calibration `amax` matters.
        fn: `(x float32 [..., N], amax float32 0-d) -> float32 [..., N]`.
    """

    name: str
    label: str
    bits_per_value: float
    block: int
    uses_amax: bool
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)

    def fake_quantize(self, x: torch.Tensor, amax: float | torch.Tensor | None = None) -> torch.Tensor:
        """Quantize `x[..., N]` and read it back as `float32`.

        Args:
            x: float tensor, channels last (`N` a multiple of `block`).
            amax: calibration maximum of `|x|` for the per-tensor scale; default `max |x|`.
                Values above it saturate in the schemes whose scale depends on it.

        Returns:
            `float32` tensor of `x`'s shape.
        """
        x32 = x.detach().to(torch.float32)
        a = x32.abs().amax() if amax is None else torch.as_tensor(amax, dtype=torch.float32)
        if self.uses_amax and not bool(torch.isfinite(a) and a > 0):
            raise ValueError(f"{self.name}: calibration amax must be positive and finite, got {float(a)}")
        return self.fn(x32, a)


def _fp4(r: Recipe):
    return lambda x, amax: r.dequantize(r.quantize(x))


_CONVENTIONS: dict[str, tuple[str | None, str]] = {
    "g1": (None, "global scale 1.0 (default)"),
    "amax6x448": ("amax/(6*448)", "g = amax/(6*448)"),
    "amax448": ("amax/448", "g = amax/448"),
}
"""Scheme suffix -> (global-scale convention, label) for recipes with a global scale."""


def _two_level(r: Recipe, convention: str | None):
    def fn(x, amax):
        g = torch.tensor(1.0) if convention is None else nvfp4_global_scale(amax, convention)
        return r.dequantize(r.quantize(x, g))

    return fn


def _recipe_schemes(r: Recipe) -> list[Scheme]:
    if r.global_scale is None:
        return [Scheme(r.name, r.label, r.bits_per_value, r.block_size, False, _fp4(r))]
    return [Scheme(f"{r.name}/{suffix}", f"{r.label}, {label}", r.bits_per_value, r.block_size,
                   convention is not None, _two_level(r, convention))
            for suffix, (convention, label) in _CONVENTIONS.items()]


_BASELINES = [
    Scheme("fp8_e4m3/scale1", "FP8 E4M3, per-tensor scale 1.0", 8.0, 1, False,
           lambda x, a: fp8_e4m3_fake_quantize(x, 1.0)),
    Scheme("fp8_e4m3/calibrated", "FP8 E4M3, per-tensor scale amax/448", 8.0, 1, True,
           lambda x, a: fp8_e4m3_fake_quantize(x, a / E4M3_MAX)),
    Scheme("int4_g32", "INT4 asymmetric, group of 32 channels per token", int4_bits_per_value(32), 32, False,
           lambda x, a: int4_group_fake_quantize(x, 32)),
]
_FP4 = [s for r in sorted(RECIPES.values(), key=lambda r: r.global_scale is not None) for s in _recipe_schemes(r)]

SCHEMES: dict[str, Scheme] = {s.name: s for s in _BASELINES + _FP4}
"""Name -> [`Scheme`][nvfp4_kvcache.accuracy.schemes.Scheme], in the order tables list them (the
single-level recipes first)."""

FP4_SCHEMES: tuple[str, ...] = tuple(s.name for s in _FP4)
"""The 4-bit floating-point schemes (the recipes under their scale choices)."""
