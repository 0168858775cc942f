"""The pools' buffers against upstream SGLang 0.5.23's own source (from the released wheel).

Two kinds of check: pieces of upstream that run without a GPU are *executed* (the quant methods'
``create_buffers`` and ``compute_cell_size``; the ``_create_buffers`` bodies of
``MHATokenToKVPoolFP4`` and ``MLATokenToKVPoolFP4`` lifted out with ``ast``); conventions that live
in code that cannot run here (allocators, MLA write path) are matched in the source text.
"""

from __future__ import annotations

import ast
import re
import textwrap
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from nvfp4_kvcache.pool import MHATokenToKVPoolFP4, MLATokenToKVPoolFP4, mha_layout, mla_layout

MEMORY_POOL = "sglang/srt/mem_cache/memory_pool.py"
QUANT_METHOD = "sglang/srt/layers/quantization/fp4_kv_cache_quant_method.py"


@pytest.fixture(scope="module")
def upstream():
    try:
        from _upstream import load_sglang_module, sglang_source

        source = sglang_source(MEMORY_POOL)
    except Exception as exc:  # no wheel and no network: nothing upstream to compare with
        pytest.skip(f"SGLang wheel not available: {exc}")

    class _NoGPU:
        is_sm90 = is_sm100 = is_sm120 = False

    qm = load_sglang_module(QUANT_METHOD, stubs={
        "sglang.srt.layers.quantization.kvfp4_tensor": {"E2M1_MAX": 6.0},
        "sglang.srt.runtime_context": {"get_platform": lambda: _NoGPU()},
    })
    return SimpleNamespace(memory_pool=source, quant_method=qm, source=sglang_source)


def _method_source(module_text: str, class_name: str, method: str) -> str:
    tree = ast.parse(module_text)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == method:
                    return textwrap.dedent(ast.get_source_segment(module_text, item))
    raise AssertionError(f"{class_name}.{method} not found upstream")


def _run_create_buffers(module_text: str, class_name: str, **attrs) -> SimpleNamespace:
    """Execute upstream ``<class>._create_buffers`` on a stand-in ``self`` (CPU, no memory saver)."""
    namespace = {"torch": torch, "nullcontext": nullcontext, "GPU_MEMORY_TYPE_KV_CACHE": "kv_cache"}
    exec(_method_source(module_text, class_name, "_create_buffers"), namespace)
    fake = SimpleNamespace(
        device="cpu",
        memory_saver_adapter=SimpleNamespace(region=lambda _tag: nullcontext()),
        enable_custom_mem_pool=False,
        custom_mem_pool=None,
        **attrs,
    )
    namespace["_create_buffers"](fake)
    return fake


def _shapes(buffers):
    return [(tuple(b.shape), b.dtype) for b in buffers]


GEOMETRIES = [(64, 1, 2, 8, 128), (48, 16, 3, 1, 64), (32, 4, 1, 4, 256)]


@pytest.mark.parametrize("size, page_size, layers, heads, head_dim", GEOMETRIES)
def test_mha_fp4_class_buffers_match(upstream, size, page_size, layers, heads, head_dim):
    up = _run_create_buffers(upstream.memory_pool, "MHATokenToKVPoolFP4", size=size, page_size=page_size,
                             head_num=heads, head_dim=head_dim, layer_num=layers)
    ours = MHATokenToKVPoolFP4(size=size, page_size=page_size, layer_num=layers, head_num=heads,
                               head_dim=head_dim, recipe="fp4_mx_block16")
    for name in ("k_buffer", "v_buffer", "k_scale_buffer", "v_scale_buffer"):
        assert _shapes(getattr(ours, name)) == _shapes(getattr(up, name)), name


@pytest.mark.parametrize("size, page_size, layers, heads, head_dim", GEOMETRIES)
def test_quant_method_buffers_match(upstream, size, page_size, layers, heads, head_dim):
    qm = upstream.quant_method
    rows = size + page_size
    block16 = qm.FP4MXBlock16KVCacheMethod().create_buffers(rows, heads, head_dim, layers, "cpu")
    nv = qm.NVFP4KVCacheMethod(num_layers=layers, device="cpu", page_size=page_size, native_scale_layout=False)
    nv.configure_attention_backends("flashinfer", "trtllm_mha")   # SM120 design: FP8-workspace prefill, XQA decode
    nvfp4 = nv.create_buffers(rows, heads, head_dim, layers, "cpu")
    for recipe, up in (("fp4_mx_block16", block16), ("nvfp4", nvfp4)):
        ours = MHATokenToKVPoolFP4(size=size, page_size=page_size, layer_num=layers, head_num=heads,
                                   head_dim=head_dim, recipe=recipe)
        for name in ("k_buffer", "v_buffer", "k_scale_buffer", "v_scale_buffer"):
            assert _shapes(getattr(ours, name)) == _shapes(up[name]), (recipe, name)
    # what the reference pool leaves out: NVFP4's shared FP8 prefill workspace, one copy for all layers
    assert nvfp4["dq_k_buffer"].shape == (rows, heads, head_dim)
    assert nvfp4["dq_k_buffer"].dtype == torch.float8_e4m3fn
    assert block16["dq_k_buffer"] is None and nvfp4["native_k_scale_buffer"] is None


@pytest.mark.parametrize("heads, head_dim, layers", [(8, 128, 32), (8, 64, 36), (1, 128, 1)])
def test_cell_size_equals_layout_bytes(upstream, heads, head_dim, layers):
    """Upstream's capacity accounting (``compute_cell_size``, kv_size = 1 byte) equals our byte counts."""
    qm = upstream.quant_method
    per_layer = {r: mha_layout(heads, head_dim, r).bytes_per_token for r in ("fp4_mx_block16", "nvfp4")}
    assert qm.FP4MXBlock16KVCacheMethod().compute_cell_size(heads, head_dim, layers, 1) == layers * per_layer["fp4_mx_block16"]
    native_decode = qm.NVFP4KVCacheMethod(num_layers=layers, device="cpu", native_scale_layout=False)
    native_decode.configure_attention_backends("trtllm_mha", "trtllm_mha")
    assert native_decode.compute_cell_size(heads, head_dim, layers, 1) == layers * per_layer["nvfp4"]
    workspace = qm.NVFP4KVCacheMethod(num_layers=layers, device="cpu", native_scale_layout=False)
    workspace.configure_attention_backends("flashinfer", "trtllm_mha")
    # + the shared FP8 workspace: 2 * H * D bytes per token, not multiplied by the layer count
    assert workspace.compute_cell_size(heads, head_dim, layers, 1) == layers * per_layer["nvfp4"] + 2 * heads * head_dim


@pytest.mark.parametrize("size, page_size, layers", [(64, 1, 2), (32, 16, 1)])
@pytest.mark.parametrize("rank, rope", [(512, 64), (256, 32)])
def test_mla_fp4_class_buffers_match(upstream, size, page_size, layers, rank, rope):
    up = _run_create_buffers(upstream.memory_pool, "MLATokenToKVPoolFP4", size=size, page_size=page_size,
                             kv_cache_dim=rank + rope, layer_num=layers)
    ours = MLATokenToKVPoolFP4(size=size, page_size=page_size, layer_num=layers, kv_lora_rank=rank,
                               qk_rope_head_dim=rope)
    assert _shapes(ours.kv_buffer) == _shapes(up.kv_buffer)
    assert _shapes(ours.kv_scale_buffer) == _shapes(up.kv_scale_buffer)


def test_deepseek_bytes_per_token(upstream):
    """512 + 64 -> 288 data + 36 scale bytes, from the executed upstream allocation."""
    up = _run_create_buffers(upstream.memory_pool, "MLATokenToKVPoolFP4", size=1, page_size=1,
                             kv_cache_dim=576, layer_num=1)
    assert up.kv_buffer[0][0].numel() == 288 and up.kv_scale_buffer[0][0].numel() == 36
    layout = mla_layout(512, 64)
    assert (layout.data_bytes_per_token, layout.scale_bytes_per_token) == (288, 36)


def test_mla_kv_cache_dim_and_separate_rope_quantization_in_source(upstream):
    text = upstream.memory_pool
    assert "else (kv_lora_rank + qk_rope_head_dim)" in text
    body = _method_source(text, "MLATokenToKVPoolFP4", "set_mla_kv_buffer")
    assert "batched_quantize(cache_k_nope)" in body and "batched_quantize(cache_k_rope)" in body


def test_mla_fp4_reads_dequantize_the_whole_layer_in_source(upstream):
    body = _method_source(upstream.memory_pool, "MLATokenToKVPoolFP4", "get_key_buffer")
    assert re.search(r"batched_dequantize\(\s*cache_k_nope_fp4,\s*cache_k_nope_fp4_sf\s*\)", body)
    assert "self.kv_buffer[layer_id - self.start_layer]" in body   # the whole layer, no slot index


def test_padding_slot_and_page_zero_conventions_in_source(upstream):
    token = upstream.source("sglang/srt/mem_cache/allocator/token.py")
    paged = upstream.source("sglang/srt/mem_cache/allocator/paged.py")
    assert re.search(r"torch\.arange\(\s*1, self\.size \+ 1,", token)      # slots 1..size
    assert re.search(r"torch\.arange\(\s*1, self\.num_pages \+ 1,", paged)  # pages 1..num_pages
    assert "self.num_pages = size // page_size" in paged
    assert "m = self.size + self.page_size" in _method_source(upstream.memory_pool, "MHATokenToKVPoolFP4", "_create_buffers")


def test_nvfp4_default_global_scales_are_one(upstream):
    nv = upstream.quant_method.NVFP4KVCacheMethod(num_layers=3, device="cpu", native_scale_layout=False)
    assert nv.k_scales_gpu.tolist() == [1.0] * 3 and nv.v_scales_gpu.dtype == torch.float32
    ours = MHATokenToKVPoolFP4(size=4, page_size=1, layer_num=3, head_num=1, head_dim=16, recipe="nvfp4")
    assert ours.k_scales.tolist() == nv.k_scales_gpu.tolist()


def test_block16_reads_dequantize_and_nvfp4_decode_reads_fp4(upstream):
    qm = upstream.quant_method
    block16 = qm.FP4MXBlock16KVCacheMethod()
    assert block16.needs_plain_kv_dequant_read() and block16.plain_attention_kv_dtype() == torch.bfloat16
    nv = qm.NVFP4KVCacheMethod(num_layers=1, device="cpu", native_scale_layout=False)
    assert not nv.needs_plain_kv_dequant_read()
    decode = nv.resolve_attention_access(qm.KVCacheAttentionPhase.DECODE, "trtllm_mha")
    assert decode.kind == qm.KVCacheAttentionAccessKind.NATIVE_FP4
    with pytest.raises(ValueError, match="reserved for true MXFP4"):
        qm.resolve_kv_cache_quant("mxfp4")


def test_host_pools_reject_separate_fp4_scales_in_source(upstream):
    mha_host = upstream.source("sglang/srt/mem_cache/pool_host/mha.py")
    mla_host = upstream.source("sglang/srt/mem_cache/pool_host/mla.py")
    assert "MHA host transfers do not support" in mha_host and "KVScaleLayout.MXFP8_INTERLEAVED" in mha_host
    assert "MLA host cache does not support" in mla_host and "block scales cannot be restored" in mla_host


def test_slot_moves_include_scale_buffers_in_source(upstream):
    body = _method_source(upstream.memory_pool, "MHATokenToKVPool", "_slot_move_pointer_buffers")
    assert "buffers.extend([*self.k_scale_buffer, *self.v_scale_buffer])" in body


def test_mla_writes_skip_the_padding_slot_in_source(upstream):
    text = upstream.source("sglang/kernels/ops/kvcache/mla_buffer.py")
    for fn in ("set_mla_kv_buffer_triton", "set_mla_kv_scale_buffer_triton"):
        signature = text[text.index(f"def {fn}("):].split("):", 1)[0]
        assert "reserved_skip_index: int = 0" in signature, fn
    assert "is_valid = loc != reserved_skip_index" in text


@pytest.mark.parametrize("model", ["Llama-3.1-8B", "Qwen3-32B", "gpt-oss-120b"])
@pytest.mark.parametrize("tp", [1, 4])
def test_capacity_per_token_bytes_equal_upstream_cell_size(upstream, model, tp):
    from nvfp4_kvcache.capacity import kv_bytes_per_token, kv_heads_per_rank
    from nvfp4_kvcache.model_configs import MODELS

    qm, m = upstream.quant_method, MODELS[model]
    heads = kv_heads_per_rank(model, tp)
    assert qm.FP4MXBlock16KVCacheMethod().compute_cell_size(heads, m.head_dim, m.num_layers, 1) == \
        kv_bytes_per_token(model, "fp4_mx_block16", tp)
    nv = qm.NVFP4KVCacheMethod(num_layers=m.num_layers, device="cpu", native_scale_layout=False)
    nv.configure_attention_backends("flashinfer", "trtllm_mha")
    assert nv.compute_cell_size(heads, m.head_dim, m.num_layers, 1) == \
        kv_bytes_per_token(model, "nvfp4", tp, nvfp4_prefill_workspace=True)


def test_kv_heads_per_rank_rule_in_source(upstream):
    text = upstream.source("sglang/srt/configs/model_config.py")
    body = text[text.index("def get_num_kv_heads("):][:1200]
    assert "return max(1, total_num_kv_heads // kv_tensor_parallel_size)" in body
    assert "kv_tensor_parallel_size = tensor_parallel_size // dcp_size" in body
    configurator = upstream.source("sglang/srt/mem_cache/kv_cache_configurator.py")
    mla_build = configurator[configurator.index("def _build_mla_fp4_kv_pool("):][:900]
    assert "kv_lora_rank=self.model_config.kv_lora_rank" in mla_build
    assert "qk_rope_head_dim=self.model_config.qk_rope_head_dim" in mla_build
