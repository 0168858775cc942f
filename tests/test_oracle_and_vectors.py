"""The oracle check API, the golden vectors shipped in reference_impl/golden, and the command line."""

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nvfp4_kvcache as ri
from nvfp4_kvcache.oracle import OracleMismatch, assert_matches_oracle, compare_with_oracle
from nvfp4_kvcache.recipes import RECIPES
from nvfp4_kvcache.sglang import FP4MXBlock16KVQuantizeUtil
from nvfp4_kvcache.vectors import (ATTENTION_TOLERANCE, check_vectors, golden_dir, load_set, read_manifest, set_names,
                                   write_vectors)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "reference_impl" / "golden"   # the package's copy: golden_dir() in a checkout


def _g(recipe):
    return 0.01 if RECIPES[recipe].needs_global_scale else None


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_oracle_output_passes_and_one_flipped_bit_fails(recipe):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 64, dtype=torch.bfloat16)
    q = ri.quantize(x, recipe, global_scale=_g(recipe))
    assert_matches_oracle(recipe, x, q.packed, q.scales, _g(recipe))
    bad = q.packed.clone()
    bad[2, 1, 7] ^= 0x10                         # element (2, 1, 15): the high nibble of byte 7
    with pytest.raises(OracleMismatch) as info:
        assert_matches_oracle(recipe, x, bad, q.scales, _g(recipe))
    report = info.value.report
    assert (report.code_mismatches, report.scale_mismatches) == (1, 0)
    assert report.rows[0]["index"] == (2, 1, 15)
    assert "1 of 768 codes" in str(info.value) and "(2, 1, 15)" in str(info.value)


def test_scale_mismatch_reports_every_element_of_the_block():
    x = torch.randn(2, 32)
    q = ri.quantize(x, "fp4_mx_block16")
    s = q.scales.clone()
    s[1, 0] += 1
    report = compare_with_oracle("fp4_mx_block16", x, q.packed, s, max_rows=100)
    assert report.scale_mismatches == 1 and report.code_mismatches == 0
    assert [r["index"] for r in report.rows] == [(1, j) for j in range(16)]
    assert report.rows[0]["expected_scale"] + 1 == report.rows[0]["actual_scale"]


def test_accepts_float8_scales_and_sglang_flattened_layout():
    x = torch.randn(5, 8, 64, dtype=torch.bfloat16)
    q = ri.quantize(x, "nvfp4", global_scale=0.02)
    assert compare_with_oracle("nvfp4", x, q.packed, q.scales.view(torch.float8_e4m3fn), 0.02).ok
    packed, scales = FP4MXBlock16KVQuantizeUtil.batched_quantize(x)   # scales [5, 32]
    assert compare_with_oracle("fp4_mx_block16", x, packed, scales).ok


def test_malformed_candidates_raise():
    x = torch.randn(2, 32)
    q = ri.quantize(x, "mxfp4")
    with pytest.raises(ValueError, match="packed must have shape"):
        compare_with_oracle("mxfp4", x, q.packed[:, :8], q.scales)
    with pytest.raises(ValueError, match="scales must hold"):
        compare_with_oracle("mxfp4", x, q.packed, q.scales[:1])
    with pytest.raises(ValueError, match="uint8"):
        compare_with_oracle("mxfp4", x, q.packed.int(), q.scales)


def test_golden_vectors_in_the_repository_check_out():
    assert check_vectors(GOLDEN) == []


def test_the_package_finds_its_golden_vectors():
    assert golden_dir().resolve() == GOLDEN.resolve()
    assert read_manifest() == json.loads((GOLDEN / "manifest.json").read_text())
    names = set_names()
    assert names == [s["name"] for s in read_manifest()["sets"]] and len(names) == len(set(names))
    assert set_names(recipe="mxfp4") == ["mxfp4.quantize.float32", "mxfp4.quantize.bfloat16",
                                         "mxfp4.quantize.float16", "mxfp4.quantize.named_cases"]
    pools = set_names(kind="pool_store")
    assert pools and all(n.endswith(".pool_store") for n in pools)
    assert set_names(recipe="mxfp4", kind="pool_store") == []


def test_a_missing_golden_folder_is_a_clear_error(monkeypatch, tmp_path):
    """An install without the data files names what to do instead of failing on a missing manifest."""
    import importlib.resources

    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(FileNotFoundError, match="no golden vectors"):
        golden_dir()


def test_load_set_restores_the_inputs_and_checks_the_files(tmp_path):
    s = load_set("nvfp4.pool_store")
    assert (s.entry["kind"], s.entry["recipe"]) == ("pool_store", "nvfp4")
    assert set(s.arrays) == set(s.entry["files"])
    inputs, outputs = s.inputs(), s.outputs()
    assert set(inputs) == {"k", "v", "loc"} and set(outputs) == {"k_data", "v_data", "k_scales", "v_scales"}
    assert inputs["k"].dtype == torch.bfloat16 and inputs["loc"].dtype == torch.int64
    assert torch.equal(inputs["k"].float(), torch.from_numpy(s.arrays["k"].copy()))   # exact: bf16 held in float32
    outputs["k_data"].fill_(0xFF)                  # a caller writing into what it got leaves the set intact
    inputs["loc"].fill_(0)
    assert s.outputs()["k_data"].any() and not (s.outputs()["k_data"] == 0xFF).all()
    assert s.inputs()["loc"].unique().numel() == s.inputs()["loc"].numel()
    with pytest.raises(ValueError, match="read-only"):
        s.arrays["k_data"][0] = 1
    with pytest.raises(KeyError, match="known:"):
        load_set("nvfp4.quantize.bfloat32")
    shutil.copytree(GOLDEN, tmp_path / "g")
    f = tmp_path / "g" / "nvfp4.pool_store.k_data.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01
    f.write_bytes(bytes(data))
    assert load_set("nvfp4.quantize.bfloat16", tmp_path / "g").name == "nvfp4.quantize.bfloat16"
    with pytest.raises(ValueError, match="k_data.npy does not match its SHA-256"):
        load_set("nvfp4.pool_store", tmp_path / "g")


def test_a_set_compares_a_kernels_bytes_and_values():
    s = load_set("nvfp4.quantize.bfloat16")
    g = s.entry["global_scale"]
    q = ri.quantize(s.inputs()["input"], "nvfp4", global_scale=g)
    deq = ri.dequantize(q, torch.float32)
    assert s.compare({"packed": q.packed, "scales": q.scales.view(torch.float8_e4m3fn), "dequantized": deq}) == []
    assert s.compare({"packed": q.packed.numpy()}) == []
    bad = q.scales.clone()
    bad[1, 2, 3] += 1
    bad[3, 0, 0] += 1
    assert s.compare({"scales": bad}) == ["nvfp4.quantize.bfloat16: 2 of 128 bytes of scales differ, the first at (1, 2, 3)"]
    assert s.compare({"packed": q.packed[:2]}) == ["nvfp4.quantize.bfloat16: packed has shape [2, 4, 64], expected [4, 4, 64]"]
    assert s.compare({"packed": q.packed.int()}) == ["nvfp4.quantize.bfloat16: packed holds int32, expected uint8 bytes"]
    near = deq * (1 + 1e-6)
    assert s.compare({"dequantized": near})[0].startswith("nvfp4.quantize.bfloat16: ")
    assert "values of dequantized differ" in s.compare({"dequantized": near})[0]
    assert s.compare({"dequantized": near}, rtol=1e-5) == []
    with pytest.raises(ValueError, match="has no output 'input'"):
        s.compare({"input": s.inputs()["input"]})


def test_a_set_with_nan_blocks_compares_equal_to_itself():
    s = load_set("mxfp4.quantize.named_cases")
    assert np.isnan(s.arrays["dequantized"]).any()
    assert s.compare(s.outputs()) == []


def test_golden_vectors_regenerate_identically(tmp_path):
    """Byte for byte, except float64 attention outputs (within ATTENTION_TOLERANCE: summation order)."""
    write_vectors(tmp_path)

    def manifest(directory):  # attention outputs' hashes depend on the CPU, as their last bits do
        m = json.loads((directory / "manifest.json").read_text())
        for s in m["sets"]:
            s["files"].get("output", {}).pop("sha256", None)
        return m

    assert manifest(tmp_path) == manifest(GOLDEN)
    for path in sorted(GOLDEN.iterdir()):
        if path.name.endswith(".decode_attention.output.npy"):
            assert np.allclose(np.load(tmp_path / path.name), np.load(path), **ATTENTION_TOLERANCE), path.name
        elif path.name != "manifest.json":
            assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in GOLDEN.iterdir())


def test_check_vectors_accepts_summation_order_and_flags_a_changed_attention_output(tmp_path):
    write_vectors(tmp_path, recipes=["nvfp4"], dtypes=["bfloat16"])
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(s for s in manifest["sets"] if s["kind"] == "decode_attention")["files"]["output"]
    path = tmp_path / entry["path"]
    out = np.load(path)

    def store(array):
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        path.write_bytes(buf.getvalue())
        entry["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
        manifest_path.write_text(json.dumps(manifest))

    store(np.nextafter(out, np.inf))             # one ulp everywhere: another CPU's summation order
    assert check_vectors(tmp_path) == []
    store(out * (1 + 1e-9))                      # far below any FP4 step, far above rounding
    assert check_vectors(tmp_path) == ["nvfp4.decode_attention: the oracle now gives a different output"]


def test_manifest_describes_every_file():
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert {s["recipe"] for s in manifest["sets"]} == set(RECIPES)
    kinds = {"quantize": {"input", "packed", "scales", "dequantized"},
             "pool_store": {"k", "v", "loc", "k_data", "v_data", "k_scales", "v_scales"},
             "decode_attention": {"k", "v", "loc", "q", "kv_indptr", "kv_indices", "output"}}
    assert {s["kind"] for s in manifest["sets"]} == set(kinds)
    for s in manifest["sets"]:
        assert set(s["files"]) == kinds[s["kind"]], s["name"]
        for f in s["files"].values():
            a = np.load(GOLDEN / f["path"], allow_pickle=False)
            assert list(a.shape) == f["shape"] and str(a.dtype) == f["dtype"]


def test_pool_store_vectors_hold_the_recipe_bytes_at_the_slots():
    """Independent of the pool class: quantize k with the recipe and look the bytes up by slot."""
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    for s in (s for s in manifest["sets"] if s["kind"] == "pool_store"):
        arr = {n: np.load(GOLDEN / f["path"]) for n, f in s["files"].items()}
        k = torch.from_numpy(arr["k"]).to(torch.bfloat16)
        q = ri.quantize(k, s["recipe"], global_scale=s.get("k_global_scale"))
        loc = torch.from_numpy(arr["loc"])
        assert torch.equal(torch.from_numpy(arr["k_data"])[loc], q.packed)
        assert torch.equal(torch.from_numpy(arr["k_scales"])[loc].flatten(), q.scales.flatten())
        untouched = torch.ones(arr["k_data"].shape[0], dtype=torch.bool)
        untouched[loc] = False
        assert not torch.from_numpy(arr["k_data"])[untouched].any()


def test_decode_vectors_match_dense_attention_on_dequantized_kv():
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    for s in (s for s in manifest["sets"] if s["kind"] == "decode_attention"):
        arr = {n: torch.from_numpy(np.load(GOLDEN / f["path"])) for n, f in s["files"].items()}
        k_hat = ri.dequantize(ri.quantize(arr["k"].to(torch.bfloat16), s["recipe"], global_scale=s.get("k_global_scale")), torch.float64)
        v_hat = ri.dequantize(ri.quantize(arr["v"].to(torch.bfloat16), s["recipe"], global_scale=s.get("v_global_scale")), torch.float64)
        q = arr["q"].double()
        group = q.shape[1] // k_hat.shape[1]
        for b in range(q.shape[0]):
            rows = slice(int(arr["kv_indptr"][b]), int(arr["kv_indptr"][b + 1]))   # loc order = kv_indices order
            kb, vb = k_hat[rows].repeat_interleave(group, 1), v_hat[rows].repeat_interleave(group, 1)
            p = torch.softmax(torch.einsum("hd,thd->ht", q[b], kb) / q.shape[-1] ** 0.5, dim=-1)
            ref = torch.einsum("ht,thd->hd", p, vb)
            torch.testing.assert_close(arr["output"][b], ref, rtol=1e-12, atol=1e-12)


def test_tampering_is_detected(tmp_path):
    d = tmp_path / "golden"
    shutil.copytree(GOLDEN, d)
    f = d / "nvfp4.quantize.bfloat16.packed.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01
    f.write_bytes(bytes(data))
    assert check_vectors(d) == ["nvfp4.quantize.bfloat16: nvfp4.quantize.bfloat16.packed.npy does not match its SHA-256"]
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["format_version"] = 99
    (d / "manifest.json").write_text(json.dumps(manifest))
    assert "format_version" in check_vectors(d)[0]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "nvfp4_kvcache", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_verify(tmp_path):
    base = "reference_impl/golden/nvfp4.quantize.bfloat16"
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    g = next(s for s in manifest["sets"] if s["name"] == "nvfp4.quantize.bfloat16")["global_scale"]
    common = ["verify", "--recipe", "nvfp4", "--input", f"{base}.input.npy", "--scales", f"{base}.scales.npy",
              "--global-scale", repr(g), "--input-dtype", "bfloat16"]
    ok = _cli(*common, "--packed", f"{base}.packed.npy")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = np.load(GOLDEN / "nvfp4.quantize.bfloat16.packed.npy")
    bad[0, 0, 0] ^= 0x01
    np.save(tmp_path / "bad.npy", bad)
    mismatch = _cli(*common, "--packed", str(tmp_path / "bad.npy"))
    assert mismatch.returncode == 1 and "1 of 2048 codes" in mismatch.stdout and "(0, 0, 0)" in mismatch.stdout
    (tmp_path / "junk.npy").write_text("not numpy")
    junk = _cli(*common, "--packed", str(tmp_path / "junk.npy"))
    assert junk.returncode == 2 and "cannot read packed file" in junk.stderr
    np.save(tmp_path / "f.npy", bad.astype(np.float32))
    wrong = _cli(*common, "--packed", str(tmp_path / "f.npy"))
    assert wrong.returncode == 2 and "must hold uint8" in wrong.stderr


def test_cli_vectors_write_and_check(tmp_path):
    out = _cli("vectors", "write", str(tmp_path), "--recipe", "mxfp4", "--dtype", "float16")
    assert out.returncode == 0 and "wrote 2 vector sets" in out.stdout
    assert _cli("vectors", "check", str(tmp_path)).returncode == 0
    assert _cli("vectors", "check", str(tmp_path / "nowhere")).returncode == 1
    missing = _cli("vectors", "write")
    assert missing.returncode == 2 and "needs a directory" in missing.stderr


def test_cli_vectors_list_path_and_check_the_shipped_set(tmp_path):
    path = _cli("vectors", "path")
    assert path.returncode == 0 and Path(path.stdout.strip()).resolve() == GOLDEN.resolve()
    assert _cli("vectors", "path", str(tmp_path)).returncode == 2
    listed = _cli("vectors", "list")
    assert listed.returncode == 0
    assert [line.split() for line in listed.stdout.splitlines()] == [
        [s["name"], s["kind"], s["recipe"], s["input_dtype"]] for s in read_manifest()["sets"]]
    write_vectors(tmp_path, recipes=["mxfp4"], dtypes=["float32"])
    assert _cli("vectors", "list", str(tmp_path)).stdout.split()[::4] == ["mxfp4.quantize.float32", "mxfp4.quantize.named_cases"]
    unreadable = _cli("vectors", "list", str(tmp_path / "nowhere"))
    assert unreadable.returncode == 2 and "cannot read the manifest" in unreadable.stderr
    check = _cli("vectors", "check")
    assert check.returncode == 0 and check.stdout.strip().endswith(": OK")
