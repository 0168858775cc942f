"""The per-GPU launch table of the FP4 quantize / dequantize kernels is what the benchmark measured.

`nvfp4_kvcache_triton.launch.DEVICE_LAUNCHES` gives each GPU model its fastest launch (elements per
program, warps) per kernel kind and recipe. Each entry must be

* the winner (least time) of a committed tuning sweep of that GPU for that kind and recipe (the
  `tuning` rows of `docs/data/perf/quant_kernels.json`, of a run kept in
  `docs/data/perf/quant_kernels_runs/`, or of `docs/data/perf/quant_kernels_tuning.json`), and
* the launch that the newest committed benchmark run of that GPU measured with (its `launches`,
  or for runs before that key its per-recipe `tuning_chosen`),

so a table that drifted from its measurement, or a GPU with no committed run, fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nvfp4_kvcache_triton.launch import DEVICE_LAUNCHES, TUNING, device_launch, launch_params

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "docs" / "data" / "perf"


def _runs() -> list[dict]:
    runs = [json.loads(p.read_text()) for p in [PERF / "quant_kernels.json",
                                                *sorted((PERF / "quant_kernels_runs").glob("*.json"))]]
    return [r for r in runs if not r.get("smoke")]


def _sweeps() -> list[dict]:
    return _runs() + json.loads((PERF / "quant_kernels_tuning.json").read_text())["tuning_runs"]


def sweep_winners(run: dict) -> dict[str, dict[str, int]]:
    """`{"kind:recipe": {"elems", "warps"}}`: the fastest row of each kind and recipe of a run's sweep."""
    best: dict[str, dict] = {}
    for r in run.get("tuning", []):
        key = f"{r['kind']}:{r['recipe']}"
        if key not in best or r["us"] < best[key]["us"]:
            best[key] = r
    return {k: {"elems": r["elems"], "warps": r["warps"]} for k, r in best.items()}


def measured_with(run: dict) -> dict[str, dict[str, int]]:
    """The per-recipe launches a run measured its main rows with."""
    if "launches" in run:
        return run["launches"]
    chosen = run["tuning_chosen"]
    out = {}
    for key in chosen:
        if key.startswith(("quantize_elems:", "dequantize_elems:", "gather_elems:")):
            kind, recipe = key.split("_elems:")
            out[f"{kind}:{recipe}"] = {"elems": chosen[key], "warps": chosen[f"{kind}_warps:{recipe}"]}
    return out


def test_every_entry_is_a_measured_winner_of_its_gpu():
    assert DEVICE_LAUNCHES, "the table is empty"
    for device, table in DEVICE_LAUNCHES.items():
        winners = [sweep_winners(s) for s in _sweeps() if s["device"] == device]
        assert winners, f"no committed tuning sweep on {device}"
        for key, launch in table.items():
            assert set(launch) == {"elems", "warps"}, (device, key)
            assert any(w.get(key) == launch for w in winners), (device, key, launch)


def test_newest_run_of_each_gpu_measured_with_its_entries():
    for device, table in DEVICE_LAUNCHES.items():
        runs = [r for r in _runs() if r["device"] == device and "main" in r]
        assert runs, f"no committed benchmark run on {device}"
        newest = max(runs, key=lambda r: r["date"])
        used = measured_with(newest)
        for key, launch in table.items():
            assert used.get(key) == launch, (device, key, launch, used.get(key))


def test_table_keys_are_kinds_and_recipes():
    from nvfp4_kvcache.recipes import RECIPES

    for table in DEVICE_LAUNCHES.values():
        for key in table:
            kind, recipe = key.split(":")
            assert kind in ("quantize", "dequantize", "gather") and recipe in RECIPES, key


def test_lookup_and_fallback():
    assert device_launch("cpu", "quantize", "nvfp4") == {} and device_launch(None, "dequantize", "mxfp4") == {}
    with pytest.raises(ValueError, match="kind"):
        device_launch("cpu", "store", "nvfp4")
    assert launch_params("quantize", "nvfp4", "cpu") == (TUNING["quantize_elems"], TUNING["quantize_warps"])
    key = "dequantize_warps:mxfp4"
    TUNING[key] = 2
    try:  # an override in TUNING wins over the table and the defaults
        assert launch_params("dequantize", "mxfp4", "cpu") == (TUNING["dequantize_elems"], 2)
    finally:
        del TUNING[key]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, launch in DEVICE_LAUNCHES.get(name, {}).items():
            kind, recipe = key.split(":")
            assert launch_params(kind, recipe, "cuda") == (launch["elems"], launch["warps"])


def test_gather_falls_back_to_the_dequantize_entry(monkeypatch):
    from nvfp4_kvcache_triton import launch

    table = {"dequantize:nvfp4": {"elems": 4096, "warps": 2}, "gather:mxfp4": {"elems": 8192, "warps": 4}}
    monkeypatch.setattr(launch, "device_launch", lambda device, kind, recipe: dict(table.get(f"{kind}:{recipe}", {})))
    assert launch_params("gather", "nvfp4", "cuda") == (4096, 2)   # no gather entry: the dequantize one
    assert launch_params("gather", "mxfp4", "cuda") == (8192, 4)   # its own entry
    assert launch_params("dequantize", "mxfp4", "cuda") == (TUNING["dequantize_elems"], TUNING["dequantize_warps"])
    assert launch_params("gather", "fp4_mx_block16", "cuda") == (TUNING["gather_elems"], TUNING["gather_warps"])


def test_the_checks_can_fail():
    """Mutants: a changed entry is no sweep's winner; a run that used other launches is caught."""
    device, table = next(iter(DEVICE_LAUNCHES.items()))
    key, launch = next(iter(table.items()))
    wrong = {"elems": launch["elems"], "warps": 3}  # no sweep tries 3 warps
    winners = [sweep_winners(s) for s in _sweeps() if s["device"] == device]
    assert not any(w.get(key) == wrong for w in winners)
    run = {"launches": {key: wrong}}
    assert measured_with(run)[key] != launch
    legacy = {"tuning_chosen": {f"{key.split(':')[0]}_elems:{key.split(':')[1]}": 1,
                                f"{key.split(':')[0]}_warps:{key.split(':')[1]}": 3}}
    assert measured_with(legacy) == {key: {"elems": 1, "warps": 3}}
