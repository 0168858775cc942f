"""Launch-configuration grid of the decode-attention kernel at the headline shape, on a GPU.

For each KV format and decoder it times every (pipelining, BLOCK_N, num_warps) of a grid at the
issue's headline shape (batch 8, 64 q heads, 8 KV heads, head_dim 128, page 16, 32k context),
after checking the variants that are new to the GPU against the float64 oracle. Pipelining is
either Triton's own (`num_stages` 2 or 3) or ours (`prefetch`: loads issued one step ahead in
registers, `num_stages=1`). The results (median ms per config, the copy bandwidth of the same
run) land in `docs/data/perf/decode_attention_tuning.json`; the variant log renders them, and
the best configurations become the grid of `scripts/bench_decode_attention.py`.

Usage (GPU; about 5-8 minutes, saving after each format):

```bash
python scripts/tune_decode_attention.py --out docs/data/perf/decode_attention_tuning.json
```
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchkit import kvcaches as kc
from benchkit.record import ROOT, Saver, log, run_record
from benchkit.timing import ceilings, time_graph

PIPES = [dict(prefetch=0, num_stages=2), dict(prefetch=0, num_stages=3), dict(prefetch=1, num_stages=1)]
"""Pipelining options: Triton's pipeliner at 2 and 3 stages, or register prefetch."""
FORMATS = {
    "bf16": dict(block_n=(32, 64, 128), num_warps=(4, 8)),
    "fp8": dict(block_n=(32, 64, 128), num_warps=(4, 8)),
    "nvfp4+cvt_f16": dict(block_n=(32, 64, 128), num_warps=(2, 4)),
    "nvfp4+prmt_bf16": dict(block_n=(32, 64, 128), num_warps=(2, 4)),
    "fp4_mx_block16+prmt_bf16": dict(block_n=(32, 64, 128), num_warps=(2, 4)),
    "fp4_mx_block16+prmt": dict(block_n=(64, 128), num_warps=(4,)),
}
"""Formats (`recipe+decoder`) and the BLOCK_N / warps each is tried at."""
SPLITS = 16


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "data" / "perf" / "decode_attention_tuning.json"))
    ap.add_argument("--formats", help="comma-separated subset of FORMATS")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 2
    cfg = kc.Shape(False)
    gen = torch.Generator().manual_seed(0)
    res = {**run_record("tune_decode_attention.py", argv, smoke=False, gpu=True),
           "shape": dict(cfg.record(), num_kv_splits=SPLITS), "copy": ceilings("cuda"), "checks": [], "rows": []}
    save = Saver(res, args.out)

    caches = kc.build_caches(cfg, "cuda", 1)
    indptr, idx = kc.paged_indices(cfg, cfg.B, cfg.CTX, gen, "cuda")
    q = torch.randn(cfg.B, cfg.HQ, cfg.D, generator=gen).to("cuda").bfloat16()
    formats = args.formats.split(",") if args.formats else list(FORMATS)
    oracle = kc.Oracle(cfg, caches, q, indptr, idx, (0, 7), True)
    for f in formats:
        if f.endswith("cvt_f16"):
            res["checks"] += oracle.check(f, kc.run_variant(f, caches, q, indptr, idx, cfg, validate=True))
    bad = {c["format"] for c in res["checks"] if not c["ok"]}
    save("checks")
    copy_bw = res["copy"]["bytes_per_s"]
    for fmt in formats:
        if fmt in bad:
            log(f"{fmt}: failed its check, not timed")
            continue
        grid = FORMATS[fmt]
        ref = None
        for pipe in PIPES:
            for bn in grid["block_n"]:
                for w in grid["num_warps"]:
                    launch = dict(pipe, block_n=bn, num_warps=w, num_kv_splits=SPLITS)
                    row = {"format": fmt, **launch}
                    try:
                        o = kc.run_variant(fmt, caches, q, indptr, idx, cfg, **launch)
                        if ref is None:
                            ref = o
                        row["max_abs_diff_vs_first_config"] = float((o.float() - ref.float()).abs().max())
                        ms = time_graph(lambda: kc.run_variant(fmt, caches, q, indptr, idx, cfg, **launch))
                        nbytes = kc.bytes_read(fmt, cfg, cfg.B, cfg.CTX)
                        row.update(ms=ms, frac_of_copy=nbytes / (ms * 1e-3) / copy_bw)
                    except Exception as e:  # noqa: BLE001 - e.g. out of registers/shared memory
                        row["error"] = f"{type(e).__name__}: {str(e)[:160]}"
                    res["rows"].append(row)
                    log(f"  {fmt:26s} {str(pipe):36s} bn {bn:3d} w {w}: "
                            + (f"{row['ms'] * 1e3:7.1f} us ({row['frac_of_copy']:.0%} of copy)"
                               if "ms" in row else row["error"]))
        save(f"format {fmt}")
    best = {}
    for r in res["rows"]:
        if "ms" in r and (r["format"] not in best or r["ms"] < best[r["format"]]["ms"]):
            best[r["format"]] = r
    res["best"] = best
    save("done")
    for f, r in best.items():
        log(f"best {f:26s} {r['ms'] * 1e3:7.1f} us  {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
