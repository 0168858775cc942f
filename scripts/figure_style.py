"""One style for the site's figures, so that their text is readable where the page shows it.

At a 1280-px browser window the theme's article column is `COLUMN_PX` wide (both sidebars
shown). A figure is shown at its own width, or shrunk to the column. Matplotlib writes an SVG's
size in points, which a browser draws at 4/3 px each, so a figure `W` inches wide shows at
`min(96 W, COLUMN_PX)` px and its `s`-point text at `s * min(4/3, COLUMN_PX / (72 W))` px.
`rc(W)` sets every font size so that this comes out at `MIN_TEXT_PX` or more (the browser test,
`tests/test_site_browser.py`, measures the drawn text and fails below 10 px), writes text as
SVG text (searchable, and measurable by the test) and fixes the SVG ids, so that the same data
always gives the same bytes. Never pass a smaller `fontsize=` than the default to matplotlib.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

COLUMN_PX = 748
"""The article column's width in px at a 1280-px window (measured in Chromium)."""
MIN_TEXT_PX = 10.5
"""The smallest text size drawn on the page, in px (the browser test's floor is 10)."""


def text_pt(width_in: float) -> float:
    """The smallest font size, in points, for a figure `width_in` inches wide (rounded up to 0.5)."""
    scale = min(4 / 3, COLUMN_PX / (72 * width_in))
    return math.ceil(2 * MIN_TEXT_PX / scale) / 2


def rc(width_in: float, salt: str) -> dict:
    """Matplotlib settings for a figure `width_in` inches wide (use with `plt.rc_context`)."""
    return {
        "font.size": text_pt(width_in),        # every other size is relative to it, none smaller
        "font.family": "DejaVu Sans",
        "svg.fonttype": "none",                 # text stays text
        "svg.hashsalt": salt,                   # fixed ids: deterministic bytes
    }


def save_svg(fig, path: Path) -> Path:
    """Write `fig` to `path` as SVG at its own size, without a date (the same data gives the same
    bytes), and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def plot_main(plot, doc: str, data: Path, out: Path, argv=None) -> int:
    """The command line of a script that draws one figure from one JSON: `--json PATH`
    (default `data`) and `--out PATH` (default `out`); `plot(loaded_json, out_path)` draws it."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--json", default=str(data))
    ap.add_argument("--out", default=str(out))
    args = ap.parse_args(argv)
    plot(json.loads(Path(args.json).read_text()), Path(args.out))
    print(f"wrote {args.out}")
    return 0
