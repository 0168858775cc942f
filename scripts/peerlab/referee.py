"""Compare one peer result with the oracle, decide who follows the rule, and measure what it costs.

For one entry, dtype and input class:

1. the oracle quantizes the same input with the peer's global scale and order of operations
   (`nvfp4_kvcache.oracle.compare_with_oracle` gives the counts per class of mismatch);
2. codes, scale bytes and decoded values are counted where they differ;
3. every block that differs (up to `MAX_DECIDED`) is decided in exact rational arithmetic
   (`nvfp4_kvcache.exact`): does the peer's byte, the oracle's, both or neither follow the
   recipe's rule? Where the rule says nothing (the scale of an all-zero block, anything in a NaN
   block) the block is "unspecified";
4. the error of both outputs against the input, on the blocks that differ;
5. a verdict derived from those counts (never from how many peers agree).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from nvfp4_kvcache.exact import exact_block, to_float32
from nvfp4_kvcache.formats import E2M1
from nvfp4_kvcache.oracle import compare_with_oracle
from nvfp4_kvcache.packing import unpack_nibbles
from nvfp4_kvcache.recipes import get_recipe
from nvfp4_kvcache.recipes.nvfp4 import DEFAULT_ORDER, get_order, nvfp4_with_order

from peerlab.base import Entry, PeerResult

__all__ = ["MAX_DECIDED", "VERDICTS", "oracle_recipe", "compare", "exact_scale", "find_reproducer"]

MAX_DECIDED = 256
"""Blocks decided in exact arithmetic per comparison (the slowest step; the rest are counted)."""

VERDICTS = {
    "agrees": "codes, scale bytes and decoded values all equal the oracle's",
    "same_values": "bytes differ, decoded values are equal (an encoding the rule leaves free, or a signed zero)",
    "peer_deviates": "where they differ, the peer's bytes never follow the recipe's rule in exact arithmetic and the "
                     "oracle's do (blocks where the oracle's float32 order misses the exact rule too count as 'neither')",
    "oracle_deviates": "in exact arithmetic the peer's bytes follow the rule and the oracle's (in this order) do not",
    "different_rule": "the peer implements another scale rule on purpose; the counts say where it differs from the recipe",
    "decode_arithmetic": "bytes are equal, decoded values differ: exact arithmetic says whose decode is correctly rounded",
    "unspecified": "every differing block holds a NaN or an infinity, or is all zeros: the rule leaves the bytes free",
    "mixed": "some differing blocks go one way, some the other (counts in 'decided')",
    "refused": "the peer raises on this input dtype",
}
"""Every verdict, with what it means."""


def oracle_recipe(entry: Entry):
    """The oracle recipe object the entry is compared with (its order of operations applied)."""
    return nvfp4_with_order(entry.order) if entry.order else get_recipe(entry.recipe)


def exact_scale(entry: Entry, g: float | None) -> Fraction | None:
    """The exact decode multiplier behind the number handed to the oracle (`1/G` for encode orders)."""
    if g is None:
        return None
    g = Fraction(float(torch.tensor(g, dtype=torch.float32)))   # the float32 the oracle and the peer hold
    if entry.order and get_order(entry.order).global_scale == "encode":
        return 1 / g
    return g


def _same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a == b) | (torch.isnan(a) & torch.isnan(b))


def _errors(x: torch.Tensor, peer: torch.Tensor, oracle: torch.Tensor, blocks: torch.Tensor, block: int) -> dict:
    """Squared and absolute errors against the input on the given blocks, finite inputs only."""
    xb = x.double().reshape(-1, block)[blocks]
    pb = peer.double().reshape(-1, block)[blocks]
    ob = oracle.double().reshape(-1, block)[blocks]
    finite = torch.isfinite(xb)
    out = {"blocks": int(blocks.numel()), "elements": int(finite.sum())}
    if not finite.any():
        return out
    pe, oe = (pb - xb)[finite], (ob - xb)[finite]
    out["peer_nonfinite"] = int((~torch.isfinite(pe)).sum())
    out["oracle_nonfinite"] = int((~torch.isfinite(oe)).sum())
    pe, oe = pe[torch.isfinite(pe) & torch.isfinite(oe)], oe[torch.isfinite(pe) & torch.isfinite(oe)]
    if pe.numel():
        ms = float(xb[finite].pow(2).mean())
        out.update({
            "peer_mse": float(pe.pow(2).mean()),
            "oracle_mse": float(oe.pow(2).mean()),
            "extra_mse": float(pe.pow(2).mean() - oe.pow(2).mean()),
            "extra_mse_relative": float((pe.pow(2).mean() - oe.pow(2).mean()) / ms) if ms > 0 else None,
            "peer_max_abs_error": float(pe.abs().max()),
            "oracle_max_abs_error": float(oe.abs().max()),
        })
    return out


def _decide(entry: Entry, x: torch.Tensor, res: PeerResult, o, p, blocks: torch.Tensor) -> dict:
    """Exact-arithmetic decision for each block whose bytes differ (up to MAX_DECIDED)."""
    recipe = get_recipe(entry.recipe)
    g = exact_scale(entry, res.global_scale)
    flat = x.float().reshape(-1, recipe.block_size)
    tally = {"peer": 0, "oracle": 0, "both": 0, "neither": 0, "unspecified": 0}
    for b in blocks[:MAX_DECIDED].tolist():
        vals = flat[b]
        if not torch.isfinite(vals).all() or (vals == 0).all():
            tally["unspecified"] += 1
            continue
        ex = exact_block(entry.recipe, vals.tolist(), g)
        ex_codes = torch.tensor(ex.codes, dtype=torch.uint8)
        oracle_ok = int(o["scales"][b]) == ex.scale_byte and torch.equal(o["codes"][b], ex_codes)
        peer_ok = int(p["scales"][b]) == ex.scale_byte and torch.equal(p["codes"][b], ex_codes)
        tally["both" if oracle_ok and peer_ok else "oracle" if oracle_ok else "peer" if peer_ok else "neither"] += 1
    tally["decided_of"] = int(blocks.numel())
    return tally


def _decide_decode(entry: Entry, res: PeerResult, o, p, elements: torch.Tensor) -> dict:
    """For elements whose bytes agree and decoded values differ: the exact product
    `E2M1[code] * scale * g`, rounded once to `float32`, against both decodes."""
    recipe = get_recipe(entry.recipe)
    g = exact_scale(entry, res.global_scale)
    unit = oracle_recipe(entry).decode_blocks(
        torch.full((o["scales"].numel(), recipe.block_size), 2, dtype=torch.uint8), o["scales"],
        None if g is None else torch.tensor(1.0))[:, 0]          # the block scale alone (exact)
    tally = {"peer": 0, "oracle": 0, "both": 0, "neither": 0, "unspecified": 0}
    for i in elements[:MAX_DECIDED * 4].tolist():
        b, j = divmod(i, recipe.block_size)
        code_value = E2M1.decode(int(o["codes"][b, j]))
        if not math.isfinite(float(unit[b])):
            tally["unspecified"] += 1
            continue
        exact = to_float32(Fraction(code_value) * Fraction(float(unit[b])) * (g if g is not None else 1))
        ov, pv = float(o["decoded"].flatten()[i]), float(p["decoded"].flatten()[i])
        oracle_ok, peer_ok = ov == exact, pv == exact
        tally["both" if oracle_ok and peer_ok else "oracle" if oracle_ok else "peer" if peer_ok else "neither"] += 1
    tally["decided_of"] = int(elements.numel())
    return tally


def _verdict(entry: Entry, counts: dict, decided: dict) -> str:
    if counts["codes"] == counts["scales"] == counts["decoded"] == 0:
        return "agrees"
    if counts["decoded"] == 0:
        return "same_values"
    if counts["codes"] == counts["scales"] == 0:
        return "decode_arithmetic"
    d = {k: decided.get(k, 0) for k in ("peer", "oracle", "both", "neither", "unspecified")}
    specified = d["peer"] + d["oracle"] + d["both"] + d["neither"]
    if specified == 0:
        return "unspecified"
    if not entry.same_rule:
        return "different_rule"
    if d["peer"] == d["both"] == 0 and d["oracle"] > 0:      # the peer never follows the rule where they differ
        return "peer_deviates"                               # ("neither": the oracle's float32 order misses too)
    if d["oracle"] == d["both"] == 0 and d["peer"] > 0:
        return "oracle_deviates"
    return "mixed"


def compare(entry: Entry, x: torch.Tensor, res: PeerResult, max_rows: int = 6) -> tuple[dict, list[int]]:
    """Everything the lab records for one (entry, dtype, input class).

    Returns:
        A JSON-ready dict (counts of differing codes / scale bytes / decoded values, the oracle
        report's classes, the same counts under the oracle's default order (NVFP4), the exact
        decisions, the errors on the differing blocks, the verdict and sample rows), and the
        indices of the blocks that differ (where a reproducer is looked for).
    """
    recipe = get_recipe(entry.recipe)
    block = recipe.block_size
    r = oracle_recipe(entry)
    q = r.quantize(x, res.global_scale)
    o_codes = unpack_nibbles(q.packed).reshape(-1, block)
    p_codes = unpack_nibbles(res.packed.reshape(q.packed.shape)).reshape(-1, block)
    o_scales = q.scales.reshape(-1)
    p_scales = res.scales.reshape(-1)
    o_dec = r.dequantize(q, torch.float32)
    p_dec = res.decoded if res.decoded is not None else r.dequantize_parts(
        res.packed.reshape(q.packed.shape), res.scales.reshape(q.scales.shape), q.global_scale, torch.float32)
    p_dec = p_dec.reshape(x.shape).float()
    bad_code = o_codes != p_codes
    bad_scale = o_scales != p_scales
    bad_value = ~_same(o_dec.reshape(-1, block), p_dec.reshape(-1, block))
    counts = {"elements": int(o_codes.numel()), "blocks": int(o_scales.numel()),
              "codes": int(bad_code.sum()), "scales": int(bad_scale.sum()), "decoded": int(bad_value.sum())}
    report = compare_with_oracle(r, x, res.packed.reshape(q.packed.shape), res.scales, res.global_scale,
                                 max_rows=max_rows, max_block_rows=3)
    out = {"counts": counts, "classes": {k: v for k, v in report.classes.items() if v}}
    if entry.order and entry.order != DEFAULT_ORDER:   # what the oracle's default order would report
        encode = get_order(entry.order).global_scale == "encode"
        g0 = float(1 / torch.tensor(res.global_scale, dtype=torch.float32)) if encode else res.global_scale
        d = compare_with_oracle(entry.recipe, x, res.packed.reshape(q.packed.shape), res.scales, g0,
                                max_rows=0, max_block_rows=0)
        out["default_order"] = {"global_scale": g0, "codes": d.code_mismatches, "scales": d.scale_mismatches}
    differing = (bad_code.any(-1) | bad_scale | bad_value.any(-1)).nonzero().flatten()
    bytes_differ = (bad_code.any(-1) | bad_scale).nonzero().flatten()
    o = {"codes": o_codes, "scales": o_scales, "decoded": o_dec}
    p = {"codes": p_codes, "scales": p_scales, "decoded": p_dec}
    out["decided"] = _decide(entry, x, res, o, p, bytes_differ)
    same_bytes = ~(bad_code | bad_scale.unsqueeze(-1))
    decode_only = (bad_value & same_bytes).flatten().nonzero().flatten()
    if decode_only.numel():
        out["decided_decode"] = _decide_decode(entry, res, o, p, decode_only)
    out["errors"] = _errors(x, p_dec, o_dec, differing, block) if differing.numel() else {"blocks": 0}
    out["verdict"] = _verdict(entry, counts, out["decided"])
    if out["verdict"] == "decode_arithmetic":
        dd = out["decided_decode"]
        out["decode_correctly_rounded"] = "oracle" if dd["oracle"] == dd["decided_of"] else "peer" if dd["peer"] == dd["decided_of"] else "mixed"
    out["rows"] = [{k: v for k, v in row.items() if k in ("index", "input", "expected_code", "actual_code",
                                                          "expected_value", "actual_value", "flag", "class",
                                                          "expected_scale", "actual_scale")}
                   for row in report.rows]
    out["block_rows"] = [{k: v for k, v in row.items() if k in ("block", "amax", "expected_scale", "actual_scale",
                                                                "expected_scale_value", "actual_scale_value", "flag",
                                                                "class")}
                         for row in report.block_rows]
    return out, differing.tolist()


def _primary_class(entry: Entry, x: torch.Tensor, res: PeerResult) -> str | None:
    rep = compare_with_oracle(oracle_recipe(entry), x, res.packed, res.scales, res.global_scale,
                              max_rows=0, max_block_rows=0)
    if rep.code_mismatches == rep.scale_mismatches == 0:
        q = oracle_recipe(entry).quantize(x, res.global_scale)
        if res.decoded is not None and not bool(_same(oracle_recipe(entry).dequantize(q), res.decoded.float()).all()):
            return "decoded"
        return None
    return next(k for k, v in rep.classes.items() if v)


def find_reproducer(entry: Entry, x: torch.Tensor, res: PeerResult, cls: str, candidates: list[int]) -> dict | None:
    """A smallest block showing mismatch class `cls`: the first of the `candidates` blocks of `x`
    that shows it on its own, with elements set to +0.0 one at a time while the class persists
    (global scale held fixed).

    Returns:
        `{"values": {position: value}, "dtype", "global_scale", "class", "oracle": {...}, "peer": {...}}`
        or `None` when no single block reproduces the class on its own.
    """
    block = get_recipe(entry.recipe).block_size
    flat = x.reshape(-1, block)
    r = oracle_recipe(entry)
    g = res.global_scale
    for b in candidates[:64]:
        cand = flat[b:b + 1].clone()
        try:
            one = entry.run(cand, g)
        except Exception:   # noqa: BLE001 - a peer may refuse a lone block; try the next one
            continue
        if _primary_class(entry, cand, one) != cls:
            continue
        for i in range(block):
            if cand[0, i] == 0 and not torch.signbit(cand[0, i]):
                continue
            trial = cand.clone()
            trial[0, i] = 0.0
            try:
                if _primary_class(entry, trial, entry.run(trial, g)) == cls:
                    cand = trial
            except Exception:  # noqa: BLE001
                pass
        one = entry.run(cand, g)
        q = r.quantize(cand, g)
        vals = {i: float(v) for i, v in enumerate(cand[0].float().tolist()) if v != 0 or math.copysign(1, v) < 0}
        return {
            "class": cls,
            "dtype": str(cand.dtype).removeprefix("torch."),
            "values": vals,
            "global_scale": g,
            "oracle": {"scale_byte": int(q.scales.flatten()[0]), "codes": unpack_nibbles(q.packed)[0].tolist()},
            "peer": {"scale_byte": int(one.scales.flatten()[0]), "codes": unpack_nibbles(one.packed.reshape(1, -1))[0].tolist()},
        }
    return None


def rerun_reproducer(entry: Entry, rep: dict) -> dict:
    """Run a recorded reproducer again: the peer's and the oracle's bytes now."""
    block = get_recipe(entry.recipe).block_size
    x = torch.zeros(1, block, dtype=torch.float32)
    for i, v in rep["values"].items():
        x[0, int(i)] = float(v)   # "nan" and "inf" are stored as strings
    x = x.to(getattr(torch, rep["dtype"]))
    one = entry.run(x, rep["global_scale"])
    q = oracle_recipe(entry).quantize(x, rep["global_scale"])
    return {
        "oracle": {"scale_byte": int(q.scales.flatten()[0]), "codes": unpack_nibbles(q.packed)[0].tolist()},
        "peer": {"scale_byte": int(one.scales.flatten()[0]), "codes": unpack_nibbles(one.packed.reshape(1, -1))[0].tolist()},
    }

