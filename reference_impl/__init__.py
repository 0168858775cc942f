"""nvfp4-kvcache reference implementation: the bit-exact, pure-PyTorch oracle for FP4 KV caches.

The package is organised the way the data flows:

* [`nvfp4_kvcache.formats`][nvfp4_kvcache.formats]: E2M1, E4M3 and E8M0, each defined once;
* [`nvfp4_kvcache.rounding`][nvfp4_kvcache.rounding]: the named rounding modes;
* [`nvfp4_kvcache.packing`][nvfp4_kvcache.packing]: two codes per byte, even element in the low nibble;
* [`nvfp4_kvcache.recipes`][nvfp4_kvcache.recipes]: `fp4_mx_block16`, `nvfp4`, `mxfp4`;
* [`nvfp4_kvcache.sglang`][nvfp4_kvcache.sglang]: drop-in replacements for SGLang's quantizer classes.

Examples:
    >>> import torch
    >>> import nvfp4_kvcache as ri
    >>> x = torch.randn(4, 8, 128, dtype=torch.bfloat16)
    >>> q = ri.quantize(x, "fp4_mx_block16")
    >>> q.packed.shape, q.scales.shape
    (torch.Size([4, 8, 64]), torch.Size([4, 8, 8]))
    >>> ri.dequantize(q, dtype=torch.bfloat16).shape
    torch.Size([4, 8, 128])
"""

from __future__ import annotations

import torch

from nvfp4_kvcache.recipes import (
    FP4Quantized,
    Recipe,
    RECIPES,
    get_recipe,
    nvfp4_global_scale,
)

__all__ = ["quantize", "dequantize", "get_recipe", "RECIPES", "FP4Quantized", "Recipe", "nvfp4_global_scale"]
__version__ = "0.1.0"


def quantize(x: torch.Tensor, recipe: str | Recipe, *, global_scale: object = None) -> FP4Quantized:
    """Quantize `x[..., N]` with a recipe (`N` a multiple of its block size).

    Args:
        x: `float32`, `bfloat16` or `float16` tensor on any device.
        recipe: `"fp4_mx_block16"`, `"nvfp4"` or `"mxfp4"` (or a [`Recipe`][nvfp4_kvcache.Recipe]).
        global_scale: `nvfp4` only: the `float32` decode multiplier
            (see [`nvfp4_global_scale`][nvfp4_kvcache.recipes.nvfp4_global_scale]).

    Returns:
        [`FP4Quantized`][nvfp4_kvcache.recipes.FP4Quantized].
    """
    return get_recipe(recipe).quantize(x, global_scale)


def dequantize(q: FP4Quantized, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode a [`FP4Quantized`][nvfp4_kvcache.recipes.FP4Quantized] with the recipe that made it."""
    return get_recipe(q.recipe).dequantize(q, dtype)
