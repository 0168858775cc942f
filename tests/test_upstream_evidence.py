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
