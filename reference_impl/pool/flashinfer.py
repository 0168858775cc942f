"""FlashInfer's NVFP4 paged KV layout: the page-major cache its writers fill and its decode reads.

FlashInfer 0.7.4 (`flashinfer/page.py`, `include/flashinfer/page.cuh` in the `flashinfer-python`
wheel) stores an NVFP4 KV cache per layer as four caller-owned tensors, in one of two layouts:

| tensor (per layer) | `kv_layout="NHD"`                      | `kv_layout="HND"`                      |
|--------------------|----------------------------------------|----------------------------------------|
| K / V data         | `uint8 [pages, page_size, H, D/2]`     | `uint8 [pages, H, page_size, D/2]`     |
| K / V block scales | `float8_e4m3fn [pages, page_size, H, D/16]` | `float8_e4m3fn [pages, H, page_size, D/16]` |

plus one `float32` **decode** global scale per layer for K and one for V (`k_scale`, `v_scale`:
the value is `e2m1 * block_scale * global_scale`, the convention of this project's `nvfp4`
recipe). Two E2M1 codes per byte, element `2i` in the low nibble.

**The block scales are linear, not swizzled.** The writer kernels
(`NVFP4QuantizeAppendPagedKVCacheKernel` and `..._WithSlotMappingKernel` in `page.cuh`) store
block `b` of head `h` of token `(page, entry)` at
`page * stride_page + entry * stride_n + h * stride_h + b`: one byte per 16 consecutive elements,
in the same order as the data, with the strides of the scale tensor FlashInfer is given. The
paged dequantize (`fp4_kv_dequantization.cu`, "linear (non-swizzled) block scale layout") and the
FA2 decode path read them the same way. (FlashInfer has a swizzled V-scale variant,
`v_sf_swizzled`, only for a separate prefill module; no writer produces it.)

Token addressing, as FlashInfer's API has it:

* a **page table**: `kv_indptr [B + 1]`, `kv_indices [kv_indptr[-1]]` (the pages of request
  `b` are `kv_indices[kv_indptr[b]:kv_indptr[b + 1]]`, in order) and `kv_last_page_len [B]`
  (tokens in each request's last page); token `pos` of request `b` lives in page
  `kv_indices[kv_indptr[b] + pos // page_size]`, entry `pos % page_size`;
* a **slot mapping**: slot `s = page * page_size + entry`, one per token, negative = padding.

A slot of this cache and a slot of SGLang's slot-major pool are the same number when both use the
same page size: [`from_sglang`][nvfp4_kvcache.pool.flashinfer.from_sglang] and
[`to_sglang`][nvfp4_kvcache.pool.flashinfer.to_sglang] convert between the two without touching
a code or a scale byte.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache
    >>> cache = FlashInferNVFP4KVCache(
    ...     num_pages=4,
    ...     page_size=2,
    ...     layer_num=1,
    ...     head_num=1,
    ...     head_dim=32,
    ...     k_scales=0.5,
    ...     v_scales=0.25,
    ... )
    >>> k = torch.full((3, 1, 32), 3.0, dtype=torch.bfloat16)
    >>> cache.write_slots(0, k, -k, torch.tensor([5, -1, 2]))   # slot -1 is padding
    >>> cache.k_cache[0].shape, cache.k_sf[0].shape
    (torch.Size([4, 2, 1, 16]), torch.Size([4, 2, 1, 2]))
    >>> k_sf, v_sf = cache.kv_cache_sf(0)
    >>> k_sf[2, 1, 0].float().tolist()  # slot 5 = page 2, entry 1; 3 / 6 / 0.5
    [1.0, 1.0]
    >>> cache.gather_kv(0, torch.tensor([5]))[1][0, 0, :3].tolist()
    [-3.0, -3.0, -3.0]
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch

from nvfp4_kvcache.checks import check_same_device
from nvfp4_kvcache.formats import E4M3
from nvfp4_kvcache.pool._checks import INDEX_DTYPES, check_device, global_scales, resolve_layer_id
from nvfp4_kvcache.recipes import OUTPUT_DTYPES, Recipe, get_recipe
from nvfp4_kvcache.rounding import Rounding

if TYPE_CHECKING:  # imported inside the converters at run time (the pool package imports this module)
    from nvfp4_kvcache.pool.mha import MHATokenToKVPoolFP4

__all__ = [
    "KV_LAYOUTS",
    "APPEND_DTYPES",
    "FlashInferNVFP4KVCache",
    "FlashInferNVFP4MLACache",
    "check_recipe",
    "page_table_from_slots",
    "slots_from_page_table",
    "append_slots",
    "fp8_e4m3_codes",
    "from_sglang",
    "to_sglang",
]

KV_LAYOUTS: tuple[str, ...] = ("NHD", "HND")
"""FlashInfer's two paged layouts (`flashinfer/utils.py`, `TensorLayout`)."""

APPEND_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)
"""Input dtypes FlashInfer's NVFP4 writers accept (they refuse `float32`; so does this cache)."""


# -- argument checks --------------------------------------------------------------------------------
def _has_global_scale(recipe: Recipe) -> bool:
    return recipe.has_global_scale


def check_recipe(recipe: object) -> Recipe:
    """The recipe, if this layout can store it: blocks of 16, E4M3 block scales, a global scale.

    The test is on capabilities, not names: any recipe with block size 16 and a second-level
    (global) scale is stored, so NVFP4 variants that only choose block scales differently (the
    4-over-6 search) need no change here.

    Args:
        recipe: a name or a [`Recipe`][nvfp4_kvcache.recipes.base.Recipe].

    Returns:
        The recipe object.

    Raises:
        ValueError: an unknown name, or a recipe without those capabilities.

    Examples:
        >>> check_recipe("nvfp4").name
        'nvfp4'
        >>> check_recipe("mxfp4")
        Traceback (most recent call last):
        ...
        ValueError: FlashInfer's NVFP4 layout stores 16-element blocks with a global scale;
        recipe 'mxfp4' has block size 32 and no global scale
    """
    r = get_recipe(recipe)
    if r.block_size != 16 or not _has_global_scale(r):
        raise ValueError(
            "FlashInfer's NVFP4 layout stores 16-element blocks with a global scale; recipe "
            f"{r.name!r} has block size {r.block_size} and {'a' if _has_global_scale(r) else 'no'} global scale"
        )
    return r


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _same_device(t: torch.Tensor, device: torch.device) -> bool:
    return t.device.type == device.type and (device.index is None or t.device.index == device.index)


def _index_tensor(t: object, name: str, device: torch.device, dtypes=INDEX_DTYPES) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype in {tuple(str(d) for d in dtypes)}, got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if not _same_device(t, device):
        raise ValueError(f"{name} is on {t.device}, the cache is on {device}")
    return t.to(torch.int64)


def _append_tensor(t: object, name: str, shape: tuple[int, ...], device: torch.device, *, min_rows: bool = False):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in APPEND_DTYPES:
        raise ValueError(f"{name} must be torch.bfloat16 or torch.float16 (as FlashInfer's writers), got {t.dtype}")
    ok = (t.dim() == len(shape) and tuple(t.shape[1:]) == shape[1:]
          and (t.shape[0] >= shape[0] if min_rows else t.shape[0] == shape[0]))
    if not ok:
        want = f"[{'>= ' if min_rows else ''}{shape[0]}, {', '.join(map(str, shape[1:]))}]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if not _same_device(t, device):
        raise ValueError(f"{name} is on {t.device}, the cache is on {device}")
    return t


def _unique(slots: torch.Tensor, name: str) -> None:
    if slots.numel() != torch.unique(slots).numel():
        values, counts = torch.unique(slots, return_counts=True)
        dup = values[counts > 1][:5].tolist()
        raise ValueError(f"{name} writes slot(s) {dup} more than once in one call (FlashInfer would race)")


# -- page tables ----------------------------------------------------------------------------------
def _check_page_table(kv_indptr, kv_indices, kv_last_page_len, page_size, num_pages, device):
    indptr = _index_tensor(kv_indptr, "kv_indptr", device)
    indices = _index_tensor(kv_indices, "kv_indices", device)
    last = _index_tensor(kv_last_page_len, "kv_last_page_len", device)
    if indptr.numel() < 1 or int(indptr[0]) != 0 or bool((indptr[1:] < indptr[:-1]).any()):
        raise ValueError(f"kv_indptr must start at 0 and be non-decreasing, got {indptr.tolist()[:8]}")
    if int(indptr[-1]) != indices.numel():
        raise ValueError(f"kv_indices must have kv_indptr[-1] = {int(indptr[-1])} entries, got {indices.numel()}")
    if last.numel() != indptr.numel() - 1:
        raise ValueError(f"kv_last_page_len must have {indptr.numel() - 1} entries (one per request), got {last.numel()}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_pages):
        bad = int(indices.min()) if int(indices.min()) < 0 else int(indices.max())
        raise IndexError(f"kv_indices holds page {bad}, outside the cache's pages [0, {num_pages})")
    pages = indptr[1:] - indptr[:-1]
    lo = torch.where(pages > 0, 1, 0)
    hi = torch.where(pages > 0, page_size, 0)
    bad = ((last < lo) | (last > hi)).nonzero().flatten()
    if bad.numel():
        b = int(bad[0])
        raise ValueError(f"kv_last_page_len[{b}] = {int(last[b])} must lie in [{int(lo[b])}, {int(hi[b])}] "
                         f"for a request with {int(pages[b])} page(s) of {page_size}")
    return indptr, indices, last


def slots_from_page_table(kv_indptr: torch.Tensor, kv_indices: torch.Tensor, kv_last_page_len: torch.Tensor,
                          page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token slots of every request from a FlashInfer page table (its sequences, in order).

    Args:
        kv_indptr: `int32`/`int64 [B + 1]`, page offsets of each request into `kv_indices`.
        kv_indices: `int32`/`int64 [kv_indptr[-1]]`, page ids.
        kv_last_page_len: `int32`/`int64 [B]`, tokens in each request's last page (1..page_size;
            0 for a request with no pages).
        page_size: tokens per page.

    Returns:
        `(token_indptr, token_slots)`, `int64`, on the input's device: request `b`'s tokens are
        the slots `token_slots[token_indptr[b]:token_indptr[b + 1]]` (`slot = page * page_size +
        entry`), the form the oracle's attention takes (`kv_indptr` / `kv_indices` over slots).

    Raises:
        TypeError, ValueError: malformed tables (see [`page_table_from_slots`][nvfp4_kvcache.pool.flashinfer.page_table_from_slots]).

    Examples:
        >>> import torch
        >>> slots_from_page_table(
        ...     torch.tensor([0, 2, 3]), torch.tensor([5, 1, 7]), torch.tensor([1, 3]), 4
        ... )
        (tensor([0, 5, 8]), tensor([20, 21, 22, 23,  4, 28, 29, 30]))
    """
    p = _positive_int(page_size, "page_size")
    dev = kv_indptr.device if isinstance(kv_indptr, torch.Tensor) else torch.device("cpu")
    indptr, indices, last = _check_page_table(kv_indptr, kv_indices, kv_last_page_len, p, 2**62, dev)
    lens = torch.clamp(indptr[1:] - indptr[:-1] - 1, min=0) * p + last
    token_indptr = torch.zeros(lens.numel() + 1, dtype=torch.int64, device=dev)
    token_indptr[1:] = torch.cumsum(lens, 0)
    parts = []
    for b in range(lens.numel()):
        pages = indices[int(indptr[b]):int(indptr[b + 1])]
        slots = (pages.unsqueeze(1) * p + torch.arange(p, device=dev)).reshape(-1)
        parts.append(slots[: int(lens[b])])
    token_slots = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=dev)
    return token_indptr, token_slots


def page_table_from_slots(token_indptr: torch.Tensor, token_slots: torch.Tensor,
                          page_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A FlashInfer page table for requests whose tokens fill whole pages in order.

    Request `b`'s tokens `token_slots[token_indptr[b]:token_indptr[b + 1]]` must be, page after
    page, entries `0, 1, ..., page_size - 1` of one page each (the last page possibly partial):
    the way a paged allocator hands out slots. The inverse of
    [`slots_from_page_table`][nvfp4_kvcache.pool.flashinfer.slots_from_page_table].

    Args:
        token_indptr: `int32`/`int64 [B + 1]`.
        token_slots: `int32`/`int64 [token_indptr[-1]]`, non-negative slots.
        page_size: tokens per page.

    Returns:
        `(kv_indptr, kv_indices, kv_last_page_len)`, `int32` (FlashInfer's index dtype), on
        the input's device.

    Raises:
        TypeError, ValueError: a malformed `token_indptr`, a negative slot, or a request whose
            slots are not page-contiguous (the message names the request and the token).

    Examples:
        >>> import torch
        >>> page_table_from_slots(
        ...     torch.tensor([0, 5, 8]), torch.tensor([20, 21, 22, 23, 4, 28, 29, 30]), 4
        ... )
        (tensor([0, 2, 3], dtype=torch.int32), tensor([5, 1, 7], dtype=torch.int32),
        tensor([1, 3], dtype=torch.int32))
        >>> page_table_from_slots(torch.tensor([0, 2]), torch.tensor([20, 22]), 4)
        Traceback (most recent call last):
        ...
        ValueError: request 0, token 1: slot 22 is not entry 1 of page 5; slots must fill
        pages in order
    """
    p = _positive_int(page_size, "page_size")
    dev = token_indptr.device if isinstance(token_indptr, torch.Tensor) else torch.device("cpu")
    indptr = _index_tensor(token_indptr, "token_indptr", dev)
    slots = _index_tensor(token_slots, "token_slots", dev)
    if indptr.numel() < 1 or int(indptr[0]) != 0 or bool((indptr[1:] < indptr[:-1]).any()):
        raise ValueError(f"token_indptr must start at 0 and be non-decreasing, got {indptr.tolist()[:8]}")
    if int(indptr[-1]) != slots.numel():
        raise ValueError(f"token_slots must have token_indptr[-1] = {int(indptr[-1])} entries, got {slots.numel()}")
    if slots.numel() and int(slots.min()) < 0:
        raise ValueError(f"token_slots must be non-negative, got {int(slots.min())}")
    kv_indptr, kv_indices, last = [0], [], []
    for b in range(indptr.numel() - 1):
        s = slots[int(indptr[b]):int(indptr[b + 1])].cpu()
        n = s.numel()
        pages = s[::p] // p
        expect = (pages.repeat_interleave(p)[:n] * p + torch.arange(n) % p)
        wrong = (expect != s).nonzero().flatten()
        if wrong.numel():
            j = int(wrong[0])
            raise ValueError(f"request {b}, token {j}: slot {int(s[j])} is not entry {j % p} of page "
                             f"{int(pages[j // p])}; slots must fill pages in order")
        kv_indices += pages.tolist()
        kv_indptr.append(len(kv_indices))
        last.append(n - (pages.numel() - 1) * p if n else 0)
    as32 = lambda v: torch.tensor(v, dtype=torch.int32, device=dev)  # noqa: E731
    return as32(kv_indptr), as32(kv_indices), as32(last)


def append_slots(batch_indices: torch.Tensor, positions: torch.Tensor, kv_indptr: torch.Tensor,
                 kv_indices: torch.Tensor, kv_last_page_len: torch.Tensor, page_size: int,
                 num_pages: int | None = None) -> torch.Tensor:
    """The slot each appended row goes to, as FlashInfer's paged writers compute it.

    Row `i` goes to token `positions[i]` of request `batch_indices[i]`: page
    `kv_indices[kv_indptr[b] + pos // page_size]`, entry `pos % page_size`.

    Args:
        batch_indices: `int32`/`int64 [nnz]`, request of each row (`0 <= b < B`).
        positions: `int32`/`int64 [nnz]`, position of each row in its request's sequence, which
            must already include it (`pos < seq_len(b)`, FlashInfer's assumption).
        kv_indptr: `int32`/`int64 [B + 1]`, the page table after the append.
        kv_indices: `int32`/`int64 [kv_indptr[-1]]`.
        kv_last_page_len: `int32`/`int64 [B]`.
        page_size: tokens per page.
        num_pages: pages of the cache, to check `kv_indices` against (default: no bound).

    Returns:
        `int64 [nnz]` slots (`page * page_size + entry`).

    Raises:
        TypeError, ValueError, IndexError: malformed tables, a row outside its request.

    Examples:
        >>> import torch
        >>> append_slots(
        ...     torch.tensor([0, 1]),
        ...     torch.tensor([4, 0]),
        ...     torch.tensor([0, 2, 3]),
        ...     torch.tensor([5, 1, 7]),
        ...     torch.tensor([1, 1]),
        ...     4,
        ... )
        tensor([ 4, 28])
    """
    p = _positive_int(page_size, "page_size")
    dev = batch_indices.device if isinstance(batch_indices, torch.Tensor) else torch.device("cpu")
    indptr, indices, last = _check_page_table(kv_indptr, kv_indices, kv_last_page_len, p,
                                              num_pages if num_pages is not None else 2**62, dev)
    b = _index_tensor(batch_indices, "batch_indices", dev)
    pos = _index_tensor(positions, "positions", dev)
    if b.numel() != pos.numel():
        raise ValueError(f"batch_indices and positions must have the same length, got {b.numel()} and {pos.numel()}")
    if not b.numel():
        return torch.zeros(0, dtype=torch.int64, device=dev)
    nreq = indptr.numel() - 1
    if int(b.min()) < 0 or int(b.max()) >= nreq:
        bad = int(b.min()) if int(b.min()) < 0 else int(b.max())
        raise IndexError(f"batch_indices holds request {bad}, outside [0, {nreq})")
    lens = torch.clamp(indptr[1:] - indptr[:-1] - 1, min=0) * p + last
    outside = ((pos < 0) | (pos >= lens[b])).nonzero().flatten()
    if outside.numel():
        i = int(outside[0])
        raise IndexError(f"positions[{i}] = {int(pos[i])} is outside request {int(b[i])}'s {int(lens[b[i]])} tokens")
    page_iter = indptr[b] + pos // p
    return indices[page_iter] * p + pos % p


# -- the MHA cache --------------------------------------------------------------------------------
class FlashInferNVFP4KVCache:
    """FlashInfer's NVFP4 paged K/V cache (all layers), filled by the oracle's recipe arithmetic.

    Args:
        num_pages: pages per layer.
        page_size: tokens per page.
        layer_num: layers held.
        head_num: KV heads.
        head_dim: head dimension (a multiple of 16).
        kv_layout: `"NHD"` (default) or `"HND"`.
        recipe: a recipe name or object with 16-element blocks and a global scale
            (see [`check_recipe`][nvfp4_kvcache.pool.flashinfer.check_recipe]); default `"nvfp4"`.
        device: where the tensors live.
        k_scales: per-layer K decode global scales (FlashInfer's `k_scale`): a float for all
            layers, a sequence of `layer_num` floats or a `float32 [layer_num]` tensor; default 1.0.
        v_scales: the same for V.
        start_layer: global id of the first layer.

    Attributes:
        k_cache: per layer, `uint8` data (`[num_pages, page_size, H, D/2]` NHD, or HND).
        v_cache: the same for V.
        k_sf: per layer, `uint8` E4M3 block-scale bytes (`[..., D/16]`, linear, same layout).
        v_sf: the same for V.
        k_scales: `float32 [layer_num]`; v_scales likewise.

    Raises:
        TypeError, ValueError: bad sizes, layout, recipe, device or scales.
    """

    def __init__(
        self,
        *,
        num_pages: int,
        page_size: int,
        layer_num: int,
        head_num: int,
        head_dim: int,
        kv_layout: str = "NHD",
        recipe: str | Recipe = "nvfp4",
        device: str | torch.device = "cpu",
        k_scales: object = None,
        v_scales: object = None,
        start_layer: int = 0,
    ) -> None:
        for value, name in ((num_pages, "num_pages"), (page_size, "page_size"), (layer_num, "layer_num"),
                            (head_num, "head_num"), (head_dim, "head_dim")):
            _positive_int(value, name)
        if isinstance(start_layer, bool) or not isinstance(start_layer, int) or start_layer < 0:
            raise ValueError(f"start_layer must be a non-negative int, got {start_layer!r}")
        if kv_layout not in KV_LAYOUTS:
            raise ValueError(f"kv_layout must be one of {KV_LAYOUTS}, got {kv_layout!r}")
        self.recipe = check_recipe(recipe)
        if head_dim % self.recipe.block_size:
            raise ValueError(f"head_dim must be a multiple of the block size {self.recipe.block_size}, got {head_dim}")
        self.device = check_device(device)
        self.num_pages, self.page_size, self.layer_num = num_pages, page_size, layer_num
        self.head_num, self.head_dim, self.kv_layout, self.start_layer = head_num, head_dim, kv_layout, start_layer
        self.k_scales = global_scales(k_scales, "k_scales", self.recipe, layer_num, self.device)
        self.v_scales = global_scales(v_scales, "v_scales", self.recipe, layer_num, self.device)

        def zeros(width: int) -> list[torch.Tensor]:
            return [torch.zeros(self.shape(width), dtype=torch.uint8, device=self.device) for _ in range(layer_num)]

        self.k_cache, self.v_cache = zeros(head_dim // 2), zeros(head_dim // 2)
        self.k_sf, self.v_sf = zeros(head_dim // 16), zeros(head_dim // 16)

    # -- geometry --------------------------------------------------------------------------------
    def shape(self, width: int) -> tuple[int, int, int, int]:
        """Shape of a per-layer tensor whose last dimension is `width` (`D/2` data, `D/16` scales)."""
        if self.kv_layout == "NHD":
            return (self.num_pages, self.page_size, self.head_num, width)
        return (self.num_pages, self.head_num, self.page_size, width)

    @property
    def slots(self) -> int:
        """`num_pages * page_size`: valid slots are `[0, slots)`."""
        return self.num_pages * self.page_size

    @property
    def nbytes(self) -> int:
        """Bytes of every per-layer tensor (data and scales, K and V, all layers)."""
        return sum(t.numel() for name in ("k_cache", "v_cache", "k_sf", "v_sf") for t in getattr(self, name))

    def _local(self, layer: object) -> int:
        return resolve_layer_id(layer, self.start_layer, self.layer_num)

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        """A `[slots, H, width]` view (NHD) or copy (HND) of a per-layer tensor."""
        if self.kv_layout == "NHD":
            return t.view(self.slots, self.head_num, t.shape[-1])
        return t.transpose(1, 2).reshape(self.slots, self.head_num, t.shape[-1])

    def _scatter(self, t: torch.Tensor, slots: torch.Tensor, rows: torch.Tensor) -> None:
        page, entry = slots // self.page_size, slots % self.page_size
        if self.kv_layout == "NHD":
            t[page, entry] = rows
        else:
            t[page, :, entry] = rows

    def layer_tensors(self, layer: object) -> dict[str, torch.Tensor]:
        """`{"k", "v", "k_sf", "v_sf"}` -> this layer's `uint8` tensors (as stored).

        Examples:
            >>> from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache
            >>> c = FlashInferNVFP4KVCache(
            ...     num_pages=2,
            ...     page_size=4,
            ...     layer_num=1,
            ...     head_num=2,
            ...     head_dim=16,
            ...     kv_layout="HND",
            ... )
            >>> {name: tuple(t.shape) for name, t in c.layer_tensors(0).items()}
            {'k': (2, 2, 4, 8), 'v': (2, 2, 4, 8), 'k_sf': (2, 2, 4, 1), 'v_sf': (2, 2, 4, 1)}
        """
        i = self._local(layer)
        return {"k": self.k_cache[i], "v": self.v_cache[i], "k_sf": self.k_sf[i], "v_sf": self.v_sf[i]}

    def paged_kv_cache(self, layer: object) -> tuple[torch.Tensor, torch.Tensor]:
        """`(k_cache, v_cache)` of one layer as FlashInfer's `paged_kv_cache` tuple (views)."""
        t = self.layer_tensors(layer)
        return t["k"], t["v"]

    def kv_cache_sf(self, layer: object) -> tuple[torch.Tensor, torch.Tensor]:
        """`(k_scales, v_scales)` of one layer as FlashInfer's `kv_cache_sf` tuple:
        `float8_e4m3fn` views of the scale bytes (no copy)."""
        t = self.layer_tensors(layer)
        return t["k_sf"].view(torch.float8_e4m3fn), t["v_sf"].view(torch.float8_e4m3fn)

    def state_digest(self) -> str:
        """SHA-256 over every tensor and global scale: equal digests mean byte-identical caches."""
        h = hashlib.sha256()
        for name in ("k_cache", "v_cache", "k_sf", "v_sf", "k_scales", "v_scales"):
            value = getattr(self, name)
            for i, t in enumerate(value if isinstance(value, list) else [value]):
                h.update(f"{name}[{i}]{tuple(t.shape)}".encode())
                h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    # -- writers ---------------------------------------------------------------------------------
    def _write(self, i: int, slots: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Quantize with the recipe (the oracle's arithmetic) and store; all checks done before."""
        qk = self.recipe.quantize(key, self.k_scales[i])
        qv = self.recipe.quantize(value, self.v_scales[i])
        for t, rows in ((self.k_cache[i], qk.packed), (self.v_cache[i], qv.packed),
                        (self.k_sf[i], qk.scales), (self.v_sf[i], qv.scales)):
            self._scatter(t, slots, rows)

    def append(self, layer: object, append_key: torch.Tensor, append_value: torch.Tensor,
               batch_indices: torch.Tensor, positions: torch.Tensor, kv_indices: torch.Tensor,
               kv_indptr: torch.Tensor, kv_last_page_len: torch.Tensor) -> None:
        """Quantize and write rows by page table: `nvfp4_quantize_append_paged_kv_cache`'s contract.

        Args:
            layer: global layer id (or an object with `.layer_id`).
            append_key: `bfloat16`/`float16 [nnz, H, D]` on the cache's device.
            append_value: same shape and dtype.
            batch_indices: `int32`/`int64 [nnz]`, request of each row.
            positions: `int32`/`int64 [nnz]`, token position of each row in its request.
            kv_indices: `int32`/`int64 [kv_indptr[-1]]`, pages (in `[0, num_pages)`).
            kv_indptr: `int32`/`int64 [B + 1]`.
            kv_last_page_len: `int32`/`int64 [B]`.

        Raises:
            TypeError, ValueError, IndexError: any bad argument, or two rows aimed at one slot;
                nothing is written then.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache
            >>> c = FlashInferNVFP4KVCache(
            ...     num_pages=8, page_size=4, layer_num=1, head_num=1, head_dim=16
            ... )
            >>> x = torch.ones(2, 1, 16, dtype=torch.bfloat16)
            >>> c.append(
            ...     0,
            ...     x,
            ...     x,
            ...     torch.tensor([0, 0]),
            ...     torch.tensor([4, 5]),
            ...     torch.tensor([3, 6]),
            ...     torch.tensor([0, 2]),
            ...     torch.tensor([2]),
            ... )
            >>> codes = c.k_cache[0][6, :2, 0, 0].tolist()  # page 6: positions 4 and 5
            >>> [hex(b) for b in codes]
            ['0x77', '0x77']
            >>> sf = c.k_sf[0][6, 0, 0, 0].view(torch.float8_e4m3fn)
            >>> sf.item()  # E4M3(1 / 6); 1 / 0.171875 -> code 7
            0.171875
        """
        i = self._local(layer)
        _index_tensor(batch_indices, "batch_indices", self.device)
        slots = append_slots(batch_indices, positions, kv_indptr, kv_indices, kv_last_page_len,
                             self.page_size, self.num_pages)
        shape = (slots.numel(), self.head_num, self.head_dim)
        _append_tensor(append_key, "append_key", shape, self.device)
        _append_tensor(append_value, "append_value", shape, self.device)
        if append_value.dtype != append_key.dtype:
            raise ValueError(f"append_key and append_value must have the same dtype, got "
                             f"{append_key.dtype} and {append_value.dtype}")
        _unique(slots, "the page table")
        self._write(i, slots, append_key, append_value)

    def write_slots(self, layer: object, append_key: torch.Tensor, append_value: torch.Tensor,
                    slot_mapping: torch.Tensor) -> None:
        """Quantize and write rows by slot: `nvfp4_quantize_append_paged_kv_cache_with_slot_mapping`.

        Args:
            layer: global layer id.
            append_key: `bfloat16`/`float16 [rows, H, D]`, `rows >= len(slot_mapping)`; only the
                first `len(slot_mapping)` rows are read (FlashInfer's padded batches).
            append_value: same shape and dtype.
            slot_mapping: `int32`/`int64 [n]`, `page * page_size + entry`; negative = padding,
                skipped.

        Raises:
            TypeError, ValueError, IndexError: bad arguments, a slot at or past `slots` (FlashInfer
                skips those silently; here it is an error), or a slot written twice.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache
            >>> c = FlashInferNVFP4KVCache(
            ...     num_pages=2, page_size=4, layer_num=1, head_num=1, head_dim=16
            ... )
            >>> x = torch.ones(3, 1, 16, dtype=torch.float16)
            >>> c.write_slots(0, x, x, torch.tensor([7, -1]))
            >>> c.write_slots(0, x, x, torch.tensor([8]))
            Traceback (most recent call last):
            ...
            IndexError: slot_mapping holds slot 8, outside the cache's slots [0, 8)
        """
        i = self._local(layer)
        sm = _index_tensor(slot_mapping, "slot_mapping", self.device)
        n = sm.numel()
        shape = (n, self.head_num, self.head_dim)
        _append_tensor(append_key, "append_key", shape, self.device, min_rows=True)
        _append_tensor(append_value, "append_value", shape, self.device, min_rows=True)
        if append_value.dtype != append_key.dtype or append_value.shape != append_key.shape:
            raise ValueError(f"append_key and append_value must have the same shape and dtype, got "
                             f"{tuple(append_key.shape)} {append_key.dtype} and {tuple(append_value.shape)} {append_value.dtype}")
        if n and int(sm.max()) >= self.slots:
            raise IndexError(f"slot_mapping holds slot {int(sm.max())}, outside the cache's slots [0, {self.slots})")
        keep = (sm >= 0).nonzero().flatten()
        slots = sm[keep]
        _unique(slots, "slot_mapping")
        self._write(i, slots, append_key[:n][keep], append_value[:n][keep])

    # -- readers ---------------------------------------------------------------------------------
    def _dequant(self, i: int, which: str, slots: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        data = self._rows(self.k_cache[i] if which == "k" else self.v_cache[i])[slots]
        scales = self._rows(self.k_sf[i] if which == "k" else self.v_sf[i])[slots]
        g = (self.k_scales if which == "k" else self.v_scales)[i]
        return self.recipe.dequantize_parts(data, scales, g, dtype)

    def gather_kv(self, layer: object, slots: torch.Tensor,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantize slots (repeats allowed): `(k, v)`, each `dtype [n, H, D]`.

        Raises:
            TypeError, ValueError, IndexError: bad layer, slots or dtype.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache
            >>> c = FlashInferNVFP4KVCache(
            ...     num_pages=2,
            ...     page_size=2,
            ...     layer_num=1,
            ...     head_num=1,
            ...     head_dim=16,
            ...     kv_layout="HND",
            ...     v_scales=2.0,
            ... )
            >>> x = torch.full((1, 1, 16), 6.0, dtype=torch.bfloat16)
            >>> c.write_slots(0, x, x, torch.tensor([3]))
            >>> [t[0, 0, 0].item() for t in c.gather_kv(0, torch.tensor([3]))]
            [6.0, 6.0]
        """
        i = self._local(layer)
        s = _index_tensor(slots, "slots", self.device)
        if s.numel() and (int(s.min()) < 0 or int(s.max()) >= self.slots):
            bad = int(s.min()) if int(s.min()) < 0 else int(s.max())
            raise IndexError(f"slots holds slot {bad}, outside the cache's slots [0, {self.slots})")
        if dtype not in OUTPUT_DTYPES:
            raise ValueError(f"dtype must be one of {OUTPUT_DTYPES}, got {dtype}")
        return self._dequant(i, "k", s, dtype), self._dequant(i, "v", s, dtype)

    def dequantize_paged(self, layer: object, block_tables: torch.Tensor, seq_lens: torch.Tensor,
                         out_k: torch.Tensor | None = None, out_v: torch.Tensor | None = None,
                         dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantize whole sequences: `nvfp4_kv_dequantize_paged`'s contract.

        Args:
            layer: global layer id.
            block_tables: `int32`/`int64 [B, max_pages]`, page ids of each request in order.
            seq_lens: `int32 [B]`, tokens of each request (`<= max_pages * page_size`).
            out_k: optional `bfloat16`/`float16 [B, max_seq_len, H, D]`; positions at or past a
                request's length are left as they are (FlashInfer's contract). Default: a new
                tensor of zeros with `max_seq_len = max(seq_lens)`.
            out_v: the same for V (both or neither).
            dtype: output dtype when `out_k` is not given (`bfloat16` or `float16`).

        Returns:
            `(out_k, out_v)`.

        Raises:
            TypeError, ValueError, IndexError: bad tables, lengths, outputs or a page outside the
                cache; nothing is written then.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache
            >>> c = FlashInferNVFP4KVCache(
            ...     num_pages=4, page_size=2, layer_num=1, head_num=1, head_dim=16
            ... )
            >>> x = (
            ...     (3 * torch.arange(3.0))
            ...     .repeat_interleave(16)
            ...     .reshape(3, 1, 16)
            ...     .to(torch.bfloat16)
            ... )
            >>> c.write_slots(0, x, x, torch.tensor([6, 7, 2]))       # pages 3, 3, 1
            >>> k, v = c.dequantize_paged(
            ...     0, torch.tensor([[3, 1]]), torch.tensor([3], dtype=torch.int32)
            ... )
            >>> k[0, :, 0, 0].tolist()
            [0.0, 3.0, 6.0]
        """
        i = self._local(layer)
        if not isinstance(block_tables, torch.Tensor) or block_tables.dtype not in INDEX_DTYPES or block_tables.dim() != 2:
            raise ValueError("block_tables must be a 2-D int32/int64 tensor [batch, max_pages]")
        if not _same_device(block_tables, self.device):
            raise ValueError(f"block_tables is on {block_tables.device}, the cache is on {self.device}")
        lens = _index_tensor(seq_lens, "seq_lens", self.device, dtypes=(torch.int32,))
        bsz, max_pages = block_tables.shape
        if lens.numel() != bsz:
            raise ValueError(f"seq_lens must have {bsz} entries (one per block_tables row), got {lens.numel()}")
        if lens.numel() and (int(lens.min()) < 0 or int(lens.max()) > max_pages * self.page_size):
            raise ValueError(f"seq_lens must lie in [0, {max_pages * self.page_size}], got {lens.tolist()[:8]}")
        if (out_k is None) != (out_v is None):
            raise ValueError("pass both out_k and out_v, or neither")
        max_len = int(lens.max()) if lens.numel() else 0
        want = None
        if out_k is not None:
            for t, name in ((out_k, "out_k"), (out_v, "out_v")):
                if not isinstance(t, torch.Tensor) or t.dtype not in APPEND_DTYPES or t.dim() != 4:
                    raise ValueError(f"{name} must be a 4-D bfloat16/float16 tensor")
                if not _same_device(t, self.device):
                    raise ValueError(f"{name} is on {t.device}, the cache is on {self.device}")
            want = (bsz, out_k.shape[1], self.head_num, self.head_dim)
            if tuple(out_k.shape) != want or tuple(out_v.shape) != want or out_k.dtype != out_v.dtype:
                raise ValueError(f"out_k and out_v must both have shape [B, max_seq_len, H, D] = {want} and one dtype, "
                                 f"got {tuple(out_k.shape)} {out_k.dtype} and {tuple(out_v.shape)} {out_v.dtype}")
            if out_k.shape[1] < max_len:
                raise ValueError(f"out_k's sequence dimension {out_k.shape[1]} is shorter than max(seq_lens) = {max_len}")
        elif dtype not in APPEND_DTYPES:
            raise ValueError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype}")
        tables = block_tables.to(torch.int64)
        token_slots = []
        for b in range(bsz):
            n = int(lens[b])
            pages = tables[b, : (n + self.page_size - 1) // self.page_size]
            if pages.numel() and (int(pages.min()) < 0 or int(pages.max()) >= self.num_pages):
                bad = int(pages.min()) if int(pages.min()) < 0 else int(pages.max())
                raise IndexError(f"block_tables[{b}] holds page {bad}, outside the cache's pages [0, {self.num_pages})")
            token_slots.append((pages.unsqueeze(1) * self.page_size + torch.arange(self.page_size, device=self.device))
                               .reshape(-1)[:n])
        if out_k is None:
            out_k = torch.zeros(bsz, max_len, self.head_num, self.head_dim, dtype=dtype, device=self.device)
            out_v = torch.zeros_like(out_k)
        for b, s in enumerate(token_slots):
            if s.numel():
                out_k[b, : s.numel()] = self._dequant(i, "k", s, out_k.dtype)
                out_v[b, : s.numel()] = self._dequant(i, "v", s, out_v.dtype)
        return out_k, out_v


# -- MLA --------------------------------------------------------------------------------------------
def fp8_e4m3_codes(x: torch.Tensor) -> torch.Tensor:
    """`float32` values -> `float8_e4m3fn` bytes, rounding to nearest even and **saturating**.

    The rule of CUDA's `__nv_fp8_e4m3(float)` constructor (`cvt.rn.satfinite`): finite values
    past 448 and infinities become +-448 (`0x7E`/`0xFE`), NaN becomes `0x7F`, the sign of zero is
    kept.

    Args:
        x: `float32` tensor, any shape and device.

    Returns:
        `uint8` tensor of the same shape.

    Examples:
        >>> import torch
        >>> [
        ...     hex(b)
        ...     for b in fp8_e4m3_codes(
        ...         torch.tensor([1.0, -0.0, 1000.0, float("-inf"), float("nan")])
        ...     ).tolist()
        ... ]
        ['0x38', '0x80', '0x7e', '0xfe', '0x7f']
    """
    nan = torch.isnan(x)
    mag = E4M3.encode_magnitude(torch.where(nan, 0.0, x.abs()), Rounding.NEAREST_EVEN)
    sign = torch.where(torch.signbit(x), E4M3.sign_bit, 0).to(torch.uint8)
    return torch.where(nan, torch.full_like(mag, E4M3.nan_magnitude_codes[0]), sign | mag)


class FlashInferNVFP4MLACache:
    """FlashInfer's NVFP4 MLA paged cache (`nvfp4_quantize_append_paged_mla_kv_cache`), one layer.

    The compressed KV (`ckv`, 512 wide) is NVFP4 with the recipe's arithmetic and a decode global
    scale `ckv_scale`; the RoPE part (`kpe`, 64 wide) is stored as FP8 E4M3 with a per-tensor
    decode scale `kpe_scale`: byte = [`fp8_e4m3_codes`][nvfp4_kvcache.pool.flashinfer.fp8_e4m3_codes]
    of `fl(kpe * fl(1 / kpe_scale))`, as the kernel computes it (`__frcp_rn`, then a saturating
    conversion). FlashInfer 0.7.4 accepts only `ckv_dim = 512`, `kpe_dim = 64`; so does this cache.

    Args:
        num_pages: pages.
        page_size: tokens per page.
        ckv_scale: NVFP4 decode global scale of the compressed part (positive normal float32).
        kpe_scale: FP8 decode scale of the RoPE part (positive normal float32).
        recipe: a recipe with 16-element blocks and a global scale (default `"nvfp4"`).
        device: where the tensors live.

    Attributes:
        ckv_cache: `uint8 [num_pages, page_size, 256]`.
        ckv_sf: `uint8 [num_pages, page_size, 32]`, E4M3 bytes (FlashInfer: a `float8_e4m3fn` tensor).
        kpe_cache: `uint8 [num_pages, page_size, 64]`, E4M3 bytes.

    Examples:
        >>> import torch
        >>> from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4MLACache
        >>> c = FlashInferNVFP4MLACache(
        ...     num_pages=2, page_size=4, ckv_scale=1.0, kpe_scale=0.5
        ... )
        >>> ckv, kpe = torch.ones(1, 512, dtype=torch.bfloat16), torch.full(
        ...     (1, 64), 3.0, dtype=torch.bfloat16
        ... )
        >>> c.append(
        ...     ckv,
        ...     kpe,
        ...     torch.tensor([0]),
        ...     torch.tensor([0]),
        ...     torch.tensor([1]),
        ...     torch.tensor([0, 1]),
        ...     torch.tensor([1]),
        ... )
        >>> c.kpe_cache[1, 0, 0].view(torch.float8_e4m3fn).item()     # 3 / 0.5
        6.0
    """

    CKV_DIM = 512
    KPE_DIM = 64

    def __init__(self, *, num_pages: int, page_size: int, ckv_scale: float, kpe_scale: float,
                 recipe: str | Recipe = "nvfp4", device: str | torch.device = "cpu") -> None:
        _positive_int(num_pages, "num_pages")
        _positive_int(page_size, "page_size")
        self.recipe = check_recipe(recipe)
        self.device = check_device(device)
        self.num_pages, self.page_size = num_pages, page_size
        self.ckv_scale = global_scales(ckv_scale, "ckv_scale", self.recipe, 1, self.device)
        self.kpe_scale = global_scales(kpe_scale, "kpe_scale", self.recipe, 1, self.device)
        z = lambda w: torch.zeros(num_pages, page_size, w, dtype=torch.uint8, device=self.device)  # noqa: E731
        self.ckv_cache, self.ckv_sf, self.kpe_cache = z(self.CKV_DIM // 2), z(self.CKV_DIM // 16), z(self.KPE_DIM)

    def state_digest(self) -> str:
        """SHA-256 over the three caches and both scales."""
        h = hashlib.sha256()
        for name in ("ckv_cache", "ckv_sf", "kpe_cache", "ckv_scale", "kpe_scale"):
            h.update(name.encode())
            h.update(getattr(self, name).detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def append(self, append_ckv: torch.Tensor, append_kpe: torch.Tensor, batch_indices: torch.Tensor,
               positions: torch.Tensor, kv_indices: torch.Tensor, kv_indptr: torch.Tensor,
               kv_last_page_len: torch.Tensor) -> None:
        """Quantize and write MLA rows by page table.

        Args:
            append_ckv: `bfloat16`/`float16 [nnz, 512]`.
            append_kpe: same dtype, `[nnz, 64]` (RoPE already applied).
            batch_indices: `int32`/`int64 [nnz]`, request of each row.
            positions: `int32`/`int64 [nnz]`, token position of each row in its request.
            kv_indices: `int32`/`int64 [kv_indptr[-1]]`, pages.
            kv_indptr: `int32`/`int64 [B + 1]`.
            kv_last_page_len: `int32`/`int64 [B]`.

        Raises:
            TypeError, ValueError, IndexError: bad arguments; nothing is written then.
        """
        _index_tensor(batch_indices, "batch_indices", self.device)
        slots = append_slots(batch_indices, positions, kv_indptr, kv_indices, kv_last_page_len,
                             self.page_size, self.num_pages)
        n = slots.numel()
        _append_tensor(append_ckv, "append_ckv", (n, self.CKV_DIM), self.device)
        _append_tensor(append_kpe, "append_kpe", (n, self.KPE_DIM), self.device)
        if append_kpe.dtype != append_ckv.dtype:
            raise ValueError(f"append_ckv and append_kpe must have the same dtype, got {append_ckv.dtype} and {append_kpe.dtype}")
        _unique(slots, "the page table")
        q = self.recipe.quantize(append_ckv, self.ckv_scale[0])
        inv = 1.0 / self.kpe_scale[0]                                   # fl(1 / kpe_scale)
        kpe = fp8_e4m3_codes(append_kpe.to(torch.float32) * inv)       # fl(kpe * inv), then saturating E4M3
        page, entry = slots // self.page_size, slots % self.page_size
        self.ckv_cache[page, entry] = q.packed
        self.ckv_sf[page, entry] = q.scales
        self.kpe_cache[page, entry] = kpe


# -- converters between SGLang's slot-major pool and this layout -------------------------------------
def from_sglang(pool: MHATokenToKVPoolFP4, kv_layout: str = "NHD", page_size: int | None = None) -> FlashInferNVFP4KVCache:
    """FlashInfer's layout holding exactly the bytes of an SGLang `MHATokenToKVPoolFP4`.

    SGLang's row (slot) `s` becomes page `s // page_size`, entry `s % page_size`: for NHD the
    data and scale bytes are the same bytes in the same order (a reshape), for HND each page is
    transposed to head-major. Slot numbers, codes, scale bytes and global scales are unchanged,
    so a slot mapping written for one is valid for the other.

    Args:
        pool: an [`MHATokenToKVPoolFP4`][nvfp4_kvcache.pool.mha.MHATokenToKVPoolFP4] with a recipe this
            layout stores (16-element blocks, a global scale: `nvfp4`).
        kv_layout: `"NHD"` or `"HND"`.
        page_size: FlashInfer's page size; default the pool's. Must divide the pool's rows.

    Returns:
        A new [`FlashInferNVFP4KVCache`][nvfp4_kvcache.pool.flashinfer.FlashInferNVFP4KVCache] with
        `num_pages = rows // page_size` (page 0 holds SGLang's padding slot 0).

    Raises:
        TypeError, ValueError: not an MHA FP4 pool, a recipe this layout cannot store, a bad
            layout, or a page size that does not divide the rows.

    Examples:
        >>> import torch
        >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
        >>> from nvfp4_kvcache.pool.flashinfer import from_sglang
        >>> pool = MHATokenToKVPoolFP4(
        ...     size=8,
        ...     page_size=4,
        ...     layer_num=1,
        ...     head_num=2,
        ...     head_dim=16,
        ...     recipe="nvfp4",
        ...     k_scales=0.5,
        ...     v_scales=0.25,
        ... )
        >>> pool.set_kv_buffer(
        ...     0, torch.tensor([5]), torch.randn(1, 2, 16), torch.randn(1, 2, 16)
        ... )
        >>> cache = from_sglang(pool, "HND")
        >>> cache.k_cache[0].shape, bool(
        ...     (cache.k_cache[0][1, :, 1] == pool.k_buffer[0][5]).all()
        ... )
        (torch.Size([3, 2, 4, 8]), True)
    """
    from nvfp4_kvcache.pool.mha import MHATokenToKVPoolFP4

    if not isinstance(pool, MHATokenToKVPoolFP4):
        raise TypeError(f"pool must be an MHATokenToKVPoolFP4, got {type(pool).__name__}")
    recipe = check_recipe(pool.recipe)
    p = pool.page_size if page_size is None else _positive_int(page_size, "page_size")
    if pool.rows % p:
        raise ValueError(f"page_size {p} must divide the pool's {pool.rows} rows")
    cache = FlashInferNVFP4KVCache(num_pages=pool.rows // p, page_size=p, layer_num=pool.layer_num,
                                   head_num=pool.head_num, head_dim=pool.head_dim, kv_layout=kv_layout,
                                   recipe=recipe, device=pool.device, k_scales=pool.k_scales.cpu(),
                                   v_scales=pool.v_scales.cpu(), start_layer=pool.start_layer)
    for i in range(pool.layer_num):
        for src, dst in ((pool.k_buffer[i], cache.k_cache[i]), (pool.v_buffer[i], cache.v_cache[i]),
                         (pool.k_scale_buffer[i], cache.k_sf[i]), (pool.v_scale_buffer[i], cache.v_sf[i])):
            paged = src.reshape(cache.num_pages, p, pool.head_num, -1)
            dst.copy_(paged if kv_layout == "NHD" else paged.transpose(1, 2))
    return cache


def to_sglang(cache: FlashInferNVFP4KVCache) -> MHATokenToKVPoolFP4:
    """An SGLang `MHATokenToKVPoolFP4` holding exactly the bytes of a FlashInfer-layout cache.

    Slot `s = page * page_size + entry` becomes row `s` of the slot-major pool, whose
    `size = (num_pages - 1) * page_size` (SGLang reserves one page for its padding slot 0; here
    page 0 keeps whatever bytes it holds).

    Args:
        cache: a [`FlashInferNVFP4KVCache`][nvfp4_kvcache.pool.flashinfer.FlashInferNVFP4KVCache]
            with at least 2 pages.

    Returns:
        A new [`MHATokenToKVPoolFP4`][nvfp4_kvcache.pool.mha.MHATokenToKVPoolFP4] with the cache's
        recipe, page size, layers and global scales.

    Raises:
        TypeError, ValueError: not a FlashInfer cache, or a single page (SGLang's pool needs one
            page beyond its padding page).

    Examples:
        >>> import torch
        >>> from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache, to_sglang
        >>> c = FlashInferNVFP4KVCache(
        ...     num_pages=3, page_size=4, layer_num=1, head_num=1, head_dim=16
        ... )
        >>> x = torch.full((1, 1, 16), 3.0, dtype=torch.bfloat16)
        >>> c.write_slots(0, x, x, torch.tensor([9]))
        >>> pool = to_sglang(c)
        >>> pool.size, pool.gather_kv(0, torch.tensor([9]))[0][0, 0, 0].item()
        (8, 3.0)
    """
    from nvfp4_kvcache.pool.mha import MHATokenToKVPoolFP4

    if not isinstance(cache, FlashInferNVFP4KVCache):
        raise TypeError(f"cache must be a FlashInferNVFP4KVCache, got {type(cache).__name__}")
    if cache.num_pages < 2:
        raise ValueError("an SGLang pool needs at least 2 pages (page 0 is its padding page), got 1")
    pool = MHATokenToKVPoolFP4(size=(cache.num_pages - 1) * cache.page_size, page_size=cache.page_size,
                               layer_num=cache.layer_num, head_num=cache.head_num, head_dim=cache.head_dim,
                               recipe=cache.recipe, device=cache.device, k_scales=cache.k_scales.cpu(),
                               v_scales=cache.v_scales.cpu(), start_layer=cache.start_layer)
    for i in range(cache.layer_num):
        for src, dst in ((cache.k_cache[i], pool.k_buffer[i]), (cache.v_cache[i], pool.v_buffer[i]),
                         (cache.k_sf[i], pool.k_scale_buffer[i]), (cache.v_sf[i], pool.v_scale_buffer[i])):
            dst.copy_(cache._rows(src).reshape(dst.shape))
    return pool
