"""Split-KV paged decode attention that reads an FP4 KV pool directly (and the same design over BF16/FP8).

| function | reads |
|---|---|
| [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4] | an FP4 pool layer (a block-16 recipe with an E4M3 or power-of-two scale: `nvfp4`, `fp4_mx_block16`, ...): packed E2M1 + scale bytes, decoded in registers |
| [`decode_attention_dense`][nvfp4_kvcache_triton.decode_attention.decode_attention_dense] | a `bfloat16` or `float8_e4m3fn` `[slots, H, D]` cache (FP8 with per-tensor K/V scales): the baselines |

Both have the public shapes of [`nvfp4_kvcache.attention.decode_attention`][nvfp4_kvcache.attention.decode_attention] (`q` `[B, Hq,
D]`, `kv_indptr` `[B + 1]`, `kv_indices` `[kv_indptr[-1]]` slots, output `[B, Hq, D]`)
and raise its errors for bad arguments; the output is `float32` (or `bfloat16`) instead of the
oracle's `float64`. Tensors live on a CUDA device, or on the CPU with `TRITON_INTERPRET=1`.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
    >>> from nvfp4_kvcache.attention import decode_attention
    >>> from nvfp4_kvcache_triton.decode_attention import decode_attention_fp4
    >>> pool = MHATokenToKVPoolFP4(
    ...     size=32,
    ...     page_size=16,
    ...     layer_num=1,
    ...     head_num=2,
    ...     head_dim=64,
    ...     recipe="nvfp4",
    ...     k_scales=[0.5],
    ...     v_scales=[2.0],
    ... )
    >>> pool.set_kv_buffer(
    ...     0, torch.arange(16, 36), torch.randn(20, 2, 64), torch.randn(20, 2, 64)
    ... )
    >>> q = torch.randn(2, 8, 64)                             # 2 requests, GQA 4:1
    >>> indptr, idx = torch.tensor([0, 5, 20]), torch.arange(16, 36)
    >>> out = decode_attention_fp4(q, pool, 0, indptr, idx, num_kv_splits=2)
    >>> ref = decode_attention(q, pool, 0, indptr, idx)
    >>> out.dtype, bool((out.double() - ref).abs().max() < 1e-4)
    (torch.float32, True)

    `decode="cvt_f16"` (fp16 dots on a GPU, its pure-Triton twin here) gives the same result:

    >>> fast = decode_attention_fp4(
    ...     q, pool, 0, indptr, idx, num_kv_splits=2, decode="cvt_f16"
    ... )
    >>> bool((fast.double() - ref).abs().max() < 1e-4)
    True
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton

from nvfp4_kvcache_triton import _checks
from nvfp4_kvcache_triton._triton import decode_attention as _k
from nvfp4_kvcache_triton.page_blocks import FP4PageBlocks
from nvfp4_kvcache.attention import _check_indptr, _check_q
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
from nvfp4_kvcache.pool._checks import resolve_layer_id
from nvfp4_kvcache.recipes import get_recipe

__all__ = ["FP4KVLayer", "decode_attention_fp4", "decode_attention_dense", "fp4_layer", "TUNING",
           "DEVICE_LAUNCHES", "device_launch", "DEFAULT_SPLITS", "DECODES", "DENSE_DECODES", "attention_tolerance"]

DEFAULT_SPLITS = 8
"""Default number of KV splits per request (stage-1 programs per request and KV head)."""

TUNING: dict[str, int] = {
    "block_n": 64,           # tokens per stage-1 loop step (GPU)
    "num_warps": 4,
    "num_stages": 2,         # Triton's pipeliner (when prefetch is off)
    "prefetch": 0,           # 1: software pipelining in registers (then num_stages defaults to 1)
    "tokens_as_m": 0,        # 1: tokens in the MMA's M dimension, query heads in N (see decode_stage1)
    "interpret_block_n": 32,  # under the interpreter
}
"""Default stage-1 tile and launch settings. The best settings differ per format and decoder:
`scripts/bench_decode_attention.py` tunes them on a GPU and records each format's best under
`launch` in `docs/data/perf/decode_attention.json`; pass them as `**launch`."""

DEVICE_LAUNCHES: dict[str, dict[str, dict[str, int]]] = {
    "NVIDIA H100 80GB HBM3": {
        "bf16": {"block_n": 64, "num_warps": 8, "num_stages": 3},
        "fp8": {"block_n": 32, "num_warps": 1, "num_stages": 2},
        "nvfp4": {"block_n": 32, "num_warps": 1, "num_stages": 2},
        "nvfp4+prmt": {"block_n": 32, "num_warps": 1, "num_stages": 2},
        "nvfp4+prmt_bf16": {"block_n": 64, "num_warps": 2, "num_stages": 2},
        "nvfp4+cvt_f16": {"block_n": 32, "num_warps": 1, "num_stages": 2},
        "fp4_mx_block16": {"block_n": 32, "num_warps": 1, "num_stages": 2},
        "fp4_mx_block16+prmt": {"block_n": 32, "num_warps": 1, "num_stages": 2},
        "fp4_mx_block16+prmt_bf16": {"block_n": 32, "num_warps": 1, "num_stages": 2},
    },
    "NVIDIA H200": {
        "bf16": {"block_n": 32, "num_warps": 1, "num_stages": 2, "tokens_as_m": 1},
        "fp8": {"block_n": 32, "num_warps": 1, "num_stages": 2, "tokens_as_m": 0},
        "fp8+cvt_f16": {"block_n": 32, "num_warps": 1, "num_stages": 2, "tokens_as_m": 0},
        "nvfp4": {"block_n": 32, "num_warps": 1, "num_stages": 2, "tokens_as_m": 0},
        "nvfp4+prmt": {"block_n": 32, "num_warps": 1, "num_stages": 2, "tokens_as_m": 0},
        "nvfp4+prmt_bf16": {"block_n": 32, "num_warps": 2, "num_stages": 2, "tokens_as_m": 1},
        "nvfp4+cvt_f16": {"block_n": 32, "num_warps": 1, "num_stages": 2, "tokens_as_m": 1},
        "fp4_mx_block16": {"block_n": 32, "num_warps": 1, "num_stages": 2, "tokens_as_m": 0},
        "fp4_mx_block16+prmt": {"block_n": 32, "num_warps": 1, "num_stages": 2, "tokens_as_m": 0},
        "fp4_mx_block16+prmt_bf16": {"block_n": 64, "num_warps": 2, "num_stages": 2, "tokens_as_m": 1},
        "fp4_mx_block16+cvt_f16": {"block_n": 32, "num_warps": 1, "num_stages": 2, "tokens_as_m": 1},
    },
}
"""Best stage-1 tile per GPU model (`torch.cuda.get_device_name()`) and variant (`recipe+decoder`,
`"bf16"`, `"fp8"`, `"fp8+cvt_f16"`), at head dim 128: what `scripts/bench_decode_attention.py`
measured as each variant's fastest launch at its headline shape. `tests/test_decode_attention_launches.py`
checks every entry against the committed benchmark data of that GPU, so an entry cannot drift from
its measurement; `python scripts/bench_decode_attention.py --launch-table PATH` prints the entry of a
new run. Launches not listed fall back to [`TUNING`][nvfp4_kvcache_triton.decode_attention.TUNING].
`num_kv_splits` is not part of it: it depends on the batch and context, and the caller passes it."""

_OUT_DTYPES = (torch.float32, torch.bfloat16)
_FP4_RECIPES = tuple(name for name in _k.FMT_IDS if name not in ("bf16", "fp8_e4m3"))
"""The recipes the kernel reads: block 16 with an E4M3 or a block-16 power-of-two scale."""
DECODES = tuple(_k.DECODE_IDS)
"""E2M1 decoders of [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4] (`decode=`). `"prmt"` and `"prmt_bf16"` are
inline PTX only (refused under the interpreter); `"cvt_f16"` runs its pure-Triton twin there."""
DENSE_DECODES = ("bf16", "cvt_f16")
"""How [`decode_attention_dense`][nvfp4_kvcache_triton.decode_attention.decode_attention_dense] feeds the
tensor cores (`decode=`): `"bf16"` (the cache converted to bf16, bf16 dots; the default) or, for an
FP8 cache, `"cvt_f16"` (the hardware's packed `cvt` from E4M3 to fp16, exact, and fp16 dots, with
the query scaled by a power of two into fp16 range as for FP4's `cvt_f16`)."""
HEAD_DIMS = (64, 128, 256)
"""Head dims the kernel is built and tested for (any power of two >= 32 compiles)."""


def device_launch(device: torch.device | str | None, variant: str, head_dim: int = 128) -> dict[str, int]:
    """The stage-1 tile [`DEVICE_LAUNCHES`][nvfp4_kvcache_triton.decode_attention.DEVICE_LAUNCHES]
    lists for this GPU and variant at head dim 128, else `{}` (the caller then uses
    [`TUNING`][nvfp4_kvcache_triton.decode_attention.TUNING]).

    Args:
        device: a CUDA device (its name is looked up); a CPU device or `None` gives `{}`.
        variant: `"nvfp4+cvt_f16"`, `"fp4_mx_block16+prmt_bf16"`, `"bf16"`, `"fp8"`, ...
        head_dim: the table holds head dim 128 only; other head dims give `{}`.

    Returns:
        A dict of launch keys (`block_n`, `num_warps`, `num_stages`, and where measured `tokens_as_m`).

    Examples:
        >>> device_launch("cpu", "nvfp4+cvt_f16")
        {}
    """
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda" or head_dim != 128:
        return {}
    return dict(DEVICE_LAUNCHES.get(_device_name(dev.index), {}).get(variant, {}))


@functools.lru_cache(maxsize=None)
def _device_name(index: int | None) -> str:
    return torch.cuda.get_device_name(index)


@dataclass(frozen=True)
class FP4KVLayer:
    """One layer of an FP4 pool as raw buffers (what SGLang's `get_raw_kv_buffer` returns, plus the recipe).

    Attributes:
        k, v: `uint8 [slots, H, D/2]`, element `2i` in the low nibble; each `[D/2]` row
            contiguous, any slot and head strides (SGLang's slot-major pool, or a head-major view).
        k_scale, v_scale: `uint8` (or, nvfp4, `float8_e4m3fn`) `[slots, H*D/16]` or
            `[slots, H, D/16]`, rows contiguous, any other strides (the same for both).
        recipe: a block-16 recipe with an E4M3 or power-of-two scale (`"nvfp4"`,
            `"fp4_mx_block16"`, ...; the kernel's formats are read off the recipes).
        k_global, v_global: recipes with a global scale only: `float32 [1]` (or 0-d) decode
            global scales on the buffers' device; `None` otherwise.
    """

    k: torch.Tensor
    v: torch.Tensor
    k_scale: torch.Tensor
    v_scale: torch.Tensor
    recipe: str
    k_global: torch.Tensor | None = None
    v_global: torch.Tensor | None = None


def fp4_layer(pool: MHATokenToKVPoolFP4, layer: object) -> FP4KVLayer:
    """The raw buffers of one layer of a reference pool (views, no copy).

    Examples:
        >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
        >>> pool = MHATokenToKVPoolFP4(
        ...     size=8, page_size=1, layer_num=2, head_num=2, head_dim=32
        ... )
        >>> fl = fp4_layer(pool, 1)
        >>> tuple(fl.k.shape), tuple(fl.k_scale.shape), fl.recipe, fl.k_global
        ((9, 2, 16), (9, 4), 'fp4_mx_block16', None)
    """
    if not isinstance(pool, MHATokenToKVPoolFP4):
        raise TypeError(f"pool must be an MHATokenToKVPoolFP4, got {type(pool).__name__}")
    i = resolve_layer_id(layer, pool.start_layer, pool.layer_num)
    t = pool.layer_tensors(layer)
    gk = gv = None
    if pool.recipe.global_scale is not None:
        gk, gv = pool.k_scales[i : i + 1], pool.v_scales[i : i + 1]
    return FP4KVLayer(t["k"], t["v"], t["k_scale"], t["v_scale"], pool.recipe.name, gk, gv)


REL_RMS_LIMIT = 1e-2
"""Second, statistical criterion on a GPU: `rms(kernel - oracle) / rms(oracle) <= 1e-2`.

The bound of [`attention_tolerance`][nvfp4_kvcache_triton.decode_attention.attention_tolerance] is a worst case: at full size (thousands of tokens, large
score sums) it grows past the outputs' own magnitude and could not catch a wrong result. Typical
errors are far smaller: rounding `q` and the softmax weights to bf16 perturbs each term by about
`2**-9` relative, and the relative RMS error of the output stays near that (about `1e-3` seen
on an H100 at the headline shape). A mistake in decoding or in folding a scale moves the output by
a relative O(1) amount, so `1e-2` separates the two with margin either way.
"""


def attention_close(got: torch.Tensor, ref: torch.Tensor, tolerance: float, gpu: bool) -> tuple[bool, float, float]:
    """`(ok, max_abs_err, rel_rms_err)`: within [`attention_tolerance`][nvfp4_kvcache_triton.decode_attention.attention_tolerance], and on a GPU also
    within [`REL_RMS_LIMIT`][nvfp4_kvcache_triton.decode_attention.REL_RMS_LIMIT].

    Examples:
        >>> import torch
        >>> ref = torch.ones(2, 4, dtype=torch.float64)
        >>> attention_close(ref * (1 + 1e-4), ref, tolerance=1e-3, gpu=True)[0]
        True
        >>> attention_close(  # loose bound, but 50% off
        ...     ref * 1.5, ref, tolerance=10.0, gpu=True
        ... )[0]
        False
    """
    diff = got.double() - ref.double()
    err = float(diff.abs().max()) if diff.numel() else 0.0
    denom = float(ref.double().pow(2).mean().sqrt()) if ref.numel() else 0.0
    rel = float(diff.pow(2).mean().sqrt()) / denom if denom > 0 else (0.0 if err == 0 else math.inf)
    ok = math.isfinite(err) and err <= tolerance and (not gpu or rel <= REL_RMS_LIMIT)
    return ok, err, rel


def attention_tolerance(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float, n_max: int,
                        gpu: bool) -> float:
    """Largest abs error allowed between this kernel and the float64 oracle, for one case.

    The kernel differs from the oracle only by its own float arithmetic: the dequantized K/V values
    are exact (tested bit for bit). Let `S = sm_scale * max_{h,t} sum_d |q_d k_d|` (the largest
    absolute score sum) and `u` the relative error of the products feeding the softmax and the
    output. A score is then off by at most `u * S` (natural-log units), every softmax weight by
    a factor within `exp(+-2uS)`, and the output, a convex combination of V rows, by at most
    `(exp(2uS) - 1 + u) * max|V| ~= u * (1 + 2S) * max|V|`. Values of `u`:

    * interpreter (`INTERP`: float32 dots): all float32 (unit roundoff `2**-24`); sums of `D` products,
      `N` weights and the split merge grow it linearly (the standard `gamma_n = n u`), so
      `u = (D + N + 64) * 2**-24`: a worst case that random data stays well below;
    * GPU: `q` and `p` enter `tl.dot` as bf16 (each rounded once, relative `2**-9`;
      decoded FP4 and FP8 values are exact in bf16), float32 accumulation: `u = 2 * 2**-9`.

    Args:
        q: `[B, Hq, D]` queries (as the kernel saw them: round to bf16 first for the GPU bound).
        k: the dequantized keys the requests read, `[T, Hkv, D]` (any float dtype).
        v: the dequantized values, same shape.
        sm_scale: the softmax scale.
        n_max: the longest request.
        gpu: which `u`.

    Returns:
        The bound, a float.
    """
    d = q.shape[-1]
    u = 2 * 2.0**-9 if gpu else (d + n_max + 64) * 2.0**-24
    qa = q.double().abs().amax(dim=(0, 1))
    s = sm_scale * float((k.double().abs() * qa).sum(-1).max()) if k.numel() else 0.0
    return u * (1 + 2 * s) * float(v.double().abs().max())


_interpreting = _checks.interpreting
_check_device = _checks.check_kernel_device


def _same_device(name: str, t: torch.Tensor, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device}, q on {ref.device}")


def _check_indices(kv_indptr, kv_indices, batch: int, rows: int, q: torch.Tensor, validate: bool) -> None:
    for t, name in ((kv_indptr, "kv_indptr"), (kv_indices, "kv_indices")):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in (torch.int32, torch.int64) or t.dim() != 1:
            raise ValueError(f"{name} must be a 1-D int32/int64 tensor, got {t.dtype} {tuple(t.shape)}")
        _same_device(name, t, q)
    if kv_indptr.numel() != batch + 1:
        raise ValueError(f"kv_indptr must have B + 1 = {batch + 1} entries, got {kv_indptr.numel()}")
    if not validate:
        return
    p = _check_indptr(kv_indptr, "kv_indptr", kv_indices.numel())  # synchronises on a GPU
    lens = p[1:] - p[:-1]
    if bool((lens == 0).any()):
        b = int((lens == 0).nonzero()[0])
        raise ValueError(f"request {b} has 1 queries and 0 keys; need 1 <= queries <= keys")
    if kv_indices.numel():
        lo, hi = int(kv_indices.min()), int(kv_indices.max())
        if lo < 0 or hi >= rows:
            bad = lo if lo < 0 else hi
            raise IndexError(f"kv_indices holds slot {bad}, outside the pool's slots [0, {rows})")


def _common(q, kv_indptr, kv_indices, heads: int, dim: int, rows: int, num_kv_splits, out_dtype, validate):
    _check_q(q, "q", (None, dim))
    if q.dtype == torch.float64:
        raise ValueError("q must be float32, bfloat16 or float16 for the kernels, got torch.float64")
    _check_device(q, "q")
    if q.shape[1] % heads:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of KV heads ({heads})")
    if dim not in HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {HEAD_DIMS}, got {dim}")
    if isinstance(num_kv_splits, bool) or not isinstance(num_kv_splits, int) or num_kv_splits < 1:
        raise ValueError(f"num_kv_splits must be a positive int, got {num_kv_splits!r}")
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {_OUT_DTYPES}, got {out_dtype}")
    if q.stride(-1) != 1:
        q = q.contiguous()
    _check_indices(kv_indptr, kv_indices, q.shape[0], rows, q, validate)
    return q


def _launch(fmt: int, q, k, v, ks, vs, s_strides, gk, gv, kv_indptr, kv_indices, sm_scale,
            num_kv_splits, page_size, out_dtype, heads, dim, block_n=None, num_warps=None, num_stages=None,
            prefetch=None, decode: int = 0, tokens_as_m=None, page_block: bool = False, variant: str | None = None):
    batch, hq, _ = q.shape
    group = hq // heads
    unset = None in (block_n, num_warps, num_stages, tokens_as_m)
    tuned = device_launch(q.device, variant, dim) if unset and variant is not None and not _interpreting() else {}
    block_n = tuned.get("block_n") if block_n is None else block_n
    num_warps = tuned.get("num_warps") if num_warps is None else num_warps
    num_stages = tuned.get("num_stages") if num_stages is None else num_stages
    if tokens_as_m is None:  # register prefetch asked for: the heads-as-M kernel, whatever the table says
        tokens_as_m = 0 if prefetch else tuned.get("tokens_as_m", TUNING["tokens_as_m"])
    out = torch.empty(batch, hq, dim, dtype=out_dtype, device=q.device)
    if batch == 0:
        return out
    interp = _interpreting()
    if block_n is None:
        block_n = TUNING["interpret_block_n"] if interp else TUNING["block_n"]
    mid_o = torch.empty(batch, hq, num_kv_splits, dim, dtype=torch.float32, device=q.device)
    mid_lse = torch.empty(batch, hq, num_kv_splits, dtype=torch.float32, device=q.device)
    scale = 1.0 / math.sqrt(dim) if sm_scale is None else float(sm_scale)
    if prefetch is None:
        prefetch = bool(TUNING["prefetch"])
    if prefetch and (tokens_as_m or page_block):
        raise ValueError("prefetch=1 (register prefetch) works with the heads-as-M slot-major kernel only; "
                         "pass prefetch=0 with tokens_as_m=1 or page blocks")
    extra = {} if interp else {"num_warps": num_warps or TUNING["num_warps"],
                               "num_stages": num_stages or (1 if prefetch else TUNING["num_stages"])}
    block_h = max(8 if tokens_as_m else 16, triton.next_power_of_2(group))
    _k.decode_stage1[(batch, heads, num_kv_splits)](
        q, q.stride(0), q.stride(1), k, v, ks, vs, k.stride(0), k.stride(1), *s_strides, gk, kv_indptr, kv_indices,
        mid_o, mid_lse, scale,
        G=group, D=dim, BLOCK_H=block_h,
        BLOCK_N=block_n, PAGE=page_size, KV_FMT=fmt, INTERP=interp, DECODE=decode, PREFETCH=bool(prefetch),
        TOKENS_AS_M=bool(tokens_as_m), PAGE_BLOCK=page_block, **extra,
    )
    _k.decode_stage2[(batch, hq)](
        mid_o, mid_lse, gv, out, out.stride(0), out.stride(1),
        SPLITS=num_kv_splits, D=dim, BLOCK_S=triton.next_power_of_2(num_kv_splits), KV_FMT=fmt,
        OUT_BF16=out_dtype == torch.bfloat16, DECODE=decode,
    )
    return out


_ONES: dict[torch.device, torch.Tensor] = {}


def _scale_tensor(g, name: str, device: torch.device) -> torch.Tensor:
    """A float32 one-element tensor on `device` from a float or a tensor (never read on the host).

    `None` gives a cached `1.0` (no host-to-device copy per call, so a call with no scales can
    be captured in a CUDA graph); a Python float is copied to the device on every call.
    """
    if g is None:
        if device not in _ONES:
            _ONES[device] = torch.ones(1, dtype=torch.float32, device=device)
        return _ONES[device]
    if isinstance(g, torch.Tensor):
        if g.dtype != torch.float32 or g.numel() != 1:
            raise ValueError(f"{name} must be a float32 tensor of one element, got {g.dtype} {tuple(g.shape)}")
        if g.device != device:
            raise ValueError(f"{name} is on {g.device}, q on {device}")
        return g.reshape(1)
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not (math.isfinite(g) and g > 0):
        raise ValueError(f"{name} must be a positive finite float or a float32 tensor, got {g!r}")
    return torch.tensor([float(g)], dtype=torch.float32, device=device)


def _check_page(page_size: int) -> int:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"page_size must be a positive int, got {page_size!r}")
    return page_size


def decode_attention_fp4(
    q: torch.Tensor,
    pool_or_buffers: MHATokenToKVPoolFP4 | FP4KVLayer | FP4PageBlocks,
    layer: object,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    sm_scale: float | None = None,
    num_kv_splits: int = DEFAULT_SPLITS,
    page_size: int = 1,
    out_dtype: torch.dtype = torch.float32,
    validate: bool = True,
    decode: str = "placement",
    **launch: int,
) -> torch.Tensor:
    """Decode attention of one query token per request over its FP4-cached K/V, read in place.

    Args:
        q: `float32`/`bfloat16`/`float16 [B, Hq, D]`, `Hq` a multiple of the pool's KV heads,
            `D` in [`HEAD_DIMS`][nvfp4_kvcache_triton.decode_attention.HEAD_DIMS].
        pool_or_buffers: an [`MHATokenToKVPoolFP4`][nvfp4_kvcache.pool.MHATokenToKVPoolFP4] (then `layer` picks
            the layer), an [`FP4KVLayer`][nvfp4_kvcache_triton.decode_attention.FP4KVLayer] or an `nvfp4_kvcache_triton.page_blocks.FP4PageBlocks`
            (then `layer` must be `None`; page blocks need `page_size` equal to theirs).
        layer: global layer id (or an object with `.layer_id`), or `None` for raw buffers.
        kv_indptr: `int32`/`int64 [B + 1]`; request `b` reads slots
            `kv_indices[kv_indptr[b]:kv_indptr[b + 1]]` in sequence order (at least one).
        kv_indices: `int32`/`int64` slots.
        sm_scale: softmax scale, default `1 / sqrt(D)`.
        num_kv_splits: KV splits per request (stage-1 programs along the sequence).
        page_size: `1`: every token's slot is gathered from `kv_indices`. `> 1`: the
            page-table shortcut, reading `kv_indices` once per page; requires that request
            token `t` sits at slot `kv_indices[kv_indptr[b] + t - t % P] + t % P` (SGLang's
            paged allocator; checked when `validate`).
        out_dtype: `float32` (default) or `bfloat16`.
        validate: check `kv_indptr`/`kv_indices` values (lengths >= 1, slots in range, page
            layout). This reads them on the host, which synchronises a GPU: pass `False` in a
            serving loop or a CUDA graph.
        decode: how E2M1 codes become numbers ([`DECODES`][nvfp4_kvcache_triton.decode_attention.DECODES]): `"placement"` (pure Triton, the
            default, runs everywhere), `"prmt"` or `"prmt_bf16"` (inline-PTX lookup tables, GPU
            only), `"cvt_f16"` (E2M1 bits placed as E4M3 and converted by the GPU's packed `cvt`,
            fp16 tensor-core dots; under the interpreter its pure-Triton twin runs; power-of-two
            scales are split into a float32 power of two per step and a float16 relative scale,
            exact while a block lies at most 17 binades below its step's largest).
            See the variant log.
        **launch: `block_n`, `num_warps`, `num_stages`, `prefetch`, `tokens_as_m`: overrides of
            the GPU's entry in `DEVICE_LAUNCHES`, else of [`TUNING`][nvfp4_kvcache_triton.decode_attention.TUNING] (benchmarks).

    Returns:
        `out_dtype [B, Hq, D]`.

    Raises:
        TypeError, ValueError, IndexError: as [`nvfp4_kvcache.attention.decode_attention`][nvfp4_kvcache.attention.decode_attention]
            (bad shapes, dtypes, devices, layer, empty requests, slots out of range).
    """
    if isinstance(pool_or_buffers, FP4PageBlocks):
        if layer is not None:
            raise ValueError("layer must be None when FP4PageBlocks are given")
        return _decode_page_blocks(q, pool_or_buffers, kv_indptr, kv_indices, sm_scale, num_kv_splits, page_size,
                                   out_dtype, validate, decode, launch)
    if isinstance(pool_or_buffers, MHATokenToKVPoolFP4):
        fl = fp4_layer(pool_or_buffers, layer)
    elif isinstance(pool_or_buffers, FP4KVLayer):
        if layer is not None:
            raise ValueError("layer must be None when raw FP4KVLayer buffers are given")
        fl = pool_or_buffers
    else:
        raise TypeError("pool_or_buffers must be an MHATokenToKVPoolFP4, FP4KVLayer or FP4PageBlocks, got "
                        f"{type(pool_or_buffers).__name__}")
    _check_recipe(fl.recipe)
    for name in ("k", "v"):
        t = getattr(fl, name)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 3 or t.stride(-1) != 1:
            raise ValueError(f"{name} must be a uint8 [slots, H, D/2] tensor with contiguous rows (stride 1 "
                             "along D/2; any slot and head strides)")
    if fl.v.shape != fl.k.shape or fl.v.stride() != fl.k.stride():
        raise ValueError(f"v {tuple(fl.v.shape)} must match k {tuple(fl.k.shape)} in shape and strides")
    rows, heads, d2 = fl.k.shape
    dim = 2 * d2
    nb = dim // 16
    if fl.k.stride(0) % d2 or fl.k.stride(1) % d2:
        raise ValueError(f"k/v slot and head strides must be multiples of the row length {d2}, got {fl.k.stride()}")
    ks, vs = fl.k_scale, fl.v_scale
    for name, t in (("k_scale", ks), ("v_scale", vs)):
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.uint8, torch.float8_e4m3fn):
            raise ValueError(f"{name} must be a uint8 (or float8_e4m3fn) tensor")
        if tuple(t.shape) not in ((rows, heads * nb), (rows, heads, nb)) or t.stride(-1) != 1:
            raise ValueError(f"{name} must have shape {(rows, heads * nb)} or {(rows, heads, nb)} with "
                             f"contiguous rows, got {tuple(t.shape)}")
    if vs.stride() != ks.stride() or vs.shape != ks.shape:
        raise ValueError("k_scale and v_scale must have the same shape and strides")
    if any(st % nb for st in ks.stride()[:-1]):
        raise ValueError(f"k_scale/v_scale strides must be multiples of the scale row length {nb}, got {ks.stride()}")
    q = _common(q, kv_indptr, kv_indices, heads, dim, rows, num_kv_splits, out_dtype, validate)
    for name, t in (("k", fl.k), ("v", fl.v), ("k_scale", ks), ("v_scale", vs)):
        _same_device(name, t, q)
    gk, gv = _global_scales(fl.recipe, fl.k_global, fl.v_global, q.device)
    page = _check_page(page_size)
    if validate and page > 1:
        _check_pages(kv_indptr, kv_indices, page)
    ks8 = ks.view(torch.uint8) if ks.dtype != torch.uint8 else ks
    vs8 = vs.view(torch.uint8) if vs.dtype != torch.uint8 else vs
    _check_decode(decode, launch.get("block_n"))
    fmt = _k.FMT_IDS[fl.recipe]
    s_strides = (ks.stride(0), ks.stride(1) if ks.dim() == 3 else nb)
    return _launch(fmt, q, fl.k, fl.v, ks8, vs8, s_strides, gk, gv, kv_indptr, kv_indices, sm_scale,
                   num_kv_splits, page, out_dtype, heads, dim, decode=_k.DECODE_IDS[decode],
                   variant=_variant(fl.recipe, decode), **launch)


def _variant(recipe: str, decode: str) -> str:
    """The name of a kernel variant in `DEVICE_LAUNCHES` and the benchmark: `recipe[+decoder]`."""
    return recipe if decode == "placement" else f"{recipe}+{decode}"


def _check_recipe(recipe: object) -> None:
    if recipe not in _FP4_RECIPES:
        raise ValueError(f"recipe must be one of {_FP4_RECIPES}, got {recipe!r}")


def _global_scales(recipe: str, k_global, v_global, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if get_recipe(recipe).global_scale is not None:
        if k_global is None or v_global is None:
            raise ValueError(f"{recipe} needs k_global and v_global (float32 decode global scales)")
    elif k_global is not None or v_global is not None:
        raise ValueError(f"{recipe} has no global scale; pass k_global=v_global=None")
    return _scale_tensor(k_global, "k_global", device), _scale_tensor(v_global, "v_global", device)


def _check_decode(decode: object, block_n: object = None) -> None:
    """Refuse a decoder this build cannot run as asked (the MLA launcher calls it too)."""
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
    if decode == "prmt_bf16" and isinstance(block_n, int) and block_n < 32:
        # measured on an H200 (Triton 3.6): at BLOCK_N 16 this decoder's output is wrong in both MMA
        # orientations, for nvfp4 and fp4_mx_block16 (tests/test_decode_attention_kernel.py)
        raise ValueError(f"decode='prmt_bf16' needs block_n >= 32, got {block_n}: Triton 3.6 builds a wrong "
                         "kernel at 16 tokens per step")
    if decode in ("prmt", "prmt_bf16") and _interpreting():
        raise ValueError(f"decode={decode!r} uses inline PTX, which Triton's interpreter cannot run; "
                         "use decode='placement' (its pure-Triton twin)")


def _decode_page_blocks(q, blocks: FP4PageBlocks, kv_indptr, kv_indices, sm_scale, num_kv_splits, page_size,
                        out_dtype, validate, decode, launch) -> torch.Tensor:
    """`decode_attention_fp4` over page blocks: the same kernel, rows found through their page."""
    _check_recipe(blocks.recipe)
    page = blocks.page_size
    for name in ("k", "v"):
        t = getattr(blocks, name)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 3 or t.stride(-1) != 1:
            raise ValueError(f"page blocks' {name} must be a uint8 [pages, H, block] tensor with contiguous blocks")
    if blocks.v.shape != blocks.k.shape or blocks.v.stride() != blocks.k.stride():
        raise ValueError(f"page blocks' v {tuple(blocks.v.shape)} must match k {tuple(blocks.k.shape)} in shape "
                         "and strides")
    pages, heads, blk = blocks.k.shape
    dim = blocks.head_dim
    if isinstance(page, bool) or not isinstance(page, int) or page < 2 or blk != page * 9 * dim // 16:
        raise ValueError(f"page blocks of {blk} bytes do not hold page_size={page!r} tokens of a head dim")
    if any(st % 16 for st in blocks.k.stride()[:2]):
        raise ValueError(f"page blocks' page and head strides must be multiples of 16 bytes, got {blocks.k.stride()}")
    if page_size != page:
        raise ValueError(f"page blocks of {page} tokens need page_size={page} (the page-table shortcut), "
                         f"got page_size={page_size!r}")
    q = _common(q, kv_indptr, kv_indices, heads, dim, pages * page, num_kv_splits, out_dtype, validate)
    for name, t in (("k", blocks.k), ("v", blocks.v)):
        _same_device(name, t, q)
    gk, gv = _global_scales(blocks.recipe, blocks.k_global, blocks.v_global, q.device)
    if validate:
        _check_pages(kv_indptr, kv_indices, page)
    _check_decode(decode, launch.get("block_n"))
    st = blocks.k.stride()
    return _launch(_k.FMT_IDS[blocks.recipe], q, blocks.k, blocks.v, blocks.k, blocks.v, (st[0], st[1]), gk, gv,
                   kv_indptr, kv_indices, sm_scale, num_kv_splits, page, out_dtype, heads, dim,
                   decode=_k.DECODE_IDS[decode], page_block=True, variant=_variant(blocks.recipe, decode), **launch)


def _check_pages(kv_indptr: torch.Tensor, kv_indices: torch.Tensor, page: int) -> None:
    p = kv_indptr.to("cpu", torch.int64)
    idx = kv_indices.to("cpu", torch.int64)
    for b in range(p.numel() - 1):
        s = idx[int(p[b]) : int(p[b + 1])]
        t = torch.arange(s.numel())
        want = s[t - t % page] + t % page
        if not torch.equal(s, want):
            raise ValueError(f"page_size={page}: request {b}'s slots are not page-contiguous "
                             "(use page_size=1 to gather every slot)")


def decode_attention_dense(
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
    sm_scale: float | None = None,
    num_kv_splits: int = DEFAULT_SPLITS,
    page_size: int = 1,
    out_dtype: torch.dtype = torch.float32,
    validate: bool = True,
    decode: str = "bf16",
    **launch: int,
) -> torch.Tensor:
    """The same kernel over a `bfloat16` or `float8_e4m3fn` cache (the baselines).

    Args:
        q: as [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4].
        k_buffer: `bfloat16` or `float8_e4m3fn [slots, H, D]`, each `[D]` row contiguous (any
            slot and head strides: slot-major as SGLang's pool, or a head-major view).
        v_buffer: same dtype, shape and strides as `k_buffer`.
        kv_indptr: as [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4].
        kv_indices: as [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4].
        k_scale: FP8 per-tensor K decode scale (float or `float32` one-element tensor; default 1.0),
            folded into the softmax scale. Must be `None` for bf16.
        v_scale: the same for V, folded into the output.
        sm_scale: as [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4].
        num_kv_splits: as [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4].
        page_size: as [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4].
        out_dtype: as [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4].
        validate: as [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4].
        decode: `"bf16"` (default) or, FP8 only, `"cvt_f16"` (fp16 dots): see `DENSE_DECODES`.
        **launch: as [`decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4].

    Returns:
        `out_dtype [B, Hq, D]`.

    Examples:
        >>> import torch
        >>> k = torch.randn(10, 1, 64).bfloat16()
        >>> q = torch.randn(1, 4, 64)
        >>> out = decode_attention_dense(
        ...     q, k, k, torch.tensor([0, 3]), torch.tensor([4, 7, 9])
        ... )
        >>> out.shape
        torch.Size([1, 4, 64])
    """
    for name, t in (("k_buffer", k_buffer), ("v_buffer", v_buffer)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in (torch.bfloat16, torch.float8_e4m3fn) or t.dim() != 3:
            raise ValueError(f"{name} must be a bfloat16 or float8_e4m3fn [slots, H, D] tensor, got {t.dtype} {tuple(t.shape)}")
        if t.stride(-1) != 1:
            raise ValueError(f"{name}: each [D] row must be contiguous (any slot and head strides)")
    if v_buffer.dtype != k_buffer.dtype or v_buffer.shape != k_buffer.shape or v_buffer.stride() != k_buffer.stride():
        raise ValueError("k_buffer and v_buffer must have the same dtype, shape and strides")
    rows, heads, dim = k_buffer.shape
    if k_buffer.stride(0) % dim or k_buffer.stride(1) % dim:
        raise ValueError(f"k_buffer/v_buffer slot and head strides must be multiples of D = {dim}, "
                         f"got {k_buffer.stride()}")
    q = _common(q, kv_indptr, kv_indices, heads, dim, rows, num_kv_splits, out_dtype, validate)
    _same_device("k_buffer", k_buffer, q)
    _same_device("v_buffer", v_buffer, q)
    if k_buffer.dtype == torch.bfloat16 and (k_scale is not None or v_scale is not None):
        raise ValueError("k_scale/v_scale apply to float8_e4m3fn caches only")
    gk = _scale_tensor(k_scale, "k_scale", q.device)
    gv = _scale_tensor(v_scale, "v_scale", q.device)
    page = _check_page(page_size)
    if validate and page > 1:
        _check_pages(kv_indptr, kv_indices, page)
    if decode not in DENSE_DECODES:
        raise ValueError(f"decode must be one of {DENSE_DECODES}, got {decode!r}")
    if decode == "cvt_f16" and k_buffer.dtype != torch.float8_e4m3fn:
        raise ValueError("decode='cvt_f16' converts an FP8 (float8_e4m3fn) cache; a bfloat16 cache takes decode='bf16'")
    kind = "bf16" if k_buffer.dtype == torch.bfloat16 else "fp8"
    fmt = _k.FMT_IDS["bf16" if kind == "bf16" else "fp8_e4m3"]
    return _launch(fmt, q, k_buffer, v_buffer, gk, gk, (0, 0), gk, gv, kv_indptr, kv_indices, sm_scale,
                   num_kv_splits, page, out_dtype, heads, dim, decode=_k.DECODE_IDS["cvt_f16"] if decode == "cvt_f16" else 0,
                   variant=kind if decode == "bf16" else f"{kind}+{decode}", **launch)
