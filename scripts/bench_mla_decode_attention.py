"""Benchmark MLA decode attention over an FP4 latent pool on a GPU; write `docs/data/perf/mla_decode_attention.json`.

DeepSeek-V3's absorbed MLA decode (latent 512 + 64, one latent row per token read as K and as V)
through one kernel design (`nvfp4_kvcache_triton.mla_decode_attention`), over a BF16 latent cache
(the baseline) and over FP4 latent pools of both recipes, in one self-checking run:

1. **ceilings**: the card's copy and read-only bandwidth (`benchkit.timing.ceilings`);
2. per shape (16 query heads per GPU, as at tensor parallelism 8; 128, as with data-parallel
   attention), batch 8, 32k tokens each, page 16:
   - **correctness**: every variant against the float64 oracle on sampled requests;
   - **timing**: every variant over its launch grid, each launch's output checked before it is
     timed (CUDA-graph replays, median); the best launch;
   - **summary** per recipe: speedup over the BF16 latent baseline (goal 2.5x), fraction of copy;
   - **SGLang's Triton MLA decode** on the BF16 latent cache, as an anchor for the baseline.

Usage:

```text
python scripts/bench_mla_decode_attention.py            # GPU (~3 min on an H200)
TRITON_INTERPRET=1 python scripts/bench_mla_decode_attention.py --smoke --out build/smoke/m.json   # CPU, toy sizes
```
"""

from __future__ import annotations

import argparse
import sys
import traceback

import torch

from benchkit import mla, warmup
from benchkit.record import ROOT, Saver, device_for, log, run_record, why
from benchkit.timing import ceilings, time_events, time_graph
from benchkit.upstream import load_sglang_decode

VARIANTS = ("bf16", "nvfp4+cvt_f16", "fp4_mx_block16+prmt_bf16", "nvfp4", "fp4_mx_block16")
SMOKE_VARIANTS = ("bf16", "nvfp4+cvt_f16", "nvfp4", "fp4_mx_block16")
BASE_LAUNCH = (32, 4, 2, 16, 1, 0, 0)
"""The design as first measured: (block_n, num_warps, num_stages, block_h, v_parts, tokens_as_m, split_scores)."""
GRIDS = {
    16: [BASE_LAUNCH, (32, 4, 2, 16, 1, 0, 1), (32, 4, 2, 16, 2, 0, 0), (32, 4, 2, 16, 2, 0, 1),
         (16, 4, 2, 16, 2, 0, 1), (32, 2, 2, 16, 2, 0, 1), (16, 2, 2, 16, 2, 0, 1), (32, 4, 2, 16, 2, 1, 0),
         (64, 8, 2, 16, 2, 1, 0)],
    128: [BASE_LAUNCH, (64, 8, 2, 64, 2, 0, 0), (64, 8, 2, 64, 2, 0, 1), (64, 8, 1, 64, 2, 0, 0),
          (64, 8, 3, 64, 2, 0, 0), (32, 4, 2, 64, 2, 0, 0), (64, 8, 2, 32, 1, 0, 0)],
}
"""Stage-1 launches `(block_n, num_warps, num_stages, block_h, v_parts, tokens_as_m, split_scores)` per query-head
count, timed for the variants of `FULL_GRID` (the others run `BASE_LAUNCH` only). Chosen from the
offline sm_90 counts of `scripts/sass_mla_decode_attention.py` (`docs/data/perf/mla_decode_attention_sass.json`):
at 16 heads the runs are latency-bound, so launches that put more programs on each SM (`v_parts=2`:
fewer registers), shorter chains of dependent MMAs per step (`split_scores`) and the tokens-as-M
forms (Hopper's `wgmma`); at 128 heads 64 heads per program
(`wgmma`, the latent decoded twice instead of 8 times per token), `v_parts=2` keeping the
accumulator in registers."""
FULL_GRID = ("bf16", "nvfp4+cvt_f16", "fp4_mx_block16+prmt_bf16")
SPLITS = {16: (32, 64, 128), 128: (8, 16)}
"""Splits per query-head count: 16 heads need more splits to fill the card."""
LAUNCH_KEYS = ("block_n", "num_warps", "num_stages", "block_h", "v_parts", "tokens_as_m", "split_scores")
HEADS = (16, 128)
CHECK_REQUESTS = (0, 7)


def launches(variant: str, shape: mla.Shape) -> list[dict]:
    if shape.smoke:  # the default launch, and for the full-grid variants one with every new option set
        return [dict(num_kv_splits=3)] + ([dict(num_kv_splits=3, block_h=32, v_parts=2, tokens_as_m=1, split_scores=1)]
                                          if variant in FULL_GRID else [])
    grid = GRIDS[shape.HQ] if variant in FULL_GRID else [BASE_LAUNCH]
    return [dict(num_kv_splits=s, **dict(zip(LAUNCH_KEYS, launch))) for launch in grid for s in SPLITS[shape.HQ]]


def _warm_worker(items: list) -> list[str]:
    """Compile `(heads, variant, launch)` items on tiny latent caches (see `benchkit.warmup`)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    errors, made = [], {}
    for heads, variant, launch in items:
        if heads not in made:
            shape = mla.Shape(dev == "cpu", heads).with_(B=2, CTX=64)
            gen = torch.Generator().manual_seed(0)
            caches = mla.build(shape, dev, 0)
            ip, ix = mla.indices(shape, gen, dev)
            qn = torch.randn(shape.B, shape.HQ, shape.DL, generator=gen).to(dev)
            qr = torch.randn(shape.B, shape.HQ, shape.DR, generator=gen).to(dev)
            made[heads] = (shape, caches, ip, ix, *((qn.bfloat16(), qr.bfloat16()) if dev == "cuda" else (qn, qr)))
        shape, caches, ip, ix, qn, qr = made[heads]
        try:
            mla.run_variant(variant, caches, qn, qr, ip, ix, shape, **launch)
        except Exception as e:  # noqa: BLE001 - reported; the main process meets it again and drops the launch
            errors.append(f"{variant} {launch}: {type(e).__name__}: {str(e)[:200]}")
    if dev == "cuda":
        torch.cuda.synchronize()
    return errors


def warm_items(variants, heads_list) -> list:
    """Every stage-1 tile of every variant and head count, every split count with its first tile."""
    items = []
    for heads in heads_list:
        for v in variants:
            ls = launches(v, mla.Shape(False, heads))
            tiles = {}
            for launch in ls:
                tiles.setdefault(tuple(sorted((k, x) for k, x in launch.items() if k != "num_kv_splits")), launch)
            items += [(heads, v, launch) for launch in tiles.values()]
            items += [(heads, v, dict(ls[0], num_kv_splits=s)) for s in sorted({x["num_kv_splits"] for x in ls})]
    return list({(h, v, tuple(sorted(launch.items()))): (h, v, launch) for h, v, launch in items}.values())


def sglang_mla_anchor(shape, caches, qn, qr, indptr, idx, splits: int, ours, smoke: bool) -> dict:
    """SGLang's Triton decode (its grouped MLA path: Lk 576, Lv 512) on the BF16 latent cache."""
    try:
        mod = load_sglang_decode()
    except Exception as e:  # noqa: BLE001
        return {"loaded": False, "reason": why(e)}
    q = torch.cat([qn, qr], -1)
    if smoke:  # the interpreter's bf16 tl.dot is wrong: upstream's kernel on an fp32 copy
        q = q.float()
    kb = caches["bf16"] if not smoke else caches["bf16"].float()
    b, h, _ = q.shape
    o = torch.empty(b, h, shape.DL, dtype=q.dtype, device=q.device)
    logits = torch.empty(b, h, splits, shape.DL, dtype=torch.float32, device=q.device)
    lse = torch.empty(b, h, splits, dtype=torch.float32, device=q.device)
    nsplit = torch.full((b,), splits, dtype=torch.int32, device=q.device)

    def run():
        mod.decode_attention_fwd(q, kb, kb[..., : shape.DL], o, indptr, idx, logits, lse, nsplit, splits,
                                 shape.SM_SCALE, 1.0, 1.0)
        return o

    try:
        run()
        err = float((o.float() - ours.float()).abs().max())
        ms = time_graph(run, smoke)
    except Exception as e:  # noqa: BLE001
        return {"loaded": True, "ran": False, "reason": why(e),
                "trace": traceback.format_exc()[-1500:]}
    return {"loaded": True, "ran": True, "ms": ms, "num_kv_splits": splits, "max_abs_diff_vs_our_bf16": err}


def run_shape(shape: mla.Shape, variants, dev: str, gpu: bool, copy_bw: float, save) -> dict:
    gen = torch.Generator().manual_seed(shape.HQ)
    caches = mla.build(shape, dev, shape.HQ)
    indptr, idx = mla.indices(shape, gen, dev)
    qn = torch.randn(shape.B, shape.HQ, shape.DL, generator=gen).to(dev)
    qr = torch.randn(shape.B, shape.HQ, shape.DR, generator=gen).to(dev)
    if gpu:
        qn, qr = qn.bfloat16(), qr.bfloat16()
    oracle = mla.Oracle(shape, caches, qn, qr, indptr, idx, CHECK_REQUESTS if gpu else (1,), gpu)
    out = {"shape": shape.record(), "correctness": [], "rows": [], "dropped_variants": []}
    for v in variants:
        try:
            rows = oracle.check(v, mla.run_variant(v, caches, qn, qr, indptr, idx, shape, validate=True,
                                                   **launches(v, shape)[0]))
        except Exception as e:  # noqa: BLE001 - reported, not fatal (except for the baseline)
            rows = [{"format": v, "error": f"{type(e).__name__}: {str(e)[:300]}", "ok": False}]
        out["correctness"] += rows
        for r in rows:
            log(f"  {shape.HQ} heads: check {v:26s} " + (f"req {r['request']}: max|err| {r['max_abs_err']:.3g} "
                                                         f"(tol {r['tolerance']:.3g}) rel-rms {r['rel_rms_err']:.3g} "
                                                         if "error" not in r else r["error"] + " ")
                + ("ok" if r["ok"] else "FAIL"))
        if not all(r["ok"] for r in rows):
            out["dropped_variants"].append(v)
    if "bf16" in out["dropped_variants"]:
        return out
    save(f"{shape.HQ} heads correctness")
    best = {}
    for v in [v for v in variants if v not in out["dropped_variants"]]:
        tried = []
        for launch in launches(v, shape):
            row = dict(launch)
            try:
                checks = oracle.check(v, mla.run_variant(v, caches, qn, qr, indptr, idx, shape, **launch))
                row["max_rel_rms_err"] = max(c["rel_rms_err"] for c in checks)
                if not all(c["ok"] for c in checks):
                    row["error"] = f"output fails the oracle check: {checks}"
                else:
                    row["ms"] = time_graph(lambda: mla.run_variant(v, caches, qn, qr, indptr, idx, shape, **launch),
                                           shape.smoke)
            except Exception as e:  # noqa: BLE001 - e.g. out of shared memory for one tile
                row["error"] = f"{type(e).__name__}: {str(e)[:160]}"
            tried.append(row)
        ok = [t for t in tried if "ms" in t]
        if not ok:
            out["dropped_variants"].append(v)
            log(f"  {v}: dropped, no launch ran and passed: {tried[:1]}")
            continue
        b = min(ok, key=lambda t: t["ms"])
        launch = {k: x for k, x in b.items() if k not in ("ms", "max_rel_rms_err")}
        best[v] = launch
        nbytes = mla.bytes_read(v, shape)
        ms_ev = time_events(lambda: mla.run_variant(v, caches, qn, qr, indptr, idx, shape, **launch), shape.smoke)
        bw = nbytes / (b["ms"] * 1e-3)
        out["rows"].append({"format": v, "ms": b["ms"], "ms_events": ms_ev, "bytes": nbytes, "bytes_per_s": bw,
                            "frac_of_copy": bw / copy_bw, "launch": launch, "tried": tried})
        log(f"  {shape.HQ} heads: {v:26s} {b['ms'] * 1e3:8.1f} us (events {ms_ev * 1e3:.1f})  {bw / 1e12:.3f} TB/s "
            f"({bw / copy_bw:.0%} of copy)  {launch}")
        save(f"{shape.HQ} heads {v}")
    head = {r["format"]: r for r in out["rows"]}
    out["summary"] = {}
    for r in mla.FP4:
        cands = [v for v in head if mla.value_format(v) == r]
        if not cands or "bf16" not in head:
            continue
        v = min(cands, key=lambda v: head[v]["ms"])
        sp = head["bf16"]["ms"] / head[v]["ms"]
        out["summary"][r] = {"variant": v, "ms": head[v]["ms"], "speedup_vs_bf16": sp, "goal_2p5x_bf16_met": sp >= 2.5,
                             "frac_of_copy": head[v]["frac_of_copy"], "launch": head[v]["launch"]}
        log(f"  {shape.HQ} heads summary {r} ({v}): x{sp:.2f} vs the BF16 latent, {head[v]['frac_of_copy']:.0%} of copy")
    if "bf16" in best:
        ours = mla.run_variant("bf16", caches, qn if gpu else qn.float(), qr if gpu else qr.float(), indptr, idx, shape,
                               **best["bf16"])
        out["sglang_triton_mla_bf16"] = sglang_mla_anchor(shape, caches, qn, qr, indptr, idx,
                                                          best["bf16"]["num_kv_splits"], ours, shape.smoke)
        log(f"  {shape.HQ} heads SGLang anchor: { {k: x for k, x in out['sglang_triton_mla_bf16'].items() if k != 'trace'} }")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "data" / "perf" / "mla_decode_attention.json"))
    ap.add_argument("--smoke", action="store_true", help="toy sizes on the CPU under TRITON_INTERPRET=1")
    ap.add_argument("--heads", default=",".join(str(h) for h in HEADS), help="query-head counts to run")
    ap.add_argument("--workers", type=int, default=12, help="processes compiling kernels before the timing (0: none)")
    args = ap.parse_args(argv)
    dev = device_for(args.smoke)
    if dev is None:
        return 2
    gpu = dev == "cuda"
    variants = SMOKE_VARIANTS if args.smoke else VARIANTS
    heads_list = [int(h) for h in args.heads.split(",")]
    wait = warmup.start(_warm_worker, warm_items(variants, heads_list), args.workers) if gpu and args.workers else None
    res = {**run_record("bench_mla_decode_attention.py", argv, smoke=args.smoke, gpu=gpu), "variants": list(variants),
           "shapes": {}}
    save = Saver(res, args.out)
    log(f"device: {res['device']}; versions: {res['versions']}")
    log("[1/2] ceilings")
    res["copy"] = ceilings(dev, args.smoke)
    log(f"  copy {res['copy']['bytes_per_s'] / 1e12:.3f} TB/s")
    save("ceilings")
    if wait is not None:
        res["warm_up_errors"] = wait()
        log(f"  warm-up done at {save.elapsed():.0f} s ({len(res['warm_up_errors'])} errors)")
    for heads in heads_list:
        shape = mla.Shape(args.smoke, heads)
        log(f"[2/2] {heads} query heads, batch {shape.B}, {shape.CTX} tokens each, latent {shape.DL} + {shape.DR}")
        res["shapes"][str(heads)] = run_shape(shape, variants, dev, gpu, res["copy"]["bytes_per_s"], save)
        if "bf16" in res["shapes"][str(heads)]["dropped_variants"]:
            log("the BF16 baseline FAILED its check: no timings for this shape")
            save(f"{heads} heads FAILED")
            return 1
        save(f"{heads} heads")
    save("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
