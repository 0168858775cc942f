"""The oracle as a tool: dtypes it accepts, classes, tie flags, block rows, sampling, policies, orders, JSON, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import nvfp4_kvcache as ri
from nvfp4_kvcache.cases import CASES, case_codes, case_input, case_recipe
from nvfp4_kvcache.exact import exact_block, round_exact, to_float32
from nvfp4_kvcache.formats import E2M1
from nvfp4_kvcache.oracle import MISMATCH_CLASSES, NEAR_TIE_ULPS, Policy, compare_with_oracle
from nvfp4_kvcache.packing import pack_nibbles, unpack_nibbles
from nvfp4_kvcache.recipes.nvfp4 import DEFAULT_ORDER, ORDERS, get_order, nvfp4_global_scale, nvfp4_with_order
from nvfp4_kvcache.rounding import Rounding

ROOT = Path(__file__).resolve().parents[1]


def _bytes(recipe, x, g=None, order=None):
    r = nvfp4_with_order(order) if order else ri.get_recipe(recipe)
    q = r.quantize(x, g)
    return unpack_nibbles(q.packed), q.scales.clone()


# ---- dtypes ----------------------------------------------------------------------------------

def test_native_float4_and_float8_dtypes_are_accepted():
    x = torch.randn(4, 64)
    q = ri.quantize(x, "mxfp4")
    packed = q.packed.view(torch.float4_e2m1fn_x2)
    assert compare_with_oracle("mxfp4", x, packed, q.scales.view(torch.float8_e8m0fnu)).ok
    qn = ri.quantize(x, "nvfp4", global_scale=0.01)
    assert compare_with_oracle("nvfp4", x, qn.packed.view(torch.float4_e2m1fn_x2), qn.scales.view(torch.float8_e4m3fn), 0.01).ok


@pytest.mark.parametrize("recipe,dtype,g", [
    ("fp4_mx_block16", torch.float8_e8m0fnu, None),   # byte 0xFF: inf here, NaN in E8M0
    ("mxfp4", torch.float8_e4m3fn, None),
    ("nvfp4", torch.float8_e8m0fnu, 0.01),
])
def test_a_float8_dtype_that_means_other_values_is_refused(recipe, dtype, g):
    x = torch.randn(2, 32)
    q = ri.quantize(x, recipe, global_scale=g)
    with pytest.raises(ValueError, match=rf"cannot stand for recipe '{recipe}'.*byte 0x"):
        compare_with_oracle(recipe, x, q.packed, q.scales.view(dtype), g)


def test_order_needs_a_recipe_with_a_global_scale():
    x = torch.randn(1, 32)
    q = ri.quantize(x, "mxfp4")
    with pytest.raises(ValueError, match="order applies to recipes with a global scale"):
        compare_with_oracle("mxfp4", x, q.packed, q.scales, order="div")
    with pytest.raises(ValueError, match="unknown NVFP4 order 'fast'"):
        get_order("fast")


# ---- classes, flags, rows ------------------------------------------------------------------------

def test_every_class_is_documented_and_each_mismatch_counted_once():
    torch.manual_seed(1)
    x = torch.randn(64, 64)
    x[0, :16] = 0
    x[1, 3] = math.nan
    q = ri.quantize(x, "nvfp4", global_scale=0.01)
    codes, scales = unpack_nibbles(q.packed).reshape(-1, 16), q.scales.flatten().clone()
    scales[0] ^= 1                      # the zero block
    scales[9] ^= 1                      # an ordinary block
    codes[4, :] ^= 1                    # 16 codes of one block
    codes[5 * 4, 0] ^= 8                # a sign
    rep = compare_with_oracle("nvfp4", x, pack_nibbles(codes.reshape(64, 64)), scales.reshape(64, 4), 0.01,
                              max_rows=1000)
    assert set(rep.classes) == set(MISMATCH_CLASSES)
    assert rep.classes["scale/zero_block"] == 1 and rep.classes["scale/other"] == 1
    assert sum(v for k, v in rep.classes.items() if k.startswith("scale/")) == rep.scale_mismatches == 2
    assert sum(v for k, v in rep.classes.items() if k.startswith("codes/")) == rep.code_mismatches == 17
    assert rep.value_mismatches > 0


def test_tie_flags_agree_with_exact_arithmetic():
    """Every element the report flags as a tie is a tie in fractions, and every exact tie is flagged."""
    torch.manual_seed(2)
    mids = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    x = mids[torch.randint(0, 7, (32, 16))] * torch.exp2(torch.randint(-3, 4, (32, 1)).float())
    x[:, 0] = 6 * torch.exp2(torch.randint(-3, 4, (32,)).float())
    x = torch.where(torch.rand_like(x) < 0.5, x, x * (1 + 2.0**-10))     # half of them just off
    codes, scales = _bytes("mxfp4", x.reshape(16, 32))
    bad = pack_nibbles((codes ^ 1).reshape(16, 32))                     # every code wrong: every element a row
    rep = compare_with_oracle("mxfp4", x.reshape(16, 32), bad, scales, max_rows=10_000)
    for row in rep.rows:
        i, j = row["index"]
        ex = exact_block("mxfp4", x.reshape(16, 32)[i].tolist())
        assert (row["flag"] == "tie") == ex.elements[j].tie, row
        assert math.isclose(row["ulps_from_midpoint"], ex.elements[j].boundary_distance, rel_tol=1e-9, abs_tol=1e-9)


def test_scale_rows_show_both_bytes_and_values_and_a_near_tie():
    x = case_input(CASES["nvfp4/order_scale_near_tie"])
    g = CASES["nvfp4/order_scale_near_tie"].global_scale
    q = nvfp4_with_order("div").quantize(x, g)
    rep = compare_with_oracle("nvfp4", x, q.packed, q.scales, g)
    (row,) = rep.block_rows
    assert (row["expected_scale"], row["actual_scale"], row["flag"]) == (0x75, 0x74, "near-tie")
    assert row["expected_scale_value"] == pytest.approx(208 * g) and row["actual_scale_value"] == pytest.approx(192 * g)
    assert rep.classes["scale/near_tie"] == 1 and "[near-tie]" in rep.format()


def test_rows_are_sampled_across_blocks_one_class_first():
    torch.manual_seed(3)
    x = torch.randn(40, 64)
    codes, scales = _bytes("fp4_mx_block16", x)
    codes = codes.reshape(-1, 16)
    codes[:, 1] ^= 1                                   # one wrong code in every block
    codes[17, 5] = codes[17, 5] ^ 8 if codes[17, 5] & 7 == 0 else codes[17, 5]
    rep = compare_with_oracle("fp4_mx_block16", x, pack_nibbles(codes.reshape(40, 64)), scales, max_rows=10)
    blocks = [r["index"][0] * 4 + r["index"][1] // 16 for r in rep.rows]
    assert len(rep.rows) == 10 and len(set(blocks)) == 10
    assert max(blocks) - min(blocks) > 100                                   # spread, not the first ten
    assert set(r["class"] for r in rep.rows) >= {"codes/other"}


# ---- policies --------------------------------------------------------------------------------

def _peer_like(x, g):
    """The oracle's bytes, then: zero block scale 0x38, NaN block codes garbage, -0 as +0."""
    codes, scales = _bytes("nvfp4", x, g)
    codes, scales = codes.reshape(-1, 16), scales.flatten()
    flat = x.float().reshape(-1, 16)
    scales = torch.where((flat == 0).all(-1), torch.full_like(scales, 0x38), scales)
    codes = torch.where(torch.isnan(flat).any(-1, keepdim=True), torch.full_like(codes, 7), codes)
    codes = torch.where(codes == 8, torch.zeros_like(codes), codes)
    return pack_nibbles(codes.reshape(x.shape)), scales.reshape(x.shape[0], -1)


def test_each_policy_forgives_its_class_only_and_says_how_much():
    torch.manual_seed(4)
    x = torch.randn(8, 64)
    x[0, :16] = 0
    x[1, :16] = 0
    x[1, 3] = -0.0
    x[2, 20] = math.nan
    x[3, 5] = -0.0
    packed, scales = _peer_like(x, 0.01)
    plain = compare_with_oracle("nvfp4", x, packed, scales, 0.01)
    assert not plain.ok and plain.forgiven == {} and plain.policy.active() == []
    only_zero = compare_with_oracle("nvfp4", x, packed, scales, 0.01, policy=Policy(ignore_zero_block_scale=True))
    assert not only_zero.ok and only_zero.forgiven == {"ignore_zero_block_scale/scales": 2}
    everything = Policy(ignore_zero_block_scale=True, ignore_nan_block_codes=True, either_signed_zero=True)
    rep = compare_with_oracle("nvfp4", x, packed, scales, 0.01, policy=everything)
    assert rep.ok
    oracle_codes = unpack_nibbles(ri.quantize(x, "nvfp4", global_scale=0.01).packed).reshape(-1, 16)
    negative_zeros = int(((oracle_codes == 8) & ~torch.isnan(x.reshape(-1, 16)).any(-1, keepdim=True)).sum())
    assert rep.forgiven["ignore_nan_block_codes/codes"] == 16 and rep.forgiven["either_signed_zero/codes"] == negative_zeros >= 2
    assert rep.classes == plain.classes                                    # classes are counted before policies
    assert "forgave" in rep.format() and json.loads(rep.to_json())["forgiven"] == rep.forgiven
    decoded = compare_with_oracle("nvfp4", x, packed, scales, 0.01, policy=Policy(decoded_values_only=True))
    assert decoded.ok and decoded.value_mismatches == 0 and decoded.forgiven["decoded_values_only/scales"] == 2


def test_near_tie_policy_accepts_the_other_neighbour_within_k_ulps_only():
    case = CASES["nvfp4/order_element_near_tie"]
    x = case_input(case)
    div = nvfp4_with_order("div").quantize(x, case.global_scale)
    rep = compare_with_oracle("nvfp4", x, div.packed, div.scales, case.global_scale)
    assert rep.classes["codes/near_tie"] == 1 and rep.rows[0]["flag"] == "near-tie"
    assert compare_with_oracle("nvfp4", x, div.packed, div.scales, case.global_scale, policy=Policy(near_tie_ulps=1)).ok
    far = x.clone()
    far[0, 1] = 3.0
    bad = unpack_nibbles(ri.quantize(far, "nvfp4", global_scale=case.global_scale).packed)
    bad[0, 1] ^= 1                                        # 3.0 is no near-tie: never forgiven
    rep = compare_with_oracle("nvfp4", far, pack_nibbles(bad), div.scales, case.global_scale,
                              policy=Policy(near_tie_ulps=NEAR_TIE_ULPS))
    assert not rep.ok and rep.forgiven["near_tie_ulps/codes"] == 0
    with pytest.raises(ValueError, match="near_tie_ulps"):
        Policy(near_tie_ulps=-1)


# ---- orders ----------------------------------------------------------------------------------

def test_orders_differ_only_at_ties_and_near_ties():
    """Two orders compute the same exact quotients with different float32 roundings, so where their
    bytes differ, exact arithmetic must find a tie or a near-tie (within 2 float32 ulps) of the block
    scale or of the element."""
    torch.manual_seed(5)
    x = (torch.randn(2048, 16) * 3).bfloat16()
    g = nvfp4_global_scale(x.abs().amax().float(), "amax/(6*448)")
    base = _bytes("nvfp4", x, g)
    differing = 0
    for name, order in ORDERS.items():
        gs = g if order.global_scale == "decode" else 1 / g
        codes, scales = _bytes("nvfp4", x, gs, name)
        for b in ((codes != base[0]).any(-1) | (scales.flatten() != base[1].flatten())).nonzero().flatten().tolist():
            differing += 1
            ex = exact_block("nvfp4", x[b].tolist(), Fraction(float(g)))
            if scales.flatten()[b] != base[1].flatten()[b]:
                assert ex.scale_tie or ex.scale_boundary_distance <= 2, (name, b)
            else:
                diff = (codes[b] != base[0][b]).nonzero().flatten().tolist()
                assert all(ex.elements[j].tie or ex.elements[j].boundary_distance <= 2 for j in diff), (name, b)
    assert differing > 0            # bfloat16 data reaches such blocks: the orders are not the same rule in float32


def test_default_order_is_documented_and_the_registered_recipe_uses_it():
    assert DEFAULT_ORDER == "mul_rcp" and ri.get_recipe("nvfp4").order.name == DEFAULT_ORDER
    assert {o.global_scale for o in ORDERS.values()} == {"decode", "encode"}


def test_named_order_cases_hold_in_their_order_and_differ_in_the_other():
    for a, b in (("nvfp4/order_scale_near_tie", "nvfp4/order_scale_near_tie_div"),
                 ("nvfp4/order_element_near_tie", "nvfp4/order_element_near_tie_div")):
        ca, cb = CASES[a], CASES[b]
        assert ca.values == cb.values and ca.global_scale == cb.global_scale
        for case, other in ((ca, cb), (cb, ca)):
            q = case_recipe(other).quantize(case_input(case), case.global_scale)
            differs = q.scales.flatten().tolist() != [case.scale_byte] or unpack_nibbles(q.packed)[0].tolist() != case_codes(case)
            assert differs, (case.name, other.name)


def test_each_order_decodes_like_its_implementation():
    """Every code under every finite E4M3 scale byte, against each implementation's decode written out."""
    g = nvfp4_global_scale(14.0, "amax/(6*448)")
    codes = torch.arange(16, dtype=torch.uint8).repeat(126, 1)
    sf_bytes = torch.arange(126, dtype=torch.int32).to(torch.uint8)
    v = E2M1.decode_tensor(codes)
    sf = sf_bytes.view(torch.float8_e4m3fn).float().unsqueeze(-1)
    expected = {
        "mul_rcp": (v * sf) * g,          # NVIDIA: E2M1 * sf is exact, one rounding by g
        "div": v * (sf * g),              # ModelOpt: per_block_scale = sf * g first
        "div_rcp_g": v * (g * sf),        # torchao: get_hp_scales() = g * sf
        "encode_div": v * (sf / (1 / g)),   # compressed-tensors: scale / global_scale, G = 1/g
    }
    for name, want in expected.items():
        gs = g if ORDERS[name].global_scale == "decode" else 1 / g
        got = nvfp4_with_order(name).decode_blocks(codes, sf_bytes, gs)
        assert torch.equal(got, want), name
    assert not torch.equal(expected["mul_rcp"], expected["div"])     # the decodes differ somewhere


def test_exact_rounding_helpers():
    assert round_exact(Fraction(3, 4), E2M1, Rounding.NEAREST_EVEN)[:2] == (2, True)
    assert to_float32(Fraction(1, 3)) == torch.tensor(1 / 3, dtype=torch.float32).item()
    assert to_float32(Fraction(2) ** 200) == math.inf


# ---- command line ----------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "nvfp4_kvcache", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_takes_pt_files_an_order_policies_and_prints_json(tmp_path):
    case = CASES["nvfp4/order_element_near_tie"]
    x = case_input(case).repeat(2, 1)
    x[1] = 0
    q = nvfp4_with_order("div").quantize(x, case.global_scale)
    scales = q.scales.clone()
    scales[1] = 0x38                                      # a peer's zero-block byte
    torch.save(x, tmp_path / "x.pt")
    torch.save(q.packed.view(torch.float4_e2m1fn_x2), tmp_path / "p.pt")
    torch.save(scales.view(torch.float8_e4m3fn), tmp_path / "s.pt")
    common = ["verify", "--recipe", "nvfp4", "--input", str(tmp_path / "x.pt"), "--packed", str(tmp_path / "p.pt"),
              "--scales", str(tmp_path / "s.pt"), "--global-scale", repr(case.global_scale)]
    default = _cli(*common, "--json")
    assert default.returncode == 1
    data = json.loads(default.stdout)
    assert data["classes"]["codes/near_tie"] == 1 and data["classes"]["scale/zero_block"] == 1 and not data["ok"]
    told = _cli(*common, "--order", "div", "--ignore-zero-block-scale", "--json")
    assert told.returncode == 0, told.stdout + told.stderr
    assert json.loads(told.stdout)["forgiven"] == {"ignore_zero_block_scale/scales": 1}
    text = _cli(*common, "--order", "div")
    assert text.returncode == 1 and "order of operations: div" in text.stdout and "scale/zero_block 1" in text.stdout
    bad = _cli(*common, "--near-tie-ulps", "-1")
    assert bad.returncode == 2 and "near_tie_ulps" in bad.stderr
    torch.save({"not": "a tensor"}, tmp_path / "d.pt")
    junk = _cli(*common[:-2], "--global-scale", "0.01", "--scales", str(tmp_path / "d.pt"))
    assert junk.returncode == 2 and "not a tensor" in junk.stderr
