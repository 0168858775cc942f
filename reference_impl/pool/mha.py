"""`MHATokenToKVPoolFP4`: a token-to-KV pool that stores K and V in FP4, per layer, by slot.

Same buffers as SGLang 0.5.23 (`python/sglang/srt/mem_cache/memory_pool.py`, class
`MHATokenToKVPoolFP4`, and `python/sglang/srt/layers/quantization/fp4_kv_cache_quant_method.py`,
`FP4MXBlock16KVCacheMethod` / `NVFP4KVCacheMethod`), with `m = size + page_size` rows:

| buffer (per layer) | flat scale layout (`fp4_mx_block16`) | per-head scale layout (`nvfp4`, `nvfp4_4over6`) |
|---|---|---|
| `k_buffer[l]` | `uint8 (m, H, D/2)` | `uint8 (m, H, D/2)` |
| `v_buffer[l]` | `uint8 (m, H, D/2)` | `uint8 (m, H, D/2)` |
| `k_scale_buffer` | `uint8 (m, H*D/16)` | `uint8 (m, H, D/16)` (E4M3 bits) |
| `v_scale_buffer` | `uint8 (m, H*D/16)` | `uint8 (m, H, D/16)` (E4M3 bits) |
| `k_scales` | -- | `float32 (layer_num,)` decode global scales |
| `v_scales` | -- | `float32 (layer_num,)` |

The recipe's `pool_scale_layout` picks the column and its `global_scale` the last two rows.

NVFP4 global-scale convention: `k_scales[l]` / `v_scales[l]` are the *decode* multipliers
`g` of [`nvfp4_kvcache.recipes.nvfp4`][nvfp4_kvcache.recipes.nvfp4] (`x ~= e2m1 * block_scale * g`), default 1.0 as
upstream's `NVFP4KVCacheMethod` when a checkpoint has none. A checkpoint calibrated as
`amax / (6 * 448)` and one calibrated as `amax / 448` both load as-is: the pool never rescales
(upstream multiplies non-default scales by 6 on SM100; do that before constructing the pool if
you model that path).

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
    >>> pool = MHATokenToKVPoolFP4(
    ...     size=16,
    ...     page_size=4,
    ...     layer_num=2,
    ...     head_num=2,
    ...     head_dim=32,
    ...     recipe="fp4_mx_block16",
    ...     device="cpu",
    ... )
    >>> pool.k_buffer[0].shape, pool.k_scale_buffer[0].shape
    (torch.Size([20, 2, 16]), torch.Size([20, 4]))
    >>> k = torch.randn(3, 2, 32)
    >>> pool.set_kv_buffer(0, torch.tensor([4, 5, 6]), k, -k)
    >>> kg, vg = pool.gather_kv(0, torch.tensor([5]))
    >>> kg.shape, bool((kg == -vg).all())
    (torch.Size([1, 2, 32]), True)
"""

from __future__ import annotations

import torch

from nvfp4_kvcache.pool._checks import check_kv_tensor, global_scales
from nvfp4_kvcache.pool.base import FP4TokenToKVPoolBase
from nvfp4_kvcache.pool.layout import MHALayout, mha_layout
from nvfp4_kvcache.recipes import OUTPUT_DTYPES

__all__ = ["MHATokenToKVPoolFP4"]


class MHATokenToKVPoolFP4(FP4TokenToKVPoolBase):
    """FP4 MHA/GQA KV pool (any recipe of `POOL_RECIPES`).

    Args:
        size: usable token slots (a multiple of `page_size`).
        page_size: tokens per page; the pool allocates `size + page_size` rows.
        layer_num: layers held by this pool (pipeline stage).
        head_num: KV heads on this rank.
        head_dim: head dimension (multiple of 16; K and V share it).
        recipe: a recipe of `POOL_RECIPES` (default `"fp4_mx_block16"`).
        device: where the buffers live.
        k_scales: recipes with a global scale only: per-layer decode global scales of K (a float for all
            layers, a sequence of `layer_num` floats, or a `float32 [layer_num]` tensor);
            default 1.0.
        v_scales: the same for V.
        start_layer: global id of the first layer (layer ids passed to methods are global).

    Raises:
        TypeError, ValueError: bad sizes, recipe, device or global scales.
    """

    def __init__(
        self,
        *,
        size: int,
        page_size: int,
        layer_num: int,
        head_num: int,
        head_dim: int,
        recipe: str = "fp4_mx_block16",
        device: str | torch.device = "cpu",
        k_scales: object = None,
        v_scales: object = None,
        start_layer: int = 0,
    ) -> None:
        super().__init__(size=size, page_size=page_size, layer_num=layer_num, recipe=recipe,
                         device=device, start_layer=start_layer)
        self.layout: MHALayout = mha_layout(head_num, head_dim, self.recipe.name)
        self.head_num = head_num
        self.head_dim = head_dim
        self.k_scales = global_scales(k_scales, "k_scales", self.recipe.name, layer_num, self.device)
        self.v_scales = global_scales(v_scales, "v_scales", self.recipe.name, layer_num, self.device)
        m = self.rows

        def zeros(shape: tuple[int, ...]) -> list[torch.Tensor]:
            return [torch.zeros(shape, dtype=torch.uint8, device=self.device) for _ in range(layer_num)]

        self.k_buffer = zeros(self.layout.data_shape(m))
        self.v_buffer = zeros(self.layout.data_shape(m))
        self.k_scale_buffer = zeros(self.layout.scale_shape(m))
        self.v_scale_buffer = zeros(self.layout.scale_shape(m))

    # -- introspection ----------------------------------------------------------------------------
    def layer_tensors(self, layer: object) -> dict[str, torch.Tensor]:
        """`{"k", "v", "k_scale", "v_scale"}` -> this layer's `uint8` buffers.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
            >>> pool = MHATokenToKVPoolFP4(
            ...     size=8,
            ...     page_size=4,
            ...     layer_num=1,
            ...     head_num=2,
            ...     head_dim=16,
            ...     recipe="nvfp4",
            ...     k_scales=[0.5],
            ...     v_scales=[0.25],
            ... )
            >>> sorted(pool.layer_tensors(0))
            ['k', 'k_scale', 'v', 'v_scale']
        """
        i = self._local(layer)
        return {"k": self.k_buffer[i], "v": self.v_buffer[i],
                "k_scale": self.k_scale_buffer[i], "v_scale": self.v_scale_buffer[i]}

    def global_scale_tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.k_scales is None else {"k_scales": self.k_scales, "v_scales": self.v_scales}

    def _g(self, which: str, i: int) -> torch.Tensor | None:
        scales = self.k_scales if which == "k" else self.v_scales
        return None if scales is None else scales[i]

    # -- write path -------------------------------------------------------------------------------
    def set_kv_buffer(self, layer: object, loc: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor) -> None:
        """Quantize `cache_k`/`cache_v` and scatter data and scales into slots `loc`.

        Args:
            layer: global layer id (or an object with `.layer_id`).
            loc: `int64`/`int32 [n]` on the pool's device, distinct slots in
                `[0, size + page_size)`; slot 0 (padding) may repeat, the last write wins.
            cache_k: `float32`/`bfloat16`/`float16 [n, head_num, head_dim]`.
            cache_v: same shape and dtype as `cache_k`.

        Raises:
            TypeError, ValueError, IndexError: any bad argument; nothing is written then.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
            >>> pool = MHATokenToKVPoolFP4(
            ...     size=8,
            ...     page_size=4,
            ...     layer_num=1,
            ...     head_num=2,
            ...     head_dim=16,
            ...     recipe="nvfp4",
            ...     k_scales=[0.5],
            ...     v_scales=[0.25],
            ... )
            >>> k = torch.tensor([1.0, -3.0] * 8).expand(2, 2, 16)
            >>> pool.set_kv_buffer(0, torch.tensor([4, 5]), k, k)
            >>> sf = pool.k_scale_buffer[0][4].view(torch.float8_e4m3fn)
            >>> sf.float().tolist()  # 3 / 6 / 0.5
            [[1.0], [1.0]]
            >>> pool.set_kv_buffer(0, torch.tensor([4, 4]), k, k)
            Traceback (most recent call last):
            ...
            ValueError: loc repeats slot(s) [4] in one call; each slot may be written once
        """
        i = self._local(layer)
        idx = self._loc(loc)
        shape = (idx.numel(), self.head_num, self.head_dim)
        check_kv_tensor(cache_k, "cache_k", shape, self.device)
        check_kv_tensor(cache_v, "cache_v", shape, self.device)
        qk = self.recipe.quantize(cache_k, self._g("k", i))
        qv = self.recipe.quantize(cache_v, self._g("v", i))
        keep = self._last_write_wins(idx)
        rows = idx[keep]
        sshape = self.layout.scale_shape(idx.numel())
        self.k_buffer[i][rows] = qk.packed[keep]
        self.v_buffer[i][rows] = qv.packed[keep]
        self.k_scale_buffer[i][rows] = qk.scales.reshape(sshape)[keep]
        self.v_scale_buffer[i][rows] = qv.scales.reshape(sshape)[keep]

    # -- read paths -------------------------------------------------------------------------------
    def _dequant(self, which: str, i: int, rows: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in OUTPUT_DTYPES:
            raise ValueError(f"dtype must be one of {OUTPUT_DTYPES}, got {dtype}")
        data = self.k_buffer[i] if which == "k" else self.v_buffer[i]
        scales = self.k_scale_buffer[i] if which == "k" else self.v_scale_buffer[i]
        if rows is not None:
            data, scales = data[rows], scales[rows]
        scales = scales.reshape(data.shape[0], self.head_num, self.head_dim // self.layout.block_size)
        return self.recipe.dequantize_parts(data, scales, self._g(which, i), dtype)

    def get_key_buffer(self, layer: object, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        """Dequantize the **whole layer's** K, as upstream's `get_key_buffer` does on every call.

        Returns:
            `dtype [size + page_size, head_num, head_dim]` (a new tensor; default `bfloat16`).

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
            >>> pool = MHATokenToKVPoolFP4(
            ...     size=8,
            ...     page_size=4,
            ...     layer_num=1,
            ...     head_num=2,
            ...     head_dim=16,
            ...     recipe="nvfp4",
            ...     k_scales=[0.5],
            ...     v_scales=[0.25],
            ... )
            >>> full = pool.get_key_buffer(0)
            >>> full.shape, full.dtype
            (torch.Size([12, 2, 16]), torch.bfloat16)
        """
        return self._dequant("k", self._local(layer), None, dtype)

    def get_value_buffer(self, layer: object, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        """Dequantize the whole layer's V: `dtype [size + page_size, head_num, head_dim]`.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
            >>> pool = MHATokenToKVPoolFP4(
            ...     size=8,
            ...     page_size=4,
            ...     layer_num=1,
            ...     head_num=2,
            ...     head_dim=16,
            ...     recipe="nvfp4",
            ...     k_scales=[0.5],
            ...     v_scales=[0.25],
            ... )
            >>> pool.get_value_buffer(0, dtype=torch.float32).shape
            torch.Size([12, 2, 16])
        """
        return self._dequant("v", self._local(layer), None, dtype)

    def get_kv_buffer(self, layer: object, dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
        """`(get_key_buffer(layer), get_value_buffer(layer))`.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
            >>> pool = MHATokenToKVPoolFP4(
            ...     size=8,
            ...     page_size=4,
            ...     layer_num=1,
            ...     head_num=2,
            ...     head_dim=16,
            ...     recipe="nvfp4",
            ...     k_scales=[0.5],
            ...     v_scales=[0.25],
            ... )
            >>> [t.shape for t in pool.get_kv_buffer(0)]
            [torch.Size([12, 2, 16]), torch.Size([12, 2, 16])]
        """
        return self.get_key_buffer(layer, dtype), self.get_value_buffer(layer, dtype)

    def gather_kv(
        self, layer: object, loc: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantize only slots `loc` (repeats allowed): what a fused FP4 attention kernel reads.

        Returns:
            `(k, v)`, each `dtype [n, head_num, head_dim]`.

        Raises:
            TypeError, ValueError, IndexError: bad layer, indices or dtype.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
            >>> pool = MHATokenToKVPoolFP4(
            ...     size=8,
            ...     page_size=4,
            ...     layer_num=1,
            ...     head_num=2,
            ...     head_dim=16,
            ...     recipe="nvfp4",
            ...     k_scales=[0.5],
            ...     v_scales=[0.25],
            ... )
            >>> pool.set_kv_buffer(
            ...     0,
            ...     torch.tensor([6]),
            ...     torch.full((1, 2, 16), 2.0),
            ...     torch.full((1, 2, 16), -1.0),
            ... )
            >>> k, v = pool.gather_kv(0, torch.tensor([6, 6]))
            >>> k.shape, k[0, 0, 0].item(), v[1, 1, 3].item()  # scale 2/6/0.5 -> E4M3 0.6875
            (torch.Size([2, 2, 16]), 2.0625, -1.03125)
        """
        i = self._local(layer)
        idx = self._loc(loc, unique=False)
        return self._dequant("k", i, idx, dtype), self._dequant("v", i, idx, dtype)

    def get_raw_kv_buffer(self, layer: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(k_data, v_data, k_scales, v_scales)` of one layer, as stored (views, no copy).

        For `nvfp4` the scale views have dtype `float8_e4m3fn`, as upstream's
        `get_raw_kv_buffer` returns them; for `fp4_mx_block16` they are the `uint8` bytes.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
            >>> pool = MHATokenToKVPoolFP4(
            ...     size=8,
            ...     page_size=4,
            ...     layer_num=1,
            ...     head_num=2,
            ...     head_dim=16,
            ...     recipe="nvfp4",
            ...     k_scales=[0.5],
            ...     v_scales=[0.25],
            ... )
            >>> k, v, ks, vs = pool.get_raw_kv_buffer(0)
            >>> k.dtype, tuple(k.shape), ks.dtype, tuple(ks.shape)
            (torch.uint8, (12, 2, 8), torch.float8_e4m3fn, (12, 2, 1))
        """
        i = self._local(layer)
        ks, vs = self.k_scale_buffer[i], self.v_scale_buffer[i]
        view = self.recipe.scale.torch_dtype
        if view is not None:
            ks, vs = ks.view(view), vs.view(view)
        return self.k_buffer[i], self.v_buffer[i], ks, vs
