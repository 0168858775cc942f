"""Accuracy lab: what a 4-bit KV cache costs, measured against a BF16 cache.

One job per module:

* [`metrics`][nvfp4_kvcache.accuracy.metrics]: element-level error (SQNR, relative L2, max error,
  flushed-to-zero fraction; per block and per channel);
* [`distributions`][nvfp4_kvcache.accuracy.distributions]: seeded K/V-shaped test data chosen to break
  things (heavy tails, outlier channels, RoPE-rotated keys, tiny blocks, one huge value);
* [`baselines`][nvfp4_kvcache.accuracy.baselines]: the non-FP4 comparison points (FP8 E4M3 per tensor,
  INT4 asymmetric per token group);
* [`schemes`][nvfp4_kvcache.accuracy.schemes]: every KV-cache scheme the lab compares, as one
  "fake-quantize" function each (quantize, then dequantize to `float32`);
* [`attention_error`][nvfp4_kvcache.accuracy.attention_error]: decode-attention output error and softmax KL
  against BF16 K/V, as the context grows;
* [`minilm`][nvfp4_kvcache.accuracy.minilm]: a real pretrained transformer (all-MiniLM-L6-v2, from a
  pip package) in plain PyTorch, with a hook on every layer's K and V.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.accuracy import SCHEMES, sqnr_db
    >>> x = torch.randn(4, 2, 64, generator=torch.Generator().manual_seed(0))
    >>> xq = SCHEMES["nvfp4/amax448"].fake_quantize(x, x.abs().amax())
    >>> 15 < sqnr_db(x, xq) < 25        # about 4 bits of signal
    True
"""

from nvfp4_kvcache.accuracy.metrics import (
    element_errors,
    flush_to_zero_fraction,
    max_abs_error,
    per_block_sqnr_db,
    per_channel_sqnr_db,
    relative_l2,
    sqnr_db,
)
from nvfp4_kvcache.accuracy.schemes import SCHEMES, Scheme, bf16_round

__all__ = [
    "SCHEMES",
    "Scheme",
    "bf16_round",
    "element_errors",
    "flush_to_zero_fraction",
    "max_abs_error",
    "per_block_sqnr_db",
    "per_channel_sqnr_db",
    "relative_l2",
    "sqnr_db",
]
