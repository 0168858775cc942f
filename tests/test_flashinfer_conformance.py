"""The FlashInfer conformance machinery on the CPU: input classes, comparison, exact decisions.

The comparison runs with the oracle standing in for FlashInfer and two faults injected per write
(`OracleWritersWithFaults`): it must find exactly those, decide the wrong code as "oracle right"
and count the other as a stray write. On the GPU the same code compares FlashInfer's bytes.
"""

from __future__ import annotations

import math

import pytest
import torch

import flashinfer_conformance as fc
import flashinfer_exact as fe
from nvfp4_kvcache.formats import E4M3


@pytest.fixture(scope="module")
def bf16_cases():
    gen = torch.Generator().manual_seed(5)
    return {c.name: c for c in fc.make_cases(torch.bfloat16, 32, gen)}


def test_every_class_is_exact_in_its_dtype_and_rows_are_whole():
    for dtype in fc.DTYPES.values():
        gen = torch.Generator().manual_seed(1)
        for c in fc.make_cases(dtype, 32, gen):
            assert c.x.shape[1:] == (fc.HEADS, fc.DIM), c.name
            finite = torch.isfinite(c.x)
            assert torch.equal(c.x[finite], c.x[finite].to(dtype).float()), c.name
            assert c.g == float(torch.tensor(c.g, dtype=torch.float32)) and c.g > 0, c.name


def test_classes_hold_what_their_names_say(bf16_cases):
    blocks = lambda name: bf16_cases[name].x.reshape(-1, 16)  # noqa: E731
    mids = {(a + b) / 2 for a, b in zip(E4M3.magnitudes, E4M3.magnitudes[1:])}
    amax = blocks("e4m3_ties").abs().amax(-1)
    assert all(v / 6 in mids for v in amax.tolist())
    b = blocks("e2m1_ties_g1")
    sf = b.abs().amax(-1, keepdim=True) / 6
    ratio = (b.abs() / sf)[:, 1:]
    assert set(ratio.flatten().tolist()) <= {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0}
    below = blocks("amax_below_pow2_g1").abs().amax(-1)
    assert all(math.frexp(v)[0] == 1 - 2.0**-8 for v in below.tolist())      # 0.11111111b: one bf16 ulp below
    sub = blocks("f32_subnormal_inputs_g1").abs()
    assert (sub < 2.0**-126).all() and (sub > 0).all()
    assert torch.isnan(blocks("nan_blocks")).any(-1).all()
    assert torch.isinf(blocks("inf_blocks")).sum(-1).eq(1).all()
    near = blocks("e4m3_near_ties").abs().amax(-1)
    assert not any(v / 6 in mids for v in near.tolist())


def test_the_comparison_finds_exactly_the_injected_faults(bf16_cases):
    gen = torch.Generator().manual_seed(2)
    w = fc.OracleWritersWithFaults()
    res = fc.run_case(bf16_cases["random_g1"], torch.bfloat16, w, torch.device("cpu"), gen, 8, None)
    for name in ("append_NHD", "append_HND", "slot_mapping_NHD"):
        r = res[name]
        assert r["differing_blocks"] == 1 and r["stray_blocks"] == 1, (name, r)
        assert r["verdicts"] == {"oracle right": 1}, (name, r)
        rep = r["reproducer"]
        assert fe.decide_reproducer(rep)["verdict"] == "oracle right"
        assert r["max_code_step"] == 1 and r["scale_byte_diffs"] == 0
    four = res["slot_mapping_4over6_NHD"]
    assert four["differing_blocks"] == 0 and four["reference"].startswith("float32 model")
    assert res["mla"]["ckv_code_diff_blocks"] == 0 and res["mla"]["kpe_diffs"] == 0
    assert all(r["differ"] == 0 for r in res["dequantize_paged"].values())
    assert set(fc.summarize({"bfloat16": {"random_g1": res}})) >= {"append_NHD", "slot_mapping_NHD"}


def test_fourover6_float32_model_is_flashinfers_formula_in_ieee_arithmetic(bf16_cases):
    """The tensor model used as a stand-in oracle agrees, block by block, with the exact-rational
    model of the same formula (`flashinfer_block(four_over_six=True)`), on ties and random data."""
    for name in ("random_g1", "e2m1_ties_g1", "random_g037", "scale_underflow"):
        c = bf16_cases[name]
        x = c.x.reshape(-1, 16)[:96]
        b, codes = fc.fourover6_ieee_model(x, c.g)
        for i in range(x.shape[0]):
            sb, cs = fe.flashinfer_block(x[i].tolist(), c.g, four_over_six=True)
            assert (sb, cs) == (int(b[i]), codes[i].tolist()), (name, i)


def test_command_line_drops_output_paths():
    assert fc.without_out(["--quick", "--out", "x.json", "--compile-record=y", "--decide", "3"]) == ["--quick", "--decide", "3"]


def test_ptx_census_counts_per_kernel_across_nested_blocks():
    ptx = """
.visible .entry _ZN10flashinfer37NVFP4QuantizeAppendPagedKVCacheKernelILj128E(
	.param .u64 p
)
{
	div.full.ftz.f32 	%f1, %f2, %f3;
	{
	.reg .b16 %t;
	cvt.rn.satfinite.e4m3x2.f32 %t, %f4, %f5;
	}
	rcp.approx.ftz.f32 	%f6, %f7;
	rcp.approx.ftz.f32 	%f8, %f9;
}
.visible .entry _ZN10flashinfer20AppendPagedKVCacheKernel(
)
{
	rcp.rn.f32 %f1, %f2;
}
"""
    got = fc.census_ptx_text(ptx)
    assert list(got.values()) == [{"div.full.ftz.f32": 1, "rcp.approx.ftz.f32": 2, "cvt.rn.satfinite.e4m3x2.f32": 1}]
    assert "NVFP4QuantizeAppendPagedKVCacheKernel" in next(iter(got))


def test_writer_model_in_ieee_arithmetic_is_the_exact_model_of_the_same_formula(bf16_cases):
    """The tensor model of FlashInfer's writer (the one the GPU run evaluates with the compiled
    instructions) agrees with the Fraction model of its source on the CPU's IEEE arithmetic."""
    for name in ("random_g1", "random_g037", "e2m1_ties_g1", "scale_subnormal", "inf_blocks", "zeros_and_negative_zeros"):
        c = bf16_cases[name]
        x = c.x.reshape(-1, 16)[:80]
        b, codes = fc.writer_model(x, c.g)
        for i in range(x.shape[0]):
            assert fe.flashinfer_block(x[i].tolist(), c.g) == (int(b[i]), codes[i].tolist()), (name, i)
    x = torch.tensor([[2.0**-130] * 16])
    assert fc.writer_model(x, 2.0**-124, flush=True)[0].item() == 0      # flushed amax: scale 0
    assert fc.writer_model(x, 2.0**-124, flush=False)[0].item() != 0


def _synthetic_gpu_result(cases: dict, tmp_path) -> dict:
    """A `flashinfer.json` in the schema `main()` writes, made on the CPU: the oracle with injected faults
    (`OracleWritersWithFaults`) stands in for FlashInfer's writers, `run_record` and `summarize` do the rest."""
    import json

    gen = torch.Generator().manual_seed(3)
    writers = fc.OracleWritersWithFaults()
    results = {"bfloat16": {}}
    for name in ("random_g1", "nan_blocks"):
        c = cases[name]
        r = fc.run_case(c, torch.bfloat16, writers, torch.device("cpu"), gen, 4, None)
        r["why"], r["global_scale"], r["tokens"] = c.why, c.g, c.x.shape[0]
        results["bfloat16"][name] = r
    res = fc.run_record("flashinfer_conformance.py", ["--quick", "--out", str(tmp_path / "elsewhere.json")])
    res["flashinfer"] = {"flashinfer": "0.7.4"}
    res["fourover6_reference"] = "float32 model of FlashInfer's formula"
    res["results"] = results
    res["summary"] = fc.summarize(results)
    path = tmp_path / "flashinfer.json"
    path.write_text(json.dumps(res, indent=1, default=str) + "\n")
    return json.loads(path.read_text())


def test_the_peers_chapter_renders_a_gpu_result(bf16_cases, tmp_path):
    """The Peers chapter's FlashInfer tables read the conformance module's own output: the injected
    faults show as one differing block per writer call, decided "oracle right" (the peer deviates),
    and one stray write each; the 4-over-6 and MLA writers and the dequantize agree."""
    import peer_tables as pt

    data = _synthetic_gpu_result(bf16_cases, tmp_path)
    text = pt.peers_flashinfer(tmp_path / "flashinfer.json")
    assert "FlashInfer 0.7.4" in text and "`python scripts/flashinfer_conformance.py --quick`" in text
    assert "elsewhere" not in text
    row = next(line for line in text.splitlines() if "`random_g1`" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["bf16", "`random_g1`"]
    assert cells[2:5] == ["✗ 1"] * 3                     # append NHD, HND, slot mapping: the one wrong code
    assert cells[5:8] == ["✓", "✓", "✓ ✓"]               # 4-over-6, MLA, dequantize (bf16 and fp16 out)
    total = next(line for line in text.splitlines() if line.startswith("| `append_NHD`"))
    n = sum(r["append_NHD"]["differing_blocks"] for r in data["results"]["bfloat16"].values())
    assert f"| 2 | {n} | 2 |" in total and "oracle right" in total
    assert "float32 model of FlashInfer's formula" in text
    reps = pt.peers_flashinfer_reproducers(tmp_path / "flashinfer.json")
    row = next(line for line in reps.splitlines() if "`random_g1`" in line)
    assert "`append_NHD`" in row and "| bf16 |" in row and row.endswith("| oracle right |")
    # the same tables from the data in memory, and the page's sentence when the file is missing
    assert pt.peers_flashinfer(data=data) == text
    assert pt.peers_flashinfer(tmp_path / "missing.json") == pt.FLASHINFER_NOT_COMMITTED
    assert pt.peers_flashinfer_reproducers(tmp_path / "missing.json") == ""
    assert "not committed" in pt.FLASHINFER_NOT_COMMITTED


def test_flashinfer_verdicts_are_derived_as_the_referee_derives_them():
    import peer_tables as pt
    from peerlab.base import Entry
    from peerlab.referee import _verdict

    entry = Entry(id="x/y", recipe="nvfp4", rule="", api="", source="", run=lambda x, g: None)
    counts = {"codes": 1, "scales": 1, "decoded": 1}
    for tally in ({"flashinfer right": 3}, {"oracle right": 2, "neither right": 1}, {"flashinfer right": 1,
                  "oracle right": 1}, {"both right": 1}, {"undefined: NaN in block": 4}, {"neither right": 2}):
        decided = {"peer": tally.get("flashinfer right", 0), "oracle": tally.get("oracle right", 0),
                   "both": tally.get("both right", 0), "neither": tally.get("neither right", 0),
                   "unspecified": tally.get("undefined: NaN in block", 0)}
        assert pt.flashinfer_verdict(1, tally) == _verdict(entry, counts, decided), tally
    assert pt.flashinfer_verdict(0, {}) == "agrees"
