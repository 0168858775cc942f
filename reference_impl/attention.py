"""Reference attention over an FP4 pool, in `float64` on the dequantized cache: the kernels' oracle.

The cache is read the way SGLang's attention backends index it:

* `kv_indptr` `[B + 1]` and `kv_indices` `[kv_indptr[-1]]`: request `b` attends to pool
  slots `kv_indices[kv_indptr[b]:kv_indptr[b + 1]]`, in sequence order (FlashInfer/Triton
  backends; [`kv_indices_from_req_to_token`][nvfp4_kvcache.attention.kv_indices_from_req_to_token] builds them from `req_to_token`);
* `qo_indptr` `[B + 1]` (extend only): request `b` owns query rows
  `qo_indptr[b]:qo_indptr[b + 1]`, the **last** tokens of its sequence, whose K/V are already
  in the pool (SGLang writes the new tokens' K/V before it runs attention). The mask is causal:
  query `j` of a request with `m` new and `n` total tokens sees keys `0 .. n - m + j`.

GQA: query head `h` reads KV head `h // (Hq // Hkv)`. MLA is computed in the absorbed form:
multi-query attention with one 576-wide "head" (`[q_nope @ W_UK ; q_rope]` against the
`[latent ; rope]` cache) whose values are the latent's first `kv_lora_rank` elements; the
result is in latent space (multiply by `W_UV` afterwards).

Everything is computed in `float64` from the pool's exact dequantized values
([`gather_kv`][nvfp4_kvcache.pool.MHATokenToKVPoolFP4.gather_kv]), so a kernel's error against this
oracle is the kernel's own arithmetic, not the cache's.

Examples:
    >>> import torch
    >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
    >>> from nvfp4_kvcache.attention import decode_attention
    >>> pool = MHATokenToKVPoolFP4(
    ...     size=8, page_size=1, layer_num=1, head_num=2, head_dim=16
    ... )
    >>> pool.set_kv_buffer(
    ...     0, torch.arange(1, 6), torch.randn(5, 2, 16), torch.randn(5, 2, 16)
    ... )
    >>> q = torch.randn(2, 4, 16)  # 2 requests, 4 query heads (GQA 2:1)
    >>> out = decode_attention(q, pool, 0, kv_indptr=torch.tensor([0, 3, 5]),
    ...                        kv_indices=torch.tensor([1, 2, 3, 4, 5]))
    >>> out.shape, out.dtype
    (torch.Size([2, 4, 16]), torch.float64)
"""

from __future__ import annotations

import math

import torch

from nvfp4_kvcache.pool import MHATokenToKVPoolFP4, MLATokenToKVPoolFP4

__all__ = [
    "ragged_attention",
    "decode_attention",
    "extend_attention",
    "mla_decode_attention",
    "mla_extend_attention",
    "kv_indices_from_req_to_token",
]

_Q_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _check_indptr(t: object, name: str, total: int | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.int64, torch.int32) or t.dim() != 1 or t.numel() < 2:
        raise ValueError(f"{name} must be a 1-D int32/int64 tensor of length B + 1 >= 2, got {t.dtype} {tuple(t.shape)}")
    p = t.to("cpu", torch.int64)
    if int(p[0]) != 0 or bool((p[1:] < p[:-1]).any()):
        raise ValueError(f"{name} must start at 0 and be non-decreasing, got {p.tolist()[:8]}")
    if total is not None and int(p[-1]) != total:
        raise ValueError(f"{name}[-1] must equal {total}, got {int(p[-1])}")
    return p


def _check_q(q: object, name: str, heads_dim: tuple[int | None, int]) -> torch.Tensor:
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(q).__name__}")
    if q.dtype not in _Q_DTYPES:
        raise ValueError(f"{name} must be a float tensor, got {q.dtype}")
    heads, dim = heads_dim
    if q.dim() != 3 or q.shape[-1] != dim or (heads is not None and q.shape[1] != heads):
        want = f"[tokens, {heads if heads is not None else 'heads'}, {dim}]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(q.shape)}")
    return q


def _one_query_per_request(q: object, name: str) -> torch.Tensor:
    if not isinstance(q, torch.Tensor) or q.dim() != 3:
        raise ValueError(f"{name} must be a 3-D tensor [batch, heads, dim]")
    return torch.arange(q.shape[0] + 1)


def ragged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    *,
    sm_scale: float,
    causal: bool = True,
) -> torch.Tensor:
    """Batched attention on ragged (concatenated) sequences, in `float64`.

    Args:
        q: `[Tq, Hq, Dk]` float; request `b` owns rows `qo_indptr[b]:qo_indptr[b+1]`.
        k: `[Tk, Hkv, Dk]` float; request `b` owns rows `kv_indptr[b]:kv_indptr[b+1]`.
        v: `[Tk, Hkv, Dv]` float.
        qo_indptr: `int32`/`int64 [B + 1]`.
        kv_indptr: `int32`/`int64 [B + 1]`.
        sm_scale: softmax scale applied to `q . k`.
        causal: the queries are the last tokens of each sequence (bottom-right aligned mask).

    Returns:
        `float64 [Tq, Hq, Dv]`.

    Raises:
        TypeError, ValueError: shapes that do not match, `Hq` not a multiple of `Hkv`, a
            request with more queries than keys, or an empty key sequence.

    Examples:
        >>> import torch
        >>> q, k = torch.ones(1, 1, 2), torch.zeros(3, 1, 2)
        >>> v = torch.arange(3.0).reshape(3, 1, 1)
        >>> ragged_attention(
        ...     q, k, v, torch.tensor([0, 1]), torch.tensor([0, 3]), sm_scale=1.0
        ... ).item()
        1.0
    """
    for t, name in ((q, "q"), (k, "k"), (v, "v")):
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.dtype not in _Q_DTYPES:
            raise ValueError(f"{name} must be a 3-D float tensor")
    if k.shape[:2] != v.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    hq, hkv = q.shape[1], k.shape[1]
    if hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of KV heads ({hkv})")
    qo = _check_indptr(qo_indptr, "qo_indptr", q.shape[0])
    kv = _check_indptr(kv_indptr, "kv_indptr", k.shape[0])
    if qo.numel() != kv.numel():
        raise ValueError(f"qo_indptr and kv_indptr must have the same length, got {qo.numel()} and {kv.numel()}")
    group = hq // hkv
    out = torch.zeros(q.shape[0], hq, v.shape[-1], dtype=torch.float64, device=q.device)
    for b in range(qo.numel() - 1):
        q0, q1, k0, k1 = int(qo[b]), int(qo[b + 1]), int(kv[b]), int(kv[b + 1])
        m, n = q1 - q0, k1 - k0
        if m == 0:
            continue
        if n == 0 or m > n:
            raise ValueError(f"request {b} has {m} queries and {n} keys; need 1 <= queries <= keys")
        qb = q[q0:q1].to(torch.float64)
        kb = k[k0:k1].to(torch.float64).repeat_interleave(group, dim=1)
        vb = v[k0:k1].to(torch.float64).repeat_interleave(group, dim=1)
        s = torch.einsum("mhd,nhd->hmn", qb, kb) * sm_scale
        if causal:
            allowed = torch.arange(n).unsqueeze(0) <= (n - m + torch.arange(m)).unsqueeze(1)
            s = s.masked_fill(~allowed.to(s.device), float("-inf"))
        p = torch.softmax(s, dim=-1)
        out[q0:q1] = torch.einsum("hmn,nhd->mhd", p, vb)
    return out


def kv_indices_from_req_to_token(
    req_to_token: torch.Tensor, req_pool_indices: torch.Tensor, seq_lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(kv_indptr, kv_indices)` from SGLang's `req_to_token` table.

    Args:
        req_to_token: `int32`/`int64 [max_reqs, max_context_len]`: row `r` maps a request's
            token positions to pool slots.
        req_pool_indices: `int [B]`: each request's row.
        seq_lens: `int [B]`: tokens per request (prefix plus new).

    Returns:
        `kv_indptr int64 [B + 1]` and `kv_indices int64 [sum(seq_lens)]`.

    Raises:
        TypeError, ValueError, IndexError: bad ranks, lengths or rows.

    Examples:
        >>> import torch
        >>> r2t = torch.tensor([[0, 0, 0], [7, 8, 9], [4, 5, 0]])
        >>> kv_indices_from_req_to_token(r2t, torch.tensor([2, 1]), torch.tensor([2, 3]))
        (tensor([0, 2, 5]), tensor([4, 5, 7, 8, 9]))
    """
    for t, name, rank in ((req_to_token, "req_to_token", 2), (req_pool_indices, "req_pool_indices", 1),
                          (seq_lens, "seq_lens", 1)):
        if not isinstance(t, torch.Tensor) or t.dim() != rank or t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be a {rank}-D int32/int64 tensor")
    if req_pool_indices.numel() != seq_lens.numel():
        raise ValueError("req_pool_indices and seq_lens must have the same length")
    rows, width = req_to_token.shape
    lens = seq_lens.to("cpu", torch.int64)
    reqs = req_pool_indices.to("cpu", torch.int64)
    if lens.numel() and (int(lens.min()) < 0 or int(lens.max()) > width):
        raise ValueError(f"seq_lens must lie in [0, {width}], got {lens.tolist()}")
    if reqs.numel() and (int(reqs.min()) < 0 or int(reqs.max()) >= rows):
        raise IndexError(f"req_pool_indices must lie in [0, {rows}), got {reqs.tolist()}")
    indptr = torch.zeros(lens.numel() + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(lens, 0)
    parts = [req_to_token[int(r), : int(n)].to(torch.int64) for r, n in zip(reqs, lens)]
    indices = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=req_to_token.device)
    return indptr.to(req_to_token.device), indices


def _mha(q, pool, layer, qo_indptr, kv_indptr, kv_indices, sm_scale, causal):
    if not isinstance(pool, MHATokenToKVPoolFP4):
        raise TypeError(f"pool must be an MHATokenToKVPoolFP4, got {type(pool).__name__}")
    _check_q(q, "q", (None, pool.head_dim))
    k, v = pool.gather_kv(layer, kv_indices, dtype=torch.float64)
    scale = 1.0 / math.sqrt(pool.head_dim) if sm_scale is None else float(sm_scale)
    return ragged_attention(q, k, v, qo_indptr, kv_indptr, sm_scale=scale, causal=causal)


def decode_attention(
    q: torch.Tensor,
    pool: MHATokenToKVPoolFP4,
    layer: object,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """Decode: one query token per request against its paged KV.

    Args:
        q: `[B, Hq, head_dim]` float (`Hq` a multiple of the pool's `head_num`).
        pool: an [`MHATokenToKVPoolFP4`][nvfp4_kvcache.pool.MHATokenToKVPoolFP4].
        layer: global layer id.
        kv_indptr: `int [B + 1]`; kv_indices: `int [kv_indptr[-1]]` pool slots.
        sm_scale: default `1 / sqrt(head_dim)`.

    Returns:
        `float64 [B, Hq, head_dim]`.

    Raises:
        TypeError, ValueError, IndexError: bad shapes, indices or layer.

    Examples:
        >>> import torch
        >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
        >>> pool = MHATokenToKVPoolFP4(
        ...     size=4, page_size=1, layer_num=1, head_num=1, head_dim=16
        ... )
        >>> pool.set_kv_buffer(0, torch.tensor([1, 2]), torch.zeros(2, 1, 16),
        ...                    torch.tensor([1.0, 3.0]).reshape(2, 1, 1).expand(2, 1, 16))
        >>> decode_attention(
        ...     torch.ones(1, 2, 16), pool, 0, torch.tensor([0, 2]), torch.tensor([1, 2])
        ... )[0, :, 0]
        tensor([2., 2.], dtype=torch.float64)
    """
    qo_indptr = _one_query_per_request(q, "q")
    return _mha(q, pool, layer, qo_indptr, kv_indptr, kv_indices, sm_scale, causal=False)


def extend_attention(
    q: torch.Tensor,
    pool: MHATokenToKVPoolFP4,
    layer: object,
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """Extend/prefill with a cached prefix: causal attention of the new tokens over prefix + new.

    Args:
        q: `[sum(new tokens), Hq, head_dim]`.
        pool: the pool, already holding the new tokens' K/V.
        layer: global layer id.
        qo_indptr: `int [B + 1]` over `q`; kv_indptr/kv_indices: each request's whole sequence.
        sm_scale: default `1 / sqrt(head_dim)`.

    Returns:
        `float64 [sum(new tokens), Hq, head_dim]`.

    Raises:
        TypeError, ValueError, IndexError: bad shapes, indices or layer.

    Examples:
        >>> import torch
        >>> from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
        >>> pool = MHATokenToKVPoolFP4(
        ...     size=4, page_size=1, layer_num=1, head_num=1, head_dim=16
        ... )
        >>> pool.set_kv_buffer(
        ...     0,
        ...     torch.tensor([1, 2, 3]),
        ...     torch.zeros(3, 1, 16),
        ...     torch.tensor([1.0, 2.0, 6.0]).reshape(3, 1, 1).expand(3, 1, 16),
        ... )
        >>> out = extend_attention(torch.ones(2, 1, 16), pool, 0, torch.tensor([0, 2]),
        ...                        torch.tensor([0, 3]), torch.tensor([1, 2, 3]))
        >>> out[:, 0, 0].tolist()      # token 2 of 3 sees keys 1-2, token 3 sees all
        [1.5, 3.0]
    """
    return _mha(q, pool, layer, qo_indptr, kv_indptr, kv_indices, sm_scale, causal=True)


def _mla(q_nope, q_rope, pool, layer, qo_indptr, kv_indptr, kv_indices, sm_scale, causal):
    if not isinstance(pool, MLATokenToKVPoolFP4):
        raise TypeError(f"pool must be an MLATokenToKVPoolFP4, got {type(pool).__name__}")
    _check_q(q_nope, "q_nope", (None, pool.kv_lora_rank))
    _check_q(q_rope, "q_rope", (q_nope.shape[1], pool.qk_rope_head_dim))
    if q_rope.shape[0] != q_nope.shape[0]:
        raise ValueError(f"q_nope and q_rope must have the same tokens, got {q_nope.shape[0]} and {q_rope.shape[0]}")
    latent = pool.gather_kv(layer, kv_indices, dtype=torch.float64)   # [T, 1, L + R]
    q = torch.cat([q_nope.to(torch.float64), q_rope.to(torch.float64)], dim=-1)
    return ragged_attention(q, latent, latent[..., : pool.kv_lora_rank], qo_indptr, kv_indptr,
                            sm_scale=float(sm_scale), causal=causal)


def mla_decode_attention(
    q_nope: torch.Tensor,
    q_rope: torch.Tensor,
    pool: MLATokenToKVPoolFP4,
    layer: object,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    sm_scale: float,
) -> torch.Tensor:
    """MLA decode in the absorbed form.

    Args:
        q_nope: `[B, H, kv_lora_rank]`: the NoPE query already multiplied by `W_UK`.
        q_rope: `[B, H, qk_rope_head_dim]`.
        pool: an [`MLATokenToKVPoolFP4`][nvfp4_kvcache.pool.MLATokenToKVPoolFP4].
        layer: global layer id.
        kv_indptr: as [`decode_attention`][nvfp4_kvcache.attention.decode_attention].
        kv_indices: as [`decode_attention`][nvfp4_kvcache.attention.decode_attention].
        sm_scale: required (models define it from the *unabsorbed* head dim, e.g. `1/sqrt(192)`).

    Returns:
        `float64 [B, H, kv_lora_rank]` in latent space.

    Raises:
        TypeError, ValueError, IndexError: bad shapes, indices or layer.

    Examples:
        >>> import torch
        >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
        >>> pool = MLATokenToKVPoolFP4(
        ...     size=4, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16
        ... )
        >>> pool.set_kv_buffer(0, torch.tensor([1, 2]), torch.randn(2, 1, 48))
        >>> out = mla_decode_attention(
        ...     torch.randn(1, 8, 32),
        ...     torch.randn(1, 8, 16),
        ...     pool,
        ...     0,
        ...     torch.tensor([0, 2]),
        ...     torch.tensor([1, 2]),
        ...     sm_scale=0.1,
        ... )
        >>> out.shape, out.dtype
        (torch.Size([1, 8, 32]), torch.float64)
    """
    qo_indptr = _one_query_per_request(q_nope, "q_nope")
    return _mla(q_nope, q_rope, pool, layer, qo_indptr, kv_indptr, kv_indices, sm_scale, causal=False)


def mla_extend_attention(
    q_nope: torch.Tensor,
    q_rope: torch.Tensor,
    pool: MLATokenToKVPoolFP4,
    layer: object,
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    sm_scale: float,
) -> torch.Tensor:
    """MLA extend (causal, cached prefix) in the absorbed form; shapes as [`mla_decode_attention`][nvfp4_kvcache.attention.mla_decode_attention]
    with `sum(new tokens)` rows and `qo_indptr` as [`extend_attention`][nvfp4_kvcache.attention.extend_attention].

    Examples:
        >>> import torch
        >>> from nvfp4_kvcache.pool import MLATokenToKVPoolFP4
        >>> pool = MLATokenToKVPoolFP4(
        ...     size=4, page_size=1, layer_num=1, kv_lora_rank=32, qk_rope_head_dim=16
        ... )
        >>> pool.set_kv_buffer(0, torch.tensor([1, 2, 3]), torch.randn(3, 1, 48))
        >>> mla_extend_attention(
        ...     torch.randn(2, 4, 32),
        ...     torch.randn(2, 4, 16),
        ...     pool,
        ...     0,
        ...     torch.tensor([0, 2]),
        ...     torch.tensor([0, 3]),
        ...     torch.tensor([1, 2, 3]),
        ...     sm_scale=0.1,
        ... ).shape
        torch.Size([2, 4, 32])
    """
    return _mla(q_nope, q_rope, pool, layer, qo_indptr, kv_indptr, kv_indices, sm_scale, causal=True)
