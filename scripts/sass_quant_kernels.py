"""Compile the FP4 quantize / store / dequantize kernels for sm_90 on a machine with no GPU; count SASS per element.

Uses Triton's bundled `ptxas`/`cuobjdump` (as `scripts/compile_sm90.py` does). For each recipe it
compiles the four operations of `scripts/bench_quant_kernels.py` at its shape (bf16 rows of
8 heads x 128 = 1024 elements) with a given tile (elements per program, warps), and counts the
SASS instructions one thread executes for one program. The kernels have no loops, and the
compiler merges the quantize kernel's two tiles (K and V, axis 1 of the grid) into one that
selects its pointers, so every instruction runs once (a few masked-store branches aside):

    SASS per element = instructions a thread runs / elements a thread handles
                     = count / (elements per program / (32 * warps))

An issue-bound ceiling follows from it: an SM issues at most 4 warp-instructions per cycle, so
at `--sms` SMs and `--ghz` GHz the kernel cannot move more than
`4 * sms * ghz * 32 / (SASS per element) * bytes per element` bytes per second. This is a
static count (each instruction once, whatever its latency); a measurement of the compiler's
output, not a timing.

Usage:

```text
python scripts/sass_quant_kernels.py                       # quantize 1024 x 1 warp, dequantize 2048 x 8
python scripts/sass_quant_kernels.py --elems 2048 --warps 2 --deq-elems 4096 --deq-warps 8
python scripts/sass_quant_kernels.py --json out.json --copy-gbps 4248
python scripts/sass_quant_kernels.py --dump nvfp4:quantize  # also print that kernel's SASS
```

`TRITON_INTERPRET` must not be set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("sass_quant_kernels.py: unset TRITON_INTERPRET (the interpreter does not compile)")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compile_sm90 as _c  # noqa: E402
import triton  # noqa: E402

from nvfp4_kvcache_triton._triton import fp4  # noqa: E402
from nvfp4_kvcache.recipes import RECIPES  # noqa: E402
from provenance import command_line  # noqa: E402

ROW = 1024
OPS = ("quantize", "store_kv", "dequantize", "gather_dequantize")


def bytes_per_element(op: str, recipe: str) -> float:
    """Bytes read + written per element, bf16 in or out (the benchmark's rule, loc bytes left out)."""
    return 2 + 0.5 + 1 / RECIPES[recipe].block_size


def _instructions(sass: str) -> list[tuple[int, str]]:
    out = []
    for m in re.finditer(r"^\s+/\*([0-9a-f]{4})\*/\s+([^;]*);", sass, flags=re.M):
        out.append((int(m.group(1), 16), m.group(2).strip()))
    return out


def executed_count(sass: str) -> int:
    """Instructions of the kernel, without `NOP` padding, the closing self-branch (`BRA` to
    itself) and subroutines (from the first `CALL` target on: the slow path of an IEEE division
    `div.rn`, which runs only for operands near the ends of the float32 range)."""
    ins = _instructions(sass)
    calls = [int(m.group(1), 16) for _, t in ins for m in [re.search(r"CALL\.REL\.NOINC\s+(0x[0-9a-f]+)", t)] if m]
    end = min(calls) if calls else None
    n = 0
    for addr, text in ins:
        if end is not None and addr >= end:
            break
        if text.startswith("NOP") or text == f"BRA {hex(addr)}":
            continue
        n += 1
    return n


def variant(op: str, recipe: str, elems: int):
    tok = max(1, elems // ROW)
    if op in ("quantize", "store_kv"):
        return _c.quantize_variant(recipe, "bf16", op == "store_kv", ROW, tok, cap=False), tok
    return _c.dequantize_variant(recipe, fp4.OUT_BF16.value, op == "gather_dequantize", ROW, tok), tok


def measure(recipes, tiles: dict[str, tuple[int, int]], sms: int, ghz: float, copy_gbps: float | None,
            dump: str | None):
    rows = []
    for recipe in recipes:
        for op in OPS:
            elems, warps = tiles["quantize" if op in ("quantize", "store_kv") else "dequantize"]
            src, tok = variant(op, recipe, elems)
            k = triton.compile(src, target=_c.TARGET, options={"num_warps": warps})
            sass = _c._cuobjdump(k.asm["cubin"], "-sass")
            if dump == f"{recipe}:{op}":
                print(sass)
            n = executed_count(sass)
            per_thread = tok * ROW / (32 * warps)
            spe = n / per_thread
            bpe = bytes_per_element(op, recipe)
            ceiling_gbps = 4 * sms * ghz * 1e9 * 32 / spe * bpe / 1e9
            row = {"recipe": recipe, "op": op, "elems": tok * ROW, "warps": warps,
                   "resources": _c.resources(k.asm["cubin"]), "sass": n, "sass_per_element": round(spe, 3),
                   "elements_per_thread": per_thread, "bytes_per_element": bpe, "issue_ceiling_gbps": round(ceiling_gbps)}
            if copy_gbps:
                row["issue_ceiling_frac_of_copy"] = round(ceiling_gbps / copy_gbps, 3)
            rows.append(row)
            frac = f" {row['issue_ceiling_frac_of_copy']:6.1%} of copy" if copy_gbps else ""
            print(f"{recipe:15s} {op:18s} {row['resources']:36s} SASS {n:5d}  {spe:6.2f}/elem  "
                  f"ceiling {ceiling_gbps:6.0f} GB/s{frac}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elems", type=int, default=1024, help="quantize: elements per program (a multiple of 1024)")
    ap.add_argument("--warps", type=int, default=1, help="quantize: warps")
    ap.add_argument("--deq-elems", type=int, default=2048, help="dequantize: elements per program")
    ap.add_argument("--deq-warps", type=int, default=8, help="dequantize: warps")
    ap.add_argument("--recipe", action="append", help="only these recipes (repeatable)")
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--ghz", type=float, default=1.98, help="SM clock under load")
    ap.add_argument("--copy-gbps", type=float, default=None, help="the card's copy bandwidth, for the ceiling's share")
    ap.add_argument("--dump", help="RECIPE:OP: print that kernel's SASS")
    ap.add_argument("--json", help="write the rows here")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    recipes = args.recipe or list(RECIPES)
    tiles = {"quantize": (args.elems, args.warps), "dequantize": (args.deq_elems, args.deq_warps)}
    rows = measure(recipes, tiles, args.sms, args.ghz, args.copy_gbps, args.dump)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "triton": triton.__version__, "target": "sm_90", "command": command_line("sass_quant_kernels.py", argv),
            "sms": args.sms, "ghz": args.ghz, "copy_gbps": args.copy_gbps, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
