"""Argument checks of the pools. Each raises before anything is written, naming the bad value."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from nvfp4_kvcache.checks import FLOAT_INPUT_DTYPES
from nvfp4_kvcache.recipes import Recipe, get_recipe

__all__ = ["check_device", "check_loc", "check_kv_tensor", "global_scales", "resolve_layer_id"]

INDEX_DTYPES: tuple[torch.dtype, ...] = (torch.int64, torch.int32)
"""Slot-index dtypes accepted (SGLang passes `int64`; `int32` is common in kernels)."""


def check_device(device: object) -> torch.device:
    """Turn `device` into a `torch.device` (`TypeError`/`ValueError` if it is not one)."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None


def _same_device(t: torch.Tensor, device: torch.device) -> bool:
    if t.device.type != device.type:
        return False
    return device.index is None or t.device.index == device.index


def resolve_layer_id(layer: object, start_layer: int, layer_num: int) -> int:
    """Global layer id (an int, or an object with `.layer_id` like SGLang's `RadixAttention`) -> local index.

    Raises:
        TypeError: not an int and no int `layer_id` attribute.
        IndexError: outside `[start_layer, start_layer + layer_num)`.
    """
    layer_id = getattr(layer, "layer_id", layer)
    if isinstance(layer_id, bool) or not isinstance(layer_id, int):
        raise TypeError(f"layer_id must be an int, got {type(layer_id).__name__}")
    local = layer_id - start_layer
    if not 0 <= local < layer_num:
        raise IndexError(
            f"layer_id {layer_id} out of range: this pool holds layers "
            f"[{start_layer}, {start_layer + layer_num})"
        )
    return local


def check_loc(loc: object, rows: int, device: torch.device, *, name: str = "loc", unique: bool = True) -> torch.Tensor:
    """Check slot indices and return them as `int64`.

    Args:
        loc: 1-D `int64`/`int32` tensor on the pool's device.
        rows: number of rows of the pool (`size + page_size`); valid slots are `[0, rows)`.
        device: the pool's device.
        name: argument name for messages.
        unique: reject repeated slots (writes). Slot 0, the padding slot, may repeat.

    Raises:
        TypeError: not a tensor.
        ValueError: wrong dtype, rank or device; duplicate slots (when `unique`).
        IndexError: a slot outside `[0, rows)`.
    """
    if not isinstance(loc, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of slot indices, got {type(loc).__name__}")
    if loc.dtype not in INDEX_DTYPES:
        raise ValueError(f"{name} must have dtype torch.int64 or torch.int32, got {loc.dtype}")
    if loc.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(loc.shape)}")
    if not _same_device(loc, device):
        raise ValueError(f"{name} is on {loc.device}, the pool is on {device}")
    idx = loc.to(torch.int64)
    if idx.numel():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= rows:
            bad = lo if lo < 0 else hi
            raise IndexError(f"{name} holds slot {bad}, outside the pool's slots [0, {rows})")
    if unique:
        real = idx[idx != 0]
        if real.numel() != torch.unique(real).numel():
            values, counts = torch.unique(real, return_counts=True)
            dup = values[counts > 1][:5].tolist()
            raise ValueError(f"{name} repeats slot(s) {dup} in one call; each slot may be written once")
    return idx


def check_kv_tensor(t: object, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Check a tensor to be quantized into the pool: float dtype, exact shape, pool device.

    Raises:
        TypeError: not a tensor.
        ValueError: wrong dtype, shape or device.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_INPUT_DTYPES:
        allowed = ", ".join(str(d) for d in FLOAT_INPUT_DTYPES)
        raise ValueError(f"{name} must have dtype in ({allowed}), got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if not _same_device(t, device):
        raise ValueError(f"{name} is on {t.device}, the pool is on {device}")
    return t


def global_scales(
    values: object, name: str, recipe: str | Recipe, layer_num: int, device: torch.device
) -> torch.Tensor | None:
    """Per-layer `float32` decode global scales for a recipe with a global scale (default 1.0); `None` otherwise.

    Args:
        values: `None`, a float, a sequence of `layer_num` floats, or a `float32` tensor of
            shape `[layer_num]`. Each is the NVFP4 *decode* multiplier `g`
            (`x ~= e2m1 * block_scale * g`), positive, finite and normal.

    Raises:
        TypeError, ValueError: a scale for a recipe without one, a wrong length, or a bad value.
    """
    if get_recipe(recipe).global_scale is None:
        if values is not None:
            raise ValueError(f"recipe {recipe!r} has no global scale; pass {name}=None")
        return None
    if values is None:
        values = 1.0
    if isinstance(values, torch.Tensor):
        if values.dtype != torch.float32:
            raise ValueError(f"{name} must be float32, got {values.dtype}")
        vals = values.detach().to("cpu").reshape(-1)
        if values.dim() == 0:
            vals = vals.expand(layer_num)
    elif isinstance(values, (int, float)) and not isinstance(values, bool):
        vals = torch.full((layer_num,), float(values), dtype=torch.float32)
    elif isinstance(values, Sequence) and not isinstance(values, str):
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name} must hold floats, got {type(v).__name__}")
        vals = torch.tensor([float(v) for v in values], dtype=torch.float32)
    else:
        raise TypeError(f"{name} must be a float, a sequence of floats or a float32 tensor, got {type(values).__name__}")
    if vals.numel() != layer_num:
        raise ValueError(f"{name} must hold one scale per layer ({layer_num}), got {vals.numel()}")
    tiny = torch.finfo(torch.float32).tiny
    for i, v in enumerate(vals.tolist()):
        if not (math.isfinite(v) and v >= tiny):
            raise ValueError(f"{name}[{i}] must be a positive, finite, normal float32, got {v}")
    return vals.clone().to(device)
