"""Input checks shared by every public entry point: real exceptions whose messages name the bad value.

Every check raises before any computation or write, so a rejected call changes nothing.
"""

from __future__ import annotations

import torch

__all__ = ["FLOAT_INPUT_DTYPES", "check_float_input", "check_uint8", "check_same_device"]

FLOAT_INPUT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
"""Activation dtypes the quantizers accept. All three convert to `float32` exactly."""


def check_float_input(x: object, name: str, block_size: int, min_dim: int = 1) -> torch.Tensor:
    """Check a tensor to quantize: a tensor, a supported dtype, a last dim that splits into blocks.

    Raises:
        TypeError: `x` is not a tensor.
        ValueError: wrong dtype, too few dimensions, or a last dimension that is not a positive
            multiple of `block_size`.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_INPUT_DTYPES:
        allowed = ", ".join(str(d) for d in FLOAT_INPUT_DTYPES)
        raise ValueError(f"{name} must have dtype in ({allowed}), got {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    n = x.shape[-1]
    if n == 0 or n % block_size:
        raise ValueError(
            f"{name}: last dimension must be a positive multiple of the block size {block_size}, "
            f"got {n} (shape {tuple(x.shape)})"
        )
    return x


def check_uint8(t: object, name: str) -> torch.Tensor:
    """Check that `t` is a `uint8` tensor (packed codes or scale bytes)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.uint8:
        raise ValueError(f"{name} must have dtype torch.uint8, got {t.dtype}")
    return t


def check_same_device(**tensors: torch.Tensor) -> None:
    """All named tensors must live on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on the same device, got {listing}")
