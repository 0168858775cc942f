"""Drop-in replacements for SGLang's FP4 KV quantizer classes, on any device, without SGLang.

Same names, shapes, dtypes and bytes as `python/sglang/srt/layers/quantization/kvfp4_tensor.py`
(SGLang release 0.5.23), so a test suite written against SGLang can run against the oracle:

* [`FP4MXBlock16KVQuantizeUtil`][nvfp4_kvcache.sglang.FP4MXBlock16KVQuantizeUtil] (alias [`KVFP4QuantizeUtil`][nvfp4_kvcache.sglang.KVFP4QuantizeUtil], the name PRs #10078 and
  #12612 gave it, and [`BlockFP4KVQuantizeUtil`][nvfp4_kvcache.sglang.BlockFP4KVQuantizeUtil], its name after PR #21954): the
  `fp4_mx_block16` recipe. Upstream runs it under `torch.compile`; this class reproduces the
  compiled results (see [`nvfp4_kvcache.recipes.fp4_mx_block16`][nvfp4_kvcache.recipes.fp4_mx_block16] for where eager differs).
* [`NVFP4KVQuantizeUtil`][nvfp4_kvcache.sglang.NVFP4KVQuantizeUtil]: the `nvfp4` recipe with upstream's call signature. Upstream
  calls FlashInfer CUDA kernels (SM100+, or `fp4_quantize` on SM90); this class is the exact
  arithmetic those kernels approximate.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.sglang import KVFP4QuantizeUtil
    >>> k = torch.randn(5, 8, 64, dtype=torch.bfloat16)  # [tokens, kv heads, head_dim]
    >>> packed, scales = KVFP4QuantizeUtil.batched_quantize(k)
    >>> packed.shape, packed.dtype, scales.shape, scales.dtype
    (torch.Size([5, 8, 32]), torch.uint8, torch.Size([5, 32]), torch.uint8)
    >>> KVFP4QuantizeUtil.batched_dequantize(packed, scales).dtype
    torch.bfloat16
"""

from __future__ import annotations

import torch

from nvfp4_kvcache.checks import check_uint8
from nvfp4_kvcache.recipes import FP4_MX_BLOCK16, NVFP4

__all__ = [
    "FP4MXBlock16KVQuantizeUtil",
    "KVFP4QuantizeUtil",
    "BlockFP4KVQuantizeUtil",
    "NVFP4KVQuantizeUtil",
]


def _check_rank3(t: object, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape [B, M, N] (rank 3), got shape {tuple(t.shape)}")


class FP4MXBlock16KVQuantizeUtil:
    """SGLang's block-16 quantizer: `[B, M, N]` -> `(uint8 [B, M, N/2], uint8 [B, M*N/16])`.

    As upstream, blocks of 16 run along the flattened `M*N` axis of each batch row, so `N`
    need only be even with `M*N % 16 == 0`; for every real head dim (`N % 16 == 0`) a block
    stays inside one head.
    """

    @staticmethod
    def batched_quantize(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize `tensor [B, M, N]` (fp32/bf16/fp16).

        Returns:
            `packed` `uint8 [B, M, N/2]` and `scale_factors` `uint8 [B, M*N/16]`.

        Raises:
            ValueError: rank is not 3, `N` is odd, `M*N` is not a multiple of 16, or a
                dtype other than fp32/bf16/fp16.
        """
        _check_rank3(tensor, "tensor")
        b, m, n = tensor.shape
        if n % 2:
            raise ValueError(f"tensor: last dimension must be even, got shape {tuple(tensor.shape)}")
        q = FP4_MX_BLOCK16.quantize(tensor.reshape(b, m * n))
        return q.packed.reshape(b, m, n // 2), q.scales

    @staticmethod
    def batched_dequantize(
        quant_tensor: torch.Tensor,
        scale_factors: torch.Tensor,
        dtype: torch.dtype = torch.bfloat16,
    ) -> torch.Tensor:
        """Dequantize `(uint8 [B, M, N/2], uint8 [B, M*N/16])` to `dtype [B, M, N]`."""
        _check_rank3(quant_tensor, "quant_tensor")
        check_uint8(quant_tensor, "quant_tensor")
        b, m, n_half = quant_tensor.shape
        out = FP4_MX_BLOCK16.dequantize_parts(quant_tensor.reshape(b, m * n_half), scale_factors, None, dtype)
        return out.reshape(b, m, 2 * n_half)


KVFP4QuantizeUtil = FP4MXBlock16KVQuantizeUtil
"""The class's original name (PRs #10078, #12612)."""

BlockFP4KVQuantizeUtil = FP4MXBlock16KVQuantizeUtil
"""The class's name after PR #21954, kept upstream as an alias."""


class NVFP4KVQuantizeUtil:
    """NVFP4 with upstream's signature: `[B, M, N]` -> `(uint8 [B, M, N/2], e4m3 [B, M, N/16], g)`."""

    @staticmethod
    def quantize(
        tensor: torch.Tensor, global_scale: torch.Tensor | float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize `tensor [B, M, N]` with decode global scale `global_scale`.

        Returns:
            `(fp4_data uint8 [B, M, N/2], block_scales float8_e4m3fn [B, M, N/16], global_scale)`;
            the global scale comes back as a 1-element `float32` tensor, as upstream's does.
        """
        _check_rank3(tensor, "tensor")
        q = NVFP4.quantize(tensor, global_scale)
        return q.packed, q.scales.view(torch.float8_e4m3fn), q.global_scale.reshape(1)

    @staticmethod
    def dequantize(
        quant_tensor: torch.Tensor,
        block_scales: torch.Tensor,
        global_scale: torch.Tensor | float,
        dtype: torch.dtype = torch.bfloat16,
    ) -> torch.Tensor:
        """Dequantize to `dtype [B, M, N]`; `block_scales` may be `float8_e4m3fn` or its `uint8` bits."""
        _check_rank3(quant_tensor, "quant_tensor")
        if not isinstance(block_scales, torch.Tensor):
            raise TypeError(f"block_scales must be a torch.Tensor, got {type(block_scales).__name__}")
        if block_scales.dtype == torch.float8_e4m3fn:
            block_scales = block_scales.view(torch.uint8)
        elif block_scales.dtype != torch.uint8:
            raise ValueError(f"block_scales must be float8_e4m3fn or uint8, got {block_scales.dtype}")
        return NVFP4.dequantize_parts(quant_tensor, block_scales, global_scale, dtype)
