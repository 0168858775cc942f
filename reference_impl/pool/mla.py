"""`MLATokenToKVPoolFP4`: DeepSeek-style latent cache in FP4 (NoPE and RoPE parts quantized separately).

Buffers of SGLang 0.5.23's `MLATokenToKVPoolFP4` (`python/sglang/srt/mem_cache/memory_pool.py`),
`m = size + page_size` rows, `C = kv_lora_rank + qk_rope_head_dim`:

* `kv_buffer[l]`: `uint8 (m, 1, C/2)`: bytes `[0, kv_lora_rank/2)` NoPE, the rest RoPE;
* `kv_scale_buffer[l]`: `uint8 (m, C/16)`: bytes `[0, kv_lora_rank/16)` NoPE, the rest RoPE.

DeepSeek-V3 (512 + 64): 288 data bytes and 36 scale bytes per token per layer.

Padding slot: writes addressed to slot 0 are **skipped** (slot 0 keeps its bytes), as upstream's
`set_mla_kv_buffer_triton` / `set_mla_kv_scale_buffer_triton`
(`python/sglang/kernels/ops/kvcache/mla_buffer.py`, `reserved_skip_index=0`) do.

Upstream stores this pool with the `fp4_mx_block16` recipe only. `recipe="nvfp4"` here is this
project's extension (same shapes, E4M3 scale bytes, one decode global scale per layer,
`kv_scales`, shared by both parts, default 1.0); no upstream release serves NVFP4 MLA.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
    >>> pool = MLATokenToKVPoolFP4(
    ...     size=8,
    ...     page_size=1,
    ...     layer_num=1,
    ...     kv_lora_rank=512,
    ...     qk_rope_head_dim=64,
    ...     recipe="fp4_mx_block16",
    ...     device="cpu",
    ... )
    >>> pool.kv_buffer[0].shape, pool.kv_scale_buffer[0].shape
    (torch.Size([9, 1, 288]), torch.Size([9, 36]))
    >>> nope, rope = torch.randn(2, 1, 512), torch.randn(2, 1, 64)
    >>> pool.set_mla_kv_buffer(0, torch.tensor([1, 2]), nope, rope)
    >>> pool.gather_kv(0, torch.tensor([2])).shape
    torch.Size([1, 1, 576])
"""

from __future__ import annotations

import torch

from nvfp4_kvcache.pool._checks import check_kv_tensor, global_scales
from nvfp4_kvcache.pool.base import FP4TokenToKVPoolBase
from nvfp4_kvcache.pool.layout import MLALayout, mla_layout
from nvfp4_kvcache.recipes import OUTPUT_DTYPES

__all__ = ["MLATokenToKVPoolFP4"]


class MLATokenToKVPoolFP4(FP4TokenToKVPoolBase):
    """FP4 MLA latent pool.

    Args:
        size: usable token slots (a multiple of `page_size`).
        page_size: tokens per page; the pool allocates `size + page_size` rows.
        layer_num: layers held by this pool.
        kv_lora_rank: NoPE latent width (multiple of 16).
        qk_rope_head_dim: RoPE part width (multiple of 16).
        recipe: `"fp4_mx_block16"` (default, as upstream) or `"nvfp4"` (extension).
        device: where the buffers live.
        kv_scales: `nvfp4` only: per-layer decode global scales, default 1.0.
        start_layer: global id of the first layer.

    Raises:
        TypeError, ValueError: bad sizes, recipe, device or global scales.
    """

    def __init__(
        self,
        *,
        size: int,
        page_size: int,
        layer_num: int,
        kv_lora_rank: int,
        qk_rope_head_dim: int,
        recipe: str = "fp4_mx_block16",
        device: str | torch.device = "cpu",
        kv_scales: object = None,
        start_layer: int = 0,
    ) -> None:
        super().__init__(size=size, page_size=page_size, layer_num=layer_num, recipe=recipe,
                         device=device, start_layer=start_layer)
        self.layout: MLALayout = mla_layout(kv_lora_rank, qk_rope_head_dim, self.recipe.name)
        self.kv_lora_rank = kv_lora_rank
        self.qk_rope_head_dim = qk_rope_head_dim
        self.kv_cache_dim = self.layout.kv_cache_dim
        self.kv_scales = global_scales(kv_scales, "kv_scales", self.recipe.name, layer_num, self.device)
        m = self.rows
        self.kv_buffer = [torch.zeros(self.layout.data_shape(m), dtype=torch.uint8, device=self.device)
                          for _ in range(layer_num)]
        self.kv_scale_buffer = [torch.zeros(self.layout.scale_shape(m), dtype=torch.uint8, device=self.device)
                                for _ in range(layer_num)]

    def layer_tensors(self, layer: object) -> dict[str, torch.Tensor]:
        """`{"kv", "kv_scale"}` -> this layer's `uint8` buffers.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
            >>> pool = MLATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16
            ... )
            >>> sorted(pool.layer_tensors(0))
            ['kv', 'kv_scale']
        """
        i = self._local(layer)
        return {"kv": self.kv_buffer[i], "kv_scale": self.kv_scale_buffer[i]}

    def global_scale_tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.kv_scales is None else {"kv_scales": self.kv_scales}

    def _g(self, i: int) -> torch.Tensor | None:
        return None if self.kv_scales is None else self.kv_scales[i]

    # -- write path -------------------------------------------------------------------------------
    def set_mla_kv_buffer(
        self, layer: object, loc: torch.Tensor, cache_k_nope: torch.Tensor, cache_k_rope: torch.Tensor
    ) -> None:
        """Quantize the NoPE and RoPE parts separately and scatter them into slots `loc`.

        Args:
            layer: global layer id (or an object with `.layer_id`).
            loc: `int64`/`int32 [n]`, distinct slots; slot 0 (padding) may repeat and is
                not written.
            cache_k_nope: `float32`/`bfloat16`/`float16 [n, 1, kv_lora_rank]`.
            cache_k_rope: same dtypes, `[n, 1, qk_rope_head_dim]`.

        Raises:
            TypeError, ValueError, IndexError: any bad argument; nothing is written then.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
            >>> pool = MLATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16
            ... )
            >>> pool.set_mla_kv_buffer(
            ...     0,
            ...     torch.tensor([1]),
            ...     torch.full((1, 1, 32), 12.0),
            ...     torch.full((1, 1, 16), 0.5),
            ... )
            >>> pool.kv_scale_buffer[0][1].tolist()  # NoPE 2**1, RoPE 2**-3 (bias 127)
            [128, 128, 124]
        """
        i = self._local(layer)
        idx = self._loc(loc)
        n = idx.numel()
        check_kv_tensor(cache_k_nope, "cache_k_nope", (n, 1, self.kv_lora_rank), self.device)
        check_kv_tensor(cache_k_rope, "cache_k_rope", (n, 1, self.qk_rope_head_dim), self.device)
        g = self._g(i)
        q_nope = self.recipe.quantize(cache_k_nope, g)
        q_rope = self.recipe.quantize(cache_k_rope, g)
        data = torch.cat([q_nope.packed, q_rope.packed], dim=-1)
        scales = torch.cat([q_nope.scales.reshape(n, self.layout.nope_scale_bytes),
                            q_rope.scales.reshape(n, self.qk_rope_head_dim // self.layout.block_size)], dim=-1)
        keep = idx != 0   # the padding slot is never written (upstream's reserved_skip_index)
        self.kv_buffer[i][idx[keep]] = data[keep]
        self.kv_scale_buffer[i][idx[keep]] = scales[keep]

    def set_kv_buffer(
        self, layer: object, loc: torch.Tensor, cache_k: torch.Tensor, cache_v: object = None
    ) -> None:
        """Write whole latents `cache_k [n, 1, kv_lora_rank + qk_rope_head_dim]`; `cache_v` is ignored.

        Same bytes as [`set_mla_kv_buffer`][nvfp4_kvcache.pool.mla.MLATokenToKVPoolFP4.set_mla_kv_buffer] on the two slices (block boundaries fall on the
        NoPE/RoPE split because `kv_lora_rank` is a multiple of 16), slot 0 skipped likewise
        (upstream's `set_kv_buffer` indexes `kv_buffer[l][loc]` and so does write slot 0; the
        padding slot's contents are unspecified either way).

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
            >>> pool = MLATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16
            ... )
            >>> pool.set_kv_buffer(0, torch.tensor([2]), torch.ones(1, 1, 48))
            >>> pool.gather_kv(0, torch.tensor([2]))[0, 0, ::16].tolist()
            [1.0, 1.0, 1.0]
        """
        if not isinstance(cache_k, torch.Tensor):
            raise TypeError(f"cache_k must be a torch.Tensor, got {type(cache_k).__name__}")
        if cache_k.dim() != 3 or cache_k.shape[1:] != (1, self.kv_cache_dim):
            raise ValueError(f"cache_k must have shape [n, 1, {self.kv_cache_dim}], got {tuple(cache_k.shape)}")
        self.set_mla_kv_buffer(layer, loc, cache_k[..., : self.kv_lora_rank], cache_k[..., self.kv_lora_rank :])

    # -- read paths -------------------------------------------------------------------------------
    def _dequant(self, i: int, rows: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in OUTPUT_DTYPES:
            raise ValueError(f"dtype must be one of {OUTPUT_DTYPES}, got {dtype}")
        data, scales = self.kv_buffer[i], self.kv_scale_buffer[i]
        if rows is not None:
            data, scales = data[rows], scales[rows]
        scales = scales.reshape(data.shape[0], 1, self.layout.scale_bytes_per_token)
        return self.recipe.dequantize_parts(data, scales, self._g(i), dtype)

    def get_key_buffer(self, layer: object, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        """Dequantize the **whole layer** (upstream does this on every call).

        Returns:
            `dtype [size + page_size, 1, kv_lora_rank + qk_rope_head_dim]`.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
            >>> pool = MLATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16
            ... )
            >>> pool.get_key_buffer(0).shape
            torch.Size([5, 1, 48])
        """
        return self._dequant(self._local(layer), None, dtype)

    def get_value_buffer(self, layer: object, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        """The NoPE part of the whole layer, dequantized: `dtype [size + page_size, 1, kv_lora_rank]`.

        (Upstream's FP4 pool inherits a `get_value_buffer` that slices the *packed* bytes; this
        one returns values.)

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
            >>> pool = MLATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16
            ... )
            >>> pool.get_value_buffer(0).shape
            torch.Size([5, 1, 32])
        """
        return self.get_key_buffer(layer, dtype)[..., : self.kv_lora_rank]

    def get_kv_buffer(self, layer: object, dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
        """`(get_key_buffer(layer), get_value_buffer(layer))`.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
            >>> pool = MLATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16
            ... )
            >>> [t.shape[-1] for t in pool.get_kv_buffer(0)]
            [48, 32]
        """
        full = self.get_key_buffer(layer, dtype)
        return full, full[..., : self.kv_lora_rank]

    def gather_kv(self, layer: object, loc: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Dequantize only slots `loc` (repeats allowed): `dtype [n, 1, kv_lora_rank + qk_rope_head_dim]`.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
            >>> pool = MLATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16
            ... )
            >>> pool.gather_kv(0, torch.tensor([1, 1, 3]), dtype=torch.float64).shape
            torch.Size([3, 1, 48])
        """
        i = self._local(layer)
        return self._dequant(i, self._loc(loc, unique=False), dtype)

    def get_raw_kv_buffer(self, layer: object) -> tuple[torch.Tensor, torch.Tensor]:
        """`(kv_data, kv_scales)` of one layer as stored (views); `nvfp4` scales as `float8_e4m3fn`.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
            >>> pool = MLATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16
            ... )
            >>> [(t.dtype, tuple(t.shape)) for t in pool.get_raw_kv_buffer(0)]
            [(torch.uint8, (5, 1, 24)), (torch.uint8, (5, 3))]
        """
        i = self._local(layer)
        s = self.kv_scale_buffer[i]
        view = self.recipe.scale.torch_dtype
        return self.kv_buffer[i], (s if view is None else s.view(view))
