"""The recipe descriptor: one frozen [`Recipe`][nvfp4_kvcache.recipes.base.Recipe] declares everything that changes bits or layout.

A recipe turns a tensor `x[..., N]` into

* `packed`: `uint8 [..., N // 2]`, two E2M1 codes per byte (see `nvfp4_kvcache.packing`);
* `scales`: `uint8 [..., N // block_size]`, one scale byte per block of `block_size`
  consecutive elements of the last dimension (an E8M0-style byte, or the bits of an E4M3 value);
* for recipes with a [`GlobalScale`][nvfp4_kvcache.recipes.base.GlobalScale], a `float32` decode
  multiplier supplied by the caller.

Each recipe module writes its per-block rule once, as a function `encode(blocks, g)` whose
docstring is the spec, and declares one `Recipe` that names its formats, its rounding modes, its
scale rule, its second-level scale, the scale layout a KV pool stores it in, and the id its Triton
kernel branch has. Everything else (the registry, the kernels' recipe ids, capacity and accuracy
tables, the pools' accepted recipes, the docs' tables) is derived from these objects; code asks
for capabilities (`recipe.global_scale is not None`, `recipe.pool_scale_layout`), never for names.
Decoding needs no per-recipe code: `E2M1[code] * scale.decode(byte)`, times `g` when there is one.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Callable, Union

import torch

from nvfp4_kvcache.checks import check_float_input, check_same_device, check_uint8
from nvfp4_kvcache.formats import MiniFloat, PowerOfTwoScale
from nvfp4_kvcache.packing import pack_nibbles, unpack_nibbles
from nvfp4_kvcache.rounding import Rounding

__all__ = [
    "FP4Quantized",
    "Recipe",
    "ScaleRule",
    "GlobalScale",
    "PoolScaleLayout",
    "OUTPUT_DTYPES",
    "check_global_scale_tensor",
]

OUTPUT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
"""Dtypes [`Recipe.dequantize`][nvfp4_kvcache.recipes.base.Recipe.dequantize] can produce. The value is computed in `float32` and cast once."""

ScaleFormat = Union[MiniFloat, PowerOfTwoScale]
BlockEncoder = Callable[[torch.Tensor, "torch.Tensor | None"], "tuple[torch.Tensor, torch.Tensor]"]
BlockDecoder = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class FP4Quantized:
    """A quantized tensor: packed codes, scale bytes, and what is needed to read them.

    Attributes:
        packed: `uint8 [..., N // 2]`, element `2i` in the low nibble.
        scales: `uint8 [..., N // block_size]`, the raw scale bytes.
        recipe: The recipe's name (`"nvfp4"`, `"mxfp4"`, ...).
        global_scale: `float32` 0-d tensor for recipes with a global scale (the decode
            multiplier), else `None`.
    """

    packed: torch.Tensor
    scales: torch.Tensor
    recipe: str
    global_scale: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the tensor this stands for (`[..., N]`)."""
        return (*self.packed.shape[:-1], self.packed.shape[-1] * 2)


class PoolScaleLayout(enum.Enum):
    """How a KV pool lays out one layer's scale bytes (the bytes are the same either way).

    `FLAT` is `[slots, heads * head_dim // block]` (SGLang's `fp4_mx_block16` buffers);
    `PER_HEAD` is `[slots, heads, head_dim // block]` (SGLang's `nvfp4` buffers and FlashInfer's
    NHD scale cache).
    """

    FLAT = "flat"
    PER_HEAD = "per_head"


@dataclass(frozen=True)
class ScaleRule:
    """How a block's scale is chosen from its values (the recipe module's `encode` implements it).

    Attributes:
        formula: the rule in one line, e.g. `"ceil(log2(amax / 6)), exact"`.
        rounding: how the scale itself is rounded: the exponent for power-of-two scales
            (`FLOOR`, `CEIL`), the value for E4M3 scales (`NEAREST_EVEN`).
        candidates: how many scales the rule tries per block (2 for a search between the
            block max mapped to 6 and to 4).
    """

    formula: str
    rounding: Rounding
    candidates: int = 1


@dataclass(frozen=True)
class GlobalScale:
    """A second-level `float32` scale per tensor (per layer and per K/V in a KV cache).

    It is the **decode** multiplier `g`: `x ~= E2M1[code] * block_scale * g`. The caller supplies
    it (see [`nvfp4_global_scale`][nvfp4_kvcache.recipes.nvfp4.nvfp4_global_scale] for the two
    conventions in use); it must be a positive, finite, normal `float32`.
    """

    dtype: torch.dtype = torch.float32


def check_global_scale_tensor(g: torch.Tensor, device: torch.device | str, prefix: str = "") -> torch.Tensor:
    """The metadata checks of a global-scale tensor (dtype, one value, device), without reading it.

    Returns:
        `g` as a 0-d tensor.

    Raises:
        ValueError: wrong dtype, size or device (the message starts with `prefix`).
    """
    if g.dtype != torch.float32:
        raise ValueError(f"{prefix}global_scale must be float32, got {g.dtype}")
    if g.numel() != 1:
        raise ValueError(f"{prefix}global_scale must hold one value, got shape {tuple(g.shape)}")
    if g.device != torch.device(device):
        raise ValueError(f"{prefix}global_scale is on {g.device}, data on {device}")
    return g.detach().reshape(())


@dataclass(frozen=True)
class Recipe:
    """One FP4 KV-cache recipe: everything that changes its bits or its layout.

    Attributes:
        name: registry name, as in `--kv-cache-dtype`-style strings.
        label: a short human-readable description.
        block_size: consecutive elements of the last dimension that share one scale byte.
        element: the element format (E2M1).
        element_rounding: how an element is rounded to the element format.
        scale: the scale byte's format (`E4M3`, `E8M0`, or SGLang's block-16 power-of-two byte,
            all in `nvfp4_kvcache.formats`).
        scale_rule: how the scale is chosen.
        encode: the per-block rule, `(float32 [n, block_size], g or None) -> (uint8 codes
            [n, block_size], uint8 scale bytes [n])`; its docstring is the spec.
        global_scale: the second-level scale, or `None` for single-level recipes.
        pool_scale_layout: the scale layout a KV pool stores this recipe with, or `None` when the
            pools do not store it (no serving engine pages it).
        kernel_id: the recipe's branch in the Triton quantize kernel (unique per recipe).
        source: who defines the recipe (specification or release), for the docs.
        order: the `float32` order of operations of `encode` and `decode`, for recipes whose
            implementations compute the same rule in different orders (NVFP4: an
            [`Order`][nvfp4_kvcache.recipes.nvfp4.Order]); `None` where there is one order.
        decode: the per-block decode `(uint8 codes [n, block_size], uint8 scale bytes [n], g or
            None) -> float32 [n, block_size]`, or `None` for the generic
            `fl(E2M1[code] * scale(byte)) (* g)`.
    """

    name: str
    label: str
    block_size: int
    element: MiniFloat
    element_rounding: Rounding
    scale: ScaleFormat
    scale_rule: ScaleRule
    encode: BlockEncoder = field(repr=False, compare=False)
    kernel_id: int
    global_scale: GlobalScale | None = None
    pool_scale_layout: PoolScaleLayout | None = None
    source: str = ""
    order: object | None = None
    decode: BlockDecoder | None = field(default=None, repr=False, compare=False)

    # -- derived facts ---------------------------------------------------------------------------
    @property
    def bits_per_value(self) -> float:
        """Storage per element, the block's scale byte included (the global scale left out)."""
        return self.element.bits + self.scale.bits / self.block_size

    @property
    def has_global_scale(self) -> bool:
        """True when quantizing needs a `global_scale` (`global_scale is not None`)."""
        return self.global_scale is not None

    @property
    def needs_global_scale(self) -> bool:
        """Alias of [`has_global_scale`][nvfp4_kvcache.recipes.base.Recipe.has_global_scale]."""
        return self.has_global_scale

    # -- the per-block rules ---------------------------------------------------------------------
    def encode_blocks(
        self, blocks: torch.Tensor, global_scale: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`float32 [n, block_size]` -> (`uint8` codes `[n, block_size]`, `uint8` scale bytes `[n]`)."""
        return self.encode(blocks, global_scale)

    def decode_blocks(
        self, codes: torch.Tensor, scale_bytes: torch.Tensor, global_scale: torch.Tensor | None
    ) -> torch.Tensor:
        """(`uint8 [n, block_size]`, `uint8 [n]`) -> `float32 [n, block_size]`.

        `fl(E2M1[code] * scale(byte))` (exact), then `* g` for recipes with a global scale; a
        recipe that declares its own `decode` (another `float32` order) runs that instead.
        """
        if self.decode is not None:
            return self.decode(codes, scale_bytes, global_scale)
        values = self.element.decode_tensor(codes) * self.scale.decode_tensor(scale_bytes).unsqueeze(-1)
        return values if global_scale is None else values * global_scale

    # -- global scale ---------------------------------------------------------------------------
    def check_global_scale(self, global_scale: object, device: torch.device) -> torch.Tensor | None:
        """Validate the global scale argument; recipes without one accept only `None`.

        Returns:
            The scale as a 0-d `float32` tensor on `device`, or `None`.

        Raises:
            TypeError, ValueError: a missing, superfluous or bad scale (the message names it).
        """
        if self.global_scale is None:
            if global_scale is not None:
                raise ValueError(f"recipe {self.name!r} has no global scale; pass global_scale=None")
            return None
        if global_scale is None:
            raise ValueError(f"{self.name} needs a global_scale (the float32 decode multiplier); got None")
        if isinstance(global_scale, torch.Tensor):
            g = check_global_scale_tensor(global_scale, device)
        elif isinstance(global_scale, (int, float)) and not isinstance(global_scale, bool):
            g = torch.tensor(float(global_scale), dtype=torch.float32, device=device)
        else:
            raise TypeError(f"global_scale must be a float or a float32 tensor, got {type(global_scale).__name__}")
        value = float(g)
        if not (math.isfinite(value) and value >= torch.finfo(torch.float32).tiny):
            raise ValueError(f"global_scale must be a positive, finite, normal float32, got {value}")
        return g

    def check_dequantize_args(self, packed: object, scales: object, dtype: torch.dtype) -> None:
        """The checks of [`dequantize_parts`][nvfp4_kvcache.recipes.base.Recipe.dequantize_parts] on its tensors and dtype (kernels reuse them).

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
        """Quantize `x[..., N]` (`float32`, `bfloat16` or `float16`; `N % block_size == 0`).

        The input is converted to `float32` (exact for all three dtypes) and every rule runs in
        `float32` or wider, so the result does not depend on the input dtype beyond its values.

        Args:
            x: the tensor, on any device.
            global_scale: the decode multiplier for recipes with a global scale, else `None`.

        Returns:
            [`FP4Quantized`][nvfp4_kvcache.recipes.base.FP4Quantized] with `packed [..., N // 2]`
            and `scales [..., N // block_size]`.

        Raises:
            TypeError, ValueError: bad dtype, shape, or global scale (the message names it).

        Examples:
            >>> import torch
            >>> from nvfp4_kvcache.recipes import MXFP4
            >>> q = MXFP4.quantize(torch.full((2, 32), 3.0))
            >>> q.packed.shape, q.scales.tolist()
            (torch.Size([2, 16]), [[126], [126]])
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
        """Decode to `dtype`: each value is computed in `float32` and rounded once (RNE) to `dtype`.

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
        """[`dequantize`][nvfp4_kvcache.recipes.base.Recipe.dequantize] from loose tensors.

        Args:
            packed: `uint8 [..., N/2]`.
            scales: `uint8 [..., N/block_size]`.
            global_scale: as [`quantize`][nvfp4_kvcache.recipes.base.Recipe.quantize].
            dtype: one of [`OUTPUT_DTYPES`][nvfp4_kvcache.recipes.base.OUTPUT_DTYPES].

        Returns:
            `dtype [..., N]` on the tensors' device.
        """
        self.check_dequantize_args(packed, scales, dtype)
        n = packed.shape[-1] * 2
        g = self.check_global_scale(global_scale, packed.device)
        codes = unpack_nibbles(packed).reshape(-1, self.block_size)
        values = self.decode_blocks(codes, scales.reshape(-1), g)
        return values.reshape(*packed.shape[:-1], n).to(dtype)
