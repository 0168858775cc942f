"""Launch tuning of the decode-attention kernel at head dims 64 and 256, on a GPU; writes
`docs/data/perf/decode_attention_shapes_tuned.json`.

The benchmark (`scripts/bench_decode_attention.py`) tunes each format at the headline's head dim
128 and times the other head dims at that launch. A 256-wide row doubles the registers a token
takes, so the headline's best launch (one warp, 32 tokens a step) is not the best there. This
script times BF16, FP8 and each FP4 recipe's fastest decoder at the headline's batch and context,
head dims 64 and 256, over one launch grid, and keeps each format's best. Every launch's output is
compared with the default launch's (the one the GPU tests check against the float64 oracle at
these head dims), as relative RMS difference.

Usage (GPU, about 4 minutes; `--budget-s` stops the timing early and keeps what was measured):

```bash
python scripts/tune_shapes_decode_attention.py
TRITON_INTERPRET=1 python scripts/tune_shapes_decode_attention.py --smoke --out build/smoke/decode_attention_shapes.json   # CPU, tiny
```
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchkit import kvcaches as kc
from benchkit.record import ROOT, Saver, device_for, log, run_record
from benchkit.timing import ceilings, time_graph

HEAD_DIMS = (256, 64)
FORMATS = ("bf16", "fp8", "nvfp4+cvt_f16", "fp4_mx_block16+prmt_bf16")
LAUNCHES = [(32, 1, 2), (64, 1, 2), (32, 2, 2), (64, 2, 2), (64, 4, 2), (128, 4, 2)]
"""(block_n, num_warps, num_stages), each tried at every split count of `SPLITS`."""
SPLITS = (16, 32, 64)
DEFAULT_LAUNCH = {"num_kv_splits": 16}
"""The reference launch: the kernel's default tile and warps (`nvfp4_kvcache_triton.decode_attention.TUNING`)."""


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-300))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "data" / "perf" / "decode_attention_shapes_tuned.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU under TRITON_INTERPRET=1")
    ap.add_argument("--budget-s", type=float, default=270.0, help="stop timing new launches after this many seconds")
    args = ap.parse_args(argv)
    cfg = kc.Shape(args.smoke)
    dev = device_for(args.smoke)
    if dev is None:
        return 2
    gpu = dev == "cuda"
    res = {**run_record("tune_shapes_decode_attention.py", argv, smoke=cfg.smoke, gpu=gpu),
           "shape": {"batch": cfg.B, "q_heads": cfg.HQ, "kv_heads": cfg.HKV, "page": cfg.PAGE, "context": cfg.CTX},
           "copy": ceilings(dev, cfg.smoke), "truncated": False, "rows": []}
    save = Saver(res, args.out)

    grid = [dict(num_kv_splits=s, block_n=n, num_warps=w, num_stages=st) for n, w, st in LAUNCHES for s in SPLITS] \
        if gpu else [dict(num_kv_splits=2, block_n=16)]
    formats = FORMATS if gpu else ("bf16", "fp8", "nvfp4+cvt_f16")
    for d in (HEAD_DIMS if gpu else (64,)):
        c = cfg.with_(D=d, POOL=(cfg.B * -(-cfg.CTX // cfg.PAGE) + 1) * cfg.PAGE)  # the batch's pages, no wrap-around
        caches = kc.build_caches(c, dev, 3)
        gen = torch.Generator().manual_seed(d)
        ip, ix = kc.paged_indices(c, c.B, c.CTX, gen, dev)
        q = torch.randn(c.B, c.HQ, d, generator=gen).to(dev)
        q = q.bfloat16() if gpu else q
        best = {}
        for fmt in formats:
            ref = kc.run_variant(fmt, caches, q, ip, ix, c, **DEFAULT_LAUNCH)
            tried = []
            for launch in grid:
                if save.elapsed() > args.budget_s:
                    res["truncated"] = True
                    break
                try:
                    diff = rel_rms(kc.run_variant(fmt, caches, q, ip, ix, c, **launch), ref)
                    ms = time_graph(lambda: kc.run_variant(fmt, caches, q, ip, ix, c, **launch), cfg.smoke)
                except Exception as e:  # noqa: BLE001 - e.g. out of registers for one config
                    tried.append({**launch, "error": f"{type(e).__name__}: {str(e)[:120]}"})
                    continue
                tried.append({**launch, "ms": ms, "rel_rms_vs_default_launch": diff})
            ok = [t for t in tried if "ms" in t]
            if not ok:
                continue
            b = min(ok, key=lambda t: t["ms"])
            nbytes = kc.bytes_read(fmt, c, c.B, c.CTX)
            best[fmt] = {"format": fmt, "head_dim": d, "ms": b["ms"],
                         "launch": {k: v for k, v in b.items() if k not in ("ms", "rel_rms_vs_default_launch")},
                         "frac_of_copy": nbytes / (b["ms"] * 1e-3) / res["copy"]["bytes_per_s"],
                         "max_rel_rms_vs_default_launch": max(t["rel_rms_vs_default_launch"] for t in ok),
                         "tried": tried}
            log(f"  D={d} {fmt:26s} {b['ms'] * 1e3:8.1f} us  {best[fmt]['launch']}  "
                    f"(max rel-rms vs default launch {best[fmt]['max_rel_rms_vs_default_launch']:.1e})")
        for r in best.values():
            if "bf16" in best and "fp8" in best:
                r["speedup_vs_bf16"], r["speedup_vs_fp8"] = best["bf16"]["ms"] / r["ms"], best["fp8"]["ms"] / r["ms"]
            res["rows"].append(r)
        save(f"head_dim {d}")
    save("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
