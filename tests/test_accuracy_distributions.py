"""The stress distributions: seeded, shaped, and stressing what their names say."""

import math

import pytest
import torch

from nvfp4_kvcache.accuracy.distributions import DISTRIBUTIONS, generate, outlier_channel_profile, rope_rotate


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_seeded_shape_dtype(name):
    a = generate(name, 64, 2, 64, seed=7)
    assert a.shape == (64, 2, 64) and a.dtype == torch.float32 and bool(torch.isfinite(a).all())
    assert torch.equal(a, generate(name, 64, 2, 64, seed=7))
    assert not torch.equal(a, generate(name, 64, 2, 64, seed=8))


def _kurtosis(x):
    x = x.double().flatten()
    x = x - x.mean()
    return float((x ** 4).mean() / (x ** 2).mean() ** 2)


def test_tails_are_ordered():
    g, lap, t3 = (generate(n, 2048, 2, 64, seed=0) for n in ("gaussian", "laplace", "student_t3"))
    assert abs(_kurtosis(g) - 3) < 0.2          # Gaussian: 3
    assert abs(_kurtosis(lap) - 6) < 1.0        # Laplace: 6
    assert _kurtosis(t3) > 10                   # t(3): infinite in theory
    assert abs(float(lap.var()) - 1) < 0.05


def test_outlier_channels_and_rope():
    scale, offset = outlier_channel_profile(2, 64, seed=0)
    x = generate("outlier_channels", 512, 2, 64, seed=0)
    big = scale > 1
    assert int(big.sum()) == 8
    assert float(x.std(0)[big].min()) > 5 * float(x.std(0)[~big].max())
    r = generate("rope_keys", 512, 2, 64, seed=0)
    # RoPE rotates channel pairs (i, i + 32): pair norms are kept, channels are mixed
    pair = lambda t: t[..., :32] ** 2 + t[..., 32:] ** 2  # noqa: E731
    assert torch.allclose(pair(r), pair(x), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(r, x)


def test_rope_rotate_hand_example():
    x = torch.zeros(1, 1, 2)
    x[0, 0, 0] = 1.0
    y = rope_rotate(x, torch.tensor([1]))           # D = 2: one pair, frequency 1
    assert y[0, 0].tolist() == pytest.approx([math.cos(1.0), math.sin(1.0)], abs=1e-7)


def test_block_distributions():
    t = generate("tiny_blocks", 256, 2, 64, seed=0).reshape(-1, 16)
    amax = t.abs().amax(1)
    tiny = amax < 1e-2
    assert 0.15 < float(tiny.float().mean()) < 0.35 and float(amax[~tiny].min()) > 0.1
    h = generate("one_huge", 256, 2, 64, seed=0).reshape(-1, 16)
    n_huge = (h.abs() >= 30).sum(1)
    assert set(n_huge.tolist()) <= {0, 1} and 0.15 < float((n_huge == 1).float().mean()) < 0.35
    s = generate("small_tensor", 256, 2, 64, seed=0)
    assert 0.0015 < float(s.std()) < 0.0025


def test_unknown_and_bad_shape():
    with pytest.raises(ValueError, match="unknown distribution"):
        generate("uniform", 4, 1, 16)
    with pytest.raises(ValueError, match="multiple of 16"):
        generate("gaussian", 4, 1, 24)
