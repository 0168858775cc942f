"""Triton kernels for FP4 KV caches: bit for bit [`nvfp4_kvcache`][nvfp4_kvcache], at memory speed.

Every recipe of `nvfp4_kvcache.recipes.RECIPES`. Each function here has a PyTorch twin of the
same signature in [`nvfp4_kvcache_triton.reference`][nvfp4_kvcache_triton.reference], and the same tests run against both.

Examples:
    >>> import torch, nvfp4_kvcache_triton, nvfp4_kvcache as ri
    >>> x = torch.randn(3, 2, 64, dtype=torch.bfloat16)      # [tokens, heads, head_dim]
    >>> q = nvfp4_kvcache_triton.quantize(  # needs CUDA or TRITON_INTERPRET=1
    ...     x, "fp4_mx_block16"
    ... )
    >>> r = ri.quantize(x, "fp4_mx_block16")
    >>> torch.equal(q.packed, r.packed) and torch.equal(q.scales, r.scales)
    True
"""

from nvfp4_kvcache_triton.launch import dequantize, dequantize_parts, gather_dequantize, quantize, store_kv

__all__ = ["quantize", "dequantize", "dequantize_parts", "gather_dequantize", "store_kv"]
