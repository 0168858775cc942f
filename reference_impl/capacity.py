"""KV-cache capacity: bytes per token per layer, and tokens that fit on a GPU after the weights.

Per token and layer, on one tensor-parallel rank:

* MHA/GQA: `2 * heads_per_rank * head_dim` elements (K and V), `heads_per_rank =
  max(1, num_kv_heads // tp)` (SGLang 0.5.23 `ModelConfig.get_num_kv_heads` in
  `python/sglang/srt/configs/model_config.py`: KV heads split across ranks, replicated when
  there are fewer heads than ranks);
* MLA: `kv_lora_rank + qk_rope_head_dim` elements, the same on every rank (the latent has no
  head dimension to split; every rank builds the same `MLATokenToKVPool`).

Bytes for `n` elements of each KV dtype: `bf16` `2n`; `fp8_e4m3` `n` (its per-tensor
scale ignored); each FP4 recipe `n/2` plus one scale byte per block, read off the recipe
(`n/2 + n/16` for the block-16 recipes, `n/2 + n/32` for MXFP4; the float32 global scales per
layer ignored). This matches upstream's `compute_cell_size` for the FP4 recipes, without NVFP4's
optional FP8 prefill workspace.

`tokens = floor((gpu_bytes * mem_fraction - weight_bytes / tp) / (bytes_per_token_per_layer * layers))`
with the weights split evenly across ranks and `mem_fraction` the share of memory given to
weights plus KV cache (activations, CUDA graphs and workspaces take the rest). `gpu_bytes` is
the memory the card exposes (`nvidia-smi`'s `memory.total`), not the marketing figure: an
"80 GB" H100 exposes 81559 MiB, 85.5e9 bytes. Each GPU in `GPUS` cites its reading.

Command line:

```text
python -m nvfp4_kvcache.capacity --model Llama-3.1-8B --gpu H100 --kv-dtype nvfp4
```

Examples:
    >>> from nvfp4_kvcache.capacity import kv_bytes_per_token_per_layer as per_layer
    >>> from nvfp4_kvcache.capacity import tokens_that_fit
    >>> per_layer("DeepSeek-V3", "fp4_mx_block16")
    324.0
    >>> per_layer("Llama-3.1-8B", "bf16"), per_layer("Llama-3.1-8B", "nvfp4")
    (4096.0, 1152.0)
    >>> fp4 = tokens_that_fit("Llama-3.1-8B", "nvfp4", "H100")
    >>> fp4 > 3 * tokens_that_fit("Llama-3.1-8B", "bf16", "H100")
    True
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from nvfp4_kvcache.model_configs import MODELS, ModelConfig, param_groups
from nvfp4_kvcache.recipes import RECIPES, get_recipe

__all__ = [
    "KV_DTYPES",
    "GPUS",
    "DEFAULT_MEM_FRACTION",
    "KVDtype",
    "GPU",
    "CapacityRow",
    "kv_heads_per_rank",
    "kv_bytes_per_token_per_layer",
    "kv_bytes_per_token",
    "weight_bytes",
    "tokens_that_fit",
    "capacity_rows",
    "decode_step_bytes",
    "main",
]


@dataclass(frozen=True)
class KVDtype:
    """Storage of one KV element: `bits` of data plus one `scale_bits` scale per `block` elements."""

    name: str
    bits: int
    block: int | None = None
    scale_bits: int = 8

    def bytes_for(self, n: int) -> float:
        """Bytes that `n` elements take (`n` a multiple of `block`)."""
        if self.block and n % self.block:
            raise ValueError(f"{self.name}: {n} elements do not split into blocks of {self.block}")
        return n * self.bits / 8 + (n // self.block * self.scale_bits / 8 if self.block else 0)


KV_DTYPES: dict[str, KVDtype] = {
    d.name: d
    for d in (
        KVDtype("bf16", 16),
        KVDtype("fp8_e4m3", 8),
        *(KVDtype(r.name, r.element.bits, r.block_size, r.scale.bits) for r in RECIPES.values()),
    )
}
"""KV cache dtypes of the table: BF16, FP8 and every recipe of `RECIPES`. (SGLang 0.5.23
rejects `--kv-cache-dtype mxfp4`; the recipes no engine pages are here for comparison.)"""

@dataclass(frozen=True)
class GPU:
    """A GPU as the capacity table counts it.

    Attributes:
        name: short name used on the command line and in tables.
        device: the name the driver reports.
        memory_mib: memory the card exposes, `nvidia-smi --query-gpu=memory.total` in MiB.
        source: where that reading comes from.
    """

    name: str
    device: str
    memory_mib: int
    source: str

    @property
    def memory_bytes(self) -> int:
        """`memory_mib` in bytes (MiB = 2**20 bytes)."""
        return self.memory_mib * 2**20


GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU("H100", "NVIDIA H100 80GB HBM3", 81559,
            "nvidia-smi output in NVIDIA/nccl issue #1264 (driver 550.54.15): 81559MiB per GPU"),
        GPU("H200", "NVIDIA H200", 143771,
            "this project's reading, docs/data/capacity/gpu_memory_h200.json (driver 580.159.04)"),
        GPU("B200", "NVIDIA B200", 183359,
            "nvidia-smi output in NVIDIA/TensorRT-LLM issue #10278 (driver 580.95.05): 183359MiB per GPU"),
    )
}
"""GPU name -> `GPU`: the memory each card exposes, with its source (not the nominal 80/141/180 GB)."""

DEFAULT_MEM_FRACTION = 0.9
"""Share of GPU memory for weights plus KV cache. This project's assumption, not an SGLang default."""


def _model(model: str | ModelConfig) -> ModelConfig:
    if isinstance(model, ModelConfig):
        return model
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known: {sorted(MODELS)}") from None


def _dtype(kv_dtype: str) -> KVDtype:
    try:
        return KV_DTYPES[kv_dtype]
    except KeyError:
        raise ValueError(f"unknown KV dtype {kv_dtype!r}; known: {list(KV_DTYPES)}") from None


def _tp(tp: int) -> int:
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ValueError(f"tp must be a positive int, got {tp!r}")
    return tp


def kv_heads_per_rank(model: str | ModelConfig, tp: int = 1) -> int:
    """KV heads one rank stores: `max(1, num_kv_heads // tp)` (MHA); 1 latent "head" for MLA.

    Examples:
        >>> [kv_heads_per_rank("Llama-3.1-8B", tp=t) for t in (2, 16)]
        [4, 1]
    """
    m = _model(model)
    return 1 if m.attention == "mla" else max(1, m.num_kv_heads // _tp(tp))


def kv_bytes_per_token_per_layer(model: str | ModelConfig, kv_dtype: str, tp: int = 1) -> float:
    """KV bytes of one token in one layer on one rank (K and V for MHA, the latent for MLA).

    Raises:
        ValueError: unknown model or dtype, bad `tp`.
    """
    m, d = _model(model), _dtype(kv_dtype)
    if m.attention == "mla":
        return d.bytes_for(m.kv_lora_rank) + d.bytes_for(m.qk_rope_head_dim)
    return 2 * kv_heads_per_rank(m, tp) * d.bytes_for(m.head_dim)


def kv_bytes_per_token(
    model: str | ModelConfig, kv_dtype: str, tp: int = 1, nvfp4_prefill_workspace: bool = False
) -> float:
    """KV bytes of one token over all layers, on one rank.

    Args:
        nvfp4_prefill_workspace: MHA with a two-level (global-scale) recipe only: add the FP8 E4M3
            K/V workspace that SGLang allocates once for all layers when prefill runs FlashInfer
            on dequantized KV (`2 * heads_per_rank * head_dim` bytes per token;
            `NVFP4KVCacheMethod.compute_cell_size`).

    Raises:
        ValueError: unknown model or dtype, bad `tp`, or a workspace asked for another dtype/MLA.

    Examples:
        >>> kv_bytes_per_token("DeepSeek-V3", "fp4_mx_block16")   # 61 layers x 324
        19764.0
        >>> kv_bytes_per_token("Llama-3.1-8B", "nvfp4",
        ...                    nvfp4_prefill_workspace=True)  # 32 x 1152 + 2048
        38912.0
    """
    m = _model(model)
    total = m.num_layers * kv_bytes_per_token_per_layer(m, kv_dtype, tp)
    if nvfp4_prefill_workspace:
        if kv_dtype not in RECIPES or get_recipe(kv_dtype).global_scale is None or m.attention != "mha":
            raise ValueError(f"the NVFP4 prefill workspace exists for MHA pools of a recipe with a global scale; got {kv_dtype!r}")
        total += 2 * kv_heads_per_rank(m, tp) * m.head_dim
    return total


def weight_bytes(model: str | ModelConfig) -> float:
    """Estimated checkpoint bytes (all ranks together), from [`param_groups`][nvfp4_kvcache.capacity.param_groups].

    Examples:
        >>> round(weight_bytes("Llama-3.1-8B") / 1e9, 2)      # 8.03e9 bf16 parameters
        16.06
    """
    return sum(p * bits / 8 for p, bits in param_groups(_model(model)))


def tokens_that_fit(
    model: str | ModelConfig,
    kv_dtype: str,
    gpu: str,
    tp: int = 1,
    mem_fraction: float = DEFAULT_MEM_FRACTION,
    nvfp4_prefill_workspace: bool = False,
) -> int:
    """KV tokens one rank can hold (the pool's `size`); 0 when the weights alone do not fit.

    `nvfp4_prefill_workspace` as in [`kv_bytes_per_token`][nvfp4_kvcache.capacity.kv_bytes_per_token].

    Raises:
        ValueError: unknown model, dtype or GPU; `mem_fraction` outside `(0, 1]`; bad `tp`.

    Examples:
        >>> tokens_that_fit("DeepSeek-V3", "nvfp4", "H100", tp=8)  # weights do not fit
        0
    """
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {list(GPUS)}")
    if not 0 < mem_fraction <= 1:
        raise ValueError(f"mem_fraction must be in (0, 1], got {mem_fraction}")
    free = GPUS[gpu].memory_bytes * mem_fraction - weight_bytes(model) / _tp(tp)
    per_token = kv_bytes_per_token(model, kv_dtype, tp, nvfp4_prefill_workspace)
    return max(0, math.floor(free / per_token))


def decode_step_bytes(
    model: str | ModelConfig, kv_dtype: str, pool_tokens: int, batch: int, context: int,
    tp: int = 1, page_size: int = 1,
) -> tuple[float, float]:
    """Memory traffic of one decode step on one rank, read two ways.

    * whole-layer dequantize (what upstream's `get_key_buffer` / `get_value_buffer` do for
      `fp4_mx_block16`): every row of the pool (`pool_tokens + page_size`, the padding page
      included) is read in `kv_dtype` and written back as BF16, in every layer;
    * fused gather (what an FP4 attention kernel does): only the `batch * context` rows the
      batch attends to are read, in `kv_dtype`.

    Attention's own reads of the BF16 rows it needs are left out, which favours the first.

    Returns:
        `(whole_layer_bytes, fused_bytes)`.

    Raises:
        ValueError: unknown model or dtype, bad `tp`.

    Examples:
        >>> whole, fused = decode_step_bytes(
        ...     "Llama-3.1-8B", "fp4_mx_block16", 100_000, batch=8, context=1024)
        >>> round(whole / fused)
        56
    """
    m = _model(model)
    stored = kv_bytes_per_token_per_layer(m, kv_dtype, tp)
    bf16 = kv_bytes_per_token_per_layer(m, "bf16", tp)
    whole = m.num_layers * (pool_tokens + page_size) * (stored + bf16)
    fused = m.num_layers * batch * context * stored
    return whole, fused


@dataclass(frozen=True)
class CapacityRow:
    """One row of the capacity table."""

    model: str
    tp: int
    gpu: str
    kv_dtype: str
    bytes_per_token_per_layer: float
    weight_gb_per_gpu: float
    tokens: int


DEFAULT_TP: dict[str, int] = {"Llama-3.1-8B": 1, "Qwen3-32B": 1, "gpt-oss-120b": 1, "DeepSeek-V3": 8}
"""Tensor-parallel size per model in the site's table (DeepSeek-V3 needs a whole node)."""


def capacity_rows(
    models: list[str] | None = None,
    gpus: list[str] | None = None,
    kv_dtypes: list[str] | None = None,
    tp: dict[str, int] | None = None,
    mem_fraction: float = DEFAULT_MEM_FRACTION,
) -> list[CapacityRow]:
    """Every model x GPU x KV dtype combination (defaults: all), tokens per rank.

    Examples:
        >>> rows = capacity_rows(["Qwen3-32B"], ["H100"], ["bf16", "nvfp4"])
        >>> [(r.kv_dtype, r.tokens) for r in rows]
        [('bf16', 43657), ('nvfp4', 155225)]
    """
    tp = {**DEFAULT_TP, **(tp or {})}
    rows = []
    for name in models or list(MODELS):
        t = tp.get(name, 1)
        for gpu in gpus or list(GPUS):
            for dt in kv_dtypes or list(KV_DTYPES):
                rows.append(CapacityRow(
                    model=name, tp=t, gpu=gpu, kv_dtype=dt,
                    bytes_per_token_per_layer=kv_bytes_per_token_per_layer(name, dt, t),
                    weight_gb_per_gpu=weight_bytes(name) / t / 1e9,
                    tokens=tokens_that_fit(name, dt, gpu, t, mem_fraction),
                ))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line: print a Markdown table of capacity rows (filters optional).

    Examples:
        >>> main(["--model", "Llama-3.1-8B", "--gpu", "H200", "--kv-dtype", "nvfp4",
        ...       "--tp", "2"])
        | model | TP | GPU | KV dtype | bytes/token/layer | weights GB/GPU | tokens/GPU |
        |---|---:|---|---|---:|---:|---:|
        | Llama-3.1-8B | 2 | H200 | nvfp4 | 576 | 8.0 | 6,925,405 |
        0
    """
    parser = argparse.ArgumentParser(prog="python -m nvfp4_kvcache.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", choices=sorted(MODELS), help="repeatable; default all")
    parser.add_argument("--gpu", action="append", choices=list(GPUS), help="repeatable; default all")
    parser.add_argument("--kv-dtype", action="append", choices=list(KV_DTYPES), help="repeatable; default all")
    parser.add_argument("--tp", type=int, default=None, help="tensor-parallel size for every model")
    parser.add_argument("--mem-fraction", type=float, default=DEFAULT_MEM_FRACTION)
    args = parser.parse_args(argv)
    models = args.model or list(MODELS)
    tp = {m: args.tp for m in models} if args.tp else None
    try:
        rows = capacity_rows(models, args.gpu, args.kv_dtype, tp, args.mem_fraction)
    except ValueError as exc:
        parser.error(str(exc))
    print("| model | TP | GPU | KV dtype | bytes/token/layer | weights GB/GPU | tokens/GPU |")
    print("|---|---:|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r.model} | {r.tp} | {r.gpu} | {r.kv_dtype} | {r.bytes_per_token_per_layer:g} | "
              f"{r.weight_gb_per_gpu:.1f} | {r.tokens:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
