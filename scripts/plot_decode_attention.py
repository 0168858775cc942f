"""Plot FP4 decode-attention speedup against context length from the benchmark JSON.

Reads `docs/data/perf/decode_attention.json` (written on a GPU by
`scripts/bench_decode_attention.py`) and writes `docs/assets/perf/decode_attention_speedup.svg`:
for each batch size of the sweep, the time of BF16 divided by the time of each other format (FP8
and each FP4 recipe's fastest decoder), against context length; where the run timed FlashInfer's
decode over the same caches, its NVFP4 and BF16 times at the headline shape are marked (our BF16
time divided by FlashInfer's) in the headline batch's panel. Sweep points where the batch's
tokens exceed the benchmark pool (slots wrap around, so several requests read the same pages and
the L2 cache can serve repeats) are left out and said so in the figure.

The SVG is deterministic (fixed hash salt, no date), so `tests/test_performance_page.py` can
check that the committed figure is the one this script makes from the committed JSON:

```bash
python scripts/plot_decode_attention.py [--json PATH] [--out PATH]
```
"""

from __future__ import annotations

import sys
from pathlib import Path

from figure_style import plot_main, rc, save_svg

ROOT = Path(__file__).resolve().parents[1]
WIDTH_IN, HEIGHT_IN = 10.0, 4.6
DATA = ROOT / "docs" / "data" / "perf" / "decode_attention.json"
OUT = ROOT / "docs" / "assets" / "perf" / "decode_attention_speedup.svg"


def sweep_points(d: dict) -> dict:
    """`{(format, batch): [(context, ms), ...]}` of the sweep, without pool wrap-around points."""
    pool = d["shape"]["pool_tokens"]
    pts: dict = {}
    for r in d["rows"]:
        if r["kind"] != "sweep" or r["batch"] * r["context"] > pool:
            continue
        pts.setdefault((r["format"], r["batch"]), []).append((r["context"], r["ms"]))
    return {k: sorted(v) for k, v in pts.items()}


def flashinfer_points(d: dict) -> dict:
    """`{label: (batch, context, speedup over our BF16)}` for FlashInfer's fastest passing NVFP4 and
    BF16 rows at the headline (its decode over the same caches); empty when the run has none."""
    fi = d.get("flashinfer", {})
    heads = {r["format"]: r for r in d["rows"] if r["kind"] == "headline"}
    if "bf16" not in heads:
        return {}
    best: dict = {}
    for r in fi.get("rows", []):
        if "ms" in r and r.get("ok", True) and r["format"] in ("nvfp4", "bf16"):
            if r["format"] not in best or r["ms"] < best[r["format"]]["ms"]:
                best[r["format"]] = r
    return {f"FlashInfer {f} (headline)": (r["batch"], r["context"], heads["bf16"]["ms"] / r["ms"])
            for f, r in sorted(best.items(), key=lambda kv: kv[0] != "nvfp4")}


def plot(d: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context("default"), plt.rc_context(rc(WIDTH_IN, "nvfp4-kvcache")):
        _draw(plt, d, out)


def _draw(plt, d: dict, out: Path) -> None:
    """The figure itself (default style, fixed SVG ids: the same bytes in any process)."""
    pts = sweep_points(d)
    batches = sorted({b for _, b in pts})
    if not batches:  # a run that skipped the sweep: say so instead of an empty figure
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"Decode attention, {d['device']}, {d['date'][:10]}: sweep not run", ha="center")
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="svg", metadata={"Date": None})
        plt.close(fig)
        return
    others = [f for f in d["sweep_formats"] if f != "bf16"]
    fig, axes = plt.subplots(1, len(batches), figsize=(WIDTH_IN, HEIGHT_IN), sharey=True, squeeze=False,
                             constrained_layout=True)
    for ax, b in zip(axes[0], batches):
        base = dict(pts[("bf16", b)])
        for f in others:
            xs = [c for c, _ in pts.get((f, b), []) if c in base]
            ys = [base[c] / dict(pts[(f, b)])[c] for c in xs]
            ax.plot(xs, ys, marker="o", label=f)
        fi = [(label, c, y) for label, (fb, c, y) in flashinfer_points(d).items() if fb == b]
        for (label, c, y), marker in zip(fi, ("X", "P")):
            ax.plot([c], [y], marker=marker, ms=9, ls="none", color="black", label=label)
        if fi and b != batches[0]:
            ax.legend(fontsize=10, loc="upper left")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.axhline(3.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ticks = [c for c in (1024, 4096, 16384, 65536) if c <= max(base)]
        ax.set_xticks(ticks, [f"{c // 1024}k" for c in ticks])
        ax.minorticks_off()
        ax.set_title(f"batch {b}")
        ax.set_xlabel("context (tokens)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("speedup over BF16\n(same kernel design)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=len(others))
    fig.suptitle(f"Decode attention, {d['device']}, {d['date'][:10]} (dashed: the 3x goal)")
    save_svg(fig, out)


def main(argv=None) -> int:
    return plot_main(plot, __doc__, DATA, OUT, argv)


if __name__ == "__main__":
    sys.exit(main())
