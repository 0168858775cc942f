"""The FP4 KV-cache recipes and their registry.

Each recipe is one frozen [`Recipe`][nvfp4_kvcache.recipes.base.Recipe] declared in its own
module, next to the per-block rule it runs. The Format chapter's side-by-side table of the
recipes is generated from these objects.

Adding a recipe: write its module (the rule and one `Recipe`), list it in `_ALL` below, give its
`kernel_id` a branch in the Triton quantize kernel, and add its named cases.

Examples:
    >>> from nvfp4_kvcache.recipes import get_recipe, RECIPES
    >>> sorted(RECIPES)
    ['fp4_mx_block16', 'mxfp4', 'mxfp4_rceil', 'nvfp4', 'nvfp4_4over6']
    >>> get_recipe("mxfp4").block_size, get_recipe("mxfp4").bits_per_value
    (32, 4.25)
    >>> [r.name for r in RECIPES.values() if r.global_scale is not None]
    ['nvfp4', 'nvfp4_4over6']
"""

from __future__ import annotations

from nvfp4_kvcache.recipes.base import (
    OUTPUT_DTYPES,
    FP4Quantized,
    GlobalScale,
    PoolScaleLayout,
    Recipe,
    ScaleRule,
)
from nvfp4_kvcache.recipes.fp4_mx_block16 import FP4_MX_BLOCK16
from nvfp4_kvcache.recipes.mxfp4 import MXFP4
from nvfp4_kvcache.recipes.mxfp4_rceil import MXFP4_RCEIL
from nvfp4_kvcache.recipes.nvfp4 import GLOBAL_SCALE_CONVENTIONS, NVFP4, nvfp4_global_scale
from nvfp4_kvcache.recipes.nvfp4_4over6 import NVFP4_4OVER6

__all__ = [
    "FP4Quantized",
    "Recipe",
    "ScaleRule",
    "GlobalScale",
    "PoolScaleLayout",
    "OUTPUT_DTYPES",
    "FP4_MX_BLOCK16",
    "NVFP4",
    "MXFP4",
    "MXFP4_RCEIL",
    "NVFP4_4OVER6",
    "RECIPES",
    "POOL_RECIPES",
    "get_recipe",
    "nvfp4_global_scale",
    "GLOBAL_SCALE_CONVENTIONS",
]

_ALL: tuple[Recipe, ...] = (FP4_MX_BLOCK16, NVFP4, MXFP4, MXFP4_RCEIL, NVFP4_4OVER6)

RECIPES: dict[str, Recipe] = {r.name: r for r in _ALL}
"""Name -> recipe, in the order tables list them."""

POOL_RECIPES: tuple[str, ...] = tuple(r.name for r in _ALL if r.pool_scale_layout is not None)
"""Recipes a KV pool stores: those that declare a pool scale layout."""

if len({r.kernel_id for r in _ALL}) != len(_ALL):  # pragma: no cover - a declaration error
    raise RuntimeError(f"recipe kernel ids must be unique: {[(r.name, r.kernel_id) for r in _ALL]}")


def get_recipe(name: str | Recipe) -> Recipe:
    """Look a recipe up by name (a [`Recipe`][nvfp4_kvcache.recipes.base.Recipe] passes through).

    Args:
        name: a key of [`RECIPES`][nvfp4_kvcache.recipes.RECIPES], or a recipe.

    Returns:
        The recipe.

    Raises:
        ValueError: unknown name; the message lists the known ones.

    Examples:
        >>> get_recipe("nvfp4").scale.name
        'E4M3'
    """
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown recipe {name!r}; known recipes: {sorted(RECIPES)}") from None
