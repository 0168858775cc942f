"""Command line: check files from any program against the oracle, and write or check golden vectors.

Usage::

    python -m nvfp4_kvcache verify --recipe nvfp4 --input x.npy --packed p.npy --scales s.npy \\
        --global-scale 0.0123 [--input-dtype bfloat16]
    python -m nvfp4_kvcache vectors write DIR [--recipe R ...] [--dtype D ...]
    python -m nvfp4_kvcache vectors check DIR

``verify`` exits 0 when the candidate's bytes equal the oracle's, 1 with a mismatch report when
they do not, and 2 on unreadable or malformed files. Inputs are ``.npy`` files: ``x`` as
``float32`` (holding the values of ``--input-dtype`` exactly), ``packed`` and ``scales`` as
``uint8``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from nvfp4_kvcache.oracle import compare_with_oracle
from nvfp4_kvcache.recipes import RECIPES
from nvfp4_kvcache.vectors import DTYPES, check_vectors, load_array, write_vectors


class InputError(Exception):
    """A file could not be used; exit status 2."""


def _load(path: str, name: str, dtype: np.dtype) -> torch.Tensor:
    try:
        array = load_array(Path(path))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {name} file {path!r}: {e}") from None
    if array.dtype != dtype:
        raise InputError(f"{name} file {path!r} must hold {dtype}, got {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _verify(args) -> int:
    x = _load(args.input, "input", np.dtype(np.float32))
    packed = _load(args.packed, "packed", np.dtype(np.uint8))
    scales = _load(args.scales, "scales", np.dtype(np.uint8))
    x = x.to(DTYPES[args.input_dtype])
    try:
        report = compare_with_oracle(args.recipe, x, packed, scales, args.global_scale, max_rows=args.max_rows)
    except (ValueError, TypeError) as e:
        raise InputError(str(e)) from None
    print(report.format())
    return 0 if report.ok else 1


def _vectors(args) -> int:
    if args.action == "write":
        manifest = write_vectors(args.directory, args.recipe, args.dtype)
        print(f"wrote {len(manifest['sets'])} vector sets to {args.directory}")
        return 0
    problems = check_vectors(args.directory)
    for p in problems:
        print(p)
    print(f"{args.directory}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nvfp4_kvcache", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a candidate's packed and scale bytes against the oracle")
    v.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    v.add_argument("--input", required=True, help=".npy float32 input [..., N]")
    v.add_argument("--packed", required=True, help=".npy uint8 [..., N/2]")
    v.add_argument("--scales", required=True, help=".npy uint8 scale bytes")
    v.add_argument("--global-scale", type=float, default=None, help="nvfp4: the float32 decode global scale")
    v.add_argument("--input-dtype", default="float32", choices=sorted(DTYPES))
    v.add_argument("--max-rows", type=int, default=10)
    w = sub.add_parser("vectors", help="write or check golden vectors")
    w.add_argument("action", choices=["write", "check"])
    w.add_argument("directory", type=Path)
    w.add_argument("--recipe", action="append", choices=sorted(RECIPES))
    w.add_argument("--dtype", action="append", choices=sorted(DTYPES))
    args = ap.parse_args(argv)
    try:
        return _verify(args) if args.command == "verify" else _vectors(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
