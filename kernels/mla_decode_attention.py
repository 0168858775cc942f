"""MLA decode attention (absorbed form) that reads an FP4 latent pool directly.

DeepSeek-style MLA caches one latent row per token: `c_kv` (kv_lora_rank, 512) and `k_pe`
(qk_rope_head_dim, 64), which [`MLATokenToKVPoolFP4`][nvfp4_kvcache.pool.MLATokenToKVPoolFP4] stores as packed
E2M1 bytes plus block scales, the two parts quantized separately. In the absorbed form the query's
NoPE part has already been multiplied by `W_UK`, so every query head scores against the latent
row itself and the output stays in latent space (`W_UV` is applied after).
[`mla_decode_attention_fp4`][nvfp4_kvcache_triton.mla_decode_attention.mla_decode_attention_fp4] runs that split-KV paged decode over the FP4 bytes in place, with
the building blocks of [`nvfp4_kvcache_triton.decode_attention`][nvfp4_kvcache_triton.decode_attention] (its stage 2 merges the splits).

Status: correct against the float64 oracle (`nvfp4_kvcache.attention.mla_decode_attention`)
under Triton's interpreter in CI, and compiled for `sm_90` without a GPU. The E2M1 decoders are
the MHA kernel's: `placement` (pure Triton, the default), `cvt_f16` (nvfp4: the hardware's
`cvt` and fp16 dots) and `prmt_bf16` (a `prmt` lookup in inline PTX, bf16 dots; GPU only).
`mla_decode_attention_dense` runs the same design over a BF16 latent cache: the baseline.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
    >>> from nvfp4_kvcache.attention import mla_decode_attention
    >>> pool = MLATokenToKVPoolFP4(
    ...     size=32, page_size=16, layer_num=1, kv_lora_rank=64, qk_rope_head_dim=32
    ... )
    >>> pool.set_kv_buffer(0, torch.arange(16, 36), torch.randn(20, 1, 96))
    >>> q_nope = torch.randn(2, 16, 64)  # 2 requests, 16 heads
    >>> q_rope = torch.randn(2, 16, 32)
    >>> indptr, idx = torch.tensor([0, 5, 20]), torch.arange(16, 36)
    >>> out = mla_decode_attention_fp4(
    ...     q_nope, q_rope, pool, 0, indptr, idx, sm_scale=0.1, num_kv_splits=2
    ... )
    >>> ref = mla_decode_attention(q_nope, q_rope, pool, 0, indptr, idx, sm_scale=0.1)
    >>> out.shape, bool((out.double() - ref).abs().max() < 1e-4)
    (torch.Size([2, 16, 64]), True)
"""

from __future__ import annotations

import math

import torch
import triton

from nvfp4_kvcache_triton import decode_attention as _mha
from nvfp4_kvcache_triton._triton import decode_attention as _k
from nvfp4_kvcache_triton._triton.mla_decode_attention import mla_decode_stage1
from nvfp4_kvcache.attention import _check_q
from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
from nvfp4_kvcache.pool._checks import resolve_layer_id

__all__ = ["mla_decode_attention_fp4", "mla_decode_attention_dense", "MLA_DIMS", "MLA_BLOCK_H", "MLA_DECODES",
           "MLA_LAUNCH_CHOICES", "MLA_DEFAULT_LAUNCH", "MLA_DEVICE_LAUNCHES", "mla_device_launch"]

MLA_DIMS = (32, 64, 128, 256, 512)
"""Widths of the NoPE and RoPE parts the kernel handles (powers of two; DeepSeek-V3: 512 and 64)."""
MLA_BLOCK_H = 16
"""Query heads per stage-1 program by default (the smallest tensor-core `M`); the last group is masked."""
MLA_DECODES = ("placement", "cvt_f16", "prmt_bf16")
"""E2M1 decoders of `mla_decode_attention_fp4` (`decode=`), the MHA kernel's."""
MLA_LAUNCH_CHOICES = {
    "block_n": (16, 32, 64, 128),
    "num_warps": (1, 2, 4, 8),
    "num_stages": (1, 2, 3, 4),
    "block_h": (16, 32, 64),
    "v_parts": (1, 2),
    "tokens_as_m": (False, True),
    "split_scores": (False, True),
}
"""Allowed values of the stage-1 launch options (both entry points); anything else is refused.

`block_h`: query heads per program (more heads per program decode each latent tile fewer times
at 128 heads, with more accumulator registers); `v_parts`: programs that share one head group,
each computing the full scores but accumulating `1/v_parts` of the output columns (half the
accumulator registers at 2; the latent is decoded by each); `tokens_as_m`: the step's tokens in
the tensor cores' `M` dimension and the heads in `N` (as the MHA kernel's `tokens_as_m`);
`split_scores`: the score's parts as independent dots summed after scaling, shorter chains of
dependent tensor-core instructions per step."""


MLA_DEFAULT_LAUNCH = {"block_n": 32, "num_warps": 4, "num_stages": 2, "block_h": MLA_BLOCK_H, "v_parts": 1,
                      "tokens_as_m": False, "split_scores": False}
"""The launch of a GPU, variant or head count that `MLA_DEVICE_LAUNCHES` does not list."""

MLA_DEVICE_LAUNCHES: dict[str, dict[int, dict[str, dict[str, int]]]] = {
    "NVIDIA H200": {
        16: {
            "bf16": {"block_n": 32, "num_warps": 4, "num_stages": 2, "block_h": 16, "v_parts": 1,
                     "tokens_as_m": 0, "split_scores": 0},
            "nvfp4+cvt_f16": {"block_n": 32, "num_warps": 4, "num_stages": 2, "block_h": 16, "v_parts": 1,
                              "tokens_as_m": 0, "split_scores": 1},
            "fp4_mx_block16+prmt_bf16": {"block_n": 32, "num_warps": 4, "num_stages": 2, "block_h": 16, "v_parts": 1,
                                         "tokens_as_m": 0, "split_scores": 1},
        },
        128: {
            "bf16": {"block_n": 64, "num_warps": 8, "num_stages": 3, "block_h": 64, "v_parts": 2,
                     "tokens_as_m": 0, "split_scores": 0},
            "nvfp4+cvt_f16": {"block_n": 64, "num_warps": 8, "num_stages": 2, "block_h": 64, "v_parts": 2,
                              "tokens_as_m": 0, "split_scores": 0},
            "fp4_mx_block16+prmt_bf16": {"block_n": 64, "num_warps": 8, "num_stages": 2, "block_h": 64, "v_parts": 2,
                                         "tokens_as_m": 0, "split_scores": 0},
        },
    },
}
"""Fastest stage-1 launch per GPU model (`torch.cuda.get_device_name()`), query-head count and
variant (`"bf16"`, `recipe+decoder`), as `scripts/bench_mla_decode_attention.py` measured it
(DeepSeek-V3's latent, batch 8, 32k tokens; `num_kv_splits` is the caller's).
`tests/test_mla_decode_attention_launches.py` checks every entry against the committed run of that
GPU. A call takes the entry of the listed head count nearest its own (in powers of two, the
smaller on a tie); the options it passes itself win."""


def mla_device_launch(device: torch.device | str | None, variant: str, heads: int) -> dict[str, int]:
    """The launch [`MLA_DEVICE_LAUNCHES`][nvfp4_kvcache_triton.mla_decode_attention.MLA_DEVICE_LAUNCHES]
    lists for this GPU, variant and head count (the nearest listed), else `{}`.

    Examples:
        >>> mla_device_launch("cpu", "nvfp4+cvt_f16", 128)
        {}
    """
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda":
        return {}
    by_heads = MLA_DEVICE_LAUNCHES.get(_mha._device_name(dev.index), {})
    listed = [h for h in sorted(by_heads) if variant in by_heads[h]]
    if not listed or heads < 1:
        return {}
    near = min(listed, key=lambda h: (abs(math.log2(h) - math.log2(heads)), h))
    return dict(by_heads[near][variant])


def _resolve_launch(launch: dict, device: torch.device, variant: str, heads: int) -> dict:
    """Fill the options left at `None`: the device table's entry, else `MLA_DEFAULT_LAUNCH`
    (`block_n` stays `None` under the interpreter, which then steps 16 tokens)."""
    if all(v is not None for v in launch.values()):
        return launch
    tuned = {} if _mha._interpreting() else mla_device_launch(device, variant, heads)
    out = {}
    for key, v in launch.items():
        if v is None:
            v = tuned.get(key, None if key == "block_n" and _mha._interpreting() else MLA_DEFAULT_LAUNCH[key])
            if key in ("tokens_as_m", "split_scores") and v is not None:
                v = bool(v)
        out[key] = v
    return out


def mla_decode_attention_fp4(
    q_nope: torch.Tensor,
    q_rope: torch.Tensor,
    pool: MLATokenToKVPoolFP4,
    layer: object,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    sm_scale: float,
    num_kv_splits: int = _mha.DEFAULT_SPLITS,
    page_size: int = 1,
    out_dtype: torch.dtype = torch.float32,
    validate: bool = True,
    decode: str = "placement",
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    block_h: int | None = None,
    v_parts: int | None = None,
    tokens_as_m: bool | None = None,
    split_scores: bool | None = None,
) -> torch.Tensor:
    """Decode attention of one query token per request over an FP4 MLA latent pool, read in place.

    Args:
        q_nope: `float32`/`bfloat16`/`float16 [B, H, kv_lora_rank]`, already absorbed (times `W_UK`).
        q_rope: `[B, H, qk_rope_head_dim]`, same dtype and device.
        pool: an [`MLATokenToKVPoolFP4`][nvfp4_kvcache.pool.MLATokenToKVPoolFP4] (either recipe).
        layer: global layer id (or an object with `.layer_id`).
        kv_indptr: `int32`/`int64 [B + 1]`, as [`nvfp4_kvcache_triton.decode_attention.decode_attention_fp4`][nvfp4_kvcache_triton.decode_attention.decode_attention_fp4].
        kv_indices: `int32`/`int64` slots.
        sm_scale: required, as the oracle's (models define it from the unabsorbed head dim).
        num_kv_splits: KV splits per request.
        page_size: `1` (gather every slot) or SGLang's page size (the page-table shortcut).
        out_dtype: `float32` (default) or `bfloat16`.
        validate: check the index values on the host (synchronises a GPU).
        decode: how E2M1 codes become numbers, one of `MLA_DECODES`: `"placement"` (pure
            Triton, runs everywhere), `"cvt_f16"` (nvfp4 only; under the interpreter its
            pure-Triton twin) or `"prmt_bf16"` (GPU only).
        block_n: stage-1 tokens per step.
        num_warps: stage-1 warps per program (GPU).
        num_stages: stage-1 software-pipelining stages (GPU).
        block_h: query heads per stage-1 program (`MLA_LAUNCH_CHOICES`).
        v_parts: stage-1 programs per head group, each accumulating its share of the output columns.
        tokens_as_m: tokens in the tensor cores' `M` dimension, heads in `N`.
        split_scores: the score dot as independent partial dots (each latent part's even and odd
            halves, the RoPE part), summed after scaling.

            The seven launch options left at `None` come from the GPU's entry in
            [`MLA_DEVICE_LAUNCHES`][nvfp4_kvcache_triton.mla_decode_attention.MLA_DEVICE_LAUNCHES]
            for this variant and head count, else from `MLA_DEFAULT_LAUNCH` (and
            `block_n` 16 under the interpreter).

    Returns:
        `out_dtype [B, H, kv_lora_rank]` in latent space.

    Raises:
        TypeError, ValueError, IndexError: as [`nvfp4_kvcache.attention.mla_decode_attention`][nvfp4_kvcache.attention.mla_decode_attention]
            (shapes, dtypes, devices, layer, empty requests, slots out of range), and for part widths
            outside [`MLA_DIMS`][nvfp4_kvcache_triton.mla_decode_attention.MLA_DIMS].
    """
    if not isinstance(pool, MLATokenToKVPoolFP4):
        raise TypeError(f"pool must be an MLATokenToKVPoolFP4, got {type(pool).__name__}")
    i = resolve_layer_id(layer, pool.start_layer, pool.layer_num)
    dl, dr = pool.kv_lora_rank, pool.qk_rope_head_dim
    t = pool.layer_tensors(layer)
    kv, kvs = t["kv"], t["kv_scale"]
    if decode not in MLA_DECODES:
        raise ValueError(f"decode must be one of {MLA_DECODES}, got {decode!r}")
    _mha._check_decode(decode, block_n)   # prmt_bf16: 16-token steps and the interpreter refused
    if decode == "cvt_f16" and pool.recipe.scale.torch_dtype is not torch.float8_e4m3fn:
        raise ValueError(f"decode='cvt_f16' here needs E4M3 block scales (nvfp4), not {pool.recipe.name!r}'s: "
                         "the power-of-two path (each step's scales relative to its largest) is built for the "
                         "MHA kernel only; use decode='prmt_bf16' or 'placement'")
    g = None if pool.kv_scales is None else pool.kv_scales[i : i + 1]
    variant = pool.recipe.name if decode == "placement" else f"{pool.recipe.name}+{decode}"
    return _run(q_nope, q_rope, kv, kvs, kv.stride(0), kvs.stride(0), g, _k.FMT_IDS[pool.recipe.name],
                _k.DECODE_IDS[decode], dl, dr, kv_indptr, kv_indices, sm_scale, num_kv_splits, page_size, out_dtype,
                validate, dict(block_n=block_n, num_warps=num_warps, num_stages=num_stages, block_h=block_h,
                               v_parts=v_parts, tokens_as_m=tokens_as_m, split_scores=split_scores), variant)


def mla_decode_attention_dense(
    q_nope: torch.Tensor,
    q_rope: torch.Tensor,
    kv_buffer: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    kv_lora_rank: int,
    sm_scale: float,
    num_kv_splits: int = _mha.DEFAULT_SPLITS,
    page_size: int = 1,
    out_dtype: torch.dtype = torch.float32,
    validate: bool = True,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    block_h: int | None = None,
    v_parts: int | None = None,
    tokens_as_m: bool | None = None,
    split_scores: bool | None = None,
) -> torch.Tensor:
    """The same kernel over a BF16 latent cache (the baseline of `mla_decode_attention_fp4`).

    Args:
        q_nope: as `mla_decode_attention_fp4`.
        q_rope: as `mla_decode_attention_fp4`.
        kv_buffer: `bfloat16 [slots, 1, kv_lora_rank + qk_rope_head_dim]` (SGLang's MLA pool
            layer) or `[slots, kv_lora_rank + qk_rope_head_dim]`, each row contiguous.
        kv_indptr: as `mla_decode_attention_fp4`.
        kv_indices: as `mla_decode_attention_fp4`.
        kv_lora_rank: width of the NoPE part; the rest of a row is the RoPE part.
        sm_scale: as `mla_decode_attention_fp4`.
        num_kv_splits: as `mla_decode_attention_fp4`.
        page_size: as `mla_decode_attention_fp4`.
        out_dtype: as `mla_decode_attention_fp4`.
        validate: as `mla_decode_attention_fp4`.
        block_n: as `mla_decode_attention_fp4`.
        num_warps: as `mla_decode_attention_fp4`.
        num_stages: as `mla_decode_attention_fp4`.
        block_h: as `mla_decode_attention_fp4`.
        v_parts: as `mla_decode_attention_fp4`.
        tokens_as_m: as `mla_decode_attention_fp4`.
        split_scores: as `mla_decode_attention_fp4`.

    Returns:
        `out_dtype [B, H, kv_lora_rank]`.

    Raises:
        TypeError, ValueError, IndexError: as `mla_decode_attention_fp4`, and for a buffer that
            is not bfloat16 with contiguous rows.

    Examples:
        >>> import torch
        >>> from nvfp4_kvcache.attention import ragged_attention
        >>> kv = torch.randn(40, 1, 96).bfloat16()
        >>> qn, qr = torch.randn(1, 16, 64), torch.randn(1, 16, 32)
        >>> out = mla_decode_attention_dense(
        ...     qn,
        ...     qr,
        ...     kv,
        ...     torch.tensor([0, 5]),
        ...     torch.arange(3, 8),
        ...     kv_lora_rank=64,
        ...     sm_scale=0.1,
        ... )
        >>> k = kv[3:8].double()                                  # [tokens, 1 head, 96]
        >>> ref = ragged_attention(
        ...     torch.cat([qn, qr], -1),
        ...     k,
        ...     k[..., :64],
        ...     torch.tensor([0, 1]),
        ...     torch.tensor([0, 5]),
        ...     sm_scale=0.1,
        ...     causal=False,
        ... )
        >>> out.shape, bool((out.double() - ref).abs().max() < 1e-4)
        (torch.Size([1, 16, 64]), True)
    """
    if not isinstance(kv_buffer, torch.Tensor):
        raise TypeError(f"kv_buffer must be a torch.Tensor, got {type(kv_buffer).__name__}")
    if kv_buffer.dtype != torch.bfloat16 or kv_buffer.dim() not in (2, 3) or kv_buffer.stride(-1) != 1:
        raise ValueError(f"kv_buffer must be a bfloat16 [slots, 1, D] or [slots, D] tensor with contiguous rows, "
                         f"got {kv_buffer.dtype} {tuple(kv_buffer.shape)}")
    if kv_buffer.dim() == 3:
        if kv_buffer.shape[1] != 1:
            raise ValueError(f"an MLA latent cache has one head, got {kv_buffer.shape[1]}")
        kv_buffer = kv_buffer[:, 0]
    if isinstance(kv_lora_rank, bool) or not isinstance(kv_lora_rank, int):
        raise ValueError(f"kv_lora_rank must be an int, got {kv_lora_rank!r}")
    dl, dr = kv_lora_rank, kv_buffer.shape[1] - kv_lora_rank
    if kv_buffer.stride(0) % (dl + dr):
        raise ValueError(f"kv_buffer's slot stride must be a multiple of its row length {dl + dr}, "
                         f"got {kv_buffer.stride(0)}")
    return _run(q_nope, q_rope, kv_buffer, kv_buffer, kv_buffer.stride(0), 0, None, _k.FMT_IDS["bf16"], 0, dl, dr,
                kv_indptr, kv_indices, sm_scale, num_kv_splits, page_size, out_dtype, validate,
                dict(block_n=block_n, num_warps=num_warps, num_stages=num_stages, block_h=block_h, v_parts=v_parts,
                     tokens_as_m=tokens_as_m, split_scores=split_scores), "bf16")


STAGE2_TILE = 4096
"""Elements of one stage-2 program's `[splits, columns]` tile at most (32 float32 registers a thread
at 4 warps): the latent columns are cut into chunks of a power of two, at least 32 wide."""


def stage2_block_d(dl: int, num_kv_splits: int) -> int:
    """Latent columns per stage-2 program: `dl` cut so that `splits x columns <= STAGE2_TILE`.

    Examples:
        >>> stage2_block_d(512, 32), stage2_block_d(512, 128), stage2_block_d(64, 3)
        (128, 32, 64)
    """
    return max(32, min(dl, STAGE2_TILE // triton.next_power_of_2(num_kv_splits)))


def _check_launch(launch: dict, dl: int) -> None:
    """Refuse launch options outside `MLA_LAUNCH_CHOICES` (`block_n=None`: the default)."""
    for key, allowed in MLA_LAUNCH_CHOICES.items():
        v = launch[key]
        if key == "block_n" and v is None:
            continue
        if key in ("tokens_as_m", "split_scores"):
            ok = isinstance(v, (bool, int)) and v in allowed
        else:
            ok = not isinstance(v, bool) and isinstance(v, int) and v in allowed
        if not ok:
            raise ValueError(f"{key} must be one of {allowed}, got {v!r}")
    if dl // launch["v_parts"] < 32:
        raise ValueError(f"v_parts={launch['v_parts']} leaves {dl // launch['v_parts']} output columns per part; "
                         "each part needs at least 32")


def _run(q_nope, q_rope, kv, kvs, d_stride, s_stride, g, fmt, decode, dl, dr, kv_indptr, kv_indices, sm_scale,
         num_kv_splits, page_size, out_dtype, validate, launch, variant) -> torch.Tensor:
    """The checks both entry points share, and the two launches."""
    for d, name in ((dl, "kv_lora_rank"), (dr, "qk_rope_head_dim")):
        if d not in MLA_DIMS:
            raise ValueError(f"{name} must be one of {MLA_DIMS} for the kernel, got {d}")
    _check_q(q_nope, "q_nope", (None, dl))
    _check_q(q_rope, "q_rope", (q_nope.shape[1], dr))
    if q_rope.shape[0] != q_nope.shape[0]:
        raise ValueError(f"q_rope has {q_rope.shape[0]} tokens, q_nope {q_nope.shape[0]}")
    for t, name in ((q_nope, "q_nope"), (q_rope, "q_rope")):
        if t.dtype == torch.float64:
            raise ValueError(f"{name} must be float32, bfloat16 or float16 for the kernels, got torch.float64")
        _mha._check_device(t, name)
    _mha._same_device("q_rope", q_rope, q_nope)
    _mha._same_device("pool", kv, q_nope)
    if isinstance(num_kv_splits, bool) or not isinstance(num_kv_splits, int) or num_kv_splits < 1:
        raise ValueError(f"num_kv_splits must be a positive int, got {num_kv_splits!r}")
    if out_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"out_dtype must be torch.float32 or torch.bfloat16, got {out_dtype}")
    launch = _resolve_launch(launch, q_nope.device, variant, q_nope.shape[1])
    _check_launch(launch, dl)
    _mha._check_indices(kv_indptr, kv_indices, q_nope.shape[0], kv.shape[0], q_nope, validate)
    page = _mha._check_page(page_size)
    if validate and page > 1:
        _mha._check_pages(kv_indptr, kv_indices, page)
    q_nope, q_rope = (x if x.stride(-1) == 1 else x.contiguous() for x in (q_nope, q_rope))

    batch, heads, _ = q_nope.shape
    out = torch.empty(batch, heads, dl, dtype=out_dtype, device=q_nope.device)
    if heads == 0:
        return out
    g = _mha._scale_tensor(g, "kv_scales", q_nope.device)
    interp = _mha._interpreting()
    mid_o = torch.empty(batch, heads, num_kv_splits, dl, dtype=torch.float32, device=q_nope.device)
    mid_lse = torch.empty(batch, heads, num_kv_splits, dtype=torch.float32, device=q_nope.device)
    extra = {} if interp else {"num_warps": launch["num_warps"], "num_stages": launch["num_stages"]}
    bh, parts = launch["block_h"], launch["v_parts"]
    mla_decode_stage1[(batch, math.ceil(heads / bh) * parts, num_kv_splits)](
        q_nope, q_nope.stride(0), q_nope.stride(1), q_rope, q_rope.stride(0), q_rope.stride(1),
        kv, kvs, d_stride, s_stride, g, kv_indptr, kv_indices, mid_o, mid_lse, float(sm_scale), heads,
        DL=dl, DR=dr, BLOCK_H=bh, BLOCK_N=16 if interp and launch["block_n"] is None else launch["block_n"] or 32,
        PAGE=page, KV_FMT=fmt,
        INTERP=interp, DECODE=decode, V_PARTS=parts, TOKENS_AS_M=bool(launch["tokens_as_m"]),
        SPLIT_SCORES=bool(launch["split_scores"]), **extra,
    )
    block_s = triton.next_power_of_2(num_kv_splits)
    block_d = stage2_block_d(dl, num_kv_splits)
    _k.decode_stage2[(batch, heads, dl // block_d)](
        mid_o, mid_lse, g, out, out.stride(0), out.stride(1), SPLITS=num_kv_splits, D=dl,
        BLOCK_S=block_s, KV_FMT=fmt, OUT_BF16=out_dtype == torch.bfloat16, DECODE=decode, BLOCK_D=block_d,
    )
    return out
