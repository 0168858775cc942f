"""Reference FP4 KV pools in SGLang's vocabulary: the way a serving engine stores an FP4 KV cache.

* [`MHATokenToKVPoolFP4`][nvfp4_kvcache.pool.MHATokenToKVPoolFP4]: per layer, packed K and V plus separate scale buffers, by slot;
* [`MLATokenToKVPoolFP4`][nvfp4_kvcache.pool.MLATokenToKVPoolFP4]: DeepSeek-style latent (NoPE + RoPE, quantized separately);
* [`nvfp4_kvcache.pool.layout`][nvfp4_kvcache.pool.layout]: their shapes and byte counts, without allocating;
* [`nvfp4_kvcache.pool.flashinfer`][nvfp4_kvcache.pool.flashinfer]: FlashInfer's page-major NVFP4 layout
  (NHD/HND, linear E4M3 block scales) and converters to and from the slot-major pool.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
    >>> pool = MHATokenToKVPoolFP4(
    ...     size=8,
    ...     page_size=1,
    ...     layer_num=1,
    ...     head_num=1,
    ...     head_dim=16,
    ...     recipe="nvfp4",
    ...     device="cpu",
    ...     k_scales=[0.5],
    ...     v_scales=[0.25],
    ... )
    >>> pool.rows, pool.nbytes    # 9 rows x (8 + 8 data + 1 + 1 scale bytes)
    (9, 162)
"""

from nvfp4_kvcache.pool.base import PADDING_SLOT, FP4TokenToKVPoolBase
from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache, FlashInferNVFP4MLACache
from nvfp4_kvcache.pool.layout import POOL_RECIPES, MHALayout, MLALayout, mha_layout, mla_layout
from nvfp4_kvcache.pool.mha import MHATokenToKVPoolFP4
from nvfp4_kvcache.pool.mla import MLATokenToKVPoolFP4

__all__ = [
    "MHATokenToKVPoolFP4",
    "MLATokenToKVPoolFP4",
    "FP4TokenToKVPoolBase",
    "FlashInferNVFP4KVCache",
    "FlashInferNVFP4MLACache",
    "PADDING_SLOT",
    "POOL_RECIPES",
    "MHALayout",
    "MLALayout",
    "mha_layout",
    "mla_layout",
]
