"""The site's configuration: navigation order, glossary, hosting workflow."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)                      # !ENV
_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)  # !!python/name


def _config(name="mkdocs.yml"):
    return yaml.load((ROOT / name).read_text(), Loader=_Loader)


def _nav_files(nav):
    for entry in nav:
        value = entry if isinstance(entry, str) else next(iter(entry.values()))
        if isinstance(value, list):
            yield from _nav_files(value)
        else:
            yield value


def _appendices(cfg) -> list[str]:
    return [line.strip().lstrip("/") for line in (cfg.get("not_in_nav") or "").splitlines() if line.strip()]


def test_nav_lists_every_page_once_in_reading_order():
    cfg = _config()
    files = list(_nav_files(cfg["nav"]))
    assert len(files) == len(set(files))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")
             if not str(p.relative_to(ROOT / "docs")).startswith(("data/", "includes/", "hooks/"))}
    appendices = _appendices(cfg)
    assert set(files) | set(appendices) == pages and not set(files) & set(appendices)
    assert files[:2] == ["index.md", "cookbook.md"]        # Home, then the kernel authors' quickstart
    order = [f for f in files if f.split("/")[0].removesuffix(".md") in
             ("format", "pool", "backends", "kernels", "accuracy", "performance", "history")]
    chapters = [f.split("/")[0].removesuffix(".md") for f in order]
    rank = {c: i for i, c in enumerate(["format", "pool", "backends", "kernels", "accuracy", "performance", "history"])}
    assert [rank[c] for c in chapters] == sorted(rank[c] for c in chapters)


def test_every_appendix_is_linked_from_an_appendix_section_of_its_chapter():
    cfg = _config()
    nav = set(_nav_files(cfg["nav"]))
    assert "kernels/decode_attention_notes.md" in _appendices(cfg)
    for appendix in _appendices(cfg):
        name = Path(appendix).name
        hosts = [page for page in nav if Path(page).parent == Path(appendix).parent
                 and re.search(rf"^## Appendix\n(?:(?!^## ).)*\]\({re.escape(name)}\)",
                               (ROOT / "docs" / page).read_text(), re.M | re.S)]
        assert hosts, f"{appendix}: no page of its chapter links it under '## Appendix'"


def test_glossary_defines_the_core_terms():
    text = (ROOT / "docs" / "glossary.md").read_text()
    terms = re.findall(r"^(\S[^\n]*?)(?: \{ #[\w-]+ \})?\n:   ", text, re.M)
    for term in ("E2M1", "E4M3", "E8M0, UE8M0", "block", "global scale", "page", "slot"):
        assert term in terms, term
    assert terms == sorted(terms, key=str.lower)


def test_offline_settings():
    cfg = _config()
    assert cfg["theme"]["font"] is False
    assert any("mermaid" in js for js in cfg["extra_javascript"])
    assert "docs/hooks/mathml.py" in cfg["hooks"]


def test_hosting_workflow_tests_before_it_publishes_with_mike():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "docs.yml").read_text())
    steps = wf["jobs"]["test-and-publish"]["steps"]
    runs = [s.get("run", "") for s in steps]
    test_at = next(i for i, r in enumerate(runs) if "make test" in r)
    deploy_at = next(i for i, r in enumerate(runs) if "mike deploy" in r)
    assert test_at < deploy_at
    assert "mkdocs.hosted.yml" in runs[deploy_at]
    hosted = _config("mkdocs.hosted.yml")
    assert hosted["INHERIT"] == "mkdocs.yml" and hosted["extra"]["version"]["provider"] == "mike"
