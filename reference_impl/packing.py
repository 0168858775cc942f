"""Two 4-bit codes per byte: the nibble order every FP4 KV cache uses.

Element `2i` (even) goes in the **low** nibble and element `2i + 1` (odd) in the **high**
nibble:

```text
byte i of the packed row:   bit 7 6 5 4 | 3 2 1 0
                                code[2i+1] | code[2i]

byte = (code[2i + 1] << 4) | code[2i]
```

This is the order of SGLang's `batched_quantize`, of FlashInfer's NVFP4 kernels and of
PyTorch's `torch.float4_e2m1fn_x2` (tested against PyTorch's own helper in `tests/test_formats.py`).

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.packing import pack_nibbles, unpack_nibbles
    >>> codes = torch.tensor([0x1, 0x2, 0xF, 0x8], dtype=torch.uint8)
    >>> [hex(b) for b in pack_nibbles(codes).tolist()]
    ['0x21', '0x8f']
    >>> unpack_nibbles(pack_nibbles(codes)).tolist()
    [1, 2, 15, 8]
"""

from __future__ import annotations

import torch

__all__ = ["pack_nibbles", "unpack_nibbles"]


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes pairwise along the last dimension.

    Args:
        codes: `uint8` tensor `[..., N]` with every value in `0..15` and `N` even.

    Returns:
        `uint8` tensor `[..., N // 2]`, `byte = code[2i+1] << 4 | code[2i]`.

    Raises:
        ValueError: wrong dtype, odd last dimension, or a value above 15.
    """
    if codes.dtype != torch.uint8:
        raise ValueError(f"pack_nibbles expects uint8 codes, got {codes.dtype}")
    if codes.dim() == 0 or codes.shape[-1] % 2:
        raise ValueError(f"pack_nibbles needs an even last dimension, got shape {tuple(codes.shape)}")
    if codes.numel() and int(codes.max()) > 0xF:
        raise ValueError(f"pack_nibbles got a code above 15: {int(codes.max())}")
    return (codes[..., 1::2] << 4) | codes[..., 0::2]


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of [`pack_nibbles`][nvfp4_kvcache.packing.pack_nibbles]: `uint8 [..., M]` -> `uint8 [..., 2M]` codes."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_nibbles expects uint8, got {packed.dtype}")
    if packed.dim() == 0:
        raise ValueError("unpack_nibbles needs at least one dimension")
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)
