"""What a peer adapter provides: entries (one per API and recipe) that turn an input into bytes.

An adapter module imports its library only inside `load()`: imports of these libraries take tens
of seconds on a small machine, so the lab imports each once per process, and only when asked.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = ["PeerResult", "Entry", "Peer", "finite_amax", "version_of"]


@dataclass
class PeerResult:
    """One peer call on a `[rows, W]` input.

    Attributes:
        packed: `uint8 [rows, W // 2]`, element `2i` in the low nibble.
        scales: `uint8 [rows, W // block]`, the scale bytes.
        decoded: the peer's own dequantization, `float32 [rows, W]`, or `None` when the peer has
            none (then the oracle's decoder reads the peer's bytes).
        global_scale: the number handed to the oracle as `global_scale` (the decode `g`, or the
            encode `G` for an `"encode"` order), `None` for single-level recipes.
    """

    packed: torch.Tensor
    scales: torch.Tensor
    decoded: torch.Tensor | None
    global_scale: float | None = None


@dataclass(frozen=True)
class Entry:
    """One way of quantizing with a peer, compared with one oracle recipe.

    Attributes:
        id: `"<peer>/<what>"`, unique.
        recipe: the oracle recipe it is compared with.
        rule: how the peer picks the scale, in its own terms (from its released code).
        api: the exact calls, as Python text.
        source: file and release the rule was read from.
        global_scale: how the global scale is derived and passed (`None` for single-level).
        order: the oracle order of operations matching the peer (`nvfp4`), or `None`.
        dtypes: input dtypes the peer accepts; the others are recorded as refused.
        run: `(x [rows, W], global_scale or None) -> PeerResult`. With `None` the peer derives
            its global scale from `x` by its convention (over the finite values); reproducers
            pass the one the full input had.
        note: what the comparison means when the peer's rule is not the recipe's.
        same_rule: the peer implements the recipe's rule (so a difference is a deviation); False
            when it implements another rule on purpose and is compared with the nearest recipe.
    """

    id: str
    recipe: str
    rule: str
    api: str
    source: str
    run: Callable[[torch.Tensor, float | None], PeerResult] = field(repr=False, compare=False)
    global_scale: str | None = None
    order: str | None = None
    dtypes: tuple[str, ...] = ("bfloat16", "float16", "float32")
    note: str = ""
    same_rule: bool = True


@dataclass(frozen=True)
class Peer:
    """A peer library.

    Attributes:
        name: short name used in file names (`docs/data/peers/<name>.json`).
        distribution: the package name on the registry (for its version).
        load: imports the library and returns its entries (slow: call once per process).
        homepage: where the library lives.
        version: the version compared, when it is not an installed distribution's (a wheel read
            without installing it).
    """

    name: str
    distribution: str
    load: Callable[[], list[Entry]] = field(repr=False, compare=False)
    homepage: str = ""
    version: str | None = None


def finite_amax(x: torch.Tensor) -> torch.Tensor:
    """`float32` 0-d: the largest finite magnitude of `x` (NaN and +-inf left out), the amax a
    peer's global scale is derived from (a NaN or an infinity would make every scale useless)."""
    a = x.float().abs()
    return torch.where(torch.isfinite(a), a, torch.zeros_like(a)).amax()


def version_of(distribution: str) -> str | None:
    """The installed version of a distribution, or `None`."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
