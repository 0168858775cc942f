"""Pools and reference attention on a CUDA device: same bytes as on CPU, device mismatches rejected.

Marked ``gpu`` (skipped without CUDA). Runs without pytest too: ``python tests/test_pool_cuda.py``.
"""

from __future__ import annotations

import hashlib

import torch

from nvfp4_kvcache.attention import decode_attention, mla_decode_attention
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4, MLATokenToKVPoolFP4

try:
    import pytest

    pytestmark = pytest.mark.gpu
except ImportError:  # the device machine may have no pytest
    pytest = None

RECIPES = ("fp4_mx_block16", "nvfp4")


def _digest(pool) -> str:
    h = hashlib.sha256()
    for name in sorted(vars(pool)):
        value = getattr(pool, name)
        for t in value if isinstance(value, list) else [value]:
            if isinstance(t, torch.Tensor):
                h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _mha(recipe, device):
    extra = {"k_scales": [0.05, 0.5], "v_scales": [0.02, 1.0]} if recipe == "nvfp4" else {}
    return MHATokenToKVPoolFP4(size=64, page_size=16, layer_num=2, head_num=4, head_dim=128, recipe=recipe,
                               device=device, **extra)


def test_cuda_pool_bytes_equal_cpu_pool_bytes():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(40, 4, 128, generator=g, dtype=torch.float32).to(torch.bfloat16) * 7
    v = torch.randn(40, 4, 128, generator=g, dtype=torch.float32).to(torch.bfloat16)
    loc = torch.randperm(64, generator=g)[:40] + 16
    for recipe in RECIPES:
        cpu, gpu = _mha(recipe, "cpu"), _mha(recipe, "cuda")
        for layer in range(2):
            cpu.set_kv_buffer(layer, loc, k, v)
            gpu.set_kv_buffer(layer, loc.cuda(), k.cuda(), v.cuda())
        assert _digest(cpu) == _digest(gpu), recipe
        kc, vc = cpu.gather_kv(1, loc)
        kg, vg = gpu.gather_kv(1, loc.cuda())
        assert torch.equal(kc, kg.cpu()) and torch.equal(vc, vg.cpu())
        assert torch.equal(cpu.get_key_buffer(0), gpu.get_key_buffer(0).cpu())
        q = torch.randn(2, 8, 128, generator=g)
        indptr, indices = torch.tensor([0, 15, 40]), loc
        a = decode_attention(q, cpu, 1, indptr, indices)
        b = decode_attention(q.cuda(), gpu, 1, indptr.cuda(), indices.cuda())
        torch.testing.assert_close(a, b.cpu(), rtol=1e-12, atol=1e-12)


def test_cuda_mla_pool_bytes_equal_cpu():
    g = torch.Generator().manual_seed(1)
    nope, rope = torch.randn(9, 1, 512, generator=g), torch.randn(9, 1, 64, generator=g) * 0.01
    loc = torch.arange(1, 10)
    cpu = MLATokenToKVPoolFP4(size=16, page_size=1, layer_num=1, kv_lora_rank=512, qk_rope_head_dim=64)
    gpu = MLATokenToKVPoolFP4(size=16, page_size=1, layer_num=1, kv_lora_rank=512, qk_rope_head_dim=64, device="cuda")
    cpu.set_mla_kv_buffer(0, loc, nope, rope)
    gpu.set_mla_kv_buffer(0, loc.cuda(), nope.cuda(), rope.cuda())
    assert _digest(cpu) == _digest(gpu)
    qn, qr = torch.randn(1, 16, 512, generator=g), torch.randn(1, 16, 64, generator=g)
    a = mla_decode_attention(qn, qr, cpu, 0, torch.tensor([0, 9]), loc, sm_scale=0.07)
    b = mla_decode_attention(qn.cuda(), qr.cuda(), gpu, 0, torch.tensor([0, 9]).cuda(), loc.cuda(), sm_scale=0.07)
    torch.testing.assert_close(a, b.cpu(), rtol=1e-12, atol=1e-12)


def test_device_mismatch_is_rejected_before_any_write():
    for recipe in RECIPES:
        pool = _mha(recipe, "cuda")
        x = torch.randn(2, 4, 128, device="cuda")
        pool.set_kv_buffer(0, torch.tensor([17, 18], device="cuda"), x, x)
        before = _digest(pool)
        cases = [
            (lambda: pool.set_kv_buffer(0, torch.tensor([20, 21]), x, x), "loc is on cpu"),
            (lambda: pool.set_kv_buffer(0, torch.tensor([20, 21], device="cuda"), x.cpu(), x), "cache_k is on cpu"),
            (lambda: pool.set_kv_buffer(0, torch.tensor([20, 21], device="cuda"), x, x.cpu()), "cache_v is on cpu"),
            (lambda: pool.move_kv_cache(torch.tensor([30]), torch.tensor([17], device="cuda")), "tgt_loc is on cpu"),
            (lambda: pool.gather_kv(0, torch.tensor([17])), "loc is on cpu"),
        ]
        for call, message in cases:
            try:
                call()
            except ValueError as err:
                assert message in str(err), (message, str(err))
            else:
                raise AssertionError(f"accepted: {message}")
            assert _digest(pool) == before, message


if __name__ == "__main__":
    assert torch.cuda.is_available(), "needs CUDA"
    print(torch.cuda.get_device_name(0), torch.__version__)
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            print("passed", name)
