"""Launchers of the Triton FP4 kernels (`nvfp4_kvcache_triton.launch`): same signatures, shapes and errors as their PyTorch twins.

| function | what | twin |
|---|---|---|
| [`quantize`][nvfp4_kvcache_triton.launch.quantize] | `x[..., N]` -> [`FP4Quantized`][nvfp4_kvcache.recipes.FP4Quantized] | `nvfp4_kvcache.quantize` |
| [`dequantize`][nvfp4_kvcache_triton.launch.dequantize] | [`FP4Quantized`][nvfp4_kvcache.recipes.FP4Quantized] -> `dtype[..., N]` | `nvfp4_kvcache.dequantize` |
| [`dequantize_parts`][nvfp4_kvcache_triton.launch.dequantize_parts] | loose `packed` + `scales` -> values | `Recipe.dequantize_parts` |
| [`gather_dequantize`][nvfp4_kvcache_triton.launch.gather_dequantize] | slots `loc` of a pool layer -> `[n, H, D]` | [`nvfp4_kvcache_triton.reference`][nvfp4_kvcache_triton.reference] |
| [`store_kv`][nvfp4_kvcache_triton.launch.store_kv] | quantize K and V and scatter them into a pool layer | [`nvfp4_kvcache_triton.reference`][nvfp4_kvcache_triton.reference] |

Every recipe of `nvfp4_kvcache.recipes.RECIPES` runs here: the quantize kernel branches on the
recipe's `kernel_id`, the dequantize kernel on its scale format.

Tensors must be on a CUDA device, or on the CPU with `TRITON_INTERPRET=1` set before Triton is
imported (Triton's interpreter, which CI uses).
"""

from __future__ import annotations

import functools

import torch
import triton

from nvfp4_kvcache_triton import _checks
from nvfp4_kvcache_triton._triton import fp4
from nvfp4_kvcache_triton._triton.constants import RECIPE_IDS, scale_id
from nvfp4_kvcache.checks import check_float_input
from nvfp4_kvcache.recipes import FP4Quantized, Recipe, get_recipe

__all__ = ["quantize", "dequantize", "dequantize_parts", "gather_dequantize", "store_kv", "TUNING",
           "DEVICE_LAUNCHES", "device_launch"]

TUNING: dict[str, int] = {
    # the four defaults serve GPUs and recipes that `DEVICE_LAUNCHES` does not list: a quantize
    # tile of one 1024-element row over 4 warps (8 elements per thread) compiles without register
    # spills for every recipe, the 4-over-6 search included (scripts/compile_sm90.py checks)
    "quantize_elems": 1024,    # elements per program (quantize and store)
    "quantize_warps": 4,
    "dequantize_elems": 2048,  # elements per program (dequantize)
    "dequantize_warps": 8,
    "gather_elems": 2048,      # elements per program (gather_dequantize: each row's slot is read first)
    "gather_warps": 8,
    "max_row": 1024,           # longest row a flat (contiguous) tensor is cut into
    "interpret_elems": 65536,  # under the interpreter: fewer, larger programs
}
"""Default tile sizes and warps, for a GPU or recipe without an entry in
[`DEVICE_LAUNCHES`][nvfp4_kvcache_triton.launch.DEVICE_LAUNCHES]. A key
`"{kind}_elems:{recipe}"` / `"{kind}_warps:{recipe}"` (kind `quantize`, `dequantize` or `gather`) set here
overrides the table on every GPU (the benchmark's tuning sweep sets them). Under the interpreter
only `interpret_elems` counts."""

DEVICE_LAUNCHES: dict[str, dict[str, dict[str, int]]] = {
    "NVIDIA H100 80GB HBM3": {
        "quantize:nvfp4": {"elems": 1024, "warps": 1},
        "quantize:fp4_mx_block16": {"elems": 1024, "warps": 1},
        "quantize:mxfp4": {"elems": 2048, "warps": 1},
        "dequantize:nvfp4": {"elems": 1024, "warps": 4},
        "dequantize:fp4_mx_block16": {"elems": 2048, "warps": 8},
        "dequantize:mxfp4": {"elems": 2048, "warps": 8},
    },
    "NVIDIA H200": {
        "quantize:fp4_mx_block16": {"elems": 2048, "warps": 1},
        "quantize:nvfp4": {"elems": 4096, "warps": 2},
        "quantize:mxfp4": {"elems": 2048, "warps": 1},
        "quantize:mxfp4_rceil": {"elems": 2048, "warps": 1},
        "quantize:nvfp4_4over6": {"elems": 2048, "warps": 4},
        "dequantize:fp4_mx_block16": {"elems": 8192, "warps": 8},
        "dequantize:nvfp4": {"elems": 4096, "warps": 4},
        "dequantize:mxfp4": {"elems": 8192, "warps": 8},
        "dequantize:mxfp4_rceil": {"elems": 8192, "warps": 8},
        "dequantize:nvfp4_4over6": {"elems": 4096, "warps": 4},
        "gather:fp4_mx_block16": {"elems": 2048, "warps": 2},
        "gather:nvfp4": {"elems": 2048, "warps": 2},
        "gather:mxfp4": {"elems": 2048, "warps": 2},
        "gather:mxfp4_rceil": {"elems": 2048, "warps": 2},
        "gather:nvfp4_4over6": {"elems": 8192, "warps": 4},
    },
}
"""Fastest launch per GPU model (`torch.cuda.get_device_name()`) and `"{kind}:{recipe}"` (kind
`quantize`, which also serves `store_kv`; `dequantize`; or `gather`, the dequantize kernel reading
slots, as `gather_dequantize` does, whose loads wait for the slot's):
elements per program and warps, the winners of the tuning sweep that `scripts/bench_quant_kernels.py`
ran on that GPU (`store_kv` and `dequantize` at 131072 tokens x 8 heads x 128, bf16).
`tests/test_quant_kernels_launches.py` checks every entry against the committed benchmark data of
that GPU; `python scripts/bench_quant_kernels.py --launch-table PATH` prints the entry of a finished
run. A GPU without a `gather` entry for a recipe gathers with its `dequantize` entry; a GPU or
recipe not listed gets the defaults of
[`TUNING`][nvfp4_kvcache_triton.launch.TUNING]."""

_KINDS = ("quantize", "dequantize", "gather")


def device_launch(device: torch.device | str | None, kind: str, recipe: str) -> dict[str, int]:
    """The launch [`DEVICE_LAUNCHES`][nvfp4_kvcache_triton.launch.DEVICE_LAUNCHES] lists for this
    GPU, kernel kind and recipe, else `{}` (the launcher then uses
    [`TUNING`][nvfp4_kvcache_triton.launch.TUNING]).

    Args:
        device: a CUDA device (its name is looked up); a CPU device or `None` gives `{}`.
        kind: `"quantize"` (quantize and `store_kv`), `"dequantize"` or `"gather"` (`gather_dequantize`).
        recipe: a recipe name.

    Returns:
        `{"elems": elements per program, "warps": warps}`, or `{}`.

    Raises:
        ValueError: an unknown kind.

    Examples:
        >>> device_launch("cpu", "quantize", "nvfp4")
        {}
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda":
        return {}
    return dict(DEVICE_LAUNCHES.get(_device_name(dev.index), {}).get(f"{kind}:{recipe}", {}))


@functools.lru_cache(maxsize=None)
def _device_name(index: int | None) -> str:
    return torch.cuda.get_device_name(index)


def launch_params(kind: str, recipe: str, device: torch.device | str | None = None) -> tuple[int, int]:
    """(elements per program, warps) the launcher uses on `device`: a `TUNING` override for the
    kind and recipe, else the GPU's `DEVICE_LAUNCHES` entry (for `gather`, its `dequantize` entry
    when it has no `gather` one), else the `TUNING` defaults of the kind."""
    entry = device_launch(device, kind, recipe)
    if not entry and kind == "gather":
        entry = device_launch(device, "dequantize", recipe)
    elems = TUNING.get(f"{kind}_elems:{recipe}", entry.get("elems", TUNING[f"{kind}_elems"]))
    warps = TUNING.get(f"{kind}_warps:{recipe}", entry.get("warps", TUNING[f"{kind}_warps"]))
    return elems, warps


_OUT_KIND = {torch.float32: fp4.OUT_F32, torch.bfloat16: fp4.OUT_BF16, torch.float16: fp4.OUT_F16,
             torch.float64: fp4.OUT_F64}
_DUMMY: dict[torch.device, torch.Tensor] = {}


_interpreting = _checks.interpreting
_check_device = _checks.check_kernel_device


def _dummy(device: torch.device) -> torch.Tensor:
    if device not in _DUMMY:
        _DUMMY[device] = torch.ones(1, dtype=torch.float32, device=device)
    return _DUMMY[device]


def _tile(row: int, n_rows: int, kind: str, recipe: str, device: torch.device) -> tuple[int, int, int]:
    """(ROWP, TOK, num_warps) for rows of `row` elements on `device` (see `launch_params`)."""
    rowp = triton.next_power_of_2(row)
    elems, warps = launch_params(kind, recipe, device)
    if _interpreting():
        elems = TUNING["interpret_elems"]
    tok = max(1, elems // rowp)
    tok = min(tok, triton.next_power_of_2(max(n_rows, 1)))
    return rowp, tok, warps


def _flat_row(n_elems: int, block: int) -> int:
    """Longest row `block * 2**j` (<= max_row) that cuts a flat tensor of `n_elems` evenly."""
    row = block
    while row * 2 <= max(TUNING["max_row"], block) and n_elems % (row * 2) == 0:
        row *= 2
    return row


def _input_rows(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(tensor the kernel reads, its row stride in its own elements, IN_KIND) for a 2-D row view.

    16-bit inputs are read as int32 words (two elements each), which needs an even row stride and
    a 4-byte aligned start; otherwise the rows are copied to a contiguous tensor first.
    """
    if x.dtype == torch.float32:
        return x, x.stride(0), fp4.IN_F32.value
    if x.stride(0) % 2 or x.storage_offset() % 2 or x.data_ptr() % 4:
        x = x.contiguous()
    words = x.as_strided((x.shape[0], x.shape[1]), (x.stride(0), 1))
    kind = fp4.IN_BF16.value if x.dtype == torch.bfloat16 else fp4.IN_F16.value
    return _word_view(words), x.stride(0) // 2, kind


def _word_view(x: torch.Tensor) -> torch.Tensor:
    """Rows `[t, n]` of a 16-bit tensor (even row stride and offset) as int32 words `[t, n // 2]`."""
    t, n = x.shape
    w = torch.empty(0, dtype=torch.int32, device=x.device)
    return w.set_(x.untyped_storage(), x.storage_offset() // 2, (t, n // 2), (x.stride(0) // 2, 1))


def _launch_quantize(recipe: Recipe, pairs, loc, n_rows: int, row: int) -> None:
    """`pairs`: one or two `(x2d, packed, scales, g)`; row `r` of `x2d` -> slot `loc[r]`."""
    rowp, tok, warps = _tile(row, n_rows, "quantize", recipe.name, pairs[0][0].device)
    args = []
    for x, packed, scales, g in pairs:
        xr, x_stride, in_kind = _input_rows(x)
        args += [xr, x_stride, packed, packed.stride(0), scales, scales.stride(0),
                 g if g is not None else _dummy(x.device)]
    if len(pairs) == 1:
        args += args[:7]
    grid = (triton.cdiv(n_rows, tok), len(pairs))
    fp4.quantize_kernel[grid](
        *args, loc if loc is not None else pairs[0][1], n_rows,
        RECIPE=RECIPE_IDS[recipe.name], BS=recipe.block_size, ROW=row, ROWP=rowp, TOK=tok,
        IN_KIND=in_kind, HAS_LOC=loc is not None, HW_FMA=not _interpreting(), num_warps=warps,
    )


def _launch_dequantize(recipe: Recipe, packed, p_stride, scales, s_stride, g, loc, out, n_rows, row):
    rowp, tok, warps = _tile(row, n_rows, "dequantize" if loc is None else "gather", recipe.name, packed.device)
    # 16-bit outputs are written as int32 words, two elements each (out is contiguous, row even)
    out_view = out.view(torch.int16).view(torch.int32) if out.element_size() == 2 else out
    grid = (triton.cdiv(n_rows, tok),)
    fp4.dequantize_kernel[grid](
        packed, p_stride, scales, s_stride, g if g is not None else _dummy(packed.device),
        loc if loc is not None else packed, out_view, n_rows,
        SCALE=scale_id(recipe), BS=recipe.block_size, ROW=row, ROWP=rowp, TOK=tok,
        OUT_KIND=_OUT_KIND[out.dtype], HAS_LOC=loc is not None, HW_CAST=not _interpreting(),
        num_warps=warps,
    )


def quantize(x: torch.Tensor, recipe: str | Recipe, *, global_scale: object = None) -> FP4Quantized:
    """Quantize `x[..., N]` with a recipe: bit for bit [`nvfp4_kvcache.quantize`][nvfp4_kvcache.quantize].

    Args:
        x: `float32`, `bfloat16` or `float16`, `N` a multiple of the recipe's block size;
            any strides (a non-contiguous `x` is copied first).
        recipe: a name of `RECIPES` (or a [`Recipe`][nvfp4_kvcache.recipes.Recipe]).
        global_scale: recipes with a global scale only: the `float32` decode multiplier (a float or a 1-element
            `float32` tensor; a CUDA tensor's value is not checked, which would synchronise).

    Returns:
        [`FP4Quantized`][nvfp4_kvcache.recipes.FP4Quantized]: `packed` `uint8 [..., N // 2]`, `scales` `uint8 [..., N // B]`.

    Raises:
        TypeError, ValueError: as [`nvfp4_kvcache.quantize`][nvfp4_kvcache.quantize]; also for a tensor on a device
            the kernels cannot reach.
    """
    r = get_recipe(recipe)
    check_float_input(x, "x", r.block_size)
    g = _checks.check_scale_tensor(r, global_scale, x.device)
    _check_device(x, "x")
    n = x.shape[-1]
    lead = x.shape[:-1]
    packed = torch.empty(*lead, n // 2, dtype=torch.uint8, device=x.device)
    scales = torch.empty(*lead, n // r.block_size, dtype=torch.uint8, device=x.device)
    if x.numel():
        xc = x.detach().contiguous()
        row = _flat_row(xc.numel(), r.block_size)
        n_rows = xc.numel() // row
        _launch_quantize(
            r, [(xc.view(n_rows, row), packed.view(n_rows, row // 2), scales.view(n_rows, row // r.block_size), g)],
            None, n_rows, row,
        )
    return FP4Quantized(packed=packed, scales=scales, recipe=r.name, global_scale=g)


def dequantize_parts(
    packed: torch.Tensor,
    scales: torch.Tensor,
    recipe: str | Recipe,
    global_scale: object = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Decode loose `packed [..., N/2]` + `scales [..., N/B]`: bit for bit `Recipe.dequantize_parts`.

    Every value is computed in `float32` and rounded once (to nearest even) to `dtype`.
    """
    r = get_recipe(recipe)
    g = _checks.check_dequantize_parts(r, packed, scales, global_scale, dtype)
    _check_device(packed, "packed")
    n = packed.shape[-1] * 2
    out = torch.empty(*packed.shape[:-1], n, dtype=dtype, device=packed.device)
    if packed.numel():
        pc, sc = packed.contiguous(), scales.contiguous()
        row = _flat_row(pc.numel() * 2, r.block_size)
        n_rows = pc.numel() * 2 // row
        _launch_dequantize(r, pc, row // 2, sc, row // r.block_size, g, None, out, n_rows, row)
    return out


def dequantize(q: FP4Quantized, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode an [`FP4Quantized`][nvfp4_kvcache.recipes.FP4Quantized] with the recipe that made it (as [`nvfp4_kvcache.dequantize`][nvfp4_kvcache.dequantize])."""
    return dequantize_parts(q.packed, q.scales, q.recipe, q.global_scale, dtype)


def gather_dequantize(
    packed: torch.Tensor,
    scales: torch.Tensor,
    loc: torch.Tensor,
    recipe: str | Recipe,
    global_scale: object = None,
    dtype: torch.dtype = torch.float32,
    *,
    check_slots: bool = True,
) -> torch.Tensor:
    """Decode the slots `loc` of one pool layer.

    Args:
        packed: `uint8 [slots, H, D/2]` (each slot contiguous).
        scales: `uint8 [slots, H*D/B]` or `[slots, H, D/B]`.
        loc: `int32`/`int64 [n]` slot indices in `[0, slots)`.
        recipe: as [`dequantize_parts`][nvfp4_kvcache_triton.launch.dequantize_parts].
        global_scale: as [`dequantize_parts`][nvfp4_kvcache_triton.launch.dequantize_parts].
        dtype: output dtype.
        check_slots: check that every slot is in range (reads `loc`, which synchronises a GPU;
            pass `False` inside CUDA-graph capture, where the caller guarantees the slots).

    Raises:
        IndexError: a slot out of range (with `check_slots`).

    Returns:
        `dtype [n, H, D]`, row `i` decoded from slot `loc[i]`.
    """
    r = get_recipe(recipe)
    h, d = _checks.check_pool_layer(r, packed, scales, "pool")
    _checks.check_loc(loc, None, packed.device)
    if check_slots:
        _checks.check_slots(loc, packed.shape[0], unique=False)
    g = _checks.check_dequantize_parts(r, packed[:0], scales[:0].reshape(0, h, d // r.block_size),
                                       global_scale, dtype)
    _check_device(packed, "packed")
    out = torch.empty(loc.numel(), h, d, dtype=dtype, device=packed.device)
    if loc.numel():
        _launch_dequantize(r, packed, packed.stride(0), scales, scales.stride(0), g, loc, out, loc.numel(), h * d)
    return out


def store_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    loc: torch.Tensor,
    k_data: torch.Tensor,
    v_data: torch.Tensor,
    k_scales: torch.Tensor,
    v_scales: torch.Tensor,
    recipe: str | Recipe,
    k_global_scale: object = None,
    v_global_scale: object = None,
    *,
    check_slots: bool = True,
) -> None:
    """Quantize K and V and write them to slots `loc` of one pool layer, in one launch.

    Byte for byte `k_data[loc] = quantize(k).packed`, `k_scales[loc] = quantize(k).scales`
    (reshaped to the buffer's layout), and the same for V.

    Args:
        k: `[tokens, H, D]` float32/bfloat16/float16; each token's `[H, D]` contiguous
            (a strided slice of a fused QKV output is fine).
        v: same shape and dtype as `k`.
        loc: `int32`/`int64 [tokens]` destination slots in `[0, slots)`, distinct except
            the padding slot 0.
        k_data: `uint8 [slots, H, D/2]`.
        v_data: like `k_data`.
        k_scales: `uint8 [slots, H*D/B]` (SGLang's fp4_mx_block16 layout) or
            `[slots, H, D/B]` (its nvfp4 layout).
        v_scales: like `k_scales`.
        recipe: recipe name or object.
        k_global_scale: recipes with a global scale only: `float32` decode multiplier of K. A tensor's value is
            not checked here (reading it would synchronise the device).
        v_global_scale: the same for V.
        check_slots: check the slots (range, no repeats) before writing anything. It reads
            `loc`, which synchronises a GPU: pass `False` inside CUDA-graph capture, where the
            caller guarantees valid slots (an out-of-range slot then writes out of bounds).

    Raises:
        TypeError, ValueError, IndexError: bad arguments; nothing is written then.
    """
    r = get_recipe(recipe)
    gk, gv = _checks.check_store_call(r, k, v, loc, k_data, v_data, k_scales, v_scales,
                                      k_global_scale, v_global_scale, check_slots)
    _check_device(k, "k")
    t, h, d = k.shape
    if t == 0:
        return

    def rows(x):
        if x.stride(2) != 1 or x.stride(1) != d:
            x = x.contiguous()
        return x.detach().as_strided((t, h * d), (x.stride(0), 1))

    _launch_quantize(r, [(rows(k), k_data, k_scales, gk), (rows(v), v_data, v_scales, gv)], loc, t, h * d)
