"""GPU: FlashInfer's paged NVFP4 writer with the 4-over-6 search against the `nvfp4_4over6` oracle.

Runs where CUDA and FlashInfer (`flashinfer.page.nvfp4_quantize_append_paged_kv_cache_with_slot_mapping`,
FlashInfer 0.7.4 or later) are importable; skipped elsewhere. The writer is the released CUDA
kernel (`page.cuh`, built by FlashInfer's JIT with `-use_fast_math`), so its reciprocals are the
hardware's `rcp.approx.ftz.f32`. The test therefore compares twice:

* with that reciprocal passed to the oracle
  ([`encode_with`][nvfp4_kvcache.recipes.nvfp4_4over6.encode_with]): every packed byte and every
  scale byte must be equal;
* with the oracle's own correctly rounded reciprocal: the mismatches are counted and printed
  (they are the boundary cases the Format chapter describes), not asserted.

Run on a GPU machine: `python -m pytest tests/test_nvfp4_4over6_flashinfer.py -m gpu -q -s`.
"""

from __future__ import annotations

import pytest
import torch

from nvfp4_kvcache.cases import CASES, case_input
from nvfp4_kvcache.packing import unpack_nibbles
from nvfp4_kvcache.recipes import NVFP4_4OVER6, nvfp4_global_scale
from nvfp4_kvcache.recipes.nvfp4_4over6 import encode_with
from tests._kernel_cases import e4m3_sweep_blocks, random_blocks, special_blocks

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _flashinfer():
    page = pytest.importorskip("flashinfer.page", reason="needs FlashInfer (the paged 4over6 writer)")
    if not hasattr(page, "nvfp4_quantize_append_paged_kv_cache_with_slot_mapping"):
        pytest.skip("this FlashInfer has no nvfp4_quantize_append_paged_kv_cache_with_slot_mapping")
    from flashinfer.quantization.nvfp4_quantization_utils import NVFP44Over6Config

    return page, NVFP44Over6Config(err_mode="MSE")


def hardware_reciprocal(v: torch.Tensor) -> torch.Tensor:
    """`rcp.approx.ftz.f32` of every element, computed on the GPU (what `-use_fast_math` emits for `1/x`)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _rcp(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=1.0)
        y = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                      is_pure=True, pack=1)
        tl.store(y_ptr + offs, y, mask=mask)

    x = v.detach().to("cuda", torch.float32).contiguous()
    y = torch.empty_like(x)
    if x.numel():
        _rcp[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    return y.to(v.device).reshape(v.shape)


def _write(page, cfg, x: torch.Tensor, g: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashInfer's writer on `x [n, H, D]` (bf16/fp16, CUDA), K = V = x, one slot per row, page 1."""
    n, h, d = x.shape
    kc = torch.zeros(n, 1, h, d // 2, dtype=torch.uint8, device="cuda")
    vc = torch.zeros_like(kc)
    ksf = torch.zeros(n, 1, h, d // 16, dtype=torch.float8_e4m3fn, device="cuda")
    vsf = torch.zeros_like(ksf)
    gt = torch.tensor(g, dtype=torch.float32, device="cuda")
    page.nvfp4_quantize_append_paged_kv_cache_with_slot_mapping(
        x, x, torch.arange(n, dtype=torch.int64, device="cuda"), (kc, vc), (ksf, vsf), gt, gt,
        kv_layout="NHD", nvfp4_4over6=cfg)
    torch.cuda.synchronize()
    assert torch.equal(kc, vc) and torch.equal(ksf.view(torch.uint8), vsf.view(torch.uint8))
    return kc.reshape(n, h, d // 2).cpu(), ksf.view(torch.uint8).reshape(n, h, d // 16).cpu()


def _rows(x: torch.Tensor, width: int = 64) -> torch.Tensor:
    """`[..., 16k]` blocks as `[n, 1, width]` rows (padded with zero blocks)."""
    blocks = x.reshape(-1, 16)
    per_row = width // 16
    pad = (-blocks.shape[0]) % per_row
    blocks = torch.cat([blocks, torch.zeros(pad, 16, dtype=blocks.dtype)])
    return blocks.reshape(-1, 1, width)


def _random(dtype, amax448: bool):
    x = random_blocks((512, 8, 128), dtype, seed=5)
    return x, (nvfp4_global_scale(x.float().abs().amax(), "amax/448").item() if amax448 else 1.0)


SETS = {
    **{f"random-{dt}-{conv}": (lambda dt=dt, conv=conv: _random(getattr(torch, dt), conv == "amax448"))
       for dt in ("bfloat16", "float16") for conv in ("amax448", "g1")},
    **{f"specials-{dt}": (lambda dt=dt: (_rows(special_blocks().to(getattr(torch, dt))), 1.0))
       for dt in ("bfloat16", "float16")},
    **{f"e4m3-sweep-{dt}-g{g}": (lambda dt=dt, g=g: (_rows(e4m3_sweep_blocks().to(getattr(torch, dt))), g))
       for dt in ("bfloat16", "float16") for g in (1.0, 0.5)},
}
"""Input set name -> builder of (`x [n, H, D]` 16-bit, global scale)."""


@pytest.mark.parametrize("name", sorted(SETS))
def test_writer_equals_oracle_with_the_hardware_reciprocal(name):
    page, cfg = _flashinfer()
    x, g = SETS[name]()
    _compare(page, cfg, name, x, g)


def test_named_cases_through_the_writer():
    page, cfg = _flashinfer()
    for c in [c for c in CASES.values() if c.recipe == NVFP4_4OVER6.name]:
        x = case_input(c).to(torch.bfloat16)
        if torch.equal(x.float(), case_input(c)):   # the writer takes 16-bit input; skip blocks bf16 changes
            _compare(page, cfg, c.name, _rows(x), c.global_scale)
def _compare(page, cfg, name, x, g):
    packed, scales = _write(page, cfg, x.cuda(), g)
    blocks = x.float().reshape(-1, 16)
    gt = torch.tensor(g, dtype=torch.float32)
    exact_codes, exact_scales = encode_with(blocks, gt)
    hw_codes, hw_scales = encode_with(blocks, gt, hardware_reciprocal)
    got_codes = unpack_nibbles(packed).reshape(-1, 16)
    got_scales = scales.reshape(-1)
    n_exact = int((got_codes != exact_codes).sum()) + int((got_scales != exact_scales).sum())
    print(f"{name}: {blocks.shape[0]} blocks; vs the oracle's exact reciprocal: {n_exact} bytes differ; "
          f"vs the hardware reciprocal: {int((got_codes != hw_codes).sum())} codes, "
          f"{int((got_scales != hw_scales).sum())} scale bytes")
    assert torch.equal(got_scales, hw_scales), name
    assert torch.equal(got_codes, hw_codes), name
