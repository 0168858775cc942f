"""The decode-attention benchmarks' shapes, caches, request indices, variant runner and oracle check.

A *variant* is a string naming the cache and how the kernel reads it:

- `"bf16"`, `"fp8"`: the baselines (`decode_attention_dense`); `"fp8+cvt_f16"`: the FP8 cache
  through the hardware's E4M3 -> fp16 `cvt` and fp16 dots;
- `"nvfp4"`, `"fp4_mx_block16"`, with a decoder: `"nvfp4+cvt_f16"`, `"fp4_mx_block16+prmt_bf16"`, ...
  (`decode_attention_fp4` over SGLang's slot-major pool);
- any FP4 variant with `"@pages"`: the same bytes as page blocks (`nvfp4_kvcache_triton.page_blocks`).

The launch (`num_kv_splits`, `block_n`, `num_warps`, `num_stages`, `tokens_as_m`) is passed
separately. Every cache holds the same random K/V values, each stored in its own format.
"""

from __future__ import annotations

import copy
import math

import torch

from benchkit.record import log
from nvfp4_kvcache.attention import decode_attention as oracle_decode
from nvfp4_kvcache.attention import ragged_attention
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
from nvfp4_kvcache_triton import decode_attention as kda
from nvfp4_kvcache_triton.page_blocks import to_page_blocks

FP4 = ("nvfp4", "fp4_mx_block16")
G_K, G_V = 0.37, 1.9          # nvfp4 global scales (not 1, on purpose)
FP8_K, FP8_V = 0.05, 0.05     # FP8 per-tensor scales


class Shape:
    """The headline decode step: batch 8, 64 query heads, 8 KV heads, head dim 128, page 16,
    32k tokens each, in a pool of 2M slots (toy sizes with `smoke`)."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        if smoke:
            self.B, self.HQ, self.HKV, self.D, self.PAGE, self.CTX, self.POOL = 2, 4, 1, 64, 16, 20, 256
        else:
            self.B, self.HQ, self.HKV, self.D, self.PAGE, self.CTX, self.POOL = 8, 64, 8, 128, 16, 32768, 1 << 21

    def with_(self, **kw) -> "Shape":
        """A copy with some sizes changed (`shape.with_(D=256, PAGE=64)`)."""
        s = copy.copy(self)
        for k, v in kw.items():
            setattr(s, k, v)
        return s

    def record(self) -> dict:
        return {"batch": self.B, "q_heads": self.HQ, "kv_heads": self.HKV, "head_dim": self.D, "page": self.PAGE,
                "context": self.CTX, "pool_tokens": self.POOL}


def parse(variant: str) -> tuple[str, str, bool]:
    """`"nvfp4+cvt_f16@pages"` -> `("nvfp4", "cvt_f16", True)`; the decoder is `""` when not named."""
    name, _, layout = variant.partition("@")
    if layout not in ("", "pages"):
        raise ValueError(f"unknown layout {layout!r} in {variant!r}")
    kv, _, dec = name.partition("+")
    return kv, dec, layout == "pages"


def value_format(variant: str) -> str:
    """The cache whose values a variant reads: the recipe for FP4, `"bf16"` or `"fp8"`."""
    return parse(variant)[0]


def build_caches(shape: Shape, dev: str, seed: int, page_blocks: bool = False) -> dict:
    """FP4 pools (both recipes), BF16 and FP8 caches of `shape.POOL` tokens from the same random
    K/V (and, with `page_blocks`, each FP4 pool copied into page blocks)."""
    rows = shape.POOL + shape.PAGE
    h, d = shape.HKV, shape.D
    pools = {r: MHATokenToKVPoolFP4(size=shape.POOL, page_size=shape.PAGE, layer_num=1, head_num=h, head_dim=d,
                                    recipe=r, device=dev, **({"k_scales": [G_K], "v_scales": [G_V]} if r == "nvfp4" else {}))
             for r in FP4}
    bf16 = [torch.zeros(rows, h, d, dtype=torch.bfloat16, device=dev) for _ in range(2)]
    fp8 = [torch.zeros(rows, h, d, dtype=torch.float8_e4m3fn, device=dev) for _ in range(2)]
    chunk = 1 << 16
    gen = torch.Generator(device=dev).manual_seed(seed)
    for s0 in range(shape.PAGE, rows, chunk):
        s1 = min(rows, s0 + chunk)
        loc = torch.arange(s0, s1, device=dev)
        k = torch.randn(s1 - s0, h, d, generator=gen, device=dev)
        v = torch.randn(s1 - s0, h, d, generator=gen, device=dev)
        for r, pool in pools.items():
            g = (G_K, G_V) if r == "nvfp4" else (1.0, 1.0)
            _store(pool, r, loc, k * g[0] * 6, v * g[1] * 6)
        bf16[0][s0:s1], bf16[1][s0:s1] = k.bfloat16(), v.bfloat16()
        fp8[0][s0:s1], fp8[1][s0:s1] = (k / FP8_K).to(torch.float8_e4m3fn), (v / FP8_V).to(torch.float8_e4m3fn)
        if not shape.smoke and (s1 == rows or (s0 // chunk) % 8 == 0):
            log(f"  caches: {s1}/{rows} rows")
    caches = {"pools": pools, "bf16": bf16, "fp8": fp8,
              "fp8_scales": tuple(torch.tensor([x], dtype=torch.float32, device=dev) for x in (FP8_K, FP8_V))}
    if page_blocks:
        caches["page_blocks"] = {r: to_page_blocks(kda.fp4_layer(p, 0), shape.PAGE) for r, p in pools.items()}
    return caches


def _store(pool: MHATokenToKVPoolFP4, recipe: str, loc, k, v) -> None:
    """Quantize into the pool with the store kernel (bit for bit the oracle, and fast)."""
    import nvfp4_kvcache_triton

    t = pool.layer_tensors(0)
    g = (pool.k_scales[0:1], pool.v_scales[0:1]) if recipe == "nvfp4" else (None, None)
    nvfp4_kvcache_triton.store_kv(k, v, loc, t["k"], t["v"], t["k_scale"], t["v_scale"], recipe, g[0], g[1])


def paged_indices(shape: Shape, batch: int, ctx: int, gen: torch.Generator, dev: str, pool_tokens: int | None = None):
    """`(kv_indptr, kv_indices)`: each request gets `ctx` tokens in whole pages, pages in random
    order, drawn from the first `pool_tokens` slots (default the whole pool; page 0 is padding);
    wraps around when the batch needs more pages than that."""
    n_pages = (pool_tokens or shape.POOL) // shape.PAGE
    per = math.ceil(ctx / shape.PAGE)
    perm = torch.randperm(n_pages, generator=gen) + 1
    pages = perm[torch.arange(batch * per) % n_pages].reshape(batch, per)
    slots = (pages[:, :, None] * shape.PAGE + torch.arange(shape.PAGE)).reshape(batch, -1)[:, :ctx]
    indptr = torch.arange(batch + 1, dtype=torch.int64) * ctx
    return indptr.to(dev), slots.reshape(-1).to(dev)


def bytes_read(variant: str, shape: Shape, batch: int, ctx: int) -> int:
    """K+V bytes a decode step must read (data and scales)."""
    per_tok = {"bf16": shape.D * 2, "fp8": shape.D, "nvfp4": shape.D // 2 + shape.D // 16,
               "fp4_mx_block16": shape.D // 2 + shape.D // 16}[value_format(variant)]
    return 2 * batch * ctx * shape.HKV * per_tok


def run_variant(variant: str, caches: dict, q, indptr, idx, shape: Shape, validate: bool = False, **launch):
    """One decode step of `variant` over `caches` at `launch`."""
    kv, dec, pages = parse(variant)
    if kv in FP4:
        src = caches["page_blocks"][kv] if pages else caches["pools"][kv]
        return kda.decode_attention_fp4(q, src, None if pages else 0, indptr, idx, page_size=shape.PAGE,
                                        validate=validate, decode=dec or "placement", **launch)
    k, v = caches[kv]
    sc = {} if kv == "bf16" else {"k_scale": caches["fp8_scales"][0], "v_scale": caches["fp8_scales"][1]}
    return kda.decode_attention_dense(q, k, v, indptr, idx, page_size=shape.PAGE, validate=validate,
                                      decode=dec or "bf16", **sc, **launch)


class Oracle:
    """Float64 references of sampled requests, computed once per cache format on the CPU, against
    which any variant's output is checked with `attention_close` (and the GPU tolerance)."""

    def __init__(self, shape: Shape, caches: dict, q, indptr, idx, requests, gpu: bool):
        self.shape, self.caches, self.gpu, self.requests = shape, caches, gpu, list(requests)
        self.q, self.ip, self.idx = q, indptr.cpu(), idx
        self._refs: dict = {}

    def _ref(self, fmt: str, b: int):
        if (fmt, b) in self._refs:
            return self._refs[(fmt, b)]
        sh = self.shape
        s = self.idx[int(self.ip[b]) : int(self.ip[b + 1])]
        n = s.numel()
        qb = self.q[b : b + 1].float().cpu()
        if fmt in FP4:
            local = torch.arange(n) + sh.PAGE  # the request's slots copied into a small CPU pool
            src = self.caches["pools"][fmt]
            small = MHATokenToKVPoolFP4(size=math.ceil(n / sh.PAGE) * sh.PAGE, page_size=sh.PAGE, layer_num=1,
                                        head_num=sh.HKV, head_dim=sh.D, recipe=fmt,
                                        **({"k_scales": [G_K], "v_scales": [G_V]} if fmt == "nvfp4" else {}))
            for name, t in src.layer_tensors(0).items():
                small.layer_tensors(0)[name][local] = t[s].cpu()
            ref = oracle_decode(qb, small, 0, torch.tensor([0, n]), local)
            kk, vv = small.gather_kv(0, local, dtype=torch.float64)
        else:
            k, v = self.caches[fmt]
            fk, fv = (1.0, 1.0) if fmt == "bf16" else (FP8_K, FP8_V)
            kk, vv = k[s].cpu().double() * fk, v[s].cpu().double() * fv
            ref = ragged_attention(qb, kk, vv, torch.tensor([0, 1]), torch.tensor([0, n]),
                                   sm_scale=1 / math.sqrt(sh.D), causal=False)
        tol = kda.attention_tolerance(qb, kk, vv, 1 / math.sqrt(sh.D), n, gpu=self.gpu)
        self._refs[(fmt, b)] = (ref, tol, n)
        return self._refs[(fmt, b)]

    def reference(self, fmt: str, b: int):
        """`(ref, tolerance, tokens)` of request `b` over the cache of value format `fmt`: the
        float64 output `[1, Hq, D]` and our kernels' bound (`attention_tolerance`), computed once."""
        return self._ref(fmt, b)

    def check(self, variant: str, out: torch.Tensor) -> list[dict]:
        """One row per sampled request: max abs error, tolerance, relative RMS error, ok."""
        rows = []
        for b in self.requests:
            ref, tol, n = self._ref(value_format(variant), b)
            ok, err, rel = kda.attention_close(out[b : b + 1].cpu().double(), ref, tol, gpu=self.gpu)
            rows.append({"format": variant, "request": b, "tokens": n, "max_abs_err": err, "tolerance": tol,
                         "rel_rms_err": rel, "ok": ok})
        return rows
