"""The lab's schemes: exact on representable values, the same bytes as the pool, and the g = 1 flush."""

import pytest
import torch

from nvfp4_kvcache.accuracy.schemes import FP4_SCHEMES, SCHEMES, bf16_round
from nvfp4_kvcache.accuracy.distributions import generate
from nvfp4_kvcache.accuracy.metrics import flush_to_zero_fraction, sqnr_db
from nvfp4_kvcache.pool import MHATokenToKVPoolFP4
from nvfp4_kvcache.recipes import RECIPES, get_recipe, nvfp4_global_scale

GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _grid_tensor() -> torch.Tensor:
    """Every 16-element block holds E2M1 values with block max exactly 6 (a scale of 1 in every recipe)."""
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 8, (8, 2, 64), generator=g)
    sign = torch.where(torch.rand(8, 2, 64, generator=g) < 0.5, -1.0, 1.0)
    x = GRID[codes] * sign
    x[..., ::16] = 6.0
    return x


# calibration amax that makes every per-tensor scale exactly 1
AMAX_FOR_UNIT_SCALE = {"fp8_e4m3/calibrated": 448.0,
                       **{n: 448.0 for n in SCHEMES if n.endswith("/amax448")},
                       **{n: 6 * 448.0 for n in SCHEMES if n.endswith("/amax6x448")}}


@pytest.mark.parametrize("name", [n for n in SCHEMES if n != "int4_g32"])
def test_representable_values_are_exact(name):
    x = _grid_tensor()
    out = SCHEMES[name].fake_quantize(x, AMAX_FOR_UNIT_SCALE.get(name))
    assert torch.equal(out, x)
    assert sqnr_db(x, out) == float("inf")


def test_int4_exact_on_its_grid():
    x = torch.arange(16.0).repeat(2)[None].repeat(3, 1)   # min 0, step 1 in every group of 32
    assert torch.equal(SCHEMES["int4_g32"].fake_quantize(x), x)


@pytest.mark.parametrize("name", ["nvfp4/g1", "nvfp4/amax448", "nvfp4/amax6x448", "fp4_mx_block16"])
def test_scheme_reads_back_what_the_pool_stores(name):
    """The lab's fake quantization is the oracle pool's write-then-gather, value for value."""
    k = bf16_round(generate("rope_keys", 24, 2, 64, seed=5))
    v = bf16_round(generate("laplace", 24, 2, 64, seed=6))
    recipe = name.split("/")[0]
    kw = {}
    if recipe == "nvfp4":
        conv = {"nvfp4/g1": None, "nvfp4/amax448": "amax/448", "nvfp4/amax6x448": "amax/(6*448)"}[name]
        gk = 1.0 if conv is None else nvfp4_global_scale(k.abs().amax(), conv).item()
        gv = 1.0 if conv is None else nvfp4_global_scale(v.abs().amax(), conv).item()
        kw = {"k_scales": [gk], "v_scales": [gv]}
    pool = MHATokenToKVPoolFP4(size=32, page_size=1, layer_num=1, head_num=2, head_dim=64, recipe=recipe, **kw)
    loc = torch.arange(1, 25)
    pool.set_kv_buffer(0, loc, k, v)
    pk, pv = pool.gather_kv(0, loc, dtype=torch.float32)
    assert torch.equal(SCHEMES[name].fake_quantize(k), pk)
    assert torch.equal(SCHEMES[name].fake_quantize(v), pv)


def test_default_global_scale_flushes_small_tensors():
    """SGLang's default g = 1 puts the block scale of a small tensor below E4M3's range: it reads back 0."""
    x = bf16_round(generate("small_tensor", 64, 2, 64, seed=0))
    out = SCHEMES["nvfp4/g1"].fake_quantize(x)
    below = (x.reshape(-1, 16).abs().amax(1) < 6 * 2.0 ** -10)   # block scale amax/6 < 2**-10 rounds to 0
    assert float(below.float().mean()) > 0.9
    assert bool((out.reshape(-1, 16)[below] == 0).all())
    assert flush_to_zero_fraction(x, out) > 0.9
    for calibrated in ("nvfp4/amax448", "nvfp4/amax6x448"):
        assert sqnr_db(x, SCHEMES[calibrated].fake_quantize(x)) > 15
    # recipes without a global scale do not care about the tensor's magnitude (scales are powers of 2)
    for name in ("fp4_mx_block16", "mxfp4"):
        assert sqnr_db(x, SCHEMES[name].fake_quantize(x)) == pytest.approx(
            sqnr_db(x * 1024, SCHEMES[name].fake_quantize(x * 1024)), abs=1e-9)


def test_calibrated_amax_below_the_data_saturates_only_the_generic_convention():
    """Values above the calibration amax: amax/(6*448) clamps them, amax/448 has 6x headroom."""
    x = torch.zeros(1, 16)
    x[0, 0] = 3.0
    small = torch.tensor(1.0)     # calibrated on data that never exceeded 1.0
    assert SCHEMES["nvfp4/amax6x448"].fake_quantize(x, small)[0, 0].item() == pytest.approx(1.0, rel=1e-6)
    assert SCHEMES["nvfp4/amax448"].fake_quantize(x, small)[0, 0].item() == pytest.approx(3.0, rel=1e-6)


def test_mxfp4_scheme_is_the_recipe():
    x = bf16_round(generate("student_t3", 16, 2, 64, seed=2))
    r = get_recipe("mxfp4")
    assert torch.equal(SCHEMES["mxfp4"].fake_quantize(x), r.dequantize(r.quantize(x)))


def test_bits_and_registry():
    assert FP4_SCHEMES[:6] == ("fp4_mx_block16", "mxfp4", "mxfp4_rceil", "nvfp4/g1", "nvfp4/amax6x448", "nvfp4/amax448")
    # one scheme per single-level recipe (first), three per two-level recipe
    single = [n for n, r in RECIPES.items() if r.global_scale is None]
    two = [f"{n}/{s}" for n, r in RECIPES.items() if r.global_scale is not None for s in ("g1", "amax6x448", "amax448")]
    assert FP4_SCHEMES == tuple(single + two)
    for name in FP4_SCHEMES:
        r = get_recipe(name.split("/")[0])
        assert SCHEMES[name].bits_per_value == 4 + 8 / r.block_size
        assert SCHEMES[name].block == r.block_size
    with pytest.raises(ValueError, match="amax"):
        SCHEMES["nvfp4/amax448"].fake_quantize(torch.ones(16), 0.0)
