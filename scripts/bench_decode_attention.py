"""Benchmark the split-KV paged decode attention on a GPU; write `docs/data/perf/decode_attention.json`.

One self-checking run on one card, saving its JSON after every stage:

1. **ceilings**: the card's copy and read-only bandwidth (`benchkit.timing.ceilings`);
2. **caches and correctness**: the same random K/V as FP4 pools (both recipes, and their page
   blocks), BF16 and FP8; every variant of `VARIANTS` against the float64 oracle on sampled
   requests at the headline shape (the run stops before any timing if a baseline fails; an FP4
   variant that fails is dropped and listed);
3. **headline** (batch 8, 64 query heads, 8 KV heads, head dim 128, page 16, 32k tokens each):
   every variant over its launch grid (`GRIDS` x `SPLITS`), each launch's output checked against
   the oracle before it is timed; the best launch, its CUDA-graph time and its CUDA-event time;
   summaries per recipe against BF16 and FP8 (the goals' ratios);
4. **FlashInfer**'s decode (NVFP4 through its FA2 tensor-core path, BF16 and FP8) over the same
   caches, through `FLASHINFER_HARNESS` where FlashInfer can be imported: each output checked
   against the oracle, then timed; summaries of each recipe against FlashInfer's NVFP4;
5. **SGLang's Triton BF16 decode kernel** on the BF16 cache, as a sanity anchor for our baseline;
6. **upstream's way of reading an FP4 pool**: dequantize the whole layer to BF16, then BF16
   attention, at two pool sizes (the batch's 262k tokens and the whole 2M-token pool; our Triton dequantize, and
   SGLang's compiled `batched_dequantize` for `fp4_mx_block16`);
7. **sweep**: context 1k..128k x batch 1, 8, 64 for BF16, the best FP8 and each recipe's best;
8. **other shapes**: head dims 64 and 256, pages 1 and 64, each variant at its headline launch.

Usage:

`text
python scripts/bench_decode_attention.py                 # GPU, everything (~4-5 min on an H200)
python scripts/bench_decode_attention.py --no-sweep      # stages 1-6
python scripts/bench_decode_attention.py --launch-table docs/data/perf/decode_attention.json
TRITON_INTERPRET=1 python scripts/bench_decode_attention.py --smoke --out build/smoke/d.json   # CPU, toy sizes
`

`--smoke` runs every stage at toy sizes under Triton's interpreter (timings meaningless), so CI
keeps this script alive. SGLang's files are read from `.cache/sglang-0.5.23/src` (carry that
folder to a GPU machine without network). `--launch-table` prints the `DEVICE_LAUNCHES` entry
(`nvfp4_kvcache_triton.decode_attention`) of a finished run. `--no-shapes` skips stage 8 only
(`scripts/gpu_all.sh` runs the benchmark so, within its time budget).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import traceback
from pathlib import Path

import torch

from benchkit import kvcaches as kc
from benchkit import warmup
from benchkit.record import ROOT, Saver, device_for, log, run_record, why
from benchkit.timing import ceilings, time_events, time_graph
from benchkit.upstream import load_kvfp4_tensor, load_sglang_decode

FP4 = kc.FP4
BASELINES = ("bf16", "fp8", "fp8+cvt_f16")
VARIANTS = BASELINES + (
    "nvfp4+cvt_f16", "nvfp4+cvt_f16@pages", "fp4_mx_block16+cvt_f16", "fp4_mx_block16+cvt_f16@pages",
    "fp4_mx_block16+prmt_bf16", "fp4_mx_block16+prmt_bf16@pages",
    "nvfp4+prmt_bf16", "nvfp4", "fp4_mx_block16", "nvfp4+prmt", "fp4_mx_block16+prmt",
)
"""Every variant timed, baselines first (see `benchkit.kvcaches` for the names)."""
SMOKE_VARIANTS = ("bf16", "fp8", "fp8+cvt_f16", "nvfp4", "nvfp4+cvt_f16", "nvfp4+cvt_f16@pages", "fp4_mx_block16",
                  "fp4_mx_block16@pages", "fp4_mx_block16+cvt_f16")
"""The variants the interpreter runs (the inline-PTX decoders are GPU only)."""

HM = [(32, 1, 2, 0)]
TM = [(16, 1, 2, 1), (32, 1, 2, 1), (32, 1, 3, 1), (32, 2, 2, 1), (64, 2, 2, 1), (64, 4, 2, 1)]
GRIDS = {
    "bf16": [(64, 8, 3, 0), (32, 1, 3, 0), (32, 1, 2, 1), (64, 2, 2, 1)],
    "fp8": [(32, 1, 2, 0), (32, 2, 2, 1), (64, 2, 2, 1)],
    "fp8+cvt_f16": [(32, 1, 2, 0), (32, 1, 2, 1), (32, 2, 2, 1), (64, 2, 2, 1)],
    "nvfp4+cvt_f16": [(32, 1, 2, 0), (32, 1, 3, 0)] + TM,
    "nvfp4+cvt_f16@pages": [(32, 1, 2, 0), (32, 1, 2, 1), (32, 2, 2, 1), (64, 2, 2, 1)],
    "fp4_mx_block16+cvt_f16": [(32, 1, 2, 0), (32, 1, 3, 0)] + TM,
    "fp4_mx_block16+cvt_f16@pages": [(32, 1, 2, 0), (32, 1, 2, 1), (32, 2, 2, 1), (64, 2, 2, 1)],
    "fp4_mx_block16+prmt_bf16": [(32, 1, 2, 0), (32, 1, 2, 1), (32, 2, 2, 1), (64, 2, 2, 1)],
    "fp4_mx_block16+prmt_bf16@pages": [(32, 1, 2, 1), (32, 2, 2, 1)],
    "nvfp4+prmt_bf16": [(64, 2, 2, 0), (32, 1, 2, 1), (32, 2, 2, 1)],
}
"""(block_n, num_warps, num_stages, tokens_as_m) tried per variant, each at every split count of
`SPLITS`: the H100's best heads-as-M launches (`DEVICE_LAUNCHES`) and the tokens-as-M tiles whose
stage 1 compiles without spills at the fewest registers (`scripts/sass_decode_attention.py`).
Variants not listed run `HM` at `REFERENCE_SPLITS` only: reference rows for the variant log."""
SPLITS = (16, 24, 32, 48, 64)
"""Splits tried with every launch: the number of stage-1 programs decides how full the last wave
is (1024 to 4096 programs at the headline; one-warp programs at 168 registers fit 12 per SM)."""
REFERENCE_SPLITS = (32,)
SMOKE_GRID = [dict(num_kv_splits=2, block_n=16, tokens_as_m=t) for t in (0, 1)]
CHECK_REQUESTS = (0, 7)
UPSTREAM_POOLS = (8 * 32768, 1 << 21)
"""Pool sizes of the whole-layer dequantize: the batch's own tokens (a pool holding nothing else),
and the benchmark's whole pool of 2M tokens."""
SWEEP_CTX, SWEEP_B = (1024, 4096, 16384, 65536, 131072), (1, 8, 64)
SHAPES = [(64, 16), (256, 16), (128, 1), (128, 64)]
"""(head_dim, page) timed besides the headline's (128, 16); their correctness at 32k tokens is the
GPU tests' (`tests/test_decode_attention_kernel.py::test_gpu_full_size`)."""
FLASHINFER_HARNESS = "flashinfer_decode"
"""Module (in `scripts/`) that times FlashInfer's decode on the same caches (`scripts/flashinfer_decode.py`).
Expected: `rows(caches, q, kv_indptr, kv_indices, shape, timer, oracle=...) -> list[dict]`, one dict
per FlashInfer path with at least `{"format": "bf16" | "fp8" | "nvfp4", "ms": float}` (and `"ok"`,
its check against the oracle), and `unavailable() -> str | None`. Absent, or FlashInfer not
importable here, stage 4 records why."""


def launches(variant: str, smoke: bool) -> list[dict]:
    if smoke:
        return [dict(x) for x in SMOKE_GRID]
    grid, splits = (GRIDS[variant], SPLITS) if variant in GRIDS else (HM, REFERENCE_SPLITS)
    return [dict(num_kv_splits=s, block_n=n, num_warps=w, num_stages=st, tokens_as_m=t)
            for n, w, st, t in grid for s in splits]


def tile(launch: dict) -> dict:
    """A launch without its split count: what `DEVICE_LAUNCHES` and the warm-up key on."""
    return {k: v for k, v in launch.items() if k != "num_kv_splits"}


# ---------------------------------------------------------------------------------------------
# stage 2: compile warm-up (parallel, no timing) and correctness
# ---------------------------------------------------------------------------------------------
def _warm_worker(items: list) -> list[str]:
    """Compile `(shape sizes, variant, launch)` items by running each once on tiny caches of those
    head counts, head dim and page (the same kernel specialisations as the timed runs, so the main
    process then finds every kernel in Triton's on-disk cache). Returns the errors, as text."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    errors, made = [], {}
    for shape_kw, variant, launch in items:
        key = tuple(sorted(shape_kw.items()))
        if key not in made:
            shape = kc.Shape(dev == "cpu").with_(**shape_kw)
            caches = kc.build_caches(shape, dev, 0, page_blocks=shape.PAGE > 1)
            gen = torch.Generator().manual_seed(0)
            ip, ix = kc.paged_indices(shape, shape.B, shape.CTX, gen, dev)
            q = torch.randn(shape.B, shape.HQ, shape.D, generator=gen).to(dev)
            made[key] = (shape, caches, ip, ix, q.bfloat16() if dev == "cuda" else q)
        shape, caches, ip, ix, q = made[key]
        try:
            kc.run_variant(variant, caches, q, ip, ix, shape, **launch)
        except Exception as e:  # noqa: BLE001 - reported; the main process meets it again and drops the launch
            errors.append(f"{variant} {launch}: {type(e).__name__}: {str(e)[:200]}")
    if dev == "cuda":
        torch.cuda.synchronize()
    return errors


def tiny(shape: kc.Shape, **kw) -> dict:
    """Sizes of a tiny pool with `shape`'s heads, head dim and page (and `kw`): the kernels it
    compiles are the ones the full shape runs."""
    d = dict(HQ=shape.HQ, HKV=shape.HKV, D=shape.D, PAGE=shape.PAGE, B=2)
    d.update(kw)
    return dict(d, POOL=64 * d["PAGE"], CTX=4 * d["PAGE"])


def headline_items(variants, shape: kc.Shape) -> list:
    """Every stage-1 tile of every variant's grid, and every split count (stage 2) with its first tile."""
    items = []
    for v in variants:
        ls = launches(v, False)
        tiles = {}
        for launch in ls:
            tiles.setdefault(tuple(sorted(tile(launch).items())), launch)
        items += [(tiny(shape), v, launch) for launch in tiles.values()]
        items += [(tiny(shape), v, dict(ls[0], num_kv_splits=s))
                  for s in sorted({x["num_kv_splits"] for x in ls}) if s != ls[0]["num_kv_splits"]]
    return items


# ---------------------------------------------------------------------------------------------
# stage 3: headline
# ---------------------------------------------------------------------------------------------
def tune(variant: str, shape, caches, q, indptr, idx, oracle: kc.Oracle, smoke: bool):
    """Time `variant` at every launch of its grid whose output passes the oracle check; the best
    launch, its time, and every launch tried (with its check)."""
    best, best_ms, tried = None, math.inf, []
    for launch in launches(variant, smoke):
        row = dict(launch)
        try:
            out = kc.run_variant(variant, caches, q, indptr, idx, shape, **launch)
            checks = oracle.check(variant, out)
            row["max_rel_rms_err"] = max(c["rel_rms_err"] for c in checks)
            if not all(c["ok"] for c in checks):
                row["error"] = f"output fails the oracle check: {checks}"
                tried.append(row)
                log(f"    {variant} {launch}: FAILS the oracle check")
                continue
            ms = time_graph(lambda: kc.run_variant(variant, caches, q, indptr, idx, shape, **launch), smoke)
        except Exception as e:  # noqa: BLE001 - e.g. out of shared memory for one tile
            row["error"] = f"{type(e).__name__}: {str(e)[:160]}"
            tried.append(row)
            continue
        row["ms"] = ms
        tried.append(row)
        if ms < best_ms:
            best, best_ms = launch, ms
    return best, best_ms, tried


def summarize(head: dict) -> dict:
    """Per FP4 variant: speedups over BF16 and FP8 (the fastest FP8 variant, and FP8 with bf16
    dots), fraction of copy, and the goals (3x BF16, 1.7x FP8; 2.5x BF16 for fp4_mx_block16)."""
    bf16 = head["bf16"]
    fp8s = [head[v] for v in head if kc.value_format(v) == "fp8"]
    fp8 = min(fp8s, key=lambda r: r["ms"])
    out = {}
    for v, r in head.items():
        if kc.value_format(v) not in FP4:
            continue
        goal_bf16 = 3.0 if kc.value_format(v) == "nvfp4" else 2.5
        out[v] = {"variant": v, "ms": r["ms"], "launch": r["launch"], "frac_of_copy": r["frac_of_copy"],
                  "frac_of_read": r["frac_of_read"],
                  "speedup_vs_bf16": bf16["ms"] / r["ms"], "speedup_vs_fp8": fp8["ms"] / r["ms"], "fp8_variant": fp8["format"],
                  "speedup_vs_fp8_bf16_dots": head["fp8"]["ms"] / r["ms"] if "fp8" in head else None,
                  "speedup_vs_bf16_events": bf16["ms_events"] / r["ms_events"],
                  "speedup_vs_fp8_events": fp8["ms_events"] / r["ms_events"],
                  "goal_bf16": goal_bf16, "goal_bf16_met": bf16["ms"] / r["ms"] >= goal_bf16,
                  "goal_1p7x_fp8_met": kc.value_format(v) == "nvfp4" and fp8["ms"] / r["ms"] >= 1.7}
    return out


def flashinfer_stage(caches, q, indptr, idx, shape, smoke: bool, oracle=None) -> dict:
    """FlashInfer's decode on the same caches, through `FLASHINFER_HARNESS` when present: its
    `unavailable()` says why FlashInfer cannot run here (recorded as `available: False`), its
    `rows(...)` times it (`oracle`, when given, lends it the references of stage 2)."""
    try:
        harness = importlib.import_module(FLASHINFER_HARNESS)
    except ImportError as e:
        return {"available": False, "reason": why(e)}
    why = harness.unavailable() if hasattr(harness, "unavailable") else None
    if why:
        return {"available": False, "reason": why}
    try:
        kw = {} if oracle is None else {"oracle": oracle}
        rows = harness.rows(caches, q, indptr, idx, shape, lambda fn: time_graph(fn, smoke), **kw)
    except Exception as e:  # noqa: BLE001 - record why, keep going
        return {"available": True, "ran": False, "reason": why(e),
                "trace": traceback.format_exc()[-1500:]}
    return {"available": True, "ran": True, "rows": rows}


def flashinfer_fastest(fi: dict) -> dict:
    """Per format, FlashInfer's fastest row that ran and passed its check."""
    best = {}
    for r in fi.get("rows", []):
        if "ms" in r and r.get("ok", True) and (r["format"] not in best or r["ms"] < best[r["format"]]["ms"]):
            best[r["format"]] = r
    return best


def flashinfer_summary(summary: dict, fi: dict) -> None:
    """Add `speedup_vs_flashinfer_nvfp4` (FlashInfer's NVFP4 decode time over ours, per recipe) to
    `summary`, and FlashInfer's own `speedup_vs_bf16` (its fastest BF16 over its NVFP4; also
    `speedup_vs_fp8`) to `fi`. Each FlashInfer time is its fastest path that passed the check."""
    best = flashinfer_fastest(fi)
    if "nvfp4" not in best:
        return
    nv = best["nvfp4"]
    for s in summary.values():
        s["speedup_vs_flashinfer_nvfp4"] = nv["ms"] / s["ms"]
        s["flashinfer_nvfp4_backend"] = nv.get("backend")
    fi["fastest"] = {f: r.get("backend") for f, r in best.items()}
    for base in ("bf16", "fp8"):
        if base in best:
            fi[f"speedup_vs_{base}"] = best[base]["ms"] / nv["ms"]


# ---------------------------------------------------------------------------------------------
# stages 5-6: upstream
# ---------------------------------------------------------------------------------------------
def sglang_anchor(shape, k, v, q, indptr, idx, splits: int, ref_out, smoke: bool) -> dict:
    """SGLang's Triton decode over the same (bf16, or fp32 in --smoke) cache, slot indices."""
    try:
        mod = load_sglang_decode()
    except Exception as e:  # noqa: BLE001
        return {"loaded": False, "reason": why(e)}
    b, hq, d = q.shape
    o = torch.empty(b, hq, d, dtype=q.dtype, device=q.device)
    logits = torch.empty(b, hq, splits, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(b, hq, splits, dtype=torch.float32, device=q.device)
    nsplit = torch.full((b,), splits, dtype=torch.int32, device=q.device)

    def run():
        mod.decode_attention_fwd(q, k, v, o, indptr, idx, logits, lse, nsplit, splits, 1 / math.sqrt(d), 1.0, 1.0)
        return o

    try:
        run()
        err = float((o.float() - ref_out.float()).abs().max())
        ms = time_graph(run, smoke)
    except Exception as e:  # noqa: BLE001
        return {"loaded": True, "ran": False, "reason": why(e),
                "trace": traceback.format_exc()[-1500:]}
    return {"loaded": True, "ran": True, "ms": ms, "num_kv_splits": splits, "max_abs_diff_vs_our_bf16": err}


def upstream_dequant_then_bf16(shape, caches, q, best_bf16: dict, dev: str, smoke: bool, gen) -> list[dict]:
    """Dequantize the first `pool` slots of the layer to bf16 (whole-layer, as upstream's
    `get_kv_buffer`), then our BF16 decode over the batch's slots, which lie in those `pool` slots.
    Our Triton dequantize is a lower bound of upstream's cost; upstream's own `batched_dequantize`
    (fp4_mx_block16) is timed where it loads, at the largest pool (its `torch.compile` compiles
    once per shape)."""
    import nvfp4_kvcache_triton

    util = None
    try:
        if smoke:
            raise RuntimeError("skipped in --smoke (its torch.compile takes ~10 s on a CPU)")
        util = load_kvfp4_tensor().FP4MXBlock16KVQuantizeUtil
    except Exception as e:  # noqa: BLE001 - record why, keep going
        log(f"  upstream kvfp4_tensor not used: {type(e).__name__}: {e}")
    rows = []
    pools = (shape.B * shape.CTX,) if smoke else UPSTREAM_POOLS
    for pool_tokens in pools:
        pool_tokens = min(pool_tokens, shape.POOL)
        indptr, idx = kc.paged_indices(shape, shape.B, shape.CTX, gen, dev, pool_tokens=pool_tokens)
        n = pool_tokens + shape.PAGE  # slots 0 .. pool_tokens + PAGE - 1 (page 0 is padding)
        for fmt in FP4:
            p = caches["pools"][fmt]
            t = p.layer_tensors(0)
            g = (p.k_scales[0:1], p.v_scales[0:1]) if fmt == "nvfp4" else (None, None)
            kb = torch.empty(n, shape.HKV, shape.D, dtype=torch.bfloat16, device=dev)
            vb = torch.empty_like(kb)

            def deq():
                kb.copy_(nvfp4_kvcache_triton.dequantize_parts(t["k"][:n], t["k_scale"][:n].reshape(n, shape.HKV, -1),
                                                               fmt, g[0], torch.bfloat16))
                vb.copy_(nvfp4_kvcache_triton.dequantize_parts(t["v"][:n], t["v_scale"][:n].reshape(n, shape.HKV, -1),
                                                               fmt, g[1], torch.bfloat16))

            def both():
                deq()
                return kc.run_variant("bf16", {"bf16": (kb, vb)}, q, indptr, idx, shape, **best_bf16)

            row = {"path": "ours_triton_dequantize_whole_layer+bf16_decode", "recipe": fmt, "pool_tokens": n,
                   "ms_dequantize": time_graph(deq, smoke), "ms_total": time_graph(both, smoke)}
            if util is not None and fmt == "fp4_mx_block16" and pool_tokens == max(pools):  # one torch.compile
                try:
                    def up():
                        return (util.batched_dequantize(t["k"][:n], t["k_scale"][:n].reshape(n, -1), torch.bfloat16),
                                util.batched_dequantize(t["v"][:n], t["v_scale"][:n].reshape(n, -1), torch.bfloat16))

                    row["ms_upstream_batched_dequantize"] = time_graph(up, smoke)
                except Exception as e:  # noqa: BLE001
                    row["upstream_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            rows.append(row)
            log(f"  {fmt:15s} pool {n:>8d}: dequantize {row['ms_dequantize']:.3f} ms, total {row['ms_total']:.3f} ms"
                + (f", upstream dequantize {row['ms_upstream_batched_dequantize']:.3f} ms"
                   if "ms_upstream_batched_dequantize" in row else ""))
    return rows


# ---------------------------------------------------------------------------------------------
# stages 7-8: sweep and other shapes
# ---------------------------------------------------------------------------------------------
def sweep_splits(shape, batch: int, ctx: int, programs: int) -> int:
    """Splits giving about `programs` stage-1 programs (the variant's best count at the headline,
    so the same occupancy and wave shape), each split at least 256 tokens, at most 64."""
    want = max(1, round(programs / (batch * shape.HKV)))
    return max(1, min(64, want, max(1, ctx // 256)))


def other_shapes(shape, best: dict, variants, gpu: bool, dev: str, copy_bw: float, smoke: bool) -> list[dict]:
    """The headline's batch and context at other head dims and page sizes, each variant at its
    headline launch (one pool of just the batch's tokens per shape)."""
    rows = []
    for d, page in (SHAPES if gpu else [(128, 1)]):
        s = shape.with_(D=d, PAGE=page, POOL=(math.ceil(shape.B * shape.CTX / page) + 1) * page)
        caches = kc.build_caches(s, dev, 2, page_blocks=page > 1 and any("@pages" in v for v in variants))
        gen = torch.Generator().manual_seed(d + page)
        ip, ix = kc.paged_indices(s, s.B, s.CTX, gen, dev)
        q = torch.randn(s.B, s.HQ, d, generator=gen).to(dev)
        q = q.bfloat16() if gpu else q
        line = {}
        for v in variants:
            if "@pages" in v and page == 1:
                continue  # page blocks need pages
            launch = best[v] if gpu else {"num_kv_splits": 2}
            try:
                ms = time_graph(lambda: kc.run_variant(v, caches, q, ip, ix, s, **launch), smoke)
            except Exception as e:  # noqa: BLE001 - e.g. a tile too large for head dim 256
                rows.append({"format": v, "head_dim": d, "page": page, "error": f"{type(e).__name__}: {str(e)[:160]}"})
                continue
            nbytes = kc.bytes_read(v, s, s.B, s.CTX)
            line[v] = ms
            rows.append({"format": v, "head_dim": d, "page": page, "batch": s.B, "context": s.CTX, "ms": ms,
                         "bytes": nbytes, "frac_of_copy": nbytes / (ms * 1e-3) / copy_bw, "launch": launch})
        for r in rows:
            if r.get("head_dim") == d and r.get("page") == page and "ms" in r and "bf16" in line:
                fp8 = min(ms for v, ms in line.items() if kc.value_format(v) == "fp8")
                r["speedup_vs_bf16"], r["speedup_vs_fp8"] = line["bf16"] / r["ms"], fp8 / r["ms"]
        log(f"  D={d:3d} page={page:2d}: " + ", ".join(f"{v} {ms * 1e3:.0f}us x{line['bf16'] / ms:.2f}"
                                                     for v, ms in line.items() if "bf16" in line))
    return rows


def launch_table(path: str) -> str:
    """The `DEVICE_LAUNCHES` entry of a finished run: each variant's best tile."""
    d = json.loads(Path(path).read_text())
    lines = [f"    {d['device']!r}: {{"]
    for r in d["rows"]:
        if r["kind"] == "headline" and "@" not in r["format"]:
            lines.append(f"        {r['format']!r}: {tile(r['launch'])!r},")
    return "\n".join(lines + ["    },"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "data" / "perf" / "decode_attention.json"))
    ap.add_argument("--smoke", action="store_true", help="toy sizes on the CPU under TRITON_INTERPRET=1")
    ap.add_argument("--no-sweep", action="store_true", help="skip the context x batch sweep and the other shapes")
    ap.add_argument("--no-shapes", action="store_true", help="skip the other head dims and page sizes (stage 8)")
    ap.add_argument("--variants", help="comma-separated subset of VARIANTS (the baselines always run)")
    ap.add_argument("--workers", type=int, default=12, help="processes compiling kernels before the timing (0: none)")
    ap.add_argument("--budget-s", type=float, default=270.0, help="skip the sweep and shapes past this many seconds")
    ap.add_argument("--launch-table", metavar="JSON", help="print the DEVICE_LAUNCHES entry of a finished run")
    args = ap.parse_args(argv)
    if args.launch_table:
        print(launch_table(args.launch_table))
        return 0
    shape = kc.Shape(args.smoke)
    dev = device_for(args.smoke)
    if dev is None:
        return 2
    gpu = dev == "cuda"
    variants = list(SMOKE_VARIANTS if args.smoke else VARIANTS)
    if args.variants:
        want = set(args.variants.split(","))
        variants = [v for v in variants if v in want or v in BASELINES]
    gen = torch.Generator().manual_seed(0)
    res = {**run_record("bench_decode_attention.py", argv, smoke=args.smoke, gpu=gpu), "shape": shape.record(),
           "variants": variants}
    save = Saver(res, args.out)
    log(f"device: {res['device']}; versions: {res['versions']}")

    log("[1/8] ceilings")
    res["copy"] = ceilings(dev, args.smoke)
    copy_bw, read_bw = res["copy"]["bytes_per_s"], res["copy"]["read_bytes_per_s"]
    log(f"  copy {copy_bw / 1e12:.3f} TB/s, read-only {read_bw / 1e12:.3f} TB/s")
    save("ceilings")

    log("[2/8] compile warm-up, caches, correctness (sampled requests, float64 oracle)")
    wait = warmup.start(_warm_worker, headline_items(variants, shape), args.workers) if gpu and args.workers > 0 else None
    caches = kc.build_caches(shape, dev, 1, page_blocks=any("@pages" in v for v in variants))
    indptr, idx = kc.paged_indices(shape, shape.B, shape.CTX, gen, dev)
    q = torch.randn(shape.B, shape.HQ, shape.D, generator=gen).to(dev)
    q = q.bfloat16() if gpu else q
    oracle = kc.Oracle(shape, caches, q, indptr, idx, CHECK_REQUESTS if gpu else (1,), gpu)
    for fmt in ("bf16", "fp8") + FP4:
        for b in oracle.requests:
            oracle._ref(fmt, b)  # noqa: SLF001 - the references, computed while the kernels compile
    if wait is not None:
        res["warm_up_errors"] = wait()
        log(f"  warm-up done at {save.elapsed():.0f} s ({len(res['warm_up_errors'])} errors)")
    res["correctness"], dropped = [], []
    for v in variants:
        try:
            rows = oracle.check(v, kc.run_variant(v, caches, q, indptr, idx, shape, validate=True,
                                                  **launches(v, args.smoke)[0]))
        except Exception as e:  # noqa: BLE001 - a decoder that fails to build is reported, not fatal
            rows = [{"format": v, "error": f"{type(e).__name__}: {str(e)[:300]}", "ok": False}]
        res["correctness"] += rows
        for r in rows:
            log(f"  check {v:32s} " + (f"req {r['request']}: max|err| {r['max_abs_err']:.3g} (tol {r['tolerance']:.3g}) "
                                        f"rel-rms {r['rel_rms_err']:.3g} " if "error" not in r else r["error"] + " ")
                + ("ok" if r["ok"] else "FAIL"))
        if not all(r["ok"] for r in rows):
            dropped.append(v)
    res["dropped_variants"] = dropped
    if set(dropped) & {"bf16", "fp8"}:
        log("correctness of a baseline FAILED: no timings taken")
        save("correctness FAILED")
        return 1
    save("correctness")

    log(f"[3/8] headline: each variant at its best launch (dropped: {dropped})")
    rows, best = [], {}
    for v in [v for v in variants if v not in dropped]:
        launch, ms, tried = tune(v, shape, caches, q, indptr, idx, oracle, args.smoke)
        if launch is None:
            res["dropped_variants"].append(v)
            log(f"  {v}: dropped, no launch ran and passed: {tried[:1]}")
            if v == "bf16":
                save("headline FAILED")
                return 1
            continue
        best[v] = launch
        nbytes = kc.bytes_read(v, shape, shape.B, shape.CTX)
        ms_ev = time_events(lambda: kc.run_variant(v, caches, q, indptr, idx, shape, **launch), args.smoke)
        bw = nbytes / (ms * 1e-3)
        rows.append({"kind": "headline", "format": v, "batch": shape.B, "context": shape.CTX, "ms": ms, "bytes": nbytes,
                     "bytes_per_s": bw, "frac_of_copy": bw / copy_bw, "frac_of_read": bw / read_bw, "ms_events": ms_ev,
                     "launch": launch, "tried": tried})
        log(f"  {v:32s} {ms * 1e3:8.1f} us (events {ms_ev * 1e3:.1f})  {bw / 1e12:.3f} TB/s ({bw / copy_bw:.0%} of "
            f"copy)  {launch}")
        res["rows"] = rows
        save(f"headline {v}")
    head = {r["format"]: r for r in rows}
    res["summary_variants"] = summarize(head)
    slot = {v: s for v, s in res["summary_variants"].items() if "@" not in v}
    pages = {v: s for v, s in res["summary_variants"].items() if "@" in v}
    res["summary"] = {r: min((s for v, s in slot.items() if kc.value_format(v) == r), key=lambda s: s["ms"])
                      for r in FP4 if any(kc.value_format(v) == r for v in slot)}
    res["summary_page_blocks"] = {r: min((s for v, s in pages.items() if kc.value_format(v) == r), key=lambda s: s["ms"])
                                  for r in FP4 if any(kc.value_format(v) == r for v in pages)}
    for name, summ in (("slot-major", res["summary"]), ("page blocks", res["summary_page_blocks"])):
        for r, s in summ.items():
            log(f"  {name} {r} ({s['variant']}): x{s['speedup_vs_bf16']:.2f} vs bf16, x{s['speedup_vs_fp8']:.2f} vs "
                f"{s['fp8_variant']}, {s['frac_of_copy']:.0%} of copy")
    save("headline")
    # the baselines (BF16, the fastest FP8) and each FP4 recipe's fastest variant, slot-major and page blocks
    fp8_best = min((v for v in head if kc.value_format(v) == "fp8"), key=lambda v: head[v]["ms"])
    sweep_variants = ["bf16", fp8_best] + [s["variant"] for s in res["summary"].values()] + \
        [s["variant"] for s in res["summary_page_blocks"].values()]
    res["sweep_formats"] = sweep_variants
    shape_items = [(tiny(shape, D=d, PAGE=page), v, best[v]) for d, page in SHAPES for v in sweep_variants
                   if not ("@pages" in v and page == 1)]
    wait_shapes = warmup.start(_warm_worker, shape_items, args.workers) \
        if gpu and args.workers > 0 and not (args.no_sweep or args.no_shapes) else None

    log("[4/8] FlashInfer decode on the same caches")
    res["flashinfer"] = fi = flashinfer_stage(caches, q, indptr, idx, shape, args.smoke, oracle)
    for r in fi.get("rows", []):
        if "bytes_per_s" in r:
            r["frac_of_copy"], r["frac_of_read"] = r["bytes_per_s"] / copy_bw, r["bytes_per_s"] / read_bw
        log(f"  {r['format']:6s} {r['backend']:22s} " + (
            f"{r['ms'] * 1e3:8.1f} us  {r['bytes_per_s'] / 1e12:.3f} TB/s  check {'ok' if r['ok'] else 'FAIL'}"
            if "ms" in r else r.get("skipped") or r.get("error", "")))
    flashinfer_summary(res["summary"], fi)
    log(f"  {({k: v for k, v in fi.items() if k not in ('trace', 'rows')})}")
    save("flashinfer")

    log("[5/8] SGLang's Triton BF16 decode kernel (sanity anchor)")
    if args.smoke:  # the interpreter's bf16 tl.dot is wrong: run upstream's kernel on an fp32 copy
        k32, v32 = (t.float() for t in caches["bf16"])
        ours = kc.run_variant("bf16", caches, q.float(), indptr, idx, shape)
        anchor = sglang_anchor(shape, k32, v32, q.float(), indptr, idx, 2, ours, args.smoke)
    else:
        ours = kc.run_variant("bf16", caches, q, indptr, idx, shape, **best["bf16"])
        anchor = sglang_anchor(shape, *caches["bf16"], q, indptr, idx, best["bf16"]["num_kv_splits"], ours, args.smoke)
        if anchor.get("ran"):
            anchor["ours_bf16_ms"] = head["bf16"]["ms"]
    res["sglang_triton_bf16"] = anchor
    log(f"  {anchor}")
    save("sglang")
    if args.smoke and anchor.get("ran") and anchor["max_abs_diff_vs_our_bf16"] > 1e-4:
        log("  SGLang's kernel disagrees with ours in the smoke run")
        return 1

    log("[6/8] upstream path: dequantize the whole layer to bf16, then bf16 attention")
    res["upstream_dequantize_then_bf16"] = upstream_dequant_then_bf16(shape, caches, q, best["bf16"], dev, args.smoke,
                                                                      gen)
    save("upstream")

    res["skipped"] = []
    if args.no_sweep or save.elapsed() > args.budget_s:
        res["skipped"] = ["sweep", "shapes"]
        if wait_shapes is not None:
            wait_shapes()
        log(f"[7/8] [8/8] sweep and shapes skipped ({'--no-sweep' if args.no_sweep else 'past the time budget'})")
    else:
        log(f"[7/8] sweep: context x batch for {sweep_variants}")
        for b in SWEEP_B if gpu else (1,):
            for ctx in SWEEP_CTX if gpu else (shape.CTX,):
                ip, ix = kc.paged_indices(shape, b, ctx, gen, dev)
                qq = torch.randn(b, shape.HQ, shape.D, generator=gen).to(dev).to(q.dtype)
                line = []
                for v in sweep_variants:
                    programs = shape.B * shape.HKV * best[v]["num_kv_splits"]
                    launch = dict(best[v], num_kv_splits=sweep_splits(shape, b, ctx, programs) if gpu else 2)
                    ms = time_graph(lambda: kc.run_variant(v, caches, qq, ip, ix, shape, **launch), args.smoke)
                    nbytes = kc.bytes_read(v, shape, b, ctx)
                    rows.append({"kind": "sweep", "format": v, "batch": b, "context": ctx, "ms": ms, "bytes": nbytes,
                                 "bytes_per_s": nbytes / (ms * 1e-3), "frac_of_copy": nbytes / (ms * 1e-3) / copy_bw,
                                 "frac_of_read": nbytes / (ms * 1e-3) / read_bw, "launch": launch})
                    line.append(f"{v} {ms * 1e3:.0f}us/{launch['num_kv_splits']}")
                log(f"  B={b:3d} ctx={ctx:7d}: " + ", ".join(line))
            save(f"sweep batch {b}")
        caches.clear()  # the 2M-slot pools: room for the shapes' caches
        if wait_shapes is not None:
            res["warm_up_errors_shapes"] = wait_shapes()
        if args.no_shapes or save.elapsed() > args.budget_s + 90:
            res["skipped"] = ["shapes"]
            log(f"[8/8] other head dims and page sizes skipped ({'--no-shapes' if args.no_shapes else 'past the time budget'})")
        else:
            log(f"[8/8] other head dims and page sizes (batch {shape.B}, context {shape.CTX}); headline launches")
            res["shapes"] = other_shapes(shape, best, sweep_variants, gpu, dev, copy_bw, args.smoke)
    save("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
