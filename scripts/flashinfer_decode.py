"""FlashInfer's decode on the decode benchmark's own caches: stage 4 of `bench_decode_attention.py`.

The benchmark builds one set of caches (FP4 pools in SGLang's slot-major layout, BF16 and FP8
token rows) and times its own kernels over them; `rows` times FlashInfer's paged decode over
the **same values**, in the same run:

- **NVFP4**: each FP4 pool whose recipe FlashInfer's NVFP4 layout can hold (16-element blocks,
  E4M3 block scales, a global scale: `nvfp4_kvcache.pool.flashinfer.check_recipe`, by
  capability) is converted with `nvfp4_kvcache.pool.flashinfer.from_sglang`: the same code and
  scale bytes, page-major, NHD; the same decode global scales go to FlashInfer as `k_scale` and
  `v_scale`. This is the one extra copy the stage makes (4.5 bits a value: 2.4 GB at the
  headline's 2M-token pool), freed when its rows are done. FlashInfer 0.7.4 reads an NVFP4 cache
  on Hopper only through the FA2 tensor-core decode (`use_tensor_cores=True`; see
  `flashinfer_harness`).
- **BF16 and FP8**: the benchmark's own buffers, viewed as FlashInfer's paged NHD cache
  (`[rows, H, D]` is `[rows / page, page, H, D]` with the same slot numbers): no copy. FP8 gets
  the benchmark's per-tensor scales. Each runs on the FA2 tensor-core path and on FlashInfer's
  CUDA-core decode kernel (its default for decode).
- **Page table**: derived from the benchmark's slot indices (`page_table_from_slots`): every
  request's slots must fill whole pages in order, or the stage refuses with the request and
  token that break the rule.

Every output is checked against the benchmark's float64 references of the sampled requests with
the tolerance function the benchmark applies to its own kernels
(`nvfp4_kvcache_triton.decode_attention.attention_tolerance`, through `benchkit.kvcaches.Oracle`),
times `TOLERANCE_FACTOR` for FlashInfer's two extra bf16 roundings (`flashinfer_harness.tolerance`
says which); each row also says whether it passes our kernels' own bound. Then it is timed with
the benchmark's timer (CUDA-graph replays).

JIT modules: FlashInfer compiles each decode module on first use (minutes). When another process
is compiling them (`scripts/gpu_all.sh` starts `flashinfer_env.py prebuild` early), set
`FLASHINFER_DECODE_WAIT_S` to wait for them, and `FLASHINFER_DECODE_BUILD=0` to skip a module
that is still missing then instead of compiling it inside the benchmark. A skipped or failing
path is a row that says why; the benchmark goes on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path


import torch  # noqa: E402

import flashinfer_harness as fh  # noqa: E402
from benchkit import kvcaches as kc  # noqa: E402
from benchkit import timing  # noqa: E402
from nvfp4_kvcache.pool.flashinfer import check_recipe, from_sglang, page_table_from_slots  # noqa: E402
from nvfp4_kvcache_triton import decode_attention as kda  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FP4_PATHS = ("flashinfer_nvfp4_fa2",)
"""FlashInfer paths (`flashinfer_harness.BACKENDS` labels) over an NVFP4 cache."""
DENSE_PATHS = {"bf16": ("flashinfer_bf16_fa2", "flashinfer_bf16"), "fp8": ("flashinfer_fp8_fa2", "flashinfer_fp8")}
"""FlashInfer paths over the BF16 and FP8 caches: FA2 tensor cores and the CUDA-core decode kernel."""
TOLERANCE_FACTOR = 2.0
"""FlashInfer's bound over ours: it rounds its output to bf16 and multiplies it by `v_scale` in
bf16 afterwards (`flashinfer_harness.tolerance`), two more roundings of relative size `2**-9`."""
WAIT_ENV, BUILD_ENV = "FLASHINFER_DECODE_WAIT_S", "FLASHINFER_DECODE_BUILD"

_ENV: dict = {}


def _relative(text: str) -> str:
    """A message without the checkout's absolute path (result files name no machine paths)."""
    return text.replace(str(ROOT) + os.sep, "").replace(str(ROOT), ".")


def activate() -> dict:
    """Make FlashInfer importable: the trimmed bundle (`flashinfer_env.activate`), else an
    installed `flashinfer` package. Returns what was activated (`{"flashinfer": version, ...}`).

    Raises:
        ImportError: neither is there (the message says how to install the bundle).
    """
    if not _ENV:
        import flashinfer_env

        try:
            _ENV.update(fh.activate())
            _ENV["source"] = "trimmed bundle"
        except flashinfer_env.BundleMissing as missing:
            try:
                import flashinfer
            except ImportError:
                raise ImportError(_relative(f"{missing}; and no installed flashinfer package")) from None
            _ENV.update({"flashinfer": getattr(flashinfer, "__version__", "unknown"), "source": "installed package"})
    return dict(_ENV)


def unavailable() -> str | None:
    """Why FlashInfer's decode cannot run here, or `None` when it can (a CUDA device and an
    importable FlashInfer)."""
    if not torch.cuda.is_available():
        return "no CUDA device: FlashInfer's decode kernels run on a GPU only"
    try:
        activate()
    except Exception as e:  # noqa: BLE001 - the reason is the result
        return _relative(f"{type(e).__name__}: {e}")
    return None


# -- the benchmark's caches in FlashInfer's layout ----------------------------------------------------
def page_table(kv_indptr: torch.Tensor, kv_indices: torch.Tensor, page_size: int):
    """FlashInfer's page table `(kv_indptr, kv_indices, kv_last_page_len)` (int32, pages) for
    requests given as slot lists (`kv_indptr` over tokens, `kv_indices` slots).

    Raises:
        ValueError: a request whose slots do not fill whole pages of `page_size` in order
            (FlashInfer's paged decode reads pages, not single slots).
    """
    try:
        return page_table_from_slots(kv_indptr, kv_indices, page_size)
    except ValueError as e:
        raise ValueError(f"FlashInfer's paged decode reads whole pages: every request's slots must fill pages of "
                         f"{page_size} in order, and these do not ({e})") from None


def paged_view(rows: torch.Tensor, page_size: int) -> torch.Tensor:
    """A token-row cache `[slots, H, w]` as FlashInfer's paged NHD cache `[slots / page, page, H, w]`
    (a view: the same memory, slot `s` at page `s // page`, entry `s % page`).

    Raises:
        ValueError: the slot count is not a multiple of the page size.
    """
    if rows.dim() != 3 or rows.shape[0] % page_size:
        raise ValueError(f"a paged view needs [slots, H, w] with slots a multiple of the page size {page_size}, "
                         f"got {tuple(rows.shape)}")
    return rows.view(rows.shape[0] // page_size, page_size, *rows.shape[1:])


def fp4_recipes(pools: dict) -> list[str]:
    """The pools (by name) whose recipe FlashInfer's NVFP4 layout can store (by capability)."""
    out = []
    for name, pool in pools.items():
        try:
            check_recipe(pool.recipe)
        except ValueError:
            continue
        out.append(name)
    return out


def nvfp4_cache(pool, page_size: int):
    """The pool's bytes in FlashInfer's NVFP4 paged layout (NHD; a new cache, the same bytes)."""
    return from_sglang(pool, "NHD", page_size)


# -- JIT modules ------------------------------------------------------------------------------------
def _wait_for_module(label: str, head_dim: int, deadline: float) -> dict:
    """`{"module", "compiled_before", "waited_s"}` and, when it is still missing and building here
    is off, `"skip"` (the reason)."""
    spec = fh.jit_specs((label,), fh.Shape(head_dim=head_dim))[label]
    t0 = time.monotonic()
    before = bool(spec.is_compiled)
    while not spec.is_compiled and time.monotonic() < deadline:
        time.sleep(2.0)
    info = {"module": spec.name, "compiled_before": before, "waited_s": round(time.monotonic() - t0, 1)}
    if not spec.is_compiled and os.environ.get(BUILD_ENV, "1") == "0":
        info["skip"] = (f"JIT module {spec.name} was not compiled within {os.environ.get(WAIT_ENV, '0')} s and "
                        f"{BUILD_ENV}=0 forbids compiling it here")
    return info


def _jit_builds() -> list[dict]:
    """FlashInfer's build records so far (`FLASHINFER_JIT_BUILD_LOG`, set by `flashinfer_env.activate`)."""
    import flashinfer_env

    try:
        return flashinfer_env.jit_builds_since(0)
    except (OSError, ValueError):
        return []


# -- checks and rows --------------------------------------------------------------------------------
def check(oracle: kc.Oracle, fmt: str, out: torch.Tensor) -> list[dict]:
    """One row per sampled request: FlashInfer's output against the benchmark's float64 reference
    of `fmt`, within `TOLERANCE_FACTOR` times the bound of our kernels (and whether it is within
    that bound itself)."""
    rows = []
    for b in oracle.requests:
        ref, tol, n = oracle.reference(fmt, b)
        got = out[b : b + 1].cpu().double()
        ok, err, rel = kda.attention_close(got, ref, TOLERANCE_FACTOR * tol, gpu=oracle.gpu)
        rows.append({"request": b, "tokens": n, "max_abs_err": err, "tolerance": TOLERANCE_FACTOR * tol,
                     "rel_rms_err": rel, "ok": ok,
                     "ok_at_our_kernels_tolerance": kda.attention_close(got, ref, tol, gpu=oracle.gpu)[0]})
    return rows


def _inputs(q, kv_indptr, kv_indices, table, shape, num_pages: int) -> fh.DecodeInputs:
    b, hq, d = q.shape
    n = int(kv_indptr[-1])
    fshape = fh.Shape(batch=b, q_heads=hq, kv_heads=shape.HKV, head_dim=d, page_size=shape.PAGE,
                      context=math.ceil(n / max(b, 1)), kv_layout="NHD")
    return fh.DecodeInputs(shape=fshape, q=q.to(torch.bfloat16), k=None, v=None, token_indptr=kv_indptr,
                           token_slots=kv_indices, kv_indptr=table[0], kv_indices=table[1], kv_last_page_len=table[2],
                           num_pages=num_pages, sm_scale=1.0 / math.sqrt(d))


def _run_path(label: str, fmt: str, inp, fi_caches: dict, oracle, timer, deadline: float, base: dict) -> dict:
    """One FlashInfer path: wait for its module, decode, check, time."""
    b = fh.BACKENDS[label]
    row = {"format": fmt, "backend": label, "tensor_cores": b.tensor_cores,
           "kernel": "FA2 tensor cores (batch prefill kernel)" if b.tensor_cores else "CUDA-core decode kernel", **base}
    try:
        row["jit"] = _wait_for_module(label, inp.shape.head_dim, deadline)
        if "skip" in row["jit"]:
            row["skipped"] = row["jit"].pop("skip")
            return row
        t0, seen = time.monotonic(), len(_jit_builds())
        run = fh.decode(label, inp, fi_caches)
        if inp.q.is_cuda:
            torch.cuda.synchronize()
        row["first_call_s"] = round(time.monotonic() - t0, 2)
        # FlashInfer's own build records of this first call (a prebuilt module shows a ninja no-op)
        row["jit"]["first_use_builds"] = {r["name"]: r["seconds"] for r in _jit_builds()[seen:]
                                          if r.get("pid") == os.getpid()}
        row["flashinfer_backend"], row["uses_cudnn"] = run.backend_used, run.uses_cudnn
        row["check"] = check(oracle, fmt, run.out)
        row["ok"] = all(c["ok"] for c in row["check"])
        fell_back = timing.stats()["fallbacks"]
        row["ms"] = timer(run.fn)
        # the benchmark's graph timer times a call it cannot capture with events, and counts it
        row["timer_fell_back_to_events"] = timing.stats()["fallbacks"] > fell_back
        row["bytes_per_s"] = row["bytes"] / (row["ms"] * 1e-3)
        del run
    except Exception as e:  # noqa: BLE001 - recorded; the other paths still run
        row["error"] = _relative(f"{type(e).__name__}: {str(e)[:600]}")
        row["ok"] = False
    return row


def rows(caches: dict, q: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor, shape: kc.Shape,
         timer, oracle: kc.Oracle | None = None) -> list[dict]:
    """FlashInfer's decode over the benchmark's caches: one row per (format, FlashInfer path).

    Args:
        caches: `benchkit.kvcaches.build_caches`'s dict (`"pools"`, `"bf16"`, `"fp8"`, `"fp8_scales"`).
        q: `[B, Hq, D]` queries (bf16 on a GPU).
        kv_indptr: `int64 [B + 1]` token offsets of the requests.
        kv_indices: `int64 [kv_indptr[-1]]` slots, whole pages in order per request.
        shape: the benchmark's `Shape` (KV heads, page size).
        timer: `timer(fn) -> ms` (the benchmark's CUDA-graph timer).
        oracle: the benchmark's `Oracle` over these caches and requests (its references are
            reused); default a new one on requests 0 and B - 1.

    Returns:
        Rows `{"format", "backend", "kernel", "tensor_cores", "ms", "bytes", "bytes_per_s", "ok",
        "check", "flashinfer", "jit", ...}`; a path that could not run has `"skipped"` or
        `"error"` (and `"ok": False`) instead of a time.

    Raises:
        ImportError: FlashInfer cannot be imported.
        ValueError: slots that are not whole pages in order, or caches whose slot count is not a
            multiple of the page size.
    """
    env = activate()
    table = page_table(kv_indptr, kv_indices, shape.PAGE)
    bf16 = caches["bf16"]
    slots = bf16[0].shape[0]
    paged = {"bf16": tuple(paged_view(t, shape.PAGE) for t in bf16),
             "fp8": tuple(paged_view(t, shape.PAGE) for t in caches["fp8"])}
    num_pages = slots // shape.PAGE
    if table[1].numel() and int(table[1].max()) >= num_pages:
        raise ValueError(f"the requests read page {int(table[1].max())}, past the caches' {num_pages} pages")
    if oracle is None:
        oracle = kc.Oracle(shape, caches, q, kv_indptr, kv_indices, sorted({0, q.shape[0] - 1}), q.is_cuda)
    inp = _inputs(q, kv_indptr, kv_indices, table, shape, num_pages)
    tokens = int(kv_indptr[-1])
    deadline = time.monotonic() + float(os.environ.get(WAIT_ENV, "0") or 0)
    base = {"batch": q.shape[0], "context": inp.shape.context, "page": shape.PAGE, "kv_layout": "NHD",
            "flashinfer": env.get("flashinfer"), "tolerance_factor": TOLERANCE_FACTOR}
    out = []
    for fmt in fp4_recipes(caches["pools"]):
        pool = caches["pools"][fmt]
        fi = {"nvfp4": nvfp4_cache(pool, shape.PAGE)}
        sc = dataclasses.replace(inp, g_k=float(pool.k_scales[0]), g_v=float(pool.v_scales[0]))
        for label in FP4_PATHS:
            out.append(_run_path(label, fmt, sc, fi, oracle, timer, deadline,
                                 dict(base, bytes=kc.bytes_read(fmt, shape, 1, tokens))))
        del fi
        if q.is_cuda:
            torch.cuda.empty_cache()
    fk, fv = (float(t.reshape(-1)[0]) for t in caches["fp8_scales"])
    dense = dataclasses.replace(inp, fp8_k=fk, fp8_v=fv)
    for fmt, labels in DENSE_PATHS.items():
        for label in labels:
            out.append(_run_path(label, fmt, dense, paged, oracle, timer, deadline,
                                 dict(base, bytes=kc.bytes_read(fmt, shape, 1, tokens))))
    return out
