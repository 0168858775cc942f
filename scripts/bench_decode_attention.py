"""Benchmark the split-KV paged decode attention on a GPU; write `docs/data/perf/decode_attention.json`.

One self-checking run on one card:

1. **copy bandwidth** of the card (`dst.copy_(src)`, 2 GiB, bytes read + written / median time):
   the ceiling every `frac_of_copy` is measured against;
2. **correctness at full size** (headline shape, sampled requests) of every format against the
   float64 oracle on the CPU, with [`nvfp4_kvcache_triton.decode_attention.attention_tolerance`][nvfp4_kvcache_triton.decode_attention.attention_tolerance]; the run
   stops (exit 1) if any check fails, before any timing;
3. **headline** (batch 8, 64 q heads, 8 KV heads, head_dim 128, page 16, 32k context each):
   FP4 (`nvfp4`, `fp4_mx_block16`), BF16 and FP8 through the *same* kernel design, each at its
   best (num_kv_splits, block_n, num_warps) from a small sweep; achieved bytes/s of K+V (data and
   scales) over the copy bandwidth;
4. **upstream's way of reading an FP4 pool**: dequantize the whole layer to BF16 (our own Triton
   dequantize, a lower bound on upstream's cost; and upstream's `batched_dequantize` for
   `fp4_mx_block16` where it loads), then BF16 attention, at pool sizes of the batch's tokens
   and of 1M tokens;
5. **SGLang's Triton BF16 decode kernel** (`sglang/kernels/ops/attention/decode_attention.py`
   from the 0.5.23 wheel, loaded standalone with stubs) on the BF16 cache: a sanity anchor for our
   BF16 baseline (or the reason it could not be loaded);
6. **sweep** context 1k..128k x batch 1..64 for every format (slots wrap around one 2M-token pool
   when `batch * context` exceeds it; the working set still far exceeds L2);
7. **other shapes**: head dims 64 and 256 and pages 1 and 64 at the headline's batch and context.

Usage:

```bash
python scripts/bench_decode_attention.py                  # GPU, full run (~3-6 min)
python scripts/bench_decode_attention.py --no-sweep       # correctness + headline only
TRITON_INTERPRET=1 python scripts/bench_decode_attention.py --smoke --out build/smoke/decode_attention.json   # CPU, tiny
```

`--smoke` runs every step at toy sizes under Triton's interpreter (timings meaningless), so CI
keeps this script alive. The upstream files are read from `.cache/sglang-0.5.23/src` (carry
`.cache` to a GPU machine without network).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import triton  # noqa: E402

from nvfp4_kvcache_triton import decode_attention as kda  # noqa: E402
from nvfp4_kvcache.attention import decode_attention as oracle_decode  # noqa: E402
from nvfp4_kvcache.attention import ragged_attention  # noqa: E402
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4  # noqa: E402
from scripts.provenance import command_line  # noqa: E402

FP4 = ("nvfp4", "fp4_mx_block16")
FORMATS = FP4 + ("bf16", "fp8")
GPU_VARIANTS = tuple(f"{r}+{d}" for r in FP4 for d in ("prmt", "prmt_bf16")) + ("nvfp4+cvt_f16",)
"""FP4 with the inline-PTX decoders (GPU only; checked like the rest, dropped from timing if wrong)."""
G_K, G_V = 0.37, 1.9          # nvfp4 global scales (non-1 on purpose)
FP8_K, FP8_V = 0.05, 0.05     # fp8 per-tensor scales


def log(*a):
    print(*a, flush=True)


class Cfg:
    """Sizes (full run or --smoke)."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        if smoke:
            self.B, self.HQ, self.HKV, self.D, self.PAGE, self.CTX = 2, 4, 1, 64, 16, 20
            self.POOL = 256
            self.COPY_BYTES = 1 << 16
            self.SWEEP_CTX, self.SWEEP_B = [20], [1]
            self.TUNE = [dict(num_kv_splits=2, block_n=32, num_warps=4)]
            self.UPSTREAM_POOLS = [self.B * self.CTX]
            self.CHECK_REQS = [1]
        else:
            self.B, self.HQ, self.HKV, self.D, self.PAGE, self.CTX = 8, 64, 8, 128, 16, 32768
            self.POOL = 1 << 21
            self.COPY_BYTES = 1 << 31
            self.SWEEP_CTX = [1024, 4096, 16384, 65536, 131072]
            self.SWEEP_B = [1, 8, 64]
            self.TUNE = None  # per format: TUNE_CANDIDATES x TUNE_SPLITS
            self.UPSTREAM_POOLS = [self.B * self.CTX, 1 << 20]
            self.CHECK_REQS = [0, 7]


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
TIMING = {"method": None, "fallbacks": 0}


def bench(fn, smoke: bool) -> float:
    """Median milliseconds of `fn()` on the GPU, launched from a CUDA graph (as a serving engine
    runs decode: no Python or launch overhead in the number), by `triton.testing.do_bench_cudagraph`;
    plain `do_bench` (CUDA events) where a call cannot be captured, counted in `TIMING`. One
    wall-clock call in --smoke."""
    if smoke:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    from triton.testing import do_bench, do_bench_cudagraph

    fn()  # compile and allocate outside the capture
    torch.cuda.synchronize()
    try:
        ms = float(do_bench_cudagraph(fn, rep=100, return_mode="median"))
        TIMING["method"] = TIMING["method"] or "cuda graph replay, median (triton.testing.do_bench_cudagraph)"
        return ms
    except Exception:  # noqa: BLE001 - not capturable: time with events instead, and say so
        TIMING["fallbacks"] += 1
        torch.cuda.synchronize()
        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def bench_events(fn, smoke: bool) -> float:
    """Median milliseconds of `fn()` by `triton.testing.do_bench` (CUDA events around each call,
    L2 flushed before each): includes whatever launch overhead the GPU waits for."""
    if smoke:
        return bench(fn, smoke)
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def copy_bandwidth(cfg: Cfg, dev: str) -> dict:
    """The card's ceilings, measured here: `dst.copy_(src)` (bytes read + written) and a
    read-only reduction (`src.sum()`, bytes read), both timed with CUDA events."""
    n = cfg.COPY_BYTES // 2
    src = torch.empty(n, dtype=torch.int16, device=dev).random_()
    dst = torch.empty_like(src)
    ms = bench_events(lambda: dst.copy_(src), cfg.smoke)
    f32 = src.view(torch.float32)  # random bits; NaNs in the sum do not change the time
    ms_read = bench_events(lambda: f32.sum(), cfg.smoke)
    return {"bytes": 2 * src.numel() * 2, "ms": ms, "bytes_per_s": 2 * src.numel() * 2 / (ms * 1e-3),
            "method": "dst.copy_(src) of 2 GiB, bytes read + written; do_bench (CUDA events), median",
            "read_bytes": f32.numel() * 4, "read_ms": ms_read, "read_bytes_per_s": f32.numel() * 4 / (ms_read * 1e-3),
            "read_method": "float32 src.sum() over 2 GiB, bytes read; do_bench (CUDA events), median"}


# ---------------------------------------------------------------------------------------------
# caches: one pool per format, same values, same slots
# ---------------------------------------------------------------------------------------------
def build_caches(cfg: Cfg, dev: str, seed: int) -> dict:
    """FP4 pools (both recipes), BF16 and FP8 caches of `cfg.POOL` tokens, from the same random K/V."""
    rows = cfg.POOL + cfg.PAGE
    h, d = cfg.HKV, cfg.D
    pools = {r: MHATokenToKVPoolFP4(size=cfg.POOL, page_size=cfg.PAGE, layer_num=1, head_num=h, head_dim=d,
                                    recipe=r, device=dev, **({"k_scales": [G_K], "v_scales": [G_V]} if r == "nvfp4" else {}))
             for r in FP4}
    bf16 = [torch.zeros(rows, h, d, dtype=torch.bfloat16, device=dev) for _ in range(2)]
    fp8 = [torch.zeros(rows, h, d, dtype=torch.float8_e4m3fn, device=dev) for _ in range(2)]
    chunk = 1 << 16
    gen = torch.Generator(device=dev).manual_seed(seed)
    for s0 in range(cfg.PAGE, rows, chunk):
        s1 = min(rows, s0 + chunk)
        loc = torch.arange(s0, s1, device=dev)
        k = torch.randn(s1 - s0, h, d, generator=gen, device=dev)
        v = torch.randn(s1 - s0, h, d, generator=gen, device=dev)
        for r, pool in pools.items():
            g = (G_K, G_V) if r == "nvfp4" else (1.0, 1.0)
            _store(pool, r, loc, k * g[0] * 6, v * g[1] * 6)
        bf16[0][s0:s1], bf16[1][s0:s1] = k.bfloat16(), v.bfloat16()
        fp8[0][s0:s1], fp8[1][s0:s1] = (k / FP8_K).to(torch.float8_e4m3fn), (v / FP8_V).to(torch.float8_e4m3fn)
        if not cfg.smoke and (s1 == rows or (s0 // chunk) % 8 == 0):
            log(f"  caches: {s1}/{rows} rows")
    fp8_scales = tuple(torch.tensor([x], dtype=torch.float32, device=dev) for x in (FP8_K, FP8_V))
    return {"pools": pools, "bf16": bf16, "fp8": fp8, "fp8_scales": fp8_scales}


def _store(pool: MHATokenToKVPoolFP4, recipe: str, loc, k, v) -> None:
    """Quantize into the pool: `nvfp4_kvcache_triton.store_kv` (the quantize kernel, bit for bit the oracle and
    fast), else the oracle's `set_kv_buffer`. The correctness check decodes whatever bytes landed."""
    try:
        import nvfp4_kvcache_triton

        t = pool.layer_tensors(0)
        g = (pool.k_scales[0:1], pool.v_scales[0:1]) if recipe == "nvfp4" else (None, None)
        nvfp4_kvcache_triton.store_kv(k, v, loc, t["k"], t["v"], t["k_scale"], t["v_scale"], recipe, g[0], g[1])
    except (ImportError, AttributeError, TypeError):
        pool.set_kv_buffer(0, loc, k, v)


def paged_indices(cfg: Cfg, batch: int, ctx: int, gen: torch.Generator, dev: str):
    """Each request gets `ctx` tokens in whole pages, pages in random order; wraps around the pool."""
    n_pages = cfg.POOL // cfg.PAGE
    per = math.ceil(ctx / cfg.PAGE)
    perm = torch.randperm(n_pages, generator=gen) + 1  # page 0 is padding
    pages = perm[torch.arange(batch * per) % n_pages].reshape(batch, per)
    slots = (pages[:, :, None] * cfg.PAGE + torch.arange(cfg.PAGE)).reshape(batch, -1)[:, :ctx]
    indptr = torch.arange(batch + 1, dtype=torch.int64) * ctx
    return indptr.to(dev), slots.reshape(-1).to(dev)


def bytes_read(fmt: str, cfg: Cfg, batch: int, ctx: int) -> int:
    """K+V bytes a decode step must read (data + scales), per format."""
    per_tok = {"bf16": cfg.D * 2, "fp8": cfg.D, "nvfp4": cfg.D // 2 + cfg.D // 16,
               "fp4_mx_block16": cfg.D // 2 + cfg.D // 16}[fmt.partition("+")[0]]
    return 2 * batch * ctx * cfg.HKV * per_tok


def run_format(fmt: str, caches: dict, q, indptr, idx, cfg: Cfg, validate=False, **launch):
    recipe, _, decode = fmt.partition("+")
    if recipe in FP4:
        return kda.decode_attention_fp4(q, caches["pools"][recipe], 0, indptr, idx, page_size=cfg.PAGE,
                                        validate=validate, decode=decode or "placement", **launch)
    k, v = caches[fmt]
    sc = {} if fmt == "bf16" else {"k_scale": caches["fp8_scales"][0], "v_scale": caches["fp8_scales"][1]}
    return kda.decode_attention_dense(q, k, v, indptr, idx, page_size=cfg.PAGE, validate=validate, **sc, **launch)


# ---------------------------------------------------------------------------------------------
# correctness (sampled requests at full size, float64 oracle on the CPU)
# ---------------------------------------------------------------------------------------------
def check_correctness(cfg: Cfg, caches: dict, q, indptr, idx, gpu: bool, variants) -> list[dict]:
    out_all = {}
    for f in variants:
        try:
            out_all[f] = run_format(f, caches, q, indptr, idx, cfg, validate=True)
        except Exception as e:  # noqa: BLE001 - a GPU-only decoder that fails to build is reported, not fatal
            if f in FORMATS:
                raise
            log(f"  {f}: {type(e).__name__}: {str(e)[:300]}")
    rows = []
    ip = indptr.cpu()
    for b in cfg.CHECK_REQS:
        s = idx[int(ip[b]) : int(ip[b + 1])]
        n = s.numel()
        local = torch.arange(n) + cfg.PAGE  # copy the request's slots into a small CPU pool
        qb = q[b : b + 1].float().cpu()
        for fmt in out_all:
            recipe = fmt.partition("+")[0]
            if recipe in FP4:
                src = caches["pools"][recipe]
                small = MHATokenToKVPoolFP4(size=math.ceil(n / cfg.PAGE) * cfg.PAGE, page_size=cfg.PAGE,
                                            layer_num=1, head_num=cfg.HKV, head_dim=cfg.D, recipe=recipe,
                                            **({"k_scales": [G_K], "v_scales": [G_V]} if recipe == "nvfp4" else {}))
                for name, t in src.layer_tensors(0).items():
                    small.layer_tensors(0)[name][local] = t[s].cpu()
                ref = oracle_decode(qb, small, 0, torch.tensor([0, n]), local)
                kk, vv = small.gather_kv(0, local, dtype=torch.float64)
            else:
                k, v = caches[fmt]
                f = 1.0 if fmt == "bf16" else FP8_K
                kk, vv = k[s].cpu().double() * f, v[s].cpu().double() * (1.0 if fmt == "bf16" else FP8_V)
                ref = ragged_attention(qb, kk, vv, torch.tensor([0, 1]), torch.tensor([0, n]),
                                       sm_scale=1 / math.sqrt(cfg.D), causal=False)
            got = out_all[fmt][b : b + 1].cpu().double()
            tol = kda.attention_tolerance(qb, kk, vv, 1 / math.sqrt(cfg.D), n, gpu=gpu)
            ok, err, rel_rms = kda.attention_close(got, ref, tol, gpu=gpu)
            rows.append({"format": fmt, "request": b, "tokens": n, "max_abs_err": err, "tolerance": tol,
                         "rel_rms_err": rel_rms, "ok": ok})
            log(f"  check {fmt:24s} req {b}: max|err| {err:.3g} (tol {tol:.3g}) rel-rms {rel_rms:.3g} "
                f"{'ok' if ok else 'FAIL'}")
    return rows


# ---------------------------------------------------------------------------------------------
# upstream paths
# ---------------------------------------------------------------------------------------------
def upstream_dequant_then_bf16(cfg: Cfg, caches: dict, q, indptr, idx, best_bf16: dict, dev: str) -> list[dict]:
    """Dequantize the first `pool` rows of the layer to bf16 (whole-layer, as upstream's
    `get_kv_buffer`), then our BF16 decode on it. Our Triton dequantize is a lower bound of
    upstream's cost; upstream's own `batched_dequantize` (fp4_mx_block16) is timed where it loads."""
    import nvfp4_kvcache_triton

    rows_out = []
    util = None
    try:
        if cfg.smoke:
            raise RuntimeError("skipped in --smoke (its torch.compile takes ~10 s on a CPU)")
        sys.path.insert(0, str(ROOT / "tests"))
        from _upstream import load_kvfp4_tensor

        util = load_kvfp4_tensor().FP4MXBlock16KVQuantizeUtil
    except Exception as e:  # noqa: BLE001 - record why, keep going
        log(f"  upstream kvfp4_tensor not used: {type(e).__name__}: {e}")
    max_slot = int(idx.max()) + 1
    for pool_tokens in cfg.UPSTREAM_POOLS:
        n = max(pool_tokens + cfg.PAGE, max_slot)
        for fmt in FP4:
            p = caches["pools"][fmt]
            t = p.layer_tensors(0)
            g = (p.k_scales[0:1], p.v_scales[0:1]) if fmt == "nvfp4" else (None, None)
            kb = torch.empty(n, cfg.HKV, cfg.D, dtype=torch.bfloat16, device=dev)
            vb = torch.empty_like(kb)

            def deq():
                kb.copy_(nvfp4_kvcache_triton.dequantize_parts(t["k"][:n], t["k_scale"][:n].reshape(n, cfg.HKV, -1), fmt, g[0],
                                                  torch.bfloat16))
                vb.copy_(nvfp4_kvcache_triton.dequantize_parts(t["v"][:n], t["v_scale"][:n].reshape(n, cfg.HKV, -1), fmt, g[1],
                                                  torch.bfloat16))

            def attn():
                return kda.decode_attention_dense(q, kb, vb, indptr, idx, page_size=cfg.PAGE, validate=False,
                                                  **best_bf16)

            def both():
                deq()
                return attn()

            ms_deq = bench(deq, cfg.smoke)
            ms_all = bench(both, cfg.smoke)
            row = {"path": "ours_triton_dequantize_whole_layer+bf16_decode", "recipe": fmt, "pool_tokens": n,
                   "ms_dequantize": ms_deq, "ms_total": ms_all}
            if util is not None and fmt == "fp4_mx_block16":
                try:
                    def up():
                        a = util.batched_dequantize(t["k"][:n], t["k_scale"][:n].reshape(n, -1), torch.bfloat16)
                        b_ = util.batched_dequantize(t["v"][:n], t["v_scale"][:n].reshape(n, -1), torch.bfloat16)
                        return a, b_

                    row["ms_upstream_batched_dequantize"] = bench(up, cfg.smoke)
                except Exception as e:  # noqa: BLE001
                    row["upstream_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            rows_out.append(row)
            log(f"  upstream-style {fmt:15s} pool {n:>8d}: dequantize {ms_deq:.3f} ms, total {ms_all:.3f} ms"
                + (f", upstream dequantize {row['ms_upstream_batched_dequantize']:.3f} ms"
                   if "ms_upstream_batched_dequantize" in row else ""))
            del kb, vb
    return rows_out


class _Envs:
    """Stub of `sglang.srt.environ.envs`: every setting reads as unset."""

    class _V:
        def get(self):
            return None

    def __getattr__(self, name):
        return self._V()


def load_sglang_decode():
    """Upstream's `decode_attention` module, executed standalone with stubs for its SGLang imports."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _upstream import load_sglang_module

    score_mod = load_sglang_module("sglang/kernels/ops/attention/score_mod.py")

    def core_count(i=0):
        return torch.cuda.get_device_properties(i).multi_processor_count if torch.cuda.is_available() else 1

    stubs = {
        "sglang": {}, "sglang.kernels": {}, "sglang.kernels.ops": {}, "sglang.kernels.ops.attention": {},
        "sglang.kernels.ops.attention.score_mod": {"unpack_aux_tensors": score_mod.unpack_aux_tensors},
        "sglang.srt": {}, "sglang.srt.environ": {"envs": _Envs()},
        "sglang.srt.utils": {"get_device_core_count": core_count, "is_gfx95_supported": lambda: False,
                             "is_gfx1250_supported": lambda: False, "is_hip": lambda: False},
    }
    return load_sglang_module("sglang/kernels/ops/attention/decode_attention.py", stubs=stubs)


def sglang_anchor(cfg: Cfg, k, v, q, indptr, idx, splits: int, dev: str, ref_out) -> dict:
    """SGLang's Triton decode over the same (bf16, or fp32 in --smoke) cache, slot indices (page_size=1)."""
    try:
        mod = load_sglang_decode()
    except Exception as e:  # noqa: BLE001
        return {"loaded": False, "reason": f"{type(e).__name__}: {e}"}
    b, hq, d = q.shape
    o = torch.empty(b, hq, d, dtype=q.dtype, device=dev)
    logits = torch.empty(b, hq, splits, d, dtype=torch.float32, device=dev)
    lse = torch.empty(b, hq, splits, dtype=torch.float32, device=dev)
    nsplit = torch.full((b,), splits, dtype=torch.int32, device=dev)

    def run():
        mod.decode_attention_fwd(q, k, v, o, indptr, idx, logits, lse, nsplit, splits, 1 / math.sqrt(d), 1.0, 1.0)
        return o

    try:
        run()
        err = float((o.float() - ref_out.float()).abs().max())
        ms = bench(run, cfg.smoke)
    except Exception as e:  # noqa: BLE001
        return {"loaded": True, "ran": False, "reason": f"{type(e).__name__}: {e}",
                "trace": traceback.format_exc()[-1500:]}
    return {"loaded": True, "ran": True, "ms": ms, "num_kv_splits": splits,
            "max_abs_diff_vs_our_bf16": err}


# ---------------------------------------------------------------------------------------------
def versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
         "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        try:
            import subprocess

            v["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - informational only
            v["driver"] = None
    return v


TUNE_CANDIDATES = {
    "bf16": [(32, 1, 3), (128, 4, 2), (64, 8, 3)],
    "fp8": [(32, 1, 2), (128, 4, 2), (32, 4, 3)],
    "nvfp4+cvt_f16": [(32, 1, 2), (32, 1, 3), (64, 1, 2), (64, 2, 2)],
    "nvfp4+prmt_bf16": [(32, 1, 2), (64, 2, 2)],
    "fp4_mx_block16+prmt_bf16": [(32, 1, 2), (64, 2, 2)],
    "fp4_mx_block16+prmt": [(32, 1, 2), (128, 4, 3)],
}
"""(block_n, num_warps, num_stages) tried per format at the headline shape: the best few of the
launch grid in `docs/data/perf/decode_attention_tuning.json` (`scripts/tune_decode_attention.py`,
which fixed `num_kv_splits` at 16) and of `docs/data/perf/decode_attention_limits.json`
(`scripts/limits_decode_attention.py`, where one warp per program won for every format).
Formats not listed try `DEFAULT_CANDIDATES`."""
DEFAULT_CANDIDATES = [(32, 1, 2), (64, 2, 2)]
TUNE_SPLITS = (12, 16, 24, 32, 64)
"""Splits tried with every candidate: the number of stage-1 programs decides how full the last
wave of programs is, which moves the time by tens of percent."""


def tune_grid(fmt: str, cfg: Cfg) -> list[dict]:
    if cfg.TUNE is not None:
        return cfg.TUNE
    return [dict(num_kv_splits=s, block_n=n, num_warps=w, num_stages=st)
            for n, w, st in TUNE_CANDIDATES.get(fmt, DEFAULT_CANDIDATES) for s in TUNE_SPLITS]


def tune(fmt, cfg, caches, q, indptr, idx) -> tuple[dict, float, list]:
    best, best_ms, tried = None, float("inf"), []
    for launch in tune_grid(fmt, cfg):
        try:
            ms = bench(lambda: run_format(fmt, caches, q, indptr, idx, cfg, **launch), cfg.smoke)
        except Exception as e:  # noqa: BLE001 - e.g. out of shared memory for one config
            tried.append({**launch, "error": f"{type(e).__name__}: {str(e)[:120]}"})
            continue
        tried.append({**launch, "ms": ms})
        if ms < best_ms:
            best, best_ms = launch, ms
    return best, best_ms, tried


def sweep_splits(cfg: Cfg, batch: int, ctx: int, programs: int) -> int:
    """Splits giving about `programs` stage-1 programs (the format's best count at the headline
    shape, so the same occupancy and wave shape), each split at least 256 tokens, at most 64."""
    want = max(1, round(programs / (batch * cfg.HKV)))
    return max(1, min(64, want, max(1, ctx // 256)))


SHAPES = [(64, 16), (256, 16), (128, 1), (128, 64)]
"""(head_dim, page) timed besides the headline's (128, 16); their correctness at 32k tokens is the
GPU tests' (`tests/test_decode_attention_kernel.py::test_gpu_full_size`)."""


def other_shapes(cfg: Cfg, best: dict, formats, gpu: bool, dev: str, copy_bw: float) -> list[dict]:
    """The headline's batch and context at other head dims and page sizes, each format at its
    headline launch (one pool of just the batch's tokens per shape)."""
    import copy

    rows = []
    for d, page in (SHAPES if gpu else [(128, 1)]):
        c = copy.copy(cfg)
        c.D, c.PAGE = d, page
        c.POOL = cfg.B * cfg.CTX + page
        caches = build_caches(c, dev, 2)
        gen = torch.Generator().manual_seed(d + page)
        ip, ix = paged_indices(c, c.B, c.CTX, gen, dev)
        q = torch.randn(c.B, c.HQ, d, generator=gen).to(dev)
        q = q.bfloat16() if gpu else q
        line = {}
        for fmt in formats:
            launch = best[fmt] if gpu else {"num_kv_splits": 2}
            ms = bench(lambda: run_format(fmt, caches, q, ip, ix, c, **launch), cfg.smoke)
            nbytes = bytes_read(fmt, c, c.B, c.CTX)
            line[fmt] = ms
            rows.append({"format": fmt, "head_dim": d, "page": page, "batch": c.B, "context": c.CTX, "ms": ms,
                         "bytes": nbytes, "frac_of_copy": nbytes / (ms * 1e-3) / copy_bw, "launch": launch})
        for r in rows[-len(formats):]:
            r["speedup_vs_bf16"], r["speedup_vs_fp8"] = line["bf16"] / r["ms"], line["fp8"] / r["ms"]
        log(f"  D={d:3d} page={page:2d}: " + ", ".join(f"{f} {ms * 1e3:.0f}us x{line['bf16'] / ms:.2f}"
                                                     for f, ms in line.items()))
        del caches
    return rows


def device_for(smoke: bool) -> str | None:
    """`"cuda"` for a full run on a GPU, `"cpu"` for `--smoke` under the interpreter, `None`
    (after saying why) when neither is possible."""
    if torch.cuda.is_available() and not smoke:
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    log("no GPU: run with --smoke and TRITON_INTERPRET=1")
    return None


def run_record(script: str, argv, cfg: Cfg, gpu: bool) -> dict:
    """What every result JSON of these scripts starts with: device, versions, date, the command
    that reproduces it (without `--out`) and whether it was a `--smoke` run."""
    cpu = f"CPU ({platform.processor() or platform.machine()}), Triton interpreter"
    return {"device": torch.cuda.get_device_name() if gpu else cpu, "versions": versions(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command_line(script, argv or sys.argv[1:]),
            "smoke": cfg.smoke}


def saver(res: dict, out: str, t0: float):
    """`save(stage)`: write `res` to `out` with the stage reached, the elapsed time and the
    timing method (a run cut short keeps what it measured)."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(stage: str) -> None:
        res["completed_stage"], res["elapsed_s"], res["timing"] = stage, time.time() - t0, dict(TIMING)
        path.write_text(json.dumps(res, indent=1) + "\n")
        log(f"  ({stage} done at {res['elapsed_s']:.0f} s; saved {path})")

    return save


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "data" / "perf" / "decode_attention.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU under TRITON_INTERPRET=1")
    ap.add_argument("--no-sweep", action="store_true", help="skip the context x batch sweep")
    args = ap.parse_args(argv)
    cfg = Cfg(args.smoke)
    dev = device_for(args.smoke)
    if dev is None:
        return 2
    gpu = dev == "cuda"
    gen = torch.Generator().manual_seed(0)
    result = {**run_record("bench_decode_attention.py", argv, cfg, gpu),
              "shape": {"batch": cfg.B, "q_heads": cfg.HQ, "kv_heads": cfg.HKV, "head_dim": cfg.D, "page": cfg.PAGE,
                        "context": cfg.CTX, "pool_tokens": cfg.POOL}}
    log(f"device: {result['device']}; versions: {result['versions']}")
    dump = saver(result, args.out, time.time())

    log("[1/7] copy bandwidth")
    result["copy"] = copy_bandwidth(cfg, dev)
    copy_bw = result["copy"]["bytes_per_s"]
    read_bw = result["copy"]["read_bytes_per_s"]
    log(f"  copy: {copy_bw / 1e12:.3f} TB/s, read-only: {read_bw / 1e12:.3f} TB/s")
    dump("copy")

    log("[2/7] caches and correctness (sampled requests, float64 oracle)")
    caches = build_caches(cfg, dev, 1)
    indptr, idx = paged_indices(cfg, cfg.B, cfg.CTX, gen, dev)
    q = torch.randn(cfg.B, cfg.HQ, cfg.D, generator=gen).to(dev)
    if gpu:
        q = q.bfloat16()
    variants = FORMATS + (GPU_VARIANTS if gpu else ())
    result["correctness"] = check_correctness(cfg, caches, q, indptr, idx, gpu, variants)
    bad = {r["format"] for r in result["correctness"] if not r["ok"]}
    checked = {r["format"] for r in result["correctness"]}
    timed = [f for f in variants if f in checked and f not in bad]
    result["dropped_variants"] = sorted(set(variants) - set(timed))
    if bad & set(FORMATS):
        log("correctness FAILED: no timings taken")
        dump("correctness FAILED")
        return 1
    dump("correctness")

    log(f"[3/7] headline: each format at its best launch config (dropped: {result['dropped_variants']})")
    rows, best = [], {}
    for fmt in list(timed):
        launch, ms, tried = tune(fmt, cfg, caches, q, indptr, idx)
        if launch is None:  # no launch config ran (a GPU-only decoder that fails at run time)
            if fmt in FORMATS:
                log(f"  {fmt}: no launch config ran: {tried}")
                dump("headline FAILED")
                return 1
            timed.remove(fmt)
            result["dropped_variants"].append(fmt)
            log(f"  {fmt}: dropped, no launch config ran: {tried[:1]}")
            continue
        best[fmt] = launch
        nbytes = bytes_read(fmt, cfg, cfg.B, cfg.CTX)
        ms_ev = bench_events(lambda: run_format(fmt, caches, q, indptr, idx, cfg, **launch), cfg.smoke)
        rows.append({"kind": "headline", "format": fmt, "batch": cfg.B, "context": cfg.CTX, "ms": ms,
                     "bytes": nbytes, "bytes_per_s": nbytes / (ms * 1e-3), "frac_of_copy": nbytes / (ms * 1e-3) / copy_bw,
                     "frac_of_read": nbytes / (ms * 1e-3) / read_bw, "ms_events": ms_ev,
                     "launch": launch, "tried": tried})
        log(f"  {fmt:24s} {ms * 1e3:9.1f} us (events {ms_ev * 1e3:.1f})  {nbytes / (ms * 1e-3) / 1e12:.3f} TB/s "
            f"({nbytes / (ms * 1e-3) / copy_bw:.0%} of copy, {nbytes / (ms * 1e-3) / read_bw:.0%} of read)  {launch}")
    head = {r["format"]: r for r in rows}
    def summ(v):
        return {"variant": v, "speedup_vs_bf16": head["bf16"]["ms"] / head[v]["ms"],
                "speedup_vs_fp8": head["fp8"]["ms"] / head[v]["ms"], "frac_of_copy": head[v]["frac_of_copy"],
                "frac_of_read": head[v]["frac_of_read"], "ms": head[v]["ms"],
                "speedup_vs_bf16_events": head["bf16"]["ms_events"] / head[v]["ms_events"],
                "speedup_vs_fp8_events": head["fp8"]["ms_events"] / head[v]["ms_events"], "goal_3x_bf16_met": head["bf16"]["ms"] / head[v]["ms"] >= 3.0,
                "goal_1p7x_fp8_met": head["fp8"]["ms"] / head[v]["ms"] >= 1.7}

    # per FP4 recipe: its fastest correct decoder; every variant in summary_variants
    result["summary_variants"] = {v: summ(v) for v in head if v.partition("+")[0] in FP4}
    result["summary"] = {r: summ(min((v for v in head if v.partition("+")[0] == r), key=lambda v: head[v]["ms"]))
                         for r in FP4}
    for r, s in result["summary"].items():
        log(f"  summary {r} ({s['variant']}): x{s['speedup_vs_bf16']:.2f} vs bf16, x{s['speedup_vs_fp8']:.2f} vs fp8, "
            f"{s['frac_of_copy']:.0%} of copy")
    result["rows"] = rows
    dump("headline")

    log("[4/7] upstream path: dequantize the whole layer to bf16, then bf16 attention")
    result["upstream_dequantize_then_bf16"] = upstream_dequant_then_bf16(cfg, caches, q, indptr, idx, best["bf16"], dev)
    dump("upstream")

    log("[5/7] SGLang's Triton BF16 decode kernel (sanity anchor)")
    if cfg.smoke:  # the interpreter's bf16 tl.dot is wrong: run upstream's kernel on an fp32 copy
        k32, v32 = (t.float() for t in caches["bf16"])
        anchor_q = q.float()
        ours = run_format("bf16", caches, anchor_q, indptr, idx, cfg)
        anchor = sglang_anchor(cfg, k32, v32, anchor_q, indptr, idx, 2, dev, ours)
    else:
        ours = run_format("bf16", caches, q, indptr, idx, cfg, **best["bf16"])
        anchor = sglang_anchor(cfg, caches["bf16"][0], caches["bf16"][1], q, indptr, idx,
                               best["bf16"]["num_kv_splits"], dev, ours)
        if anchor.get("ran"):
            anchor["ours_bf16_ms"] = head["bf16"]["ms"]
    result["sglang_triton_bf16"] = anchor
    log(f"  {anchor}")
    dump("sglang")
    if cfg.smoke and anchor.get("ran") and anchor["max_abs_diff_vs_our_bf16"] > 1e-4:
        log("  SGLang's kernel disagrees with ours in the smoke run")
        return 1

    if not args.no_sweep:
        # the baselines and each FP4 recipe's fastest decoder at the headline
        sweep_formats = ["bf16", "fp8"] + [result["summary"][r]["variant"] for r in FP4]
        result["sweep_formats"] = sweep_formats
        log(f"[6/7] sweep: context x batch for {sweep_formats}")
        for b in cfg.SWEEP_B:
            for ctx in cfg.SWEEP_CTX:
                ip, ix = paged_indices(cfg, b, ctx, gen, dev)
                qq = torch.randn(b, cfg.HQ, cfg.D, generator=gen).to(dev).to(q.dtype)
                line = []
                for fmt in sweep_formats:
                    splits = sweep_splits(cfg, b, ctx, cfg.B * cfg.HKV * best[fmt]["num_kv_splits"]) if gpu else 2
                    launch = dict(best[fmt], num_kv_splits=splits)
                    ms = bench(lambda: run_format(fmt, caches, qq, ip, ix, cfg, **launch), cfg.smoke)
                    nbytes = bytes_read(fmt, cfg, b, ctx)
                    rows.append({"kind": "sweep", "format": fmt, "batch": b, "context": ctx, "ms": ms, "bytes": nbytes,
                                 "bytes_per_s": nbytes / (ms * 1e-3), "frac_of_copy": nbytes / (ms * 1e-3) / copy_bw,
                                 "frac_of_read": nbytes / (ms * 1e-3) / read_bw, "launch": launch})
                    line.append(f"{fmt} {ms * 1e3:.0f}us/{splits}")
                log(f"  B={b:3d} ctx={ctx:7d}: " + ", ".join(line))
            dump(f"sweep batch {b}")
    if not args.no_sweep:
        log(f"[7/7] other head dims and page sizes (batch {cfg.B}, context {cfg.CTX}); launches of the headline")
        result["shapes"] = other_shapes(cfg, best, result["sweep_formats"], gpu, dev, copy_bw)
    result["timing"] = dict(TIMING)
    dump("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
