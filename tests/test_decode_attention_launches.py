"""The per-GPU launch table of the decode-attention kernel is what the benchmark measured.

`nvfp4_kvcache_triton.decode_attention.DEVICE_LAUNCHES` gives each GPU model its best stage-1 tile
per variant. Each entry must equal the best launch (without its split count) of that GPU's newest
committed benchmark run (`docs/data/perf/decode_attention.json` or a run kept in
`docs/data/perf/decode_attention_runs/`), variant for variant: a table that drifted from its
measurement, or a GPU with no committed run, fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nvfp4_kvcache_triton.decode_attention import DEVICE_LAUNCHES, TUNING, device_launch

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "docs" / "data" / "perf"


def _tile(launch: dict) -> dict:
    """A launch as the table keys it: no split count; options at their defaults spelled out."""
    t = {k: v for k, v in launch.items() if k != "num_kv_splits"}
    t.setdefault("tokens_as_m", TUNING["tokens_as_m"])
    t.setdefault("prefetch", TUNING["prefetch"])
    return t


def _newest_runs() -> dict[str, dict]:
    runs: dict[str, dict] = {}
    for path in [PERF / "decode_attention.json", *sorted((PERF / "decode_attention_runs").glob("run-*.json"))]:
        d = json.loads(path.read_text())
        if d.get("completed_stage") != "done" or d.get("smoke"):
            continue
        if d["device"] not in runs or d["date"] > runs[d["device"]]["date"]:
            runs[d["device"]] = d
    return runs


def test_every_table_entry_is_its_gpus_measured_best():
    runs = _newest_runs()
    assert DEVICE_LAUNCHES, "the table is empty"
    for device, table in DEVICE_LAUNCHES.items():
        assert device in runs, f"no committed benchmark run on {device}"
        best = {r["format"]: r["launch"] for r in runs[device]["rows"]
                if r["kind"] == "headline" and "@" not in r["format"]}
        assert set(table) == set(best), device
        for variant, launch in table.items():
            assert _tile(launch) == _tile(best[variant]), (device, variant)


def test_no_entry_off_a_gpu():
    assert device_launch("cpu", "nvfp4+cvt_f16") == {} and device_launch(None, "bf16") == {}
    if torch.cuda.is_available():
        assert device_launch("cuda", "nvfp4+cvt_f16", head_dim=64) == {}
