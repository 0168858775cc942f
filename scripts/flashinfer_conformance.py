"""Byte conformance of FlashInfer's NVFP4 KV writers and paged dequantize with the oracle.

On a GPU, for every input class and dtype, this runs FlashInfer 0.7.4's

* `nvfp4_quantize_append_paged_kv_cache` (page table; NHD and HND),
* `nvfp4_quantize_append_paged_kv_cache_with_slot_mapping` (slot mapping with padding; NHD),
* the same with `nvfp4_4over6` (the 4-over-6 block-scale search; NHD),
* `nvfp4_quantize_append_paged_mla_kv_cache` (NVFP4 latent, FP8 rope),
* `nvfp4_kv_dequantize_paged` (on the oracle's bytes),

and the oracle's [`FlashInferNVFP4KVCache`][nvfp4_kvcache.pool.flashinfer.FlashInferNVFP4KVCache]
(the same recipe arithmetic as every other oracle path) into caches pre-filled with the same
sentinel bytes, then compares every byte of the caches, written slots and untouched ones alike.
Each differing block is decided by exact rational arithmetic (`flashinfer_exact.decide`, up to
`--decide` blocks per class) and the first one (fewest differing codes) is kept as a reproducer.

The 4-over-6 writer is compared with the oracle recipe registered as `nvfp4_4over6` when there is
one; otherwise with a `float32` model of FlashInfer's own formula (`fourover6_ieee_model`, IEEE
operations in element order), and the differences are decided the same way.

The result (`--out`, default `docs/data/peers/flashinfer.json`) holds the versions, card, date and
command, the compile times, the PTX instruction census of the page module (which arithmetic the
compiled writers really use), and per (writer, class, dtype): blocks compared, blocks that
differ in a scale byte or a code, stray writes (bytes changed outside the written slots), verdict
counts and a reproducer.

Usage:

```text
python scripts/flashinfer_conformance.py                  # GPU; bundle installed (flashinfer_install.sh)
python scripts/flashinfer_conformance.py --quick          # small sizes
python scripts/flashinfer_conformance.py --selftest       # CPU: the oracle against itself with faults
                                                          # injected, to show the comparison catches them
```
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

import flashinfer_exact as fx  # noqa: E402
from provenance import command_line  # noqa: E402
from nvfp4_kvcache.packing import unpack_nibbles  # noqa: E402
from nvfp4_kvcache.formats import E4M3  # noqa: E402
from nvfp4_kvcache.pool.flashinfer import (  # noqa: E402
    FlashInferNVFP4KVCache,
    FlashInferNVFP4MLACache,
    append_slots,
    fp8_e4m3_codes,
)
from nvfp4_kvcache.recipes import RECIPES  # noqa: E402

HEADS, DIM, PAGE = 8, 128, 16
BLOCKS_PER_ROW = DIM // 16
SENTINEL = 0xA5                      # the pre-fill of every cache: a stray write changes it
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
F32_TINY = torch.finfo(torch.float32).tiny


def log(*a):
    print(*a, flush=True)


# -- input classes ----------------------------------------------------------------------------------
@dataclass
class Case:
    """One input class: `x` holds whole rows `[tokens, HEADS, DIM]` (exact in `dtype`)."""

    name: str
    x: torch.Tensor                  # float32 values, representable in dtype
    g: float                         # global (decode) scale for K; V uses the same data negated
    why: str

    def __post_init__(self):
        self.g = float(torch.tensor(self.g, dtype=torch.float32))   # what the kernels receive


def _e4m3_values(lo=2.0**-6, hi=64.0) -> torch.Tensor:
    v = torch.tensor(E4M3.magnitudes, dtype=torch.float32)
    return v[(v >= lo) & (v <= hi)]


def _as_rows(blocks: torch.Tensor) -> torch.Tensor:
    """`[n, 16]` blocks -> `[tokens, HEADS, DIM]` rows (padded with copies of the first blocks)."""
    per_token = HEADS * BLOCKS_PER_ROW
    n = blocks.shape[0]
    tokens = max(1, -(-n // per_token))
    reps = -(-tokens * per_token // n)
    full = blocks.repeat(reps, 1)[: tokens * per_token]
    return full.reshape(tokens, HEADS, DIM)


def _step(v: torch.Tensor, dtype: torch.dtype, up: bool) -> torch.Tensor:
    """The neighbour of positive normal values `v` (exact in `dtype`) one `dtype` ulp up or down."""
    prec = {torch.bfloat16: 8, torch.float16: 11}[dtype]
    _, e = torch.frexp(v)                                  # v = m * 2**e, m in [0.5, 1)
    ulp_up = torch.ldexp(torch.ones_like(v), e - prec)
    at_pow2 = v == torch.ldexp(torch.full_like(v, 0.5), e)
    ulp_dn = torch.where(at_pow2, ulp_up / 2, ulp_up)
    return v + ulp_up if up else v - ulp_dn


def _rand_signs(shape, gen):
    return torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)


def make_cases(dtype: torch.dtype, tokens: int, gen: torch.Generator) -> list[Case]:
    """Every input class for one dtype (values rounded to it, so the writer sees exactly them)."""
    to = lambda t: t.to(dtype).float()  # noqa: E731
    fp16 = dtype == torch.float16
    cases = []
    x = to(torch.randn(tokens, HEADS, DIM, generator=gen) * 3)
    cases.append(Case("random_normal", x, float(x.abs().amax()) / 448.0,
                      "normal data, global scale amax/448 (FlashInfer's nvfp4_quantize_paged_kv_cache default)"))
    heavy = torch.randn(tokens, HEADS, DIM, generator=gen).exp() ** 2 * _rand_signs((tokens, HEADS, DIM), gen)
    x = to(heavy.clamp(max=6e4))
    cases.append(Case("random_heavy_tailed", x, float(x.abs().amax()) / (6 * 448.0),
                      "log-normal squared data, global scale amax/(6*448)"))
    x = to(torch.randn(tokens, HEADS, DIM, generator=gen))
    cases.append(Case("random_g1", x, 1.0, "normal data with global scale 1: many exact ties"))
    x = to(torch.randn(tokens, HEADS, DIM, generator=gen) * 0.8)
    cases.append(Case("random_g037", x, 0.37, "normal data with a 24-bit global scale 0.37"))

    n = 4096
    sf = _e4m3_values()
    pick = sf[torch.randint(len(sf), (n,), generator=gen)]
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    t = ties[torch.randint(7, (n, 15), generator=gen)]
    for g, label in ((1.0, "g1"), (0.5, "g0.5"), (4.0, "g4")):
        b = torch.cat([6 * pick[:, None] * g, t * pick[:, None] * g], 1) * _rand_signs((n, 16), gen)
        cases.append(Case(f"e2m1_ties_{label}", _as_rows(to(b)), g,
                          "every element an exact E2M1 midpoint of its block scale (amax = 6 sf g)"))
    mids = (sf[:-1] + sf[1:]) / 2
    m = mids[torch.randint(len(mids), (n,), generator=gen)]
    b = torch.randn(n, 16, generator=gen).clamp(-1, 1) * m[:, None] * 5
    b[:, 0] = 6 * m
    cases.append(Case("e4m3_ties", _as_rows(to(b)), 1.0, "amax / (6 g) exactly halfway between two E4M3 values"))
    up, dn = _step(to(6 * m), dtype, True), _step(to(6 * m), dtype, False)
    b2 = b.clone()
    b2[: n // 2, 0], b2[n // 2:, 0] = up[: n // 2], dn[n // 2:]
    cases.append(Case("e4m3_near_ties", _as_rows(to(b2)), 1.0, "amax one input ulp above or below an E4M3 midpoint"))
    k = torch.randint(-8 if fp16 else -20, 12, (n,), generator=gen).float()
    p2 = torch.pow(2.0, k)
    below = _step(p2, dtype, False)
    b = torch.rand(n, 16, generator=gen) * below[:, None]
    b[:, 0] = below
    for g, label in ((1.0, "g1"), (1 / 448.0, "g1/448"), (1 / 2688.0, "g1/2688")):
        cases.append(Case(f"amax_below_pow2_{label}", _as_rows(to(b * _rand_signs((n, 16), gen))), g,
                          "amax one input ulp below a power of two"))
    under = torch.tensor([2.0**-10 * 6 * f for f in (0.25, 0.5, 0.999, 1.0, 1.001, 1.5, 1.999)])
    a = under[torch.randint(len(under), (n,), generator=gen)]
    b = torch.rand(n, 16, generator=gen) * a[:, None]
    b[:, 0] = a
    cases.append(Case("scale_underflow", _as_rows(to(b * _rand_signs((n, 16), gen))), 1.0,
                      "amax / (6 g) at and around 2**-10, where the E4M3 scale rounds to 0 or to 2**-9"))
    sub = torch.tensor(E4M3.magnitudes[1:8], dtype=torch.float32)
    a = 6 * sub[torch.randint(7, (n,), generator=gen)] * (1 + 0.3 * torch.rand(n, generator=gen))
    b = torch.randn(n, 16, generator=gen).clamp(-1, 1) * a[:, None]
    b[:, 0] = a
    cases.append(Case("scale_subnormal", _as_rows(to(b)), 1.0, "E4M3 block scales in the subnormal range 2**-9..2**-6"))
    g = 2.0**-14 if fp16 else 2.0**-20
    a = 6 * 448 * g * torch.tensor([1.0, 1.0179, 1.0357, 1.07, 2.0, 100.0])[torch.randint(6, (n,), generator=gen)]
    b = torch.randn(n, 16, generator=gen).clamp(-1, 1) * a[:, None]
    b[:, 0] = a
    cases.append(Case("scale_saturation", _as_rows(to(b)), g, "amax / (6 g) at and past 448: the block scale saturates"))
    lo, hi = (-24, 14) if fp16 else (-30, 10)
    e = torch.randint(lo, hi, (n, 16), generator=gen).float()
    b = torch.pow(2.0, e) * (1 + torch.rand(n, 16, generator=gen)) * _rand_signs((n, 16), gen)
    b = to(b)
    cases.append(Case("huge_dynamic_range", _as_rows(b), float(b.abs().amax()) / 448.0,
                      f"every block spans 2**{lo}..2**{hi}"))
    b = torch.zeros(n, 16)
    b[n // 3: 2 * n // 3] = -0.0
    b[2 * n // 3:] = torch.where(torch.rand(n - 2 * n // 3, 16, generator=gen) < 0.5, 0.0, -0.0)
    cases.append(Case("zeros_and_negative_zeros", _as_rows(b), 1.0, "all +0, all -0, and mixed signed zeros"))
    b = to(torch.randn(n, 16, generator=gen))
    pos = torch.randint(16, (n,), generator=gen)
    b[torch.arange(n), pos] = torch.where(torch.rand(n, generator=gen) < 0.5, math.nan, -math.nan)
    b[: n // 8] = math.nan
    cases.append(Case("nan_blocks", _as_rows(b), 1.0, "one NaN (either sign) in a block; an eighth all NaN"))
    b = to(torch.randn(n, 16, generator=gen))
    b[torch.arange(n), pos] = torch.where(torch.rand(n, generator=gen) < 0.5, math.inf, -math.inf)
    cases.append(Case("inf_blocks", _as_rows(b), 1.0, "one infinity (either sign) per block"))
    b[:, (pos + 1) % 16] = math.nan
    cases.append(Case("inf_and_nan_blocks", _as_rows(b), 1.0, "one infinity and one NaN per block"))
    if not fp16:
        b = torch.pow(2.0, torch.randint(-133, -127, (n, 16), generator=gen).float()) * (1 + torch.rand(n, 16, generator=gen))
        b = to(b * _rand_signs((n, 16), gen))
        cases.append(Case("f32_subnormal_inputs_g_tiny", _as_rows(b), 2.0**-124,
                          "bfloat16 inputs below 2**-126 (float32 subnormals) with a tiny global scale"))
        cases.append(Case("f32_subnormal_inputs_g1", _as_rows(b), 1.0, "the same inputs with global scale 1"))
    b = to(torch.randn(n, 16, generator=gen) * (2.0**-14 if fp16 else 1e-36))
    cases.append(Case("tiny_global_scale", _as_rows(b), F32_TINY * 3,
                      "global scale near the smallest normal float32 (bfloat16: block scales in range; float16: saturated)"))
    return cases


# -- comparison -------------------------------------------------------------------------------------
def _sentinel_cache(layout: str, num_pages: int, g: float, device) -> FlashInferNVFP4KVCache:
    c = FlashInferNVFP4KVCache(num_pages=num_pages, page_size=PAGE, layer_num=1, head_num=HEADS, head_dim=DIM,
                               kv_layout=layout, device=device, k_scales=g, v_scales=g)
    for t in (c.k_cache[0], c.v_cache[0], c.k_sf[0], c.v_sf[0]):
        t.fill_(SENTINEL)
    return c


def _block_view(cache: FlashInferNVFP4KVCache, which: str):
    """`(scale bytes [slots, H, D/16], codes [slots, H, D/16, 16])` of K or V."""
    data = cache._rows(cache.k_cache[0] if which == "k" else cache.v_cache[0])
    sf = cache._rows(cache.k_sf[0] if which == "k" else cache.v_sf[0])
    codes = unpack_nibbles(data).reshape(*data.shape[:2], BLOCKS_PER_ROW, 16)
    return sf, codes


def compare_caches(gpu: FlashInferNVFP4KVCache, ref: FlashInferNVFP4KVCache, slots: torch.Tensor,
                   inputs: dict[str, torch.Tensor], g: float, variant: str, n_decide: int) -> dict:
    """Compare two caches byte for byte; decide a sample of the differing blocks exactly."""
    written = torch.zeros(gpu.slots, dtype=torch.bool, device=slots.device)
    written[slots] = True
    token_of_slot = torch.full((gpu.slots,), -1, dtype=torch.int64, device=slots.device)
    token_of_slot[slots] = torch.arange(slots.numel(), device=slots.device)
    out = {"blocks": 0, "differing_blocks": 0, "scale_byte_diffs": 0, "code_diff_blocks": 0, "stray_blocks": 0,
           "max_scale_step": 0, "max_code_step": 0, "sign_only_code_diffs": 0,
           "verdicts": {}, "decided": 0, "reproducer": None}
    best = None
    for which in ("k", "v"):
        sf_g, c_g = _block_view(gpu, which)
        sf_r, c_r = _block_view(ref, which)
        sdiff = sf_g != sf_r
        cdiff = (c_g != c_r).any(-1)
        out["stray_blocks"] += int((sdiff | cdiff)[~written].sum())
        sf_g, c_g, sf_r, c_r = sf_g[written], c_g[written], sf_r[written], c_r[written]
        sdiff, cdiff = sdiff[written], cdiff[written]
        out["blocks"] += sdiff.numel()
        out["differing_blocks"] += int((sdiff | cdiff).sum())
        out["scale_byte_diffs"] += int(sdiff.sum())
        out["code_diff_blocks"] += int(cdiff.sum())
        if sdiff.any():
            step = (sf_g.int() - sf_r.int()).abs()[sdiff]
            out["max_scale_step"] = max(out["max_scale_step"], int(step.max()))
        if cdiff.any():
            same_sign = (c_g & 8) == (c_r & 8)
            mag_step = ((c_g & 7).int() - (c_r & 7).int()).abs()
            out["max_code_step"] = max(out["max_code_step"], int(mag_step.max()))
            out["sign_only_code_diffs"] += int(((~same_sign) & (mag_step == 0)).sum())
        bad = (sdiff | cdiff).nonzero()
        if not bad.numel():
            continue
        ws = written.nonzero().flatten()
        x = inputs[which]
        ncode = (c_g != c_r).sum(-1)
        order = torch.argsort(ncode[bad[:, 0], bad[:, 1], bad[:, 2]], stable=True)
        for j in order[: max(0, n_decide - out["decided"])].tolist():
            r, h, blk = bad[j].tolist()
            slot = int(ws[r])
            tok = int(token_of_slot[slot])
            xs = x[tok, h, blk * 16:(blk + 1) * 16].tolist()
            gb = (int(sf_g[r, h, blk]), c_g[r, h, blk].tolist())
            rb = (int(sf_r[r, h, blk]), c_r[r, h, blk].tolist())
            d = fx.decide(xs, g, gb, rb, variant)
            out["verdicts"][d["verdict"]] = out["verdicts"].get(d["verdict"], 0) + 1
            out["decided"] += 1
            if best is None:
                best = {"tensor": which, "slot": slot, "head": h, "block": blk, "variant": variant,
                        "inputs_f32_hex": [fx.f32_hex(v) for v in xs], "global_scale_f32_hex": fx.f32_hex(g),
                        "flashinfer": {"scale_byte": gb[0], "codes": gb[1]},
                        "oracle": {"scale_byte": rb[0], "codes": rb[1]},
                        "verdict": d["verdict"], "flashinfer_matches": d["gpu_matches"],
                        "oracle_matches": d["oracle_matches"]}
    out["reproducer"] = best
    return out


# -- FlashInfer's side (GPU) ------------------------------------------------------------------------
class FlashInferWriters:
    """Thin calls into the trimmed FlashInfer; each writes into a cache object's own tensors."""

    def __init__(self):
        import flashinfer.page as page
        from flashinfer.quantization import fp4_quantization as fq
        from flashinfer.quantization.nvfp4_quantization_utils import NVFP44Over6Config

        self.page, self.fq = page, fq
        self.fourover6 = NVFP44Over6Config(err_mode="MSE")

    def append(self, cache, k, v, table, batch, pos, g):
        kv_indptr, kv_indices, last = table
        self.page.nvfp4_quantize_append_paged_kv_cache(
            k, v, batch.int(), pos.int(), cache.paged_kv_cache(0), cache.kv_cache_sf(0), kv_indices.int(),
            kv_indptr.int(), last.int(), g, g, kv_layout=cache.kv_layout)

    def slots(self, cache, k, v, slot_mapping, g, fourover6=False):
        self.page.nvfp4_quantize_append_paged_kv_cache_with_slot_mapping(
            k, v, slot_mapping, cache.paged_kv_cache(0), cache.kv_cache_sf(0), g, g, kv_layout=cache.kv_layout,
            nvfp4_4over6=self.fourover6 if fourover6 else None)

    def mla(self, cache, ckv, kpe, table, batch, pos):
        kv_indptr, kv_indices, last = table
        self.page.nvfp4_quantize_append_paged_mla_kv_cache(
            ckv, kpe, batch.int(), pos.int(), cache.ckv_cache, cache.ckv_sf.view(torch.float8_e4m3fn),
            cache.kpe_cache.view(torch.float8_e4m3fn), kv_indices.int(), kv_indptr.int(), last.int(),
            float(cache.ckv_scale[0]), float(cache.kpe_scale[0]))

    def dequant(self, cache, tables, lens, out_k, out_v):
        dev = out_k.device
        self.fq.nvfp4_kv_dequantize_paged(
            cache.paged_kv_cache(0), cache.kv_cache_sf(0), tables, lens, cache.k_scales[:1].to(dev),
            cache.v_scales[:1].to(dev), out_k, out_v, kv_layout=cache.kv_layout)


# -- FlashInfer's writer with its compiled instructions, as a tensor model ---------------------------
def ftz(t: torch.Tensor) -> torch.Tensor:
    """Flush `float32` subnormals to zero of the same sign (what `.ftz` instructions do)."""
    return torch.where(t.abs() < F32_TINY, t * 0.0, t)


def ieee_div(a, b):
    return a / b


def ieee_rcp(x):
    return 1.0 / x


def approx_instructions():
    """`(div, rcp)`: the GPU's `div.full.ftz.f32` and `rcp.approx.ftz.f32`, through Triton inline PTX."""
    import triton
    import triton.language as tl

    @triton.jit
    def _div(a_ptr, b_ptr, o_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        a = tl.load(a_ptr + i, mask=m)
        b = tl.load(b_ptr + i, mask=m, other=1.0)
        o = tl.inline_asm_elementwise("div.full.ftz.f32 $0, $1, $2;", "=f,f,f", [a, b], dtype=tl.float32,
                                      is_pure=True, pack=1)
        tl.store(o_ptr + i, o, mask=m)

    @triton.jit
    def _rcp(x_ptr, o_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        x = tl.load(x_ptr + i, mask=m, other=1.0)
        o = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                      is_pure=True, pack=1)
        tl.store(o_ptr + i, o, mask=m)

    def div(a, b):
        a, b = torch.broadcast_tensors(a.float(), b.float())
        a, b = a.contiguous(), b.contiguous()
        o = torch.empty_like(a)
        _div[(triton.cdiv(a.numel(), 1024),)](a, b, o, a.numel(), BLOCK=1024)
        return o

    def rcp(x):
        x = x.float().contiguous()
        o = torch.empty_like(x)
        _rcp[(triton.cdiv(x.numel(), 1024),)](x, o, x.numel(), BLOCK=1024)
        return o

    return div, rcp


def writer_model(x: torch.Tensor, g: float, div=ieee_div, rcp=ieee_rcp, flush=False):
    """FlashInfer's paged writer (`nvfp4_append_quantize_block`, standard recipe) on blocks
    `x [..., 16]` (`float32` values of the inputs): `(scale bytes, codes)`.

    With `div=ieee_div, rcp=ieee_rcp, flush=False` it is the IEEE reading of the source (equal to
    `flashinfer_exact.flashinfer_block`, tested); with the GPU's instructions
    (`approx_instructions()`) and `flush=True` it is the arithmetic `-use_fast_math` compiles to,
    assuming the instructions the PTX census lists.
    """
    from nvfp4_kvcache.formats import E2M1
    from nvfp4_kvcache.rounding import Rounding

    f = ftz if flush else (lambda t: t)
    gt = torch.tensor(g, dtype=torch.float32, device=x.device)
    v = f(x)
    amax = torch.where(torch.isnan(v), 0.0, v).abs().amax(-1)          # fmaxf drops NaN
    six_g = f(6.0 * gt)
    s = torch.where(amax > 0, f(div(amax, six_g.expand_as(amax))), torch.zeros_like(amax))
    b = E4M3.encode_magnitude(s, Rounding.NEAREST_EVEN)                 # satfinite RNE; s >= 0, not NaN
    sf = E4M3.decode_tensor(b)
    prod = f(sf * gt)
    r = torch.where((amax > 0) & (sf > 0), f(rcp(prod)), torch.zeros_like(sf))
    y = f(v * r[..., None])
    mag = E2M1.encode_magnitude(torch.where(torch.isnan(y), 0.0, y.abs()), Rounding.NEAREST_EVEN)
    return b, torch.where(torch.signbit(x), E2M1.sign_bit, 0).to(torch.uint8) | mag


def model_agreement(gpu: FlashInferNVFP4KVCache, slots: torch.Tensor, inputs: dict, g: float, div, rcp) -> dict:
    """Blocks where FlashInfer's bytes differ from `writer_model` with the given instructions."""
    from nvfp4_kvcache.packing import unpack_nibbles as _unpack

    out = {"blocks": 0, "mismatch_blocks": 0}
    for which in ("k", "v"):
        sf_g, c_g = _block_view(gpu, which)
        b, codes = writer_model(inputs[which].reshape(-1, HEADS, BLOCKS_PER_ROW, 16), g, div, rcp, flush=True)
        sf_g, c_g = sf_g[slots], c_g[slots]
        bad = (sf_g != b) | (c_g != codes).any(-1)
        out["blocks"] += bad.numel()
        out["mismatch_blocks"] += int(bad.sum())
    return out


class OracleWritersWithFaults:
    """The oracle standing in for FlashInfer, with two known faults per K/V write: one code of the
    first written row off by one, and one byte changed in a slot nobody writes. The selftest runs
    the whole comparison with these writers on the CPU: it must find exactly these faults, decide
    the first as "oracle right", and count the second as a stray write."""

    def __init__(self):
        self.faults = 0

    def _fault(self, cache: FlashInferNVFP4KVCache, written: torch.Tensor) -> None:
        t = cache.k_cache[0]
        rows = cache._rows(t)
        free = torch.ones(cache.slots, dtype=torch.bool)
        free[written.cpu()] = False
        for slot in (int(written[0]), int(free.nonzero()[0])):
            row = rows[slot].clone()
            row[0, 0] ^= 0x01
            cache._scatter(t, torch.tensor([slot], device=t.device), row[None])
        self.faults += 1

    def append(self, cache, k, v, table, batch, pos, g):
        kv_indptr, kv_indices, last = table
        cache.append(0, k, v, batch, pos, kv_indices, kv_indptr, last)
        self._fault(cache, append_slots(batch, pos, kv_indptr, kv_indices, last, PAGE))

    def slots(self, cache, k, v, slot_mapping, g, fourover6=False):
        if fourover6:
            keep = slot_mapping >= 0
            from nvfp4_kvcache.packing import pack_nibbles
            for which, x in (("k", k.float()), ("v", v.float())):
                b, codes = fourover6_ieee_model(x[: slot_mapping.numel()][keep].reshape(-1, HEADS, BLOCKS_PER_ROW, 16), g)
                cache._scatter(cache.k_sf[0] if which == "k" else cache.v_sf[0], slot_mapping[keep], b)
                cache._scatter(cache.k_cache[0] if which == "k" else cache.v_cache[0], slot_mapping[keep],
                               pack_nibbles(codes.reshape(-1, HEADS, DIM)))
            return
        cache.write_slots(0, k, v, slot_mapping)
        self._fault(cache, slot_mapping[slot_mapping >= 0])

    def mla(self, cache, ckv, kpe, table, batch, pos):
        kv_indptr, kv_indices, last = table
        cache.append(ckv, kpe, batch, pos, kv_indices, kv_indptr, last)

    def dequant(self, cache, tables, lens, out_k, out_v):
        cache.dequantize_paged(0, tables, lens, out_k, out_v)


def selftest(tokens: int = 48) -> dict:
    """Run every writer comparison on the CPU with `OracleWritersWithFaults`; return the results."""
    gen = torch.Generator().manual_seed(1)
    writers = OracleWritersWithFaults()
    out = {}
    for dname, dtype in DTYPES.items():
        cases = [c for c in make_cases(dtype, tokens, gen)
                 if c.name in ("random_g1", "e2m1_ties_g1", "nan_blocks", "zeros_and_negative_zeros")]
        out[dname] = {c.name: run_case(c, dtype, writers, torch.device("cpu"), gen, 4, None) for c in cases}
    return out


def fourover6_ieee_model(x: torch.Tensor, g: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashInfer's 4-over-6 writer formula in IEEE `float32` (element-order sums, no FMA), on
    blocks `x [..., 16]`: `(scale bytes, codes)`. A stand-in oracle until the recipe lands."""
    from nvfp4_kvcache.formats import E2M1
    from nvfp4_kvcache.rounding import Rounding

    gt = torch.tensor(g, dtype=torch.float32, device=x.device)
    finite = torch.where(torch.isnan(x), 0.0, x)
    amax = finite.abs().amax(-1)
    s = torch.where(amax > 0, amax / (6.0 * gt), torch.zeros_like(amax))
    e4 = lambda v: E4M3.encode_magnitude(torch.where(torch.isnan(v), 0.0, v), Rounding.NEAREST_EVEN)  # noqa: E731
    b6, b4 = e4(s), e4(s * 1.5)
    lut = torch.tensor(E2M1.magnitudes, dtype=torch.float32, device=x.device)

    def err(b):
        sf = E4M3.decode_tensor(b)
        scale = 1.0 / (sf * gt)
        total = torch.zeros_like(sf)
        for i in range(16):
            v = finite[..., i]
            y = v * scale
            lvl = E2M1.encode_magnitude(torch.where(torch.isnan(y), 0.0, y.abs()), Rounding.NEAREST_EVEN)
            diff = (lut[lvl.long()] * sf) * gt - v.abs()
            total = total + diff * diff
        return total

    b = torch.where(err(b4) < err(b6), b4, b6)
    sf = E4M3.decode_tensor(b)
    r = torch.where((sf > 0) & (amax > 0), 1.0 / (sf * gt), torch.zeros_like(sf))
    y = x * r.unsqueeze(-1)
    mag = E2M1.encode_magnitude(torch.where(torch.isnan(y), 0.0, y.abs()), Rounding.NEAREST_EVEN)
    return b, torch.where(torch.signbit(x), 8, 0).to(torch.uint8) | mag


# -- one case through every writer ------------------------------------------------------------------
def _page_table(tokens: int, num_pages: int, device, gen):
    """Two requests sharing the tokens, on shuffled pages; returns table, batch, positions, slots."""
    n0 = tokens // 3 + 1
    lens = [n0, tokens - n0]
    perm = torch.randperm(num_pages, generator=gen).to(device)
    pages_needed = [(n + PAGE - 1) // PAGE for n in lens]
    kv_indices = perm[: sum(pages_needed)]
    kv_indptr = torch.tensor([0, pages_needed[0], sum(pages_needed)], device=device)
    last = torch.tensor([n - (p - 1) * PAGE for n, p in zip(lens, pages_needed)], device=device)
    batch = torch.cat([torch.full((n,), b) for b, n in enumerate(lens)]).to(device)
    pos = torch.cat([torch.arange(n) for n in lens]).to(device)
    slots = append_slots(batch, pos, kv_indptr, kv_indices, last, PAGE, num_pages)
    return (kv_indptr, kv_indices, last), batch, pos, slots


def run_case(case: Case, dtype, writers, device, gen, n_decide: int, fourover6_oracle, instructions=None) -> dict:
    """One input class through every writer; `instructions` (`(div, rcp)`, GPU) adds the
    agreement of FlashInfer's bytes with `writer_model` on those instructions."""
    res = {}
    tokens = case.x.shape[0]
    num_pages = (tokens + PAGE - 1) // PAGE + 4
    k = case.x.to(device=device, dtype=dtype)
    v = (-case.x).to(device=device, dtype=dtype)
    inputs = {"k": k.float(), "v": v.float()}
    table, batch, pos, slots = _page_table(tokens, num_pages, device, gen)
    g = case.g

    for layout in ("NHD", "HND"):
        name = f"append_{layout}"
        try:
            fi_c, ref = _sentinel_cache(layout, num_pages, g, device), _sentinel_cache(layout, num_pages, g, device)
            writers.append(fi_c, k, v, table, batch, pos, g)
            ref.append(0, k, v, batch, pos, table[1], table[0], table[2])
            res[name] = compare_caches(fi_c, ref, slots, inputs, g, "standard", n_decide)
            if instructions is not None:
                res[name]["fastmath_model"] = model_agreement(fi_c, slots, inputs, g, *instructions)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            res[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        if layout == "NHD":
            dq = _dequant(case, writers, ref, table, device, slots)
            res["dequantize_paged"] = dq

    # slot mapping with padding rows and extra trailing rows
    pad = torch.full((tokens,), -1, dtype=torch.int64, device=device)
    keep = torch.rand(tokens, generator=gen).to(device) < 0.9
    sm = torch.where(keep, slots, pad)
    for name, four in (("slot_mapping_NHD", False), ("slot_mapping_4over6_NHD", True)):
        try:
            fi_c = _sentinel_cache("NHD", num_pages, g, device)
            writers.slots(fi_c, k, v, sm, g, fourover6=four)
            kept = slots[keep]
            if not four:
                ref = _sentinel_cache("NHD", num_pages, g, device)
                ref.write_slots(0, k, v, sm)
                variant = "standard"
            elif fourover6_oracle is not None:
                ref = FlashInferNVFP4KVCache(num_pages=num_pages, page_size=PAGE, layer_num=1, head_num=HEADS,
                                             head_dim=DIM, device=device, recipe=fourover6_oracle, k_scales=g, v_scales=g)
                for t in (ref.k_cache[0], ref.v_cache[0], ref.k_sf[0], ref.v_sf[0]):
                    t.fill_(SENTINEL)
                ref.write_slots(0, k, v, sm)
                variant = "4over6"
            else:
                ref = _sentinel_cache("NHD", num_pages, g, device)
                for which, x in (("k", inputs["k"]), ("v", inputs["v"])):
                    b, codes = fourover6_ieee_model(x[keep].reshape(-1, HEADS, BLOCKS_PER_ROW, 16), g)
                    from nvfp4_kvcache.packing import pack_nibbles
                    ref._scatter(ref.k_sf[0] if which == "k" else ref.v_sf[0], kept, b)
                    ref._scatter(ref.k_cache[0] if which == "k" else ref.v_cache[0], kept,
                                 pack_nibbles(codes.reshape(-1, HEADS, DIM)))
                variant = "4over6"
            r = compare_caches(fi_c, ref, kept, {w: t[keep] for w, t in inputs.items()}, g, variant, n_decide)
            r["reference"] = ("oracle recipe nvfp4_4over6" if four and fourover6_oracle is not None
                              else "float32 model of FlashInfer's 4-over-6 formula" if four else "oracle")
            res[name] = r
        except Exception as exc:  # noqa: BLE001
            res[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}

    res["mla"] = _mla(case, dtype, writers, device, gen, n_decide)
    return res


def _dequant(case, writers, ref, table, device, slots) -> dict:
    """FlashInfer's paged dequantize of the oracle's bytes vs the oracle's, NaN-prefilled outputs."""
    try:
        kv_indptr, kv_indices, last = table
        nreq = kv_indptr.numel() - 1
        max_pages = int((kv_indptr[1:] - kv_indptr[:-1]).max())
        tables = torch.zeros(nreq, max_pages, dtype=torch.int32, device=device)
        for b in range(nreq):
            p = kv_indices[kv_indptr[b]:kv_indptr[b + 1]]
            tables[b, : p.numel()] = p.int()
        lens = ((kv_indptr[1:] - kv_indptr[:-1] - 1) * PAGE + last).int()
        out = {}
        for dname, dt in DTYPES.items():
            shape = (nreq, int(lens.max()) + 3, HEADS, DIM)
            fk, fv = torch.full(shape, math.nan, dtype=dt, device=device), torch.full(shape, math.nan, dtype=dt, device=device)
            rk, rv = fk.clone(), fv.clone()
            writers.dequant(ref, tables, lens, fk, fv)
            ref.dequantize_paged(0, tables, lens, rk, rv)
            same = lambda a, b: (a.view(torch.int16) == b.view(torch.int16))  # noqa: E731 - NaN-safe bits
            diff = ~(same(fk, rk) & same(fv, rv))
            out[dname] = {"values": int(fk.numel() * 2), "differ": int(diff.sum())}
            if diff.any():
                b, t, h, d = diff.nonzero()[0].tolist()
                out[dname]["first"] = {"request": b, "position": t, "head": h, "dim": d,
                                       "flashinfer": float(fk[b, t, h, d]), "oracle": float(rk[b, t, h, d])}
        return out
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}


def _mla(case, dtype, writers, device, gen, n_decide) -> dict:
    """MLA writer: rows of 512 (the case's first 4 heads) + 64 rope values (head 4, first half)."""
    try:
        x = case.x
        ckv = x[:, :4, :].reshape(x.shape[0], 512)
        kpe = x[:, 4, :64]
        tokens = x.shape[0]
        num_pages = (tokens + PAGE - 1) // PAGE + 4
        table, batch, pos, slots = _page_table(tokens, num_pages, device, gen)
        g = case.g
        kpe_scale = float(torch.tensor(max(float(kpe.abs().nan_to_num(0, 0, 0).amax()) / 448.0, F32_TINY * 4),
                                       dtype=torch.float32))
        mk = lambda: FlashInferNVFP4MLACache(num_pages=num_pages, page_size=PAGE, ckv_scale=g,  # noqa: E731
                                             kpe_scale=kpe_scale, device=device)
        fi_c, ref = mk(), mk()
        for c in (fi_c, ref):
            for t in (c.ckv_cache, c.ckv_sf, c.kpe_cache):
                t.fill_(SENTINEL)
        a = ckv.to(device=device, dtype=dtype).contiguous()
        b = kpe.to(device=device, dtype=dtype).contiguous()
        writers.mla(fi_c, a, b, table, batch, pos)
        ref.append(a, b, batch, pos, table[1], table[0], table[2])
        page, entry = slots // PAGE, slots % PAGE
        written = torch.zeros(num_pages, PAGE, dtype=torch.bool, device=device)
        written[page, entry] = True
        stray = sum(int((u != w)[~written].any(-1).sum()) for u, w in
                    ((fi_c.ckv_cache, ref.ckv_cache), (fi_c.ckv_sf, ref.ckv_sf), (fi_c.kpe_cache, ref.kpe_cache)))
        sf_g, sf_r = fi_c.ckv_sf[page, entry], ref.ckv_sf[page, entry]
        c_g = unpack_nibbles(fi_c.ckv_cache[page, entry]).reshape(tokens, 32, 16)
        c_r = unpack_nibbles(ref.ckv_cache[page, entry]).reshape(tokens, 32, 16)
        bad = ((sf_g != sf_r) | (c_g != c_r).any(-1)).nonzero()
        verdicts, rep = {}, None
        af = a.float()
        for t, blk in bad[:n_decide].tolist():
            xs = af[t, blk * 16:(blk + 1) * 16].tolist()
            d = fx.decide(xs, g, (int(sf_g[t, blk]), c_g[t, blk].tolist()), (int(sf_r[t, blk]), c_r[t, blk].tolist()), "mla")
            verdicts[d["verdict"]] = verdicts.get(d["verdict"], 0) + 1
            if rep is None:
                rep = {"token": t, "block": blk, "variant": "mla", "inputs_f32_hex": [fx.f32_hex(v) for v in xs],
                       "global_scale_f32_hex": fx.f32_hex(g), "flashinfer": {"scale_byte": int(sf_g[t, blk]),
                       "codes": c_g[t, blk].tolist()}, "oracle": {"scale_byte": int(sf_r[t, blk]),
                       "codes": c_r[t, blk].tolist()}, "verdict": d["verdict"]}
        kg, kr = fi_c.kpe_cache[page, entry], ref.kpe_cache[page, entry]
        kbad = (kg != kr).nonzero()
        kverd = {}
        bf = b.float()
        for t, j in kbad[:n_decide].tolist():
            m = fx.fp8_models(float(bf[t, j]), kpe_scale)
            key = ("flashinfer right" if m["exact"] == int(kg[t, j]) else
                   "oracle right" if m["exact"] == int(kr[t, j]) else "neither right")
            kverd[key] = kverd.get(key, 0) + 1
        return {"ckv_blocks": int(sf_g.numel()), "ckv_scale_byte_diffs": int((sf_g != sf_r).sum()),
                "ckv_code_diff_blocks": int((c_g != c_r).any(-1).sum()), "ckv_verdicts": verdicts,
                "ckv_reproducer": rep, "kpe_bytes": int(kg.numel()), "kpe_diffs": int(kbad.shape[0]),
                "kpe_verdicts": kverd, "kpe_scale": kpe_scale, "stray_rows": stray}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}


# -- evidence from the compiled module -------------------------------------------------------------
PTX_OPS = ("div.full.ftz.f32", "div.full.f32", "div.rn.f32", "div.rn.ftz.f32", "div.approx.ftz.f32",
           "rcp.approx.ftz.f32", "rcp.approx.f32", "rcp.rn.f32", "rcp.rn.ftz.f32", "max.ftz.f32", "max.f32",
           "fma.rn.ftz.f32", "mul.ftz.f32", "mul.rn.ftz.f32", "cvt.rn.satfinite.e4m3x2.f32")


def census_ptx_text(text: str, marker: str = "NVFP4") -> dict:
    """Per kernel whose name contains `marker`: how many of each `PTX_OPS` instruction it holds
    (a kernel's text runs from its `.entry` to the next one; device functions are inlined)."""
    kernels = {}
    starts = list(re.finditer(r"\.entry\s+(\S+)\s*\(", text))
    for m, nxt in zip(starts, starts[1:] + [None]):
        name, body = m.group(1), text[m.start(): nxt.start() if nxt else len(text)]
        if marker not in name:
            continue
        counts = {op: len(re.findall(r"\b" + re.escape(op) + r"\s", body)) for op in PTX_OPS}
        kernels[re.sub(r"^_Z\w*?\d+(?=[A-Z])", "", name)[:90]] = {op: n for op, n in counts.items() if n}
    return kernels


def ptx_census(spec) -> dict:
    """Translate the page module's `page.cu` to PTX with the module's own nvcc flags and count the
    arithmetic instructions in each NVFP4 writer kernel (no GPU binary is produced)."""
    try:
        cmds = subprocess.run(["ninja", "-f", str(spec.ninja_path), "-t", "commands"], capture_output=True,
                              text=True, check=True, cwd=str(spec.build_dir)).stdout.splitlines()
        cmd = next(c for c in cmds if "csrc/page.cu" in c and "nvcc" in c)
        cmd = re.sub(r"--generate-dependencies-with-compile -MF \S+", "", cmd)
        ptx = Path(spec.build_dir) / "page_census.ptx"
        cmd = re.sub(r" -c (\S+) -o \S+", rf" -ptx \1 -o {ptx}", cmd)
        cmd = re.sub(r"-gencode=arch=compute_(\w+),code=sm_\w+", r"-arch=compute_\1", cmd)
        t0 = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True)
        kernels = census_ptx_text(ptx.read_text())
        return {"seconds": round(time.perf_counter() - t0, 1), "command_flags": " ".join(
            f for f in cmd.split() if f.startswith(("-use_fast_math", "-O", "-arch", "--use_fast_math", "-ftz"))),
            "kernels": kernels}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}


# -- driver -----------------------------------------------------------------------------------------
def without_out(args: list[str]) -> list[str]:
    """The command line minus `--out PATH` and `--compile-record PATH` (where files go is not part of a result)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--out", "--compile-record"):
            skip = True
        elif not a.startswith(("--out=", "--compile-record=")):
            out.append(a)
    return out


def run_record(script: str, argv) -> dict:
    """Device, versions, date and the command that reproduces a result."""
    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})",
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(script, without_out(argv)),
    }


def summarize(results: dict) -> dict:
    """Totals per writer: blocks, differing blocks, verdict counts, stray bytes."""
    tot = {}
    for dname, cases in results.items():
        for cname, writers in cases.items():
            for wname, r in writers.items():
                if not isinstance(r, dict) or "blocks" not in r:
                    continue
                t = tot.setdefault(wname, {"blocks": 0, "differing_blocks": 0, "stray_blocks": 0, "verdicts": {},
                                           "classes_with_differences": []})
                t["blocks"] += r["blocks"]
                nd = r["differing_blocks"]
                t["differing_blocks"] += nd
                t["stray_blocks"] += r["stray_blocks"]
                for k, n in r["verdicts"].items():
                    t["verdicts"][k] = t["verdicts"].get(k, 0) + n
                if nd:
                    t["classes_with_differences"].append(f"{dname}/{cname}")
    return tot


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "data" / "peers" / "flashinfer.json"))
    ap.add_argument("--quick", action="store_true", help="small random classes (1024 tokens)")
    ap.add_argument("--tokens", type=int, default=None, help="tokens of the random classes (default 16384)")
    ap.add_argument("--decide", type=int, default=64, help="differing blocks decided exactly per writer and class")
    ap.add_argument("--compile-record", default=None, help="JSON written by the prebuild step, copied into the result")
    ap.add_argument("--selftest", action="store_true", help="CPU: the oracle with injected faults stands in for FlashInfer")
    args = ap.parse_args(argv)
    if args.selftest:
        res = selftest()
        log(json.dumps(summarize(res), indent=1))
        return 0
    t0 = time.time()
    tokens = args.tokens or (1024 if args.quick else 16384)
    import flashinfer_env

    env = flashinfer_env.activate()
    log(f"[conformance] flashinfer {env['flashinfer']} from the trimmed bundle; tokens {tokens}")
    dev = torch.device("cuda")
    writers = FlashInferWriters()
    from flashinfer.jit.page import gen_page_module

    res = run_record("flashinfer_conformance.py", argv)
    res["flashinfer"] = env
    res["layout"] = {"heads": HEADS, "head_dim": DIM, "page_size": PAGE, "sentinel_byte": SENTINEL}
    if args.compile_record and Path(args.compile_record).is_file():
        res["compile"] = json.loads(Path(args.compile_record).read_text())
    res["ptx_census"] = ptx_census(gen_page_module(False))
    log(f"[conformance] PTX census: {json.dumps(res['ptx_census'])[:600]}")
    fourover6 = RECIPES.get("nvfp4_4over6")      # the oracle recipe, once it is registered
    res["fourover6_reference"] = "oracle recipe nvfp4_4over6" if fourover6 else "float32 model of FlashInfer's formula"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res["results"] = {}
    try:
        instructions = approx_instructions()
        instructions[0](torch.ones(4, device=dev), torch.full((4,), 3.0, device=dev))
        res["fastmath_model"] = "writer_model with div.full.ftz.f32 and rcp.approx.ftz.f32 (Triton inline PTX), flush to zero"
    except Exception as exc:  # noqa: BLE001
        instructions = None
        res["fastmath_model"] = f"unavailable: {type(exc).__name__}: {exc}"[:500]
    for dname, dtype in DTYPES.items():
        gen = torch.Generator().manual_seed(2026)
        res["results"][dname] = {}
        for case in make_cases(dtype, tokens, gen):
            t1 = time.time()
            try:
                r = run_case(case, dtype, writers, dev, gen, args.decide, fourover6, instructions)
            except Exception:  # noqa: BLE001
                r = {"error": traceback.format_exc()[-2000:]}
            r["why"], r["global_scale"], r["tokens"] = case.why, case.g, case.x.shape[0]
            res["results"][dname][case.name] = r
            nd = {w: v.get("differing_blocks", "error") for w, v in r.items()
                  if isinstance(v, dict) and ("blocks" in v or "error" in v)}
            log(f"[conformance] {dname:<8} {case.name:<30} differing blocks {nd}  ({time.time() - t1:.1f} s)")
            res["summary"], res["elapsed_s"] = summarize(res["results"]), round(time.time() - t0, 1)
            out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    log(f"[conformance] summary {json.dumps(res['summary'], indent=1)}")
    log(f"[conformance] wrote {out} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
