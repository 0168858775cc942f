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


def _with_flashinfer(fi: dict) -> dict:
    """The committed run with a FlashInfer stage added, summarised by the benchmark's own code."""
    import copy

    import bench_decode_attention as bda

    d = copy.deepcopy(DATA)
    d["flashinfer"] = fi
    bda.flashinfer_summary(d["summary"], fi)
    return d


def _fi_rows() -> list[dict]:
    base = {"batch": DATA["shape"]["batch"], "context": DATA["shape"]["context"], "flashinfer": "0.7.4"}
    nbytes = {r["format"]: r["bytes"] for r in DATA["rows"] if r["kind"] == "headline"}

    def row(fmt, backend, ms, ok=True, tc=True):
        return dict(base, format=fmt, backend=backend, tensor_cores=tc, ms=ms, ok=ok, bytes=nbytes[fmt],
                    bytes_per_s=nbytes[fmt] / (ms * 1e-3))

    return [row("nvfp4", "flashinfer_nvfp4_fa2", 0.25), row("bf16", "flashinfer_bf16_fa2", 0.5),
            row("bf16", "flashinfer_bf16", 0.625, tc=False), row("fp8", "flashinfer_fp8_fa2", 0.2, ok=False),
            dict(base, format="fp8", backend="flashinfer_fp8", tensor_cores=False, ok=False,
                 skipped="JIT module not compiled in time")]


def test_headline_table_shows_flashinfer_rows_and_summaries():
    tables = _load("tables")
    d = _with_flashinfer({"available": True, "ran": True, "rows": _fi_rows()})
    text = tables.decode_attention_headline(data=d)
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| FlashInfer")}
    assert set(lines) == {"| FlashInfer `nvfp4` (FA2 tensor cores)", "| FlashInfer `bf16` (FA2 tensor cores)",
                          "| FlashInfer `bf16` (CUDA-core decode)", "| FlashInfer `fp8` (FA2 tensor cores)"}
    bf16 = next(r["ms"] for r in DATA["rows"] if r["kind"] == "headline" and r["format"] == "bf16")
    nv = lines["| FlashInfer `nvfp4` (FA2 tensor cores)"].split(" | ")
    assert nv[1] == "250.0" and nv[2] == "-" and nv[6] == f"{bf16 / 0.25:.2f}x" and "flashinfer_nvfp4_fa2" in nv[8]
    assert "FAILS the oracle check" in lines["| FlashInfer `fp8` (FA2 tensor cores)"]
    for recipe, s in d["summary"].items():
        assert f"`{recipe}` {s['speedup_vs_flashinfer_nvfp4']:.2f}x" in text
        assert s["speedup_vs_flashinfer_nvfp4"] == pytest.approx(0.25 / s["ms"])
    assert "2.00x its BF16 (`flashinfer_bf16_fa2`)" in text               # 0.5 / 0.25: its fastest BF16 path
    assert "its FP8" not in text                                           # its FP8 failed: no ratio
    assert "`flashinfer_fp8_fa2`" in text.split("fail the oracle check")[1]
    assert "`flashinfer_fp8`: JIT module not compiled in time" in text


def test_headline_table_says_when_a_run_has_no_flashinfer_rows():
    tables = _load("tables")
    if "flashinfer" not in DATA:
        assert "it predates the benchmark's FlashInfer stage" in tables.decode_attention_headline()
    no = _with_flashinfer({"available": False, "reason": "no CUDA device: FlashInfer's decode kernels run on a GPU only"})
    text = tables.decode_attention_headline(data=no)
    assert "FlashInfer was not available (no CUDA device" in text and "| FlashInfer" not in text
    broke = _with_flashinfer({"available": True, "ran": False, "reason": "ValueError: slots are not pages"})
    assert "FlashInfer's stage failed (ValueError: slots are not pages)" in tables.decode_attention_headline(data=broke)
    none = _with_flashinfer({"available": True, "ran": True, "rows": [r for r in _fi_rows() if r["format"] != "nvfp4"]})
    assert "FlashInfer's NVFP4 decode has no passing time" in tables.decode_attention_headline(data=none)


def test_figure_marks_flashinfer_at_the_headline(tmp_path):
    plot = _load("plot_decode_attention")
    d = _with_flashinfer({"available": True, "ran": True, "rows": _fi_rows()})
    pts = plot.flashinfer_points(d)
    bf16 = next(r["ms"] for r in DATA["rows"] if r["kind"] == "headline" and r["format"] == "bf16")
    b, c = DATA["shape"]["batch"], DATA["shape"]["context"]
    assert pts == {"FlashInfer nvfp4 (headline)": (b, c, pytest.approx(bf16 / 0.25)),
                   "FlashInfer bf16 (headline)": (b, c, pytest.approx(bf16 / 0.5))}
    assert plot.flashinfer_points(DATA) == {} or "flashinfer" in DATA
    if any(r["kind"] == "sweep" and r["batch"] == b for r in DATA["rows"]):
        with_fi, without = tmp_path / "fi.svg", tmp_path / "no.svg"
        plot.plot(d, with_fi)
        plot.plot(DATA, without)
        assert with_fi.read_bytes() != without.read_bytes()
