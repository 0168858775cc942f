"""The MLA decode benchmark's shapes, latent caches, variant runner and float64 oracle check.

A variant names the latent cache and the decoder: `"bf16"` (the baseline, `mla_decode_attention_dense`),
`"nvfp4+cvt_f16"`, `"fp4_mx_block16+prmt_bf16"`, `"nvfp4"`, `"fp4_mx_block16"`
(`mla_decode_attention_fp4`, the recipe and its decoder; no decoder named: `placement`). Every cache
holds the same random latents, each stored in its own format.
"""

from __future__ import annotations

import copy
import math

import torch

from benchkit.record import log
from nvfp4_kvcache.attention import mla_decode_attention, ragged_attention
from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
from nvfp4_kvcache_triton import decode_attention as kda
from nvfp4_kvcache_triton.mla_decode_attention import mla_decode_attention_dense, mla_decode_attention_fp4

FP4 = ("nvfp4", "fp4_mx_block16")
G = 0.37  # nvfp4 global scale (not 1, on purpose)


class Shape:
    """DeepSeek-V3's latent (512 NoPE + 64 RoPE), `heads` query heads per GPU (16 at tensor
    parallelism 8, 128 with data-parallel attention), batch 8, 32k tokens each, page 16 (toy sizes
    with `smoke`)."""

    def __init__(self, smoke: bool, heads: int = 16):
        self.smoke, self.HQ, self.DL, self.DR, self.PAGE = smoke, heads, 512, 64, 16
        self.B, self.CTX = (2, 40) if smoke else (8, 32768)
        if smoke:
            self.DL, self.DR, self.HQ = 64, 32, min(heads, 20)
        self.SM_SCALE = 1 / math.sqrt(128 + 64)  # DeepSeek-V3: the unabsorbed head dim, 128 + 64

    def with_(self, **kw) -> "Shape":
        s = copy.copy(self)
        for k, v in kw.items():
            setattr(s, k, v)
        return s

    @property
    def pool(self) -> int:
        return self.B * math.ceil(self.CTX / self.PAGE) * self.PAGE  # each request in whole pages

    def record(self) -> dict:
        return {"batch": self.B, "q_heads": self.HQ, "kv_lora_rank": self.DL, "qk_rope_head_dim": self.DR,
                "page": self.PAGE, "context": self.CTX, "pool_tokens": self.pool, "sm_scale": self.SM_SCALE}


def value_format(variant: str) -> str:
    return variant.partition("+")[0]


def build(shape: Shape, dev: str, seed: int) -> dict:
    """FP4 latent pools (both recipes) and a BF16 latent cache `[slots, 1, DL + DR]` of the batch's
    tokens, from the same random latents (the FP4 pools quantized by the oracle's `set_kv_buffer`)."""
    rows = shape.pool + shape.PAGE
    c = shape.DL + shape.DR
    pools = {r: MLATokenToKVPoolFP4(size=shape.pool, page_size=shape.PAGE, layer_num=1, kv_lora_rank=shape.DL,
                                    qk_rope_head_dim=shape.DR, recipe=r, device=dev,
                                    **({"kv_scales": [G]} if r == "nvfp4" else {}))
             for r in FP4}
    bf16 = torch.zeros(rows, 1, c, dtype=torch.bfloat16, device=dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    chunk = 1 << 15
    for s0 in range(shape.PAGE, rows, chunk):
        s1 = min(rows, s0 + chunk)
        lat = torch.randn(s1 - s0, 1, c, generator=gen, device=dev)
        loc = torch.arange(s0, s1, device=dev)
        for r, pool in pools.items():
            pool.set_kv_buffer(0, loc, lat * (G * 6 if r == "nvfp4" else 1.0))
        bf16[s0:s1] = lat.bfloat16()
        if not shape.smoke and (s1 == rows or (s0 // chunk) % 16 == 0):
            log(f"  latents: {s1}/{rows} rows")
    return {"pools": pools, "bf16": bf16}


def indices(shape: Shape, gen: torch.Generator, dev: str):
    """Each request's `CTX` tokens in whole pages of random order, the batch's pages only."""
    n_pages = shape.pool // shape.PAGE
    per = math.ceil(shape.CTX / shape.PAGE)
    pages = (torch.randperm(n_pages, generator=gen)[: shape.B * per] + 1).reshape(shape.B, per)
    slots = (pages[:, :, None] * shape.PAGE + torch.arange(shape.PAGE)).reshape(shape.B, -1)[:, : shape.CTX]
    return (torch.arange(shape.B + 1, dtype=torch.int64) * shape.CTX).to(dev), slots.reshape(-1).to(dev)


def bytes_read(variant: str, shape: Shape) -> int:
    """Latent bytes a decode step must read once (data and scales)."""
    c = shape.DL + shape.DR
    per_tok = 2 * c if value_format(variant) == "bf16" else c // 2 + c // 16
    return shape.B * shape.CTX * per_tok


def run_variant(variant: str, caches: dict, qn, qr, indptr, idx, shape: Shape, validate: bool = False, **launch):
    kv, _, dec = variant.partition("+")
    if kv == "bf16":
        return mla_decode_attention_dense(qn, qr, caches["bf16"], indptr, idx, kv_lora_rank=shape.DL,
                                          sm_scale=shape.SM_SCALE, page_size=shape.PAGE, validate=validate, **launch)
    return mla_decode_attention_fp4(qn, qr, caches["pools"][kv], 0, indptr, idx, sm_scale=shape.SM_SCALE,
                                    page_size=shape.PAGE, validate=validate, decode=dec or "placement", **launch)


class Oracle:
    """Float64 references of sampled requests per cache format (CPU), as `benchkit.kvcaches.Oracle`."""

    def __init__(self, shape: Shape, caches: dict, qn, qr, indptr, idx, requests, gpu: bool):
        self.shape, self.caches, self.gpu, self.requests = shape, caches, gpu, list(requests)
        self.qn, self.qr, self.ip, self.idx = qn, qr, indptr.cpu(), idx
        self._refs: dict = {}

    def ref(self, fmt: str, b: int):
        if (fmt, b) in self._refs:
            return self._refs[(fmt, b)]
        sh = self.shape
        s = self.idx[int(self.ip[b]) : int(self.ip[b + 1])]
        n = s.numel()
        qn, qr = self.qn[b : b + 1].float().cpu(), self.qr[b : b + 1].float().cpu()
        if fmt in FP4:
            src = self.caches["pools"][fmt]
            local = torch.arange(n) + sh.PAGE
            small = MLATokenToKVPoolFP4(size=math.ceil(n / sh.PAGE) * sh.PAGE, page_size=sh.PAGE, layer_num=1,
                                        kv_lora_rank=sh.DL, qk_rope_head_dim=sh.DR, recipe=fmt,
                                        **({"kv_scales": [G]} if fmt == "nvfp4" else {}))
            for name, t in src.layer_tensors(0).items():
                small.layer_tensors(0)[name][local] = t[s].cpu()
            ref = mla_decode_attention(qn, qr, small, 0, torch.tensor([0, n]), local, sm_scale=sh.SM_SCALE)
            kv = small.gather_kv(0, local, dtype=torch.float64)
        else:
            kv = self.caches["bf16"][s].cpu().double()
            ref = ragged_attention(torch.cat([qn, qr], -1).double(), kv, kv[..., : sh.DL], torch.tensor([0, 1]),
                                   torch.tensor([0, n]), sm_scale=sh.SM_SCALE, causal=False)
        tol = kda.attention_tolerance(torch.cat([qn, qr], -1), kv[:, 0], kv[:, 0, : sh.DL], sh.SM_SCALE, n, gpu=self.gpu)
        self._refs[(fmt, b)] = (ref, tol, n)
        return self._refs[(fmt, b)]

    def check(self, variant: str, out: torch.Tensor) -> list[dict]:
        rows = []
        for b in self.requests:
            ref, tol, n = self.ref(value_format(variant), b)
            ok, err, rel = kda.attention_close(out[b : b + 1].cpu().double(), ref, tol, gpu=self.gpu)
            rows.append({"format": variant, "request": b, "tokens": n, "max_abs_err": err, "tolerance": tol,
                         "rel_rms_err": rel, "ok": ok})
        return rows
