"""FlashInfer's paged decode at a given shape, over caches built from the same data as the oracle's.

Self-contained (torch, `nvfp4_kvcache`, and FlashInfer through `flashinfer_env`), so a benchmark
module can import it:

    import flashinfer_harness as fh
    fh.activate()                                         # the trimmed FlashInfer bundle
    shape = fh.Shape(batch=8, context=32768)
    inp = fh.make_inputs(shape, "cuda")
    caches = fh.build_caches(inp, ("flashinfer_nvfp4_fa2", "flashinfer_bf16"))
    run = fh.decode("flashinfer_nvfp4_fa2", inp, caches)  # run.out [B, Hq, D] bf16, run.fn() times it
    ref = fh.oracle_output(inp, "flashinfer_nvfp4_fa2", caches)
    print(fh.check(run.out, ref, fh.tolerance(inp, "flashinfer_nvfp4_fa2", caches)))

Which FlashInfer 0.7.4 decode reads an NVFP4 (uint8 + `kv_cache_sf`) cache on Hopper, from its
source (`flashinfer/decode.py`, `BatchDecodeWithPagedKVCacheWrapper.run` docstring and branches):
"NVFP4 KV supports the `fa2` and `trtllm-gen` backends; `fa2` requires `use_tensor_cores=True`".
The `fa2` tensor-core decode runs FlashInfer's batch-prefill kernel (`get_batch_prefill_module`),
which dequantizes E2M1 x E4M3 to the query dtype in shared memory; the global `k_scale` is folded
into the softmax scale and `v_scale` multiplies the output afterwards. `trtllm-gen` downloads
SM100 kernels at run time; `cudnn`, `cute-dsl` and `cutile` refuse NVFP4 in `run()`; `fa3`'s module
generator refuses a packed FP4 cache. [`probe_nvfp4_backends`][flashinfer_harness.probe_nvfp4_backends]
records what each backend that can be tried offline says.

Baselines: FlashInfer's BF16 and FP8 (E4M3, per-tensor scale) decode, on the FA2 tensor-core
path and on the CUDA-core decode kernel (`use_tensor_cores=False`, FlashInfer's default).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


import torch  # noqa: E402

from nvfp4_kvcache.attention import decode_attention, ragged_attention  # noqa: E402
from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache, page_table_from_slots, to_sglang  # noqa: E402


@dataclass(frozen=True)
class Backend:
    """One FlashInfer decode configuration."""

    kv: str                 # "nvfp4", "bf16" or "fp8"
    tensor_cores: bool      # FA2 tensor-core decode (the batch-prefill kernel) or the CUDA-core decode kernel


BACKENDS: dict[str, Backend] = {
    "flashinfer_nvfp4_fa2": Backend("nvfp4", True),
    "flashinfer_bf16_fa2": Backend("bf16", True),
    "flashinfer_fp8_fa2": Backend("fp8", True),
    "flashinfer_bf16": Backend("bf16", False),
    "flashinfer_fp8": Backend("fp8", False),
}
"""Label -> configuration. The labels are what the result files call the rows."""

KV_DTYPES = {"nvfp4": torch.uint8, "bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}


@dataclass(frozen=True)
class Shape:
    """A decode problem: every request has `context` tokens (headline defaults)."""

    batch: int = 8
    q_heads: int = 64
    kv_heads: int = 8
    head_dim: int = 128
    page_size: int = 16
    context: int = 32768
    kv_layout: str = "NHD"


def activate() -> dict:
    """Make the trimmed FlashInfer importable (see `flashinfer_env.activate`)."""
    import flashinfer_env

    return flashinfer_env.activate()


# -- JIT modules ------------------------------------------------------------------------------------
def jit_specs(labels, shape: Shape, q_dtype: torch.dtype = torch.bfloat16) -> dict:
    """The JIT modules the wrappers will load for these backends, with the arguments
    `BatchDecodeWithPagedKVCacheWrapper.plan` passes (so a prebuild serves the wrappers)."""
    from flashinfer.jit.attention.modules import _gen_batch_prefill_primary_module, gen_batch_decode_module

    specs = {}
    d = shape.head_dim
    for label in labels:
        b = BACKENDS[label]
        kv = KV_DTYPES[b.kv]
        if b.tensor_cores:
            specs[label] = _gen_batch_prefill_primary_module(
                "fa2", q_dtype, kv, q_dtype, torch.int32, d, d, 0, False, False, False, False)
        else:
            specs[label] = gen_batch_decode_module(q_dtype, kv, q_dtype, torch.int32, d, d, 0, False, False)
    return specs


def writer_specs() -> dict:
    """The page writers (standard and 4-over-6) and the NVFP4 paged dequantize."""
    from flashinfer.jit.fp4_kv_dequantization import gen_fp4_kv_dequantization_module
    from flashinfer.jit.page import gen_page_module

    return {"page": gen_page_module(False), "page_nvfp4_4over6": gen_page_module(True),
            "fp4_kv_dequant": gen_fp4_kv_dequantization_module()}


# -- inputs and caches ------------------------------------------------------------------------------
@dataclass
class DecodeInputs:
    """Queries, the K/V token rows every cache is built from, and one page table."""

    shape: Shape
    q: torch.Tensor                 # [B, Hq, D] bf16
    k: torch.Tensor                 # [T, Hkv, D] bf16, request b's tokens at token_indptr[b]:token_indptr[b+1]
    v: torch.Tensor
    token_indptr: torch.Tensor      # int64 [B + 1]
    token_slots: torch.Tensor       # int64 [T], slot = page * page_size + entry
    kv_indptr: torch.Tensor         # int32 [B + 1]
    kv_indices: torch.Tensor        # int32 [pages used]
    kv_last_page_len: torch.Tensor  # int32 [B]
    num_pages: int
    g_k: float = 0.37               # NVFP4 decode global scales (not 1 on purpose)
    g_v: float = 1.9
    fp8_k: float = 0.05             # FP8 per-tensor scales
    fp8_v: float = 0.05
    sm_scale: float = field(default=0.0)


def make_inputs(shape: Shape, device: str | torch.device = "cuda", seed: int = 0) -> DecodeInputs:
    """Random bf16 queries and K/V rows, every request on its own shuffled pages."""
    gen = torch.Generator().manual_seed(seed)
    b, t, p = shape.batch, shape.batch * shape.context, shape.page_size
    pages_per = -(-shape.context // p)
    num_pages = b * pages_per + 1
    perm = torch.randperm(num_pages, generator=gen)[: b * pages_per]
    slots = []
    for r in range(b):
        pages = perm[r * pages_per:(r + 1) * pages_per]
        slots.append((pages[:, None] * p + torch.arange(p)).reshape(-1)[: shape.context])
    token_slots = torch.cat(slots)
    token_indptr = torch.arange(b + 1) * shape.context
    kv_indptr, kv_indices, last = page_table_from_slots(token_indptr, token_slots, p)
    dev = torch.device(device)
    q = torch.randn(b, shape.q_heads, shape.head_dim, generator=gen).to(torch.bfloat16)
    k = (torch.randn(t, shape.kv_heads, shape.head_dim, generator=gen) * 2).to(torch.bfloat16)
    v = torch.randn(t, shape.kv_heads, shape.head_dim, generator=gen).to(torch.bfloat16)
    f32 = lambda x: float(torch.tensor(x, dtype=torch.float32))  # noqa: E731 - what the kernels see
    return DecodeInputs(shape, q.to(dev), k.to(dev), v.to(dev), token_indptr.to(dev), token_slots.to(dev),
                        kv_indptr.to(dev), kv_indices.to(dev), last.to(dev), num_pages,
                        g_k=f32(0.37), g_v=f32(1.9), fp8_k=f32(0.05), fp8_v=f32(0.05),
                        sm_scale=1.0 / math.sqrt(shape.head_dim))


def _paged(rows: torch.Tensor, inp: DecodeInputs) -> torch.Tensor:
    """Token rows `[T, H, w]` scattered into a page-major cache `[pages, P, H, w]` (NHD) or HND."""
    s = inp.shape
    out = torch.zeros(inp.num_pages * s.page_size, *rows.shape[1:], dtype=rows.dtype, device=rows.device)
    out[inp.token_slots] = rows
    out = out.reshape(inp.num_pages, s.page_size, *rows.shape[1:])
    return out if s.kv_layout == "NHD" else out.transpose(1, 2).contiguous()


def build_caches(inp: DecodeInputs, labels, nvfp4_writer: Callable | None = None) -> dict:
    """The caches the backends read: `"nvfp4"` a `FlashInferNVFP4KVCache` (written by the oracle, or
    by `nvfp4_writer(cache, inp)` if given: e.g. FlashInfer's own writer), `"bf16"` `(k, v)`
    caches of the bf16 rows, `"fp8"` `(k, v)` E4M3 caches of `rows / scale` (saturating)."""
    kinds = {BACKENDS[label].kv for label in labels}
    s = inp.shape
    caches = {}
    if "nvfp4" in kinds:
        c = FlashInferNVFP4KVCache(num_pages=inp.num_pages, page_size=s.page_size, layer_num=1, head_num=s.kv_heads,
                                   head_dim=s.head_dim, kv_layout=s.kv_layout, device=inp.k.device,
                                   k_scales=inp.g_k, v_scales=inp.g_v)
        if nvfp4_writer is None:
            c.write_slots(0, inp.k, inp.v, inp.token_slots)
        else:
            nvfp4_writer(c, inp)
        caches["nvfp4"] = c
    if "bf16" in kinds:
        caches["bf16"] = (_paged(inp.k, inp), _paged(inp.v, inp))
    if "fp8" in kinds:
        fp8 = lambda x, sc: (x.float() / sc).to(torch.float8_e4m3fn)  # noqa: E731
        caches["fp8"] = (_paged(fp8(inp.k, inp.fp8_k), inp), _paged(fp8(inp.v, inp.fp8_v), inp))
    return caches


# -- decode -----------------------------------------------------------------------------------------
@dataclass
class DecodeRun:
    """One backend's result: the output, a callable that repeats the decode (for timing), and
    which FlashInfer path the wrapper resolved."""

    label: str
    out: torch.Tensor
    fn: Callable[[], torch.Tensor]
    backend_used: str
    uses_cudnn: bool


_WORKSPACE: dict = {}


def workspace(device) -> torch.Tensor:
    """One 128 MiB float workspace per device, zero-initialised (FlashInfer's recommendation)."""
    key = str(device)
    if key not in _WORKSPACE:
        _WORKSPACE[key] = torch.zeros(128 << 20, dtype=torch.uint8, device=device)
    return _WORKSPACE[key]


def _wrapper(label: str, inp: DecodeInputs, backend: str | None = None, tensor_cores: bool | None = None):
    import flashinfer.decode as fd

    b = BACKENDS[label]
    tc = b.tensor_cores if tensor_cores is None else tensor_cores
    name = backend or ("fa2" if tc else "auto")
    w = fd.BatchDecodeWithPagedKVCacheWrapper(workspace(inp.q.device), inp.shape.kv_layout, use_tensor_cores=tc,
                                              backend=name)
    s = inp.shape
    w.plan(inp.kv_indptr, inp.kv_indices, inp.kv_last_page_len, s.q_heads, s.kv_heads, s.head_dim, s.page_size,
           q_data_type=torch.bfloat16, kv_data_type=KV_DTYPES[b.kv], o_data_type=torch.bfloat16,
           sm_scale=inp.sm_scale)
    return w


def _run_args(label: str, inp: DecodeInputs, caches: dict):
    kv = BACKENDS[label].kv
    if kv == "nvfp4":
        c = caches["nvfp4"]
        return c.paged_kv_cache(0), {"kv_cache_sf": c.kv_cache_sf(0), "k_scale": inp.g_k, "v_scale": inp.g_v}
    if kv == "fp8":
        return caches["fp8"], {"k_scale": inp.fp8_k, "v_scale": inp.fp8_v}
    return caches["bf16"], {}


def decode(label: str, inp: DecodeInputs, caches: dict) -> DecodeRun:
    """Plan and run one backend once; `run.fn()` repeats the run (no re-plan) for timing."""
    w = _wrapper(label, inp)
    kv, kwargs = _run_args(label, inp, caches)
    fn = lambda: w.run(inp.q, kv, **kwargs)  # noqa: E731
    out = fn()
    used = getattr(w, "resolved_backend", None) or getattr(w, "_backend", "?")   # what "auto" resolved to
    return DecodeRun(label, out, fn, str(used), bool(getattr(w, "_uses_cudnn", False)))


def probe_nvfp4_backends(inp: DecodeInputs, caches: dict) -> dict:
    """Try every decode backend that can be tried offline on an NVFP4 cache; record the outcome.

    JIT compilation is disabled while probing (`FLASHINFER_DISABLE_JIT=1`), so a backend that gets
    past FlashInfer's Python checks reports the module it would compile instead of compiling it.
    Backends not tried here, with the reason in FlashInfer's source (`flashinfer/decode.py`):
    `trtllm-gen` (downloads SM100 kernels at run time), `cute-dsl` and `cutile` (`run()` raises
    NotImplementedError for `kv_cache_sf`; their packages are not in the trimmed bundle).
    """
    kv, kwargs = _run_args("flashinfer_nvfp4_fa2", inp, caches)
    attempts = {"fa2_tensor_cores": ("fa2", True), "auto_tensor_cores": ("auto", True),
                "fa2_cuda_cores": ("fa2", False), "auto_cuda_cores": ("auto", False),
                "fa3_tensor_cores": ("fa3", True), "cudnn": ("cudnn", False)}
    out = {}
    old = os.environ.get("FLASHINFER_DISABLE_JIT")
    os.environ["FLASHINFER_DISABLE_JIT"] = "1"
    try:
        for name, (backend, tc) in attempts.items():
            stage = "plan"
            try:
                w = _wrapper("flashinfer_nvfp4_fa2", inp, backend=backend, tensor_cores=tc)
                stage = "run"
                w.run(inp.q, kv, **kwargs)
                torch.cuda.synchronize()
                out[name] = {"outcome": "ran", "backend_used": str(getattr(w, "_backend", "?"))}
            except Exception as exc:  # noqa: BLE001 - the refusal is the result
                out[name] = {"outcome": f"refused at {stage}", "error": type(exc).__name__,
                             "message": str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""}
    finally:
        if old is None:
            os.environ.pop("FLASHINFER_DISABLE_JIT", None)
        else:
            os.environ["FLASHINFER_DISABLE_JIT"] = old
    return out


# -- the float64 oracle -----------------------------------------------------------------------------
def oracle_output(inp: DecodeInputs, label: str, caches: dict, requests=None) -> torch.Tensor:
    """The float64 oracle for one backend's cache: `float64 [B, Hq, D]` (rows not in `requests`
    are zero). NVFP4 reads the cache through the oracle's pool (`decode_attention` on the same
    bytes, converted to SGLang's layout); BF16 and FP8 use the exact dequantized rows."""
    kv = BACKENDS[label].kv
    reqs = range(inp.shape.batch) if requests is None else requests
    out = torch.zeros(inp.q.shape, dtype=torch.float64, device=inp.q.device)
    pool = to_sglang(caches["nvfp4"]) if kv == "nvfp4" else None
    for b in reqs:
        t0, t1 = int(inp.token_indptr[b]), int(inp.token_indptr[b + 1])
        slots = inp.token_slots[t0:t1]
        qb = inp.q[b:b + 1]
        ind = torch.tensor([0, t1 - t0], device=inp.q.device)
        if kv == "nvfp4":
            out[b] = decode_attention(qb, pool, 0, ind, slots, sm_scale=inp.sm_scale)[0]
            continue
        if kv == "bf16":
            k, v = inp.k[t0:t1].double(), inp.v[t0:t1].double()
        else:
            k = (inp.k[t0:t1].float() / inp.fp8_k).to(torch.float8_e4m3fn).double() * inp.fp8_k
            v = (inp.v[t0:t1].float() / inp.fp8_v).to(torch.float8_e4m3fn).double() * inp.fp8_v
        out[b] = ragged_attention(qb, k, v, torch.tensor([0, 1], device=qb.device), ind,
                                  sm_scale=inp.sm_scale, causal=False)[0]
    return out


def tolerance(inp: DecodeInputs, label: str, caches: dict, requests=None) -> float:
    """The largest error allowed against the float64 oracle.

    The bound of our decode kernel (`nvfp4_kvcache_triton.decode_attention.attention_tolerance`,
    GPU branch: q and p rounded to bf16 once each, `u = 2 * 2**-9`) with `u` doubled: FlashInfer
    also rounds its output to bf16 and then multiplies it by `v_scale` in bf16 (`out *= v_scale`
    in `decode.py`), two more roundings of relative size `2**-9`.
    """
    from nvfp4_kvcache_triton.decode_attention import attention_tolerance

    kv = BACKENDS[label].kv
    reqs = range(inp.shape.batch) if requests is None else requests
    worst = 0.0
    pool = to_sglang(caches["nvfp4"]) if kv == "nvfp4" else None
    for b in reqs:
        t0, t1 = int(inp.token_indptr[b]), int(inp.token_indptr[b + 1])
        slots = inp.token_slots[t0:t1]
        if kv == "nvfp4":
            k, v = pool.gather_kv(0, slots, dtype=torch.float64)
        elif kv == "bf16":
            k, v = inp.k[t0:t1], inp.v[t0:t1]
        else:
            k = (inp.k[t0:t1].float() / inp.fp8_k).to(torch.float8_e4m3fn).double() * inp.fp8_k
            v = (inp.v[t0:t1].float() / inp.fp8_v).to(torch.float8_e4m3fn).double() * inp.fp8_v
        worst = max(worst, 2 * attention_tolerance(inp.q[b:b + 1], k, v, inp.sm_scale, t1 - t0, gpu=True))
    return worst


def check(out: torch.Tensor, ref: torch.Tensor, bound: float, requests=None) -> dict:
    """`{"max_abs_err", "bound", "ok", "nonfinite"}` of an output against the oracle."""
    reqs = list(range(out.shape[0]) if requests is None else requests)
    o, r = out[reqs].double(), ref[reqs]
    err = float((o - r).abs().max()) if o.numel() else 0.0
    scale = float(r.abs().max()) if r.numel() else 0.0
    return {"max_abs_err": err, "max_abs_ref": scale, "rel_err": err / scale if scale else 0.0, "bound": bound,
            "ok": bool(torch.isfinite(o).all()) and err <= bound, "nonfinite": int((~torch.isfinite(o)).sum())}


def time_fn(fn: Callable, warmup: int = 5, iters: int = 30) -> dict:
    """Median and minimum time of `fn()` in microseconds (CUDA events, one event pair per call)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) * 1000)
    times.sort()
    return {"median_us": times[len(times) // 2], "min_us": times[0], "iters": iters}


def kv_bytes(inp: DecodeInputs, label: str) -> int:
    """Bytes of K and V (data and scales) the requests read."""
    s = inp.shape
    t = int(inp.token_indptr[-1])
    per = {"nvfp4": s.head_dim // 2 + s.head_dim // 16, "bf16": 2 * s.head_dim, "fp8": s.head_dim}[BACKENDS[label].kv]
    return 2 * t * s.kv_heads * per


# -- the run on the GPU machine ---------------------------------------------------------------------
def _compiled(labels, shape: Shape) -> list[str]:
    specs = jit_specs(labels, shape)
    return [label for label in labels if specs[label].is_compiled]


def run_shape(shape: Shape, labels, requests, timing: bool, log=print) -> dict:
    """Every backend at one shape: check against the oracle (the listed requests), optionally time."""
    inp = make_inputs(shape, "cuda")
    caches = build_caches(inp, labels)
    rows = {}
    for label in labels:
        try:
            run = decode(label, inp, caches)
            torch.cuda.synchronize()
            ref = oracle_output(inp, label, caches, requests)
            row = {"backend_used": run.backend_used, "uses_cudnn": run.uses_cudnn,
                   "check": check(run.out, ref, tolerance(inp, label, caches, requests), requests),
                   "kv_bytes": kv_bytes(inp, label)}
            if timing:
                row["time"] = time_fn(run.fn)
                row["kv_bytes_per_s"] = row["kv_bytes"] / (row["time"]["median_us"] * 1e-6)
            del run
        except Exception as exc:  # noqa: BLE001 - recorded
            row = {"error": f"{type(exc).__name__}: {str(exc)[:1500]}"}
        rows[label] = row
        log(f"[decode] {shape} {label}: {json_short(row)}")
    if "flashinfer_nvfp4_fa2" in labels and "flashinfer_bf16_fa2" in rows and timing:
        a, b = rows["flashinfer_nvfp4_fa2"].get("time"), rows["flashinfer_bf16_fa2"].get("time")
        if a and b:
            rows["speedup_vs_bf16"] = {"flashinfer_nvfp4_fa2_over_flashinfer_bf16_fa2": b["median_us"] / a["median_us"]}
            c = rows.get("flashinfer_bf16", {}).get("time")
            if c:
                rows["speedup_vs_bf16"]["flashinfer_nvfp4_fa2_over_flashinfer_bf16"] = c["median_us"] / a["median_us"]
    return rows


def json_short(row: dict) -> str:
    import json

    return json.dumps(row, default=str)[:400]


def main(argv=None) -> int:
    import argparse
    import datetime as _dt
    import json
    import platform
    import time

    ap = argparse.ArgumentParser(description="FlashInfer decode over NVFP4 / BF16 / FP8 paged caches vs the oracle")
    ap.add_argument("--out", default="flashinfer_decode.json")
    ap.add_argument("--no-headline", action="store_true", help="only the small shapes and the backend probe")
    args = ap.parse_args(argv)
    t0 = time.time()
    env = activate()
    res = {"device": torch.cuda.get_device_name(), "flashinfer": env,
           "versions": {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()},
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python scripts/flashinfer_harness.py" + (" --no-headline" if args.no_headline else ""),
           "tolerance": tolerance.__doc__.split("\n\n")[1].strip()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: out.write_text(json.dumps(res, indent=1, default=str) + "\n")  # noqa: E731
    labels = _compiled(tuple(BACKENDS), Shape())
    res["compiled_backends"] = labels
    res["not_compiled"] = [label for label in BACKENDS if label not in labels]
    small = Shape(batch=3, context=1000)
    inp = make_inputs(small, "cuda")
    res["nvfp4_backend_probe"] = probe_nvfp4_backends(inp, build_caches(inp, ("flashinfer_nvfp4_fa2",)))
    print(f"[decode] probe {json.dumps(res['nvfp4_backend_probe'], indent=1)}", flush=True)
    save()
    res["small"] = {}
    for layout in ("NHD", "HND"):
        sh = Shape(batch=3, context=1000, kv_layout=layout)
        res["small"][layout] = run_shape(sh, labels, None, timing=False)
        save()
    if not args.no_headline:
        res["headline_shape"] = Shape().__dict__
        res["headline"] = run_shape(Shape(), labels, [0, 7], timing=True)
        save()
    res["elapsed_s"] = round(time.time() - t0, 1)
    save()
    print(f"[decode] wrote {out} in {res['elapsed_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
