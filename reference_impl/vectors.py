"""Golden test vectors: the oracle's answers written as plain `.npy` files plus a JSON manifest.

The format is language-neutral on purpose, so C++, CUDA or Rust test suites can read it with any
NumPy-format reader:

* every array is one `.npy` file (NumPy format version 1.0, little-endian, C order);
* inputs are stored as `float32` holding exactly the values of the original dtype (bf16 and
  fp16 convert to fp32 exactly); the manifest records the original dtype;
* `packed` and `scales` are `uint8` (E4M3 scales as their bit patterns), `dequantized`
  is `float32` (the oracle's value before any cast);
* `manifest.json` lists every set: recipe, kind, input dtype, seed, global scale(s), pool
  geometry where there is one, and per file its role (`input` or `output`), path, dtype,
  shape and SHA-256.

Three kinds of set:

* `quantize`: `input [..., N]` -> `packed`, `scales`, `dequantized`;
* `pool_store`: an MHA pool (geometry in the manifest) after `set_kv_buffer(0, loc, k, v)`:
  inputs `k`, `v` `[n, heads, head_dim]` and `loc` (`int64 [n]`); outputs the whole
  layer's `k_data`, `v_data`, `k_scales`, `v_scales` buffers;
* `decode_attention`: that pool, then `q [B, Hq, head_dim]`, `kv_indptr`, `kv_indices`
  (`int64`) -> `output` (`float64 [B, Hq, head_dim]`), the float64 attention over the
  dequantized cache. Its last bits depend on the CPU's summation order (vectorized BLAS and
  reductions differ between processors by an ulp or two), so [`check_vectors`][nvfp4_kvcache.vectors.check_vectors]
  compares it within [`ATTENTION_TOLERANCE`][nvfp4_kvcache.vectors.ATTENTION_TOLERANCE]; every
  other file is compared byte for byte. A kernel in lower precision compares with its own stated
  tolerance.

Examples:
    >>> import tempfile, pathlib
    >>> from nvfp4_kvcache.vectors import write_vectors, check_vectors
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> manifest = write_vectors(d, recipes=["mxfp4"], dtypes=["float32"])
    >>> [s["name"] for s in manifest["sets"]]
    ['mxfp4.quantize.float32', 'mxfp4.quantize.named_cases']
    >>> check_vectors(d)  # re-derives every output file and compares bytes and SHA-256
    []
    >>> manifest = write_vectors(d, recipes=["nvfp4"], dtypes=["bfloat16"])
    >>> [s["kind"] for s in manifest["sets"]]
    ['quantize', 'quantize', 'pool_store', 'decode_attention']
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from pathlib import Path

import numpy as np
import torch

import nvfp4_kvcache
from nvfp4_kvcache.attention import decode_attention
from nvfp4_kvcache.cases import CASES, case_input
from nvfp4_kvcache.pool import POOL_RECIPES, MHATokenToKVPoolFP4
from nvfp4_kvcache.recipes import RECIPES, get_recipe, nvfp4_global_scale

__all__ = ["FORMAT_VERSION", "ATTENTION_TOLERANCE", "write_vectors", "check_vectors", "load_array", "DTYPES"]

FORMAT_VERSION = 1
"""Bumped whenever the layout of the files or the manifest changes."""

ATTENTION_TOLERANCE = {"rtol": 1e-12, "atol": 1e-12}
"""How far a regenerated `decode_attention` output may move from the stored one.

Both are float64 attention over the same dequantized values; only the order of float64 sums
differs between machines (seen: 1 ulp, 4.4e-16, on a third of the elements between two x86
processors). 1e-12 is four thousand times that and a million times below the smallest FP4 step
that a wrong code or scale byte would move the output by.
"""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHAPE = (4, 4, 128)
"""`[tokens, heads, head_dim]` of the random sets: small enough for the repository."""

POOL = {"size": 32, "page_size": 4, "layer_num": 1, "head_num": 2, "head_dim": 64}
"""Geometry of the pool sets (one layer, 36 rows including the padding page)."""


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def load_array(path: Path) -> np.ndarray:
    """Read one `.npy` file (no pickles)."""
    return np.load(path, allow_pickle=False)


def _random_input(recipe: str, dtype: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    spread = 8 if dtype == "float16" else 24   # per-token magnitudes over 2**spread, kept finite in fp16
    k = torch.randint(-spread // 2, spread // 2, (SHAPE[0], 1, 1), generator=g).float()
    x = torch.randn(SHAPE, generator=g) * torch.exp2(k)
    x[0, 0, :4] = torch.tensor([0.0, -0.0, 0.25, -2.5])
    return x.to(DTYPES[dtype])


def _pool_inputs(recipe: str, seed: int) -> tuple[dict, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    n = 24
    shape = (n, POOL["head_num"], POOL["head_dim"])
    k = (torch.randn(shape, generator=g) * 2).to(torch.bfloat16)
    v = torch.randn(shape, generator=g).to(torch.bfloat16)
    loc = torch.randperm(POOL["size"], generator=g)[:n] + POOL["page_size"]   # real slots, past the padding page
    meta = {"pool": dict(POOL), "input_dtype": "bfloat16", "seed": seed}
    if RECIPES[recipe].global_scale is not None:
        meta["k_global_scale"] = nvfp4_global_scale(k.abs().amax().float(), "amax/(6*448)").item()
        meta["v_global_scale"] = nvfp4_global_scale(v.abs().amax().float(), "amax/(6*448)").item()
        meta["global_scale_convention"] = "amax/(6*448)"
    return meta, {"k": k, "v": v, "loc": loc}


def _decode_inputs(seed: int, loc: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 2 * POOL["head_num"], POOL["head_dim"], generator=g).to(torch.bfloat16)   # GQA group 2
    return {"q": q, "kv_indptr": torch.tensor([0, 9, 24]), "kv_indices": loc.clone()}


def _seed(name: str) -> int:
    """A set's seed, from its name alone: adding a recipe or a dtype leaves every other set as it was."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _sets(recipes, dtypes):
    for recipe in recipes:
        r = get_recipe(recipe)
        for dtype in dtypes:
            seed = _seed(f"{recipe}.quantize.{dtype}")
            x = _random_input(recipe, dtype, seed)
            g = nvfp4_global_scale(x.abs().amax().float(), "amax/(6*448)").item() if r.global_scale is not None else None
            yield {"name": f"{recipe}.quantize.{dtype}", "recipe": recipe, "kind": "quantize", "input_dtype": dtype,
                   "seed": seed, "global_scale": g, "global_scale_convention": "amax/(6*448)" if g else None}, {"input": x}
        # the named cases quantized with global scale 1 (or none), one block per row; the input is
        # float32 (the one bf16 case holds a bf16-representable value)
        cases = [c for c in CASES.values() if c.recipe == recipe and c.global_scale in (None, 1.0) and c.order is None]
        yield {"name": f"{recipe}.quantize.named_cases", "recipe": recipe, "kind": "quantize", "input_dtype": "float32",
               "seed": None, "global_scale": 1.0 if r.global_scale is not None else None, "global_scale_convention": None,
               "cases": [c.name for c in cases]}, {"input": torch.cat([case_input(c).float() for c in cases])}
        if recipe in POOL_RECIPES and "bfloat16" in dtypes:
            seed = _seed(f"{recipe}.pool_store")
            meta, inputs = _pool_inputs(recipe, seed)
            yield {"name": f"{recipe}.pool_store", "recipe": recipe, "kind": "pool_store", **meta}, inputs
            yield ({"name": f"{recipe}.decode_attention", "recipe": recipe, "kind": "decode_attention", **meta},
                   {**inputs, **_decode_inputs(seed, inputs["loc"])})


def _pool(meta: dict, inputs: dict[str, torch.Tensor]) -> MHATokenToKVPoolFP4:
    kw = {}
    if "k_global_scale" in meta:
        kw = {"k_scales": [meta["k_global_scale"]], "v_scales": [meta["v_global_scale"]]}
    pool = MHATokenToKVPoolFP4(**meta["pool"], recipe=meta["recipe"], device="cpu", **kw)
    pool.set_kv_buffer(0, inputs["loc"], inputs["k"], inputs["v"])
    return pool


def _outputs(meta: dict, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if meta["kind"] == "quantize":
        r = get_recipe(meta["recipe"])
        q = r.quantize(inputs["input"], meta["global_scale"])
        return {"packed": q.packed, "scales": q.scales, "dequantized": r.dequantize(q, torch.float32)}
    pool = _pool(meta, inputs)
    if meta["kind"] == "pool_store":
        t = pool.layer_tensors(0)
        return {"k_data": t["k"], "v_data": t["v"], "k_scales": t["k_scale"], "v_scales": t["v_scale"]}
    out = decode_attention(inputs["q"], pool, 0, inputs["kv_indptr"], inputs["kv_indices"])
    return {"output": out}


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()


def _build(recipes, dtypes):
    manifest = {
        "format": "nvfp4-kvcache golden vectors",
        "format_version": FORMAT_VERSION,
        "reference_version": nvfp4_kvcache.__version__,
        "generator": "python -m nvfp4_kvcache vectors write DIR",
        "layout": "packed: uint8 [..., N/2], element 2i in the low nibble; scales: uint8 [..., N/block] "
                  "(E4M3-scaled recipes: E4M3 bits); floating inputs: float32 holding the input dtype's values exactly",
        "sets": [],
    }
    blobs: dict[str, bytes] = {}
    for meta, inputs in _sets(recipes, dtypes):
        files = {}
        arrays = {**{k: ("input", v) for k, v in inputs.items()},
                  **{k: ("output", v) for k, v in _outputs(meta, inputs).items()}}
        for name, (role, tensor) in arrays.items():
            array = _as_numpy(tensor)
            path = f"{meta['name']}.{name}.npy"
            data = _npy_bytes(array)
            blobs[path] = data
            files[name] = {"role": role, "path": path, "dtype": str(array.dtype), "shape": list(array.shape),
                           "sha256": hashlib.sha256(data).hexdigest()}
        manifest["sets"].append({**meta, "block_size": get_recipe(meta["recipe"]).block_size, "files": files})
    return manifest, blobs


def write_vectors(directory: Path | str, recipes=None, dtypes=None) -> dict:
    """Write the vector sets and `manifest.json` into `directory`; return the manifest."""
    directory = Path(directory)
    recipes = list(recipes or sorted(RECIPES))
    dtypes = list(dtypes or DTYPES)
    manifest, blobs = _build(recipes, dtypes)
    directory.mkdir(parents=True, exist_ok=True)
    for path, data in blobs.items():
        (directory / path).write_bytes(data)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def check_vectors(directory: Path | str) -> list[str]:
    """Problems found in a vector directory (empty list: everything regenerates identically).

    Checks each file's SHA-256 against the manifest, and that the oracle of this version, run on
    each set's stored input, produces byte-identical files (attention outputs: within
    [`ATTENTION_TOLERANCE`][nvfp4_kvcache.vectors.ATTENTION_TOLERANCE]).
    """
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return [f"no manifest.json in {directory}"]
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        return [f"format_version {manifest.get('format_version')} is not {FORMAT_VERSION}"]
    problems = []
    for s in manifest["sets"]:
        for role, f in s["files"].items():
            path = directory / f["path"]
            if not path.is_file():
                problems.append(f"{s['name']}: missing {f['path']}")
                continue
            if hashlib.sha256(path.read_bytes()).hexdigest() != f["sha256"]:
                problems.append(f"{s['name']}: {f['path']} does not match its SHA-256")
        if any(p.startswith(s["name"] + ":") for p in problems):
            continue
        inputs = {}
        for name, f in s["files"].items():
            if f["role"] == "input":
                t = torch.from_numpy(load_array(directory / f["path"]))
                inputs[name] = t.to(DTYPES[s["input_dtype"]]) if t.is_floating_point() else t
        for name, tensor in _outputs(s, inputs).items():
            stored = directory / s["files"][name]["path"]
            if s["kind"] == "decode_attention":
                same = np.allclose(_as_numpy(tensor), load_array(stored), **ATTENTION_TOLERANCE)
            else:
                same = _npy_bytes(_as_numpy(tensor)) == stored.read_bytes()
            if not same:
                problems.append(f"{s['name']}: the oracle now gives a different {name}")
    return problems
