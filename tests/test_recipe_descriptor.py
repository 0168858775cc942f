"""The recipe descriptor: every other table is derived from it, and code asks for capabilities, not names."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # before triton is imported anywhere
    os.environ.setdefault("TRITON_INTERPRET", "1")

from nvfp4_kvcache.accuracy.schemes import FP4_SCHEMES, SCHEMES
from nvfp4_kvcache.capacity import KV_DTYPES
from nvfp4_kvcache.pool import POOL_RECIPES, MHATokenToKVPoolFP4, mha_layout
from nvfp4_kvcache.recipes import RECIPES, PoolScaleLayout

ROOT = Path(__file__).resolve().parents[1]


def test_registry_is_keyed_by_name_and_kernel_ids_are_unique():
    assert all(name == r.name for name, r in RECIPES.items())
    assert len({r.kernel_id for r in RECIPES.values()}) == len(RECIPES)


def test_kernel_recipe_ids_are_the_descriptors():
    from nvfp4_kvcache_triton._triton.constants import RECIPE_IDS, scale_id

    assert RECIPE_IDS == {r.name: r.kernel_id for r in RECIPES.values()}
    # one dequantize decoder per scale format: recipes sharing a format share it
    by_format = {}
    for r in RECIPES.values():
        assert by_format.setdefault(r.scale.name, scale_id(r)) == scale_id(r)
    assert len(set(by_format.values())) == len(by_format)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_bits_per_value_come_from_the_formats(name):
    r = RECIPES[name]
    assert r.bits_per_value == r.element.bits + 8 / r.block_size
    n = 4 * r.block_size
    assert KV_DTYPES[name].bytes_for(n) * 8 / n == r.bits_per_value


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_has_accuracy_schemes(name):
    r = RECIPES[name]
    mine = [s for s in FP4_SCHEMES if s == name or s.startswith(name + "/")]
    assert len(mine) == (3 if r.global_scale is not None else 1)
    for s in mine:
        assert SCHEMES[s].bits_per_value == r.bits_per_value and SCHEMES[s].block == r.block_size
        assert SCHEMES[s].uses_amax == s.endswith(("amax6x448", "amax448"))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_pools_accept_exactly_the_recipes_with_a_scale_layout(name):
    r = RECIPES[name]
    assert (name in POOL_RECIPES) == (r.pool_scale_layout is not None)
    if r.pool_scale_layout is None:
        with pytest.raises(ValueError, match="the FP4 pools store recipes"):
            mha_layout(2, 64, name)
        return
    shape = mha_layout(2, 64, name).scale_shape(rows=3)
    nb = 64 // r.block_size
    assert shape == ((3, 2, nb) if r.pool_scale_layout is PoolScaleLayout.PER_HEAD else (3, 2 * nb))
    pool = MHATokenToKVPoolFP4(size=4, page_size=1, layer_num=1, head_num=2, head_dim=64, recipe=name)
    assert (pool.k_scales is not None) == (r.global_scale is not None)
    ks = pool.get_raw_kv_buffer(0)[2]
    assert ks.dtype == (r.scale.torch_dtype or torch.uint8)


_NAMES = "|".join(re.escape(n) for n in sorted(RECIPES, key=len, reverse=True))
_COMPARISON = re.compile(rf"""(==|!=|\bin\b|\bnot in\b)\s*\(?\s*["']({_NAMES})["']|["']({_NAMES})["']\s*(==|!=)""")


def test_no_recipe_name_comparisons_in_the_code():
    """Capabilities, not names: no `== "nvfp4"` (or `in ("nvfp4", ...)`) in the packages.

    Scripts that measure named recipes on a GPU and the docstrings' examples may name recipes;
    the packages decide by what a recipe declares.
    """
    offenders = []
    for folder in ("reference_impl", "kernels"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if code.lstrip().startswith((">>>", "...")):
                    continue
                if _COMPARISON.search(code):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_name_check_catches_a_comparison():
    assert _COMPARISON.search('if recipe == "nvfp4":')
    assert _COMPARISON.search("if name in ('fp4_mx_block16', 'nvfp4'):")
    assert not _COMPARISON.search("if recipe.global_scale is not None:")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_decode_attention_reads_every_recipe_its_formats_decode(name):
    """The kernel's KV formats are read off the recipes: a block-16 recipe with an E4M3 or a
    power-of-two block-16 scale is read (and agrees with the oracle); any other is refused."""
    from nvfp4_kvcache.attention import decode_attention
    from nvfp4_kvcache_triton._triton.decode_attention import FMT_IDS
    from nvfp4_kvcache_triton.decode_attention import FP4KVLayer, decode_attention_fp4

    r = RECIPES[name]
    readable = r.block_size == 16 and r.scale.name in ("E4M3", "UE8M0 (block16)")
    assert (name in FMT_IDS) == readable
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs under Triton's interpreter (the decode-attention GPU tests cover CUDA)")
    device = "cpu"
    if not readable:
        t = torch.zeros(4, 1, 32, dtype=torch.uint8)
        s = torch.zeros(4, 1, 64 // r.block_size, dtype=torch.uint8)
        with pytest.raises(ValueError, match="recipe must be one of"):
            decode_attention_fp4(torch.zeros(1, 1, 64), FP4KVLayer(t, t, s, s, name), None,
                                 torch.tensor([0, 1]), torch.tensor([1]))
        return
    kw = {"k_scales": [0.5], "v_scales": [2.0]} if r.global_scale is not None else {}
    pool = MHATokenToKVPoolFP4(size=32, page_size=16, layer_num=1, head_num=2, head_dim=64, recipe=name,
                               device=device, **kw)
    gen = torch.Generator().manual_seed(0)
    pool.set_kv_buffer(0, torch.arange(16, 36, device=device), torch.randn(20, 2, 64, generator=gen).to(device),
                       torch.randn(20, 2, 64, generator=gen).to(device))
    q = torch.randn(2, 8, 64, generator=gen).to(device)
    indptr, idx = torch.tensor([0, 5, 20], device=device), torch.arange(16, 36, device=device)
    out = decode_attention_fp4(q, pool, 0, indptr, idx, num_kv_splits=2)
    ref = decode_attention(q, pool, 0, indptr, idx)
    assert (out.double() - ref).abs().max() < 1e-3
