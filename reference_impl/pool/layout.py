"""Buffer shapes, dtypes and byte counts of the FP4 KV pools, shared by the MHA and MLA pools.

Everything here is arithmetic on integers: no tensors are allocated, so the same functions
serve the pools, the capacity calculator and the documentation.

Conventions (the ones SGLang 0.5.23 uses, `python/sglang/srt/mem_cache/memory_pool.py` and
`python/sglang/srt/mem_cache/allocator/{token,paged}.py`):

* a pool of `size` usable token slots allocates `size + page_size` rows per layer;
* row (slot) 0 is the **padding slot**: padded tokens (CUDA-graph batches) write their dummy
  K/V there. The allocators never hand out page 0 (slots `0 .. page_size - 1`); the usable
  slots are `page_size .. size + page_size - 1` (for `page_size == 1`: `1 .. size`);
* page `p` covers slots `p * page_size .. (p + 1) * page_size - 1`: storage is slot-major,
  pages are only a grouping of consecutive slots;
* packed data: `uint8`, two E2M1 codes per byte, element `2i` in the low nibble;
* scale bytes: `uint8`, one per block of `block_size` consecutive elements of one head
  (one latent part for MLA).

Examples:
    >>> mla = mla_layout(kv_lora_rank=512, qk_rope_head_dim=64, recipe="fp4_mx_block16")
    >>> mla.data_bytes_per_token, mla.scale_bytes_per_token
    (288, 36)
    >>> mha = mha_layout(head_num=8, head_dim=128, recipe="nvfp4")
    >>> mha.data_shape(rows=10), mha.scale_shape(rows=10)
    ((10, 8, 64), (10, 8, 8))
    >>> mha.bytes_per_token   # K and V, data and scales, one layer
    1152
"""

from __future__ import annotations

from dataclasses import dataclass

from nvfp4_kvcache.recipes import POOL_RECIPES, PoolScaleLayout, get_recipe

__all__ = ["POOL_RECIPES", "MHALayout", "MLALayout", "mha_layout", "mla_layout", "pool_rows", "check_pool_geometry"]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _pool_recipe(recipe: object):
    r = get_recipe(recipe)
    if r.pool_scale_layout is None:
        raise ValueError(f"the FP4 pools store recipes {POOL_RECIPES}, got {r.name!r}")
    return r


def pool_rows(size: int, page_size: int) -> int:
    """Rows per layer buffer: `size + page_size` (the extra page holds the padding slot 0).

    Raises:
        TypeError, ValueError: `size` or `page_size` not a positive int.

    Examples:
        >>> pool_rows(size=4096, page_size=16)
        4112
    """
    return _positive_int(size, "size") + _positive_int(page_size, "page_size")


def check_pool_geometry(size: int, page_size: int, layer_num: int) -> None:
    """Validate the constructor integers shared by both pools.

    Raises:
        TypeError, ValueError: a value is not a positive int, or `size` is not a multiple of
            `page_size` (the paged allocator hands out whole pages only).
    """
    pool_rows(size, page_size)
    _positive_int(layer_num, "layer_num")
    if size % page_size:
        raise ValueError(f"size ({size}) must be a multiple of page_size ({page_size})")


@dataclass(frozen=True)
class MHALayout:
    """Per-layer buffers of an MHA FP4 pool (one of K or V; the pool holds both).

    Attributes:
        head_num: KV heads stored on this rank.
        head_dim: elements per head (multiple of the block size).
        recipe: a recipe of `POOL_RECIPES`.
        block_size: elements per scale byte.
        scale_layout: the recipe's pool scale layout.
    """

    head_num: int
    head_dim: int
    recipe: str
    block_size: int
    scale_layout: PoolScaleLayout = PoolScaleLayout.FLAT

    def data_shape(self, rows: int) -> tuple[int, int, int]:
        """`(rows, head_num, head_dim // 2)`, `uint8` (upstream `k_buffer[l]`/`v_buffer[l]`)."""
        return (rows, self.head_num, self.head_dim // 2)

    def scale_shape(self, rows: int) -> tuple[int, ...]:
        """Scale buffer shape, `uint8`; it differs by the recipe's scale layout, the bytes do not.

        * `PoolScaleLayout.FLAT` (`fp4_mx_block16`): `(rows, head_num * head_dim // 16)`: heads
          flattened (`MHATokenToKVPoolFP4` and `FP4MXBlock16KVCacheMethod.create_buffers`);
        * `PoolScaleLayout.PER_HEAD` (`nvfp4`): `(rows, head_num, head_dim // 16)`
          (`NVFP4KVCacheMethod.create_buffers`, the token-linear layout; bytes are E4M3 bit patterns).
        """
        if self.scale_layout is PoolScaleLayout.PER_HEAD:
            return (rows, self.head_num, self.head_dim // self.block_size)
        return (rows, self.head_num * self.head_dim // self.block_size)

    @property
    def data_bytes_per_token(self) -> int:
        """Packed bytes per token per layer for K *and* V."""
        return 2 * self.head_num * self.head_dim // 2

    @property
    def scale_bytes_per_token(self) -> int:
        """Scale bytes per token per layer for K *and* V."""
        return 2 * self.head_num * self.head_dim // self.block_size

    @property
    def bytes_per_token(self) -> int:
        """Data plus scale bytes per token per layer (K and V)."""
        return self.data_bytes_per_token + self.scale_bytes_per_token


@dataclass(frozen=True)
class MLALayout:
    """Per-layer buffers of an MLA FP4 pool (one latent per token, no separate V).

    Row layout: data bytes `[0, kv_lora_rank/2)` hold the NoPE latent and
    `[kv_lora_rank/2, (kv_lora_rank + qk_rope_head_dim)/2)` the RoPE part; scale bytes
    `[0, kv_lora_rank/16)` and `[kv_lora_rank/16, kv_cache_dim/16)` likewise. The two parts
    are quantized separately, so no block spans the boundary.
    """

    kv_lora_rank: int
    qk_rope_head_dim: int
    recipe: str
    block_size: int

    @property
    def kv_cache_dim(self) -> int:
        """`kv_lora_rank + qk_rope_head_dim` (576 for DeepSeek-V3)."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    def data_shape(self, rows: int) -> tuple[int, int, int]:
        """`(rows, 1, kv_cache_dim // 2)`, `uint8` (upstream `kv_buffer[l]`)."""
        return (rows, 1, self.kv_cache_dim // 2)

    def scale_shape(self, rows: int) -> tuple[int, int]:
        """`(rows, kv_cache_dim // 16)`, `uint8` (upstream `kv_scale_buffer[l]`)."""
        return (rows, self.kv_cache_dim // self.block_size)

    @property
    def nope_data_bytes(self) -> int:
        """Packed bytes of the NoPE part per token (the split point of a data row)."""
        return self.kv_lora_rank // 2

    @property
    def nope_scale_bytes(self) -> int:
        """Scale bytes of the NoPE part per token (the split point of a scale row)."""
        return self.kv_lora_rank // self.block_size

    @property
    def data_bytes_per_token(self) -> int:
        """Packed bytes per token per layer."""
        return self.kv_cache_dim // 2

    @property
    def scale_bytes_per_token(self) -> int:
        """Scale bytes per token per layer."""
        return self.kv_cache_dim // self.block_size

    @property
    def bytes_per_token(self) -> int:
        """Data plus scale bytes per token per layer."""
        return self.data_bytes_per_token + self.scale_bytes_per_token


def mha_layout(head_num: int, head_dim: int, recipe: str = "fp4_mx_block16") -> MHALayout:
    """Layout of an MHA FP4 pool layer.

    Args:
        head_num: KV heads on this rank (after tensor-parallel splitting).
        head_dim: K/V head dimension; a positive multiple of 16.
        recipe: a recipe of `POOL_RECIPES` (default `"fp4_mx_block16"`).

    Raises:
        TypeError, ValueError: non-positive sizes, `head_dim` not a multiple of the block size,
            or a recipe the pools do not store.

    Examples:
        >>> mha_layout(8, 128).scale_shape(rows=3)
        (3, 64)
    """
    r = _pool_recipe(recipe)
    _positive_int(head_num, "head_num")
    _positive_int(head_dim, "head_dim")
    if head_dim % r.block_size:
        raise ValueError(f"head_dim must be a multiple of the block size {r.block_size}, got {head_dim}")
    return MHALayout(head_num, head_dim, r.name, r.block_size, r.pool_scale_layout)


def mla_layout(kv_lora_rank: int, qk_rope_head_dim: int, recipe: str = "fp4_mx_block16") -> MLALayout:
    """Layout of an MLA FP4 pool layer.

    Args:
        kv_lora_rank: NoPE latent width (512 for DeepSeek-V3); a positive multiple of 16.
        qk_rope_head_dim: RoPE part width (64 for DeepSeek-V3); a positive multiple of 16.
        recipe: a recipe of `POOL_RECIPES` (default `"fp4_mx_block16"`).

    Raises:
        TypeError, ValueError: as [`mha_layout`][nvfp4_kvcache.pool.layout.mha_layout].

    Examples:
        >>> mla_layout(512, 64).scale_shape(rows=2)
        (2, 36)
    """
    r = _pool_recipe(recipe)
    for value, name in ((kv_lora_rank, "kv_lora_rank"), (qk_rope_head_dim, "qk_rope_head_dim")):
        _positive_int(value, name)
        if value % r.block_size:
            raise ValueError(f"{name} must be a multiple of the block size {r.block_size}, got {value}")
    return MLALayout(kv_lora_rank, qk_rope_head_dim, r.name, r.block_size)
