"""Compile the MLA decode stage-1 kernel for sm_90 on a machine with no GPU; count registers, spills and SASS.

Uses Triton's bundled `ptxas`/`cuobjdump` (as `scripts/sass_decode_attention.py` does for the MHA
kernel). For each variant (the BF16 latent baseline and the FP4 decoders the benchmark times)
and each launch of `LAUNCHES` it compiles stage 1 at DeepSeek-V3's shape (latent 512 + rope 64,
page 16), prints registers, stack/local memory (spills), shared memory, finds the main loop in the
SASS (the largest backward branch) and counts its instructions:

    SASS per element  = loop instructions / (latent elements one thread handles per step)
                      = loop instructions / (BLOCK_N * (512 + 64) / (32 * num_warps))
    per element at H heads = SASS per element * programs per token (cdiv(H, block_h) * v_parts)

A static count (each instruction once), not a timing: the proxy for the instruction issue cost
of one latent element over all query heads. It also counts the loop's local-memory instructions
(`LDL`/`STL`, spills), shared-memory instructions (`LDS`/`STS`/`LDSM`: layout conversions) and
tensor-core instructions (`HMMA`/`HGMMA`), and the longest chain of `HMMA`s that each accumulate
onto the previous one's result (a latency proxy: such instructions cannot overlap).

Usage:

```bash
python scripts/sass_mla_decode_attention.py                      # table (a few minutes on 2 cores)
python scripts/sass_mla_decode_attention.py --json docs/data/perf/mla_decode_attention_sass.json
python scripts/sass_mla_decode_attention.py --only nvfp4+cvt_f16 --dump 64,4,2,16,2,0
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("sass_mla_decode_attention.py: unset TRITON_INTERPRET (the interpreter does not compile)")

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE), str(_HERE.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import compile_sm90 as _c  # noqa: E402
import triton  # noqa: E402
from nvfp4_kvcache_triton.mla_decode_attention import stage2_block_d  # noqa: E402
from sass_decode_attention import main_loop, opcode  # noqa: E402

from nvfp4_kvcache_triton._triton import decode_attention as kd  # noqa: E402
from nvfp4_kvcache_triton._triton.mla_decode_attention import mla_decode_stage1  # noqa: E402
from provenance import command_line  # noqa: E402

DL, DR, PAGE = 512, 64, 16
HEADS = (16, 128)
VARIANTS = ("bf16", "nvfp4+cvt_f16", "fp4_mx_block16+prmt_bf16")
"""The variants compiled at every launch (the benchmark's fastest FP4 decoders and the baseline)."""
LAUNCHES = [
    # (block_n, num_warps, num_stages, block_h, v_parts, tokens_as_m, split_scores)
    (32, 4, 2, 16, 1, 0),   # the design as first measured
    (32, 4, 1, 16, 1, 0),
    (32, 4, 3, 16, 1, 0),
    (16, 4, 2, 16, 1, 0),
    (64, 4, 2, 16, 1, 0),
    # 16 heads: fewer registers (more programs per SM), shorter MMA chains per warp, wgmma
    (16, 4, 2, 16, 2, 0),
    (32, 4, 2, 16, 2, 0),
    (64, 4, 2, 16, 2, 0),
    (32, 8, 2, 16, 2, 0),
    (64, 8, 2, 16, 2, 0),
    (32, 2, 2, 16, 2, 0),
    (16, 2, 2, 16, 2, 0),
    (32, 4, 2, 16, 1, 1),
    (64, 4, 2, 16, 1, 1),
    (32, 4, 2, 16, 2, 1),
    (64, 4, 2, 16, 2, 1),
    (64, 8, 2, 16, 2, 1),
    (128, 4, 2, 16, 2, 1),
    # independent score chains (split_scores)
    (32, 4, 2, 16, 1, 0, 1),
    (32, 4, 2, 16, 2, 0, 1),
    (16, 4, 2, 16, 2, 0, 1),
    (32, 2, 2, 16, 2, 0, 1),
    (16, 2, 2, 16, 2, 0, 1),
    (64, 8, 2, 16, 2, 0, 1),
    (64, 8, 2, 64, 2, 0, 1),
    # 128 heads: more heads per program (the latent decoded fewer times per token)
    (32, 8, 2, 32, 1, 0),
    (32, 4, 2, 32, 2, 0),
    (64, 8, 2, 32, 1, 0),
    (64, 8, 2, 32, 2, 0),
    (64, 4, 2, 32, 2, 1),
    (32, 4, 2, 64, 2, 0),
    (32, 8, 2, 64, 2, 0),
    (64, 8, 1, 64, 2, 0),
    (64, 8, 2, 64, 2, 0),
    (64, 8, 3, 64, 2, 0),
    (64, 8, 2, 64, 1, 0),
    (64, 8, 2, 64, 2, 1),
]
"""Stage-1 launches compiled for every variant: `(block_n, num_warps, num_stages, block_h, v_parts, tokens_as_m,
split_scores)`; a 6-tuple has `split_scores` off."""
KEYS = ("block_n", "num_warps", "num_stages", "block_h", "v_parts", "tokens_as_m", "split_scores")


def stage1_src(variant: str, block_n: int, block_h: int, v_parts: int, tokens_as_m: bool, split_scores: bool = False):
    fmt, _, dec = variant.partition("+")
    fp4 = fmt != "bf16"
    types = dict(qn_ptr="*bf16", qn_sb="i32", qn_sh="i32", qr_ptr="*bf16", qr_sb="i32", qr_sh="i32",
                 kv_ptr="*u8" if fp4 else "*bf16", kvs_ptr="*u8" if fp4 else "*bf16", d_stride="i32",
                 s_stride="i32", g_ptr="*fp32", kv_indptr="*i64", kv_indices="*i64", mid_o="*fp32",
                 mid_lse="*fp32", sm_scale="fp32", HQ="i32")
    consts = dict(DL=DL, DR=DR, BLOCK_H=block_h, BLOCK_N=block_n, PAGE=PAGE, KV_FMT=kd.FMT_IDS[fmt], INTERP=False,
                  DECODE=kd.DECODE_IDS[dec or "placement"], V_PARTS=v_parts, TOKENS_AS_M=bool(tokens_as_m), SPLIT_SCORES=bool(split_scores))
    div16 = {"qn_ptr", "qr_ptr", "kv_ptr", "kvs_ptr", "mid_o", "mid_lse", "kv_indptr", "kv_indices", "g_ptr"}
    return _c._src(mla_decode_stage1, types, consts, div16)


def _resources(res: str) -> dict:
    return {k.lower(): int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", res)}


SM90 = dict(regs=65536, smem=228 * 1024, warps=64, ctas=32)
"""An sm_90 SM's register file, shared memory (bytes, of which 1 KiB per CTA is reserved), warps and CTAs."""


def ctas_per_sm(regs: int, warps: int, shared: int) -> int:
    """Resident programs per SM from registers (allocated 256 per warp at a time), shared memory and warps."""
    by_regs = SM90["regs"] // (-(-regs * 32 // 256) * 256 * warps)
    by_smem = SM90["smem"] // (shared + 1024) if shared else SM90["ctas"]
    return min(by_regs, by_smem, SM90["warps"] // warps, SM90["ctas"])


def stage2_src(splits: int, block_d: int):
    types = dict(mid_o="*fp32", mid_lse="*fp32", gv_ptr="*fp32", out_ptr="*fp32", o_sb="i32", o_sh="i32",
                 SPLITS="i32")
    consts = dict(D=DL, BLOCK_S=triton.next_power_of_2(splits), KV_FMT=kd.FMT_IDS["nvfp4"], OUT_BF16=False,
                  DECODE=kd.DECODE_IDS["cvt_f16"], BLOCK_D=block_d)
    return _c._src(kd.decode_stage2, types, consts, {"mid_o", "mid_lse", "gv_ptr", "out_ptr", "o_sb", "o_sh"})


STAGE2_SPLITS = (8, 16, 32, 64, 128)


def measure_stage2(splits: int, block_d: int) -> dict:
    """Stage 2 (the splits' merge) at `splits`, one program per head (`block_d = 0`) or per column chunk."""
    row = {"splits": splits, "block_d": block_d}
    k = triton.compile(stage2_src(splits, block_d), target=_c.TARGET, options={"num_warps": 4})
    row.update(_resources(_c.resources(k.asm["cubin"])))
    row["sass"] = _c.sass_count(k.asm["cubin"])
    return row


def measure_one(variant: str, launch: tuple, dump: bool = False) -> dict:
    """Compile one variant at one launch; the counts (or the error)."""
    launch = tuple(launch) + (0,) * (len(KEYS) - len(launch))
    bn, w, st, bh, vp, tm, ss = launch
    row = {"variant": variant, **dict(zip(KEYS, launch))}
    try:
        k = triton.compile(stage1_src(variant, bn, bh, vp, tm, ss), target=_c.TARGET,
                           options={"num_warps": w, "num_stages": st})
    except Exception as e:  # noqa: BLE001 - recorded per launch
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        return row
    sass = _c._cuobjdump(k.asm["cubin"], "-sass")
    loop = main_loop(sass)
    ops = Counter(opcode(t) for _, t in loop)
    per_thread = bn * (DL + DR) / (32 * w)
    per_el = len(loop) / per_thread
    row.update(_resources(_c.resources(k.asm["cubin"])))
    row["shared_dynamic"] = k.metadata.shared
    row["ctas_per_sm"] = ctas_per_sm(row["reg"], w, k.metadata.shared)
    row.update({
        "loop_sass": len(loop),
        "latent_elements_per_thread_step": per_thread,
        "sass_per_element": round(per_el, 3),
        "sass_per_element_at_heads": {str(h): round(per_el * -(-h // bh) * vp, 3) for h in HEADS},
        "loop_local": sum(n for o, n in ops.items() if o in ("LDL", "STL")),
        "loop_shared": sum(n for o, n in ops.items() if o in ("LDS", "STS", "LDSM", "STSM")),
        "loop_mma": sum(n for o, n in ops.items() if o in ("HMMA", "HGMMA")),
        "wgmma": ops.get("HGMMA", 0) > 0,
        "hmma_chain": hmma_chain([t for _, t in loop]),
        "top_opcodes": dict(ops.most_common(10)),
    })
    if dump:
        row["loop"] = [t for _, t in loop]
    return row


_HMMA = re.compile(r"\bHMMA\.\w+(?:\.\w+)*\s+(R\d+),\s*R\d+(?:\.reuse)?,\s*R\d+(?:\.reuse)?,\s*(R\d+|RZ)")


def hmma_chain(loop: list[str]) -> int:
    """The longest chain of `HMMA`s in the loop each accumulating onto the previous one's result
    (`D = A.B + C` with `C` the last `D`): tensor-core instructions that cannot overlap."""
    chain: dict[str, int] = {}
    longest = 0
    for text in loop:
        m = _HMMA.search(text)
        if m:
            d, c = m.groups()
            chain[d] = (chain.get(c, 0) if c != "RZ" else 0) + 1
            longest = max(longest, chain[d])
    return longest


def _job(args):
    return measure_one(*args) if isinstance(args[1], tuple) else measure_stage2(*args)


def table(rows: list[dict]) -> str:
    out = ["| variant | block_n, warps, stages, block_h, v_parts, tokens_as_m, split_scores | regs | stack / local | shared (dynamic) "
           "| programs per SM | loop SASS | local / shared / MMA in loop | HMMA chain | SASS per element | at 16 heads "
           "| at 128 heads |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        launch = ", ".join(str(r[k]) for k in KEYS)
        if "error" in r:
            out.append(f"| {r['variant']} | {launch} | FAIL {r['error']} |")
            continue
        h = r["sass_per_element_at_heads"]
        out.append(f"| {r['variant']} | {launch} | {r['reg']} | {r['stack']} / {r['local']} | {r['shared_dynamic']} | "
                   f"{r['ctas_per_sm']} | "
                   f"{r['loop_sass']} | {r['loop_local']} / {r['loop_shared']} / {r['loop_mma']}"
                   f"{' (wgmma)' if r['wgmma'] else ''} | {r['hmma_chain']} | {r['sass_per_element']:.2f} | {h['16']:.2f} | {h['128']:.2f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the counts here")
    ap.add_argument("--only", help="comma-separated subset of VARIANTS")
    ap.add_argument("--launch", action="append",
                    help="block_n,warps,stages,block_h,v_parts,tokens_as_m[,split_scores] instead of LAUNCHES (repeatable)")
    ap.add_argument("--dump", help="print the loop SASS of this launch (block_n,warps,stages,block_h,v_parts,tokens_as_m)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    variants = args.only.split(",") if args.only else list(VARIANTS)
    pad = lambda t: t + (0,) * (len(KEYS) - len(t))  # noqa: E731
    launches = [pad(tuple(int(x) for x in s.split(","))) for s in args.launch] if args.launch else \
        [pad(tuple(t)) for t in LAUNCHES]
    dump = pad(tuple(int(x) for x in args.dump.split(","))) if args.dump else None
    jobs = [(v, launch, launch == dump) for v in variants for launch in launches]
    s2_jobs = [(sp, bd) for sp in STAGE2_SPLITS for bd in (0, stage2_block_d(DL, sp))]
    with ProcessPoolExecutor(max(1, args.workers)) as ex:
        rows = list(ex.map(_job, jobs))
        stage2 = list(ex.map(_job, s2_jobs))
    print(f"MLA stage 1 at latent {DL} + {DR}, page {PAGE}, sm_90; triton {triton.__version__}")
    print(table(rows))
    print("\nstage 2 (merge of the splits), 4 warps:\n| splits | columns per program | regs | stack / local | SASS |\n|---|---|---|---|---|")
    for r in stage2:
        print(f"| {r['splits']} | {r['block_d'] or DL} | {r['reg']} | {r['stack']} / {r['local']} | {r['sass']} |")
    for r in rows:
        if "loop" in r:
            print(f"\n{r['variant']} {[r[k] for k in KEYS]} loop:\n" + "\n".join(r.pop("loop")))
    if args.json:
        cmd = command_line("sass_mla_decode_attention.py", argv if argv is not None else sys.argv[1:])
        Path(args.json).write_text(json.dumps({"triton": triton.__version__, "target": "sm_90", "command": cmd,
                                               "kv_lora_rank": DL, "qk_rope_head_dim": DR, "page": PAGE,
                                               "heads": list(HEADS), "rows": rows, "stage2": stage2},
                                              indent=1) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
