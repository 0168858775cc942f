"""The peer conformance lab: every peer library's FP4 quantizers against the oracle, class by class.

usage:

```text
python scripts/peer_conformance.py                  # the full run: writes docs/data/peers/<peer>.json
python scripts/peer_conformance.py --peer torchao   # one peer
python scripts/peer_conformance.py --quick --check  # CI: a slice of the same inputs, checked against the data
```

For every peer entry (one API of one library, compared with one oracle recipe), input dtype
(`bfloat16`, `float16`, `float32`) and input class (`peerlab.inputs.INPUT_CLASSES`), the lab runs
the peer, tells the oracle the peer's global scale and order of operations, and records the counts
of differing codes, scale bytes and decoded values, the classes of the mismatches, an exact-
arithmetic decision of who follows the rule, the error each output makes on the differing
blocks, a verdict, and one minimal reproducer per class of mismatch. A peer that is not installed
is recorded with the reason. An entry whose recipe the oracle does not have yet is recorded as
waiting for it and compared as soon as the recipe exists.

`--quick` runs the first rows of the same inputs with the global scales the data recorded (so a
row's bytes do not depend on how many rows ran), then checks that nothing differs in the quick run
that the data does not show, that every class the data says agrees still agrees, that every
recorded reproducer still gives the recorded bytes, and that the installed versions are the
recorded ones. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "scripts")):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402

import nvfp4_kvcache  # noqa: E402
from nvfp4_kvcache.recipes import RECIPES, get_recipe  # noqa: E402
from nvfp4_kvcache.recipes.nvfp4 import get_order  # noqa: E402

from peerlab import casts_peer, compressed_tensors_peer, modelopt_peer, sglang_peer, torch_mx_peer, torchao_peer  # noqa: E402
from peerlab.base import Entry, Peer, finite_amax, version_of  # noqa: E402
from nvfp4_kvcache.cases import CASES, case_codes, case_input, case_recipe  # noqa: E402
from nvfp4_kvcache.oracle import compare_with_oracle  # noqa: E402
from nvfp4_kvcache.packing import unpack_nibbles  # noqa: E402
from peerlab.inputs import DTYPES, INPUT_CLASSES, make_input  # noqa: E402
from peerlab.named import NAMED, NOT_ON_ONE_BLOCK  # noqa: E402
from peerlab.referee import VERDICTS, compare, find_reproducer, oracle_recipe, rerun_reproducer  # noqa: E402

PEERS: dict[str, Peer] = {p.name: p for p in (
    torchao_peer.PEER, modelopt_peer.PEER, compressed_tensors_peer.PEER, torch_mx_peer.PEER, sglang_peer.PEER,
    casts_peer.TORCH_CASTS, casts_peer.ML_DTYPES,
)}
"""Every peer, by name (the order of the Peers chapter)."""

DATA = ROOT / "docs" / "data" / "peers"
FULL_ROWS = 512
QUICK_ROWS = 8
SEED = 0
FORMAT_VERSION = 1


def _json_safe(obj):
    """Non-finite floats as strings ("nan", "inf", "-inf"), tuples as lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def log(*a) -> None:
    print(*a, flush=True)


def _seed(cls: str, dtype: str) -> int:
    return SEED + 1000 * list(INPUT_CLASSES).index(cls) + list(DTYPES).index(dtype)


def run_entry(entry: Entry, rows: int, recorded: dict | None = None, reproducers: bool = True) -> dict:
    """All dtypes x input classes of one entry. `recorded`: the data's results, whose global scales are reused."""
    out = {"id": entry.id, "recipe": entry.recipe, "rule": entry.rule, "api": entry.api, "source": entry.source,
           "global_scale": entry.global_scale, "order": entry.order,
           "order_formula": get_order(entry.order).formula if entry.order else None,
           "dtypes": list(entry.dtypes), "note": entry.note}
    if entry.recipe not in RECIPES:
        out["status"] = f"waiting for recipe {entry.recipe!r}: not in this oracle yet"
        out["results"] = []
        return out
    out["status"] = "ran"
    recipe = get_recipe(entry.recipe)
    results, inputs = [], {}
    for dtype in DTYPES:
        for cls in INPUT_CLASSES:
            full = make_input(cls, dtype, FULL_ROWS, recipe.block_size, recipe.needs_global_scale, _seed(cls, dtype))
            x = full[:rows]
            row = {"dtype": dtype, "input_class": cls}
            if dtype not in entry.dtypes:
                try:
                    entry.run(x, None)
                    row.update(status="ran_unexpectedly")
                except Exception as e:  # noqa: BLE001 - recorded: the peer refuses this dtype
                    row.update(status="refused", verdict="refused", error=f"{type(e).__name__}: {str(e)[:200]}")
                results.append(row)
                continue
            g = None
            if recorded is not None:   # the data's global scale: a row's bytes then do not depend on the rest
                prev = next((r for r in recorded["results"] if r["dtype"] == dtype and r["input_class"] == cls), None)
                g = None if prev is None else prev.get("global_scale")
            try:
                if recipe.needs_global_scale and g is None:
                    g = entry.run(full, None).global_scale   # the peer's convention, on the whole input
                res = entry.run(x, g)
            except Exception as e:  # noqa: BLE001
                row.update(status="error", verdict="error", error=f"{type(e).__name__}: {str(e)[:300]}")
                results.append(row)
                continue
            row["status"] = "ran"
            row["global_scale"] = res.global_scale
            summary, differing = compare(entry, x, res)
            row.update(summary)
            results.append(row)
            inputs[(dtype, cls)] = (x, res, differing)
    out["results"] = results
    if reproducers:
        out["reproducers"] = _reproducers(entry, results, inputs)
    return out


def _reproducers(entry: Entry, results: list[dict], inputs: dict) -> dict:
    """One minimal reproducer per class of mismatch the entry shows (first input that has it)."""
    found: dict[str, dict] = {}
    for row in results:
        for cls in row.get("classes", {}):
            if cls in found:
                continue
            x, res, differing = inputs[(row["dtype"], row["input_class"])]
            rep = find_reproducer(entry, x, res, cls, differing)
            if rep is not None:
                rep["from"] = {"dtype": row["dtype"], "input_class": row["input_class"]}
                found[cls] = rep
        if row.get("counts", {}).get("decoded") and not row.get("classes") and "decoded" not in found:
            x, res, differing = inputs[(row["dtype"], row["input_class"])]
            rep = find_reproducer(entry, x, res, "decoded", differing)
            if rep is not None:
                rep["from"] = {"dtype": row["dtype"], "input_class": row["input_class"]}
                found["decoded"] = rep
    return found


def meta(mode: str, rows: int) -> dict:
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).date().isoformat(),
        "command": "python scripts/peer_conformance.py" + (" --quick" if mode == "quick" else ""),
        "mode": mode, "rows_per_input": rows, "row_width": 64, "seed": SEED,
        "machine": f"CPU ({platform.machine()}), {platform.system()}",
        "python": platform.python_version(),
        "versions": {"torch": torch.__version__.split("+")[0], "nvfp4_kvcache": nvfp4_kvcache.__version__,
                     "ml_dtypes": version_of("ml_dtypes"), "numpy": version_of("numpy"),
                     "transformers": version_of("transformers")},
        "format_version": FORMAT_VERSION,
        "verdicts": VERDICTS,
        "input_classes": {k: v.what for k, v in INPUT_CLASSES.items()},
    }


def run_peer(peer: Peer, rows: int, mode: str, recorded: dict | None = None) -> dict:
    version = peer.version or version_of(peer.distribution)
    out = {"peer": peer.name, "distribution": peer.distribution, "version": version, "homepage": peer.homepage,
           "meta": meta(mode, rows)}
    t0 = time.time()
    try:
        entries = peer.load()
    except Exception as e:  # noqa: BLE001 - recorded: the peer cannot run here
        out["status"] = f"not runnable here: {type(e).__name__}: {str(e)[:300]}"
        out["entries"] = []
        log(f"{peer.name}: {out['status']}")
        return out
    out["status"] = "ran"
    out["import_seconds"] = round(time.time() - t0, 1)
    out["entries"] = []
    for entry in entries:
        t1 = time.time()
        prev = None if recorded is None else next((e for e in recorded["entries"] if e["id"] == entry.id), None)
        if recorded is not None and prev is None:
            out["entries"].append({"id": entry.id, "status": "not in the data"})
            continue
        res = entry.run_entry(rows, prev) if hasattr(entry, "run_entry") else run_entry(entry, rows, prev, reproducers=mode == "full")
        out["entries"].append(res)
        log(f"  {entry.id}: {res['status']} ({time.time() - t1:.1f} s)")
    return out


def check(quick: dict, data: dict) -> list[str]:
    """Problems found comparing a quick run with the committed data of one peer."""
    problems = []
    name = data["peer"]
    if quick["version"] != data["version"]:
        problems.append(f"{name}: installed version {quick['version']} but the data was measured with {data['version']}")
    if quick["meta"]["versions"]["torch"] != data["meta"]["versions"]["torch"]:
        problems.append(f"{name}: torch {quick['meta']['versions']['torch']} but the data used {data['meta']['versions']['torch']}")
    if quick["status"] != data["status"]:
        problems.append(f"{name}: status {quick['status']!r}, data says {data['status']!r}")
    for qe in quick["entries"]:
        de = next((e for e in data["entries"] if e["id"] == qe["id"]), None)
        if de is None or qe.get("status") == "not in the data":
            problems.append(f"{qe['id']}: not in the data (re-run the lab)")
            continue
        if qe["status"] != de["status"]:
            problems.append(f"{qe['id']}: status {qe['status']!r}, data says {de['status']!r} (re-run the lab)")
            continue
        for qr in qe.get("results", []):
            dr = next(r for r in de["results"] if r["dtype"] == qr["dtype"] and r["input_class"] == qr["input_class"])
            where = f"{qe['id']} {qr['dtype']} {qr['input_class']}"
            if qr["status"] != dr["status"]:
                problems.append(f"{where}: {qr['status']}, data says {dr['status']}")
                continue
            if qr["status"] != "ran":
                continue
            for k in ("codes", "scales", "decoded"):
                if qr["counts"][k] and not dr["counts"][k]:
                    problems.append(f"{where}: {qr['counts'][k]} {k} differ, the data says none")
            for cls in qr.get("classes", {}):
                if cls not in dr.get("classes", {}):
                    problems.append(f"{where}: mismatches of class {cls}, which the data does not show")
            if dr["verdict"] == "agrees" and qr["verdict"] != "agrees":
                problems.append(f"{where}: verdict {qr['verdict']}, the data says agrees")
    return problems


def check_reproducers(peer: Peer, data: dict, entries: dict[str, Entry]) -> list[str]:
    problems = []
    for de in data["entries"]:
        entry = entries.get(de["id"])
        if entry is None:
            continue
        for cls, rep in de.get("reproducers", {}).items():
            now = entry.rerun_reproducer(rep) if hasattr(entry, "rerun_reproducer") else rerun_reproducer(entry, rep)
            if now["peer"] != rep["peer"] or now["oracle"] != rep["oracle"]:
                problems.append(f"{de['id']} reproducer {cls}: now {now}, recorded peer {rep['peer']} oracle {rep['oracle']}")
    return problems


def named_problems(entry: Entry, cls: str, name: str) -> list[str]:
    """What no longer holds for one named case mapped to one class of one entry: the oracle must
    give the case's bytes, the peer other bytes, and (unless `NOT_ON_ONE_BLOCK` says the class needs
    many blocks) a mismatch of that class."""
    case = CASES[name]
    x = case_input(case)
    q = case_recipe(case).quantize(x, case.global_scale)
    oracle = (int(q.scales.flatten()[0]), unpack_nibbles(q.packed.reshape(1, -1))[0].tolist())
    if oracle != (case.scale_byte, case_codes(case)):
        return [f"named case {name}: the oracle gives scale byte {oracle[0]} and codes {oracle[1]}, the case says "
                f"{case.scale_byte} and {case_codes(case)}"]
    res = entry.run(x, case.global_scale)
    codes = unpack_nibbles(res.packed.reshape(1, -1))[0].tolist()
    if res.scales.flatten().tolist() == [case.scale_byte] and codes == case_codes(case):
        return [f"{entry.id}: now gives the bytes of named case {name} (its class {cls}): re-run the lab"]
    rep = compare_with_oracle(oracle_recipe(entry), x, res.packed.reshape(1, -1), res.scales, res.global_scale,
                              max_rows=0, max_block_rows=0)
    if (entry.id, cls) in NOT_ON_ONE_BLOCK:
        if rep.classes.get(cls):
            return [f"{entry.id}: named case {name} now shows class {cls} on one block: drop it from NOT_ON_ONE_BLOCK"]
        return []
    if not rep.classes.get(cls):
        shown = {k: v for k, v in rep.classes.items() if v}
        return [f"{entry.id}: on named case {name} the peer no longer shows class {cls} (it shows {shown}): "
                "re-run the lab and map the class to a case that pins it"]
    return []


def check_named(entries: dict[str, Entry], named: dict | None = None) -> list[str]:
    """Each named case mapped to a peer's class of mismatch must still tell the peer from the oracle,
    in that class (`named_problems`). `named`: the mapping (default `peerlab.named.NAMED`)."""
    problems = []
    for eid, classes in (NAMED if named is None else named).items():
        entry = entries.get(eid)
        if entry is None:
            continue
        for cls, names in classes.items():
            for name in (names,) if isinstance(names, str) else names:
                problems += named_problems(entry, cls, name)
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", action="append", choices=sorted(PEERS), help="only these peers (default: all)")
    ap.add_argument("--quick", action="store_true", help=f"the first {QUICK_ROWS} rows of each input, global scales from the data")
    ap.add_argument("--check", action="store_true", help="compare with the data in docs/data/peers (with --quick)")
    ap.add_argument("--rows", type=int, default=FULL_ROWS, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help="where to write the JSON files (default docs/data/peers; "
                                                          "nothing is written by --quick --check)")
    args = ap.parse_args(argv)
    names = args.peer or list(PEERS)
    problems: list[str] = []
    for name in names:
        peer = PEERS[name]
        log(f"{name}:")
        if args.quick:
            data_path = DATA / f"{name}.json"
            data = json.loads(data_path.read_text()) if data_path.exists() else None
            if data is None:
                problems.append(f"{name}: no data file {data_path.relative_to(ROOT)}")
                continue
            res = run_peer(peer, QUICK_ROWS, "quick", recorded=data)
            if args.check:
                problems += check(res, data)
                if res["status"] == "ran":
                    entries = {e.id: e for e in peer.load()}
                    problems += check_reproducers(peer, data, entries)
                    problems += check_named(entries)
        else:
            res = run_peer(peer, args.rows, "full")
        if args.out or not args.quick:
            out = (args.out or DATA) / f"{name}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(_json_safe(res), indent=1, allow_nan=False) + "\n")
            log(f"wrote {out}")
    for p in problems:
        log("PROBLEM:", p)
    if args.check:
        log(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # pragma: no cover - a crash is reported, not swallowed
        traceback.print_exc()
        sys.exit(2)
