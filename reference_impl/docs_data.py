"""Find the measurement data that the documentation's numbers come from.

Benchmark runs, accuracy measurements and upstream checks are kept in the repository under
`docs/data/` (JSON, CSV, YAML), written by the scripts in `scripts/`. They are data about runs,
not part of the library, so the wheel does not ship them. Code on the documentation pages reads
them through this module, which works the same from any working directory:

1. `NVFP4_KVCACHE_DOCS_DATA`, when set, names the `docs/data` folder to read;
2. otherwise, when the package is imported from a source checkout (an editable install, or
   the repository on `sys.path`), the checkout's own `docs/data`;
3. otherwise `FileNotFoundError`, saying where the data lives and how to point at it.

Examples:
    >>> from nvfp4_kvcache import docs_data
    >>> docs_data.path("accuracy/elements.json").name
    'elements.json'
    >>> sorted(docs_data.read_json("accuracy/elements.json"))[:2]
    ['distributions', 'meta']
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "NVFP4_KVCACHE_DOCS_DATA"
"""Environment variable naming a `docs/data` folder (overrides the checkout next to the package)."""


def root() -> Path:
    """The `docs/data` folder in use.

    Returns:
        The folder, as an absolute path.

    Raises:
        FileNotFoundError: `NVFP4_KVCACHE_DOCS_DATA` names a missing folder, or it is unset and
            the package was not imported from a source checkout (a wheel install).
    """
    configured = os.environ.get(ENV)
    if configured:
        folder = Path(configured).expanduser().resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"{ENV}={configured!r} is not a folder")
        return folder
    checkout = Path(__file__).resolve().parents[1] / "docs" / "data"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        "the documentation's measurement data (docs/data/ in the nvfp4-kvcache repository) is "
        "not installed with the package: clone the repository and install it with "
        f"`pip install -e .`, or set {ENV} to the docs/data folder of a checkout"
    )


def path(relative: str) -> Path:
    """The path of one data file or folder, e.g. `"perf/decode_attention.json"`.

    Args:
        relative: path below `docs/data/`, with `/` separators.

    Returns:
        Its absolute path.

    Raises:
        FileNotFoundError: no data folder (see `root`), or nothing at `relative` in it.
    """
    found = root() / relative
    if not found.exists():
        raise FileNotFoundError(f"no {relative!r} in the documentation data folder {root()}")
    return found


def read_json(relative: str):
    """Load one JSON data file (see `path`)."""
    return json.loads(path(relative).read_text(encoding="utf-8"))
