"""Evidence and freshness of the upstream record, checked offline from committed data.

Every backend-matrix row must name the release it was verified against, the date and its
evidence; every code claim must have a record (file, line range, hash) extracted from the release
that releases.yaml lists as the latest; no row may be verified against an older release. Nothing
here downloads: `make evidence` is the online counterpart that re-reads the wheels.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


evidence = _script("upstream_evidence")
freshness = _script("upstream_freshness")
render = _script("render_upstream")


@pytest.fixture(scope="module")
def data() -> dict:
    return render.load_data()


def test_every_claim_has_recorded_evidence(data):
    assert evidence.offline_problems(data["backends"], data["landscape"], data["releases"], data["evidence"]) == []


def test_every_row_is_fresh_and_has_version_date_and_evidence(data):
    assert freshness.stale_rows(data["backends"]["rows"], data["releases"]) == []


def test_engines_with_a_readable_release_have_code_evidence(data):
    """Shipped rows of SGLang, vLLM and FlashInfer rest on released code, not only on threads."""
    for row in data["backends"]["rows"]:
        if row["status"] == "shipped" and data["releases"]["engines"][row["system"]]["readable"]:
            assert any("pkg" in e for e in row["evidence"]), row["id"]
            pkgs = {e["pkg"] for e in row["evidence"] if "pkg" in e}
            assert data["releases"]["engines"][row["system"]]["package"] in pkgs or row["system"] == "vLLM", row["id"]


def test_unreadable_releases_are_said_on_the_page(data):
    page = render.render_all(data)["backends"]
    for name, engine in data["releases"]["engines"].items():
        if not engine["readable"]:
            assert engine["why"].split()[0] in page and f"threads only ({engine['package']}" in page, name


def test_backends_page_says_per_engine_what_was_verified(data):
    page = render.render_all(data)["backends"]
    for name in ("SGLang", "vLLM", "FlashInfer"):
        version = data["releases"]["engines"][name]["latest"]
        line = next(line for line in page.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {version} | {data['releases']['checked']} |" in line, line


def test_every_evidence_record_is_cited_on_a_page(data):
    page = render.render_all(data)["backends"]
    for rec in data["evidence"]["claims"]:
        assert f"SHA-256 `{rec['sha256'][:12]}`" in page, rec


def test_locate_finds_exactly_one_line():
    text = "a\nneedle one\nb\nc"
    assert evidence.locate(text, "needle", 2)[:2] == (2, 3)
    with pytest.raises(LookupError):
        evidence.locate("needle\nneedle", "needle", 1)
    with pytest.raises(LookupError):
        evidence.locate(text, "absent", 1)
    with pytest.raises(LookupError):
        evidence.locate(text, "needle", 5)


def test_negative_controls(data):
    rows = data["backends"]["rows"]
    bad = copy.deepcopy(rows)
    del bad[0]["checked"]
    assert freshness.stale_rows(bad, data["releases"])
    bad = copy.deepcopy(rows)
    bad[0]["evidence"] = []
    assert freshness.stale_rows(bad, data["releases"])
    bad = copy.deepcopy(rows)
    bad[0]["checked"]["version"] = "0.5.22"
    assert freshness.stale_rows(bad, data["releases"])
    releases = copy.deepcopy(data["releases"])
    releases["engines"]["vLLM"]["latest"] = "0.35.0"
    assert freshness.stale_rows(rows, releases)
    assert evidence.offline_problems(data["backends"], data["landscape"], releases, data["evidence"])
    lock = copy.deepcopy(data["evidence"])
    lock["claims"].pop()
    assert evidence.offline_problems(data["backends"], data["landscape"], data["releases"], lock)
    backends = copy.deepcopy(data["backends"])
    code = next(e for e in backends["rows"][0]["evidence"] if "pkg" in e)
    code["lines"] += 1
    assert evidence.offline_problems(backends, data["landscape"], data["releases"], data["evidence"])
    drifted = copy.deepcopy(data["evidence"])
    drifted["claims"][0]["sha256"] = "0" * 64
    assert evidence.compare(data["evidence"], drifted)


def _items(data, section_id):
    return next(s for s in data["landscape"]["sections"] if s["id"] == section_id)["items"]


def test_engines_without_fp4_each_have_a_sourced_row(data):
    """TGI, llama.cpp and LMDeploy (and the others read) say what they offer, from their released code."""
    items = {i["engine"]: i for i in _items(data, "other-engines")}
    assert {"TGI", "llama.cpp", "LMDeploy", "ExLlamaV2", "ExLlamaV3", "MLC-LLM"} <= set(items)
    for engine, item in items.items():
        assert item["refs"], engine
        if item["status"] in ("absent", "shipped"):
            assert any("pkg" in e or "repo" in e for e in item.get("evidence", [])), engine


def test_user_requests_cover_every_topic_with_a_thread(data):
    asks = {i["id"]: i for i in _items(data, "asks")}
    topics = ("consumer-blackwell", "pre-blackwell", "mla", "accuracy", "calibration", "speed")
    assert {f"ask-{t}" for t in topics} <= set(asks)
    for ask in asks.values():
        assert any("#" in r for r in ask["refs"]), ask["id"]


def test_backends_page_names_every_release_read(data):
    page = render.render_all(data)["backends"]
    for name, engine in data["releases"]["engines"].items():
        assert f"`{engine['package']}` {engine['latest']}" in page or f"| {name} |" in page, name
    for name, repo in data["releases"].get("repositories", {}).items():
        assert f"{name} {repo['release']} ({repo['date']}, commit `{repo['commit'][:8]}`" in page, name


def test_date_not_verified_said_once_per_page(data):
    pages = render.render_all(data)
    for name in ("backends", "history"):
        assert pages[name].count("Date not verified") == 1, name


def test_pinned_and_repository_evidence_is_checked(data):
    """A claim pinned to an older release, and one read from a repository, each need their own record."""
    landscape = copy.deepcopy(data["landscape"])
    backends = copy.deepcopy(data["backends"])
    pinned = next(e for r in backends["rows"] for e in r["evidence"] if e.get("version"))
    pinned["version"] = data["releases"]["engines"]["vLLM"]["latest"]  # pinning the latest is refused
    assert evidence.offline_problems(backends, data["landscape"], data["releases"], data["evidence"])
    pinned["version"] = "0.30.0"  # no record at that release
    assert evidence.offline_problems(backends, data["landscape"], data["releases"], data["evidence"])
    repo = next(e for s in landscape["sections"] for i in s["items"] for e in i.get("evidence", []) if "repo" in e)
    repo["commit"] = "0" * 40
    assert evidence.offline_problems(data["backends"], landscape, data["releases"], data["evidence"])


def test_sdist_member_read_from_the_cache(tmp_path, monkeypatch):
    import io
    import tarfile

    wheels = _script("upstream_wheels")
    body = b"const char *x = \"needle\";\n"
    with tarfile.open(tmp_path / "demo_pkg-1.2.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("demo_pkg-1.2/src/a.cpp")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    monkeypatch.setattr(wheels, "CACHE", tmp_path)
    dist = wheels.Sdist("demo-pkg", "1.2", offline=True)
    assert dist.text("src/a.cpp") == body.decode() and dist.source == "cache"
    with pytest.raises(KeyError):
        dist.read("src/missing.cpp")
    with pytest.raises(FileNotFoundError):
        wheels.Sdist("demo-pkg", "9.9", offline=True)


def test_repository_claims_extracted_at_their_commit(tmp_path):
    import subprocess

    _script("upstream_wheels")  # extract() imports it by name, as scripts/ is on the path of the script
    repo = tmp_path / "r"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True)  # noqa: E731
    run("init", "-q")
    (repo / "f.rs").write_text("a\nenum Kv {\n  Fp8,\n}\n")
    run("add", "f.rs")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit = run("rev-parse", "HEAD").stdout.strip()
    (repo / "f.rs").write_text("changed\n")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    item = {"repo": "demo", "commit": commit, "release": "v1", "path": "f.rs", "find": "enum Kv {", "lines": 3,
            "says": "the enum"}
    out = evidence.extract([("test", item)], {"engines": {}}, {"demo": str(repo / ".git")})
    assert out["errors"] == [] and out["skipped"] == []
    rec = out["claims"][0]
    assert (rec["start"], rec["end"]) == (2, 4)
    assert rec["sha256"] == evidence.locate("a\nenum Kv {\n  Fp8,\n}\n", "enum Kv {", 3)[2]
    kept = evidence.extract([("test", item)], {"engines": {}}, {}, old={"claims": [rec]})
    assert kept["claims"] == [rec] and kept["skipped"]


def _verification_disagreements(data) -> list[str]:
    by_id = {s["id"]: s for s in data["sources"]["sources"]}
    return [e["ref"] for e in data["history"]["entries"] if e["verified"] != by_id[e["ref"]]["verified"]]


def test_history_and_sources_agree_on_what_was_verified(data):
    assert _verification_disagreements(data) == []
    bad = copy.deepcopy(data)
    bad["history"]["entries"][0]["verified"] = not bad["history"]["entries"][0]["verified"]
    assert _verification_disagreements(bad) == [bad["history"]["entries"][0]["ref"]]
