"""The Performance and Kernels chapters' figures and tables come from the committed benchmark JSON.

* `docs/assets/perf/decode_attention_speedup.svg` is byte for byte what
  `scripts/plot_decode_attention.py` makes from `docs/data/perf/decode_attention.json`, and
  `docs/assets/quant-kernels.svg` what `scripts/plot_quant_kernels.py` makes from
  `docs/data/perf/quant_kernels.json` (so a new benchmark run cannot land without its figure);
* the figure leaves out the sweep points whose tokens exceed the benchmark pool, and the sweep
  table marks them;
* every headline row records its launch configuration and both timings.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = json.loads((ROOT / "docs/data/perf/decode_attention.json").read_text())


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_figure_is_regenerated_from_the_json(tmp_path):
    plot = _load("plot_decode_attention")
    out = tmp_path / "fig.svg"
    plot.main(["--out", str(out)])
    assert out.read_bytes() == (ROOT / "docs/assets/perf/decode_attention_speedup.svg").read_bytes(), \
        "run: python scripts/plot_decode_attention.py"


def test_committed_kernels_figure_is_regenerated_from_the_json(tmp_path):
    plot = _load("plot_quant_kernels")
    out = tmp_path / "fig.svg"
    plot.main(["--out", str(out)])
    assert out.read_bytes() == (ROOT / "docs/assets/quant-kernels.svg").read_bytes(), \
        "run: python scripts/plot_quant_kernels.py"


def test_wrapped_sweep_points_are_left_out_and_marked():
    if not any(r["kind"] == "sweep" for r in DATA["rows"]):
        pytest.skip("the committed run skipped the sweep (its 'skipped' list says so)")
    plot = _load("plot_decode_attention")
    pool = DATA["shape"]["pool_tokens"]
    wrapped = {(r["format"], r["batch"], r["context"]) for r in DATA["rows"]
               if r["kind"] == "sweep" and r["batch"] * r["context"] > pool}
    assert wrapped  # the sweep's largest points do wrap: the filter is exercised
    kept = {(f, b, c) for (f, b), pts in plot.sweep_points(DATA).items() for c, _ in pts}
    assert not kept & wrapped
    tables = _load("tables")
    marked = [line for line in tables.decode_attention_sweep().splitlines() if "wraps" in line and line.startswith("|")]
    assert len(marked) == len({(b, c) for _, b, c in wrapped})


def test_headline_rows_carry_launch_and_both_timings():
    rows = [r for r in DATA["rows"] if r["kind"] == "headline"]
    assert {r["format"] for r in rows} >= {"bf16", "fp8", "nvfp4+cvt_f16"}
    for r in rows:
        assert {"num_kv_splits", "block_n", "num_warps", "num_stages"} <= set(r["launch"])
        assert r["ms"] > 0 and r["ms_events"] > 0 and 0 < r["frac_of_read"] < 1.5
