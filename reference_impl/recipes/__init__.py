"""The three FP4 KV-cache recipes and their registry.

==================  ==========  ===================  ======================  ===============
name                block size  scale                element rounding        global scale
==================  ==========  ===================  ======================  ===============
``fp4_mx_block16``  16          power of two (byte)  nearest, ties away      none
``nvfp4``           16          FP8 E4M3             nearest, ties to even   float32
``mxfp4``           32          E8M0                 nearest, ties to even   none
==================  ==========  ===================  ======================  ===============

Examples:
    >>> from nvfp4_kvcache.recipes import get_recipe, RECIPES
    >>> sorted(RECIPES)
    ['fp4_mx_block16', 'mxfp4', 'nvfp4']
    >>> get_recipe("mxfp4").block_size
    32
"""

from __future__ import annotations

from nvfp4_kvcache.recipes.base import OUTPUT_DTYPES, FP4Quantized, Recipe
from nvfp4_kvcache.recipes.fp4_mx_block16 import FP4_MX_BLOCK16, FP4MXBlock16
from nvfp4_kvcache.recipes.mxfp4 import MXFP4, MXFP4Recipe
from nvfp4_kvcache.recipes.nvfp4 import GLOBAL_SCALE_CONVENTIONS, NVFP4, NVFP4Recipe, nvfp4_global_scale

__all__ = [
    "FP4Quantized",
    "Recipe",
    "OUTPUT_DTYPES",
    "FP4MXBlock16",
    "NVFP4Recipe",
    "MXFP4Recipe",
    "FP4_MX_BLOCK16",
    "NVFP4",
    "MXFP4",
    "RECIPES",
    "get_recipe",
    "nvfp4_global_scale",
    "GLOBAL_SCALE_CONVENTIONS",
]

RECIPES: dict[str, Recipe] = {r.name: r for r in (FP4_MX_BLOCK16, NVFP4, MXFP4)}
"""Name -> recipe instance."""


def get_recipe(name: str | Recipe) -> Recipe:
    """Look a recipe up by name (a :class:`Recipe` passes through).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown recipe {name!r}; known recipes: {sorted(RECIPES)}") from None
