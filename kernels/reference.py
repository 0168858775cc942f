"""PyTorch twins of [`nvfp4_kvcache_triton`][nvfp4_kvcache_triton]: the same signatures and errors, computed by [`nvfp4_kvcache`][nvfp4_kvcache].

`quantize`/`dequantize`/`dequantize_parts` are the oracle itself; `gather_dequantize` and
`store_kv` compose it with plain indexing (`buffer[loc] = ...`), which is what a reference
pool's `set_kv_buffer` does.
"""

from __future__ import annotations

import torch

from nvfp4_kvcache_triton import _checks
from nvfp4_kvcache import dequantize as _dequantize
from nvfp4_kvcache import quantize as _quantize
from nvfp4_kvcache.recipes import FP4Quantized, Recipe, get_recipe

__all__ = ["quantize", "dequantize", "dequantize_parts", "gather_dequantize", "store_kv"]


def quantize(x: torch.Tensor, recipe: str | Recipe, *, global_scale: object = None) -> FP4Quantized:
    """[`nvfp4_kvcache.quantize`][nvfp4_kvcache.quantize]."""
    return _quantize(x, recipe, global_scale=global_scale)


def dequantize(q: FP4Quantized, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[`nvfp4_kvcache.dequantize`][nvfp4_kvcache.dequantize]."""
    return _dequantize(q, dtype)


def dequantize_parts(packed, scales, recipe, global_scale=None, dtype=torch.float32) -> torch.Tensor:
    """`get_recipe(recipe).dequantize_parts(packed, scales, global_scale, dtype)`."""
    return get_recipe(recipe).dequantize_parts(packed, scales, global_scale, dtype)


def gather_dequantize(packed, scales, loc, recipe, global_scale=None, dtype=torch.float32, *, check_slots=True) -> torch.Tensor:
    """Twin of [`nvfp4_kvcache_triton.gather_dequantize`][nvfp4_kvcache_triton.gather_dequantize]: `dequantize_parts(packed[loc], scales[loc])`."""
    r = get_recipe(recipe)
    h, d = _checks.check_pool_layer(r, packed, scales, "pool")
    _checks.check_loc(loc, None, packed.device)
    if check_slots:
        _checks.check_slots(loc, packed.shape[0], unique=False)
    n = loc.numel()
    return r.dequantize_parts(packed[loc.long()], scales[loc.long()].reshape(n, h, d // r.block_size),
                              global_scale, dtype)


def store_kv(k, v, loc, k_data, v_data, k_scales, v_scales, recipe, k_global_scale=None, v_global_scale=None,
             *, check_slots=True):
    """Twin of [`nvfp4_kvcache_triton.store_kv`][nvfp4_kvcache_triton.store_kv]: reference quantize, then `buffer[loc] = ...`."""
    r = get_recipe(recipe)
    gk, gv = _checks.check_store_call(r, k, v, loc, k_data, v_data, k_scales, v_scales,
                                      k_global_scale, v_global_scale, check_slots)
    idx = loc.long()
    for x, g, data, scales in ((k, gk, k_data, k_scales), (v, gv, v_data, v_scales)):
        q = r.quantize(x, g)
        data[idx] = q.packed
        scales[idx] = q.scales.reshape(scales[idx].shape)
