"""What every FP4 KV-cache recipe shares: blocks along the last dimension, packed nibbles, scale bytes.

A recipe turns a tensor ``x[..., N]`` into

* ``packed``: ``uint8 [..., N // 2]``, two E2M1 codes per byte (see :mod:`nvfp4_kvcache.packing`);
* ``scales``: ``uint8 [..., N // block_size]``, one scale byte per block of ``block_size``
  consecutive elements of the last dimension (E8M0-style bytes, or the bits of an E4M3 value);
* for NVFP4 only, a ``float32`` global scale supplied by the caller.

Each recipe implements two per-block functions on ``float32`` blocks, and the generic
:meth:`Recipe.quantize` / :meth:`Recipe.dequantize` do the reshaping, packing and checking.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch

from nvfp4_kvcache.checks import check_float_input, check_same_device, check_uint8
from nvfp4_kvcache.packing import pack_nibbles, unpack_nibbles

__all__ = ["FP4Quantized", "Recipe", "OUTPUT_DTYPES"]

OUTPUT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
"""Dtypes :meth:`Recipe.dequantize` can produce. The value is computed in ``float32`` and cast once."""


@dataclass(frozen=True)
class FP4Quantized:
    """A quantized tensor: packed codes, scale bytes, and what is needed to read them.

    Attributes:
        packed: ``uint8 [..., N // 2]``, element ``2i`` in the low nibble.
        scales: ``uint8 [..., N // block_size]``, the raw scale bytes.
        recipe: The recipe's name (``"nvfp4"``, ``"fp4_mx_block16"``, ``"mxfp4"``).
        global_scale: ``float32`` 0-d tensor for NVFP4 (the decode multiplier), else ``None``.
    """

    packed: torch.Tensor
    scales: torch.Tensor
    recipe: str
    global_scale: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the tensor this stands for (``[..., N]``)."""
        return (*self.packed.shape[:-1], self.packed.shape[-1] * 2)


class Recipe(abc.ABC):
    """Base class of the three recipes. Subclasses define the per-block rules only."""

    name: str
    """Registry name, as in ``--kv-cache-dtype``-style strings."""
    block_size: int
    """Consecutive elements of the last dimension that share one scale byte."""
    needs_global_scale: bool = False
    """True when :meth:`quantize` requires a ``global_scale`` (NVFP4)."""

    # -- the two rules a recipe defines ---------------------------------------------------------
    @abc.abstractmethod
    def encode_blocks(
        self, blocks: torch.Tensor, global_scale: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``float32 [n, block_size]`` -> (``uint8`` codes ``[n, block_size]``, ``uint8`` scale bytes ``[n]``)."""

    @abc.abstractmethod
    def decode_blocks(
        self, codes: torch.Tensor, scale_bytes: torch.Tensor, global_scale: torch.Tensor | None
    ) -> torch.Tensor:
        """(``uint8 [n, block_size]``, ``uint8 [n]``) -> ``float32 [n, block_size]``."""

    # -- global scale ---------------------------------------------------------------------------
    def check_global_scale(self, global_scale: object, device: torch.device) -> torch.Tensor | None:
        """Validate the global scale argument; recipes without one accept only ``None``."""
        if global_scale is not None:
            raise ValueError(f"recipe {self.name!r} has no global scale; pass global_scale=None")
        return None

    def check_dequantize_args(self, packed: object, scales: object, dtype: torch.dtype) -> None:
        """The checks of :meth:`dequantize_parts` on its tensors and dtype (kernels reuse them).

        Raises:
            TypeError, ValueError: wrong dtypes, devices or shapes; the message names them.
        """
        check_uint8(packed, "packed")
        check_uint8(scales, "scales")
        check_same_device(packed=packed, scales=scales)
        if dtype not in OUTPUT_DTYPES:
            raise ValueError(f"dtype must be one of {OUTPUT_DTYPES}, got {dtype}")
        if packed.dim() == 0 or scales.dim() == 0:
            raise ValueError("packed and scales need at least one dimension")
        n = packed.shape[-1] * 2
        expected = (*packed.shape[:-1], n // self.block_size)
        if n % self.block_size or tuple(scales.shape) != expected:
            raise ValueError(
                f"scales must have shape {expected} for packed shape {tuple(packed.shape)} "
                f"(block size {self.block_size}), got {tuple(scales.shape)}"
            )

    # -- generic driver -------------------------------------------------------------------------
    def quantize(self, x: torch.Tensor, global_scale: object = None) -> FP4Quantized:
        """Quantize ``x[..., N]`` (``float32``, ``bfloat16`` or ``float16``; ``N % block_size == 0``).

        The input is converted to ``float32`` (exact for all three dtypes) and every rule runs in
        ``float32`` or wider, so the result does not depend on the input dtype beyond its values.

        Returns:
            :class:`FP4Quantized` with ``packed [..., N // 2]`` and ``scales [..., N // block_size]``.

        Raises:
            TypeError, ValueError: bad dtype, shape, or global scale (the message names it).
        """
        check_float_input(x, "x", self.block_size)
        g = self.check_global_scale(global_scale, x.device)
        blocks = x.detach().to(torch.float32).reshape(-1, self.block_size)
        codes, scale_bytes = self.encode_blocks(blocks, g)
        lead = x.shape[:-1]
        packed = pack_nibbles(codes.reshape(*lead, x.shape[-1]))
        scales = scale_bytes.reshape(*lead, x.shape[-1] // self.block_size)
        return FP4Quantized(packed=packed, scales=scales, recipe=self.name, global_scale=g)

    def dequantize(self, q: FP4Quantized, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Decode to ``dtype``: each value is computed in ``float32`` and rounded once (RNE) to ``dtype``.

        Raises:
            ValueError: recipe mismatch, wrong dtypes, or scales whose shape does not match.
        """
        if q.recipe != self.name:
            raise ValueError(f"this is recipe {self.name!r}, got data quantized with {q.recipe!r}")
        return self.dequantize_parts(q.packed, q.scales, q.global_scale, dtype)

    def dequantize_parts(
        self,
        packed: torch.Tensor,
        scales: torch.Tensor,
        global_scale: object = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """:meth:`dequantize` from loose tensors (``packed [..., N/2]``, ``scales [..., N/block]``)."""
        self.check_dequantize_args(packed, scales, dtype)
        n = packed.shape[-1] * 2
        g = self.check_global_scale(global_scale, packed.device)
        codes = unpack_nibbles(packed).reshape(-1, self.block_size)
        values = self.decode_blocks(codes, scales.reshape(-1), g)
        return values.reshape(*packed.shape[:-1], n).to(dtype)
