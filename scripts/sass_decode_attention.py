"""Compile the decode-attention kernels for sm_90 on a machine with no GPU; count SASS per KV element.

Uses Triton's bundled `ptxas`/`cuobjdump` (as `scripts/compile_sm90.py` does for the quantize
kernels). For each KV format it compiles stage 1 at the headline shape (G = 8 -> BLOCK_H = 16,
head_dim 128, page 16) and stage 2, prints registers/spills/shared memory, and finds the stage-1
main loop in the SASS (the largest backward branch) and counts its instructions:

    SASS per element = loop instructions / (K and V elements one thread handles per iteration)
                     = loop instructions / (2 * BLOCK_N * D / (32 * num_warps))

This is a *static* count (each instruction once, whatever its latency or issue cost), the
proxy the issue asks for: it is a measurement of the compiler's output, not a timing.

Usage:

```bash
python scripts/sass_decode_attention.py            # table (about a minute on 2 cores)
python scripts/sass_decode_attention.py --json out.json
python scripts/sass_decode_attention.py --dump nvfp4   # also print that format's loop SASS
```

`TRITON_INTERPRET` must not be set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("sass_decode_attention.py: unset TRITON_INTERPRET (the interpreter does not compile)")

import compile_sm90 as _c  # noqa: E402
import triton  # noqa: E402

from nvfp4_kvcache_triton._triton import decode_attention as kd  # noqa: E402
from provenance import command_line  # noqa: E402

KV_PTR = {"bf16": "*bf16", "fp8_e4m3": "*fp8e4nv", "nvfp4": "*u8", "fp4_mx_block16": "*u8"}


VARIANTS = ["bf16", "fp8_e4m3", "nvfp4", "fp4_mx_block16", "nvfp4+prmt", "fp4_mx_block16+prmt",
            "nvfp4+prmt_bf16", "fp4_mx_block16+prmt_bf16", "nvfp4+cvt_f16", "fp4_mx_block16+cvt_f16", "nvfp4+no_decode",
            "fp8_e4m3+cvt_f16"]
"""KV formats and decoders (`recipe+decoder`; `fp8_e4m3+cvt_f16`: the FP8 cache through the
hardware's E4M3 -> fp16 `cvt` and fp16 dots)."""


def stage1_src(variant: str, d: int, g: int, block_n: int, page: int, splits: int, prefetch: bool = False,
               tokens_as_m: bool = False, page_block: bool = False):
    fmt, _, dec = variant.partition("+")
    fp4 = fmt in ("nvfp4", "fp4_mx_block16")
    types = dict(q_ptr="*bf16", q_sb="i32", q_sh="i32", k_ptr=KV_PTR[fmt], v_ptr=KV_PTR[fmt],
                 ks_ptr="*u8" if fp4 else "*fp32", vs_ptr="*u8" if fp4 else "*fp32", d_stride="i32",
                 d_hstride="i32", s_stride="i32", s_hstride="i32", gk_ptr="*fp32", kv_indptr="*i64", kv_indices="*i64", mid_o="*fp32",
                 mid_lse="*fp32", sm_scale="fp32")
    consts = dict(G=g, D=d, BLOCK_H=max(8 if tokens_as_m else 16, triton.next_power_of_2(g)), BLOCK_N=block_n,
                  PAGE=page, KV_FMT=kd.FMT_IDS[fmt], INTERP=False,
                  DECODE={**kd.DECODE_IDS, **kd.ABLATION_IDS}[dec or "placement"], PREFETCH=prefetch,
                  TOKENS_AS_M=tokens_as_m, PAGE_BLOCK=page_block)
    div16 = {"q_ptr", "q_sb", "q_sh", "k_ptr", "v_ptr", "ks_ptr", "vs_ptr", "d_stride", "d_hstride", "gk_ptr", "kv_indptr",
             "kv_indices", "mid_o", "mid_lse"}
    if fp4:
        div16.add("s_stride")
    return _c._src(kd.decode_stage1, types, consts, div16)


def stage2_src(variant: str, d: int, splits: int):
    fmt, _, dec = variant.partition("+")
    types = dict(mid_o="*fp32", mid_lse="*fp32", gv_ptr="*fp32", out_ptr="*fp32", o_sb="i32", o_sh="i32",
                 SPLITS="i32")
    consts = dict(D=d, BLOCK_S=triton.next_power_of_2(splits), KV_FMT=kd.FMT_IDS[fmt], OUT_BF16=False,
                  DECODE={**kd.DECODE_IDS, **kd.ABLATION_IDS}[dec or "placement"], BLOCK_D=0)
    return _c._src(kd.decode_stage2, types, consts, {"mid_o", "mid_lse", "gv_ptr", "out_ptr", "o_sb", "o_sh"})


_LINE = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", re.M)


def main_loop(sass: str) -> list[tuple[int, str]]:
    """Instructions of the largest loop: from a backward `BRA` target to the branch."""
    ins = [(int(a, 16), t.strip()) for a, t in _LINE.findall(sass)]
    best: list[tuple[int, str]] = []
    for i, (addr, text) in enumerate(ins):
        m = re.search(r"\bBRA\b.*?`?\(?\.L_x_\d+\)?|\bBRA\b\s+(0x[0-9a-f]+)", text)
        if not m:
            continue
        tgt = re.search(r"0x([0-9a-f]+)", text)
        if tgt is None:
            continue
        t = int(tgt.group(1), 16)
        if t < addr:
            body = [x for x in ins if t <= x[0] <= addr]
            if len(body) > len(best):
                best = body
    return best


def opcode(text: str) -> str:
    t = re.sub(r"^@!?U?P\w+\s+", "", text)
    return t.split()[0].split(".")[0]


def measure(block_n: int, warps: int, stages: int, dump: str | None = None, prefetch: bool = False,
            variants=None, tokens_as_m: bool = False, page_block: bool = False) -> tuple[dict, int]:
    """Compile every format at one launch config; print a table; return ({fmt: counts}, failures)."""
    d, g, page, splits = 128, 8, 16, 16
    out, fails = {}, 0
    print(f"\nstage 1 at D={d}, G={g} (BLOCK_H={8 if tokens_as_m else 16}), page {page}, BLOCK_N={block_n}, "
          f"{warps} warps, {stages} stages, prefetch {prefetch}, tokens as M {tokens_as_m}, page blocks "
          f"{page_block}; triton {triton.__version__}")
    print("| KV format | registers / spills | loop SASS | KV elements / thread / iter | SASS per element | top opcodes in loop |")
    print("|---|---|---|---|---|---|")
    for fmt in variants or VARIANTS:
        if page_block and "fp4" not in fmt:
            continue  # page blocks hold FP4 codes and scales
        try:
            k = triton.compile(stage1_src(fmt, d, g, block_n, page, splits, prefetch, tokens_as_m, page_block),
                               target=_c.TARGET, options={"num_warps": warps, "num_stages": stages})
            triton.compile(stage2_src(fmt, d, splits), target=_c.TARGET, options={"num_warps": 4})
        except Exception as e:  # noqa: BLE001
            fails += 1
            print(f"| {fmt} | FAIL {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} |")
            continue
        ftz = sorted(set(re.findall(r"[\w.]+\.ftz\.f32", k.asm["ptx"])))
        sass = _c._cuobjdump(k.asm["cubin"], "-sass")
        loop = main_loop(sass)
        per_thread = 2 * block_n * d / (32 * warps)
        ops = Counter(opcode(t) for _, t in loop)
        res = _c.resources(k.asm["cubin"])
        per_el = len(loop) / per_thread
        out[fmt] = {"resources": res, "loop_sass": len(loop), "elements_per_thread_iter": per_thread,
                    "sass_per_element": round(per_el, 3), "ftz_ptx": ftz, "opcodes": dict(ops.most_common())}
        top = ", ".join(f"{o} {n}" for o, n in ops.most_common(8))
        print(f"| {fmt} | {res} | {len(loop)} | {per_thread:.0f} | {per_el:.2f} | {top} |")
        if dump == fmt:
            print("\n".join(t for _, t in loop))
    return out, fails


CONFIGS = [(bn, w, st, False, False) for st in (2, 1) for bn in (64, 128) for w in (4, 8)] + \
    [(bn, w, 1, True, False) for bn in (32, 64) for w in (2, 4)] + \
    [(32, 1, 2, False, False), (32, 1, 3, False, False), (64, 2, 2, False, False)] + \
    [(bn, w, st, False, True) for bn, w, st in ((16, 1, 2), (32, 1, 2), (32, 1, 3), (32, 2, 2), (64, 2, 2), (64, 4, 2))]
"""(BLOCK_N, num_warps, num_stages, prefetch, tokens_as_m) of `--all`."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the counts here")
    ap.add_argument("--dump", help="print this format's loop SASS")
    ap.add_argument("--block-n", type=int, default=64)
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--prefetch", action="store_true", help="software pipelining in registers (PREFETCH)")
    ap.add_argument("--tokens-as-m", action="store_true", help="tokens in the MMA's M dimension (TOKENS_AS_M)")
    ap.add_argument("--page-block", action="store_true", help="FP4 rows read from page blocks (PAGE_BLOCK)")
    ap.add_argument("--variants", help="comma-separated subset of VARIANTS")
    ap.add_argument("--all", action="store_true", help="every launch config of CONFIGS")
    args = ap.parse_args(argv)
    configs = CONFIGS if args.all else [(args.block_n, args.warps, args.stages, args.prefetch, args.tokens_as_m)]
    variants = args.variants.split(",") if args.variants else None
    rows, fails = [], 0
    for bn, w, st, pf, tm in configs:
        counts, f = measure(bn, w, st, args.dump, pf, variants, tm, args.page_block)
        fails += f
        rows.append({"block_n": bn, "num_warps": w, "num_stages": st, "prefetch": pf, "tokens_as_m": tm,
                     "page_block": args.page_block, "formats": counts})
    if args.json:
        cmd = command_line("sass_decode_attention.py", argv or sys.argv[1:])
        Path(args.json).write_text(json.dumps({"triton": triton.__version__, "target": "sm_90", "command": cmd,
                                               "head_dim": 128, "group": 8, "page": 16, "configs": rows},
                                              indent=1) + "\n")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
