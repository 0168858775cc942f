"""The site's renderer: Markdown tables and prose values computed from the code and from the data
files that the scripts in `scripts/` write under `docs/data/`.

The docs build calls these through `docs/hooks/generated.py`: a page writes
`<!-- generated: NAME -->` for a table (`TABLES`) and `<!-- value: GROUP.KEY -->` for a number in
a sentence (`VALUES`). Print any of them in a terminal:

```text
python scripts/tables.py e2m1                 # one table
python scripts/tables.py decode_attention     # one value group
```
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nvfp4_kvcache.cases import CASES  # noqa: E402
from nvfp4_kvcache.formats import E2M1, E4M3, E8M0  # noqa: E402
from nvfp4_kvcache.recipes import RECIPES  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from accuracy_tables import TABLES as _ACCURACY_TABLES  # noqa: E402
from accuracy_tables import VALUES as _ACCURACY_VALUES  # noqa: E402
from capacity_table import render_gpus as _capacity_gpus  # noqa: E402
from capacity_table import render_markdown as _capacity  # noqa: E402
from capacity_table import render_traffic as _capacity_traffic  # noqa: E402
from capacity_table import values as _capacity_values  # noqa: E402
from kernel_tables import TABLES as _KERNEL_TABLES  # noqa: E402
from kernel_tables import values as _kernel_values  # noqa: E402
from peer_tables import TABLES as _PEER_TABLES  # noqa: E402

DATA = ROOT / "docs" / "data"


def _table(header: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    return f"{v:g}"


def e2m1() -> str:
    """All 16 E2M1 codes: bits, fields and value (bit 3 sign, bits 2-1 exponent, bit 0 mantissa)."""
    rows = []
    for code in range(16):
        bits = f"{code:04b}"
        rows.append([code, f"0x{code:X}", f"`{bits[0]} {bits[1:3]} {bits[3]}`", _fmt(E2M1.decode(code))])
    return _table(["code", "hex", "bits (s ee m)", "value"], rows)


def e2m1_ties() -> str:
    """What each rounding mode makes of E2M1's seven midpoints (computed by the oracle)."""
    import torch

    from nvfp4_kvcache.rounding import Rounding

    mags = E2M1.magnitudes
    mids = torch.tensor([(a + b) / 2 for a, b in zip(mags, mags[1:])])
    even = [E2M1.decode(int(c)) for c in E2M1.encode_magnitude(mids, Rounding.NEAREST_EVEN)]
    away = [E2M1.decode(int(c)) for c in E2M1.encode_magnitude(mids, Rounding.NEAREST_AWAY)]
    rows = [[_fmt(float(m)), _fmt(e), _fmt(a)] for m, e, a in zip(mids.tolist(), even, away)]
    return _table(["midpoint", "nearest, ties to **even** (NVFP4, MXFP4)",
                   "nearest, ties **away** from zero (SGLang block-16)"], rows)


def formats() -> str:
    """The three small formats side by side, from their definitions."""
    rows = [
        ["E2M1 (element)", E2M1.bits, E2M1.exp_bits, E2M1.man_bits, E2M1.bias, _fmt(E2M1.max_finite),
         _fmt(E2M1.min_subnormal), "none", "none"],
        ["E4M3 fn (NVFP4 block scale)", E4M3.bits, E4M3.exp_bits, E4M3.man_bits, E4M3.bias, _fmt(E4M3.max_finite),
         f"2^{int(math.log2(E4M3.min_subnormal))}", "none", "`0x7F`, `0xFF`"],
        ["E8M0 (MX scale)", 8, 8, 0, E8M0.bias, f"2^{E8M0.max_exponent}", f"2^{E8M0.min_exponent} (no zero)",
         "none", "`0xFF`"],
    ]
    return _table(["format", "bits", "exponent bits", "mantissa bits", "bias", "max", "min > 0", "Inf", "NaN"], rows)


def _scale_format(r) -> str:
    f = r.scale
    if hasattr(f, "nan_magnitude_codes"):  # a MiniFloat (E4M3)
        return f"FP8 {f.name}, RNE, saturating (NaN `0x{f.nan_magnitude_codes[0]:02X}`)"
    tail = f"`0x{f.nan_code:02X}` = NaN" if f.nan_code is not None else "255 -> inf"
    return f"{f.name}: `2^(b-{f.bias})` ({tail})"


def recipes() -> str:
    """The recipes side by side, read off the recipe descriptors."""
    rows = []
    for r in RECIPES.values():
        second = "float32 per tensor / layer (decode multiplier)" if r.global_scale is not None else "none"
        pool = r.pool_scale_layout.value if r.pool_scale_layout is not None else "not paged"
        rows.append([f"`{r.name}`", r.block_size, _scale_format(r), f"`{r.scale_rule.formula}`",
                     r.scale_rule.rounding.value + (f", best of {r.scale_rule.candidates}" if r.scale_rule.candidates > 1 else ""),
                     r.element_rounding.value, second, pool, f"{r.bits_per_value:g}"])
    return _table(["recipe", "block", "block scale", "scale chosen as", "scale rounding", "element rounding",
                   "second-level scale", "pool scales", "bits / value"], rows)


def memory() -> str:
    """Bits per value and how many more tokens fit than with BF16 or FP8 (scales included)."""
    rows = [["BF16", 16, "1.00", "0.50"], ["FP8 E4M3 (per-tensor scale)", 8, "2.00", "1.00"]]
    for r in RECIPES.values():
        b = r.bits_per_value
        rows.append([f"`{r.name}`", f"{b:g}", f"{16 / b:.2f}", f"{8 / b:.2f}"])
    return _table(["KV dtype", "bits / value", "tokens vs BF16", "tokens vs FP8"], rows)


def memory_values() -> dict[str, str]:
    """Bits per value of a 16-element FP4 recipe and its ratios to BF16 and FP8, for prose."""
    bits = RECIPES["nvfp4"].bits_per_value
    assert bits == RECIPES["fp4_mx_block16"].bits_per_value
    return {"fp4_bits": f"{bits:g}", "vs_bf16": f"{16 / bits:.2f}x", "vs_fp8": f"{8 / bits:.2f}x",
            "vs_bf16_rounded": f"{16 / bits:.1f}x"}


def named_cases() -> str:
    """Every named case: the block, the expected bytes, and the rule it pins."""
    rows = []
    for case in CASES.values():
        vals = ", ".join(f"[{i}]={v!r}" for i, v in case.values.items()) or "all +0"
        codes = ", ".join(f"[{i}]=0x{c:X}" for i, c in case.codes.items()) or "all 0"
        extra = f" (g = {case.global_scale:.6g})" if case.global_scale not in (None, 1.0) else ""
        extra += f" (order {case.order})" if case.order else ""
        rows.append([f"`{case.name}`", vals + extra, f"0x{case.scale_byte:02X}", codes, case.why])
    return _table(["case", "input (other elements +0)", "scale byte", "codes (others 0)", "why"], rows)


def _load(name: str) -> dict:
    return json.loads((DATA / "format" / name).read_text())


def block16_devices() -> str:
    """Upstream SGLang's block-16 quantizer measured on CPU and on CUDA (`scripts/upstream_block16_behaviour.py`)."""
    runs = [_load("block16_cpu.json"), _load("block16_cuda.json")]
    head = ["measurement"] + [f"{r['device_type'].upper()}: {r['device']}" for r in runs]
    rows = []
    for dtype in ("float32", "bfloat16", "float16"):
        def get(r, key):
            row = next(x for x in r["random"] if x["dtype"] == dtype)
            return f"{row[key]} / {row['blocks']}"
        rows.append([f"{dtype}: compiled vs oracle, scale bytes differing"] + [get(r, "compiled_vs_oracle_scale_mismatches") for r in runs])
        rows.append([f"{dtype}: compiled vs oracle, packed bytes differing"] + [get(r, "compiled_vs_oracle_packed_mismatches") for r in runs])
        rows.append([f"{dtype}: eager vs compiled, scale bytes differing"] + [get(r, "eager_vs_compiled_scale_mismatches") for r in runs])
    for name in ("nan", "+inf", "-inf"):
        rows.append([f"scale byte of a block holding {name} (compiled)"]
                    + [str(r["non_finite_blocks"][name]["compiled"]["scale_byte"]) for r in runs])
        rows.append([f"that block decodes to"] + [", ".join(r["non_finite_blocks"][name]["compiled"]["decoded_first4"][:2]) + ", ..." for r in runs])
    rows.append(["decode of code 8 (-0) under byte 127"] + [r["decode_table"]["float32"]["upstream_code8_byte127"] for r in runs])
    rows.append(["decode table: values differing from the oracle (of 4096)"] + [str(r["decode_table"]["float32"]["value_mismatches"]) for r in runs])
    rows.append(["  ... at scale bytes"] + [", ".join(str(b) for b in r["decode_table"]["float32"]["bit_mismatch_scale_bytes_for_nonzero_codes"]) or "none" for r in runs])
    rows.append(["`ceil(log2 y)` just above powers of two: device vs oracle (of {})".format(runs[0]["ceil_log2_boundary"]["points"])]
                + [f"{r['ceil_log2_boundary']['eager_vs_oracle_mismatches']} eager, {r['ceil_log2_boundary']['compiled_vs_oracle_mismatches']} compiled" for r in runs])
    rows.append(["  ... oracle vs `ceil(log2 y)` taken in float64 on the device"] + [str(r["ceil_log2_boundary"]["oracle_vs_exact_math_mismatches"]) for r in runs])
    rows.append(["software"] + [", ".join(f"{k} {v}" for k, v in r["versions"].items()) for r in runs])
    rows.append(["date, command"] + [f"{r['date']}, `{r['command']}`" for r in runs])
    return _table(head, rows)


def _perf(name: str) -> dict:
    return json.loads((DATA / "perf" / name).read_text())


def _fp8_ms(rows: list[dict]) -> tuple[str, float]:
    """The fastest FP8 variant of a set of rows (runs before `fp8+cvt_f16` have only `fp8`)."""
    r = min((r for r in rows if r["format"].partition("+")[0] == "fp8"), key=lambda r: r["ms"])
    return r["format"], r["ms"]


def _flashinfer_label(r: dict) -> str:
    return f"FlashInfer `{r['format']}` ({'FA2 tensor cores' if r.get('tensor_cores') else 'CUDA-core decode'})"


def flashinfer_note(d: dict) -> str:
    """What a decode-attention run says about FlashInfer: its summaries, or why it has no rows."""
    fi = d.get("flashinfer")
    if fi is None:
        return "This run has no FlashInfer rows: it predates the benchmark's FlashInfer stage."
    if not fi.get("available", False):
        return f"This run has no FlashInfer rows: FlashInfer was not available ({fi.get('reason', 'no reason recorded')})."
    if not fi.get("ran", False):
        return f"This run has no FlashInfer rows: FlashInfer's stage failed ({fi.get('reason', 'no reason recorded')})."
    rows = fi.get("rows", [])
    out = []
    missing = [r for r in rows if "ms" not in r]
    failed = [r for r in rows if "ms" in r and not r.get("ok", True)]
    version = next((r["flashinfer"] for r in rows if r.get("flashinfer")), None)
    speed = [(recipe, s["speedup_vs_flashinfer_nvfp4"]) for recipe, s in d.get("summary", {}).items()
             if "speedup_vs_flashinfer_nvfp4" in s]
    passing_nvfp4 = [r for r in rows if r["format"] == "nvfp4" and "ms" in r and r.get("ok", True)]
    if speed and passing_nvfp4:
        nv = min(passing_nvfp4, key=lambda r: r["ms"])
        out.append(f"Against FlashInfer{' ' + version if version else ''}'s NVFP4 decode over the same bytes "
                   f"({1000 * nv['ms']:.1f} us, `{nv['backend']}`), the speedup of each recipe's fastest slot-major "
                   "variant (FlashInfer's time over ours): "
                   + ", ".join(f"`{recipe}` {x:.2f}x" for recipe, x in speed) + ".")
        own = [f"{x:.2f}x its {base.upper()} (`{fi.get('fastest', {}).get(base, base)}`)" for base in ("bf16", "fp8")
               if (x := fi.get(f"speedup_vs_{base}")) is not None]
        if own:
            out.append("FlashInfer's own NVFP4 decode runs at " + " and ".join(own) + ".")
    else:
        out.append("FlashInfer's NVFP4 decode has no passing time in this run, so there is no speedup against it.")
    if failed:
        out.append("Rows that fail the oracle check (timed, not used in any ratio): "
                   + ", ".join(f"`{r['backend']}`" for r in failed) + ".")
    if missing:
        out.append("Not timed: " + "; ".join(f"`{r['backend']}`: {r.get('skipped') or r.get('error', '')}"
                                              for r in missing) + ".")
    return " ".join(out)


def decode_attention_headline(name: str = "decode_attention.json", data: dict | None = None) -> str:
    """Decode attention at the headline shape, every KV format and decoder, and FlashInfer's decode
    over the same caches when the run has it, from the benchmark JSON (or `data`, its contents)."""
    d = _perf(name) if data is None else data
    copy = d["copy"]["bytes_per_s"]
    heads = [r for r in d["rows"] if r["kind"] == "headline"]
    bf16 = next(r for r in heads if r["format"] == "bf16")["ms"]
    fp8_name, fp8 = _fp8_ms(heads)
    read = d["copy"].get("read_bytes_per_s")
    fi_rows = [dict(r, kind="flashinfer") for r in d.get("flashinfer", {}).get("rows", []) if "ms" in r]
    rows = []
    for r in sorted(heads + fi_rows, key=lambda r: r["ms"]):
        if r["kind"] == "flashinfer":
            label = _flashinfer_label(r)
            launch = f"FlashInfer {r.get('flashinfer', '')} `{r['backend']}`" + ("" if r.get("ok", True) else ", FAILS the oracle check")
        else:
            label = f"`{r['format']}`"
            launch = ", ".join(f"{k}={v}" for k, v in r["launch"].items())
        rows.append([label, f"{1000 * r['ms']:.1f}",
                     f"{1000 * r['ms_events']:.1f}" if "ms_events" in r else "-", f"{r['bytes_per_s'] / 1e12:.2f}",
                     f"{100 * r['bytes_per_s'] / copy:.0f}%", f"{100 * r['bytes_per_s'] / read:.0f}%" if read else "-",
                     f"{bf16 / r['ms']:.2f}x", f"{fp8 / r['ms']:.2f}x", launch])
    sh = d["shape"]
    timing = d.get("timing", {}).get("method") or d.get("timing", {}).get("graph") or \
        "triton do_bench (CUDA events), median"
    head = (f"Batch {sh['batch']}, {sh['q_heads']} query heads, {sh['kv_heads']} KV heads, head_dim {sh['head_dim']}, "
            f"page {sh['page']}, {sh['context']} tokens each. {d['device']}; "
            + ", ".join(f"{k} {v}" for k, v in d["versions"].items())
            + f"; {d['date']}; `{d['command']}`. Time: {timing}; the events column times each call on its own"
            f" (CUDA events, L2 flushed first). Ceilings measured in the same run: copy {copy / 1e12:.2f} TB/s"
            + (f", read-only {read / 1e12:.2f} TB/s" if read else "") + f". FP8 is the fastest FP8 row, `{fp8_name}`; "
            "`@pages` rows read the same bytes as page blocks."
            + (" FlashInfer rows: FlashInfer's paged decode over the same caches (the NVFP4 pool's bytes in its "
               "page-major layout; the BF16 and FP8 buffers themselves), each output checked against the float64 "
               "oracle before it is timed; their speedup columns divide our BF16 and FP8 times by FlashInfer's."
               if fi_rows else "") + "\n\n")
    return (head + _table(["KV format (decoder)", "time (us)", "events (us)", "TB/s read", "of copy", "of read-only",
                           "vs BF16", "vs FP8", "best launch"], rows) + "\n" + flashinfer_note(d) + "\n")


def decode_attention_sweep() -> str:
    """The context x batch sweep: time per format and speedups over BF16 and FP8 (same run)."""
    d = _perf("decode_attention.json")
    pool = d["shape"]["pool_tokens"]
    t = {(r["format"], r["batch"], r["context"]): r for r in d["rows"] if r["kind"] == "sweep"}
    if not t:
        return f"{d['device']}, {d['date']}: the sweep was not run ({', '.join(d.get('skipped', []))} skipped).\n"
    fp8_name = next(f for f in d["sweep_formats"] if f.partition("+")[0] == "fp8")
    fp4 = [f for f in d["sweep_formats"] if f not in ("bf16", fp8_name)]
    rows = []
    for b, c in sorted({(k[1], k[2]) for k in t}):
        bf, f8 = t[("bf16", b, c)]["ms"], t[(fp8_name, b, c)]["ms"]
        row = [str(b), str(c), f"{1000 * bf:.0f}", f"{1000 * f8:.0f}"]
        for f in fp4:
            r = t[(f, b, c)]
            row += [f"{1000 * r['ms']:.0f}", f"{bf / r['ms']:.2f}x / {f8 / r['ms']:.2f}x"]
        row.append("wraps: L2 may serve repeats" if b * c > pool else "")
        rows.append(row)
    head = ["batch", "context", "BF16 (us)", f"`{fp8_name}` (us)"]
    for f in fp4:
        head += [f"`{f}` (us)", "vs BF16 / FP8"]
    return (f"{d['device']}, {d['date']}, `{d['command']}`. Each format at its headline launch configuration, "
            "`num_kv_splits` scaled to the same number of stage-1 programs (at least 256 tokens a split). "
            f"Rows marked *wraps* have more tokens than the {pool}-slot benchmark pool: slots wrap around, "
            "so requests share pages and the numbers are not DRAM-bound; the figure leaves them out.\n\n"
            + _table(head + ["note"], rows))


def decode_attention_anchors() -> str:
    """Upstream's read path (whole-layer dequantize, then BF16 attention) and SGLang's own BF16 kernel."""
    d = _perf("decode_attention.json")
    rows = []
    seen = set()
    for u in d["upstream_dequantize_then_bf16"]:
        key = (u["recipe"], u["pool_tokens"])   # the run measured the same pool size twice: show the first
        if key in seen:
            continue
        seen.add(key)
        extra = f"; SGLang's own batched_dequantize: {u['ms_upstream_batched_dequantize']:.2f} ms" if "ms_upstream_batched_dequantize" in u else ""
        rows.append([f"dequantize whole layer ({u['pool_tokens']} slots) + BF16 decode, `{u['recipe']}`",
                     f"{u['ms_total']:.2f}", f"dequantize {u['ms_dequantize']:.2f} ms{extra}"])
    s = d["sglang_triton_bf16"]
    if s.get("ran"):
        ours = f"ours over BF16: {s['ours_bf16_ms']:.3f} ms; " if "ours_bf16_ms" in s else ""
        rows.append(["SGLang 0.5.23 Triton decode kernel on the BF16 cache", f"{s['ms']:.3f}",
                     f"{ours}max abs difference {s['max_abs_diff_vs_our_bf16']:.1e}"])
    return _table(["path", "time (ms)", "notes"], rows)


def decode_attention_limits() -> str:
    """Where the nvfp4 time goes, per pool layout: the gather ceiling, attention without decoding,
    the kernels (`scripts/limits_decode_attention.py`)."""
    d = _perf("decode_attention_limits.json")
    copy = d["copy"]["bytes_per_s"]
    rows = []
    names = {"slot_major": "slot-major (SGLang's pool)", "head_major": "head-major"}
    for lay, r in d["layouts"].items():
        bf16 = r["kernels"]["bf16"]["ms"]
        fp8 = r["kernels"]["fp8"]["ms"]
        for what, fmt, row in ([("gather ceiling", f, r["gather"][f]) for f in ("bf16", "fp8", "nvfp4")]
                               + [("kernel", f, r["kernels"][f]) for f in ("bf16", "fp8", "nvfp4+no_decode", "nvfp4+cvt_f16")]):
            launch = ", ".join(f"{k}={v}" for k, v in row["launch"].items())
            rows.append([names[lay], what, f"`{fmt}`", f"{1000 * row['ms']:.1f}", f"{100 * row['bytes_per_s'] / copy:.0f}%",
                         f"{bf16 / row['ms']:.2f}x", f"{fp8 / row['ms']:.2f}x", launch])
    sh = d["shape"]
    head = (f"Batch {sh['batch']}, {sh['q_heads']} query heads, {sh['kv_heads']} KV heads, head_dim {sh['head_dim']}, "
            f"page {sh['page']}, {sh['context']} tokens each. {d['device']}; "
            + ", ".join(f"{k} {v}" for k, v in d["versions"].items())
            + f"; {d['date']}; `{d['command']}`. Copy ceiling of the same run {copy / 1e12:.2f} TB/s. Speedups are "
            "against the BF16 and FP8 kernels over the same layout.\n\n")
    return head + _table(["layout", "what", "format", "time (us)", "of copy", "vs BF16 kernel", "vs FP8 kernel",
                          "best launch"], rows)


def decode_attention_shapes() -> str:
    """Other head dims and page sizes at the headline's batch and context (the benchmark's last stage)."""
    d = _perf("decode_attention.json")
    if "shapes" not in d:
        return f"{d['device']}, {d['date']}: the other shapes were not run in this run.\n"
    t = {(r["format"], r["head_dim"], r["page"]): r for r in d["shapes"] if "ms" in r}
    fmts = [f for f in d["sweep_formats"]]
    rows = []
    for hd, page in sorted({(k[1], k[2]) for k in t}):
        row = [str(hd), str(page)]
        for f in fmts:
            r = t.get((f, hd, page))
            if r is None:  # page blocks need pages; a tile that did not fit
                row.append("-")
                continue
            base = f == "bf16" or f.partition("+")[0] == "fp8"
            row.append(f"{1000 * r['ms']:.0f}" + ("" if base else f" ({r['speedup_vs_bf16']:.2f}x / "
                                                                   f"{r['speedup_vs_fp8']:.2f}x)"))
        rows.append(row)
    sh = d["shape"]
    return (f"{d['device']}, {d['date']}, `{d['command']}`. Batch {sh['batch']}, {sh['context']} tokens each, "
            f"{sh['q_heads']} query and {sh['kv_heads']} KV heads; every format at its headline launch (not re-tuned "
            "per shape). "
            "Time in us; FP4 columns add the speedup over BF16 / FP8.\n\n"
            + _table(["head_dim", "page"] + [f"`{f}`" for f in fmts], rows))


def decode_attention_shapes_tuned() -> str:
    """Each format's best launch at head dims 64 and 256 (`scripts/tune_shapes_decode_attention.py`)."""
    d = _perf("decode_attention_shapes_tuned.json")
    rows = []
    for r in sorted(d["rows"], key=lambda r: (r["head_dim"], r["ms"])):
        launch = ", ".join(f"{k}={v}" for k, v in r["launch"].items())
        rows.append([str(r["head_dim"]), f"`{r['format']}`", f"{1000 * r['ms']:.0f}", f"{100 * r['frac_of_copy']:.0f}%",
                     f"{r['speedup_vs_bf16']:.2f}x", f"{r['speedup_vs_fp8']:.2f}x", launch,
                     f"{r['max_rel_rms_vs_default_launch']:.0e}"])
    sh = d["shape"]
    return (f"Batch {sh['batch']}, {sh['q_heads']} query heads, {sh['kv_heads']} KV heads, page {sh['page']}, "
            f"{sh['context']} tokens each. {d['device']}; " + ", ".join(f"{k} {v}" for k, v in d["versions"].items())
            + f"; {d['date']}; `{d['command']}`. Each format at its best of {len(d['rows'][0]['tried'])} launches; the last "
            "column is the largest relative RMS difference of any launch's output from the default launch's.\n\n"
            + _table(["head_dim", "format", "time (us)", "of copy", "vs BF16", "vs FP8", "best launch",
                      "max rel. RMS vs default"], rows))


def mla_decode_attention() -> str:
    """MLA decode (DeepSeek-V3 latents) over BF16 and FP4 latent caches (`scripts/bench_mla_decode_attention.py`)."""
    path = DATA / "perf" / "mla_decode_attention.json"
    if not path.exists():
        return ("No MLA run is committed yet: `python scripts/bench_mla_decode_attention.py` on a GPU writes "
                "`docs/data/perf/mla_decode_attention.json`.\n")
    d = json.loads(path.read_text())
    copy = d["copy"]["bytes_per_s"]
    rows = []
    for heads, sh in d["shapes"].items():
        bf16 = next((r["ms"] for r in sh["rows"] if r["format"] == "bf16"), None)
        for r in sorted(sh["rows"], key=lambda r: r["ms"]):
            launch = ", ".join(f"{k}={v}" for k, v in r["launch"].items())
            rows.append([heads, f"`{r['format']}`", f"{1000 * r['ms']:.1f}", f"{100 * r['bytes_per_s'] / copy:.0f}%",
                         f"{bf16 / r['ms']:.2f}x" if bf16 else "-", launch])
        a = sh.get("sglang_triton_mla_bf16", {})
        if a.get("ran"):
            rows.append([heads, "SGLang's Triton MLA decode, BF16 latent", f"{1000 * a['ms']:.1f}", "",
                         f"{bf16 / a['ms']:.2f}x" if bf16 else "-", f"num_kv_splits={a['num_kv_splits']}"])
    sh0 = next(iter(d["shapes"].values()))["shape"]
    return (f"Latent {sh0['kv_lora_rank']} + {sh0['qk_rope_head_dim']}, batch {sh0['batch']}, {sh0['context']} tokens "
            f"each, page {sh0['page']}. {d['device']}; " + ", ".join(f"{k} {v}" for k, v in d["versions"].items())
            + f"; {d['date']}; `{d['command']}`. Copy ceiling of the same run {copy / 1e12:.2f} TB/s; bytes: the "
            "latent rows (and scale bytes) read once per step.\n\n"
            + _table(["query heads", "latent cache (decoder)", "time (us)", "of copy", "vs BF16 latent", "best launch"],
                     rows))


MLA_LAUNCH_KEYS = ("block_n", "num_warps", "num_stages", "block_h", "v_parts", "tokens_as_m", "split_scores")
MLA_LAUNCH_DEFAULTS = {"block_h": 16, "v_parts": 1, "tokens_as_m": 0, "split_scores": 0}
"""The MLA stage-1 launch keys; runs made before the last four existed ran these values."""


def _mla_launch(r: dict) -> tuple:
    return tuple(int(r.get(k, MLA_LAUNCH_DEFAULTS.get(k, 0))) for k in MLA_LAUNCH_KEYS)


def mla_decode_attention_sass() -> str:
    """Offline sm_90 counts of the MLA stage-1 loop per launch and variant (`scripts/sass_mla_decode_attention.py`)."""
    d = _perf("mla_decode_attention_sass.json")
    variants = list(dict.fromkeys(r["variant"] for r in d["rows"]))
    cells: dict[tuple, dict[str, str]] = {}
    for r in d["rows"]:
        if "error" in r:
            cell = "fails to compile"
        else:
            h = r["sass_per_element_at_heads"]
            spill = f", {r['stack']} B stack" + (f" ({r['loop_local']} in loop)" if r["loop_local"] else "") \
                if r["stack"] else ""
            chain = f", chain {r['hmma_chain']}" if r["hmma_chain"] else ""
            cell = (f"{r['reg']} regs{spill}, {r['ctas_per_sm']}/SM{', wgmma' if r['wgmma'] else ''}{chain}; "
                    f"**{h['16']:.1f}** / **{h['128']:.1f}**")
        cells.setdefault(_mla_launch(r), {})[r["variant"]] = cell
    rows = [[" / ".join(str(x) for x in k)] + [c.get(v, "-") for v in variants] for k, c in cells.items()]
    head = (f"Triton {d['triton']}, `{d['target']}`, latent {d['kv_lora_rank']} + {d['qk_rope_head_dim']}, page "
            f"{d['page']}; `{d['command']}`. Each cell: registers a thread (and spill stack), programs per SM, "
            "the longest chain of dependent `HMMA`s in the loop, and the loop's SASS per latent element over "
            "all query heads at 16 / 128 heads.\n\n")
    s2 = _table(["splits", "columns per program", "registers", "spill stack (bytes)", "SASS"],
                [[r["splits"], r["block_d"] or d["kv_lora_rank"], r["reg"], r["stack"], r["sass"]] for r in d["stage2"]])
    return (head + _table([" / ".join(MLA_LAUNCH_KEYS)] + [f"`{v}`" for v in variants], rows)
            + "\nStage 2 (the merge of the splits, 4 warps), one program per head or per column chunk:\n\n" + s2)


def mla_decode_attention_tried() -> str:
    """Every launch the committed MLA run timed: the best time over its split counts, per variant."""
    d = _perf("mla_decode_attention.json")
    out = []
    for heads, sh in d["shapes"].items():
        variants = [r["format"] for r in sh["rows"]]
        best: dict[tuple, dict[str, float]] = {}
        for r in sh["rows"]:
            for t in r["tried"]:
                if "ms" in t:
                    cur = best.setdefault(_mla_launch(t), {})
                    cur[r["format"]] = min(cur.get(r["format"], math.inf), t["ms"])
        rows = [[" / ".join(str(x) for x in k)] + [f"{1000 * c[v]:.1f}" if v in c else "-" for v in variants]
                for k, c in sorted(best.items())]
        out.append(f"{heads} query heads, time in us (best over the split counts):\n\n"
                   + _table([" / ".join(MLA_LAUNCH_KEYS)] + [f"`{v}`" for v in variants], rows))
    return f"{d['device']}; {d['date']}; `{d['command']}`.\n\n" + "\n".join(out)


def wheel_size(data: dict | None = None) -> str:
    """The wheel's size and the golden vectors' share of it, from `docs/data/package/wheel.json`."""
    d = data or json.loads((DATA / "package" / "wheel.json").read_text())
    kb = lambda n: f"{n / 1000:.0f} kB"  # noqa: E731
    rows = [[label, d[part]["files"], kb(d[part]["compressed_bytes"]), kb(d[part]["installed_bytes"])]
            for label, part in (("golden vectors (`nvfp4_kvcache/golden/`)", "golden"),
                                ("code and metadata", "rest"), ("all", "total"))]
    share = d["golden"]["compressed_bytes"] / d["total"]["compressed_bytes"]
    return (f"`{d['wheel']}`: {kb(d['wheel_bytes'])} to download, of which the golden vectors are "
            f"{100 * share:.0f}% of the compressed bytes; measured {d['date']} by `{d['command']}`.\n\n"
            + _table(["part", "files", "in the wheel (compressed)", "installed"], rows))
def _x(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}x"


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def decode_attention_values(run: str = "decode_attention.json",
                            limits: str = "decode_attention_limits.json") -> dict[str, str]:
    """Numbers the Performance chapter and the kernel pages use in prose, from the benchmark JSONs
    (the committed headline run and its limits run, unless other files of the same kind are named)."""
    d = _perf(run)
    lim = _perf(limits)
    tuned = _perf("decode_attention_shapes_tuned.json")
    nv = d["summary"]["nvfp4"]
    head = {r["format"]: r for r in d["rows"] if r["kind"] == "headline"}
    slot, hm = lim["layouts"]["slot_major"], lim["layouts"]["head_major"]
    split = slot["summary"]["nvfp4_split_ms"]
    sh = d["shape"]
    out = {
        "device": d["device"], "date": d["date"][:10],
        "batch": str(sh["batch"]), "context_k": f"{sh['context'] // 1024}k",
        "pool_m": f"{sh['pool_tokens'] / 2**20:.0f}M",
        "variant": f"`{nv['variant']}`",
        "vs_bf16": _x(nv["speedup_vs_bf16"]), "vs_fp8": _x(nv["speedup_vs_fp8"]),
        "of_copy": _pct(nv["frac_of_copy"]), "bf16_of_copy": _pct(head["bf16"]["frac_of_copy"]),
        "block16_vs_fp8": _x(d["summary"]["fp4_mx_block16"]["speedup_vs_fp8"]),
        "gather_fp4_slot": _pct(slot["gather"]["nvfp4"]["frac_of_copy"]),
        "gather_bf16_slot": _pct(slot["gather"]["bf16"]["frac_of_copy"]),
        "gather_fp4_head": _pct(hm["gather"]["nvfp4"]["frac_of_copy"]),
        "gather_vs_bf16_slot": _x(slot["summary"]["gather_speedup_vs_bf16_kernel"], 1),
        "gather_vs_fp8_slot": _x(slot["summary"]["gather_speedup_vs_fp8_kernel"], 1),
        "gather_vs_bf16_head": _x(hm["summary"]["gather_speedup_vs_bf16_kernel"], 1),
        "gather_vs_fp8_head": _x(hm["summary"]["gather_speedup_vs_fp8_kernel"], 1),
        "share_gather": _pct(split["gather_ceiling"] / split["total"]),
        "share_beyond": _pct(split["attention_beyond_gather"] / split["total"]),
        "share_decode": _pct(split["e2m1_decoding"] / split["total"]),
        "gather_us": f"{1000 * split['gather_ceiling']:.0f} us",
        "decode_us": f"{1000 * split['e2m1_decoding']:.0f} us", "total_us": f"{1000 * split['total']:.0f} us",
        "no_decode_vs_bf16": _x(slot["summary"]["no_decode_speedup_vs_bf16"], 1),
        "fp8_over_gather": _x(slot["summary"]["kernel_over_gather"]["fp8"], 1),
        "head_major_vs_bf16": _x(hm["summary"]["speedup_vs_bf16"]),
        "head_major_us": f"{1000 * hm['kernels']['nvfp4+cvt_f16']['ms']:.0f} us",
        "slot_major_us": f"{1000 * slot['kernels']['nvfp4+cvt_f16']['ms']:.0f} us",
    }
    one_warp = {f: min(t["ms"] for t in r["tried"] if t.get("num_warps") == 1 and "ms" in t) / r["ms"]
                for f, r in head.items()}
    losers = sorted(f for f, x in one_warp.items() if x > 1)
    out["one_warp_losers"] = {0: "none", 1: "one", 2: "two", 3: "three"}.get(len(losers), str(len(losers)))
    out["one_warp_gaps"] = "; ".join(f"`{f}` is within {100 * (one_warp[f] - 1):.1f}% of its best" for f in losers)
    out["d256_launch"] = ", ".join(f"{k} {v}" for k, v in
                                   {(r["format"], r["head_dim"]): r for r in tuned["rows"]}[(nv["variant"], 256)]
                                   ["launch"].items())
    sweep = {(r["format"], r["batch"], r["context"]): r["ms"] for r in d["rows"] if r["kind"] == "sweep"}
    long = [(b, c) for (f, b, c) in sweep if f == "bf16" and c >= 16384 and b * c <= sh["pool_tokens"]]
    if long:
        fp8_name = next(f for f in d["sweep_formats"] if f.partition("+")[0] == "fp8")  # the fastest FP8 row
        vs_bf16 = [sweep[("bf16", b, c)] / sweep[(nv["variant"], b, c)] for b, c in long]
        vs_fp8 = [sweep[(fp8_name, b, c)] / sweep[(nv["variant"], b, c)] for b, c in long]
        out["sweep_vs_bf16"] = f"{min(vs_bf16):.2f}-{max(vs_bf16):.2f}x"
        out["sweep_vs_fp8"] = f"{min(vs_fp8):.2f}-{max(vs_fp8):.2f}x"
    else:  # a run that skipped the sweep (its "skipped" list says so)
        out["sweep_vs_bf16"] = out["sweep_vs_fp8"] = "(not measured in this run)"
    tn = {(r["format"], r["head_dim"]): r for r in tuned["rows"]}
    for dim in (64, 256):
        r = tn[(nv["variant"], dim)]
        out[f"d{dim}_vs_bf16"] = _x(r["speedup_vs_bf16"], 1)
        out[f"d{dim}_vs_fp8"] = _x(r["speedup_vs_fp8"], 1)
    return out


def decode_attention_launch_grid() -> str:
    """The launch grid (`scripts/tune_decode_attention.py`): fastest launch per format and pipelining."""
    grid = _perf("decode_attention_tuning.json")
    best: dict = {}
    for r in grid["rows"]:
        if "ms" not in r:
            continue
        key = (r["format"], r["prefetch"], r["num_stages"])
        if key not in best or r["ms"] < best[key]["ms"]:
            best[key] = r
    rows = [[f"`{f}`", "register prefetch" if pf else f"Triton, {st} stages", r["block_n"], r["num_warps"],
             f"{1000 * r['ms']:.0f}", f"{100 * r['frac_of_copy']:.0f}%"] for (f, pf, st), r in sorted(best.items())]
    head = f"{grid['device']}, {grid['date'][:10]}, `{grid['command']}`; `num_kv_splits` 16.\n\n"
    return head + _table(["format", "pipelining", "BLOCK_N", "warps", "time (us)", "of copy"], rows)


H100_RUN = "decode_attention_runs/run-d-h100-one-warp.json"
"""The last H100 run of the benchmark, which the variant log's rows 0 to 12 and A refer to."""
H100_LIMITS = "decode_attention_runs/limits-h100.json"
"""The limits run on the same H100."""


def _regs(resources: str) -> int:
    return int(re.search(r"REG:(\d+)", resources).group(1))


def _warps_per_sm(regs: int, warps: int) -> int:
    """Resident warps per SM that a program's registers allow (64K registers, allocated per 8)."""
    return min(64, 65536 // (32 * (-(-regs // 8) * 8)) // warps * warps)


def variant_log_values() -> dict[str, str]:
    """The variant log's measured cells: today's SASS counts and the H100 runs' results."""
    at = _sass_at(_perf("decode_attention_sass.json"))

    def pair(launch, suffix=""):
        f = at[launch + (False,)]
        return " / ".join(f"{f[r + suffix]['sass_per_element']:.2f}" for r in ("nvfp4", "fp4_mx_block16"))

    cvt, nod = "nvfp4+cvt_f16", "nvfp4+no_decode"
    out = {"v1": pair((64, 4, 2)), "v1b": pair((128, 4, 2)), "v1c": pair((64, 4, 1)),
           "v2a": pair((64, 4, 2), "+prmt"), "v2a_128": pair((128, 4, 2), "+prmt"),
           "v2b": pair((64, 4, 2), "+prmt_bf16"), "v2b_128": pair((128, 4, 2), "+prmt_bf16"),
           "v3c": f"{at[(64, 4, 2, False)][cvt]['sass_per_element']:.2f}",
           "v10": f"{at[(32, 1, 3, False)][cvt]['sass_per_element']:.2f}",
           "a_nodecode": f"{at[(64, 2, 2, False)][nod]['sass_per_element']:.2f}",
           "a_cvt": f"{at[(64, 2, 2, False)][cvt]['sass_per_element']:.2f}"}
    head = _perf(H100_RUN)["summary"]["nvfp4"]
    prev = _perf("decode_attention_runs/run-c-two-warps.json")["summary"]["nvfp4"]
    lim = _perf(H100_LIMITS)["layouts"]
    byte_loads = _perf("decode_attention_runs/limits-byte-scale-loads.json")["layouts"]["slot_major"]
    slot, hm = lim["slot_major"], lim["head_major"]
    us = lambda r, k: f"{1000 * r['kernels'][k]['ms']:.0f} us"  # noqa: E731
    out.update({
        "v10_bf16": f"{prev['speedup_vs_bf16']:.2f}x to **{head['speedup_vs_bf16']:.2f}x BF16**",
        "v10_fp8": f"{prev['speedup_vs_fp8']:.2f}x to **{head['speedup_vs_fp8']:.2f}x FP8**",
        "v11_bad": us(byte_loads, cvt), "v11_fixed": us(slot, cvt),
        "v12_gather": f"{slot['gather']['nvfp4']['frac_of_copy']:.0%} -> {hm['gather']['nvfp4']['frac_of_copy']:.0%}",
        "v12_kernel": f"{us(slot, cvt)} -> {us(hm, cvt)}",
        "v12_bf16": f"**{hm['summary']['speedup_vs_bf16']:.2f}x BF16**",
        "a_us": f"{us(slot, nod)} against {us(slot, cvt)}",
        "a_share": f"{1 - slot['kernels'][nod]['ms'] / slot['kernels'][cvt]['ms']:.0%}",
    })
    tm = _sass_at(_perf("decode_attention_sass.json"), tokens_as_m=True)
    one_hm, one_tm, two_tm = at[(32, 1, 2, False)], tm[(32, 1, 2, False)], tm[(32, 2, 2, False)]
    r_hm, r_tm, r_two = (_regs(f[cvt]["resources"]) for f in (one_hm, one_tm, two_tm))
    out.update({
        "v13_regs": f"{r_tm} registers instead of {r_hm}",
        "v13_programs": f"{_warps_per_sm(r_tm, 1)} resident one-warp programs per SM instead of "
                        f"{_warps_per_sm(r_hm, 1)}",
        "v13_sass": f"{one_tm[cvt]['sass_per_element']:.2f} SASS per element instead of "
                    f"{one_hm[cvt]['sass_per_element']:.2f}",
        "v13_two_warps": f"{r_two} registers ({_warps_per_sm(r_two, 2)} warps per SM), "
                         f"{two_tm[cvt]['sass_per_element']:.2f}",
        "v15": f"{one_tm['fp8_e4m3+cvt_f16']['sass_per_element']:.2f} SASS per element at (32, 1 warp, tokens "
               f"as M) against {one_tm['fp8_e4m3']['sass_per_element']:.2f}",
    })
    return out


_SASS_COLUMNS = [("bf16", "BF16", ("bf16",)), ("fp8", "FP8", ("fp8_e4m3",)),
                 ("fp8_cvt", "FP8 +cvt_f16", ("fp8_e4m3+cvt_f16",)),
                 ("fp4", "FP4 (nvfp4 / block16)", ("nvfp4", "fp4_mx_block16")),
                 ("prmt", "+prmt", ("nvfp4+prmt", "fp4_mx_block16+prmt")),
                 ("prmt_bf16", "+prmt_bf16", ("nvfp4+prmt_bf16", "fp4_mx_block16+prmt_bf16")),
                 ("cvt", "+cvt_f16", ("nvfp4+cvt_f16",)), ("no_decode", "+no_decode", ("nvfp4+no_decode",))]
"""(value slug, column title, decoders) of the SASS table; a cell `a / b` is `nvfp4 / fp4_mx_block16`."""


def _sass_at(d: dict, tokens_as_m: bool = False) -> dict:
    """(BLOCK_N, warps, stages, prefetch) -> decoders' counts, for one orientation of the products
    (query heads in `M` unless `tokens_as_m`); slot-major rows only."""
    return {(c["block_n"], c["num_warps"], c["num_stages"], bool(c.get("prefetch"))): c["formats"]
            for c in d["configs"] if bool(c.get("tokens_as_m")) == tokens_as_m and not c.get("page_block")}


def _launch(c: dict) -> str:
    return (f"{c['block_n']} / {c['num_warps']} / {c['num_stages']}" + (" + prefetch" if c.get("prefetch") else "")
            + (" + tokens as M" if c.get("tokens_as_m") else "") + (" + page blocks" if c.get("page_block") else ""))


def decode_attention_sass() -> str:
    """SASS instructions per K/V element in stage 1's loop, per launch and decoder (static counts)."""
    d = _perf("decode_attention_sass.json")
    rows = []
    for c in d["configs"]:
        f = c["formats"]
        rows.append([_launch(c)] + [" / ".join(f"{f[k]['sass_per_element']:.2f}" if k in f else "-" for k in keys)
                                    for _, _, keys in _SASS_COLUMNS])
    head = (f"Triton {d['triton']}, `{d['target']}`, head_dim {d['head_dim']}, {d['group']} query heads per KV "
            f"head, page {d['page']}; `{d['command']}`.\n\n")
    return head + _table(["BLOCK_N / warps / stages"] + [name for _, name, _ in _SASS_COLUMNS], rows)


def sass_values() -> dict[str, str]:
    """Ranges and single counts from the SASS JSON, for the kernel page's prose."""
    d = _perf("decode_attention_sass.json")
    at = _sass_at(d)  # the ranges and counts below: query heads in M
    out = {}
    for slug, _, keys in _SASS_COLUMNS:
        vals = [f[k]["sass_per_element"] for f in at.values() for k in keys if k in f]
        if vals:
            out[slug] = f"{min(vals):.1f}-{max(vals):.1f}"
    cvt = "nvfp4+cvt_f16"
    out["cvt_64_4"] = f"{at[(64, 4, 2, False)][cvt]['sass_per_element']:.1f}"
    out["cvt_128_4"] = f"{at[(128, 4, 2, False)][cvt]['sass_per_element']:.1f}"
    out["cvt_32_1"] = f"{min(f[cvt]['sass_per_element'] for k, f in at.items() if k[:2] == (32, 1)):.1f}"
    f = at[(64, 2, 2, False)]
    out["decode_share"] = f"{f[cvt]['sass_per_element'] - f['nvfp4+no_decode']['sass_per_element']:.1f}"
    plain = at[(64, 4, 2, False)]["nvfp4"]          # variant 1's loop: where its instructions go
    per = plain["elements_per_thread_iter"]
    for key, ops in (("op_bytes", ("PRMT", "IMAD", "SHF", "LOP3")), ("op_cvt", ("HADD2",)),
                     ("op_fmul", ("FMUL",)), ("op_f2fp", ("F2FP",))):
        out[key] = f"{sum(plain['opcodes'].get(o, 0) for o in ops) / per:.1f}"
    return out


TABLES = {
    "e2m1": e2m1,
    "decode_attention_sass": decode_attention_sass,
    "decode_attention_launch_grid": decode_attention_launch_grid,
    "e2m1_ties": e2m1_ties,
    "formats": formats,
    "recipes": recipes,
    "memory": memory,
    "named_cases": named_cases,
    "block16_devices": block16_devices,
    "decode_attention_headline": decode_attention_headline,
    "decode_attention_headline_h100": lambda: decode_attention_headline("decode_attention_runs/run-d-h100-one-warp.json"),
    "decode_attention_anchors": decode_attention_anchors,
    "decode_attention_sweep": decode_attention_sweep,
    "decode_attention_limits": decode_attention_limits,
    "decode_attention_shapes": decode_attention_shapes,
    "decode_attention_shapes_tuned": decode_attention_shapes_tuned,
    "mla_decode_attention": mla_decode_attention,
    "mla_decode_attention_sass": mla_decode_attention_sass,
    "mla_decode_attention_tried": mla_decode_attention_tried,
    "wheel_size": wheel_size,
    "capacity": _capacity,
    "capacity_gpus": _capacity_gpus,
    "capacity_traffic": _capacity_traffic,
    **_KERNEL_TABLES,
    **_ACCURACY_TABLES,
    **_PEER_TABLES,
}
"""Name -> function returning Markdown; other chapters register theirs here too."""

VALUES = {
    "memory": memory_values,
    "capacity": _capacity_values,
    "quant_kernels": _kernel_values,
    "sass": sass_values,
    "decode_attention": decode_attention_values,
    "decode_attention_h100": lambda: decode_attention_values(H100_RUN, H100_LIMITS),
    "variant_log": variant_log_values,
    **_ACCURACY_VALUES,
}
"""Group -> function returning `{key: text}`: numbers for prose (`<!-- value: GROUP.KEY -->`)."""


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(TABLES) + sorted(VALUES)
    for n in names:
        if n in VALUES:
            print(f"## {n}\n")
            for key, text in VALUES[n]().items():
                print(f"{n}.{key}: {text}")
            print()
        else:
            print(f"## {n}\n\n{TABLES[n]()}")
