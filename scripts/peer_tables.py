"""Markdown tables of the Peers chapter, from `docs/data/peers/*.json` (written by `scripts/peer_conformance.py`).

Registered in `scripts/tables.py`; print one with `python scripts/tables.py peers_matrix`.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "peers"

PEER_ORDER = ["torchao", "modelopt", "compressed_tensors", "torch_mx", "sglang", "torch_casts", "ml_dtypes"]
"""Peers in the chapter's order (one data file each)."""

SYMBOLS = {
    "agrees": "✓",
    "same_values": "=",
    "peer_deviates": "✗",
    "oracle_deviates": "◇",
    "different_rule": "≠",
    "decode_arithmetic": "~",
    "unspecified": "?",
    "mixed": "±",
    "refused": "–",
    "error": "!",
}
"""One symbol per verdict, in the matrix."""

DTYPE_ORDER = ("bfloat16", "float16", "float32")
SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def load(name: str) -> dict:
    """One peer's data file."""
    return json.loads((DATA / f"{name}.json").read_text())


def peers() -> list[dict]:
    """Every peer's data, in chapter order (missing files are skipped)."""
    return [load(n) for n in PEER_ORDER if (DATA / f"{n}.json").exists()]


def _table(header: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _fmt(v, digits: int = 3) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, str):
        return v
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def _results(entry: dict, cls: str) -> dict[str, dict]:
    return {r["dtype"]: r for r in entry.get("results", []) if r["input_class"] == cls}


def peers_versions() -> str:
    """What ran: each peer, its version, how it was run, and its entries."""
    rows = []
    for d in peers():
        ids = ", ".join(f"`{e['id'].split('/', 1)[1]}`" for e in d["entries"])
        rows.append([f"[{d['peer']}]({d['homepage']})", d["version"] or "–", d["status"], ids])
    meta = peers()[0]["meta"]
    return (f"Measured {meta['date']} on {meta['machine']}, Python {meta['python']}, torch {meta['versions']['torch']}, "
            f"with `{meta['command']}` ({meta['rows_per_input']} rows of {meta['row_width']} values per input class "
            f"and dtype).\n\n" + _table(["peer", "version", "status", "entries"], rows))


def peers_matrix() -> str:
    """Entry x input class; each cell the verdicts for bf16, fp16, fp32."""
    meta = peers()[0]["meta"]
    classes = list(meta["input_classes"])
    rows = []
    for d in peers():
        for e in d["entries"]:
            if not e.get("results"):
                rows.append([f"`{e['id']}`", f"`{e['recipe']}`"] + [e["status"]] + [""] * (len(classes) - 1))
                continue
            cells = []
            for c in classes:
                res = _results(e, c)
                cells.append(" ".join(SYMBOLS.get(res[t]["verdict"], "!") if t in res else " " for t in DTYPE_ORDER))
            rows.append([f"`{e['id']}`", f"`{e['recipe']}`"] + cells)
    legend = ", ".join(f"{s} {k.replace('_', ' ')}" for k, s in SYMBOLS.items())
    return ("Each cell: the verdict for bf16, fp16 and fp32 input, in that order. " + legend + ".\n\n"
            + _table(["entry", "compared with"] + [f"`{c}`" for c in classes], rows))


def _decided(r: dict) -> str:
    d = r.get("decided", {})
    parts = [f"{k} {d[k]}" for k in ("oracle", "peer", "both", "neither", "unspecified") if d.get(k)]
    if d.get("decided_of", 0) > sum(d.get(k, 0) for k in ("oracle", "peer", "both", "neither", "unspecified")):
        parts.append(f"of {d['decided_of']}")
    return ", ".join(parts) or "–"


def peers_detail(name: str) -> str:
    """Every result of one peer that is not a plain agreement: counts, classes, exact decisions, cost."""
    d = load(name)
    rows = []
    for e in d["entries"]:
        for r in e.get("results", []):
            if r["status"] != "ran" or r["verdict"] == "agrees":
                continue
            c = r["counts"]
            err = r.get("errors", {})
            classes = ", ".join(f"{k} {v}" for k, v in r.get("classes", {}).items())
            rows.append([
                f"`{e['id'].split('/', 1)[1]}`", SHORT[r["dtype"]], f"`{r['input_class']}`", c["codes"], c["scales"],
                c["decoded"], classes, _decided(r), r["verdict"].replace("_", " "),
                _fmt(err.get("extra_mse_relative")),
                f"{_fmt(err.get('peer_max_abs_error'))} / {_fmt(err.get('oracle_max_abs_error'))}",
            ])
    refused = sorted({(e["id"], SHORT[r["dtype"]], r.get("error", "")) for e in d["entries"] for r in e.get("results", [])
                      if r["status"] != "ran"})
    note = ""
    if refused:
        by_entry: dict[str, set] = {}
        for eid, dt, err in refused:
            by_entry.setdefault((eid, err), set()).add(dt)
        note = "\n\nNot run: " + "; ".join(f"`{eid}` on {', '.join(sorted(dts))} ({err})" for (eid, err), dts in by_entry.items()) + "."
    if not rows:
        return "Every class agrees with the oracle." + note
    n = d["meta"]["rows_per_input"] * d["meta"]["row_width"]
    return (f"Counts are elements (codes, decoded values) and blocks (scale bytes) out of {n} values per input. "
            "'exact' counts the differing blocks whose bytes exact arithmetic gives to the oracle, the peer, "
            "both, neither, or leaves unspecified. The cost is measured on the blocks that differ: the peer's "
            "squared error minus the oracle's, relative to the mean square of the input there (negative: the "
            "peer is closer to the input), and the largest absolute error of each.\n\n"
            + _table(["entry", "dtype", "input", "codes", "scales", "decoded", "classes", "exact", "verdict",
                      "extra MSE (rel.)", "max err peer / oracle"], rows) + note)


def _bytes(b: dict) -> str:
    nz = {i: c for i, c in enumerate(b["codes"]) if c}
    return f"0x{b['scale_byte']:02X}; " + (", ".join(f"[{i}]=0x{c:X}" for i, c in nz.items()) or "all 0")


def peers_reproducers() -> str:
    """One minimal block per class of mismatch and entry: input, global scale, the oracle's and the peer's bytes,
    and the named case that pins the class in the oracle's own tests."""
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    from peerlab.named import NAMED

    rows = []
    for d in peers():
        for e in d["entries"]:
            for cls, rep in e.get("reproducers", {}).items():
                if "values" in rep:
                    vals = ", ".join(f"[{i}]={v}" for i, v in rep["values"].items()) or "all +0"
                    g = _fmt(rep["global_scale"], 9) if rep.get("global_scale") is not None else "–"
                    case = NAMED.get(e["id"], {}).get(cls)
                    rows.append([f"`{e['id']}`", f"`{cls}`", SHORT.get(rep["dtype"], rep["dtype"]), vals, g,
                                 _bytes(rep["oracle"]), _bytes(rep["peer"]), f"`{case}`" if case else "–"])
                else:
                    rows.append([f"`{e['id']}`", f"`{cls}`", SHORT.get(rep["dtype"], rep["dtype"]), str(rep["value"]), "–",
                                 f"0x{rep['oracle']:02X}", f"0x{rep['peer']:02X}", "–"])
    return _table(["entry", "class", "dtype", "block (other elements +0)", "global scale", "oracle bytes",
                   "peer bytes", "named case"], rows)


def peers_order() -> str:
    """NVFP4 peers: differing codes and scale bytes with the oracle's default order and with the peer's own."""
    rows = []
    for d in peers():
        for e in d["entries"]:
            if not e.get("order") or not e.get("results"):
                continue
            for r in e["results"]:
                if r["status"] != "ran" or "default_order" not in r:
                    continue
                dflt = r["default_order"]
                if dflt["codes"] == r["counts"]["codes"] and dflt["scales"] == r["counts"]["scales"]:
                    continue
                rows.append([f"`{e['id']}`", f"`{e['order']}`", SHORT[r["dtype"]], f"`{r['input_class']}`",
                             f"{dflt['codes']} / {dflt['scales']}", f"{r['counts']['codes']} / {r['counts']['scales']}"])
    return _table(["entry", "its order", "dtype", "input", "default order: codes / scales",
                   "its order: codes / scales"], rows)


def peers_orders_used() -> str:
    """Each NVFP4 peer's global-scale convention and the order the oracle was told."""
    rows = []
    for d in peers():
        for e in d["entries"]:
            if e.get("global_scale"):
                rows.append([f"`{e['id']}`", e["global_scale"], f"`{e['order']}`", e.get("order_formula") or ""])
    return _table(["entry", "global scale (as the peer derives and takes it)", "oracle order", "formula"], rows)


def peers_calls() -> str:
    """The exact calls each entry makes, and the rule it was read to implement."""
    rows = []
    for d in peers():
        for e in d["entries"]:
            rows.append([f"`{e['id']}`", f"`{e['api']}`", e["rule"], e.get("note") or ""])
    return _table(["entry", "calls", "rule (from the released code)", "note"], rows)


def flashinfer_formula() -> str:
    """Where FlashInfer's paged writer formulas and the oracle's differ, per global scale
    (`docs/data/peers/flashinfer_formula.json`, written by `scripts/flashinfer_exact.py scan`)."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from flashinfer_exact import render_scan_markdown

    return render_scan_markdown(load("flashinfer_formula"))


TABLES = {
    "flashinfer_formula": flashinfer_formula,
    "peers_versions": peers_versions,
    "peers_matrix": peers_matrix,
    "peers_reproducers": peers_reproducers,
    "peers_order": peers_order,
    "peers_orders_used": peers_orders_used,
    "peers_calls": peers_calls,
    **{f"peers_detail.{n}": (lambda n=n: peers_detail(n)) for n in PEER_ORDER},
}
"""Name -> function returning Markdown."""
