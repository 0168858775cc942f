"""MLA decode attention over an FP4 latent pool (`nvfp4_kvcache_triton.mla_decode_attention`) against the
float64 oracle (`nvfp4_kvcache.attention.mla_decode_attention`).

* default run (`TRITON_INTERPRET=1`): small shapes and DeepSeek-V3's 512 + 64 on a few hundred
  tokens, both recipes, pages 1 and 16, head groups with masked heads, splits, errors;
* the other decoders (`cvt_f16` for nvfp4) and the BF16 latent baseline
  (`mla_decode_attention_dense`), the same kernel design;
* the stage-1 launch options (`block_h`, `v_parts`, `tokens_as_m`, `split_scores`) against the oracle, and their
  refusal of values outside `MLA_LAUNCH_CHOICES`; stage 2 in column chunks;
* the stage-1 kernel compiles for `sm_90` (subprocess, no interpreter), every decoder and the baseline;
* `scripts/bench_mla_decode_attention.py --smoke` runs;
* `-m gpu`: full size on a GPU.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nvfp4_kvcache_triton.decode_attention import attention_close, attention_tolerance
from nvfp4_kvcache_triton.mla_decode_attention import (
    MLA_LAUNCH_CHOICES,
    mla_decode_attention_dense,
    mla_decode_attention_fp4,
    stage2_block_d,
)
from nvfp4_kvcache.attention import mla_decode_attention, ragged_attention
from nvfp4_kvcache.pool import MLATokenToKVPoolFP4

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"


def _case(recipe, dl, dr, heads, page, lens, gen, g=0.37, device="cpu"):
    """A pool with random latents in whole pages of random order, queries, and the oracle's inputs."""
    size = page * (sum(math.ceil(n / page) for n in lens) + 2)
    kw = {"kv_scales": [g]} if recipe == "nvfp4" else {}
    pool = MLATokenToKVPoolFP4(size=size, page_size=page, layer_num=1, kv_lora_rank=dl, qk_rope_head_dim=dr,
                               recipe=recipe, device=device, **kw)
    mag = torch.exp2(torch.randint(-3, 4, (size, 1, (dl + dr) // 16, 1), generator=gen).float())
    lat = (torch.randn(size, 1, (dl + dr) // 16, 16, generator=gen) * mag).reshape(size, 1, dl + dr)
    pool.set_kv_buffer(0, torch.arange(page, size + page), (lat * (g * 6 if recipe == "nvfp4" else 1)).to(device))
    pages = torch.randperm(size // page, generator=gen) + 1
    idx, p = [], 0
    for n in lens:
        k = math.ceil(n / page)
        idx.append((pages[p:p + k, None] * page + torch.arange(page)).reshape(-1)[:n])
        p += k
    indptr = torch.zeros(len(lens) + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.tensor(lens), 0)
    qn = torch.randn(len(lens), heads, dl, generator=gen)
    qr = torch.randn(len(lens), heads, dr, generator=gen)
    return pool, qn, qr, indptr, torch.cat(idx)


def _check(pool, qn, qr, indptr, idx, sm_scale, out, gpu=False):
    cpu = pool if pool.device.type == "cpu" else None
    ref = mla_decode_attention(qn.float().cpu(), qr.float().cpu(), cpu, 0, indptr.cpu(), idx.cpu(), sm_scale=sm_scale)
    kv = cpu.gather_kv(0, idx.cpu(), dtype=torch.float64)[:, 0]
    dl = pool.kv_lora_rank
    tol = attention_tolerance(torch.cat([qn, qr], -1).float().cpu(), kv, kv[:, :dl], sm_scale,
                              int((indptr[1:] - indptr[:-1]).max()), gpu=gpu)
    ok, err, rel = attention_close(out.cpu(), ref, tol, gpu=gpu)
    assert ok, f"max abs {err} (bound {tol}), relative rms {rel}"


@pytest.mark.parametrize("recipe", ["fp4_mx_block16", "nvfp4"])
@pytest.mark.parametrize("dl,dr,heads,page", [(64, 32, 16, 1), (128, 32, 20, 16), (512, 64, 16, 16)],
                         ids=["64+32-page1", "128+32-20heads", "deepseek-512+64"])
def test_matches_oracle(recipe, dl, dr, heads, page):
    gen = torch.Generator().manual_seed(dl + heads)
    lens = [1, 37, 100] if dl < 512 else [1, 70]
    pool, qn, qr, indptr, idx = _case(recipe, dl, dr, heads, page, lens, gen)
    out = mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=1 / math.sqrt(192), num_kv_splits=3,
                                   page_size=page)
    assert out.shape == (len(lens), heads, dl) and out.dtype == torch.float32
    _check(pool, qn, qr, indptr, idx, 1 / math.sqrt(192), out)


@pytest.mark.parametrize("dl,dr,heads,page", [(64, 32, 20, 16), (512, 64, 16, 1)], ids=["64+32-20heads", "deepseek"])
def test_cvt_f16_decoder_matches_oracle(dl, dr, heads, page):
    """nvfp4 through the E4M3 placement and fp16 dots (under the interpreter its pure-Triton twin)."""
    gen = torch.Generator().manual_seed(dl + 1)
    lens = [1, 37, 100] if dl < 512 else [1, 70]
    pool, qn, qr, indptr, idx = _case("nvfp4", dl, dr, heads, page, lens, gen)
    out = mla_decode_attention_fp4(qn * 30, qr * 30, pool, 0, indptr, idx, sm_scale=1 / math.sqrt(192) / 30,
                                   num_kv_splits=3, page_size=page, decode="cvt_f16")
    _check(pool, qn * 30, qr * 30, indptr, idx, 1 / math.sqrt(192) / 30, out)


LAUNCH_FORMS = [dict(v_parts=2), dict(v_parts=2, split_scores=True), dict(tokens_as_m=True, split_scores=True),
                dict(block_h=32, v_parts=2, tokens_as_m=True)]
LAUNCH_IDS = ["v_parts2", "v_parts2-split", "tokens_as_m-split", "block_h32-v2-tm"]


@pytest.mark.parametrize("launch", LAUNCH_FORMS, ids=LAUNCH_IDS)
@pytest.mark.parametrize("recipe,decode", [("nvfp4", "cvt_f16"), ("fp4_mx_block16", "placement")])
def test_launch_options_match_oracle(recipe, decode, launch):
    """Each launch form against the oracle, 20 heads (a masked head group), pages of 16, 3 splits."""
    gen = torch.Generator().manual_seed(21)
    pool, qn, qr, indptr, idx = _case(recipe, 64, 32, 20, 16, [1, 37, 50], gen)
    out = mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=0.1, num_kv_splits=3, page_size=16,
                                   decode=decode, **launch)
    _check(pool, qn, qr, indptr, idx, 0.1, out)


@pytest.mark.parametrize("launch", LAUNCH_FORMS, ids=LAUNCH_IDS)
def test_launch_options_bf16_baseline(launch):
    """The BF16 latent baseline under each launch form equals its default launch (float32 dots
    under the interpreter: the same values up to the summation order)."""
    gen = torch.Generator().manual_seed(22)
    kv = torch.randn(80, 1, 96, generator=gen).bfloat16()
    qn, qr = torch.randn(2, 20, 64, generator=gen), torch.randn(2, 20, 32, generator=gen)
    ip, ix = torch.tensor([0, 9, 60]), torch.randperm(79, generator=gen)[:60] + 1
    kw = dict(kv_lora_rank=64, sm_scale=0.1, num_kv_splits=2)
    ref = mla_decode_attention_dense(qn, qr, kv, ip, ix, **kw)
    out = mla_decode_attention_dense(qn, qr, kv, ip, ix, **kw, **launch)
    assert (out - ref).abs().max() < 1e-5


def test_v_parts_halves_land_in_their_columns():
    """`v_parts=2`: with one token per request (weight 1) each program writes exactly its half of
    the latent row, in the columns stage 2 puts back in order."""
    gen = torch.Generator().manual_seed(23)
    pool, qn, qr, _, idx = _case("nvfp4", 64, 32, 16, 1, [1, 1], gen)
    out = mla_decode_attention_fp4(qn, qr, pool, 0, torch.arange(3), idx, sm_scale=0.3, v_parts=2)
    c = pool.gather_kv(0, idx, dtype=torch.float32)[:, :, :64]
    assert torch.equal(out, c.expand(-1, 16, -1))


def test_launch_option_refusals():
    """Values outside `MLA_LAUNCH_CHOICES` (and a part narrower than 32 columns) are refused."""
    gen = torch.Generator().manual_seed(24)
    pool, qn, qr, indptr, idx = _case("fp4_mx_block16", 64, 32, 16, 1, [3], gen)
    for key, bad in (("block_h", 8), ("block_h", 24), ("v_parts", 3), ("v_parts", True), ("tokens_as_m", 2),
                     ("block_n", 48), ("num_warps", 3), ("num_stages", 0), ("block_h", 16.0),
                     ("split_scores", "yes")):
        with pytest.raises(ValueError, match=f"{key} must be one of"):
            mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=0.1, **{key: bad})
    assert set(MLA_LAUNCH_CHOICES) == {"block_n", "num_warps", "num_stages", "block_h", "v_parts", "tokens_as_m",
                                       "split_scores"}
    small = MLATokenToKVPoolFP4(size=16, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=32)
    with pytest.raises(ValueError, match="at least 32"):
        mla_decode_attention_fp4(torch.randn(1, 16, 32), torch.randn(1, 16, 32), small, 0, torch.tensor([0, 1]),
                                 torch.tensor([1]), sm_scale=1.0, v_parts=2)


def test_stage2_column_chunks():
    """Stage 2 cut into column chunks (many splits) gives the same output as one program per head."""
    assert [stage2_block_d(512, s) for s in (8, 16, 32, 64, 128)] == [512, 256, 128, 64, 32]
    assert stage2_block_d(32, 1000) == 32
    gen = torch.Generator().manual_seed(25)
    pool, qn, qr, indptr, idx = _case("fp4_mx_block16", 64, 32, 16, 16, [90], gen)
    many = mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=0.1, num_kv_splits=90, page_size=16)
    assert stage2_block_d(64, 90) == 32      # two column chunks per head
    _check(pool, qn, qr, indptr, idx, 0.1, many)


def test_decoder_argument():
    gen = torch.Generator().manual_seed(1)
    pool, qn, qr, indptr, idx = _case("fp4_mx_block16", 64, 32, 16, 1, [3], gen)
    with pytest.raises(ValueError, match="cvt_f16"):
        mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=0.1, decode="cvt_f16")
    with pytest.raises(ValueError, match="decode must be one of"):
        mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=0.1, decode="prmt")
    if os.environ.get("TRITON_INTERPRET") == "1":
        with pytest.raises(ValueError, match="inline PTX"):
            mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=0.1, decode="prmt_bf16")


@pytest.mark.parametrize("dl,dr,heads,page", [(64, 32, 20, 16), (512, 64, 16, 1)], ids=["64+32-20heads", "deepseek"])
def test_bf16_latent_baseline_matches_float64(dl, dr, heads, page):
    """The same kernel over a BF16 latent cache `[slots, 1, dl + dr]`: float64 attention on its values."""
    gen = torch.Generator().manual_seed(dl + 2)
    lens = [1, 37, 100]
    rows = page * (sum(math.ceil(n / page) for n in lens) + 2)
    kv = torch.randn(rows, 1, dl + dr, generator=gen).bfloat16()
    indptr = torch.tensor([0, 1, 38, 138])
    pages, p, idx = torch.randperm(rows // page - 1, generator=gen) + 1, 0, []
    for n in lens:  # whole pages in random order (page 0 is padding)
        k = math.ceil(n / page)
        idx.append((pages[p : p + k, None] * page + torch.arange(page)).reshape(-1)[:n])
        p += k
    idx = torch.cat(idx)
    qn, qr = torch.randn(3, heads, dl, generator=gen), torch.randn(3, heads, dr, generator=gen)
    out = mla_decode_attention_dense(qn, qr, kv, indptr, idx, kv_lora_rank=dl, sm_scale=0.07, num_kv_splits=4,
                                     page_size=page)
    k = kv[idx].double()
    q = torch.cat([qn, qr], -1)
    ref = ragged_attention(q, k, k[..., :dl], torch.arange(4), indptr, sm_scale=0.07, causal=False)
    tol = attention_tolerance(q, k[:, 0], k[:, 0, :dl], 0.07, 100, gpu=False)
    assert out.shape == (3, heads, dl) and float((out.double() - ref).abs().max()) <= tol
    assert torch.equal(out, mla_decode_attention_dense(qn, qr, kv[:, 0], indptr, idx, kv_lora_rank=dl, sm_scale=0.07,
                                                       num_kv_splits=4, page_size=page))


def test_bf16_latent_baseline_bad_arguments():
    kv = torch.zeros(20, 1, 96).bfloat16()
    qn, qr, ip, ix = torch.randn(1, 16, 64), torch.randn(1, 16, 32), torch.tensor([0, 2]), torch.tensor([1, 2])
    for bad, match in ((kv.float(), "bfloat16"), (torch.zeros(20, 2, 96).bfloat16(), "one head"),
                       (torch.zeros(20, 1, 192).bfloat16()[..., ::2], "contiguous rows"),
                       (torch.zeros(20, 1, 97).bfloat16()[..., 1:], "multiple of its row length")):
        with pytest.raises(ValueError, match=match):
            mla_decode_attention_dense(qn, qr, bad, ip, ix, kv_lora_rank=64, sm_scale=0.1)
    with pytest.raises(ValueError, match="q_nope"):
        mla_decode_attention_dense(qn, qr, kv, ip, ix, kv_lora_rank=32, sm_scale=0.1)
    with pytest.raises(TypeError):
        mla_decode_attention_dense(qn, qr, kv.tolist(), ip, ix, kv_lora_rank=64, sm_scale=0.1)


def test_bench_script_smoke(tmp_path):
    """`scripts/bench_mla_decode_attention.py --smoke`: every stage at toy sizes; every variant
    passes the oracle check; summaries per recipe against the BF16 latent baseline."""
    import json

    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_mla_decode_attention.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["completed_stage"] == "done" and set(data["shapes"]) == {"16", "128"}
    for sh in data["shapes"].values():
        assert all(c["ok"] for c in sh["correctness"]) and not sh["dropped_variants"]
        assert set(sh["summary"]) == {"nvfp4", "fp4_mx_block16"}
        bf16 = next(r for r in sh["rows"] if r["format"] == "bf16")
        assert any(t.get("v_parts") == 2 and t.get("tokens_as_m") and t.get("split_scores") and "ms" in t
                   for t in bf16["tried"])
        assert sh["sglang_triton_mla_bf16"]["ran"] and sh["sglang_triton_mla_bf16"]["max_abs_diff_vs_our_bf16"] < 1e-4


def test_splits_and_bf16_output():
    gen = torch.Generator().manual_seed(5)
    pool, qn, qr, indptr, idx = _case("fp4_mx_block16", 64, 32, 16, 16, [33, 90], gen)
    outs = [mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=0.1, num_kv_splits=s, page_size=16)
            for s in (1, 2, 7)]
    assert all((o - outs[0]).abs().max() < 1e-5 for o in outs)
    half = mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=0.1, num_kv_splits=1, page_size=16,
                                    out_dtype=torch.bfloat16)
    # within one bf16 step (the interpreter truncates where the GPU rounds to nearest)
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), outs[0], rtol=2**-7, atol=0)


def test_no_heads_or_no_requests():
    gen = torch.Generator().manual_seed(6)
    pool, qn, qr, indptr, idx = _case("fp4_mx_block16", 64, 32, 16, 1, [3], gen)
    assert mla_decode_attention_fp4(qn[:, :0], qr[:, :0], pool, 0, indptr, idx, sm_scale=1.0).shape == (1, 0, 64)
    with pytest.raises(ValueError, match="B \\+ 1 >= 2"):   # as the MHA kernel and the oracle: at least one request
        mla_decode_attention_fp4(qn[:0], qr[:0], pool, 0, torch.tensor([0]), idx[:0], sm_scale=1.0)


def test_global_scale_folds_into_scores_and_output():
    """nvfp4: the same bytes under a global scale twice as large give scores x2 (softmax scale /2
    undoes it) and outputs x2."""
    gen = torch.Generator().manual_seed(9)
    pool, qn, qr, indptr, idx = _case("nvfp4", 64, 32, 16, 1, [40], gen, g=0.5)
    base = mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=0.2)
    pool.kv_scales[0] = 1.0
    twice = mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=0.1)
    assert torch.equal(twice, base * 2)


def test_one_token_requests_return_the_latent_rows_exactly():
    gen = torch.Generator().manual_seed(2)
    pool, qn, qr, _, idx = _case("nvfp4", 64, 32, 16, 1, [1, 1, 1], gen)
    out = mla_decode_attention_fp4(qn, qr, pool, 0, torch.arange(4), idx, sm_scale=0.3)
    c = pool.gather_kv(0, idx, dtype=torch.float32)[:, :, :64]
    assert torch.equal(out, c.expand(-1, 16, -1))


def test_bad_inputs():
    gen = torch.Generator().manual_seed(4)
    pool, qn, qr, indptr, idx = _case("fp4_mx_block16", 64, 32, 16, 1, [3, 4], gen)
    cases = {
        "pool type": (TypeError, lambda: mla_decode_attention_fp4(qn, qr, object(), 0, indptr, idx, sm_scale=1.0)),
        "layer": (IndexError, lambda: mla_decode_attention_fp4(qn, qr, pool, 5, indptr, idx, sm_scale=1.0)),
        "q_nope width": (ValueError, lambda: mla_decode_attention_fp4(qn[..., :32], qr, pool, 0, indptr, idx, sm_scale=1.0)),
        "q_rope heads": (ValueError, lambda: mla_decode_attention_fp4(qn, qr[:, :8], pool, 0, indptr, idx, sm_scale=1.0)),
        "q_rope tokens": (ValueError, lambda: mla_decode_attention_fp4(qn, qr[:1], pool, 0, indptr, idx, sm_scale=1.0)),
        "float64": (ValueError, lambda: mla_decode_attention_fp4(qn.double(), qr.double(), pool, 0, indptr, idx,
                                                                 sm_scale=1.0)),
        "slot": (IndexError, lambda: mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx + 1000, sm_scale=1.0)),
        "empty request": (ValueError, lambda: mla_decode_attention_fp4(qn, qr, pool, 0, torch.tensor([0, 0, 7]), idx,
                                                                       sm_scale=1.0)),
        "splits": (ValueError, lambda: mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=1.0,
                                                                num_kv_splits=0)),
        "out dtype": (ValueError, lambda: mla_decode_attention_fp4(qn, qr, pool, 0, indptr, idx, sm_scale=1.0,
                                                                   out_dtype=torch.float16)),
    }
    for name, (exc, call) in cases.items():
        before = {k: v.clone() for k, v in pool.layer_tensors(0).items()}
        with pytest.raises(exc):
            call()
        assert all(torch.equal(before[k], v) for k, v in pool.layer_tensors(0).items()), name
    odd = MLATokenToKVPoolFP4(size=16, page_size=1, layer_num=1, kv_lora_rank=96, qk_rope_head_dim=32)
    with pytest.raises(ValueError, match="kv_lora_rank must be one of"):
        mla_decode_attention_fp4(torch.randn(1, 16, 96), torch.randn(1, 16, 32), odd, 0, torch.tensor([0, 1]),
                                 torch.tensor([1]), sm_scale=1.0)


def test_stage1_compiles_for_sm90():
    """DeepSeek-V3's 512 + 64, both recipes, every decoder and the BF16 baseline: the stage-1 kernel
    compiles for sm_90 with tensor-core dots and no register spills at its default launch, and at
    the benchmark's `v_parts` (with `split_scores`), 64-heads (`wgmma`) and tokens-as-M launches."""
    code = textwrap.dedent("""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("c", "scripts/compile_sm90.py")
        c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c)
        import triton
        from nvfp4_kvcache_triton._triton.mla_decode_attention import mla_decode_stage1
        from nvfp4_kvcache_triton._triton.decode_attention import DECODE_IDS, FMT_IDS
        types = dict(qn_ptr="*bf16", qn_sb="i32", qn_sh="i32", qr_ptr="*bf16", qr_sb="i32", qr_sh="i32",
                     kv_ptr="*u8", kvs_ptr="*u8", d_stride="i32", s_stride="i32", g_ptr="*fp32",
                     kv_indptr="*i64", kv_indices="*i64", mid_o="*fp32", mid_lse="*fp32", sm_scale="fp32", HQ="i32")
        for fmt, dec, (bn, w, bh, vp, tm, ss) in (
                ("fp4_mx_block16", "placement", (32, 4, 16, 1, 0, 0)), ("nvfp4", "placement", (32, 4, 16, 1, 0, 0)),
                ("nvfp4", "cvt_f16", (32, 4, 16, 1, 0, 0)), ("fp4_mx_block16", "prmt_bf16", (32, 4, 16, 1, 0, 0)),
                ("bf16", "placement", (32, 4, 16, 1, 0, 0)), ("nvfp4", "cvt_f16", (32, 4, 16, 2, 0, 1)),
                ("nvfp4", "cvt_f16", (64, 8, 64, 2, 0, 0)), ("bf16", "placement", (64, 4, 16, 1, 1, 0))):
            consts = dict(DL=512, DR=64, BLOCK_H=bh, BLOCK_N=bn, PAGE=16, KV_FMT=FMT_IDS[fmt], INTERP=False,
                          DECODE=DECODE_IDS[dec], V_PARTS=vp, TOKENS_AS_M=bool(tm), SPLIT_SCORES=bool(ss))
            t = dict(types, kv_ptr="*bf16", kvs_ptr="*bf16") if fmt == "bf16" else types
            k = triton.compile(c._src(mla_decode_stage1, t, consts, {"qn_ptr", "qr_ptr", "kv_ptr", "kvs_ptr",
                               "mid_o", "mid_lse", "kv_indptr", "kv_indices"}), target=c.TARGET,
                               options={"num_warps": w, "num_stages": 2})
            sass = c._cuobjdump(k.asm["cubin"], "-sass")
            print(fmt, dec, c.resources(k.asm["cubin"]), "HMMA" in sass or "HGMMA" in sass)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 8 and all(line.endswith("True") and "LOCAL:0" in line and "STACK:0" in line
                                   for line in lines), proc.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("recipe,decode", [("fp4_mx_block16", "placement"), ("nvfp4", "placement"),
                                           ("nvfp4", "cvt_f16"), ("fp4_mx_block16", "prmt_bf16")])
def test_gpu_full_size(recipe, decode):
    gen = torch.Generator().manual_seed(11)
    pool, qn, qr, indptr, idx = _case(recipe, 512, 64, 16, 16, [1, 4097, 16384], gen)
    gpu = MLATokenToKVPoolFP4(size=pool.size, page_size=16, layer_num=1, kv_lora_rank=512, qk_rope_head_dim=64,
                              recipe=recipe, device="cuda",
                              **({"kv_scales": [float(pool.kv_scales[0])]} if recipe == "nvfp4" else {}))
    for name, t in pool.layer_tensors(0).items():
        gpu.layer_tensors(0)[name].copy_(t)
    out = mla_decode_attention_fp4(qn.cuda().bfloat16(), qr.cuda().bfloat16(), gpu, 0, indptr.cuda(), idx.cuda(),
                                   sm_scale=1 / math.sqrt(192), num_kv_splits=16, page_size=16, decode=decode)
    _check(pool, qn.bfloat16().float(), qr.bfloat16().float(), indptr, idx, 1 / math.sqrt(192), out, gpu=True)
    one = mla_decode_attention_fp4(qn.cuda().bfloat16(), qr.cuda().bfloat16(), gpu, 0, torch.arange(4, device="cuda"),
                                   idx[:3].cuda(), sm_scale=0.1, decode=decode)
    c = pool.gather_kv(0, idx[:3], dtype=torch.float32)[:, :, :512]
    assert torch.equal(one.cpu(), c.expand(-1, 16, -1))                    # weight 1: the latent rows exactly


def test_bench_grid_is_counted_offline_and_logged():
    """Every launch the benchmark times is compiled by `scripts/sass_mla_decode_attention.py`
    (its counts are in the committed data file, none failed), and the variant log prints the
    same grid."""
    import ast
    import importlib.util
    import json
    import re

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location("bench_mla", ROOT / "scripts" / "bench_mla_decode_attention.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    data = json.loads((ROOT / "docs" / "data" / "perf" / "mla_decode_attention_sass.json").read_text())
    keys = ("block_n", "num_warps", "num_stages", "block_h", "v_parts", "tokens_as_m", "split_scores")
    counted = {(r["variant"], tuple(r[k] for k in keys)) for r in data["rows"] if "error" not in r}
    for heads, grid in bench.GRIDS.items():
        assert grid[0] == bench.BASE_LAUNCH
        for launch in grid:
            for v in bench.FULL_GRID:
                assert (v, launch) in counted, (heads, v, launch)
            for k, x in zip(keys, launch):
                assert x in MLA_LAUNCH_CHOICES[k], (k, x)
    notes = (ROOT / "docs" / "kernels" / "decode_attention_notes.md").read_text()
    m = re.search(r"^MLA_GRID = (\{.*?^\})", notes, re.S | re.M)
    assert m and ast.literal_eval(m.group(1)) == bench.GRIDS
