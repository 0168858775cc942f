"""Figures of the Accuracy chapter, drawn from `docs/data/accuracy/*.json` into `docs/assets/accuracy/`.

usage:

```bash
python scripts/accuracy_figures.py                 # from the committed full run
python scripts/accuracy_figures.py --data build/accuracy-quick --out build/accuracy-quick/figures
```

The SVGs are deterministic for a given input (fixed hash salt, no date in the metadata). Every
figure is `WIDTH_IN` wide and takes its font sizes from `figure_style.rc`, so that its text is
drawn at 10 px or more in the page's column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from accuracy_tables import DIST_ORDER, SCHEME_ORDER, load  # noqa: E402
from figure_style import rc, save_svg  # noqa: E402

WIDTH_IN = 10.0
plt.rcParams.update(rc(WIDTH_IN, "nvfp4-kvcache-accuracy"))

STYLE = {
    "fp8_e4m3/scale1": ("#7f7f7f", "--"),
    "fp8_e4m3/calibrated": ("#000000", "-"),
    "int4_g32": ("#8c564b", "-."),
    "fp4_mx_block16": ("#d62728", "-"),
    "mxfp4": ("#ff7f0e", "-"),
    "mxfp4_rceil": ("#ffbb78", "--"),
    "nvfp4/g1": ("#9ecae1", "--"),
    "nvfp4/amax6x448": ("#3182bd", ":"),
    "nvfp4/amax448": ("#08519c", "-"),
    "nvfp4_4over6/g1": ("#a1d99b", "--"),
    "nvfp4_4over6/amax6x448": ("#31a354", ":"),
    "nvfp4_4over6/amax448": ("#006d2c", "-"),
}
"""Colour and line style per scheme: one hue per family (grey FP8, brown INT4, red block-16,
orange MXFP4, blue NVFP4, green NVFP4 with the 4-over-6 search), a line style per variant."""


_save = save_svg   # the figure's own size: see WIDTH_IN


def _heat(ax, m: np.ndarray, title: str, vmin: float, vmax: float, xlabels: bool):
    shown = np.where(np.isfinite(m), m, vmax)
    im = ax.imshow(shown, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(DIST_ORDER)), DIST_ORDER if xlabels else [""] * len(DIST_ORDER),
                  rotation=30, ha="right")
    ax.set_yticks(range(len(SCHEME_ORDER)), SCHEME_ORDER)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m[i, j]
            txt = "exact" if v == np.inf else f"{v:.1f}"
            ax.text(j, i, txt, ha="center", va="center",
                    color="white" if shown[i, j] < (vmin + vmax) / 2 else "black")
    ax.set_title(title)
    return im


def fig_elements(data: Path | None, out: Path) -> Path:
    """Heatmaps: whole-tensor SQNR and 1st-percentile block SQNR, scheme x distribution."""
    d = load("elements", data)["distributions"]
    sq = np.array([[d[dist][s]["sqnr_db"] for dist in DIST_ORDER] for s in SCHEME_ORDER])
    p1 = np.array([[d[dist][s]["block_sqnr_db_p1"] for dist in DIST_ORDER] for s in SCHEME_ORDER])
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH_IN, 9.5), constrained_layout=True)
    _heat(axes[0], sq, "SQNR of the whole tensor (dB, higher is better)", 0, 32, xlabels=False)
    _heat(axes[1], p1, "SQNR of the worst 1% of 16-element blocks (dB)", 0, 32, xlabels=True)
    return _save(fig, out / "elements_sqnr.svg")


def fig_attention(data: Path | None, out: Path) -> Path:
    """Output error and KL vs context length, K and V quantized, both scenarios."""
    sc = load("attention", data)["scenarios"]
    fig, axes = plt.subplots(2, len(sc), figsize=(WIDTH_IN, 9), constrained_layout=True, squeeze=False,
                             sharex=True)
    for j, (name, r) in enumerate(sc.items()):
        for s in SCHEME_ORDER:
            rows = r["schemes"][s]["KV"]
            x = [p["context"] for p in rows]
            color, ls = STYLE[s]
            axes[0, j].plot(x, [100 * p["out_rel_l2"] for p in rows], ls, color=color, marker="o", ms=3, label=s)
            axes[1, j].plot(x, [p["kl_nats"] for p in r["schemes"][s]["K"]], ls, color=color, marker="o", ms=3, label=s)
        for i, ylabel in enumerate(["output error, K and V\nquantized (rel. L2, %)",
                                    "softmax KL, K quantized (nats)"]):
            ax = axes[i, j]
            ax.set_xscale("log", base=2)
            ticks = [x[0], x[len(x) // 2], x[-1]]
            ax.set_xticks(ticks, [f"{t // 1024}k" for t in ticks])
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_ylabel(ylabel if j == 0 else "")
            ax.grid(True, which="both", alpha=0.3)
        axes[1, j].set_xlabel("context length (tokens)")
        axes[0, j].set_title(f"K: {r['k_distribution']}, V: {r['v_distribution']}")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return _save(fig, out / "attention_context.svg")


def fig_model_layers(data: Path | None, out: Path) -> Path:
    """Real K and V of all-MiniLM-L6-v2: SQNR per layer per scheme."""
    m = load("model", data)["elements"]
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH_IN, 5.6), constrained_layout=True, sharey=True)
    for ax, which in zip(axes, ("k", "v")):
        for s in SCHEME_ORDER:
            color, ls = STYLE[s]
            vals = [e["sqnr_db"] for e in m[s][which]]
            ax.plot(range(len(vals)), vals, ls, color=color, marker="o", ms=3, label=s)
        ax.set_xlabel("layer")
        ax.set_title(f"real {which.upper()}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("SQNR (dB)")
    fig.suptitle("all-MiniLM-L6-v2: SQNR of each layer's K and V")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return _save(fig, out / "model_layers.svg")


def fig_model_embeddings(data: Path | None, out: Path) -> Path:
    """Embedding drift (1 - cosine) per scheme, with K, V or both quantized."""
    em = load("model", data)["embeddings"]["schemes"]
    modes = [mm for mm in ("K", "V", "KV") if mm in em[SCHEME_ORDER[0]]]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.2), constrained_layout=True)
    w = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        vals = [1 - em[s][mode]["cos_mean"] for s in SCHEME_ORDER]
        ax.bar(np.arange(len(SCHEME_ORDER)) + (i - (len(modes) - 1) / 2) * w, vals, w, label=f"{mode} quantized")
    ax.set_xticks(range(len(SCHEME_ORDER)), SCHEME_ORDER, rotation=25, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("1 − cosine to the BF16-KV\nembedding (mean)")
    ax.set_title("all-MiniLM-L6-v2 sentence embeddings, every layer's K/V fake-quantized")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    return _save(fig, out / "model_embeddings.svg")


FIGURES = [fig_elements, fig_attention, fig_model_layers, fig_model_embeddings]


def main(argv: list[str] | None = None) -> list[Path]:
    """Draw every figure; returns the files written."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="folder with the lab's JSON (default docs/data/accuracy)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "assets" / "accuracy")
    args = ap.parse_args(argv)
    written = [f(args.data, args.out) for f in FIGURES]
    for p in written:
        print(f"wrote {p}")
    return written


if __name__ == "__main__":
    main()
