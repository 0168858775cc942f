"""Golden test vectors: the oracle's answers written as plain ``.npy`` files plus a JSON manifest.

The format is language-neutral on purpose, so C++, CUDA or Rust test suites can read it with any
NumPy-format reader:

* every array is one ``.npy`` file (NumPy format version 1.0, little-endian, C order);
* inputs are stored as ``float32`` holding exactly the values of the original dtype (bf16 and
  fp16 convert to fp32 exactly); the manifest records the original dtype;
* ``packed`` and ``scales`` are ``uint8`` (E4M3 scales as their bit patterns), ``dequantized``
  is ``float32`` (the oracle's value before any cast);
* ``manifest.json`` lists every set: recipe, kind, input dtype, seed, global scale, and per file
  its path, dtype, shape and SHA-256.

Examples:
    >>> import tempfile, pathlib
    >>> from reference_impl.vectors import write_vectors, check_vectors
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> manifest = write_vectors(d, recipes=["mxfp4"], dtypes=["float32"])
    >>> [s["name"] for s in manifest["sets"]]
    ['mxfp4.quantize.float32', 'mxfp4.quantize.named_cases']
    >>> check_vectors(d)      # re-derives every file and compares bytes and SHA-256
    []
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

import reference_impl
from reference_impl.cases import CASES, case_input
from reference_impl.recipes import RECIPES, get_recipe, nvfp4_global_scale

__all__ = ["FORMAT_VERSION", "write_vectors", "check_vectors", "load_array", "DTYPES"]

FORMAT_VERSION = 1
"""Bumped whenever the layout of the files or the manifest changes."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHAPE = (4, 4, 128)
"""``[tokens, heads, head_dim]`` of the random sets: small enough for the repository."""


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def load_array(path: Path) -> np.ndarray:
    """Read one ``.npy`` file (no pickles)."""
    return np.load(path, allow_pickle=False)


def _random_input(recipe: str, dtype: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    spread = 8 if dtype == "float16" else 24   # per-token magnitudes over 2**spread, kept finite in fp16
    k = torch.randint(-spread // 2, spread // 2, (SHAPE[0], 1, 1), generator=g).float()
    x = torch.randn(SHAPE, generator=g) * torch.exp2(k)
    x[0, 0, :4] = torch.tensor([0.0, -0.0, 0.25, -2.5])
    return x.to(DTYPES[dtype])


def _sets(recipes, dtypes):
    seed = 0
    for recipe in recipes:
        r = get_recipe(recipe)
        for dtype in dtypes:
            seed += 1
            x = _random_input(recipe, dtype, seed)
            g = nvfp4_global_scale(x.abs().amax().float(), "amax/(6*448)").item() if r.needs_global_scale else None
            yield {"name": f"{recipe}.quantize.{dtype}", "recipe": recipe, "kind": "quantize", "input_dtype": dtype,
                   "seed": seed, "global_scale": g, "global_scale_convention": "amax/(6*448)" if g else None}, x
        # the named cases quantized with global scale 1 (or none), one block per row; the input is
        # float32 (the one bf16 case holds a bf16-representable value)
        cases = [c for c in CASES.values() if c.recipe == recipe and c.global_scale in (None, 1.0)]
        yield {"name": f"{recipe}.quantize.named_cases", "recipe": recipe, "kind": "quantize", "input_dtype": "float32",
               "seed": None, "global_scale": 1.0 if r.needs_global_scale else None, "global_scale_convention": None,
               "cases": [c.name for c in cases]}, torch.cat([case_input(c).float() for c in cases])


def _files(meta: dict, x: torch.Tensor) -> dict[str, np.ndarray]:
    r = get_recipe(meta["recipe"])
    q = r.quantize(x, meta["global_scale"])
    return {
        "input": x.float().numpy(),
        "packed": q.packed.numpy(),
        "scales": q.scales.numpy(),
        "dequantized": r.dequantize(q, torch.float32).numpy(),
    }


def _build(recipes, dtypes):
    manifest = {
        "format": "nvfp4-kvcache golden vectors",
        "format_version": FORMAT_VERSION,
        "reference_version": reference_impl.__version__,
        "generator": "python -m reference_impl vectors write DIR",
        "layout": "packed: uint8 [..., N/2], element 2i in the low nibble; scales: uint8 [..., N/block] "
                  "(nvfp4: E4M3 bits); input: float32 holding the input dtype's values exactly",
        "sets": [],
    }
    blobs: dict[str, bytes] = {}
    for meta, x in _sets(recipes, dtypes):
        files = {}
        for role, array in _files(meta, x).items():
            path = f"{meta['name']}.{role}.npy"
            data = _npy_bytes(array)
            blobs[path] = data
            files[role] = {"path": path, "dtype": str(array.dtype), "shape": list(array.shape),
                           "sha256": hashlib.sha256(data).hexdigest()}
        manifest["sets"].append({**meta, "block_size": get_recipe(meta["recipe"]).block_size, "files": files})
    return manifest, blobs


def write_vectors(directory: Path | str, recipes=None, dtypes=None) -> dict:
    """Write the vector sets and ``manifest.json`` into ``directory``; return the manifest."""
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
    each set's stored input, produces byte-identical files.
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
        x = torch.from_numpy(load_array(directory / s["files"]["input"]["path"])).to(DTYPES[s["input_dtype"]])
        for role, array in _files(s, x).items():
            if _npy_bytes(array) != (directory / s["files"][role]["path"]).read_bytes():
                problems.append(f"{s['name']}: the oracle now gives a different {role}")
    return problems
