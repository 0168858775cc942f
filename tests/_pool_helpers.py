"""Shared helpers of the pool tests: independent byte hashing of every pool buffer."""

from __future__ import annotations

import hashlib

import torch


def pool_hash(pool) -> str:
    """SHA-256 of every tensor attribute a pool holds (computed here, not by the pool)."""
    h = hashlib.sha256()
    for name in sorted(vars(pool)):
        value = getattr(pool, name)
        tensors = value if isinstance(value, list) else [value]
        for i, t in enumerate(tensors):
            if isinstance(t, torch.Tensor):
                h.update(f"{name}[{i}]{tuple(t.shape)}{t.dtype}".encode())
                h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fill_random(pool, seed: int = 0) -> None:
    """Put random bytes in every buffer so that a stray write cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    for name in sorted(vars(pool)):
        value = getattr(pool, name)
        if isinstance(value, list):
            for t in value:
                t.copy_(torch.randint(0, 256, t.shape, generator=g, dtype=torch.uint8))
