"""Draw the Kernels chapter's figure from the benchmark JSON.

Reads `docs/data/perf/quant_kernels.json` (written on a GPU by `scripts/bench_quant_kernels.py`)
and writes `docs/assets/quant-kernels.svg`: throughput (CUDA-graph replays) and time per call
against token count, with the copy ceiling. The SVG is deterministic, so the tests can check that
the committed figure is the one this script makes from the committed JSON:

```bash
python scripts/plot_quant_kernels.py [--json PATH] [--out PATH]
```
"""

from __future__ import annotations

import sys
from pathlib import Path

from figure_style import plot_main, rc, save_svg

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "perf" / "quant_kernels.json"
OUT = ROOT / "docs" / "assets" / "quant-kernels.svg"
WIDTH_IN, HEIGHT_IN = 10.0, 8.0


def plot(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context("default"), plt.rc_context(rc(WIDTH_IN, "quant-kernels")):
        _draw(plt, data, out)


def _draw(plt, data: dict, out: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(WIDTH_IN, HEIGHT_IN), sharex=True, constrained_layout=True)
    colors = {"nvfp4": "tab:green", "fp4_mx_block16": "tab:blue", "mxfp4": "tab:orange"}
    styles = {"store_kv": "-o", "gather_dequantize": "--s"}
    for recipe in sorted({r["recipe"] for r in data["sweep"]}):
        for op in ("store_kv", "gather_dequantize"):
            rows = sorted((r for r in data["sweep"] if r["recipe"] == recipe and r["op"] == op),
                          key=lambda r: r["tokens"])
            t = [r["tokens"] for r in rows]
            ax1.plot(t, [r["gbps_graph"] for r in rows], styles[op], color=colors[recipe], ms=4,
                     label=f"{recipe} {op}")
            ax2.plot(t, [r["us_graph"] for r in rows], styles[op], color=colors[recipe], ms=4)
            if op == "store_kv":
                ax2.plot(t, [r["us"] for r in rows], ":", color=colors[recipe], alpha=0.6,
                         label=f"{recipe} store_kv, plain launch")
    ax1.axhline(data["copy_gbps"], color="grey", lw=1)
    ax1.text(1, data["copy_gbps"] * 0.92, "copy bandwidth", color="grey", va="top")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    ax2.set_xlabel("tokens (x 8 heads x 128, bf16)")
    ax1.set_ylabel("GB/s read + written\n(CUDA-graph replay)")
    ax2.set_yscale("log")
    ax2.set_ylabel("median µs per call")
    ax1.legend(loc="upper left", ncol=2)
    ax2.legend(loc="upper left")
    fig.suptitle(f"FP4 kernels on {data['device']} ({data['date'][:10]})")
    save_svg(fig, out)


def main(argv=None) -> int:
    return plot_main(plot, __doc__, DATA, OUT, argv)


if __name__ == "__main__":
    sys.exit(main())
