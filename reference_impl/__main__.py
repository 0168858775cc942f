"""Command line: check files from any program against the oracle, and write or check golden vectors.

Usage:

```text
python -m nvfp4_kvcache verify --recipe nvfp4 --input x.npy --packed p.npy --scales s.npy \
    --global-scale 0.0123 [--input-dtype bfloat16] [--order div] [--json] \
    [--ignore-nan-block-codes] [--ignore-zero-block-scale] [--either-signed-zero] \
    [--decoded-values-only] [--near-tie-ulps K]
python -m nvfp4_kvcache vectors write DIR [--recipe R ...] [--dtype D ...]
python -m nvfp4_kvcache vectors check [DIR]
python -m nvfp4_kvcache vectors list [DIR]
python -m nvfp4_kvcache vectors path
```

`verify` exits 0 when the candidate's bytes equal the oracle's (after the policies named), 1 with
a mismatch report when they do not, and 2 on unreadable or malformed files. Files are `.npy`
(`x` as `float32` holding the values of `--input-dtype` exactly, `packed` and `scales` as
`uint8`) or `.pt` tensors saved with `torch.save` (then `x` may be `float32`, `bfloat16` or
`float16`, `packed` may be `float4_e2m1fn_x2` and `scales` `float8_e4m3fn` or
`float8_e8m0fnu`). `--json` prints the report as JSON instead of text.

`vectors` writes a fresh set of golden vectors into `DIR`, checks a directory (without `DIR`: the
set shipped in the package), lists a directory's sets (name, kind, recipe, input dtype), or prints
the shipped set's folder, for test suites in other languages to read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from nvfp4_kvcache.oracle import Policy, compare_with_oracle
from nvfp4_kvcache.recipes import RECIPES
from nvfp4_kvcache.recipes.nvfp4 import ORDERS
from nvfp4_kvcache.vectors import DTYPES, check_vectors, golden_dir, load_array, read_manifest, write_vectors


class InputError(Exception):
    """A file could not be used; exit status 2."""


def _load(path: str, name: str, dtypes: tuple[torch.dtype, ...]) -> torch.Tensor:
    """A tensor from `.npy` (no pickles) or `.pt` (`torch.load(weights_only=True)`), of one of `dtypes`."""
    try:
        if path.endswith(".pt"):
            t = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"holds a {type(t).__name__}, not a tensor")
        else:
            t = torch.from_numpy(np.ascontiguousarray(load_array(Path(path))))
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise InputError(f"cannot read {name} file {path!r}: {e}") from None
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise InputError(f"{name} file {path!r} must hold {allowed}, got {str(t.dtype).removeprefix('torch.')}")
    return t


def _torch_dtypes(*names: str) -> tuple[torch.dtype, ...]:
    return tuple(getattr(torch, n) for n in names if hasattr(torch, n))


def _verify(args) -> int:
    x = _load(args.input, "input", (torch.float32, torch.bfloat16, torch.float16))
    packed = _load(args.packed, "packed", _torch_dtypes("uint8", "float4_e2m1fn_x2"))
    scales = _load(args.scales, "scales", _torch_dtypes("uint8", "float8_e4m3fn", "float8_e8m0fnu"))
    if x.dtype == torch.float32:
        x = x.to(DTYPES[args.input_dtype])
    try:
        policy = Policy(
            ignore_nan_block_codes=args.ignore_nan_block_codes,
            ignore_zero_block_scale=args.ignore_zero_block_scale,
            either_signed_zero=args.either_signed_zero,
            decoded_values_only=args.decoded_values_only,
            near_tie_ulps=args.near_tie_ulps,
        )
        report = compare_with_oracle(args.recipe, x, packed, scales, args.global_scale, order=args.order,
                                     policy=policy, max_rows=args.max_rows, max_block_rows=args.max_rows)
    except (ValueError, TypeError) as e:
        raise InputError(str(e)) from None
    print(report.to_json(indent=1) if args.json else report.format())
    return 0 if report.ok else 1


def _vectors(args) -> int:
    if args.action == "write":
        if args.directory is None:
            raise InputError("vectors write needs a directory to write into")
        manifest = write_vectors(args.directory, args.recipe, args.dtype)
        print(f"wrote {len(manifest['sets'])} vector sets to {args.directory}")
        return 0
    if args.action == "path":
        if args.directory is not None:
            raise InputError("vectors path takes no directory: it prints the shipped one")
        print(golden_dir())
        return 0
    directory = golden_dir() if args.directory is None else args.directory
    if args.action == "list":
        try:
            sets = read_manifest(directory)["sets"]
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read the manifest of {directory}: {e}") from None
        for s in sets:
            print(f"{s['name']:40} {s['kind']:17} {s['recipe']:15} {s['input_dtype']}")
        return 0
    problems = check_vectors(directory)
    for p in problems:
        print(p)
    print(f"{directory}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 match, 1 mismatch, 2 bad input)."""
    ap = argparse.ArgumentParser(prog="python -m nvfp4_kvcache", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a candidate's packed and scale bytes against the oracle")
    v.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    v.add_argument("--input", required=True, help=".npy float32 or .pt input [..., N]")
    v.add_argument("--packed", required=True, help=".npy uint8 or .pt (uint8 / float4_e2m1fn_x2) [..., N/2]")
    v.add_argument("--scales", required=True, help=".npy uint8 or .pt (uint8 / float8_e4m3fn / float8_e8m0fnu) scale bytes")
    v.add_argument("--global-scale", type=float, default=None,
                   help="nvfp4: the float32 decode global scale (with an encode order: the encode scale)")
    v.add_argument("--input-dtype", default="float32", choices=sorted(DTYPES),
                   help="the dtype a float32 input stands for (a .pt input keeps its own)")
    v.add_argument("--order", choices=sorted(ORDERS), default=None,
                   help="nvfp4: the kernel's float32 order of operations (default mul_rcp)")
    v.add_argument("--ignore-nan-block-codes", action="store_true", help="policy: skip codes inside NaN blocks")
    v.add_argument("--ignore-zero-block-scale", action="store_true", help="policy: skip the scale byte of all-zero blocks")
    v.add_argument("--either-signed-zero", action="store_true", help="policy: accept code 0 for 8 and 8 for 0")
    v.add_argument("--decoded-values-only", action="store_true", help="policy: compare decoded values, not bytes")
    v.add_argument("--near-tie-ulps", type=int, default=0, metavar="K",
                   help="policy: accept the other neighbour within K float32 ulps of a midpoint")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--max-rows", type=int, default=10)
    w = sub.add_parser("vectors", help="write, check or list golden vectors, or print the shipped set's folder")
    w.add_argument("action", choices=["write", "check", "list", "path"])
    w.add_argument("directory", type=Path, nargs="?", help="write: required; check, list: default the shipped set")
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
