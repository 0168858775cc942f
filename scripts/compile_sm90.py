"""Compile every Triton kernel of `nvfp4_kvcache_triton` for sm_90 (H100/H200) on a machine with no GPU.

Triton ships its own `ptxas`, so the whole pipeline (Triton IR -> LLVM -> PTX -> cubin) runs on a
CPU-only CI box: an error that only the GPU compiler would raise (a shape `tl.dot` rejects, an
unsupported cast, too much shared memory) fails here instead of on the first GPU run. For each
variant it prints registers, spills and shared memory, and fails a variant that spills registers
(stack or local memory); with `--sass` it also counts SASS instructions with the bundled `cuobjdump`.

Usage:

```text
python scripts/compile_sm90.py            # every variant (90 s on 2 cores)
python scripts/compile_sm90.py --quick    # each recipe x dtype, pool variants (30 s)
python scripts/compile_sm90.py --sass     # also SASS instruction counts
```

`TRITON_INTERPRET` must not be set (the interpreter replaces the compiler).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("compile_sm90.py: unset TRITON_INTERPRET (the interpreter does not compile)")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from nvfp4_kvcache_triton._triton import fp4  # noqa: E402
from nvfp4_kvcache_triton._triton.constants import RECIPE_IDS, scale_id  # noqa: E402
from nvfp4_kvcache_triton.launch import DEVICE_LAUNCHES, TUNING  # noqa: E402
from nvfp4_kvcache.recipes import RECIPES  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
DIV16 = [["tt.divisibility", 16]]


def _src(fn, types: dict[str, str], constexprs: dict[str, object], div16: set[str]):
    signature = {}
    for name in fn.arg_names:
        signature[name] = "constexpr" if name in constexprs else types[name]
    attrs = {(fn.arg_names.index(n),): DIV16 for n in div16}
    consts = {(fn.arg_names.index(n),): v for n, v in constexprs.items()}
    return ASTSource(fn, signature, consts, attrs)


def _launch_tile(kind: str, recipe: str, row: int, tok: int) -> tuple[int, int]:
    """(TOK, num_warps): of the launches the launcher can pick for the recipe (the `TUNING`
    defaults and every GPU's `DEVICE_LAUNCHES` entries; the dequantize kernel's serve the
    `dequantize` and `gather` kinds), the one with the most elements per thread
    (the most registers); `tok` capped at its elements per program."""
    kinds = ("dequantize", "gather") if kind == "dequantize" else (kind,)  # one kernel, two launch kinds
    options = [(TUNING[f"{k}_elems"], TUNING[f"{k}_warps"]) for k in kinds]
    options += [(e["elems"], e["warps"]) for table in DEVICE_LAUNCHES.values()
                for key, e in table.items() if key in {f"{k}:{recipe}" for k in kinds}]
    elems, warps = max(options, key=lambda o: o[0] / o[1])
    return min(tok, max(1, elems // triton.next_power_of_2(row))), warps


def quantize_variant(recipe: str, in_dtype: str, has_loc: bool, row: int, tok: int, cap: bool = True):
    x_t = {"fp32": "*fp32", "bf16": "*i32", "fp16": "*i32"}[in_dtype]
    types = {}
    for i in "01":
        types.update({f"x{i}": x_t, f"xs{i}": "i32", f"q{i}": "*u8", f"qs{i}": "i32", f"s{i}": "*u8",
                      f"ss{i}": "i32", f"g{i}": "*fp32"})
    types.update(loc_ptr="*i64" if has_loc else "*u8", n_rows="i32")
    r = RECIPES[recipe]
    if cap:
        tok, _ = _launch_tile("quantize", recipe, row, tok)
    constexprs = dict(RECIPE=RECIPE_IDS[recipe], BS=r.block_size, ROW=row, ROWP=triton.next_power_of_2(row),
                      TOK=tok, IN_KIND={"fp32": fp4.IN_F32, "bf16": fp4.IN_BF16, "fp16": fp4.IN_F16}[in_dtype].value,
                      HAS_LOC=has_loc, HW_FMA=True)
    div16 = {f"{p}{i}" for p in ("x", "q", "s", "g", "xs", "qs") for i in "01"} | {"loc_ptr"}
    return _src(fp4.quantize_kernel, types, constexprs, div16)


def dequantize_variant(recipe: str, out_kind: int, has_loc: bool, row: int, tok: int):
    out_t = {fp4.OUT_F32.value: "*fp32", fp4.OUT_BF16.value: "*i32", fp4.OUT_F16.value: "*i32",
             fp4.OUT_F64.value: "*fp64"}[out_kind]
    types = dict(q_ptr="*u8", q_stride="i32", s_ptr="*u8", s_stride="i32", g_ptr="*fp32",
                 loc_ptr="*i64" if has_loc else "*u8", o_ptr=out_t, n_rows="i32")
    r = RECIPES[recipe]
    constexprs = dict(SCALE=scale_id(r), BS=r.block_size, ROW=row, ROWP=triton.next_power_of_2(row),
                      TOK=tok, OUT_KIND=out_kind, HAS_LOC=has_loc, HW_CAST=True)
    div16 = {"q_ptr", "q_stride", "s_ptr", "g_ptr", "loc_ptr", "o_ptr"}
    return _src(fp4.dequantize_kernel, types, constexprs, div16)


def variants(quick: bool):
    recipes = sorted(RECIPES)
    kinds = {"fp32": fp4.OUT_F32.value, "bf16": fp4.OUT_BF16.value, "fp16": fp4.OUT_F16.value, "fp64": fp4.OUT_F64.value}
    if quick:  # every recipe x input dtype / output dtype, pool (loc) variants, one row length
        for recipe in recipes:
            for dt in ("fp32", "bf16", "fp16"):
                yield f"quantize/{recipe}/{dt}/loc/row1024", quantize_variant(recipe, dt, True, 1024, 8)
            for name, kind in kinds.items():
                yield f"dequantize/{recipe}/{name}/loc/row1024", dequantize_variant(recipe, kind, True, 1024, 8)
        return
    for recipe, dt, loc, (row, tok) in itertools.product(recipes, ("fp32", "bf16", "fp16"), (False, True),
                                                         ((1024, 8), (576, 4), (64, 128))):
        yield f"quantize/{recipe}/{dt}/{'loc' if loc else 'flat'}/row{row}", quantize_variant(recipe, dt, loc, row, tok)
    for recipe, (name, kind), loc, (row, tok) in itertools.product(recipes, kinds.items(), (False, True),
                                                                  ((1024, 8), (576, 4))):
        yield f"dequantize/{recipe}/{name}/{'loc' if loc else 'flat'}/row{row}", dequantize_variant(recipe, kind, loc, row, tok)


def _cuobjdump(cubin: bytes, flag: str) -> str:
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(cuobjdump), flag, f.name], capture_output=True, text=True, check=True).stdout


def sass_count(cubin: bytes) -> int:
    """Static count of SASS instructions in the kernel."""
    return len(re.findall(r"^\s+/\*[0-9a-f]{4}\*/\s+[A-Z@]", _cuobjdump(cubin, "-sass"), flags=re.M))


def resources(cubin: bytes) -> str:
    """`REG:.. STACK:.. SHARED:.. LOCAL:..` as cuobjdump reports them."""
    m = re.search(r"(REG:\d+ STACK:\d+ SHARED:\d+ LOCAL:\d+)", _cuobjdump(cubin, "-res-usage"))
    return m.group(1) if m else "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one variant per recipe and kernel")
    ap.add_argument("--sass", action="store_true", help="count SASS instructions (cuobjdump)")
    ap.add_argument("--recipe", action="append", help="only these recipes (repeatable)")
    args = ap.parse_args(argv)
    failures = 0
    for name, src in variants(args.quick):
        kind, recipe = name.split("/")[:2]
        if args.recipe and recipe not in args.recipe:
            continue
        try:
            k = triton.compile(src, target=TARGET, options={"num_warps": _launch_tile(kind, recipe, 1024, 1)[1]})
        except Exception as e:  # noqa: BLE001 - report every failing variant, then fail
            failures += 1
            print(f"FAIL {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if re.search(r"\.ftz\.f32", k.asm["ptx"]):  # e2m1_decode relies on float32 subnormals
            failures += 1
            print(f"FAIL {name}: flush-to-zero float32 instructions in the PTX")
            continue
        res = resources(k.asm["cubin"])
        if "LOCAL:0" not in res or "STACK:0" not in res:  # register spills go to the stack / local memory
            failures += 1
            print(f"FAIL {name}: register spills ({res})")
            continue
        extra = f" SASS:{sass_count(k.asm['cubin'])}" if args.sass else ""
        print(f"ok   {name}: {res}{extra}")
    print(f"{'FAILED' if failures else 'all compiled'} for sm_90 ({failures} failures), triton {triton.__version__}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
