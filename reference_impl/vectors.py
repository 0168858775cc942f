"""Golden test vectors: the oracle's answers written as plain `.npy` files plus a JSON manifest.

The package ships one set of them ([`golden_dir`][nvfp4_kvcache.vectors.golden_dir], also printed by
`python -m nvfp4_kvcache vectors path`): every recipe, the named cases, the pools and decode
attention. [`set_names`][nvfp4_kvcache.vectors.set_names] lists its sets and
[`load_set`][nvfp4_kvcache.vectors.load_set] loads one, ready to feed a kernel and to compare what
the kernel writes with the stored bytes. [`write_vectors`][nvfp4_kvcache.vectors.write_vectors]
writes the same files anywhere else.

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
    The shipped sets, one loaded, and a quantizer's bytes compared with it:

    >>> import nvfp4_kvcache
    >>> from nvfp4_kvcache.vectors import load_set, set_names
    >>> set_names(kind="pool_store")
    ['fp4_mx_block16.pool_store', 'nvfp4.pool_store', 'nvfp4_4over6.pool_store']
    >>> s = load_set("nvfp4.quantize.bfloat16")
    >>> x = s.inputs()["input"]                  # bfloat16 again, as the set was made
    >>> x.dtype, s.entry["global_scale"] is not None
    (torch.bfloat16, True)
    >>> q = nvfp4_kvcache.quantize(x, "nvfp4", global_scale=s.entry["global_scale"])
    >>> s.compare({"packed": q.packed, "scales": q.scales})
    []
    >>> bad = q.packed.clone()
    >>> bad[0, 0, 0] ^= 0x10
    >>> s.compare({"packed": bad})
    ['nvfp4.quantize.bfloat16: 1 of 1024 bytes of packed differ, the first at (0, 0, 0)']

    Writing and checking a fresh directory:

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
import importlib.resources
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import nvfp4_kvcache
from nvfp4_kvcache.attention import decode_attention
from nvfp4_kvcache.cases import CASES, case_input
from nvfp4_kvcache.pool import POOL_RECIPES, MHATokenToKVPoolFP4
from nvfp4_kvcache.recipes import RECIPES, get_recipe, nvfp4_global_scale

__all__ = ["FORMAT_VERSION", "ATTENTION_TOLERANCE", "golden_dir", "read_manifest", "set_names", "load_set",
           "VectorSet", "write_vectors", "check_vectors", "load_array", "DTYPES"]

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
"""`[tokens, heads, head_dim]` of the random sets: small enough to ship in the wheel."""

POOL = {"size": 32, "page_size": 4, "layer_num": 1, "head_num": 2, "head_dim": 64}
"""Geometry of the pool sets (one layer, 36 rows including the padding page)."""


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def load_array(path: Path) -> np.ndarray:
    """Read one `.npy` file (no pickles)."""
    return np.load(path, allow_pickle=False)


GOLDEN_FOLDER = "golden"
"""The shipped vectors' folder inside the package (`reference_impl/golden/` in the repository)."""


def golden_dir() -> Path:
    """The folder of golden vectors shipped in this package: `manifest.json` and the `.npy` files.

    In an installed wheel it is `nvfp4_kvcache/golden/` in site-packages; in a checkout it is the
    repository's copy, which the tests check byte for byte. Other languages' build systems find it
    with `python -m nvfp4_kvcache vectors path`. Treat it as read-only: copy it, or write a fresh
    set with [`write_vectors`][nvfp4_kvcache.vectors.write_vectors].

    Raises:
        FileNotFoundError: the package was installed without its data files.
        RuntimeError: the package is not on the file system (a zip archive).
    """
    folder = importlib.resources.files("nvfp4_kvcache") / GOLDEN_FOLDER
    if not isinstance(folder, Path):
        raise RuntimeError(f"nvfp4_kvcache is not installed as files ({folder!r}); install the wheel into a folder")
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"no golden vectors in {folder}: install nvfp4-kvcache from its wheel or a checkout, "
                                "or write a set with `python -m nvfp4_kvcache vectors write DIR`")
    return folder


def read_manifest(directory: Path | str | None = None) -> dict:
    """The `manifest.json` of a vector directory, by default [`golden_dir`][nvfp4_kvcache.vectors.golden_dir]'s."""
    directory = golden_dir() if directory is None else Path(directory)
    return json.loads((directory / "manifest.json").read_text())


def set_names(directory: Path | str | None = None, *, recipe: str | None = None, kind: str | None = None) -> list[str]:
    """The names of the sets in a vector directory (default: the shipped ones), in manifest order.

    Args:
        directory: a folder written by [`write_vectors`][nvfp4_kvcache.vectors.write_vectors];
            `None` for [`golden_dir`][nvfp4_kvcache.vectors.golden_dir].
        recipe: keep only this recipe's sets.
        kind: keep only `"quantize"`, `"pool_store"` or `"decode_attention"` sets.
    """
    return [s["name"] for s in read_manifest(directory)["sets"]
            if recipe in (None, s["recipe"]) and kind in (None, s["kind"])]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _restore(entry: dict, array: np.ndarray) -> torch.Tensor:
    """A stored input as the tensor the set was made from (floating inputs in the input dtype)."""
    t = torch.from_numpy(array.copy())
    return t.to(DTYPES[entry["input_dtype"]]) if t.is_floating_point() else t


def _candidate_array(value) -> np.ndarray:
    """A kernel's output as NumPy: on the CPU, one-byte float dtypes as their bytes, bf16/fp16 as float32."""
    if isinstance(value, np.ndarray):
        return value
    t = value.detach().cpu()
    if t.element_size() == 1 and t.dtype not in (torch.uint8, torch.int8, torch.bool):
        t = t.view(torch.uint8)            # float8_e4m3fn, float8_e8m0fnu, float4_e2m1fn_x2: their bytes
    return _as_numpy(t)


@dataclass(frozen=True)
class VectorSet:
    """One set of a vector directory, as [`load_set`][nvfp4_kvcache.vectors.load_set] returns it.

    Attributes:
        name: the set's name: `"<recipe>.quantize.<dtype>"`, `"<recipe>.quantize.named_cases"`,
            `"<recipe>.pool_store"` or `"<recipe>.decode_attention"`.
        entry: its manifest entry: `recipe`, `kind`, `input_dtype`, `seed`, `block_size`, the global
            scale(s) where the recipe has one, `pool` geometry for pool sets, and `files` (per
            array: `role`, `path`, `dtype`, `shape`, `sha256`).
        arrays: every file as stored, by name (`input`, `packed`, `k_data`, ...), read-only;
            [`inputs`][nvfp4_kvcache.vectors.VectorSet.inputs] and
            [`outputs`][nvfp4_kvcache.vectors.VectorSet.outputs] return copies.
    """

    name: str
    entry: dict
    arrays: dict[str, np.ndarray]

    def inputs(self) -> dict[str, torch.Tensor]:
        """The inputs as tensors, floating ones back in the dtype the set was made from (exact)."""
        return {n: _restore(self.entry, a) for n, a in self.arrays.items() if self.entry["files"][n]["role"] == "input"}

    def outputs(self) -> dict[str, torch.Tensor]:
        """The oracle's outputs as tensors: `uint8` bytes, `float32` dequantized values, `float64` attention."""
        return {n: torch.from_numpy(a.copy()) for n, a in self.arrays.items()
                if self.entry["files"][n]["role"] == "output"}

    def compare(self, outputs: dict, *, rtol: float = 0.0, atol: float = 0.0) -> list[str]:
        """What differs between a kernel's outputs and the stored ones (empty list: nothing).

        Byte outputs (`packed`, `scales`, the pool buffers) must be equal byte for byte; float8
        and float4 tensors are compared as their bytes. Floating outputs (`dequantized`, the
        attention `output`) are compared as values within `rtol` and `atol` (NaN equals NaN);
        give a lower-precision kernel its own tolerance.

        Args:
            outputs: `{name: tensor or NumPy array}`, any subset of the set's outputs.
            rtol: relative tolerance for floating outputs.
            atol: absolute tolerance for floating outputs.

        Raises:
            ValueError: a name that is not one of the set's outputs.
        """
        known = sorted(self.outputs())
        problems = []
        for name, value in outputs.items():
            if name not in known:
                raise ValueError(f"{self.name} has no output {name!r}; its outputs: {known}")
            expected, actual = self.arrays[name], _candidate_array(value)
            if actual.shape != expected.shape:
                problems.append(f"{self.name}: {name} has shape {list(actual.shape)}, expected {list(expected.shape)}")
                continue
            if expected.dtype == np.uint8:
                if actual.dtype != np.uint8:
                    problems.append(f"{self.name}: {name} holds {actual.dtype}, expected uint8 bytes")
                    continue
                differ, what = actual != expected, "bytes"
            else:
                differ = ~np.isclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol,
                                     equal_nan=True)
                what = "values"
            if differ.any():
                first = tuple(int(i) for i in np.argwhere(differ)[0])
                problems.append(f"{self.name}: {int(differ.sum())} of {differ.size} {what} of {name} differ, "
                                f"the first at {first}")
        return problems


def load_set(name: str, directory: Path | str | None = None) -> VectorSet:
    """One set of a vector directory (default: the shipped ones), its files checked against their SHA-256.

    Args:
        name: a name from [`set_names`][nvfp4_kvcache.vectors.set_names].
        directory: a folder written by [`write_vectors`][nvfp4_kvcache.vectors.write_vectors];
            `None` for [`golden_dir`][nvfp4_kvcache.vectors.golden_dir].

    Raises:
        KeyError: no set of that name (the message lists the names).
        ValueError: a file does not match the SHA-256 its manifest records.
    """
    directory = golden_dir() if directory is None else Path(directory)
    sets = {s["name"]: s for s in read_manifest(directory)["sets"]}
    if name not in sets:
        raise KeyError(f"no vector set {name!r} in {directory}; known: {sorted(sets)}")
    entry, arrays = sets[name], {}
    for n, f in entry["files"].items():
        data = (directory / f["path"]).read_bytes()
        if _sha256(data) != f["sha256"]:
            raise ValueError(f"{name}: {f['path']} does not match its SHA-256")
        arrays[n] = np.load(io.BytesIO(data), allow_pickle=False)
        arrays[n].flags.writeable = False
    return VectorSet(name, entry, arrays)


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
                           "sha256": _sha256(data)}
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


def check_vectors(directory: Path | str | None = None) -> list[str]:
    """Problems found in a vector directory (empty list: everything regenerates identically).

    Checks each file's SHA-256 against the manifest, and that the oracle of this version, run on
    each set's stored input, produces byte-identical files (attention outputs: within
    [`ATTENTION_TOLERANCE`][nvfp4_kvcache.vectors.ATTENTION_TOLERANCE]).

    Args:
        directory: a folder written by [`write_vectors`][nvfp4_kvcache.vectors.write_vectors];
            `None` for the shipped vectors ([`golden_dir`][nvfp4_kvcache.vectors.golden_dir]).
    """
    directory = golden_dir() if directory is None else Path(directory)
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
            if _sha256(path.read_bytes()) != f["sha256"]:
                problems.append(f"{s['name']}: {f['path']} does not match its SHA-256")
        if any(p.startswith(s["name"] + ":") for p in problems):
            continue
        inputs = {name: _restore(s, load_array(directory / f["path"]))
                  for name, f in s["files"].items() if f["role"] == "input"}
        for name, tensor in _outputs(s, inputs).items():
            stored = directory / s["files"][name]["path"]
            if s["kind"] == "decode_attention":
                same = np.allclose(_as_numpy(tensor), load_array(stored), **ATTENTION_TOLERANCE)
            else:
                same = _npy_bytes(_as_numpy(tensor)) == stored.read_bytes()
            if not same:
                problems.append(f"{s['name']}: the oracle now gives a different {name}")
    return problems
