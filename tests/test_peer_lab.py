"""The peer lab's referee on synthetic peers built from the oracle: each verdict is reachable and right.

No peer library is needed: a "peer" here is the oracle with one rule changed, so the expected
verdict is known. The real peers run in `tests/test_peer_conformance.py`.
"""

from __future__ import annotations

import torch

from nvfp4_kvcache.packing import pack_nibbles, unpack_nibbles
from nvfp4_kvcache.recipes import get_recipe
from nvfp4_kvcache.recipes.nvfp4 import nvfp4_with_order
from peerlab.base import Entry, PeerResult, finite_amax
from peerlab.inputs import INPUT_CLASSES, make_input
from peerlab.referee import VERDICTS, compare, find_reproducer, rerun_reproducer


def _entry(run, recipe="nvfp4", order=None, same_rule=True) -> Entry:
    return Entry(id="synthetic/x", recipe=recipe, rule="", api="", source="", run=run, order=order, same_rule=same_rule)


def _oracle_peer(recipe: str, order: str | None = None, mutate=None):
    r = nvfp4_with_order(order) if order else get_recipe(recipe)

    def run(x, g):
        if g is None and r.needs_global_scale:
            g = float(finite_amax(x)) / 2688     # amax / (6 * 448), as ModelOpt and torchao derive it
        q = r.quantize(x, g)
        codes, scales = unpack_nibbles(q.packed).reshape(-1, r.block_size), q.scales.reshape(-1).clone()
        if mutate:
            ones = torch.full_like(codes, 2)     # code 2 decodes to 1.0: the block's multiplier
            unit = r.decode_blocks(ones, scales, q.global_scale)[:, :1]
            codes, scales = mutate(x.float().reshape(-1, r.block_size), codes.clone(), scales, unit)
        packed = pack_nibbles(codes.reshape(x.shape))
        dec = r.dequantize_parts(packed, scales.reshape(q.scales.shape), q.global_scale, torch.float32)
        return PeerResult(packed, scales.reshape(q.scales.shape), dec, None if g is None else float(g))

    return run


def _zero_block_scale(x, codes, scales, unit):      # a peer that writes 0x38 (1.0) for all-zero blocks
    return codes, torch.where((x == 0).all(-1), torch.full_like(scales, 0x38), scales)


def _drop_negative_zero(x, codes, scales, unit):    # code 8 -> 0 (the sign of zero lost)
    return torch.where(codes == 8, torch.zeros_like(codes), codes), scales


def _ties_away(x, codes, scales, unit):       # elements at exact E2M1 midpoints round away from zero
    mids = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    tie = torch.isin((x / unit).abs(), mids)
    return torch.where(tie & ((codes & 7) % 2 == 0), codes + 1, codes), scales


def test_verdict_vocabulary_is_documented():
    assert {"agrees", "same_values", "peer_deviates", "different_rule", "decode_arithmetic", "unspecified",
            "mixed", "refused", "oracle_deviates"} == set(VERDICTS)


def test_the_oracle_itself_agrees_everywhere():
    e = _entry(_oracle_peer("nvfp4"))
    for cls in INPUT_CLASSES:
        x = make_input(cls, "bfloat16", 8, 16, True, 0)
        out, differing = compare(e, x, e.run(x, None))
        assert out["verdict"] == "agrees" and differing == [], cls


def test_another_order_is_not_a_deviation_once_the_oracle_is_told():
    x = make_input("normal", "bfloat16", 512, 16, True, 3)
    e_told = _entry(_oracle_peer("nvfp4", order="div"), order="div")
    out, _ = compare(e_told, x, e_told.run(x, None))
    assert out["verdict"] == "agrees"
    assert out["default_order"]["codes"] + out["default_order"]["scales"] > 0   # the default order differs


def test_zero_block_scale_is_same_values_and_unspecified():
    e = _entry(_oracle_peer("nvfp4", mutate=_zero_block_scale))
    x = make_input("zeros", "float32", 8, 16, True, 0)
    out, _ = compare(e, x, e.run(x, None))
    assert out["verdict"] == "same_values"
    assert out["classes"] == {"scale/zero_block": out["counts"]["scales"]}
    assert out["decided"]["unspecified"] == out["counts"]["scales"]


def test_lost_negative_zero_is_same_values_and_the_exact_rule_keeps_the_sign():
    e = _entry(_oracle_peer("mxfp4", mutate=_drop_negative_zero), recipe="mxfp4")
    x = make_input("zeros", "float32", 8, 32, False, 0)
    out, _ = compare(e, x, e.run(x, None))
    assert out["verdict"] == "same_values" and "codes/signed_zero" in out["classes"]
    assert out["decided"]["oracle"] > 0 and out["decided"]["peer"] == 0


def test_ties_rounded_away_are_a_deviation_with_a_reproducer():
    """In ModelOpt's order (division) an exact tie stays a tie in float32; NVIDIA's reciprocal
    order moves ties whose block scale has no exact reciprocal, which exact arithmetic would call
    the oracle's deviation, so the synthetic peer divides."""
    e = _entry(_oracle_peer("nvfp4", order="div", mutate=_ties_away), order="div")
    x = make_input("ties", "float32", 16, 16, True, 0)
    res = e.run(x, None)
    out, differing = compare(e, x, res)
    assert out["verdict"] == "peer_deviates"
    assert out["classes"].get("codes/tie", 0) > 0
    assert out["decided"]["oracle"] == out["decided"]["decided_of"] > 0
    assert out["errors"]["extra_mse"] > 0
    rep = find_reproducer(e, x, res, "codes/tie", differing)
    assert rep is not None and 1 <= len(rep["values"]) <= 16
    assert rerun_reproducer(e, rep) == {"oracle": rep["oracle"], "peer": rep["peer"]}


def test_a_different_rule_is_named_so():
    e = _entry(_oracle_peer("nvfp4", order="div", mutate=_ties_away), order="div", same_rule=False)
    x = make_input("ties", "float32", 16, 16, True, 0)
    out, _ = compare(e, x, e.run(x, None))
    assert out["verdict"] == "different_rule"


def test_decode_arithmetic_alone_is_its_own_verdict():
    r = get_recipe("nvfp4")

    def run(x, g):
        g = 0.0123 if g is None else g
        q = r.quantize(x, g)
        dec = r.dequantize(q, torch.float32)
        return PeerResult(q.packed, q.scales, torch.nextafter(dec, torch.full_like(dec, float("inf"))), g)

    e = _entry(run)
    x = make_input("normal", "float32", 4, 16, True, 0)
    out, _ = compare(e, x, e.run(x, None))
    assert out["verdict"] == "decode_arithmetic"
    assert out["decode_correctly_rounded"] == "oracle"
