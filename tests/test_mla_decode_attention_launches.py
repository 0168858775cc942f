"""The per-GPU launch table of the MLA decode kernel is what the benchmark measured.

`nvfp4_kvcache_triton.mla_decode_attention.MLA_DEVICE_LAUNCHES` gives each GPU model its best
stage-1 launch per query-head count and variant. Each entry must equal the best launch (without
its split count) of that head count in the GPU's committed run
(`docs/data/perf/mla_decode_attention.json`); the lookup takes the nearest listed head count, and
options a caller passes win over the table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvfp4_kvcache_triton import decode_attention as mha
from nvfp4_kvcache_triton import mla_decode_attention as mla

ROOT = Path(__file__).resolve().parents[1]
RUN = json.loads((ROOT / "docs" / "data" / "perf" / "mla_decode_attention.json").read_text())


def _ints(d: dict) -> dict:
    return {k: int(v) for k, v in d.items() if k in mla.MLA_DEFAULT_LAUNCH}


def test_every_entry_is_the_committed_runs_winner():
    assert RUN["completed_stage"] == "done" and not RUN["smoke"]
    table = mla.MLA_DEVICE_LAUNCHES[RUN["device"]]
    assert set(table) == {int(h) for h in RUN["shapes"]}
    for heads, entries in table.items():
        rows = {r["format"]: r for r in RUN["shapes"][str(heads)]["rows"]}
        # every variant the run tuned over more than one launch has its winner listed
        tuned = {f for f, r in rows.items()
                 if len({json.dumps(_ints(t)) for t in r["tried"] if "ms" in t}) > 1}
        assert tuned <= set(entries), (heads, tuned - set(entries))
        for variant, launch in entries.items():
            assert _ints(launch) == _ints(rows[variant]["launch"]), (heads, variant)
            assert set(launch) == set(mla.MLA_DEFAULT_LAUNCH)


@pytest.fixture
def h200(monkeypatch):
    monkeypatch.setattr(mha, "_device_name", lambda index: "NVIDIA H200")


@pytest.mark.parametrize("heads,listed", [(1, 16), (16, 16), (32, 16), (64, 128), (128, 128), (512, 128)])
def test_nearest_listed_head_count(h200, heads, listed):
    got = mla.mla_device_launch("cuda:0", "nvfp4+cvt_f16", heads)
    assert got == mla.MLA_DEVICE_LAUNCHES["NVIDIA H200"][listed]["nvfp4+cvt_f16"]


def test_unlisted_gpu_variant_or_cpu_get_nothing(h200):
    assert mla.mla_device_launch("cpu", "nvfp4+cvt_f16", 128) == {}
    assert mla.mla_device_launch("cuda:0", "nvfp4", 128) == {}       # the placement decoder is not tuned


def test_passed_options_win_and_defaults_fill_the_rest(h200, monkeypatch):
    monkeypatch.setattr(mha, "_interpreting", lambda: False)
    want = dict(mla.MLA_DEVICE_LAUNCHES["NVIDIA H200"][128]["bf16"], num_warps=4)
    got = mla._resolve_launch(dict.fromkeys(mla.MLA_DEFAULT_LAUNCH) | {"num_warps": 4}, "cuda:0", "bf16", 128)
    assert {k: int(v) for k, v in got.items()} == want
    got = mla._resolve_launch(dict.fromkeys(mla.MLA_DEFAULT_LAUNCH), "cuda:0", "nvfp4", 128)
    assert got == mla.MLA_DEFAULT_LAUNCH


def test_prmt_bf16_refuses_16_token_steps():
    """As in the MHA kernel: `prmt_bf16` at 16 tokens per step gave wrong outputs on the H200 (the
    committed run's `tried` rows record it), so the launcher refuses it before anything runs."""
    bad = [t for r in RUN["shapes"]["16"]["rows"] if r["format"] == "fp4_mx_block16+prmt_bf16"
           for t in r["tried"] if "error" in t]
    assert bad and all(t["block_n"] == 16 for t in bad)
    import torch
    from nvfp4_kvcache.pool import MLATokenToKVPoolFP4

    pool = MLATokenToKVPoolFP4(size=16, page_size=1, layer_num=1, kv_lora_rank=64, qk_rope_head_dim=32,
                               recipe="fp4_mx_block16")
    with pytest.raises(ValueError, match="block_n >= 32"):
        mla.mla_decode_attention_fp4(torch.randn(1, 16, 64), torch.randn(1, 16, 32), pool, 0, torch.tensor([0, 1]),
                                     torch.tensor([1]), sm_scale=0.1, decode="prmt_bf16", block_n=16)
