"""Stage 4 of the decode benchmark on the CPU: FlashInfer's layout of the benchmark's own caches.

`scripts/flashinfer_decode.py` times FlashInfer's decode over the benchmark's caches on a GPU.
Here, without one:

- the page table derived from the benchmark's slot indices, and the refusals (slots that are not
  whole pages in order, caches whose slots are not whole pages, pages past the caches);
- the NVFP4 conversion: a benchmark pool converted to FlashInfer's layout holds the bytes that
  the oracle's FlashInfer cache (`nvfp4_kvcache.pool.flashinfer`) writes from the same rows;
  BF16 and FP8 are views of the benchmark's buffers;
- `rows` end to end against a stand-in `flashinfer` whose decode wrapper computes attention in
  float64 from exactly what it is handed (the paged tensors, the scale tensors, `k_scale` /
  `v_scale`, the page table): the shapes, scales, page tables and row fields are the real
  plumbing, and mutants of the stand-in (a scale ignored, an output off by a little, a page
  table shifted) fail the check.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

import bench_decode_attention as bda
import flashinfer_decode as fd
import flashinfer_harness as fh
from benchkit import kvcaches as kc
from nvfp4_kvcache.attention import ragged_attention
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache, slots_from_page_table

SHAPE = kc.Shape(True)


@pytest.fixture(scope="module")
def bench():
    """The benchmark's smoke caches, requests, queries (bf16-exact) and oracle."""
    caches = kc.build_caches(SHAPE, "cpu", 0)
    gen = torch.Generator().manual_seed(0)
    ip, ix = kc.paged_indices(SHAPE, SHAPE.B, SHAPE.CTX, gen, "cpu")
    q = torch.randn(SHAPE.B, SHAPE.HQ, SHAPE.D, generator=gen).bfloat16().float()
    oracle = kc.Oracle(SHAPE, caches, q, ip, ix, (0, 1), False)
    return caches, ip, ix, q, oracle


# -- page tables ----------------------------------------------------------------------------------
def test_page_table_from_the_benchmarks_slots(bench):
    _, ip, ix, _, _ = bench
    indptr, indices, last = fd.page_table(ip, ix, SHAPE.PAGE)
    assert indptr.dtype == indices.dtype == last.dtype == torch.int32
    per = -(-SHAPE.CTX // SHAPE.PAGE)
    assert indptr.tolist() == [per * b for b in range(SHAPE.B + 1)]
    assert last.tolist() == [SHAPE.CTX - (per - 1) * SHAPE.PAGE] * SHAPE.B
    firsts = torch.cat([ix[b * SHAPE.CTX:(b + 1) * SHAPE.CTX:SHAPE.PAGE] for b in range(SHAPE.B)])
    assert torch.equal(indices.long(), firsts // SHAPE.PAGE)
    tok, slots = slots_from_page_table(indptr, indices, last, SHAPE.PAGE)
    assert torch.equal(tok, ip) and torch.equal(slots, ix)


def test_page_table_refuses_slots_that_are_not_whole_pages(bench):
    _, ip, ix, _, _ = bench
    shifted = ix.clone()
    shifted[SHAPE.CTX:] += 1                      # request 1 starts one entry into its first page
    with pytest.raises(ValueError, match=r"whole pages.*request 1, token 0"):
        fd.page_table(ip, shifted, SHAPE.PAGE)
    swapped = ix.clone()
    swapped[[3, 4]] = swapped[[4, 3]]             # two tokens of one page out of order
    with pytest.raises(ValueError, match=r"request 0, token 3"):
        fd.page_table(ip, swapped, SHAPE.PAGE)


def test_paged_views_share_the_benchmarks_memory(bench):
    caches, ip, ix, _, _ = bench
    for fmt in ("bf16", "fp8"):
        for t in caches[fmt]:
            view = fd.paged_view(t, SHAPE.PAGE)
            assert view.shape == (t.shape[0] // SHAPE.PAGE, SHAPE.PAGE, *t.shape[1:])
            assert view.data_ptr() == t.data_ptr()
            s = int(ix[5])
            assert torch.equal(view[s // SHAPE.PAGE, s % SHAPE.PAGE].view(torch.uint8), t[s].view(torch.uint8))
    with pytest.raises(ValueError, match="multiple of the page size 16"):
        fd.paged_view(torch.zeros(40, 1, 8), 16)


# -- the NVFP4 conversion -----------------------------------------------------------------------------
def test_only_pools_flashinfer_can_hold_are_converted(bench):
    caches = bench[0]
    assert fd.fp4_recipes(caches["pools"]) == ["nvfp4"]
    pool = lambda r: MHATokenToKVPoolFP4(size=32, page_size=16, layer_num=1, head_num=1, head_dim=32, recipe=r)  # noqa: E731
    # by capability (16-element blocks and a global scale), not by name
    assert fd.fp4_recipes({"a": pool("fp4_mx_block16"), "b": pool("nvfp4_4over6")}) == ["b"]


def test_benchmark_pool_converts_to_the_same_bytes(bench):
    caches, ip, ix, _, _ = bench
    pool = caches["pools"]["nvfp4"]
    fi = fd.nvfp4_cache(pool, SHAPE.PAGE)
    assert fi.kv_layout == "NHD" and fi.num_pages == pool.rows // SHAPE.PAGE
    assert float(fi.k_scales[0]) == float(pool.k_scales[0]) == pytest.approx(kc.G_K)
    assert float(fi.v_scales[0]) == float(pool.v_scales[0]) == pytest.approx(kc.G_V)
    t = pool.layer_tensors(0)
    for ours, theirs in (("k", "k"), ("v", "v"), ("k_scale", "k_sf"), ("v_scale", "v_sf")):
        assert torch.equal(fi.layer_tensors(0)[theirs].reshape(pool.rows, -1), t[ours].reshape(pool.rows, -1)), ours
    for a, b in zip(fi.gather_kv(0, ix, torch.float64), pool.gather_kv(0, ix, torch.float64)):
        assert torch.equal(a, b)


def test_conversion_equals_the_oracles_flashinfer_cache():
    """Rows stored into a slot-major pool by the benchmark's writer (the store kernel), converted,
    equal the oracle's FlashInfer cache written from the same rows (every byte, both scales)."""
    gen = torch.Generator().manual_seed(3)
    page, h, d, slots = 16, 2, 64, torch.tensor([16, 17, 18, 40, 41, 47, 63])
    rows = lambda: (torch.randn(slots.numel(), h, d, generator=gen) * 3).bfloat16()  # noqa: E731
    k, v = rows(), rows()
    pool = MHATokenToKVPoolFP4(size=64, page_size=page, layer_num=1, head_num=h, head_dim=d, recipe="nvfp4",
                               k_scales=[kc.G_K], v_scales=[kc.G_V])
    kc._store(pool, "nvfp4", slots, k, v)  # noqa: SLF001 - the benchmark's writer
    ref = FlashInferNVFP4KVCache(num_pages=pool.rows // page, page_size=page, layer_num=1, head_num=h, head_dim=d,
                                 k_scales=kc.G_K, v_scales=kc.G_V)
    ref.write_slots(0, k, v, slots)
    got = fd.nvfp4_cache(pool, page)
    assert got.state_digest() == ref.state_digest()
    other = FlashInferNVFP4KVCache(num_pages=pool.rows // page, page_size=page, layer_num=1, head_num=h, head_dim=d,
                                   k_scales=kc.G_K, v_scales=kc.G_V)
    other.write_slots(0, k, v, slots + 1)        # the digest tells caches apart
    assert got.state_digest() != other.state_digest()


# -- rows end to end, with a stand-in FlashInfer -----------------------------------------------------------
class FakeSpec:
    def __init__(self, name: str, compiled: bool):
        self.name, self.is_compiled = name, compiled


class FakeDecodeWrapper:
    """`BatchDecodeWithPagedKVCacheWrapper` computing attention in float64 from what it is handed:
    paged NHD tensors, `kv_cache_sf`, `k_scale` / `v_scale`, the planned page table. `mutant`
    changes one thing it does."""

    mutant: str | None = None
    seen: list = []

    def __init__(self, workspace, kv_layout, use_tensor_cores=False, backend="auto"):
        assert kv_layout == "NHD"
        self.use_tensor_cores, self._backend, self._uses_cudnn = use_tensor_cores, backend, False

    def plan(self, indptr, indices, last, hq, hkv, d, page, *, q_data_type, kv_data_type, o_data_type, sm_scale):
        assert indptr.dtype == indices.dtype == last.dtype == torch.int32
        assert q_data_type == o_data_type == torch.bfloat16
        self.table, self.heads, self.page, self.kv_dtype, self.sm_scale = (indptr, indices, last), (hq, hkv, d), page, \
            kv_data_type, sm_scale

    def run(self, q, kv, kv_cache_sf=None, k_scale=None, v_scale=None):
        from nvfp4_kvcache.recipes import get_recipe

        hq, hkv, d = self.heads
        k_cache, v_cache = kv
        assert q.dtype == torch.bfloat16 and tuple(q.shape[1:]) == (hq, d)
        assert k_cache.dtype == self.kv_dtype and k_cache.shape[1:3] == (self.page, hkv)
        FakeDecodeWrapper.seen.append({"k": k_cache, "v": v_cache, "sf": kv_cache_sf, "k_scale": k_scale,
                                       "v_scale": v_scale, "tensor_cores": self.use_tensor_cores})
        table = self.table
        if self.mutant == "shifted_pages":
            table = (table[0], table[1].roll(1), table[2])
        tok, slots = slots_from_page_table(*table, self.page)
        if k_cache.dtype == torch.uint8:
            assert kv_cache_sf is not None and self.use_tensor_cores     # FA2 tensor cores only
            recipe = get_recipe("nvfp4")

            def rows(cache, sf, g):
                g = 1.0 if self.mutant == "no_global_scale" else g
                return recipe.dequantize_parts(cache.reshape(-1, hkv, d // 2)[slots],
                                               sf.view(torch.uint8).reshape(-1, hkv, d // 16)[slots],
                                               torch.tensor(g, dtype=torch.float32), torch.float64)
        else:
            def rows(cache, sf, g):
                return cache.reshape(-1, hkv, d)[slots].double() * (1.0 if g is None else g)
        sf = kv_cache_sf or (None, None)
        k, v = rows(k_cache, sf[0], k_scale), rows(v_cache, sf[1], v_scale)
        out = ragged_attention(q.double(), k, v, torch.arange(q.shape[0] + 1), tok, sm_scale=self.sm_scale,
                               causal=False)
        if self.mutant == "off_by_a_little":
            out = out * (1 + 1e-2)
        return out.float()   # the stand-in keeps float32: the interpreter's bound is float32's


@pytest.fixture
def fake_flashinfer(monkeypatch):
    """A stand-in `flashinfer` package (decode wrapper and JIT module generators); `compiled`
    says which labels' modules exist."""
    compiled = {label: True for label in fh.BACKENDS}
    mods = {name: types.ModuleType(name) for name in
            ("flashinfer", "flashinfer.decode", "flashinfer.jit", "flashinfer.jit.attention",
             "flashinfer.jit.attention.modules")}
    mods["flashinfer.decode"].BatchDecodeWithPagedKVCacheWrapper = FakeDecodeWrapper

    def prefill(backend, q, kv, o, idx, dqk, dvo, *flags):
        label = {torch.uint8: "flashinfer_nvfp4_fa2", torch.bfloat16: "flashinfer_bf16_fa2",
                 torch.float8_e4m3fn: "flashinfer_fp8_fa2"}[kv]
        return FakeSpec(f"prefill_{label}", compiled[label])

    def decode(q, kv, o, idx, dqk, dvo, *flags):
        label = {torch.bfloat16: "flashinfer_bf16", torch.float8_e4m3fn: "flashinfer_fp8"}[kv]
        return FakeSpec(f"decode_{label}", compiled[label])

    mods["flashinfer.jit.attention.modules"]._gen_batch_prefill_primary_module = prefill
    mods["flashinfer.jit.attention.modules"].gen_batch_decode_module = decode
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(fd, "_ENV", {"flashinfer": "0.0-stand-in", "source": "test"})
    monkeypatch.setattr(fh, "workspace", lambda device: torch.zeros(8, dtype=torch.uint8))
    monkeypatch.setattr(FakeDecodeWrapper, "mutant", None)
    monkeypatch.setattr(FakeDecodeWrapper, "seen", [])
    monkeypatch.delenv(fd.WAIT_ENV, raising=False)
    monkeypatch.delenv(fd.BUILD_ENV, raising=False)
    return compiled


def _timer(fn):
    fn()
    return 0.25


def test_rows_end_to_end_with_a_stand_in_flashinfer(bench, fake_flashinfer):
    caches, ip, ix, q, oracle = bench
    out = fd.rows(caches, q, ip, ix, SHAPE, _timer, oracle=oracle)
    assert [(r["format"], r["backend"]) for r in out] == [
        ("nvfp4", "flashinfer_nvfp4_fa2"), ("bf16", "flashinfer_bf16_fa2"), ("bf16", "flashinfer_bf16"),
        ("fp8", "flashinfer_fp8_fa2"), ("fp8", "flashinfer_fp8")]
    for r in out:
        assert "error" not in r and "skipped" not in r, r
        assert r["ok"] and [c["request"] for c in r["check"]] == [0, 1]
        assert all(c["ok_at_our_kernels_tolerance"] for c in r["check"])
        assert r["ms"] == 0.25 and r["bytes"] == kc.bytes_read(r["format"], SHAPE, SHAPE.B, SHAPE.CTX)
        assert r["bytes_per_s"] == pytest.approx(r["bytes"] / 0.25e-3)
        assert r["flashinfer"] == "0.0-stand-in" and r["tolerance_factor"] == fd.TOLERANCE_FACTOR
        assert (r["batch"], r["context"], r["page"], r["kv_layout"]) == (SHAPE.B, SHAPE.CTX, SHAPE.PAGE, "NHD")
        assert r["tensor_cores"] == r["backend"].endswith("_fa2") and r["jit"]["compiled_before"]
        assert r["timer_fell_back_to_events"] is False
    seen = FakeDecodeWrapper.seen
    nv = [s for s in seen if s["sf"] is not None]
    assert nv and all(s["k_scale"] == pytest.approx(kc.G_K) and s["v_scale"] == pytest.approx(kc.G_V) for s in nv)
    fp8 = [s for s in seen if s["k"].dtype == torch.float8_e4m3fn]
    assert fp8 and all(s["k_scale"] == pytest.approx(kc.FP8_K) for s in fp8)
    # BF16 and FP8 read the benchmark's own buffers (no copy)
    assert {s["k"].data_ptr() for s in seen if s["k"].dtype == torch.bfloat16} == {caches["bf16"][0].data_ptr()}
    assert {s["v"].data_ptr() for s in fp8} == {caches["fp8"][1].data_ptr()}


@pytest.mark.parametrize("mutant,failing", [("no_global_scale", {"nvfp4"}), ("off_by_a_little", {"nvfp4", "bf16", "fp8"}),
                                            ("shifted_pages", {"nvfp4", "bf16", "fp8"})])
def test_the_check_catches_a_wrong_decode(bench, fake_flashinfer, monkeypatch, mutant, failing):
    caches, ip, ix, q, oracle = bench
    monkeypatch.setattr(FakeDecodeWrapper, "mutant", mutant)
    out = fd.rows(caches, q, ip, ix, SHAPE, _timer, oracle=oracle)
    assert {r["format"] for r in out if not r["ok"]} == failing
    assert all("ms" in r for r in out)          # timed all the same, marked; the summary skips them


def test_missing_modules_are_skipped_when_building_is_off(bench, fake_flashinfer, monkeypatch):
    caches, ip, ix, q, oracle = bench
    fake_flashinfer["flashinfer_fp8"] = False
    monkeypatch.setenv(fd.BUILD_ENV, "0")
    out = {r["backend"]: r for r in fd.rows(caches, q, ip, ix, SHAPE, _timer, oracle=oracle)}
    assert "FLASHINFER_DECODE_BUILD=0" in out["flashinfer_fp8"]["skipped"] and "ms" not in out["flashinfer_fp8"]
    assert all(r["ok"] for b, r in out.items() if b != "flashinfer_fp8")
    monkeypatch.setenv(fd.BUILD_ENV, "1")      # allowed to build: FlashInfer compiles on first use
    out = {r["backend"]: r for r in fd.rows(caches, q, ip, ix, SHAPE, _timer, oracle=oracle)}
    assert out["flashinfer_fp8"]["ok"] and not out["flashinfer_fp8"]["jit"]["compiled_before"]


def test_a_failing_path_is_a_row_and_the_rest_run(bench, fake_flashinfer, monkeypatch):
    caches, ip, ix, q, oracle = bench

    def broken(self, *a, **kw):
        raise RuntimeError("no kernel for this configuration")

    monkeypatch.setattr(FakeDecodeWrapper, "plan", broken)
    out = fd.rows(caches, q, ip, ix, SHAPE, _timer, oracle=oracle)
    assert all(not r["ok"] and "RuntimeError: no kernel" in r["error"] for r in out)


def test_rows_refuse_pages_past_the_caches(bench, fake_flashinfer):
    caches, ip, ix, q, oracle = bench
    far = ix.clone()
    far[: SHAPE.PAGE] += SHAPE.POOL + SHAPE.PAGE   # request 0's first page lies past the last one
    with pytest.raises(ValueError, match="past the caches"):
        fd.rows(caches, q, ip, far, SHAPE, _timer, oracle=oracle)


def test_bench_stage_and_summary_with_the_stand_in(bench, fake_flashinfer, monkeypatch):
    """Stage 4 as the benchmark runs it: available, rows, and the summaries from the passing rows."""
    caches, ip, ix, q, oracle = bench
    monkeypatch.setattr(fd, "unavailable", lambda: None)
    fi = bda.flashinfer_stage(caches, q, ip, ix, SHAPE, True, oracle)
    assert fi["available"] and fi["ran"] and len(fi["rows"]) == 5
    summary = {"nvfp4": {"ms": 0.125}, "fp4_mx_block16": {"ms": 0.5}}
    bda.flashinfer_summary(summary, fi)
    ms = {}
    for r in fi["rows"]:                            # the timer is the benchmark's (wall clock in --smoke)
        assert r["ok"] and r["ms"] > 0
        ms[r["format"]] = min(ms.get(r["format"], r["ms"]), r["ms"])
    assert summary["nvfp4"]["speedup_vs_flashinfer_nvfp4"] == pytest.approx(ms["nvfp4"] / 0.125)
    assert summary["fp4_mx_block16"]["speedup_vs_flashinfer_nvfp4"] == pytest.approx(ms["nvfp4"] / 0.5)
    assert fi["speedup_vs_bf16"] == pytest.approx(ms["bf16"] / ms["nvfp4"])
    assert fi["speedup_vs_fp8"] == pytest.approx(ms["fp8"] / ms["nvfp4"])
    assert fi["fastest"]["nvfp4"] == "flashinfer_nvfp4_fa2"


def test_summary_uses_each_formats_fastest_passing_row():
    fi = {"rows": [{"format": "nvfp4", "backend": "a", "ms": 0.1, "ok": False},     # fails its check: not used
                   {"format": "nvfp4", "backend": "b", "ms": 0.2, "ok": True},
                   {"format": "bf16", "backend": "c", "ms": 0.8, "ok": True},
                   {"format": "bf16", "backend": "d", "ms": 0.6, "ok": True},
                   {"format": "fp8", "backend": "e", "skipped": "not compiled"}]}
    summary = {"nvfp4": {"ms": 0.05}}
    bda.flashinfer_summary(summary, fi)
    assert summary["nvfp4"]["speedup_vs_flashinfer_nvfp4"] == pytest.approx(4.0)
    assert summary["nvfp4"]["flashinfer_nvfp4_backend"] == "b"
    assert fi["speedup_vs_bf16"] == pytest.approx(3.0) and "speedup_vs_fp8" not in fi
    assert fi["fastest"] == {"nvfp4": "b", "bf16": "d"}
    none = {"rows": [{"format": "nvfp4", "ms": 0.1, "ok": False}, {"format": "bf16", "ms": 0.1, "ok": True}]}
    untouched = {"nvfp4": {"ms": 0.05}}
    bda.flashinfer_summary(untouched, none)
    assert untouched == {"nvfp4": {"ms": 0.05}} and "speedup_vs_bf16" not in none


def test_unavailable_says_why_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA device" in fd.unavailable()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(fd, "_ENV", {})

    def missing():
        import flashinfer_env

        raise flashinfer_env.BundleMissing(f"no installed FlashInfer bundle under {fd.ROOT}/build/flashinfer-run")

    monkeypatch.setattr(fh, "activate", missing)
    monkeypatch.setitem(sys.modules, "flashinfer", None)       # and no installed package
    why = fd.unavailable()
    assert why.startswith("ImportError: no installed FlashInfer bundle under build/flashinfer-run")
    assert str(fd.ROOT) not in why and "no installed flashinfer package" in why


def test_rows_record_what_the_first_call_compiled(bench, fake_flashinfer, monkeypatch, tmp_path):
    """FlashInfer's build log (one JSON line per build_and_load) tells a prebuilt module (a ninja
    no-op) from one compiled inside the benchmark."""
    import json
    import os

    caches, ip, ix, q, oracle = bench
    log = tmp_path / "builds.jsonl"
    log.write_text(json.dumps({"name": "earlier", "seconds": 99.0, "pid": os.getpid()}) + "\n")
    monkeypatch.setenv("FLASHINFER_JIT_BUILD_LOG", str(log))
    plan = FakeDecodeWrapper.plan

    def logged(self, *a, **kw):
        with log.open("a") as f:
            f.write(json.dumps({"name": f"mod_{a[3]}_{kw['kv_data_type']}", "seconds": 0.01, "pid": os.getpid()}) + "\n")
            f.write(json.dumps({"name": "other process", "seconds": 5.0, "pid": -1}) + "\n")
        return plan(self, *a, **kw)

    monkeypatch.setattr(FakeDecodeWrapper, "plan", logged)
    out = fd.rows(caches, q, ip, ix, SHAPE, _timer, oracle=oracle)
    assert out[0]["jit"]["first_use_builds"] == {f"mod_{SHAPE.HQ}_torch.uint8": 0.01}
    assert all(len(r["jit"]["first_use_builds"]) == 1 for r in out)


def test_rows_say_when_the_timer_could_not_capture_a_graph(bench, fake_flashinfer, monkeypatch):
    from benchkit import timing

    caches, ip, ix, q, oracle = bench

    def events_timer(fn):          # what time_graph does when capture fails
        timing._STATS["fallbacks"] += 1
        return _timer(fn)

    before = timing.stats()["fallbacks"]
    try:
        out = fd.rows(caches, q, ip, ix, SHAPE, events_timer, oracle=oracle)
    finally:
        timing._STATS["fallbacks"] = before
    assert all(r["timer_fell_back_to_events"] for r in out)
