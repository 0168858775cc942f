"""Decode-attention error of a quantized KV cache against a BF16 one, as the context grows.

The reference is what an unquantized cache gives: K and V rounded to `bfloat16`, attention in
`float64`. The quantized run reads K and/or V through a scheme's fake-quantizer (applied to
the BF16 values, as a serving engine quantizes the BF16 K/V its model produced) and computes
the same `float64` attention, so every difference is the cache's.

For one decode query $q$ per head and a context of $L$ tokens:

* **output error**: $\\lVert o_q - o \\rVert_2 / \\lVert o \\rVert_2$ over all heads and queries,
  where $o = \\mathrm{softmax}(q K^\\top / \\sqrt{d})\\, V$;
* **softmax KL**: $\\mathrm{KL}(p \\,\\|\\, p_q) = \\sum_j p_j \\log(p_j / p_{q,j})$ in nats,
  averaged over heads and queries (0 when only V is quantized).

Examples:
    >>> import torch
    >>> q = torch.randn(1, 4, 16, dtype=torch.float64)        # [queries, Hq, D]
    >>> k = torch.randn(32, 2, 16, dtype=torch.float64)       # [T, Hkv, D]; GQA 2:1
    >>> v = torch.randn(32, 2, 16, dtype=torch.float64)
    >>> out, p = decode_attention_f64(q, k, v)
    >>> tuple(out.shape), tuple(p.shape)
    ((1, 4, 16), (1, 4, 32))
    >>> e = attention_errors(q, k, v, k, v)
    >>> e["out_rel_l2"], e["kl_nats"]
    (0.0, 0.0)
"""

from __future__ import annotations

import math

import torch

__all__ = ["decode_attention_f64", "attention_errors", "context_sweep", "MODES"]

MODES: tuple[str, ...] = ("K", "V", "KV")
"""Which of K and V are read through the quantizer."""


def decode_attention_f64(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-causal attention of a few queries over one sequence, in `float64`; GQA by head groups.

    Args:
        q: `[M, Hq, D]` (`M` decode queries, each seeing all `T` keys).
        k: `[T, Hkv, D]`; query head `h` reads KV head `h // (Hq // Hkv)`.
        v: `[T, Hkv, Dv]`.
        sm_scale: default `1 / sqrt(D)`.

    Returns:
        `(out float64 [M, Hq, Dv], probs float64 [M, Hq, T])`.

    Examples:
        >>> import torch
        >>> q, k = torch.zeros(1, 1, 2), torch.zeros(3, 1, 2)
        >>> v = torch.tensor([[[0.0]], [[3.0]], [[6.0]]])
        >>> out, p = decode_attention_f64(q, k, v)
        >>> out.item(), p[0, 0].tolist()            # equal logits: the mean of V
        (3.0, [0.3333333333333333, 0.3333333333333333, 0.3333333333333333])
    """
    hq, hkv = q.shape[1], k.shape[1]
    if hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of KV heads ({hkv})")
    scale = 1 / math.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    group = hq // hkv
    kk = k.to(torch.float64).repeat_interleave(group, dim=1)
    vv = v.to(torch.float64).repeat_interleave(group, dim=1)
    logits = torch.einsum("mhd,thd->mht", q.to(torch.float64), kk) * scale
    p = torch.softmax(logits, dim=-1)
    return torch.einsum("mht,thd->mhd", p, vv), p


def attention_errors(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_hat: torch.Tensor, v_hat: torch.Tensor
) -> dict[str, float]:
    """Output error and softmax KL of attention over `(k_hat, v_hat)` against `(k, v)`.

    Args:
        q: `[M, Hq, D]`; k, v: the reference `[T, Hkv, D]`; k_hat, v_hat: the cache as read.

    Returns:
        dict with `out_rel_l2` (relative L2 of the outputs), `out_max_abs` (largest absolute
        output difference) and `kl_nats` (mean KL of the attention distributions).

    Examples:
        >>> import torch
        >>> q, k = torch.zeros(1, 1, 2), torch.zeros(2, 1, 2)
        >>> v, v_hat = torch.tensor([[[1.0]], [[3.0]]]), torch.tensor([[[1.0]], [[2.0]]])
        >>> e = attention_errors(q, k, v, k, v_hat)   # outputs 2.0 vs 1.5
        >>> e["out_rel_l2"], e["out_max_abs"], e["kl_nats"]
        (0.25, 0.5, 0.0)
    """
    o, p = decode_attention_f64(q, k, v)
    oh, ph = decode_attention_f64(q, k_hat, v_hat)
    ref = torch.linalg.vector_norm(o)
    kl = torch.where(p > 0, p * (torch.log(p) - torch.log(ph)), torch.zeros_like(p)).sum(-1)
    return {
        "out_rel_l2": float(torch.linalg.vector_norm(oh - o) / ref) if ref > 0 else 0.0,
        "out_max_abs": float((oh - o).abs().max()),
        "kl_nats": float(kl.mean().clamp_min(0.0)),
    }


def context_sweep(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_hat: torch.Tensor,
    v_hat: torch.Tensor,
    lengths: list[int],
) -> dict[str, list[dict[str, float]]]:
    """[`attention_errors`][nvfp4_kvcache.accuracy.attention_error.attention_errors] on the first `L` tokens for every `L` and every mode.

    Quantization is per token (every scale covers one token's channels), so quantizing the
    longest context once and slicing it is exactly the same as quantizing each prefix; only a
    calibrated per-tensor scale is shared, as it would be in a serving engine (one per layer).

    Args:
        q: `[M, Hq, D]` decode queries; k, v, k_hat, v_hat: `[T >= max(lengths), Hkv, D]`.
        lengths: context lengths.

    Returns:
        `{"K": [...], "V": [...], "KV": [...]}`, one [`attention_errors`][nvfp4_kvcache.accuracy.attention_error.attention_errors] dict (plus
        `"context"`) per length, in order.

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> q, k, v = (
        ...     torch.randn(*s, generator=g) for s in ((2, 2, 16), (64, 1, 16), (64, 1, 16))
        ... )
        >>> r = context_sweep(q, k, v, k, v * 1.01, [16, 64])
        >>> [round(x["out_rel_l2"], 6) for x in r["V"]], r["K"][1]["kl_nats"]
        ([0.01, 0.01], 0.0)
    """
    if max(lengths) > k.shape[0]:
        raise ValueError(f"longest context {max(lengths)} exceeds the {k.shape[0]} tokens given")
    out: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for n in lengths:
        pairs = {"K": (k_hat[:n], v[:n]), "V": (k[:n], v_hat[:n]), "KV": (k_hat[:n], v_hat[:n])}
        for mode, (kk, vv) in pairs.items():
            out[mode].append({"context": n, **attention_errors(q, k[:n], v[:n], kk, vv)})
    return out
