"""What the MHA and MLA FP4 pools share: geometry, layer lookup, slot moves, host copies, digests.

A pool is a list of per-layer `uint8` tensors (packed data and scale bytes) plus, for `nvfp4`,
per-layer `float32` global scales. Every public method checks all its arguments before it
writes anything, so a rejected call leaves every byte of the pool as it was.
"""

from __future__ import annotations

import abc
import hashlib

import torch

from nvfp4_kvcache.pool._checks import check_device, check_loc, resolve_layer_id
from nvfp4_kvcache.pool.layout import _pool_recipe, check_pool_geometry, pool_rows
from nvfp4_kvcache.recipes import Recipe

__all__ = ["FP4TokenToKVPoolBase", "PADDING_SLOT"]

PADDING_SLOT = 0
"""Slot that padded tokens write to; never allocated to a request (SGLang's convention)."""


class FP4TokenToKVPoolBase(abc.ABC):
    """Common part of [`MHATokenToKVPoolFP4`][nvfp4_kvcache.pool.MHATokenToKVPoolFP4] and
    [`MLATokenToKVPoolFP4`][nvfp4_kvcache.pool.MLATokenToKVPoolFP4] (not used directly)."""

    def __init__(
        self,
        *,
        size: int,
        page_size: int,
        layer_num: int,
        recipe: str,
        device: str | torch.device,
        start_layer: int,
    ) -> None:
        check_pool_geometry(size, page_size, layer_num)
        if isinstance(start_layer, bool) or not isinstance(start_layer, int) or start_layer < 0:
            raise ValueError(f"start_layer must be a non-negative int, got {start_layer!r}")
        self.recipe: Recipe = _pool_recipe(recipe)
        self.size = size
        self.page_size = page_size
        self.layer_num = layer_num
        self.start_layer = start_layer
        self.device = check_device(device)

    # -- geometry -------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows per layer buffer: `size + page_size` (slot 0 is the padding slot)."""
        return pool_rows(self.size, self.page_size)

    def _local(self, layer: object) -> int:
        return resolve_layer_id(layer, self.start_layer, self.layer_num)

    def _loc(self, loc: object, name: str = "loc", unique: bool = True) -> torch.Tensor:
        return check_loc(loc, self.rows, self.device, name=name, unique=unique)

    @staticmethod
    def _last_write_wins(loc: torch.Tensor) -> torch.Tensor:
        """Rows of `loc` to write so that the padding slot, which may repeat, gets one write."""
        keep = torch.ones_like(loc, dtype=torch.bool)
        pad = (loc == PADDING_SLOT).nonzero().flatten()
        if pad.numel() > 1:
            keep[pad[:-1]] = False
        return keep

    @abc.abstractmethod
    def layer_tensors(self, layer: object) -> dict[str, torch.Tensor]:
        """Name -> per-layer `uint8` tensor (all indexed by slot on dim 0) of one layer."""

    def global_scale_tensors(self) -> dict[str, torch.Tensor]:
        """Name -> `float32 [layer_num]` global scales (empty for `fp4_mx_block16`)."""
        return {}

    @property
    def nbytes(self) -> int:
        """Bytes of all per-layer buffers (data and scales, every layer)."""
        return sum(t.numel() * t.element_size() for i in range(self.layer_num)
                   for t in self.layer_tensors(self.start_layer + i).values())

    def state_digest(self) -> str:
        """SHA-256 over every buffer and global scale: equal digests mean byte-identical pools.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
            >>> pool = MHATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, head_num=1, head_dim=16
            ... )
            >>> before = pool.state_digest()
            >>> try:
            ...     pool.set_kv_buffer(
            ...         0, torch.tensor([9]), torch.ones(1, 1, 16), torch.ones(1, 1, 16)
            ...     )
            ... except IndexError as err:
            ...     print(err)
            loc holds slot 9, outside the pool's slots [0, 5)
            >>> pool.state_digest() == before
            True
        """
        h = hashlib.sha256()
        for i in range(self.layer_num):
            for name, t in self.layer_tensors(self.start_layer + i).items():
                h.update(f"{i}:{name}:{tuple(t.shape)}".encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        for name, t in self.global_scale_tensors().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    # -- slot moves and host copies: data and scales always travel together --------------------
    def move_kv_cache(self, tgt_loc: torch.Tensor, src_loc: torch.Tensor) -> None:
        """Copy slots `src_loc` to `tgt_loc` in every layer, data **and** scales.

        Args:
            tgt_loc: `int64`/`int32 [n]`, distinct slots (slot 0 may repeat).
            src_loc: `int64`/`int32 [n]`; may overlap `tgt_loc` (all rows are read first).

        Raises:
            TypeError, ValueError, IndexError: bad indices or lengths that differ.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
            >>> pool = MHATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, head_num=1, head_dim=16
            ... )
            >>> pool.set_kv_buffer(
            ...     0, torch.tensor([1]), torch.full((1, 1, 16), 3.0), torch.ones(1, 1, 16)
            ... )
            >>> pool.move_kv_cache(torch.tensor([4]), torch.tensor([1]))
            >>> pool.gather_kv(0, torch.tensor([4]))[0][0, 0, :2].tolist()
            [3.0, 3.0]
        """
        tgt = self._loc(tgt_loc, "tgt_loc")
        src = self._loc(src_loc, "src_loc", unique=False)
        if tgt.numel() != src.numel():
            raise ValueError(f"tgt_loc and src_loc must have the same length, got {tgt.numel()} and {src.numel()}")
        keep = self._last_write_wins(tgt)
        for i in range(self.layer_num):
            for t in self.layer_tensors(self.start_layer + i).values():
                rows = t[src[keep]].clone()
                t[tgt[keep]] = rows

    def get_cpu_copy(self, loc: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Host copy of slots `loc`: per layer, every buffer's rows (data and scales).

        Returns:
            `layer_num` dicts, name -> CPU `uint8` tensor whose dim 0 follows `loc`.

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
            >>> pool = MLATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=2, kv_lora_rank=32, qk_rope_head_dim=16
            ... )
            >>> copy = pool.get_cpu_copy(torch.tensor([1, 2]))
            >>> len(copy), {name: tuple(t.shape) for name, t in copy[0].items()}
            (2, {'kv': (2, 1, 24), 'kv_scale': (2, 3)})
        """
        idx = self._loc(loc, unique=False)
        return [
            {name: t[idx].to("cpu", copy=True) for name, t in self.layer_tensors(self.start_layer + i).items()}
            for i in range(self.layer_num)
        ]

    def load_cpu_copy(self, copy: list[dict[str, torch.Tensor]], loc: torch.Tensor) -> None:
        """Write a [`get_cpu_copy`][nvfp4_kvcache.pool.base.FP4TokenToKVPoolBase.get_cpu_copy] result back into slots `loc`.

        Raises:
            TypeError, ValueError, IndexError: bad `loc`, or a copy whose layers, buffer names,
                shapes or dtypes do not match this pool (e.g. one that lost its scale buffers).

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
            >>> pool = MHATokenToKVPoolFP4(
            ...     size=4, page_size=1, layer_num=1, head_num=1, head_dim=16
            ... )
            >>> pool.set_kv_buffer(
            ...     0, torch.tensor([1]), torch.full((1, 1, 16), 5.0), torch.ones(1, 1, 16)
            ... )
            >>> saved = pool.get_cpu_copy(torch.tensor([1]))
            >>> pool.load_cpu_copy(saved, torch.tensor([3]))
            >>> k, _ = pool.gather_kv(0, torch.tensor([3]))
            >>> k[0, 0, 0].item()  # 5 rounds (ties away) to 6
            6.0
            >>> pool.load_cpu_copy(
            ...     [{"k": saved[0]["k"], "v": saved[0]["v"]}], torch.tensor([2])
            ... )
            Traceback (most recent call last):
            ...
            ValueError: copy[0] must hold buffers ['k', 'k_scale', 'v', 'v_scale'], got ['k',
            'v']
        """
        idx = self._loc(loc)
        if not isinstance(copy, list) or len(copy) != self.layer_num:
            raise ValueError(f"copy must be a list of {self.layer_num} per-layer dicts")
        for i, entry in enumerate(copy):
            expected = self.layer_tensors(self.start_layer + i)
            if not isinstance(entry, dict) or set(entry) != set(expected):
                got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                raise ValueError(f"copy[{i}] must hold buffers {sorted(expected)}, got {got}")
            for name, t in expected.items():
                c = entry[name]
                want = (idx.numel(), *t.shape[1:])
                if not isinstance(c, torch.Tensor) or c.dtype != t.dtype or tuple(c.shape) != want:
                    raise ValueError(f"copy[{i}][{name!r}] must be {t.dtype} of shape {want}")
        keep = self._last_write_wins(idx)
        for i, entry in enumerate(copy):
            for name, t in self.layer_tensors(self.start_layer + i).items():
                t[idx[keep]] = entry[name][keep.cpu()].to(t.device)
