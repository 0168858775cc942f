"""The real-activation lab: all-MiniLM-L6-v2's own K and V, and what quantizing them does.

Three measurements per scheme ([`SCHEMES`][nvfp4_kvcache.accuracy.schemes.SCHEMES]), all against
the model run with BF16-rounded K/V (what an unquantized BF16 cache would hold):

1. **element errors** of every layer's real K and V (captured on the evaluation sentences),
   quantized with per-layer scales calibrated on *other* sentences
   (`CALIBRATION`), so values above the calibrated
   `amax` can occur as they would in serving;
2. **attention errors** per layer: that layer's real queries attend over its quantized K and/or
   V (one layer at a time, float64, per sentence), as in
   [`attention_error`][nvfp4_kvcache.accuracy.attention_error];
3. **end-to-end drift**: the whole model runs with every layer's K and/or V fake-quantized; the
   sentence embeddings are compared with the reference ones (cosine similarity) and used for
   retrieval (does each query still rank its own document first, and the same document as
   the reference model?).

Examples:
    >>> from nvfp4_kvcache.accuracy.real_activations import calibrate, kv_hook
    >>> from nvfp4_kvcache.accuracy.minilm import load_minilm
    >>> model = load_minilm()
    >>> amax = calibrate(model, ["A short calibration sentence."])
    >>> len(amax), sorted(amax[0])
    (6, ['k', 'v'])
    >>> ref = model.encode(["Hello there."], kv_hook("bf16", amax, "KV"))
    >>> fp4 = model.encode(["Hello there."], kv_hook("nvfp4/amax448", amax, "KV"))
    >>> 0.95 < float(ref[0] @ fp4[0]) < 1.0
    True
"""

from __future__ import annotations

import torch

from nvfp4_kvcache.accuracy.attention_error import MODES, attention_errors
from nvfp4_kvcache.accuracy.metrics import element_errors
from nvfp4_kvcache.accuracy.minilm import KVHook, MiniLM
from nvfp4_kvcache.accuracy.schemes import SCHEMES, bf16_round

__all__ = ["calibrate", "kv_hook", "capture_qkv", "element_report", "attention_report", "embedding_report"]


def calibrate(model: MiniLM, sentences: list[str]) -> list[dict[str, float]]:
    """Per-layer `amax` of the BF16-rounded K and V over `sentences`.

    Args:
        model: the model.
        sentences: calibration text.

    Returns:
        one `{"k": float, "v": float}` per layer.

    Examples:
        >>> from nvfp4_kvcache.accuracy.minilm import load_minilm
        >>> amax = calibrate(load_minilm(), ["Calibrate on this."])
        >>> all(a["k"] > 0 and a["v"] > 0 for a in amax)
        True
    """
    return [{"k": float(bf16_round(k).abs().max()), "v": float(bf16_round(v).abs().max())}
            for k, v in model.capture_kv(sentences)]


def kv_hook(scheme: str, amax: list[dict[str, float]], mode: str = "KV") -> KVHook:
    """A [`KVHook`][nvfp4_kvcache.accuracy.minilm.KVHook] that rounds K/V to BF16 and reads `mode` through `scheme`.

    Args:
        scheme: a key of [`SCHEMES`][nvfp4_kvcache.accuracy.real_activations.SCHEMES], or `"bf16"` for the reference (BF16 rounding only).
        amax: per-layer calibration from [`calibrate`][nvfp4_kvcache.accuracy.real_activations.calibrate].
        mode: `"K"`, `"V"` or `"KV"`: which of the two are quantized.

    Returns:
        `hook(layer, k, v) -> (k, v)`, `float32 [batch, heads, tokens, head_dim]` in and out.

    Examples:
        >>> import torch
        >>> hook = kv_hook("nvfp4/g1", [{"k": 1.0, "v": 1.0}], mode="V")
        >>> k = v = torch.full((1, 1, 1, 32), 1.3)
        >>> k2, v2 = hook(0, k, v)
        >>> k2[0, 0, 0, 0].item(), v2[0, 0, 0, 0].item()  # K: BF16; V: 6 E4M3(1.297/6)
        (1.296875, 1.3125)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    s = None if scheme == "bf16" else SCHEMES[scheme]

    def hook(layer: int, k: torch.Tensor, v: torch.Tensor):
        k, v = bf16_round(k), bf16_round(v)
        if s is not None and "K" in mode:
            k = s.fake_quantize(k, amax[layer]["k"])
        if s is not None and "V" in mode:
            v = s.fake_quantize(v, amax[layer]["v"])
        return k, v

    return hook


def capture_qkv(model: MiniLM, sentences: list[str]) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], list[int]]:
    """Every layer's real Q, K and V on `sentences`, padding removed.

    Returns:
        `(per_layer, lengths)`: `per_layer[i] = (q, k, v)`, each `float32 [tokens, 12, 32]` with
        the sentences' real tokens concatenated in order; `lengths[j]` = tokens of sentence `j`.

    Examples:
        >>> from nvfp4_kvcache.accuracy.minilm import load_minilm
        >>> qkv, lengths = capture_qkv(load_minilm(), ["Two words.", "Three more words."])
        >>> lengths, tuple(qkv[5][0].shape)        # [CLS] two words . [SEP]
        ([5, 6], (11, 12, 32))
    """
    ids, mask = model.batch(sentences)
    keep = mask.reshape(-1)
    kv = model.capture_kv(sentences)
    qs: list[torch.Tensor] = []
    model.hidden_states(ids, mask, q_observer=lambda layer, q: qs.append(
        q.transpose(1, 2).reshape(-1, model.heads, model.head_dim)[keep].clone()))
    return [(q, k, v) for q, (k, v) in zip(qs, kv)], mask.sum(1).tolist()


def element_report(kv: list[tuple[torch.Tensor, torch.Tensor]], amax: list[dict[str, float]], schemes: list[str]) -> dict:
    """Element errors of each layer's K and V under each scheme: `{scheme: {"k": [per layer], "v": [...]}}`.

    Per-block statistics use blocks of 16 channels for every scheme, so they compare across schemes.

    Args:
        kv: per layer `(k, v)`, `float32 [tokens, heads, head_dim]`.
        amax: per-layer calibration.
        schemes: scheme names.

    Examples:
        >>> import torch
        >>> k = torch.tensor([[[6.0, 3.0] * 16]])        # on the E2M1 grid, block max 6
        >>> r = element_report(
        ...     [(k, k)], [{"k": 6.0, "v": 6.0}], ["mxfp4", "fp8_e4m3/scale1"]
        ... )
        >>> r["mxfp4"]["k"][0]["sqnr_db"], r["fp8_e4m3/scale1"]["v"][0]["sqnr_db"]
        (inf, inf)
    """
    out: dict = {}
    for name in schemes:
        s = SCHEMES[name]
        out[name] = {"k": [], "v": []}
        for layer, (k, v) in enumerate(kv):
            for which, x in (("k", k), ("v", v)):
                ref = bf16_round(x)
                out[name][which].append(element_errors(ref, s.fake_quantize(ref, amax[layer][which]), block=16))
    return out


def attention_report(qkv: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], lengths: list[int],
                     amax: list[dict[str, float]], schemes: list[str]) -> dict:
    """Per-layer attention error with the layer's real queries: `{scheme: {mode: [per layer {...}]}}`.

    Each sentence is its own sequence (its tokens attend to all its tokens); `out_rel_l2` and
    `kl_nats` are averaged over sentences. Only the named layer's K/V are quantized, once for
    all sentences (quantization is per token, so this equals quantizing each sentence alone).

    Args:
        qkv: from [`capture_qkv`][nvfp4_kvcache.accuracy.real_activations.capture_qkv].
        lengths: from [`capture_qkv`][nvfp4_kvcache.accuracy.real_activations.capture_qkv].
        amax: per-layer calibration.
        schemes: scheme names.

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> qkv = [  # one layer, 5 tokens
        ...     tuple(torch.randn(5, 2, 32, generator=g) for _ in range(3))
        ... ]
        >>> r = attention_report(qkv, [2, 3], [{"k": 4.0, "v": 4.0}], ["nvfp4/amax448"])
        >>> r["nvfp4/amax448"]["V"][0]["kl_nats"], r["nvfp4/amax448"]["K"][0]["kl_nats"] > 0
        (0.0, True)
    """
    bounds = torch.tensor([0, *lengths]).cumsum(0).tolist()
    out: dict = {}
    for name in schemes:
        s = SCHEMES[name]
        out[name] = {m: [] for m in MODES}
        for layer, (q, k, v) in enumerate(qkv):
            qr, kr, vr = bf16_round(q), bf16_round(k), bf16_round(v)
            kq, vq = s.fake_quantize(kr, amax[layer]["k"]), s.fake_quantize(vr, amax[layer]["v"])
            for mode, (kk, vv) in {"K": (kq, vr), "V": (kr, vq), "KV": (kq, vq)}.items():
                acc = {"out_rel_l2": 0.0, "kl_nats": 0.0}
                for a, b in zip(bounds[:-1], bounds[1:]):
                    e = attention_errors(qr[a:b], kr[a:b], vr[a:b], kk[a:b], vv[a:b])
                    acc["out_rel_l2"] += e["out_rel_l2"] / len(lengths)
                    acc["kl_nats"] += e["kl_nats"] / len(lengths)
                out[name][mode].append(acc)
    return out


def _retrieval(q: torch.Tensor, d: torch.Tensor, ref_top1: torch.Tensor | None = None) -> dict[str, float]:
    sims = q @ d.T
    top1 = sims.argmax(1)
    r = {"recall_at_1": float((top1 == torch.arange(len(q))).float().mean())}
    if ref_top1 is not None:
        r["top1_agreement"] = float((top1 == ref_top1).float().mean())
    return r


def embedding_report(model: MiniLM, pairs: list[tuple[str, str]], amax: list[dict[str, float]],
                     schemes: list[str], modes: tuple[str, ...] = MODES) -> dict:
    """End-to-end drift of sentence embeddings with every layer's K and/or V quantized.

    Args:
        model: the model.
        pairs: `(query, document)` pairs; document `i` answers query `i`.
        amax: per-layer calibration ([`calibrate`][nvfp4_kvcache.accuracy.real_activations.calibrate]).
        schemes: scheme names.
        modes: which of `"K"`, `"V"`, `"KV"` to run.

    Returns:
        `{"reference": {...}, "fp32": {...}, "schemes": {scheme: {mode: {...}}}}`: for each
        run, `cos_mean`/`cos_min` (cosine similarity to the BF16-KV reference embeddings over
        all queries and documents), `recall_at_1` (query `i` ranks document `i` first),
        `top1_agreement` (same top document as the reference) and `sim_max_abs_diff` (largest
        change of any query-document similarity). `reference` has `recall_at_1` only.

    Examples:
        >>> from nvfp4_kvcache.accuracy.minilm import load_minilm
        >>> m = load_minilm()
        >>> pairs = [
        ...     ("Where is Paris?", "Paris is in France."),
        ...     ("What do cats eat?", "Cats eat fish."),
        ... ]
        >>> r = embedding_report(
        ...     m, pairs, calibrate(m, ["Some text."]), ["fp8_e4m3/calibrated"], ("KV",)
        ... )
        >>> kv = r["schemes"]["fp8_e4m3/calibrated"]["KV"]
        >>> r["reference"]["recall_at_1"], kv["top1_agreement"]
        (1.0, 1.0)
    """
    texts = [p[0] for p in pairs] + [p[1] for p in pairs]
    n = len(pairs)
    ref = model.encode(texts, kv_hook("bf16", amax, "KV"))
    rq, rd = ref[:n], ref[n:]
    ref_sims = rq @ rd.T
    ref_top1 = ref_sims.argmax(1)

    def run(hook) -> dict[str, float]:
        e = model.encode(texts, hook)
        eq, ed = e[:n], e[n:]
        cos = (e * ref).sum(1)
        return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                **_retrieval(eq, ed, ref_top1), "sim_max_abs_diff": float((eq @ ed.T - ref_sims).abs().max())}

    report = {"reference": _retrieval(rq, rd), "fp32": run(None), "schemes": {}}
    for name in schemes:
        report["schemes"][name] = {mode: run(kv_hook(name, amax, mode)) for mode in modes}
    return report
