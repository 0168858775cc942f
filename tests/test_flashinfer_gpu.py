"""FlashInfer 0.7.4's NVFP4 writers, paged dequantize and decode against the oracle, on a GPU.

Marked `gpu`; needs the trimmed FlashInfer bundle installed (`bash scripts/flashinfer_install.sh`)
and compiles its JIT modules on first use (`python scripts/flashinfer_env.py prebuild` does it
in parallel first). Runs without pytest too: `python tests/test_flashinfer_gpu.py`.

Each test states a prediction made from FlashInfer's CUDA source before any run (see the Peers
data, `docs/data/peers/flashinfer.json`, and the Pool chapter); a failure is a finding, and
`scripts/flashinfer_conformance.py` records its reproducer and exact verdict.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

try:
    import pytest

    pytestmark = pytest.mark.gpu
except ImportError:  # the device machine may have no pytest
    pytest = None

_STATE: dict = {}


def _fi():
    """FlashInfer's writers (activating the bundle once)."""
    if "writers" not in _STATE:
        import flashinfer_conformance as fc
        import flashinfer_env

        flashinfer_env.activate()
        _STATE["writers"] = fc.FlashInferWriters()
    return _STATE["writers"]


def _cases(dtype, names, tokens=512, seed=11):
    import flashinfer_conformance as fc

    gen = torch.Generator().manual_seed(seed)
    found = {c.name: c for c in fc.make_cases(dtype, tokens, gen) if c.name in names}
    assert set(found) == set(names), set(names) - set(found)
    return [found[n] for n in names], gen


def _run(case, dtype, gen):
    import flashinfer_conformance as fc

    from nvfp4_kvcache.recipes import NVFP4_4OVER6

    # the 4-over-6 writer against the registered recipe (bit-exact by design), as the conformance run does
    return fc.run_case(case, dtype, _fi(), torch.device("cuda"), gen, 16, NVFP4_4OVER6)


WRITERS = ("append_NHD", "append_HND", "slot_mapping_NHD")


def test_writers_touch_only_their_slots_and_differ_only_at_rounding_boundaries():
    """Prediction: same layout and addressing (no stray byte anywhere); where bytes differ it is a
    rounding decision (one E4M3 step in a scale, one E2M1 step in a code), never a layout error."""
    for dtype in (torch.bfloat16, torch.float16):
        cases, gen = _cases(dtype, ("random_normal", "random_heavy_tailed", "random_g1", "random_g037",
                                    "e2m1_ties_g1", "e4m3_ties", "e4m3_near_ties", "amax_below_pow2_g1"))
        for case in cases:
            res = _run(case, dtype, gen)
            for w in WRITERS + ("slot_mapping_4over6_NHD",):
                r = res[w]
                assert "error" not in r, (case.name, w, r)
                assert r["stray_blocks"] == 0, (case.name, w, r)
                if r["differing_blocks"]:
                    assert r["max_scale_step"] <= 1 and (r["max_code_step"] <= 1 or r["scale_byte_diffs"]), (case.name, w, r)


def test_zero_blocks_are_byte_identical():
    """Prediction: all-zero blocks (either sign) give scale 0 and codes that keep the sign, in both."""
    for dtype in (torch.bfloat16, torch.float16):
        cases, gen = _cases(dtype, ("zeros_and_negative_zeros",))
        res = _run(cases[0], dtype, gen)
        for w in WRITERS:
            assert res[w]["differing_blocks"] == 0 and res[w]["stray_blocks"] == 0, (w, res[w])


def test_special_scales_are_byte_identical():
    """Prediction: E4M3 underflow (amax / 6 at and around 2**-10, ties to 0), subnormal scales,
    saturation at 448 and infinities (scale 448, infinite elements code 7) give the same scale
    bytes; element codes may still differ by one step where an input sits exactly on an E2M1
    midpoint and the block scale is not a power of two (approximate reciprocal, prediction 1)."""
    for dtype in (torch.bfloat16, torch.float16):
        cases, gen = _cases(dtype, ("scale_underflow", "scale_subnormal", "scale_saturation", "inf_blocks"))
        for case in cases:
            res = _run(case, dtype, gen)
            for w in WRITERS:
                r = res[w]
                assert r["scale_byte_diffs"] == 0 and r["stray_blocks"] == 0, (case.name, w, r)
                assert r["max_code_step"] <= 1, (case.name, w, r)


def test_nan_blocks_follow_fmaxf():
    """Prediction (page.cuh: `amax = fmaxf(amax, fabsf(v))`, and `fmaxf` drops a NaN operand): a
    block's scale comes from its finite elements, a NaN element gets code 0 with the NaN's sign,
    an all-NaN block gets scale 0. The oracle instead writes scale 0x7F and codes 0 (its NaN policy)."""
    from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache

    fi = _fi()
    x = torch.randn(4, 8, 128).to(torch.bfloat16)
    x[0, 0, 3] = math.nan
    x[1, 2, 16:32] = math.nan
    x[2, 5, 40] = -math.nan
    slots = torch.tensor([3, 9, 17, 20], device="cuda")
    mk = lambda: FlashInferNVFP4KVCache(num_pages=4, page_size=8, layer_num=1, head_num=8, head_dim=128,  # noqa: E731
                                       device="cuda", k_scales=1.0, v_scales=1.0)
    got, want = mk(), mk()
    fi.slots(got, x.cuda(), x.cuda(), slots, 1.0)
    y = torch.where(torch.isnan(x), torch.where(torch.signbit(x), -0.0, 0.0), x).to(x.dtype)   # NaN -> zero of its sign
    want.write_slots(0, y.cuda(), y.cuda(), slots)
    for a, b in zip(got.layer_tensors(0).values(), want.layer_tensors(0).values()):
        assert torch.equal(a, b)


def test_out_of_range_slots_are_skipped_by_flashinfer():
    """Prediction (WithSlotMapping kernel: `slot >= max_num_pages * page_size` returns): FlashInfer
    writes nothing for such a slot; the oracle's cache refuses it with an IndexError instead."""
    from nvfp4_kvcache.pool.flashinfer import FlashInferNVFP4KVCache

    c = FlashInferNVFP4KVCache(num_pages=2, page_size=4, layer_num=1, head_num=8, head_dim=128, device="cuda")
    before = c.state_digest()
    x = torch.ones(2, 8, 128, dtype=torch.bfloat16, device="cuda")
    _fi().slots(c, x, x, torch.tensor([8, -1], device="cuda"), 1.0)
    torch.cuda.synchronize()
    assert c.state_digest() == before
    try:
        c.write_slots(0, x, x, torch.tensor([8, -1], device="cuda"))
    except IndexError as err:
        assert "outside the cache's slots" in str(err)
    else:
        raise AssertionError("the oracle accepted slot 8 of 8")


def test_paged_dequantize_equals_oracle():
    """Prediction: `fl(fl(E2M1 * sf) * g)` then one rounding, as the oracle; equal bits
    (positions past a request's length untouched) on every class without float32-subnormal results."""
    for dtype in (torch.bfloat16, torch.float16):
        cases, gen = _cases(dtype, ("random_normal", "random_heavy_tailed", "scale_subnormal", "scale_saturation",
                                    "inf_blocks", "nan_blocks", "zeros_and_negative_zeros"))
        for case in cases:
            dq = _run(case, dtype, gen)["dequantize_paged"]
            assert "error" not in dq, dq
            for out_dtype, r in dq.items():
                assert r["differ"] == 0, (case.name, out_dtype, r)


def test_mla_writer_equals_oracle_with_power_of_two_scale():
    """Prediction: the MLA writer uses IEEE reciprocals (`__frcp_rn`); with a power-of-two global
    scale its block scale `fl(amax * fl(1/fl(6 g)))` equals the oracle's product form, and the rope
    bytes are `E4M3(fl(x * fl(1/kpe_scale)))`, saturating."""
    for dtype in (torch.bfloat16, torch.float16):
        cases, gen = _cases(dtype, ("random_g1", "e2m1_ties_g1", "e2m1_ties_g4", "zeros_and_negative_zeros"))
        for case in cases:
            m = _run(case, dtype, gen)["mla"]
            assert "error" not in m, m
            assert m["ckv_scale_byte_diffs"] == 0 and m["ckv_code_diff_blocks"] == 0, (case.name, m)
            assert m["kpe_diffs"] == 0 and m["stray_rows"] == 0, (case.name, m)


def test_nvfp4_decode_on_hopper_matches_the_oracle():
    """FA2 tensor-core decode over the oracle's NVFP4 bytes, within the stated bound, both layouts."""
    import flashinfer_harness as fh

    _fi()
    for layout in ("NHD", "HND"):
        inp = fh.make_inputs(fh.Shape(batch=2, context=700, kv_layout=layout), "cuda", seed=3)
        caches = fh.build_caches(inp, ("flashinfer_nvfp4_fa2",))
        run = fh.decode("flashinfer_nvfp4_fa2", inp, caches)
        ref = fh.oracle_output(inp, "flashinfer_nvfp4_fa2", caches)
        c = fh.check(run.out, ref, fh.tolerance(inp, "flashinfer_nvfp4_fa2", caches))
        assert c["ok"], (layout, c)


if __name__ == "__main__":
    assert torch.cuda.is_available(), "needs CUDA"
    print(torch.cuda.get_device_name(0), torch.__version__, flush=True)
    failed = []
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            try:
                fn()
                print("passed", name, flush=True)
            except Exception as exc:  # noqa: BLE001 - report every test, then fail
                failed.append(name)
                print("FAILED", name, f"{type(exc).__name__}: {str(exc)[:1500]}", flush=True)
    print(f"{len(failed)} failed: {failed}" if failed else "all passed", flush=True)
    sys.exit(1 if failed else 0)
