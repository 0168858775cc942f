"""The peer conformance lab in its quick mode, against the committed data in `docs/data/peers/`.

One process imports every peer library once (tens of seconds on a small machine) and runs the first
rows of the lab's inputs with the global scales the data recorded. The check fails when a peer
now differs where the data says it agreed, shows a class of mismatch the data does not, gives other
bytes for a recorded reproducer, or is installed at another version than the data was measured with.
The full run is `python scripts/peer_conformance.py`.
"""

from __future__ import annotations

import json

import peer_conformance as lab


def test_quick_run_holds_against_the_committed_data(capsys):
    status = lab.main(["--quick", "--check"])
    out = capsys.readouterr().out
    assert status == 0, "\n".join(line for line in out.splitlines() if line.startswith("PROBLEM"))


def test_every_peer_has_data_and_every_data_file_a_peer():
    # FlashInfer's files come from its own GPU scripts (flashinfer_conformance.py, flashinfer_exact.py)
    files = sorted(p.stem for p in lab.DATA.glob("*.json") if not p.stem.startswith("flashinfer"))
    assert files == sorted(lab.PEERS)


def test_data_records_versions_calls_and_conventions():
    for name in lab.PEERS:
        d = json.loads((lab.DATA / f"{name}.json").read_text())
        assert d["meta"]["mode"] == "full" and d["meta"]["date"] and d["meta"]["versions"]["torch"]
        assert d["version"], name
        for e in d["entries"]:
            assert e["api"] and e["rule"], e["id"]
            if e["recipe"] == "nvfp4":
                assert e["global_scale"] and e["order"], e["id"]
            for r in e.get("results", []):
                assert r["verdict"] in lab.VERDICTS or r["status"] != "ran", (e["id"], r)


def _block_classes() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(entry id, class of mismatch) -> [(dtype, input class)] over every block peer's data."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for name in lab.PEERS:
        d = json.loads((lab.DATA / f"{name}.json").read_text())
        for e in d["entries"]:
            if e.get("kind") == "cast":
                continue
            for r in e.get("results", []):
                for cls in r.get("classes", {}):
                    if cls != "codes/scale_differs":   # a consequence of a differing scale byte, not a class of its own
                        out.setdefault((e["id"], cls), []).append((r["dtype"], r["input_class"]))
    return out


def test_every_class_a_block_peer_fails_has_a_named_case():
    """A class of mismatch in the data without a named case would be untested by the oracle's own suite."""
    from nvfp4_kvcache.cases import CASES
    from peerlab.named import cases_for

    for (eid, cls), where in _block_classes().items():
        names = cases_for(eid, cls)
        assert names and all(n in CASES for n in names), f"{eid} fails on {cls} ({where[0]}) with no named case"


def test_every_mapping_and_exception_is_for_a_class_the_data_shows():
    """A class that disappears from the data (a peer fixed, a lab re-run) leaves a stale mapping: noticed here.
    A class excused from one-block cases must have no one-block reproducer in the data."""
    from peerlab.named import NAMED, NOT_ON_ONE_BLOCK

    shown = _block_classes()
    for eid, classes in NAMED.items():
        for cls in classes:
            assert (eid, cls) in shown, f"NAMED maps {eid} {cls}, which the data no longer shows"
    for eid, cls in NOT_ON_ONE_BLOCK:
        assert cls in NAMED.get(eid, {}), (eid, cls)
        peer = eid.split("/")[0]
        d = json.loads((lab.DATA / f"{peer}.json").read_text())
        e = next(e for e in d["entries"] if e["id"] == eid)
        assert cls not in e.get("reproducers", {}), f"{eid} {cls} has a one-block reproducer: not an exception"


def test_the_named_cases_of_peer_classes_are_the_exact_rule():
    """Who is right is decided in exact rational arithmetic: on every finite, non-zero case that pins a
    peer's class, `nvfp4_kvcache.exact` gives the case's bytes (the oracle's), not the peer's."""
    import math
    from fractions import Fraction

    import torch

    from nvfp4_kvcache.cases import CASES, case_codes, case_input
    from nvfp4_kvcache.exact import exact_block
    from nvfp4_kvcache.recipes.nvfp4 import get_order
    from peerlab.named import NAMED, cases_for

    checked = set()
    for eid, classes in NAMED.items():
        for cls in classes:
            for name in cases_for(eid, cls):
                case = CASES[name]
                values = case_input(case).float()[0].tolist()
                if name in checked or not all(map(math.isfinite, values)) or not any(values):
                    continue
                g = None
                if case.global_scale is not None:
                    g = Fraction(float(torch.tensor(case.global_scale, dtype=torch.float32)))
                    if case.order and get_order(case.order).global_scale == "encode":
                        g = 1 / g
                ex = exact_block(case.recipe, values, g)
                assert (ex.scale_byte, list(ex.codes)) == (case.scale_byte, case_codes(case)), name
                checked.add(name)
    assert len(checked) >= 12


# ---- the check of the named cases, tested on synthetic peers (the oracle with one rule changed) ----

def _rceil_peer(*mutations):
    """An `mxfp4_rceil` "peer": the oracle, then each mutation `(x, codes, scale bytes) -> codes`."""
    from nvfp4_kvcache.packing import pack_nibbles, unpack_nibbles
    from nvfp4_kvcache.recipes import get_recipe
    from peerlab.base import Entry, PeerResult

    r = get_recipe("mxfp4_rceil")

    def run(x, g):
        q = r.quantize(x)
        codes = unpack_nibbles(q.packed).reshape(-1, r.block_size)
        for m in mutations:
            codes = m(x.float().reshape(-1, r.block_size), codes.clone(), q.scales.reshape(-1))
        return PeerResult(pack_nibbles(codes.reshape(x.shape)), q.scales, None)

    return Entry(id="synthetic/rceil", recipe="mxfp4_rceil", rule="", api="", source="", run=run)


def _ties_toward_zero(x, codes, scales):          # ModelOpt's MXFP4 element rounding
    import torch

    from nvfp4_kvcache.formats import E2M1

    y = (x / torch.exp2(scales.double() - 127).unsqueeze(-1)).abs()
    table = torch.tensor(E2M1.magnitudes, dtype=torch.float64)
    mag = (codes & 7).long()
    lower = (mag - 1).clamp(min=0)
    tie = (mag > 0) & (y * 2 == table[mag] + table[lower])
    return torch.where(tie, codes - 1, codes)


def _positive_zero_as_eight(x, codes, scales):    # ModelOpt's sign bit of +0.0
    import torch

    return torch.where((x == 0) & ~torch.signbit(x), torch.full_like(codes, 8), codes)


def test_check_named_passes_a_peer_that_still_differs_in_its_class():
    named = {"synthetic/rceil": {"codes/tie": "mxfp4_rceil/ties_even_no_zeros",
                                 "codes/signed_zero": "mxfp4_rceil/positive_zero_in_block"}}
    peer = _rceil_peer(_ties_toward_zero, _positive_zero_as_eight)
    assert lab.check_named({peer.id: peer}, named) == []


def test_check_named_notices_a_class_that_disappears():
    """A peer fixed (the oracle's bytes), or one that still differs on the case but no longer in the
    mapped class: both are reported."""
    named = {"synthetic/rceil": {"codes/tie": "mxfp4_rceil/ties_even_no_zeros"}}
    fixed = _rceil_peer()
    assert any("now gives the bytes" in p for p in lab.check_named({fixed.id: fixed}, named))
    named = {"synthetic/rceil": {"codes/tie": "mxfp4_rceil/positive_zero_in_block"}}
    other = _rceil_peer(_ties_toward_zero, _positive_zero_as_eight)
    problems = lab.check_named({other.id: other}, named)
    assert any("no longer shows class codes/tie" in p and "codes/signed_zero" in p for p in problems), problems


def test_check_named_notices_a_stale_exception(monkeypatch):
    import peerlab.named

    named = {"synthetic/rceil": {"codes/tie": "mxfp4_rceil/ties_even_no_zeros"}}
    peer = _rceil_peer(_ties_toward_zero)
    monkeypatch.setitem(peerlab.named.NOT_ON_ONE_BLOCK, ("synthetic/rceil", "codes/tie"), "test")
    monkeypatch.setattr(lab, "NOT_ON_ONE_BLOCK", peerlab.named.NOT_ON_ONE_BLOCK)
    assert any("drop it from NOT_ON_ONE_BLOCK" in p for p in lab.check_named({peer.id: peer}, named))


def test_a_mutant_named_case_fails(monkeypatch):
    """Every case that pins a peer's class, with its scale byte or one code changed, is rejected
    before the peer is even run: the oracle no longer gives the case's bytes."""
    import dataclasses

    from nvfp4_kvcache.cases import CASES
    from peerlab.named import NAMED, cases_for

    peer = _rceil_peer()
    names = sorted({n for eid, classes in NAMED.items() for cls in classes for n in cases_for(eid, cls)})
    assert len(names) >= 20
    for name in names:
        case = CASES[name]
        first = min(case.codes) if case.codes else 0
        for mutant in (dataclasses.replace(case, scale_byte=case.scale_byte ^ 1),
                       dataclasses.replace(case, codes={**case.codes, first: case.codes.get(first, 0) ^ 1})):
            monkeypatch.setitem(CASES, name, mutant)
            problems = lab.named_problems(peer, "codes/tie", name)
            assert problems and "the oracle gives" in problems[0], (name, mutant)
        monkeypatch.setitem(CASES, name, case)


def test_the_check_notices_what_changed():
    """The check itself can fail: a class that agreed and now differs, a new class, another version,
    a reproducer whose bytes moved. Shown on the cheapest peer's data."""
    import copy

    data = json.loads((lab.DATA / "torch_casts.json").read_text())
    assert lab.check(copy.deepcopy(data), data) == []
    changed = copy.deepcopy(data)
    row = next(r for e in changed["entries"] for r in e["results"] if r["status"] == "ran" and r["verdict"] == "agrees")
    row.update(verdict="peer_deviates", classes={"cast/other": 1})
    row["counts"]["codes"] = 1
    problems = lab.check(changed, data)
    assert any("the data says none" in p for p in problems) and any("does not show" in p for p in problems)
    assert any("verdict peer_deviates, the data says agrees" in p for p in problems)
    changed = copy.deepcopy(data)
    changed["version"] = "0.0.0"
    assert any("installed version 0.0.0" in p for p in lab.check(changed, data))
    moved = copy.deepcopy(data)
    entry = next(e for e in moved["entries"] if e.get("reproducers"))
    rep = next(iter(entry["reproducers"].values()))
    rep["peer"] = (rep["peer"] + 1) % 256
    entries = {e.id: e for e in lab.PEERS["torch_casts"].load()}
    assert lab.check_reproducers(lab.PEERS["torch_casts"], moved, entries)
