"""The drop-ins against the real upstream code, loaded from the SGLang 0.5.23 wheel.

Upstream's ``FP4MXBlock16KVQuantizeUtil`` runs here compiled, as SGLang runs it (Inductor on the
CPU), and must produce the same bytes as :mod:`nvfp4_kvcache.sglang`. Upstream's NVFP4 quantizer
calls FlashInfer CUDA kernels and cannot run here; its pure-PyTorch dequantize fallback can, and is
compared. What differs by device (non-finite blocks) is pinned as measured here and documented in
the Format chapter with the CUDA measurements in ``docs/data/format/block16_cuda.json``.
"""

import math

import pytest
import torch

from _upstream import load_kvfp4_tensor, load_sglang_module, KVFP4_TENSOR
from nvfp4_kvcache.formats import E4M3
from nvfp4_kvcache.sglang import (
    BlockFP4KVQuantizeUtil,
    FP4MXBlock16KVQuantizeUtil as Oracle,
    KVFP4QuantizeUtil,
    NVFP4KVQuantizeUtil,
)


@pytest.fixture(scope="module")
def upstream():
    return load_kvfp4_tensor()


def _random(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    spread = 12 if dtype == torch.float16 else 60  # keep fp16 finite
    k = torch.randint(-spread // 2, spread // 2, (shape[0], 1, 1), generator=g).float()
    x = torch.randn(shape, generator=g) * torch.exp2(k)
    x[..., :3] = torch.tensor([0.0, -0.0, 1e-3])  # zeros and a small value in every first block
    x = x.to(dtype)
    assert torch.isfinite(x).all()
    return x


CASES = [
    ((64, 8, 128), torch.float32),
    ((64, 8, 128), torch.bfloat16),
    ((64, 8, 128), torch.float16),
    ((33, 1, 576), torch.bfloat16),   # DeepSeek MLA latent
    ((40, 8, 64), torch.float16),     # gpt-oss-style head_dim 64
    ((7, 4, 8), torch.float32),       # N = 8: blocks span two heads, as upstream allows
]


@pytest.mark.parametrize("shape,dtype", CASES)
def test_quantize_bytes_equal_upstream_compiled(upstream, shape, dtype):
    x = _random(shape, dtype, seed=sum(shape))
    up_packed, up_scales = upstream.FP4MXBlock16KVQuantizeUtil.batched_quantize(x)
    packed, scales = Oracle.batched_quantize(x)
    assert packed.shape == up_packed.shape and scales.shape == up_scales.shape
    assert packed.dtype == up_packed.dtype == torch.uint8 and scales.dtype == up_scales.dtype == torch.uint8
    assert torch.equal(scales, up_scales)
    assert torch.equal(packed, up_packed)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dequantize_every_code_under_every_scale_byte(upstream, dtype):
    codes = torch.arange(16, dtype=torch.uint8)
    packed = ((codes[1::2] << 4) | codes[0::2]).repeat(256, 1).reshape(1, 256, 8)
    scales = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(1, 256)
    ours = Oracle.batched_dequantize(packed, scales, dtype=dtype)
    theirs = upstream.FP4MXBlock16KVQuantizeUtil.batched_dequantize(packed, scales, dtype=dtype)
    both_nan = torch.isnan(ours) & torch.isnan(theirs)
    bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
    assert torch.equal((ours.view(bits) == theirs.view(bits)) | both_nan, torch.ones_like(both_nan))
    assert both_nan.sum() == 2  # codes 0 and 8 under byte 255: (+-0) * inf


def test_named_cases_equal_upstream(upstream):
    from nvfp4_kvcache.cases import CASES as NAMED, case_input

    for case in NAMED.values():
        if case.recipe != "fp4_mx_block16" or case.name.endswith(("nan_block", "inf_block")):
            continue
        x = case_input(case).reshape(1, 1, 16)
        assert [t.tolist() for t in upstream.FP4MXBlock16KVQuantizeUtil.batched_quantize(x)] == [
            t.tolist() for t in Oracle.batched_quantize(x)
        ], case.name


def test_non_finite_blocks_on_this_cpu(upstream):
    """Upstream's scale byte for a non-finite block comes from an undefined float->uint8 cast.

    Measured here on x86 CPU (compiled and eager alike): NaN -> 0 and +-inf -> 0. On CUDA (H100,
    ``docs/data/format/block16_cuda.json``): NaN -> 0 and +-inf -> 255. The oracle follows CUDA.
    Codes are all 0 everywhere, and the other blocks are untouched.
    """
    x = torch.randn(1, 1, 64)
    x[0, 0, 0] = math.nan
    x[0, 0, 16] = math.inf
    x[0, 0, 32] = -math.inf
    up_packed, up_scales = upstream.FP4MXBlock16KVQuantizeUtil.batched_quantize(x)
    packed, scales = Oracle.batched_quantize(x)
    assert torch.equal(packed, up_packed)
    assert up_scales[0, :3].tolist() == [0, 0, 0]          # this CPU
    assert scales[0, :3].tolist() == [0, 255, 255]         # the oracle = CUDA
    assert torch.equal(scales[0, 3], up_scales[0, 3])


def test_eager_bf16_picks_a_smaller_scale_sometimes(upstream):
    """Eager PyTorch rounds ``amax / 6`` and ``log2`` to bf16; compiled code keeps float32.

    So eager can only lose the last bit of the exponent: its byte is never larger and at most one
    smaller than the compiled (production) byte, which the oracle reproduces.
    """
    eager = upstream.FP4MXBlock16KVQuantizeUtil.batched_quantize._torchdynamo_orig_callable
    x = _random((64, 8, 128), torch.bfloat16, seed=7)
    _, s_eager = eager(x)
    _, s_oracle = Oracle.batched_quantize(x)
    diff = s_oracle.int() - s_eager.int()
    assert set(diff.unique().tolist()) == {0, 1}
    example = torch.zeros(1, 1, 16, dtype=torch.bfloat16)
    example[0, 0, 0] = 97.0
    assert eager(example)[1].item() == 131 and Oracle.batched_quantize(example)[1].item() == 132


def test_class_names_and_aliases(upstream):
    assert upstream.FP4MXBlock16KVQuantizeUtil.__name__ == Oracle.__name__
    assert KVFP4QuantizeUtil is Oracle and BlockFP4KVQuantizeUtil is Oracle
    assert hasattr(upstream, "NVFP4KVQuantizeUtil")
    assert upstream.E2M1_BOUNDS == (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


@pytest.fixture(scope="module")
def upstream_sm90():
    """Upstream's module with the platform stubbed as SM90, so NVFP4 dequantize takes its PyTorch branch."""

    class _SM90:
        is_sm90, is_sm100, is_sm120 = True, False, False

    return load_sglang_module(KVFP4_TENSOR, stubs={"sglang.srt.runtime_context": {"get_platform": lambda: _SM90()}})


def test_nvfp4_dequantize_equals_upstream_sm90_fallback(upstream_sm90):
    """Every code under every E4M3 byte and three global scales, through upstream's PyTorch branch.

    That branch only handles ``B == M == 1`` (see the next test), so the blocks are laid in one row.
    """
    codes = torch.arange(16, dtype=torch.uint8)
    packed = ((codes[1::2] << 4) | codes[0::2]).repeat(256).reshape(1, 1, 256 * 8)
    scales = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(1, 1, 256).view(torch.float8_e4m3fn)
    for g in (1.0, 0.37, 3.0 / 2688.0):
        gs = torch.tensor([g], dtype=torch.float32)
        for dtype in (torch.bfloat16, torch.float16):
            theirs = upstream_sm90.NVFP4KVQuantizeUtil.dequantize(packed, scales, gs, dtype)
            ours = NVFP4KVQuantizeUtil.dequantize(packed, scales, gs, dtype)
            nan = torch.isnan(theirs) & torch.isnan(ours)
            assert ((theirs == ours) | nan).all()
            assert torch.equal(torch.signbit(theirs[~nan]), torch.signbit(ours[~nan]))


@pytest.mark.parametrize("shape", [(1, 2, 16), (2, 1, 16), (3, 8, 128)])
def test_upstream_sm90_nvfp4_dequantize_fails_on_its_own_scale_layout(upstream_sm90, shape):
    """Finding: in SGLang 0.5.23 the SM90 branch of ``NVFP4KVQuantizeUtil.dequantize`` multiplies
    ``[B, M*N/16, 16]`` values by ``[B, M, N/16, 1]`` scales, which broadcasts wrongly and raises
    for any ``B*M > 1``, the layout its own ``quantize`` returns. The oracle accepts it."""
    b, m, n = shape
    packed = torch.zeros(b, m, n // 2, dtype=torch.uint8)
    scales = torch.ones(b, m, n // 16).to(torch.float8_e4m3fn)
    with pytest.raises(RuntimeError):
        upstream_sm90.NVFP4KVQuantizeUtil.dequantize(packed, scales, torch.tensor([1.0]), torch.bfloat16)
    assert NVFP4KVQuantizeUtil.dequantize(packed, scales, torch.tensor([1.0])).shape == shape


def test_nvfp4_dropin_shapes_and_dtypes():
    x = torch.randn(3, 8, 128, dtype=torch.bfloat16)
    packed, block_scales, g = NVFP4KVQuantizeUtil.quantize(x, 0.01)
    assert packed.shape == (3, 8, 64) and packed.dtype == torch.uint8
    assert block_scales.shape == (3, 8, 8) and block_scales.dtype == torch.float8_e4m3fn
    assert g.shape == (1,) and g.dtype == torch.float32
    out = NVFP4KVQuantizeUtil.dequantize(packed, block_scales, g)
    assert out.shape == x.shape and out.dtype == torch.bfloat16
    assert torch.equal(E4M3.decode_tensor(block_scales.view(torch.uint8)), block_scales.float())


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: Oracle.batched_quantize(torch.zeros(2, 16)), "rank 3"),
        (lambda: Oracle.batched_quantize(torch.zeros(1, 3, 5)), "even"),
        (lambda: Oracle.batched_quantize(torch.zeros(1, 1, 10)), "multiple of the block size"),
        (lambda: Oracle.batched_quantize(torch.zeros(1, 1, 16, dtype=torch.int8)), "dtype"),
        (lambda: Oracle.batched_dequantize(torch.zeros(1, 1, 8), torch.zeros(1, 1, dtype=torch.uint8)), "uint8"),
        (lambda: NVFP4KVQuantizeUtil.quantize(torch.zeros(1, 1, 16), -1.0), "positive"),
        (lambda: NVFP4KVQuantizeUtil.dequantize(torch.zeros(1, 1, 8, dtype=torch.uint8), torch.zeros(1, 1, 1), 1.0), "float8_e4m3fn or uint8"),
    ],
)
def test_dropin_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
