"""The accuracy lab end to end: the quick run's JSON, what physics guarantees about it, tables and figures.

The quick run (``python scripts/accuracy_lab.py --quick``) runs here in a temporary folder; the
committed full run in ``docs/data/accuracy/`` is checked against the same schema.
"""

import json
import math
from pathlib import Path

import jsonschema
import pytest

import accuracy_figures
import accuracy_lab
import accuracy_tables
from nvfp4_kvcache.accuracy.schemes import FP4_SCHEMES, SCHEMES
from nvfp4_kvcache.accuracy.distributions import DISTRIBUTIONS

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "data" / "accuracy"

NUM = {"type": "number"}
META = {
    "type": "object",
    "required": ["command", "date", "device", "versions", "quick", "params", "elapsed_s"],
    "properties": {"command": {"type": "string", "pattern": "^python scripts/accuracy_lab.py"},
                   "versions": {"type": "object", "required": ["python", "torch"]}, "quick": {"type": "boolean"}},
}
ELEMENT = {"type": "object", "additionalProperties": NUM,
           "required": ["sqnr_db", "rel_l2", "max_abs_err", "max_rel_err", "ftz_fraction", "block_sqnr_db_p1",
                        "block_sqnr_db_min", "channel_sqnr_db_min", "channel_sqnr_db_median"]}
ALL_SCHEMES = {"type": "object", "required": list(SCHEMES), "additionalProperties": False}
ATT = {"type": "object", "required": ["out_rel_l2", "out_max_abs", "kl_nats", "context"], "additionalProperties": NUM}
SWEEP = {"type": "object", "required": ["K", "V", "KV"], "additionalProperties": {"type": "array", "items": ATT}}
EMB = {"type": "object", "required": ["cos_mean", "cos_min", "recall_at_1", "top1_agreement", "sim_max_abs_diff"]}
SCHEMAS = {
    "elements": {"type": "object", "required": ["meta", "distributions"], "properties": {
        "meta": META,
        "distributions": {"type": "object", "required": list(DISTRIBUTIONS),
                          "additionalProperties": {**ALL_SCHEMES, "additionalProperties": ELEMENT}}}},
    "attention": {"type": "object", "required": ["meta", "scenarios"], "properties": {
        "meta": META,
        "scenarios": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object", "required": ["k_distribution", "v_distribution", "schemes"],
            "properties": {"schemes": {**ALL_SCHEMES, "additionalProperties": SWEEP}}}}}},
    "model": {"type": "object", "required": ["meta", "amax", "elements", "attention", "embeddings"], "properties": {
        "meta": META,
        "amax": {"type": "array", "minItems": 6, "maxItems": 6},
        "elements": {**ALL_SCHEMES, "additionalProperties": {
            "type": "object", "required": ["k", "v"],
            "additionalProperties": {"type": "array", "minItems": 6, "maxItems": 6, "items": ELEMENT}}},
        "attention": {**ALL_SCHEMES, "additionalProperties": {"type": "object", "required": ["K", "V", "KV"]}},
        "embeddings": {"type": "object", "required": ["reference", "fp32", "schemes"], "properties": {
            "fp32": EMB,
            "schemes": {**ALL_SCHEMES, "additionalProperties": {
                "type": "object", "required": ["KV"], "additionalProperties": EMB}}}}}},
}


def _load(folder: Path, part: str) -> dict:
    return json.loads((folder / f"{part}.json").read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("accuracy-quick")
    written = accuracy_lab.main(["--quick", "--out", str(out)])
    assert sorted(written) == ["attention", "elements", "model"]
    return out


@pytest.mark.parametrize("part", sorted(SCHEMAS))
def test_quick_run_schema(quick, part):
    data = _load(quick, part)
    jsonschema.validate(data, SCHEMAS[part])
    assert data["meta"]["quick"] is True and data["meta"]["command"] == "python scripts/accuracy_lab.py --quick"


@pytest.mark.parametrize("part", sorted(SCHEMAS))
def test_committed_full_run_schema(part):
    data = _load(COMMITTED, part)
    jsonschema.validate(data, SCHEMAS[part])
    assert data["meta"]["quick"] is False and data["meta"]["command"] == "python scripts/accuracy_lab.py"


@pytest.mark.parametrize("folder", ["quick", "committed"])
def test_element_orderings(request, folder):
    d = _load(request.getfixturevalue("quick") if folder == "quick" else COMMITTED, "elements")["distributions"]
    for dist, row in d.items():
        for s in SCHEMES:
            assert 0 <= row[s]["ftz_fraction"] <= 1
            assert row[s]["rel_l2"] == pytest.approx(10 ** (-row[s]["sqnr_db"] / 20), rel=1e-6)
        # 3 mantissa bits beat 1: calibrated FP8 beats every 4-bit scheme, on every distribution
        for s in FP4_SCHEMES + ("int4_g32",):
            assert row["fp8_e4m3/calibrated"]["sqnr_db"] > row[s]["sqnr_db"] + 5, (dist, s)
        # E4M3 block scales are finer than power-of-two ones: NVFP4 (calibrated) >= MXFP4 by ~1.5 dB or more
        assert row["nvfp4/amax448"]["sqnr_db"] > row["mxfp4"]["sqnr_db"] + 1, dist
    # g = 1 on a small tensor: block scales below E4M3's range, most values read back as 0
    small = d["small_tensor"]
    assert small["nvfp4/g1"]["ftz_fraction"] > 0.5 and small["nvfp4/g1"]["sqnr_db"] < 5
    assert small["nvfp4/amax448"]["sqnr_db"] > 15 and small["nvfp4/amax6x448"]["sqnr_db"] > 15
    assert small["fp8_e4m3/scale1"]["sqnr_db"] < small["fp8_e4m3/calibrated"]["sqnr_db"] - 10
    # tiny blocks under amax/448 get E4M3-subnormal block scales; amax/(6*448) keeps them normal
    tiny = d["tiny_blocks"]
    assert tiny["nvfp4/amax6x448"]["block_sqnr_db_p1"] > tiny["nvfp4/amax448"]["block_sqnr_db_p1"] + 2
    assert tiny["nvfp4/g1"]["block_sqnr_db_p1"] < 1


@pytest.mark.parametrize("folder", ["quick", "committed"])
def test_attention_orderings(request, folder):
    sc = _load(request.getfixturevalue("quick") if folder == "quick" else COMMITTED, "attention")["scenarios"]
    for name, r in sc.items():
        for s, sweep in r["schemes"].items():
            assert all(x["kl_nats"] == 0.0 for x in sweep["V"]), (name, s)   # V does not touch the softmax
            assert all(x["kl_nats"] > 0 for x in sweep["K"]), (name, s)
            assert [x["context"] for x in sweep["KV"]] == sorted(x["context"] for x in sweep["K"])
        for i in range(len(r["schemes"]["mxfp4"]["KV"])):
            fp8 = r["schemes"]["fp8_e4m3/calibrated"]["KV"][i]["out_rel_l2"]
            for s in FP4_SCHEMES:
                assert fp8 < r["schemes"][s]["KV"][i]["out_rel_l2"], (name, s, i)


@pytest.mark.parametrize("folder", ["quick", "committed"])
def test_model_orderings(request, folder):
    m = _load(request.getfixturevalue("quick") if folder == "quick" else COMMITTED, "model")
    assert all(a["k"] > 0 and a["v"] > 0 for a in m["amax"])
    emb = m["embeddings"]
    assert emb["fp32"]["cos_min"] > 0.9999             # BF16 rounding of K/V alone changes almost nothing
    for s in SCHEMES:
        e = emb["schemes"][s]["KV"]
        assert 0.95 < e["cos_min"] <= e["cos_mean"] <= 1.0
        for which in ("k", "v"):
            for layer in range(6):
                fp8 = m["elements"]["fp8_e4m3/calibrated"][which][layer]["sqnr_db"]
                if s in FP4_SCHEMES:
                    assert fp8 > m["elements"][s][which][layer]["sqnr_db"] + 5
    for s in FP4_SCHEMES:
        assert emb["schemes"]["fp8_e4m3/calibrated"]["KV"]["cos_mean"] > emb["schemes"][s]["KV"]["cos_mean"]
        for layer in range(6):
            assert m["attention"][s]["V"][layer]["kl_nats"] == 0.0


@pytest.mark.parametrize("name", sorted(accuracy_tables.TABLES))
def test_tables_render(quick, name):
    fn = accuracy_tables.TABLES[name]
    md = fn() if name in ("accuracy_upstream", "accuracy_schemes") else fn(quick)
    assert sum(1 for line in md.splitlines() if line.strip().startswith("|")) >= 3
    assert "nan" not in md.lower().replace("nanny", "")


def test_upstream_quotes_have_sources():
    import yaml

    u = yaml.safe_load((COMMITTED / "upstream.yaml").read_text())
    for r in u["rows"]:
        src = u["sources"][r["source"]]
        assert src["url"].startswith("https://github.com/") and src["where"]
        assert all(0 < r[k] < 1 for k in ("bf16", "fp8", "fp4"))


def test_figures_render(quick, tmp_path):
    written = accuracy_figures.main(["--data", str(quick), "--out", str(tmp_path)])
    assert [p.name for p in written] == ["elements_sqnr.svg", "attention_context.svg", "model_layers.svg",
                                         "model_embeddings.svg"]
    for p in written:
        text = p.read_text()
        assert text.startswith("<?xml") and "<svg" in text and "<dc:date>" not in text


def test_committed_figures_are_regenerated_from_the_committed_data(tmp_path):
    written = accuracy_figures.main(["--out", str(tmp_path)])
    for path in written:
        committed = ROOT / "docs" / "assets" / "accuracy" / path.name
        assert committed.read_bytes() == path.read_bytes(), "run: python scripts/accuracy_figures.py"
