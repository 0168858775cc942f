"""Markdown tables of the Accuracy chapter, rendered from `docs/data/accuracy/` (written by
`scripts/accuracy_lab.py`) and from the quoted upstream numbers in `docs/data/accuracy/upstream.yaml`.

Print one in a terminal with `python scripts/accuracy_tables.py NAME`; `TABLES` maps
the names a page uses in `<!-- generated: NAME -->` to the functions.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "accuracy"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from nvfp4_kvcache.accuracy.schemes import SCHEMES  # noqa: E402

SCHEME_ORDER = list(SCHEMES)
"""Rows in the registry's order: the baselines, then every recipe's schemes."""
DIST_ORDER = ["gaussian", "laplace", "student_t3", "outlier_channels", "rope_keys", "tiny_blocks", "small_tensor",
              "one_huge"]


def load(part: str, data_dir: Path | None = None) -> dict:
    """The lab's JSON for `part` (`elements`, `attention`, `model`)."""
    return json.loads(((data_dir or DATA) / f"{part}.json").read_text())


def _table(header: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def db(v: float) -> str:
    """dB with one decimal; `inf` for exact."""
    return "exact" if v == math.inf else ("-inf" if v == -math.inf else f"{v:.1f}")


def pct(v: float, digits: int = 1) -> str:
    """A fraction as a percentage."""
    return f"{100 * v:.{digits}f}%"


def sci(v: float) -> str:
    """Small positive numbers, 2 significant digits."""
    return "0" if v == 0 else f"{v:.2g}"


def _s(name: str) -> str:
    return f"`{name}`"


def schemes() -> str:
    """The schemes the lab compares, read off the registry."""
    rows = [[_s(n), s.label, f"{s.bits_per_value:g}", s.block, "yes" if s.uses_amax else "no"]
            for n, s in SCHEMES.items()]
    return _table(["scheme", "what", "bits / value", "block", "per-tensor calibration"], rows)


def elements_sqnr(data_dir: Path | None = None) -> str:
    """SQNR (dB, whole tensor) of every scheme on every distribution."""
    d = load("elements", data_dir)["distributions"]
    rows = [[_s(s)] + [db(d[dist][s]["sqnr_db"]) for dist in DIST_ORDER] for s in SCHEME_ORDER]
    return _table(["scheme"] + [f"`{x}`" for x in DIST_ORDER], rows)


def elements_worst_block(data_dir: Path | None = None) -> str:
    """1st-percentile per-block SQNR (dB, blocks of 16) and flushed-to-zero share, per distribution."""
    d = load("elements", data_dir)["distributions"]
    rows = [[_s(s)] + [f"{db(d[dist][s]['block_sqnr_db_p1'])} / {pct(d[dist][s]['ftz_fraction'], 0)}"
                       for dist in DIST_ORDER] for s in SCHEME_ORDER]
    return _table(["scheme"] + [f"`{x}`" for x in DIST_ORDER], rows)


def elements_per_scheme(data_dir: Path | None = None) -> str:
    """One table per scheme (tabs): every element metric on every distribution."""
    d = load("elements", data_dir)["distributions"]
    out = []
    for s in SCHEME_ORDER:
        rows = []
        for dist in DIST_ORDER:
            e = d[dist][s]
            rows.append([f"`{dist}`", db(e["sqnr_db"]), f"{e['rel_l2']:.3f}", f"{e['max_rel_err']:.3f}",
                         pct(e["ftz_fraction"]), db(e["block_sqnr_db_p1"]), db(e["block_sqnr_db_min"]),
                         db(e["channel_sqnr_db_min"]), db(e["channel_sqnr_db_median"])])
        table = _table(["distribution", "SQNR dB", "rel. L2", "max err / amax", "flushed to 0",
                        "block SQNR p1", "block SQNR min", "channel SQNR min", "channel SQNR median"], rows)
        out.append(f'=== "{s}"\n\n' + "\n".join("    " + line for line in table.splitlines()) + "\n")
    return "\n".join(out)


def attention_context(data_dir: Path | None = None, scenario: str = "rope_keys", mode: str = "KV") -> str:
    """Decode-attention output error (relative L2, %) by context length, K and V quantized."""
    a = load("attention", data_dir)["scenarios"][scenario]["schemes"]
    lengths = [r["context"] for r in a[SCHEME_ORDER[0]][mode]]
    rows = [[_s(s)] + [pct(r["out_rel_l2"], 2) for r in a[s][mode]] + [sci(a[s][mode][-1]["kl_nats"])]
            for s in SCHEME_ORDER]
    return _table(["scheme"] + [f"{n // 1024}k" if n >= 1024 else str(n) for n in lengths]
                  + [f"KL at {lengths[-1] // 1024 if lengths[-1] >= 1024 else lengths[-1]}{'k' if lengths[-1] >= 1024 else ''} (nats)"], rows)


def attention_context_gaussian(data_dir: Path | None = None) -> str:
    """`attention_context` for Gaussian K and V."""
    return attention_context(data_dir, "gaussian")


def attention_split(data_dir: Path | None = None) -> str:
    """At the longest context: output error and KL with only K, only V, or both quantized, both scenarios."""
    sc = load("attention", data_dir)["scenarios"]
    header = ["scheme"]
    for name in sc:
        header += [f"{name}: K only", f"{name}: V only", f"{name}: K+V", f"{name}: KL (K)"]
    rows = []
    for s in SCHEME_ORDER:
        row = [_s(s)]
        for name in sc:
            r = sc[name]["schemes"][s]
            row += [pct(r[m][-1]["out_rel_l2"], 2) for m in ("K", "V", "KV")] + [sci(r["K"][-1]["kl_nats"])]
        rows.append(row)
    return _table(header, rows)


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def model_summary(data_dir: Path | None = None) -> str:
    """all-MiniLM-L6-v2: real K/V element errors, per-layer attention error and embedding drift."""
    m = load("model", data_dir)
    rows = []
    for s in SCHEME_ORDER:
        el, at, em = m["elements"][s], m["attention"][s], m["embeddings"]["schemes"][s]["KV"]
        rows.append([
            _s(s),
            f"{db(_median([e['sqnr_db'] for e in el['k']]))} / {db(min(e['sqnr_db'] for e in el['k']))}",
            f"{db(_median([e['sqnr_db'] for e in el['v']]))} / {db(min(e['sqnr_db'] for e in el['v']))}",
            pct(max(e["ftz_fraction"] for e in el["k"] + el["v"])),
            pct(max(r["out_rel_l2"] for r in at["KV"]), 2),
            sci(max(r["kl_nats"] for r in at["K"])),
            f"{em['cos_mean']:.5f} / {em['cos_min']:.5f}",
            pct(em["recall_at_1"], 0), pct(em["top1_agreement"], 0), f"{em['sim_max_abs_diff']:.3f}",
        ])
    emb = m["embeddings"]
    rows.append(["BF16 K/V (reference)", "—", "—", "—", "—", "—", "1 / 1", pct(emb["reference"]["recall_at_1"], 0), "100%", "0"])
    f = emb["fp32"]
    rows.append(["FP32 K/V (no rounding)", "—", "—", "—", "—", "—", f"{f['cos_mean']:.5f} / {f['cos_min']:.5f}",
                 pct(f["recall_at_1"], 0), pct(f["top1_agreement"], 0), f"{f['sim_max_abs_diff']:.3f}"])
    return _table(["scheme", "K SQNR dB (median / worst layer)", "V SQNR dB (median / worst layer)",
                   "flushed to 0 (worst)", "attention error, K+V (worst layer)", "softmax KL, K (worst layer)",
                   "embedding cosine (mean / min)", "recall@1", "same top-1", "max similarity change"], rows)


def model_modes(data_dir: Path | None = None) -> str:
    """Embedding drift (1 - mean cosine, x 1e-3) with only K, only V, or both quantized."""
    em = load("model", data_dir)["embeddings"]["schemes"]
    modes = [m for m in ("K", "V", "KV") if m in em[SCHEME_ORDER[0]]]
    rows = [[_s(s)] + [f"{1000 * (1 - em[s][m]['cos_mean']):.2f}" for m in modes] for s in SCHEME_ORDER]
    return _table(["scheme"] + [f"{m} quantized" for m in modes], rows)


def upstream_numbers(path: Path | None = None) -> str:
    """Published accuracy with BF16 / FP8 / 4-bit KV caches, quoted with their sources."""
    u = yaml.safe_load((path or DATA / "upstream.yaml").read_text())
    keys = list(u["sources"])
    rows = []
    for r in u["rows"]:
        src = u["sources"][r["source"]]
        ref = f"[{keys.index(r['source']) + 1}]({src['url']})"
        delta = 100 * (r["fp4"] - r["bf16"])
        rows.append([r["model"], r["task"], f"{100 * r['bf16']:.2f}", f"{100 * r['fp8']:.2f}", f"{100 * r['fp4']:.2f}",
                     f"{delta:+.2f}", src["kv4_recipe"].split(" (")[0], ref])
    table = _table(["model", "task", "BF16 KV", "FP8 KV", "4-bit KV", "4-bit − BF16 (points)", "4-bit recipe",
                    "source"], rows)
    notes = "\n".join(f"{i + 1}. {src['title']}: {src['where']}." for i, src in enumerate(u["sources"].values()))
    return table + "\n" + notes + "\n"


def provenance(data_dir: Path | None = None) -> str:
    """Command, date, machine, versions and run time of each lab output."""
    rows = []
    for part in ("elements", "attention", "model"):
        meta = load(part, data_dir)["meta"]
        rows.append([f"`{part}.json`", f"`{meta['command']}`", meta["date"], meta["device"],
                     ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), f"{meta['elapsed_s']:.0f} s"])
    return _table(["file", "command", "date", "machine", "versions", "time"], rows)


TABLES = {
    "accuracy_schemes": schemes,
    "accuracy_elements_sqnr": elements_sqnr,
    "accuracy_elements_worst_block": elements_worst_block,
    "accuracy_elements_per_scheme": elements_per_scheme,
    "accuracy_attention_context": attention_context,
    "accuracy_attention_context_gaussian": attention_context_gaussian,
    "accuracy_attention_split": attention_split,
    "accuracy_model_summary": model_summary,
    "accuracy_model_modes": model_modes,
    "accuracy_upstream": upstream_numbers,
    "accuracy_provenance": provenance,
}
"""Name -> function returning Markdown (to be merged into `scripts/tables.py`'s registry)."""


if __name__ == "__main__":
    for n in sys.argv[1:] or list(TABLES):
        print(f"## {n}\n\n{TABLES[n]()}")

def values(data_dir: Path | None = None) -> dict[str, str]:
    """Numbers the Accuracy chapter's prose uses, from the lab's JSON."""
    el = load("elements", data_dir)["distributions"]
    att = load("attention", data_dir)["scenarios"]
    model = load("model", data_dir)
    loss = [el[d]["nvfp4/amax448"]["sqnr_db"] - el[d][s]["sqnr_db"]
            for d in ("gaussian", "laplace") for s in ("mxfp4", "fp4_mx_block16")]
    fp8 = el["gaussian"]["fp8_e4m3/calibrated"]["sqnr_db"] - el["gaussian"]["nvfp4/amax448"]["sqnr_db"]
    growth = [sc["schemes"][s]["KV"][-1]["out_rel_l2"] / sc["schemes"][s]["KV"][0]["out_rel_l2"]
              for sc in att.values() for s in sc["schemes"]]
    lengths = [p["context"] for p in next(iter(att.values()))["schemes"][SCHEME_ORDER[0]]["KV"]]
    pairs = model["eval_sentences"] // 2
    search = [el[d]["nvfp4_4over6/amax448"]["sqnr_db"] - el[d]["nvfp4/amax448"]["sqnr_db"] for d in DIST_ORDER]
    top1 = min(e["KV"]["top1_agreement"] for e in model["embeddings"]["schemes"].values())
    return {
        "pow2_loss_db": f"{min(loss):.1f}-{max(loss):.1f} dB",
        "fp8_gain_db": f"{fp8:.0f} dB",
        "search_gain_db": f"{min(search):.1f}-{max(search):.1f} dB",
        "fp8_gain_bits": f"{fp8 / 6.02:.1f}",
        "context_growth": f"{max(growth):.2f}x",
        "context_span": f"{lengths[0] // 1024}k to {lengths[-1] // 1024}k",
        "calibration_sentences": str(model["calibration_sentences"]),
        "eval_sentences": str(model["eval_sentences"]),
        "pairs": str(pairs),
        "top1_changed": str(round((1 - top1) * pairs)),
    }


VALUES = {"accuracy": values}
"""Group -> function returning `{key: text}` for the Accuracy chapter's prose."""
