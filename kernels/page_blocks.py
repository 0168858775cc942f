"""Page blocks: an FP4 KV layout that keeps each page's codes and scales of one KV head together.

SGLang's FP4 pool is slot-major: the packed codes are `[slots, H, D/2]` bytes and the scale bytes a
second tensor, `[slots, H * D/16]`. Reading one page of one head therefore gathers `page_size`
rows of `D/2` bytes (64 at head dim 128) from one tensor and as many rows of `D/16` bytes (8) from
the other, each `H` rows apart. In a page block the same bytes sit in one contiguous run per
(page, KV head):

```text
block(page p, head h) = [codes of tokens 0 .. P-1 of page p, head h]   P x D/2 bytes
                        [scale bytes of the same tokens]               P x D/16 bytes
tensor                = uint8 [pages, H, P * (D/2 + D/16)]
```

so a page of one head is one 1152-byte read at head dim 128 and page 16. Token `i` of page `p` is
slot `p * P + i`, as in SGLang's paged allocator. The layout changes where bytes are, never
their values: [`to_page_blocks`][nvfp4_kvcache_triton.page_blocks.to_page_blocks] and
[`from_page_blocks`][nvfp4_kvcache_triton.page_blocks.from_page_blocks] convert both ways, bit for
bit, and `nvfp4_kvcache_triton.decode_attention.decode_attention_fp4` reads either layout with the
same results.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
    >>> from nvfp4_kvcache_triton.decode_attention import fp4_layer
    >>> pool = MHATokenToKVPoolFP4(
    ...     size=32, page_size=16, layer_num=1, head_num=2, head_dim=128
    ... )
    >>> pool.set_kv_buffer(
    ...     0, torch.arange(16, 48), torch.randn(32, 2, 128), torch.randn(32, 2, 128)
    ... )
    >>> blocks = to_page_blocks(fp4_layer(pool, 0), page_size=16)
    >>> tuple(blocks.k.shape), blocks.head_dim  # 3 pages (page 0 is padding), 2 heads
    ((3, 2, 1152), 128)
    >>> back = from_page_blocks(blocks)
    >>> torch.equal(back.k, pool.layer_tensors(0)["k"]), torch.equal(
    ...     back.v_scale.flatten(1), pool.layer_tensors(0)["v_scale"]
    ... )
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # imported inside the functions: decode_attention imports this module
    from nvfp4_kvcache_triton.decode_attention import FP4KVLayer

__all__ = ["FP4PageBlocks", "to_page_blocks", "from_page_blocks", "block_bytes"]


def block_bytes(page_size: int, head_dim: int) -> int:
    """Bytes of one page block: `page_size * (head_dim / 2 + head_dim / 16)`.

    Examples:
        >>> block_bytes(16, 128)
        1152
    """
    return page_size * (head_dim // 2 + head_dim // 16)


@dataclass(frozen=True)
class FP4PageBlocks:
    """One layer of an FP4 KV cache as page blocks (see the module docstring for the layout).

    Attributes:
        k, v: `uint8 [pages, H, page_size * (D/2 + D/16)]`, each block contiguous; the page and
            head strides must be multiples of 16 bytes (true for contiguous tensors whenever
            `page_size * D` is a multiple of 256, e.g. page 16 at any head dim of 16 or more).
        page_size: tokens per page `P`; slot `s` is token `s % P` of page `s // P`.
        recipe: a recipe `decode_attention_fp4` reads (`"nvfp4"`, `"fp4_mx_block16"`, ...).
        k_global, v_global: nvfp4 only: `float32 [1]` decode global scales; `None` for fp4_mx_block16.
    """

    k: torch.Tensor
    v: torch.Tensor
    page_size: int
    recipe: str
    k_global: torch.Tensor | None = None
    v_global: torch.Tensor | None = None

    @property
    def head_dim(self) -> int:
        """`D`, from the block length: `block = P * 9 * D / 16`."""
        return self.k.shape[-1] * 16 // (9 * self.page_size)


def _check_page_size(page_size: object) -> int:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 2:
        raise ValueError(f"page_size must be an int >= 2 for page blocks, got {page_size!r}")
    return page_size


def to_page_blocks(layer: FP4KVLayer, page_size: int) -> FP4PageBlocks:
    """Copy one layer of slot-major FP4 buffers into page blocks (bit for bit).

    Args:
        layer: an `nvfp4_kvcache_triton.decode_attention.FP4KVLayer` (slot-major `k`/`v`
            `uint8 [slots, H, D/2]`, scales `[slots, H * D/16]` or `[slots, H, D/16]`), on any device.
        page_size: tokens per page `P` (at least 2); `slots` must be a multiple of it.

    Returns:
        An [`FP4PageBlocks`][nvfp4_kvcache_triton.page_blocks.FP4PageBlocks] on the same device,
        `uint8 [slots / P, H, P * (D/2 + D/16)]` for K and for V (a new, contiguous copy).

    Raises:
        ValueError: `page_size` below 2, slots not a multiple of it, or blocks whose strides
            would not be multiples of 16 bytes.

    Examples:
        >>> import torch
        >>> from nvfp4_kvcache_triton.decode_attention import FP4KVLayer
        >>> k = (
        ...     torch.arange(4 * 1 * 32, dtype=torch.int64)
        ...     .remainder(256)
        ...     .to(torch.uint8)
        ...     .reshape(4, 1, 32)
        ... )
        >>> ks = torch.full((4, 4), 127, dtype=torch.uint8)
        >>> blocks = to_page_blocks(FP4KVLayer(k, k, ks, ks, "fp4_mx_block16"), page_size=4)
        >>> tuple(blocks.k.shape)
        (1, 1, 144)
        >>> blocks.k[0, 0, 32:36].tolist()  # token 1's codes follow token 0's
        [32, 33, 34, 35]
    """
    p = _check_page_size(page_size)
    rows, heads, d2 = layer.k.shape
    if rows % p:
        raise ValueError(f"the layer has {rows} slots, not a multiple of page_size={p}")
    if block_bytes(p, 2 * d2) % 16 or (heads * block_bytes(p, 2 * d2)) % 16:
        raise ValueError(f"page blocks of {block_bytes(p, 2 * d2)} bytes are not multiples of 16 "
                         f"(page_size={p}, head_dim={2 * d2}); use a larger page")
    pages = rows // p

    def one(data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        codes = data.reshape(pages, p, heads, d2).transpose(1, 2).reshape(pages, heads, p * d2)
        sc = scale.view(torch.uint8).reshape(pages, p, heads, -1).transpose(1, 2).reshape(pages, heads, -1)
        return torch.cat([codes, sc], dim=-1).contiguous()

    return FP4PageBlocks(one(layer.k, layer.k_scale), one(layer.v, layer.v_scale), p, layer.recipe,
                         layer.k_global, layer.v_global)


def from_page_blocks(blocks: FP4PageBlocks) -> FP4KVLayer:
    """The slot-major buffers of page blocks: the inverse of
    [`to_page_blocks`][nvfp4_kvcache_triton.page_blocks.to_page_blocks] (bit for bit).

    Args:
        blocks: an [`FP4PageBlocks`][nvfp4_kvcache_triton.page_blocks.FP4PageBlocks].

    Returns:
        An `nvfp4_kvcache_triton.decode_attention.FP4KVLayer` with `k`/`v` `uint8 [slots, H, D/2]`
            and scales `uint8 [slots, H, D/16]` (new tensors, same device).

    Examples:
        >>> import torch
        >>> from nvfp4_kvcache_triton.decode_attention import FP4KVLayer
        >>> k = torch.randint(0, 256, (8, 2, 32), dtype=torch.uint8)
        >>> ks = torch.randint(0, 256, (8, 2, 4), dtype=torch.uint8)
        >>> back = from_page_blocks(
        ...     to_page_blocks(FP4KVLayer(k, k, ks, ks, "fp4_mx_block16"), 4)
        ... )
        >>> torch.equal(back.k, k), torch.equal(back.k_scale, ks)
        (True, True)
    """
    from nvfp4_kvcache_triton.decode_attention import FP4KVLayer

    p = blocks.page_size
    pages, heads, _ = blocks.k.shape
    d2, nb = blocks.head_dim // 2, blocks.head_dim // 16

    def one(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = t[..., : p * d2].reshape(pages, heads, p, d2).transpose(1, 2).reshape(pages * p, heads, d2)
        sc = t[..., p * d2 :].reshape(pages, heads, p, nb).transpose(1, 2).reshape(pages * p, heads, nb)
        return codes.contiguous(), sc.contiguous()

    (k, ks), (v, vs) = one(blocks.k), one(blocks.v)
    return FP4KVLayer(k, v, ks, vs, blocks.recipe, blocks.k_global, blocks.v_global)
