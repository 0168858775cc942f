"""Where the FP4 decode-attention time goes, measured on a GPU; writes `docs/data/perf/decode_attention_limits.json`.

The issue's goals (FP4 >= 3x BF16, >= 1.7x FP8 at the headline shape) assume the FP4 kernel can
read its bytes as fast as the BF16 kernel reads its own. This script measures, in one run on one
card, how far each step of the FP4 kernel is from that:

1. **ceilings** of the card: copy and read-only bandwidth of one contiguous 2 GiB buffer;
2. **gather ceiling** per format: a kernel that reads exactly the bytes stage 1 reads (the same
   grid of (request, KV head, split) programs, the same token steps, the same slots from
   `kv_indices`, K and V rows plus scale rows) and only adds them up (`gather_read`). It
   is the fastest any kernel of this design can be on this pool layout: the FP4 pool keeps
   64-byte K and V rows and 8-byte scale rows per token and head (head_dim 128), where BF16 has
   256-byte rows;
3. **attention without decoding**: the nvfp4 `cvt_f16` kernel with the E2M1 work cut out of its
   inline PTX (decoder `no_decode`: one `prmt` per two codes, the same scale multiply and fp16
   dots, meaningless values);
4. **the kernels**: BF16, FP8 and nvfp4 `cvt_f16`.

Steps 2-4 run on two layouts of the same values: SGLang's slot-major pool and a head-major copy
(`[H, slots, ...]` storage, a page of one head contiguous); the kernels' outputs must be
bit-identical across the two. Each is timed over one launch grid (BLOCK_N, warps, pipelining
stages, splits; the head-major layout tries the slot-major layout's four best) and keeps its best.
The time of the FP4 kernel then splits into the gather ceiling (bytes through this access
pattern), attention beyond it (3 minus 2) and E2M1 decoding (4 minus 3).

Usage (GPU, about 4 minutes; the caches are the benchmark's, `benchkit.kvcaches`):

```bash
python scripts/limits_decode_attention.py
TRITON_INTERPRET=1 python scripts/limits_decode_attention.py --smoke --out build/smoke/decode_attention_limits.json   # CPU, tiny
```
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import triton
import triton.language as tl

from benchkit import kvcaches as kc
from benchkit.record import ROOT, Saver, device_for, log, run_record
from benchkit.timing import ceilings, time_graph
from nvfp4_kvcache_triton import decode_attention as kda
from nvfp4_kvcache_triton._triton import decode_attention as _k
from nvfp4_kvcache_triton._triton.decode_attention import split_range, token_slots


KERNEL_GRID = [(32, 1, 2, 0), (32, 1, 2, 1), (64, 1, 2, 0), (32, 1, 3, 0), (64, 2, 2, 0), (64, 2, 2, 1),
               (128, 4, 2, 0), (64, 4, 3, 0)]
"""(block_n, num_warps, num_stages, tokens_as_m) every kernel variant is timed at: the best launches
of the H100 and H200 benchmark runs and their neighbours."""
KERNEL_SPLITS = (16, 24, 32, 64)
GATHER_GRID = [(32, 2, 2), (64, 2, 2), (64, 4, 3), (128, 4, 2), (128, 8, 3), (64, 1, 2)]
GATHER_SPLITS = (16, 32)
VARIANTS = ("bf16", "fp8", "fp8+cvt_f16", "nvfp4+no_decode", "nvfp4+cvt_f16")


@triton.jit
def gather_read(kv_indptr, kv_indices, k_ptr, v_ptr, ks_ptr, vs_ptr, stride, hstride, s_stride, s_hstride, out_ptr,
                W: tl.constexpr, WS: tl.constexpr, BLOCK_N: tl.constexpr, PAGE: tl.constexpr):
    """Read the K/V words (int32) stage 1 reads and store their sum per program (int64; the loop
    adds in int32, wrapping: compare modulo `2**32`).

    Grid `(batch, kv_heads, splits)` and token steps as `nvfp4_kvcache_triton._triton.decode_attention.decode_stage1`:
    `W` words of K and of V data per token and head (`stride` / `hstride` words between the
    rows of consecutive slots / heads), `WS` words of K and V scales (`0`: no scales; strides
    `s_stride` / `s_hstride`). `out[b, h, split]` int64.
    """
    b = tl.program_id(0)
    kvh = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    start, lo, hi = split_range(kv_indptr, b, split, tl.num_programs(2), BLOCK_N)
    stride, hstride = (stride // W) * W, (hstride // W) * W  # multiples of the row: vector loads (as stage 1)
    if WS > 0:
        s_stride, s_hstride = (s_stride // WS) * WS, (s_hstride // WS) * WS
    cols = tl.arange(0, W)
    acc = tl.zeros((BLOCK_N, W), dtype=tl.int32)
    if WS > 0:
        scols = tl.arange(0, WS)
        sacc = tl.zeros((BLOCK_N, WS), dtype=tl.int32)
    for t0 in range(lo, hi, BLOCK_N):
        slots, tmask = token_slots(kv_indices, start, t0, hi, BLOCK_N, PAGE)
        off = slots[:, None] * stride + kvh * hstride + cols[None, :]
        acc += tl.load(k_ptr + off, mask=tmask[:, None], other=0) + tl.load(v_ptr + off, mask=tmask[:, None], other=0)
        if WS > 0:
            soff = slots[:, None] * s_stride + kvh * s_hstride + scols[None, :]
            sacc += tl.load(ks_ptr + soff, mask=tmask[:, None], other=0) + \
                tl.load(vs_ptr + soff, mask=tmask[:, None], other=0)
    total = tl.sum(tl.sum(acc.to(tl.int64), 1), 0)  # int64: no overflow past the loop
    if WS > 0:
        total += tl.sum(tl.sum(sacc.to(tl.int64), 1), 0)
    tl.store(out_ptr + (b * tl.num_programs(1) + kvh) * tl.num_programs(2) + split, total)


def layers(caches: dict, cfg) -> dict:
    """Each format's K/V as the kernels take them: an [`FP4KVLayer`][nvfp4_kvcache_triton.decode_attention.FP4KVLayer]
    for nvfp4, `(k, v, k_scale, v_scale)` for BF16/FP8 (SGLang's slot-major `[slots, H, ...]`)."""
    return {"bf16": (*caches["bf16"], None, None), "fp8": (*caches["fp8"], *caches["fp8_scales"]),
            "nvfp4": kda.fp4_layer(caches["pools"]["nvfp4"], 0)}


def head_major(lay: dict, cfg) -> dict:
    """The same values stored head-major (`[H, slots, ...]` memory, viewed as `[slots, H, ...]`):
    a page of one head is then one contiguous block (16 x 64 bytes of FP4 codes, 16 x 8 scale bytes)."""
    def hm(t):
        t = t.reshape(t.shape[0], cfg.HKV, -1)
        return t.transpose(0, 1).contiguous().transpose(0, 1)

    fl = lay["nvfp4"]
    return {"bf16": (hm(lay["bf16"][0]), hm(lay["bf16"][1]), None, None),
            "fp8": (hm(lay["fp8"][0]), hm(lay["fp8"][1]), *lay["fp8"][2:]),
            "nvfp4": kda.FP4KVLayer(hm(fl.k), hm(fl.v), hm(fl.k_scale), hm(fl.v_scale), fl.recipe, fl.k_global,
                                    fl.v_global)}


def words(fmt: str, lay: dict, cfg) -> tuple:
    """`(k, v, k_scale, v_scale)` as int32 word views `[slots, H, words]` (scales `None` for BF16/FP8)."""
    if fmt in ("bf16", "fp8"):
        k, v = lay[fmt][:2]
        return k.view(torch.int32), v.view(torch.int32), None, None
    fl = lay[fmt]
    return tuple(t.view(torch.uint8).reshape(t.shape[0], cfg.HKV, -1).view(torch.int32)
                 for t in (fl.k, fl.v, fl.k_scale, fl.v_scale))


def run_gather(fmt: str, lay: dict, indptr, idx, cfg, num_kv_splits: int, block_n: int, num_warps=4, num_stages=2):
    k, v, ks, vs = words(fmt, lay, cfg)
    batch = indptr.numel() - 1
    out = torch.empty(batch, cfg.HKV, num_kv_splits, dtype=torch.int64, device=k.device)
    extra = {} if os.environ.get("TRITON_INTERPRET") == "1" else {"num_warps": num_warps, "num_stages": num_stages}
    sc = (k, v, 0, 0, 0) if ks is None else (ks, vs, ks.stride(0), ks.stride(1), ks.shape[-1])
    gather_read[(batch, cfg.HKV, num_kv_splits)](
        indptr, idx, k, v, sc[0], sc[1], k.stride(0), k.stride(1), sc[2], sc[3], out, W=k.shape[-1], WS=sc[4],
        BLOCK_N=block_n, PAGE=cfg.PAGE, **extra)
    return out


def expected_sum(fmt: str, lay: dict, idx, cfg) -> int:
    """The wrapping int32 sum of every word `gather_read` should read (torch, on the device)."""
    total = sum(int(t[idx.long()].to(torch.int64).sum()) for t in words(fmt, lay, cfg) if t is not None)
    return (total + 2**31) % 2**32 - 2**31


def wrapped(x: torch.Tensor) -> int:
    """The per-program sums of `gather_read`, added and wrapped to int32."""
    return (int(x.sum()) + 2**31) % 2**32 - 2**31


def run_variant(fmt: str, lay: dict, q, indptr, idx, cfg, **launch):
    """A kernel variant over `lay` (`layers`): BF16, FP8, nvfp4 with a decoder, or nvfp4
    with a measurement-only decoder (through the launcher, which the public function would refuse)."""
    recipe, _, decode = fmt.partition("+")
    if recipe in ("bf16", "fp8"):
        k, v, ks, vs = lay[recipe]
        return kda.decode_attention_dense(q, k, v, indptr, idx, k_scale=ks, v_scale=vs, page_size=cfg.PAGE,
                                          validate=False, decode=decode or "bf16", **launch)
    fl = lay[recipe]
    if decode not in _k.ABLATION_IDS:
        return kda.decode_attention_fp4(q, fl, None, indptr, idx, page_size=cfg.PAGE, validate=False, decode=decode,
                                        **launch)
    ks, vs = fl.k_scale.view(torch.uint8), fl.v_scale.view(torch.uint8)
    gk = kda._scale_tensor(fl.k_global, "k_global", q.device)
    gv = kda._scale_tensor(fl.v_global, "v_global", q.device)
    launch = dict(launch)
    splits = launch.pop("num_kv_splits")
    s_strides = (ks.stride(0), ks.stride(1) if ks.dim() == 3 else cfg.D // 16)
    return kda._launch(_k.FMT_IDS[recipe], q, fl.k, fl.v, ks, vs, s_strides, gk, gv, indptr, idx, None, splits,
                       cfg.PAGE, torch.float32, cfg.HKV, cfg.D, decode=_k.ABLATION_IDS[decode], **launch)


def best_of(name: str, fn, grid, cfg, nbytes: int, copy_bw: float) -> dict:
    """Time `fn(**launch)` over `grid`; the best row, with every launch tried."""
    tried, best = [], None
    for launch in grid:
        try:
            ms = time_graph(lambda: fn(**launch), cfg.smoke)
        except Exception as e:  # noqa: BLE001 - e.g. out of registers for one config
            tried.append({**launch, "error": f"{type(e).__name__}: {str(e)[:120]}"})
            continue
        tried.append({**launch, "ms": ms})
        if best is None or ms < best["ms"]:
            best = {"ms": ms, "launch": launch}
    if best is None:
        raise RuntimeError(f"{name}: no launch ran: {tried[:2]}")
    bw = nbytes / (best["ms"] * 1e-3)
    row = {"name": name, "ms": best["ms"], "launch": best["launch"], "bytes": nbytes, "bytes_per_s": bw,
           "frac_of_copy": bw / copy_bw, "tried": tried}
    log(f"  {name:26s} {best['ms'] * 1e3:8.1f} us  {bw / 1e12:.3f} TB/s ({bw / copy_bw:.0%} of copy)  {best['launch']}")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "data" / "perf" / "decode_attention_limits.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU under TRITON_INTERPRET=1")
    args = ap.parse_args(argv)
    cfg = kc.Shape(args.smoke)
    if cfg.smoke:  # two KV heads, so the gather offsets of a head other than 0 are checked too
        cfg.HQ, cfg.HKV = 8, 2
    dev = device_for(args.smoke)
    if dev is None:
        return 2
    gpu = dev == "cuda"
    res = {**run_record("limits_decode_attention.py", argv, smoke=cfg.smoke, gpu=gpu), "shape": cfg.record()}
    save = Saver(res, args.out)

    log("[1/5] card ceilings")
    res["copy"] = ceilings(dev, cfg.smoke)
    copy_bw = res["copy"]["bytes_per_s"]
    log(f"  copy {copy_bw / 1e12:.3f} TB/s, read-only {res['copy']['read_bytes_per_s'] / 1e12:.3f} TB/s")
    caches = kc.build_caches(cfg, dev, 1)
    gen = torch.Generator().manual_seed(0)
    indptr, idx = kc.paged_indices(cfg, cfg.B, cfg.CTX, gen, dev)
    q = torch.randn(cfg.B, cfg.HQ, cfg.D, generator=gen).to(dev)
    if gpu:
        q = q.bfloat16()
    save("ceilings")

    lays = {"slot_major": layers(caches, cfg)}
    lays["head_major"] = head_major(lays["slot_major"], cfg)
    g_grid = [dict(num_kv_splits=s, block_n=n, num_warps=w, num_stages=st) for n, w, st in GATHER_GRID
              for s in GATHER_SPLITS] if gpu else [dict(num_kv_splits=2, block_n=16)]
    k_grid = [dict(num_kv_splits=s, block_n=n, num_warps=w, num_stages=st, tokens_as_m=tm)
              for n, w, st, tm in KERNEL_GRID for s in KERNEL_SPLITS] if gpu else [dict(num_kv_splits=2)]
    res["checksums"], res["layouts"] = {}, {}
    for li, (layout, lay) in enumerate(lays.items()):
        log(f"[{2 + 2 * li}/5] {layout}: gather ceiling (stage 1's bytes through its access pattern, summed)")
        r = res["layouts"][layout] = {"gather": {}, "kernels": {}}
        for fmt in ("bf16", "fp8", "nvfp4"):
            got = wrapped(run_gather(fmt, lay, indptr, idx, cfg, **g_grid[0]))
            want = expected_sum(fmt, lay, idx, cfg)
            res["checksums"][f"{layout}/{fmt}"] = {"kernel": got, "torch": want, "ok": got == want}
            if got != want:
                log(f"  {layout}/{fmt}: gather checksum {got} != {want}: it does not read what stage 1 reads")
                save("gather checksum FAILED")
                return 1
            r["gather"][fmt] = best_of(f"gather {fmt}", lambda **l: run_gather(fmt, lay, indptr, idx, cfg, **l),
                                       g_grid, cfg, kc.bytes_read(fmt, cfg, cfg.B, cfg.CTX), copy_bw)
            save(f"{layout} gather {fmt}")
        log(f"[{3 + 2 * li}/5] {layout}: kernels, and nvfp4 without its E2M1 decoding")
        for fmt in VARIANTS:
            grid = k_grid
            if layout != "slot_major" and gpu:  # the slot-major layout's four best launches
                done = sorted((t for t in res["layouts"]["slot_major"]["kernels"][fmt]["tried"] if "ms" in t),
                              key=lambda t: t["ms"])
                grid = [{k_: v_ for k_, v_ in t.items() if k_ != "ms"} for t in done[:4]]
            if layout != "slot_major":  # the same numbers from the other layout, bit for bit
                same = torch.equal(run_variant(fmt, lay, q, indptr, idx, cfg, **grid[0]),
                                   run_variant(fmt, lays["slot_major"], q, indptr, idx, cfg, **grid[0]))
                r.setdefault("identical_to_slot_major", {})[fmt] = same
                if not same and "no_decode" not in fmt:
                    log(f"  {layout}/{fmt}: output differs from the slot-major layout's")
                    save("layout check FAILED")
                    return 1
            r["kernels"][fmt] = best_of(fmt, lambda **l: run_variant(fmt, lay, q, indptr, idx, cfg, **l), grid, cfg,
                                        kc.bytes_read(fmt, cfg, cfg.B, cfg.CTX), copy_bw)
            save(f"{layout} kernel {fmt}")
        kern, gat = r["kernels"], r["gather"]
        t_g, t_nd, t_fp4 = gat["nvfp4"]["ms"], kern["nvfp4+no_decode"]["ms"], kern["nvfp4+cvt_f16"]["ms"]
        base = res["layouts"]["slot_major"]["kernels"]
        fp8 = min(kern[f]["ms"] for f in ("fp8", "fp8+cvt_f16"))  # the faster FP8 kernel is the baseline
        fp8_base = min(base[f]["ms"] for f in ("fp8", "fp8+cvt_f16"))
        r["summary"] = {
            "nvfp4_split_ms": {"gather_ceiling": t_g, "attention_beyond_gather": t_nd - t_g,
                               "e2m1_decoding": t_fp4 - t_nd, "total": t_fp4},
            "kernel_over_gather": {f: kern[f]["ms"] / gat[f.partition("+")[0]]["ms"] for f in ("bf16", "fp8", "fp8+cvt_f16", "nvfp4+cvt_f16")},
            "speedup_vs_bf16": kern["bf16"]["ms"] / t_fp4, "speedup_vs_fp8": fp8 / t_fp4,
            "speedup_vs_slot_major_bf16": base["bf16"]["ms"] / t_fp4, "speedup_vs_slot_major_fp8": fp8_base / t_fp4,
            "gather_speedup_vs_bf16_kernel": kern["bf16"]["ms"] / t_g, "gather_speedup_vs_fp8_kernel": fp8 / t_g,
            "no_decode_speedup_vs_bf16": kern["bf16"]["ms"] / t_nd, "no_decode_speedup_vs_fp8": fp8 / t_nd,
        }
        for k_, v_ in r["summary"].items():
            log(f"  {layout} {k_}: {v_}")
    save("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
