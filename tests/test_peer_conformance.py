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


def test_every_class_a_block_peer_fails_has_a_named_case():
    """A class of mismatch in the data without a named case would be untested by the oracle's own suite."""
    from nvfp4_kvcache.cases import CASES
    from peerlab.named import NAMED

    for name in lab.PEERS:
        d = json.loads((lab.DATA / f"{name}.json").read_text())
        for e in d["entries"]:
            if e.get("kind") == "cast":
                continue
            for r in e.get("results", []):
                for cls in r.get("classes", {}):
                    if cls == "codes/scale_differs":   # a consequence of a differing scale byte, not a class of its own
                        continue
                    case = NAMED.get(e["id"], {}).get(cls)
                    assert case in CASES, f"{e['id']} fails on {cls} ({r['dtype']} {r['input_class']}) with no named case"


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
