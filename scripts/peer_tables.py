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
    from peerlab.named import NOT_ON_ONE_BLOCK, cases_for

    rows = []
    for d in peers():
        for e in d["entries"]:
            for cls, rep in e.get("reproducers", {}).items():
                if "values" in rep:
                    vals = ", ".join(f"[{i}]={v}" for i, v in rep["values"].items()) or "all +0"
                    g = _fmt(rep["global_scale"], 9) if rep.get("global_scale") is not None else "–"
                    cases = ", ".join(f"`{c}`" for c in cases_for(e["id"], cls)) or "–"
                    rows.append([f"`{e['id']}`", f"`{cls}`", SHORT.get(rep["dtype"], rep["dtype"]), vals, g,
                                 _bytes(rep["oracle"]), _bytes(rep["peer"]), cases])
                else:
                    rows.append([f"`{e['id']}`", f"`{cls}`", SHORT.get(rep["dtype"], rep["dtype"]), str(rep["value"]), "–",
                                 f"0x{rep['oracle']:02X}", f"0x{rep['peer']:02X}", "–"])
    out = _table(["entry", "class", "dtype", "block (other elements +0)", "global scale", "oracle bytes",
                  "peer bytes", "named case"], rows)
    if NOT_ON_ONE_BLOCK:
        out += ("\n\nClasses no single block shows (their case is only required to still differ):\n\n"
                + "\n".join(f"- `{eid}` `{cls}` (case {', '.join(f'`{c}`' for c in cases_for(eid, cls))}): {why}."
                             for (eid, cls), why in NOT_ON_ONE_BLOCK.items()))
    return out


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


# ---- FlashInfer: the CPU formula scan and the GPU byte conformance --------------------------------

FLASHINFER_FORMULA = DATA / "flashinfer_formula.json"
"""The CPU scan of FlashInfer's writer formulas (`scripts/flashinfer_exact.py scan`)."""
FLASHINFER_GPU = DATA / "flashinfer.json"
"""The GPU byte conformance of FlashInfer's writers (`scripts/flashinfer_conformance.py`), when committed."""

_FI_TALLY = {"flashinfer right": "peer", "oracle right": "oracle", "both right": "both", "neither right": "neither"}


def flashinfer_verdict(differing: int, verdicts: dict[str, int]) -> str:
    """The lab's verdict (`peerlab.referee.VERDICTS`) from FlashInfer's exact decisions, the way the
    referee derives it: FlashInfer is the peer, "undefined: NaN in block" is unspecified."""
    if not differing:
        return "agrees"
    d = {"peer": 0, "oracle": 0, "both": 0, "neither": 0}
    for k, n in verdicts.items():
        if k in _FI_TALLY:
            d[_FI_TALLY[k]] += n
    if not any(d.values()):
        return "unspecified"
    if d["peer"] == d["both"] == 0 and d["oracle"] > 0:
        return "peer_deviates"
    if d["oracle"] == d["both"] == 0 and d["peer"] > 0:
        return "oracle_deviates"
    return "mixed"


def _fi_verdicts(v: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(v.items())) or "–"


_FI_FORMULAS = (("flashinfer_division", "`flashinfer/paged_writer` (division form)"),
                ("flashinfer_precise", "`flashinfer/mla_writer` (reciprocal form)"))


def _fi_formula(path: Path | None) -> dict | None:
    path = path or FLASHINFER_FORMULA
    return json.loads(path.read_text()) if path.exists() else None


def peers_flashinfer_formula(path: Path | None = None) -> str:
    """FlashInfer 0.7.4's writer formulas against the oracle's product form: one matrix row per writer,
    one column per global scale (verdict and differing blocks)."""
    d = _fi_formula(path)
    if d is None:
        return "No FlashInfer formula scan: `docs/data/peers/flashinfer_formula.json` is missing."
    writers = _FI_FORMULAS
    rows = []
    for key, label in writers:
        row = [label, "`nvfp4`"]
        for r in d["rows"]:
            w = r[key]
            sym = SYMBOLS[flashinfer_verdict(w["differing_blocks"], w["verdicts"])]
            row.append(sym if not w["differing_blocks"] else f"{sym} {w['differing_blocks']}")
        rows.append(row)
    head = (f"{d['blocks']:,} `{d['dtype']}` blocks per global scale, IEEE `float32` arithmetic "
            f"({d['device']}, torch {d['versions']['torch']}, {d['date'][:10]}; `{d['command']}`), from "
            f"{d['flashinfer_source']}. Each cell: the verdict and the number of blocks whose bytes differ from "
            "the oracle's (default order, NVIDIA's product form).\n\n")
    return head + _table(["writer formula", "compared with"] + [f"g = {_fmt(r['global_scale'], 6)}" for r in d["rows"]],
                         rows)


def peers_flashinfer_formula_detail(path: Path | None = None) -> str:
    """Every (writer formula, global scale) that differs: counts, exact decisions (sampled) and verdict."""
    d = _fi_formula(path)
    if d is None:
        return "No FlashInfer formula scan: `docs/data/peers/flashinfer_formula.json` is missing."
    writers = _FI_FORMULAS
    detail = []
    for r in d["rows"]:
        for key, label in writers:
            w = r[key]
            if w["differing_blocks"]:
                detail.append([label, _fmt(r["global_scale"], 6), w["differing_blocks"], w["scale_byte_diffs"],
                               f"{_fi_verdicts(w['verdicts'])} (of {w['decided']} decided)",
                               flashinfer_verdict(w["differing_blocks"], w["verdicts"]).replace("_", " ")])
    return _table(["writer formula", "g", "blocks differing", "scale bytes differing", "exact decisions", "verdict"],
                  detail)


def _fi_load(path: Path | None, data: dict | None) -> dict | None:
    if data is not None:
        return data
    path = path or FLASHINFER_GPU
    return json.loads(path.read_text()) if path.exists() else None


FLASHINFER_NOT_COMMITTED = (
    "**The GPU run is not committed.** `docs/data/peers/flashinfer.json`, written by "
    "`scripts/flashinfer_conformance.py` on a GPU, is not in the repository yet: no FlashInfer byte on this page "
    "comes from a GPU, and the rows above are the CPU scan of FlashInfer's formulas only.")
"""What the page says while the GPU result is missing."""

_FI_WRITERS = ("append_NHD", "append_HND", "slot_mapping_NHD", "slot_mapping_4over6_NHD", "mla")


def _fi_cell(r: dict | None) -> tuple[str, int, dict]:
    """(symbol and count, differing blocks, verdicts) of one writer on one class."""
    if r is None:
        return " ", 0, {}
    if "error" in r:
        return SYMBOLS["error"], 0, {}
    if "ckv_blocks" in r:          # the MLA writer: latent blocks and the FP8 rope bytes
        n = max(r["ckv_scale_byte_diffs"], r["ckv_code_diff_blocks"])
        verdicts = dict(r["ckv_verdicts"])
        if r["kpe_diffs"]:
            n += r["kpe_diffs"]
            for k, v in r["kpe_verdicts"].items():
                verdicts[k] = verdicts.get(k, 0) + v
    else:
        n, verdicts = r["differing_blocks"], r["verdicts"]
    sym = SYMBOLS[flashinfer_verdict(n, verdicts)]
    return (sym if not n else f"{sym} {n}"), n, verdicts


def peers_flashinfer(path: Path | None = None, data: dict | None = None) -> str:
    """FlashInfer's GPU writers against the oracle, byte for byte, per writer and input class; or, while the
    GPU result is not committed, a sentence saying so."""
    d = _fi_load(path, data)
    if d is None:
        return FLASHINFER_NOT_COMMITTED
    env = d.get("flashinfer", {})
    head = (f"FlashInfer {env.get('flashinfer', '?')} on {d['device']} (torch {d['versions']['torch']}, CUDA "
            f"{d['versions'].get('cuda')}), {d['date'][:10]}, `{d['command']}`. Each cell: the verdict from the "
            "exact decisions and the number of differing blocks (MLA: latent blocks plus FP8 rope bytes); "
            f"{SYMBOLS['error']} the writer raised.\n\n")
    totals: dict[str, dict] = {}
    rows = []
    for dname, cases in d["results"].items():
        for cname, res in cases.items():
            cells = []
            for w in _FI_WRITERS:
                cell, n, verdicts = _fi_cell(res.get(w))
                cells.append(cell)
                t = totals.setdefault(w, {"classes": 0, "differing": 0, "stray": 0, "verdicts": {}, "errors": 0,
                                          "model_blocks": 0, "model_misses": 0, "model_miss_classes": []})
                r = res.get(w) or {}
                t["errors"] += "error" in r
                fm = r.get("fastmath_model")
                if fm:
                    t["model_blocks"] += fm["blocks"]
                    t["model_misses"] += fm["mismatch_blocks"]
                    if fm["mismatch_blocks"]:
                        t["model_miss_classes"].append(f"{SHORT.get(dname, dname)} `{cname}`")
                t["classes"] += bool(n)
                t["differing"] += n
                t["stray"] += r.get("stray_blocks", r.get("stray_rows", 0))
                for k, v in verdicts.items():
                    t["verdicts"][k] = t["verdicts"].get(k, 0) + v
            dq = res.get("dequantize_paged", {})
            dq_cell = (SYMBOLS["error"] if "error" in dq else
                       " ".join("✓" if v["differ"] == 0 else f"✗ {v['differ']}" for v in dq.values()) or " ")
            rows.append([SHORT.get(dname, dname), f"`{cname}`"] + cells + [dq_cell])
    def model(t: dict) -> str:
        if not t["model_blocks"]:
            return "–"
        where = f" ({', '.join(t['model_miss_classes'])})" if t["model_miss_classes"] else ""
        return f"{t['model_misses']} of {t['model_blocks']}{where}"

    summary = [[f"`{w}`", t["classes"], t["differing"], t["stray"], _fi_verdicts(t["verdicts"]), model(t), t["errors"]]
               for w, t in totals.items()]
    fm_note = d.get("fastmath_model", "")
    ref = d.get("fourover6_reference")
    note = f"\n\nThe 4-over-6 writer is compared with the {ref}." if ref else ""
    return (head + _table(["dtype", "input class"] + [f"`{w}`" for w in _FI_WRITERS]
                          + ["`dequantize_paged` (bf16 fp16 out)"], rows)
            + "\n\nTotals per writer:\n\n"
            + _table(["writer", "classes with differences", "differing blocks", "stray writes",
                      "exact decisions (sampled)", "blocks the fast-math model misses", "errors"], summary)
            + (f"\n\nThe fast-math model: FlashInfer's formula computed with the instructions its compiled writer "
               f"uses ({fm_note})." if fm_note and not fm_note.startswith("unavailable") else "") + note)


def peers_flashinfer_reproducers(path: Path | None = None, data: dict | None = None) -> str:
    """One reproducer per FlashInfer writer and exact verdict: the block, the global scale and both bytes."""
    d = _fi_load(path, data)
    if d is None:
        return ""          # peers_flashinfer says the GPU run is not committed
    import struct

    def f32(h: str) -> float:
        return struct.unpack(">f", bytes.fromhex(h))[0]

    seen: set[tuple[str, str]] = set()
    found: dict[tuple, dict] = {}                 # one row per distinct block and bytes, writers joined
    for dname, cases in d["results"].items():
        for cname, res in cases.items():
            for w in _FI_WRITERS:
                r = res.get(w) or {}
                rep = r.get("reproducer") or r.get("ckv_reproducer")
                if not rep or (w, rep["verdict"]) in seen:
                    continue
                seen.add((w, rep["verdict"]))
                key = (tuple(rep["inputs_f32_hex"]), rep["global_scale_f32_hex"], json.dumps(rep["flashinfer"]),
                       json.dumps(rep["oracle"]))
                row = found.setdefault(key, {"writers": [], "dtype": dname, "class": cname, "rep": rep})
                row["writers"].append(f"`{w}`")
    if not found:
        return "No FlashInfer writer differs from the oracle: no reproducer."
    rows = []
    for (hexes, g, _, _), row in found.items():
        rep = row["rep"]
        vals = ", ".join(f"[{i}]={f32(h)!r}" for i, h in enumerate(hexes) if f32(h) != 0 or h.startswith("8")) or "all +0"
        rows.append([", ".join(row["writers"]), SHORT.get(row["dtype"], row["dtype"]), f"`{row['class']}`", vals,
                     repr(f32(g)), _bytes(rep["oracle"]), _bytes(rep["flashinfer"]), rep["verdict"]])
    return ("One block per writer and exact verdict (the first the run kept; writers that kept the same block share "
            "a row):\n\n" + _table(["writers", "dtype", "input class", "block (16 values)", "global scale",
                                      "oracle bytes", "FlashInfer bytes", "exact verdict"], rows))
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
    "peers_flashinfer_formula": peers_flashinfer_formula,
    "peers_flashinfer_formula_detail": peers_flashinfer_formula_detail,
    "peers_flashinfer": peers_flashinfer,
    "peers_flashinfer_reproducers": peers_flashinfer_reproducers,
}
"""Name -> function returning Markdown."""
