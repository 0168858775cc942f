"""Markdown for the Kernels chapter's performance section, rendered from
`docs/data/perf/quant_kernels.json` (written on a GPU by `scripts/bench_quant_kernels.py`).

The docs build calls these through `docs/hooks/generated.py`; `scripts/tables.py` registers them.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "perf" / "quant_kernels.json"

GOAL_FRAC = 0.85
"""Goal: quantize and dequantize at this share of the copy bandwidth or better."""
GOAL_SPEEDUP = 20.0
"""Goal: quantize this many times faster than upstream's compiled quantizer, or better."""


def load(path: Path = DATA) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _table(header: list[str], rows: list[list[object]], align: str = "") -> str:
    align = align or "|" + "---|" * len(header)
    return "\n".join(["| " + " | ".join(header) + " |", align]
                     + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]) + "\n"


def provenance(data: dict | None = None) -> str:
    """Card, software, date, command, the copy ceiling and the shape of the measured run."""
    d = data or load()
    v, sh = d["versions"], d["shape"]
    if isinstance(d["copy"], dict):  # `benchkit.timing.ceilings`, the method every page uses
        how = d["copy"]["method"]
    else:  # runs before it: the larger of two copies
        how = ("bytes read + written, the larger of " + ", ".join(f"{r['bytes'] / 2**21:.0f} MiB" for r in d["copy"])
               + " copies")
    return (f"Measured on **{d['device']}** ({d['sm_count']} SMs), torch {v['torch']}, Triton {v['triton']}, "
            f"CUDA {v['cuda']}, Python {v['python']}, on {d['date'][:10]}, by `{d['command']}`. "
            f"Ceiling: a device-to-device copy moved **{d['copy_gbps']:.0f} GB/s** ({how}). Shape: {sh['tokens']} tokens x {sh['heads']} heads x "
            f"{sh['head_dim']}, {sh['dtype']}; bytes counted: {d['bytes_rule']}. Times are medians.\n")


def main_table(data: dict | None = None) -> str:
    """Every operation and recipe at the main shape, ours and upstream's."""
    d = data or load()
    up = {r["op"]: r for r in d.get("upstream", [])}
    rows = []
    for r in d["main"]:
        base = up.get(r["op"]) if r["op"] in ("quantize", "dequantize") else None
        rows.append([f"`{r['recipe']}`", r["op"], "Triton", f"{r['us']:.1f}", f"{r['gbps']:.0f}",
                     f"{r['frac_of_copy']:.1%}", f"{base['us'] / r['us']:.1f}x" if base else ""])
    for r in d.get("upstream", []):
        rows.append([f"`{r['recipe']}`", r["op"], r["impl"], f"{r['us']:.1f}", f"{r['gbps']:.0f}",
                     f"{r['frac_of_copy']:.1%}", "1.0x"])
    out = _table(["recipe", "operation", "implementation", "median µs", "GB/s", "of copy", "vs upstream"],
                 rows, "|---|---|---|---:|---:|---:|---:|")
    chk = d.get("upstream_check")
    if chk:
        out += (f"\nUpstream's bytes equal ours on this input: quantize "
                f"{'yes' if chk['bytes_equal_ours'] else 'NO'}, dequantize "
                f"{'yes' if chk['dequantize_equal_ours'] else 'NO'}.\n")
    if d.get("upstream_error"):
        out += f"\nUpstream could not be measured: `{d['upstream_error']}`.\n"
    return out


def goals(data: dict | None = None) -> str:
    """Each recipe against the goals: share of the copy bandwidth, speedup over upstream."""
    d = data or load()
    rows = []
    for recipe, s in d["summary"].items():
        if not isinstance(s, dict):
            continue
        sp = s["quantize_speedup_vs_upstream"]
        misses = [name for name, ok in (
            ("quantize", s["quantize_frac_of_copy"] >= GOAL_FRAC),
            ("dequantize", s["dequantize_frac_of_copy"] >= GOAL_FRAC),
            ("speedup", sp is not None and sp >= GOAL_SPEEDUP)) if not ok]
        rows.append([f"`{recipe}`", f"{s['quantize_frac_of_copy']:.1%}", f"{s['store_kv_frac_of_copy']:.1%}",
                     f"{s['dequantize_frac_of_copy']:.1%}", "" if sp is None else f"{sp:.1f}x",
                     "yes" if not misses else "no: " + ", ".join(misses)])
    head = (f"**Goals**: quantize and dequantize at {GOAL_FRAC:.0%} of the copy bandwidth or more, and "
            f"quantize at least {GOAL_SPEEDUP:.0f}x faster than upstream's compiled quantizer "
            f"({d['summary']['upstream_baseline']}).\n\n")
    return head + _table(["recipe", "quantize, of copy", "store_kv (K+V), of copy", "dequantize, of copy",
                          "quantize vs upstream", "goals met"], rows, "|---|---:|---:|---:|---:|---|")


def sweep(data: dict | None = None) -> str:
    """The token sweep, one tab per recipe: CUDA-graph and plain-launch times, throughput."""
    d = data or load()
    rows = d.get("sweep", [])
    if not rows:
        return ""
    get = {(r["recipe"], r["op"], r["tokens"]): r for r in rows}
    recipes = sorted({r["recipe"] for r in rows}, key=lambda x: (x != "nvfp4", x))
    sh = d["shape"]
    out = [f"Token sweep, {sh['heads']} heads x {sh['head_dim']}, bf16; `store_kv` writes K and V. "
           "*Graph*: median of CUDA-graph replays, the GPU's own time; *launch*: median of plain Python "
           "calls, which add argument checks and Triton's launcher.", ""]
    for rc in recipes:
        body = _table(["tokens", "`store_kv` graph µs", "`store_kv` launch µs", "`store_kv` GB/s (graph)",
                       "`gather_dequantize` graph µs"],
                      [[t, f"{get[(rc, 'store_kv', t)]['us_graph']:.1f}", f"{get[(rc, 'store_kv', t)]['us']:.1f}",
                        f"{get[(rc, 'store_kv', t)]['gbps_graph']:.0f}",
                        f"{get[(rc, 'gather_dequantize', t)]['us_graph']:.1f}"]
                       for t in sorted({r["tokens"] for r in rows if r["recipe"] == rc})],
                      "|---:|---:|---:|---:|---:|")
        out += [f'=== "`{rc}`"', ""] + ["    " + line if line else "" for line in body.splitlines()] + [""]
    return "\n".join(out) + "\n"


def launches(data: dict | None = None) -> str:
    """The per-GPU launch table of the kernels (`nvfp4_kvcache_triton.launch.DEVICE_LAUNCHES`,
    which a test keeps equal to each GPU's committed sweep), and the defaults for the rest."""
    from nvfp4_kvcache_triton.launch import DEVICE_LAUNCHES, TUNING

    d = data or load()
    used = d.get("launches", {})
    rows = []
    for device, table in DEVICE_LAUNCHES.items():
        for key, e in table.items():
            kind, recipe = key.split(":")
            rows.append([device, f"`{recipe}`", kind, e["elems"], e["warps"], e["elems"] // (32 * e["warps"])])
    for kind in ("quantize", "dequantize", "gather"):
        e, w = TUNING[f"{kind}_elems"], TUNING[f"{kind}_warps"]
        rows.append(["any other GPU or recipe", "", kind, e, w, e // (32 * w)])
    note = ""
    if used and d["device"] not in DEVICE_LAUNCHES:
        note = (f"\nThe committed run's card ({d['device']}) has no entry yet: it measured with the "
                "defaults or another card's launches, as its JSON records under `launches`.\n")
    return _table(["GPU", "recipe", "kernel", "elements per program", "warps", "elements per thread"], rows,
                  "|---|---|---|---:|---:|---:|") + note


SASS = ROOT / "docs" / "data" / "perf" / "quant_kernels_sass.json"


def sass(data: dict | None = None, counts: dict | None = None) -> str:
    """SASS instructions per element of every kernel and recipe (`scripts/sass_quant_kernels.py`)
    and the issue-bound ceiling that follows, as a share of the measured card's copy bandwidth."""
    d = data or load()
    c = counts or json.loads(SASS.read_text(encoding="utf-8"))
    copy = d["copy_gbps"]
    rows = [[f"`{r['recipe']}`", r["op"], f"{r['elems']} x {r['warps']}", f"{r['elements_per_thread']:g}",
             r["resources"].split()[0].removeprefix("REG:"), f"{r['sass_per_element']:.1f}",
             f"{r['bytes_per_element']:.4g}",
             f"{r['issue_ceiling_gbps']:.0f}", f"{r['issue_ceiling_gbps'] / copy:.0%}"]
            for r in c["rows"]]
    head = (f"SASS for sm_90 from Triton {c['triton']} (`{c['command']}`): instructions one thread runs "
            f"per element it handles, bf16 in or out. Ceiling: {c['sms']} SMs issuing 4 warp-instructions "
            f"per cycle at {c['ghz']} GHz, in bytes moved per second; its share is of the copy bandwidth "
            f"measured on {d['device']} ({copy:.0f} GB/s).\n\n")
    return head + _table(["recipe", "operation", "elements x warps", "elements per thread", "registers",
                          "SASS per element", "bytes per element", "ceiling GB/s", "of copy"], rows,
                         "|---|---|---:|---:|---:|---:|---:|---:|---:|")


def values(data: dict | None = None) -> dict[str, str]:
    """Numbers the Kernels chapter's prose uses."""
    d = data or load()
    store = [r for r in d.get("sweep", []) if r["op"] == "store_kv"]
    starts = []
    for rc in {r["recipe"] for r in store}:
        rows = sorted((r for r in store if r["recipe"] == rc), key=lambda r: r["tokens"])
        best = max(r["gbps_graph"] for r in rows)
        starts.append(next(r["tokens"] for r in rows if r["gbps_graph"] >= 0.75 * best))
    return {"streaming_from": f"{max(starts):,}"}


TABLES = {
    "quant_kernels_provenance": provenance,
    "quant_kernels_main": main_table,
    "quant_kernels_goals": goals,
    "quant_kernels_sweep": sweep,
    "quant_kernels_launches": launches,
    "quant_kernels_sass": sass,
}
