"""Argument checks shared by the Triton launchers and their PyTorch twins, so both raise the same errors.

The quantize/dequantize checks are [`nvfp4_kvcache.checks`][nvfp4_kvcache.checks] and the recipes' own; the pool
functions (`gather_dequantize`, `store_kv`) add the buffer-layout checks here.
"""

from __future__ import annotations

import os

import torch

from nvfp4_kvcache.checks import check_float_input, check_same_device, check_uint8
from nvfp4_kvcache.pool import PADDING_SLOT
from nvfp4_kvcache.recipes import Recipe
from nvfp4_kvcache.recipes.base import check_global_scale_tensor

__all__ = ["check_dequantize_parts", "check_pool_layer", "check_loc", "check_store_args", "check_scale_tensor"]


def check_dequantize_parts(recipe: Recipe, packed, scales, global_scale, dtype):
    """The checks of `nvfp4_kvcache.recipes.Recipe.dequantize_parts`, in its order and words."""
    recipe.check_dequantize_args(packed, scales, dtype)
    return check_scale_tensor(recipe, global_scale, packed.device)


def check_loc(loc: object, n: int | None, device: torch.device) -> torch.Tensor:
    """`loc`: a 1-D `int32`/`int64` tensor of slot indices (length `n` when given) on `device`."""
    if not isinstance(loc, torch.Tensor):
        raise TypeError(f"loc must be a torch.Tensor, got {type(loc).__name__}")
    if loc.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"loc must have dtype torch.int32 or torch.int64, got {loc.dtype}")
    if loc.dim() != 1:
        raise ValueError(f"loc must be 1-D, got shape {tuple(loc.shape)}")
    if n is not None and loc.numel() != n:
        raise ValueError(f"loc must hold one slot per token ({n}), got {loc.numel()}")
    if loc.device != device:
        raise ValueError(f"loc is on {loc.device}, data on {device}")
    return loc


def interpreting() -> bool:
    """True when Triton runs its CPU interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_kernel_device(t: torch.Tensor, name: str) -> None:
    """Triton kernels need a CUDA tensor, or a CPU tensor under the interpreter."""
    if t.device.type == "cuda" or (t.device.type == "cpu" and interpreting()):
        return
    raise ValueError(
        f"{name} is on {t.device}: the Triton kernels need a CUDA tensor "
        "(or a CPU tensor with TRITON_INTERPRET=1 set before triton is imported)"
    )


def check_slots(loc: torch.Tensor, n_slots: int, unique: bool) -> None:
    """Every slot in `[0, n_slots)` and, when `unique`, no slot twice except the padding slot 0.

    Reads `loc`'s values, so on a GPU it synchronises; launchers skip it with `check_slots=False`
    (e.g. inside CUDA-graph capture), and the caller then guarantees valid slots.

    Raises:
        IndexError: a slot outside the layer.
        ValueError: a repeated slot (other than 0) where each slot may be written once.
    """
    if loc.numel() == 0:
        return
    lo, hi = int(loc.min()), int(loc.max())
    if lo < 0 or hi >= n_slots:
        raise IndexError(f"loc must hold slots in [0, {n_slots}), got values in [{lo}, {hi}]")
    if unique:
        real = loc[loc != PADDING_SLOT]
        if torch.unique(real).numel() != real.numel():
            raise ValueError("loc repeats a slot (only the padding slot 0 may repeat): the writes would race")


def check_pool_layer(recipe: Recipe, data: object, scales: object, name: str) -> tuple[int, int]:
    """One layer's buffers: `data` uint8 `[slots, H, D/2]`; `scales` uint8 `[slots, H*D/B]`
    (SGLang's fp4_mx_block16 layout) or `[slots, H, D/B]` (its nvfp4 layout).

    Returns:
        `(H, D)`.
    """
    check_uint8(data, f"{name}_data")
    check_uint8(scales, f"{name}_scales")
    check_same_device(**{f"{name}_data": data, f"{name}_scales": scales})
    if data.dim() != 3:
        raise ValueError(f"{name}_data must have shape [slots, heads, head_dim // 2], got {tuple(data.shape)}")
    slots, h, d2 = data.shape
    d = 2 * d2
    if d % recipe.block_size:
        raise ValueError(
            f"{name}_data: head_dim {d} is not a multiple of the block size {recipe.block_size}"
        )
    nb = d // recipe.block_size
    if tuple(scales.shape) not in ((slots, h * nb), (slots, h, nb)):
        raise ValueError(
            f"{name}_scales must have shape {(slots, h * nb)} or {(slots, h, nb)} for "
            f"{name}_data shape {tuple(data.shape)} (block size {recipe.block_size}), got {tuple(scales.shape)}"
        )
    if data.stride(-1) != 1 or data.stride(1) != d2:
        raise ValueError(f"{name}_data: each slot's [heads, head_dim // 2] bytes must be contiguous")
    if scales.stride(-1) != 1 or (scales.dim() == 3 and scales.stride(1) != nb):
        raise ValueError(f"{name}_scales: each slot's scale bytes must be contiguous")
    return h, d


def check_scale_tensor(recipe: Recipe, g: object, device: torch.device, name: str | None = None):
    """The recipe's global-scale check, except that a *GPU* tensor's value is not read.

    Reading it (`float(g)`) would synchronise the device on every call: it exposes the whole
    Python launch overhead and breaks CUDA-graph capture. A CUDA tensor is checked for dtype, size
    and device only; a Python float or a CPU tensor gets the recipe's full check (same messages).
    `name` prefixes the message (`store_kv` has two scales).
    """
    prefix = f"{name}: " if name else ""
    if not (recipe.global_scale is not None and isinstance(g, torch.Tensor) and g.device.type == "cuda"):
        try:
            return recipe.check_global_scale(g, device)
        except (TypeError, ValueError) as e:
            if not name:
                raise
            raise type(e)(f"{prefix}{e}") from None
    return check_global_scale_tensor(g, device, prefix)


def check_store_call(recipe: Recipe, k, v, loc, k_data, v_data, k_scales, v_scales,
                     k_global_scale, v_global_scale, check_slots_: bool):
    """Every check of `store_kv` (kernel and twin alike), before anything is written.

    Returns:
        The checked K and V global scales (`None` for recipes without one).
    """
    check_store_args(recipe, k, v, loc, k_data, v_data, k_scales, v_scales)
    if check_slots_:
        check_slots(loc, k_data.shape[0], unique=True)
    gk = check_scale_tensor(recipe, k_global_scale, k.device, "k_global_scale")
    gv = check_scale_tensor(recipe, v_global_scale, k.device, "v_global_scale")
    return gk, gv


def check_store_args(recipe: Recipe, k, v, loc, k_data, v_data, k_scales, v_scales):
    """Checks of `store_kv`: K and V `[tokens, H, D]` of one shape, buffers of that `H, D`."""
    check_float_input(k, "k", recipe.block_size, min_dim=3)
    check_float_input(v, "v", recipe.block_size, min_dim=3)
    if k.dim() != 3:
        raise ValueError(f"k must have shape [tokens, heads, head_dim], got {tuple(k.shape)}")
    if tuple(v.shape) != tuple(k.shape) or v.dtype != k.dtype:
        raise ValueError(f"v must match k: k is {tuple(k.shape)} {k.dtype}, v is {tuple(v.shape)} {v.dtype}")
    check_same_device(k=k, v=v, k_data=k_data, v_data=v_data, k_scales=k_scales, v_scales=v_scales)
    for name, data, scales in (("k", k_data, k_scales), ("v", v_data, v_scales)):
        h, d = check_pool_layer(recipe, data, scales, name)
        if (h, d) != tuple(k.shape[1:]):
            raise ValueError(
                f"{name}_data holds {h} heads of dim {d}, but k/v are {tuple(k.shape)} (tokens, heads, head_dim)"
            )
    check_loc(loc, k.shape[0], k.device)
