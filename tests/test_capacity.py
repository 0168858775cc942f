"""Capacity calculator: byte counts agree with the pools' layouts, TP rules, parameter counts, CLI, table."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from nvfp4_kvcache import capacity as cap
from nvfp4_kvcache.model_configs import MODELS, param_groups
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4, MLATokenToKVPoolFP4, mha_layout, mla_layout

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", ["fp4_mx_block16", "nvfp4"])
def test_fp4_bytes_equal_the_pool_layouts(recipe):
    assert cap.kv_bytes_per_token_per_layer("DeepSeek-V3", recipe) == mla_layout(512, 64, recipe).bytes_per_token == 324
    for name in ("Llama-3.1-8B", "Qwen3-32B", "gpt-oss-120b"):
        m = MODELS[name]
        assert cap.kv_bytes_per_token_per_layer(name, recipe) == mha_layout(m.num_kv_heads, m.head_dim, recipe).bytes_per_token


def test_bytes_equal_an_allocated_pool():
    """Per-row bytes of real pools (one layer) = the calculator's per-token-per-layer bytes."""
    mha = MHATokenToKVPoolFP4(size=1, page_size=1, layer_num=1, head_num=8, head_dim=64, recipe="nvfp4")
    assert mha.nbytes / mha.rows == cap.kv_bytes_per_token_per_layer("gpt-oss-120b", "nvfp4")
    mla = MLATokenToKVPoolFP4(size=1, page_size=1, layer_num=1, kv_lora_rank=512, qk_rope_head_dim=64)
    assert mla.nbytes / mla.rows == cap.kv_bytes_per_token_per_layer("DeepSeek-V3", "fp4_mx_block16")


def test_ratios_to_bf16_and_fp8():
    bf16 = cap.kv_bytes_per_token_per_layer("Llama-3.1-8B", "bf16")
    fp8 = cap.kv_bytes_per_token_per_layer("Llama-3.1-8B", "fp8_e4m3")
    fp4 = cap.kv_bytes_per_token_per_layer("Llama-3.1-8B", "nvfp4")
    assert bf16 / fp4 == 16 / 4.5 and fp8 / fp4 == 8 / 4.5
    assert cap.kv_bytes_per_token_per_layer("Llama-3.1-8B", "mxfp4") == 2 * 8 * (64 + 4)


def test_tensor_parallel_splits_mha_heads_and_replicates_mla():
    assert [cap.kv_heads_per_rank("Qwen3-32B", tp) for tp in (1, 2, 4, 8, 16)] == [8, 4, 2, 1, 1]
    b1 = cap.kv_bytes_per_token_per_layer("Qwen3-32B", "nvfp4", tp=1)
    assert cap.kv_bytes_per_token_per_layer("Qwen3-32B", "nvfp4", tp=4) == b1 / 4
    assert cap.kv_bytes_per_token_per_layer("Qwen3-32B", "nvfp4", tp=16) == b1 / 8   # 1 head, replicated
    assert {cap.kv_bytes_per_token_per_layer("DeepSeek-V3", "nvfp4", tp) for tp in (1, 8, 16)} == {324.0}


@pytest.mark.parametrize("name, rel", [("Llama-3.1-8B", 0.001), ("Qwen3-32B", 0.002), ("gpt-oss-120b", 0.005)])
def test_computed_parameters_match_published_totals(name, rel):
    m = MODELS[name]
    total = sum(p for p, _ in param_groups(m))
    assert math.isclose(total, m.published_params, rel_tol=rel), total


def test_every_model_names_its_source():
    for m in MODELS.values():
        assert m.source.startswith("huggingface.co/") and m.source.endswith("config.json") and m.checked


def test_tokens_that_fit_formula_and_edges():
    free = 81559 * 2**20 * 0.9 - cap.weight_bytes("Llama-3.1-8B")          # what an "80 GB" H100 exposes
    assert cap.tokens_that_fit("Llama-3.1-8B", "bf16", "H100") == math.floor(free / (32 * 4096))
    assert cap.tokens_that_fit("DeepSeek-V3", "nvfp4", "H100", tp=8) == 0        # 671 GB > 8 x 77 GB
    assert cap.tokens_that_fit("DeepSeek-V3", "nvfp4", "H200", tp=8) > 0
    by_gpu = [cap.tokens_that_fit("Qwen3-32B", "nvfp4", g) for g in ("H100", "H200", "B200")]
    assert by_gpu == sorted(by_gpu) and len(set(by_gpu)) == 3


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: cap.tokens_that_fit("Llama-3.1-8B", "int4", "H100"), "unknown KV dtype"),
        (lambda: cap.tokens_that_fit("Llama-9", "bf16", "H100"), "unknown model"),
        (lambda: cap.tokens_that_fit("Llama-3.1-8B", "bf16", "A100"), "unknown GPU"),
        (lambda: cap.tokens_that_fit("Llama-3.1-8B", "bf16", "H100", mem_fraction=1.5), "mem_fraction"),
        (lambda: cap.tokens_that_fit("Llama-3.1-8B", "bf16", "H100", tp=0), "tp must be"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_command_line(capsys):
    assert cap.main(["--model", "DeepSeek-V3", "--gpu", "B200", "--kv-dtype", "fp4_mx_block16"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and "| DeepSeek-V3 | 8 | B200 | fp4_mx_block16 | 324 |" in out[2]
    with pytest.raises(SystemExit):
        cap.main(["--gpu", "A100"])


def test_site_data_is_up_to_date():
    spec = importlib.util.spec_from_file_location("capacity_table", ROOT / "scripts" / "capacity_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run: python scripts/capacity_table.py"


def test_gpu_memory_is_what_the_card_exposes_with_a_source():
    h200 = json.loads((ROOT / "docs/data/capacity/gpu_memory_h200.json").read_text())
    assert h200["device"] == cap.GPUS["H200"].device
    assert h200["nvidia_smi_memory_total_mib"] == cap.GPUS["H200"].memory_mib
    assert "gpu_memory_h200.json" in cap.GPUS["H200"].source
    assert cap.GPUS["H100"].memory_bytes == 85_520_809_984            # not 80e9: "80 GB" is a marketing figure
    for gpu in cap.GPUS.values():
        assert gpu.source and str(gpu.memory_mib) in gpu.source or "docs/data/capacity/" in gpu.source
        assert gpu.memory_bytes > {"H100": 80e9, "H200": 141e9, "B200": 180e9}[gpu.name]


def test_nvfp4_prefill_workspace_option():
    base = cap.kv_bytes_per_token("Qwen3-32B", "nvfp4", tp=2)
    assert cap.kv_bytes_per_token("Qwen3-32B", "nvfp4", tp=2, nvfp4_prefill_workspace=True) == base + 2 * 4 * 128
    assert cap.tokens_that_fit("Qwen3-32B", "nvfp4", "H200", nvfp4_prefill_workspace=True) < \
        cap.tokens_that_fit("Qwen3-32B", "nvfp4", "H200")
    for args in (("DeepSeek-V3", "nvfp4"), ("Llama-3.1-8B", "fp4_mx_block16")):
        with pytest.raises(ValueError, match="MHA pools of a recipe with a global scale"):
            cap.kv_bytes_per_token(*args, nvfp4_prefill_workspace=True)
