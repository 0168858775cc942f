"""Generate the site's KV-capacity table from [`nvfp4_kvcache.capacity`][nvfp4_kvcache.capacity].

Writes `docs/data/capacity/capacity.md` (the table the Pool chapter includes) and
`docs/data/capacity/capacity.csv` (the same rows, machine-readable). `--check` exits 1 if the
files on disk differ from what the code produces now (used by the tests).

Usage:

```bash
python scripts/capacity_table.py          # write
python scripts/capacity_table.py --check  # verify
```
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nvfp4_kvcache.capacity import DEFAULT_MEM_FRACTION, GPUS, KV_DTYPES, capacity_rows  # noqa: E402
from nvfp4_kvcache.model_configs import MODELS  # noqa: E402

OUT = ROOT / "docs" / "data" / "capacity"


def render_markdown() -> str:
    """One table per GPU: rows = model, columns = KV dtype, cells = tokens per GPU."""
    rows = capacity_rows()
    dtypes = list(KV_DTYPES)
    lines = []
    for gpu in GPUS:
        lines += [f"**{gpu}** ({GPUS[gpu] / 1e9:.0f} GB, {DEFAULT_MEM_FRACTION:.0%} for weights + KV cache): "
                  "KV tokens per GPU", "",
                  "| model (TP) | weights GB/GPU | " + " | ".join(dtypes) + " |",
                  "|---|---:|" + "---:|" * len(dtypes)]
        for name in MODELS:
            mine = {r.kv_dtype: r for r in rows if r.model == name and r.gpu == gpu}
            first = mine[dtypes[0]]
            cells = [f"{mine[d].tokens:,}" if mine[d].tokens else "weights do not fit" for d in dtypes]
            lines.append(f"| {name} (TP {first.tp}) | {first.weight_gb_per_gpu:.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Bytes per token per layer (per GPU):", "",
              "| model (TP) | " + " | ".join(dtypes) + " |", "|---|" + "---:|" * len(dtypes)]
    for name in MODELS:
        mine = {r.kv_dtype: r for r in rows if r.model == name and r.gpu == "H100"}
        lines.append(f"| {name} (TP {mine[dtypes[0]].tp}) | "
                     + " | ".join(f"{mine[d].bytes_per_token_per_layer:g}" for d in dtypes) + " |")
    return "\n".join(lines) + "\n"


def render_csv() -> str:
    """All rows as CSV."""
    out = ["model,tp,gpu,kv_dtype,bytes_per_token_per_layer,weight_gb_per_gpu,tokens"]
    for r in capacity_rows():
        out.append(f"{r.model},{r.tp},{r.gpu},{r.kv_dtype},{r.bytes_per_token_per_layer:g},"
                   f"{r.weight_gb_per_gpu:.3f},{r.tokens}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    files = {OUT / "capacity.md": render_markdown(), OUT / "capacity.csv": render_csv()}
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, text in files.items()
                 if not p.exists() or p.read_text() != text]
        if stale:
            print("out of date (run python scripts/capacity_table.py):", ", ".join(stale))
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
