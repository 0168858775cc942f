"""all-MiniLM-L6-v2 in plain PyTorch: tokenizer ids, embeddings and the K/V hook."""

import pytest
import torch

from nvfp4_kvcache.accuracy.minilm import load_minilm
from nvfp4_kvcache.accuracy.real_activations import calibrate, capture_qkv, kv_hook


@pytest.fixture(scope="module")
def model():
    return load_minilm()


def test_tokenizer_ids_match_bert_uncased(model):
    # bert-base-uncased vocabulary: [CLS]=101, hello=7592, ","=1010, world=2088, "!"=999, [SEP]=102
    assert model.tokenizer.encode("Hello, world!") == [101, 7592, 1010, 2088, 999, 102]
    assert model.tokenizer.tokenize("Café naïve") == ["cafe", "naive"]
    # greedy longest-match-first, as transformers' BertTokenizer does with this vocabulary
    assert model.tokenizer.tokenize("unaffable") == ["una", "##ffa", "##ble"]


def test_embedding_matches_transformers(model):
    # first values of transformers' BertModel (5.x) + mean pooling + L2 normalization for this sentence,
    # computed once with the same packaged weights
    e = model.encode(["Hello, world!"])
    assert e.shape == (1, 384)
    assert e[0, :4].tolist() == pytest.approx([-0.0381772, 0.0329111, -0.0054594, 0.0143699], abs=2e-5)
    assert float(e.norm()) == pytest.approx(1.0, abs=1e-6)


def test_hook_sees_every_layer_and_controls_attention(model):
    seen = []

    def identity(layer, k, v):
        seen.append((layer, tuple(k.shape), tuple(v.shape)))
        return k, v

    s = ["A cat sits on the mat.", "Dogs bark."]
    base = model.encode(s)
    assert torch.equal(model.encode(s, identity), base)
    assert [x[0] for x in seen] == list(range(6)) and seen[0][1][1:] == (12, 9, 32)
    zero_v = model.encode(s, lambda layer, k, v: (k, torch.zeros_like(v)))
    assert float((zero_v * base).sum(1).min()) < 0.9


def test_capture_and_calibrate(model):
    s = ["One sentence.", "And a second, longer sentence here."]
    qkv, lengths = capture_qkv(model, s)
    assert len(qkv) == 6 and lengths == [5, 10]        # [CLS] one sentence . [SEP], ...
    assert all(t.shape == (15, 12, 32) for layer in qkv for t in layer)
    amax = calibrate(model, s)
    assert amax[0]["k"] == pytest.approx(float(qkv[0][1].abs().max()), rel=1e-2)
    bf16 = model.encode(s, kv_hook("bf16", amax))
    assert float((bf16 * model.encode(s)).sum(1).min()) > 0.9999
    with pytest.raises(ValueError, match="mode"):
        kv_hook("bf16", amax, "Q")
