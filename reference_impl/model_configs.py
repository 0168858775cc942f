"""Published model configurations used by the capacity calculator, as data with their sources.

Each entry gives the attention geometry that sizes a KV cache and what is needed to estimate
weight bytes. `source` names the published configuration the values belong to; `checked`
says which copy of it was actually read for this project (the official Hugging Face files could
not be fetched from here) and what is derived rather than read. Parameter counts are *computed*
from the configuration by [`param_groups`][nvfp4_kvcache.model_configs.param_groups] and checked in tests against the published totals.

Examples:
    >>> from nvfp4_kvcache.model_configs import MODELS, param_groups
    >>> MODELS["DeepSeek-V3"].attention
    'mla'
    >>> round(sum(p for p, _ in param_groups(MODELS["Llama-3.1-8B"])) / 1e9, 2)
    8.03
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ModelConfig", "MODELS", "param_groups"]


@dataclass(frozen=True)
class ModelConfig:
    """What the capacity table needs to know about a model.

    Attributes:
        name: display name.
        attention: `"mha"` (MHA/GQA) or `"mla"`.
        num_layers: layers that hold a KV cache (`num_hidden_layers`).
        num_kv_heads, head_dim: MHA/GQA geometry (0 for MLA).
        kv_lora_rank, qk_rope_head_dim: MLA geometry (0 for MHA).
        arch: `"dense"` (Llama/Qwen-style, parameters computed), `"gpt-oss"` (computed,
            MoE experts in MXFP4) or `"published"` (`published_params` used as is).
        dims: further config values used to count parameters.
        published_params: total parameters as published (for `"published"`, and as a check).
        weight_bits: storage bits per parameter of the checkpoint (non-expert part for gpt-oss).
        source: the published configuration.
        checked: what was read to confirm the values, and what is derived.
        notes: caveats that change the numbers.
    """

    name: str
    attention: str
    num_layers: int
    num_kv_heads: int = 0
    head_dim: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    arch: str = "dense"
    dims: dict = field(default_factory=dict)
    published_params: float = 0.0
    weight_bits: float = 16.0
    source: str = ""
    checked: str = ""
    notes: str = ""


MODELS: dict[str, ModelConfig] = {
    m.name: m
    for m in (
        ModelConfig(
            name="Llama-3.1-8B",
            attention="mha",
            num_layers=32,
            num_kv_heads=8,
            head_dim=128,
            dims=dict(hidden=4096, intermediate=14336, heads=32, vocab=128256, tied=False, qk_norm=False),
            published_params=8.03e9,
            weight_bits=16,
            source="huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json",
            checked=("layers, heads 32, KV heads 8, hidden 4096, intermediate 14336, vocab 128256, untied: "
                     "read in the copy at github.com/vulkomilev/oumi configs/recipes/llama3_1/README.md; "
                     "head_dim = hidden / heads (derived); 8.03B published total (model card) matches "
                     "the computed count"),
        ),
        ModelConfig(
            name="Qwen3-32B",
            attention="mha",
            num_layers=64,
            num_kv_heads=8,
            head_dim=128,
            dims=dict(hidden=5120, intermediate=25600, heads=64, vocab=151936, tied=False, qk_norm=True),
            published_params=32.8e9,
            weight_bits=16,
            source="huggingface.co/Qwen/Qwen3-32B/blob/main/config.json",
            checked=("layers 64, Q/KV heads 64/8: Qwen3 technical report table (arXiv 2505.09388, as quoted "
                     "by emergentmind.com); head_dim 128, hidden 5120, intermediate 25600, vocab 151936, "
                     "untied: read in a third-party copy of the config (UNVERIFIED against the official "
                     "file; they only affect the weight estimate); the computed count matches the "
                     "published 32.8B"),
        ),
        ModelConfig(
            name="DeepSeek-V3",
            attention="mla",
            num_layers=61,
            kv_lora_rank=512,
            qk_rope_head_dim=64,
            arch="published",
            published_params=671e9,
            weight_bits=8,
            source="huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json",
            checked=("61 layers, 671B parameters (main model) and FP8 e4m3 weights: "
                     "github.com/deepseek-ai/DeepSeek-V3 README_WEIGHTS.md; kv_lora_rank 512, "
                     "qk_rope_head_dim 64: read in third-party copies of config.json"),
            notes=("weights estimated as 671e9 x 1 byte: the 11.5B MTP module, FP8 block scales and the "
                   "BF16 tensors (embeddings, norms, head) are not counted"),
        ),
        ModelConfig(
            name="gpt-oss-120b",
            attention="mha",
            num_layers=36,
            num_kv_heads=8,
            head_dim=64,
            arch="gpt-oss",
            dims=dict(hidden=2880, intermediate=2880, heads=64, vocab=201088, experts=128),
            published_params=117e9,
            weight_bits=16,
            source="huggingface.co/openai/gpt-oss-120b/blob/main/config.json",
            checked=("ModelConfig defaults in github.com/openai/gpt-oss gpt_oss/torch/model.py (the 120b "
                     "geometry: 36 layers, 64 heads, 8 KV heads, head_dim 64, 128 experts, hidden and "
                     "intermediate 2880, vocab 201088, sliding window 128 on even layers); MoE weights in "
                     "MXFP4: the openai/gpt-oss README; the computed count matches the published 117B"),
            notes=("half of the layers use a 128-token sliding window; the table counts all 36 layers "
                   "as full attention (what one MHATokenToKVPool for every layer allocates; a hybrid "
                   "SWA pool holds more tokens)"),
        ),
    )
}
"""Name -> configuration."""


def param_groups(model: ModelConfig) -> list[tuple[float, float]]:
    """`[(parameters, storage bits per parameter), ...]` of a model's checkpoint.

    `dense`: attention (Q, K, V, O; no biases), gated MLP, RMSNorms (plus Q/K norms for Qwen3),
    embeddings and head, all at `weight_bits`. `gpt-oss`: MoE expert weights at 4.25 bits
    (MXFP4: 4-bit elements plus one 8-bit scale per 32), everything else (attention with biases
    and sinks, router, expert biases, norms, embeddings, head) at `weight_bits`.
    `published`: `published_params` at `weight_bits`.

    Raises:
        ValueError: unknown `arch`.
    """
    d = model.dims
    if model.arch == "published":
        return [(model.published_params, model.weight_bits)]
    if model.arch == "dense":
        h, hd = d["hidden"], model.head_dim
        attn = h * d["heads"] * hd + 2 * h * model.num_kv_heads * hd + d["heads"] * hd * h
        norms = 2 * h + (2 * hd if d["qk_norm"] else 0)
        per_layer = attn + 3 * h * d["intermediate"] + norms
        embed = d["vocab"] * h * (1 if d["tied"] else 2)
        return [(model.num_layers * per_layer + embed + h, model.weight_bits)]
    if model.arch == "gpt-oss":
        h, i, e, hd = d["hidden"], d["intermediate"], d["experts"], model.head_dim
        qkv = (d["heads"] + 2 * model.num_kv_heads) * hd
        attn = h * qkv + qkv + d["heads"] * hd * h + h + d["heads"] + h
        experts = e * (2 * i * h + h * i)
        other = attn + e * (2 * i + h) + (h * e + e) + h
        return [(model.num_layers * experts, 4.25),
                (model.num_layers * other + 2 * d["vocab"] * h + h, model.weight_bits)]
    raise ValueError(f"unknown arch {model.arch!r}")
