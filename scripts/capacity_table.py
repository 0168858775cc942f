"""The site's KV-capacity tables, computed from [`nvfp4_kvcache.capacity`][nvfp4_kvcache.capacity].

`render_markdown` and `render_gpus` are rendered into the Pool chapter at build time (registered
in `scripts/tables.py`, filled in by `docs/hooks/generated.py`). This script also writes the same
rows, machine-readable, to `docs/data/capacity/capacity.csv`; `--check` exits 1 if that file
differs from what the code produces now (used by the tests).

Usage:

```bash
python scripts/capacity_table.py          # write the CSV
python scripts/capacity_table.py --check  # verify it
```
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nvfp4_kvcache.capacity import (  # noqa: E402
    DEFAULT_MEM_FRACTION, DEFAULT_TP, GPUS, KV_DTYPES, capacity_rows, decode_step_bytes, tokens_that_fit,
    weight_bytes,
)
from nvfp4_kvcache.model_configs import MODELS  # noqa: E402

OUT = ROOT / "docs" / "data" / "capacity"


def render_gpus() -> str:
    """The GPUs of the tables: the memory each exposes, and where that number comes from."""
    lines = ["| GPU | device | memory exposed | bytes | source |", "|---|---|---:|---:|---|"]
    for g in GPUS.values():
        lines.append(f"| {g.name} | {g.device} | {g.memory_mib:,} MiB | {g.memory_bytes / 1e9:.2f}e9 | {g.source} |")
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """One tab per GPU (rows = model, columns = KV dtype, cells = tokens per GPU), then bytes per token."""
    rows = capacity_rows()
    dtypes = list(KV_DTYPES)
    lines = []
    for gpu in GPUS.values():
        lines += [f'=== "{gpu.name}"', "",
                  f"    KV tokens per GPU: {gpu.name}, {gpu.memory_bytes / 1e9:.2f}e9 bytes, "
                  f"{DEFAULT_MEM_FRACTION:.0%} of them for weights + KV cache.", "",
                  "    | model (TP) | weights GB/GPU | " + " | ".join(f"`{d}`" for d in dtypes) + " |",
                  "    |---|---:|" + "---:|" * len(dtypes)]
        for name in MODELS:
            mine = {r.kv_dtype: r for r in rows if r.model == name and r.gpu == gpu.name}
            first = mine[dtypes[0]]
            cells = [f"{mine[d].tokens:,}" if mine[d].tokens else "—" for d in dtypes]
            lines.append(f"    | {name} (TP {first.tp}) | {first.weight_gb_per_gpu:.1f} | " + " | ".join(cells) + " |")
        if any(r.tokens == 0 for r in rows if r.gpu == gpu.name):
            lines += ["", f"    —: the weights alone take more than {DEFAULT_MEM_FRACTION:.0%} of the GPU's memory."]
        lines.append("")
    lines += ["Bytes per token per layer, on one GPU of the model's tensor-parallel group:", "",
              "| model (TP) | " + " | ".join(f"`{d}`" for d in dtypes) + " |", "|---|" + "---:|" * len(dtypes)]
    first_gpu = next(iter(GPUS))
    for name in MODELS:
        mine = {r.kv_dtype: r for r in rows if r.model == name and r.gpu == first_gpu}
        lines.append(f"| {name} (TP {mine[dtypes[0]].tp}) | "
                     + " | ".join(f"{mine[d].bytes_per_token_per_layer:g}" for d in dtypes) + " |")
    return "\n".join(lines) + "\n"


TRAFFIC_RECIPE = "fp4_mx_block16"


def traffic_cases() -> list[tuple[str, str, str, int, int, int, int]]:
    """(model, GPU, pool note, tp, pool tokens, batch, context) of the whole-layer traffic table."""
    llama = tokens_that_fit("Llama-3.1-8B", TRAFFIC_RECIPE, "H100")
    deepseek = tokens_that_fit("DeepSeek-V3", TRAFFIC_RECIPE, "H200", tp=8)
    return [("Llama-3.1-8B", "H100", "all that fit", 1, llama, 64, 2048),
            ("Llama-3.1-8B", "H100", "all that fit", 1, llama, 8, 1024),
            ("Llama-3.1-8B", "H100", "a quarter", 1, llama // 4, 64, 2048),
            ("DeepSeek-V3", "H200", "all that fit, per GPU of TP 8", 8, deepseek, 64, 2048)]


def render_traffic() -> str:
    """Bytes one decode step moves: whole-layer dequantize against a fused gather."""
    lines = ["| model, GPU | pool tokens | batch x context | whole-layer dequantize | fused gather | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for model, gpu, note, tp, pool, batch, context in traffic_cases():
        whole, fused = decode_step_bytes(model, TRAFFIC_RECIPE, pool, batch, context, tp=tp)
        lines.append(f"| {model}, {gpu} | {pool:,} ({note}) | {batch} x {context} | {whole / 1e9:.1f} GB | "
                     f"{fused / 1e9:.2f} GB | {whole / fused:.0f}x |")
    return "\n".join(lines) + "\n"


def values() -> dict[str, str]:
    """Numbers the Pool chapter's prose uses."""
    ds_gb = weight_bytes("DeepSeek-V3") / DEFAULT_TP["DeepSeek-V3"] / 1e9
    h100 = GPUS["H100"].memory_bytes
    return {
        "mem_fraction": f"{DEFAULT_MEM_FRACTION:.0%}",
        "deepseek_tp": str(DEFAULT_TP["DeepSeek-V3"]),
        "deepseek_gb_per_gpu": f"{ds_gb:.1f} GB",
        "h100_budget_gb": f"{DEFAULT_MEM_FRACTION * h100 / 1e9:.1f} GB",
        "h100_bytes": f"{h100 / 1e9:.2f}e9",
        "h100_mib": f"{GPUS['H100'].memory_mib:,} MiB",
    }


def render_csv() -> str:
    """All rows as CSV."""
    out = ["model,tp,gpu,gpu_memory_bytes,kv_dtype,bytes_per_token_per_layer,weight_gb_per_gpu,tokens"]
    for r in capacity_rows():
        out.append(f"{r.model},{r.tp},{r.gpu},{GPUS[r.gpu].memory_bytes},{r.kv_dtype},"
                   f"{r.bytes_per_token_per_layer:g},{r.weight_gb_per_gpu:.3f},{r.tokens}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    files = {OUT / "capacity.csv": render_csv()}
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
