"""Triton kernels for FP4 KV caches: bit for bit :mod:`reference_impl`, at memory speed.

Recipes ``nvfp4``, ``fp4_mx_block16`` and ``mxfp4``. Each function here has a PyTorch twin of the
same signature in :mod:`kernels.reference`, and the same tests run against both.

Examples:
    >>> import torch, kernels, reference_impl as ri
    >>> x = torch.randn(3, 2, 64, dtype=torch.bfloat16)      # [tokens, heads, head_dim]
    >>> q = kernels.quantize(x, "fp4_mx_block16")             # needs CUDA or TRITON_INTERPRET=1
    >>> r = ri.quantize(x, "fp4_mx_block16")
    >>> torch.equal(q.packed, r.packed) and torch.equal(q.scales, r.scales)
    True
"""

from kernels.launch import dequantize, dequantize_parts, gather_dequantize, quantize, store_kv

__all__ = ["quantize", "dequantize", "dequantize_parts", "gather_dequantize", "store_kv"]
